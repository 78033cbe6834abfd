//! How the client authenticates to a remote objdet: a bearer token (`objdet serve` with
//! `API_TOKEN`) or AWS SigV4 (API Gateway routes with `AWS_IAM`, the template's default).

use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials as _;

/// Which authentication to use (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthMode {
    /// A token when one is given; SigV4 for an API Gateway or Lambda function URL address;
    /// otherwise none.
    #[default]
    Auto,
    /// Send no credentials.
    None,
    /// `Authorization: Bearer` with `--token` / `OBJDET_TOKEN`.
    Token,
    /// Sign every request with SigV4, credentials from the default AWS chain.
    Sigv4,
}

/// The command-line options of authentication (`objdet detect`, `objdet bench`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// auto | none | token | sigv4 (auto: a token when given, SigV4 for an API Gateway or function
    /// URL address, otherwise none).
    #[arg(long, value_enum, default_value = "auto")]
    pub auth: AuthMode,
    /// The bearer token of an `objdet serve` with API_TOKEN.
    #[arg(long, env = "OBJDET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The API's region for SigV4 (default: from the address, else AWS_REGION / the profile).
    #[arg(long)]
    pub region: Option<String>,
}

impl AuthArgs {
    /// [`Auth::resolve`] with these options.
    pub async fn resolve(&self, url: &str) -> Result<Auth> {
        Auth::resolve(self.auth, url, self.token.as_deref(), self.region.as_deref()).await
    }
}

/// Credentials a client sends with every request.
#[derive(Clone)]
pub enum Auth {
    /// None.
    None,
    /// A bearer token.
    Bearer(String),
    /// SigV4 for `service` (`execute-api`, or `lambda` for a function URL) in `region`.
    SigV4 {
        /// The credentials, resolved once at start.
        credentials: Credentials,
        /// The API's region.
        region: String,
        /// The signing name.
        service: &'static str,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Bearer(_) => f.write_str("Auth::Bearer(…)"),
            Auth::SigV4 { region, service, .. } => write!(f, "Auth::SigV4 {{ {service} in {region} }}"),
        }
    }
}

impl Auth {
    /// The authentication `mode` asks for `url`, resolving AWS credentials from the default chain
    /// when SigV4 is chosen (an error saying how to provide them when there are none).
    pub async fn resolve(mode: AuthMode, url: &str, token: Option<&str>, region: Option<&str>) -> Result<Auth> {
        let aws = aws_address(url);
        let mode = match mode {
            AuthMode::Auto if token.is_some() => AuthMode::Token,
            AuthMode::Auto if aws.is_some() => AuthMode::Sigv4,
            AuthMode::Auto => AuthMode::None,
            other => other,
        };
        match mode {
            AuthMode::None | AuthMode::Auto => Ok(Auth::None),
            AuthMode::Token => match token {
                Some(t) => Ok(Auth::Bearer(t.to_string())),
                None => bail!("--auth token needs --token or OBJDET_TOKEN"),
            },
            AuthMode::Sigv4 => {
                let (service, host_region) = aws.unwrap_or(("execute-api", None));
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                let region = region
                    .map(str::to_string)
                    .or(host_region)
                    .or_else(|| sdk.region().map(|r| r.to_string()))
                    .context("SigV4 needs the API's region: pass --region or set AWS_REGION")?;
                let provider = sdk.credentials_provider().context(
                    "SigV4 needs AWS credentials and none are configured (AWS_ACCESS_KEY_ID, a profile, or SSO)",
                )?;
                let credentials = provider.provide_credentials().await.context(
                    "SigV4 needs AWS credentials and none were found (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, \
                     AWS_PROFILE, SSO or an instance role)",
                )?;
                Ok(Auth::SigV4 { credentials, region, service })
            }
        }
    }

    /// The headers that authenticate a request of `method` to `url` with these `headers` and
    /// `body` (all of it: SigV4 signs its hash), signed now.
    pub fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>> {
        match self {
            Auth::None => Ok(vec![]),
            Auth::Bearer(token) => Ok(vec![("authorization".into(), format!("Bearer {token}"))]),
            Auth::SigV4 { credentials, region, service } => {
                sigv4_headers(method, url, headers, body, credentials, region, service, SystemTime::now())
            }
        }
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, and `x-amz-security-token` for temporary
/// credentials) of one request, signed at `time`. `headers` are signed as given, with `host`
/// taken from `url`.
#[allow(clippy::too_many_arguments)]
pub fn sigv4_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .context("SigV4 signing parameters")?
        .into();
    let host = reqwest::Url::parse(url).ok().and_then(|u| {
        let host = u.host_str()?.to_string();
        Some(match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        })
    });
    let host = host.with_context(|| format!("{url} has no host"))?;
    let mut all: Vec<(&str, &str)> = vec![("host", host.as_str())];
    all.extend(headers.iter().copied().filter(|(k, _)| !k.eq_ignore_ascii_case("host")));
    let request = SignableRequest::new(method, url, all.into_iter(), SignableBody::Bytes(body))
        .context("SigV4: the request cannot be signed")?;
    let (instructions, _) = sign(request, &params).context("SigV4 signing")?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// `(signing name, region)` for an API Gateway (`<id>.execute-api.<region>.amazonaws.com`) or
/// Lambda function URL (`<id>.lambda-url.<region>.on.aws`) address; `None` for others.
pub fn aws_address(url: &str) -> Option<(&'static str, Option<String>)> {
    let url = reqwest::Url::parse(url).ok()?;
    let labels: Vec<&str> = url.host_str()?.split('.').collect();
    match labels.as_slice() {
        [_, "execute-api", region, "amazonaws", "com"] => Some(("execute-api", Some((*region).to_string()))),
        [_, "lambda-url", region, "on", "aws"] => Some(("lambda", Some((*region).to_string()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_addresses_are_recognised_by_their_host() {
        let api = aws_address("https://abc123.execute-api.eu-west-1.amazonaws.com/api/detect");
        assert_eq!(api, Some(("execute-api", Some("eu-west-1".into()))));
        let fn_url = aws_address("https://xyz.lambda-url.us-east-2.on.aws/");
        assert_eq!(fn_url, Some(("lambda", Some("us-east-2".into()))));
        assert_eq!(aws_address("http://127.0.0.1:5000"), None);
        assert_eq!(aws_address("https://execute-api.example.com.evil.test/"), None);
    }
}
