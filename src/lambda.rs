//! The Lambda front doors, one per event source, all in the one container image: the function's
//! `ImageConfig.Command` (handed to `bootstrap` as `_HANDLER`) picks which one runs.
//!
//! - [`Handler::Http`](crate::config::Handler::Http): API Gateway REST v1 / HTTP API v2, function URLs and ALB, through
//!   `lambda_http`'s runtime and the *same* [`Router`] `objdet serve` runs. Stages and custom
//!   domains' base paths are taken off the path here ([`routed`]), whatever
//!   `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` says.
//! - [`Handler::S3`](crate::config::Handler::S3): S3 `ObjectCreated` notifications, typed as [`S3Event`], to the
//!   [`trigger`](crate::trigger).
//!
//! `lambda_http` converts an API Gateway event into an HTTP request with `expect`s: a body marked
//! base64 that is not, or a `Host` header a URI cannot hold, panic inside it and the invocation
//! fails (API Gateway answers 502). [`guard_http_event`] runs first, on the raw event, and makes
//! every event convertible; what cannot be mended is answered 400 by the Router.

use std::task::{Context as TaskContext, Poll};

use aws_lambda_events::s3::S3Event;
use axum::Router;
use axum::extract::Request;
use axum::http::Response as HttpResponse;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use lambda_runtime::{LambdaEvent, LambdaInvocation};
use serde_json::{Map, Value};

use crate::error::Coded;
use crate::service::DetectService;
use crate::service::error::RequestError;
use crate::telemetry::emf::{EmfHandle, Properties};

/// Header the event guard sets on a request whose event it had to empty; the Lambda Router
/// answers such a request 400 `invalid_request` with the reason.
pub const REJECTED_EVENT_HEADER: &str = "x-objdet-rejected-event";

/// The trigger's failure as the invocation's error: `errorType` is the stable code, the message
/// names what failed without the SDK's error chain (that is logged by the handler).
impl From<crate::trigger::TriggerError> for lambda_runtime::Diagnostic {
    fn from(e: crate::trigger::TriggerError) -> Self {
        lambda_runtime::Diagnostic { error_type: e.code().to_string(), error_message: e.message() }
    }
}

/// Logs an invocation's failure with its causes (the one place the event front doors log errors).
fn log_failure<E: Coded + 'static>(what: &'static str) -> impl Fn(&E) {
    move |e| tracing::error!(code = %e.code(), error = %crate::error::chain(e), "{what} failed")
}

/// The EMF metrics of the Lambda front doors: each invocation writes out what it recorded
/// before it answers (the environment may be frozen as soon as it has answered).
#[derive(Clone)]
pub struct Metrics {
    /// None with `METRICS=off`.
    handle: Option<EmfHandle>,
    model: String,
}

impl Metrics {
    /// Metrics written through `handle`, naming the model file at `model_path` in each document.
    pub fn new(handle: Option<EmfHandle>, model_path: &std::path::Path) -> Self {
        let model = model_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        Self { handle, model }
    }

    /// Writes out the invocation's metrics with its request id and trace id.
    pub fn flush(&self, context: &lambda_runtime::Context) {
        let Some(handle) = &self.handle else { return };
        let properties = Properties {
            request_id: Some(context.request_id.clone()),
            trace_id: context.xray_trace_id.clone(),
            model: Some(self.model.clone()),
        };
        handle.flush(&properties);
    }
}

/// Runs the HTTP front door: `lambda_http`'s runtime over `router`, behind [`EventGuardLayer`].
pub async fn run_http(router: Router, metrics: Metrics) -> Result<(), lambda_runtime::Error> {
    use lambda_http::RequestExt as _;
    use tower::ServiceExt as _;
    let router = lambda_router(router);
    // `lambda_http::runtime` needs a `Sync` response: the Router's (small, JSON) bodies are
    // collected here, as Lambda's buffered response would collect them anyway.
    let service = tower::service_fn(move |req: lambda_http::Request| {
        let (router, metrics) = (router.clone(), metrics.clone());
        async move {
            let context = req.lambda_context();
            let (parts, body) = router.oneshot(routed(req)).await?.into_parts();
            let bytes = http_body_util::BodyExt::collect(body).await.map(|c| c.to_bytes()).unwrap_or_default();
            let response = if bytes.len() > MAX_RESPONSE_BYTES {
                crate::telemetry::metrics::failed_after(crate::error::ErrorCode::ResponseTooLarge);
                too_large(bytes.len())
            } else {
                HttpResponse::from_parts(parts, http_body_util::Full::new(bytes))
            };
            metrics.flush(&context);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    lambda_http::runtime(service).layer(lambda_runtime::layers::TracingLayer::new()).layer(EventGuardLayer).run().await
}

/// The largest body the HTTP function answers with: Lambda refuses a synchronous response over
/// 6 MB (API Gateway then answers 502 with no reason), and the body travels JSON-escaped inside
/// the response envelope, so this leaves room for the escaping and the envelope.
pub const MAX_RESPONSE_BYTES: usize = 5_500_000;

/// The `response_too_large` answer for a body of `len` bytes (masks of many objects can make one).
fn too_large(len: usize) -> HttpResponse<http_body_util::Full<Bytes>> {
    let body = crate::error::ErrorResponse {
        error: crate::error::ErrorBody {
            code: crate::error::ErrorCode::ResponseTooLarge.as_str().to_string(),
            message: format!(
                "the response would be {:.1} MB, over Lambda's 6 MB response limit ({MAX_RESPONSE_BYTES} bytes of body): \
                 send fewer images per request, or upload them to S3 and read the trigger's result documents",
                len as f64 / 1e6
            ),
        },
    };
    tracing::warn!(code = "response_too_large", bytes = len, "response over Lambda's limit");
    let json = serde_json::to_vec(&body).unwrap_or_default();
    HttpResponse::builder()
        .status(crate::server::status(crate::error::ErrorCode::ResponseTooLarge))
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(json)))
        .unwrap_or_default()
}

/// Runs the bulk function: Distributed Map batches (or single items) of an S3 prefix.
pub async fn run_bulk(service: DetectService, metrics: Metrics) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<crate::bulk::BulkEvent>| {
        let (service, metrics) = (service.clone(), metrics.clone());
        async move {
            let done = crate::bulk::handle(&service, event.payload).await;
            metrics.flush(&event.context);
            done.inspect_err(log_failure("bulk batch")).map_err(BatchFailed)
        }
    }))
    .await
}

/// A failed bulk batch as the invocation's error (Step Functions retries it).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BatchFailed(crate::results::WriteError);

impl From<BatchFailed> for lambda_runtime::Diagnostic {
    fn from(BatchFailed(e): BatchFailed) -> Self {
        lambda_runtime::Diagnostic { error_type: e.code().to_string(), error_message: e.message() }
    }
}

/// Runs the S3 upload trigger.
pub async fn run_s3(service: DetectService, metrics: Metrics) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<S3Event>| {
        let (service, metrics) = (service.clone(), metrics.clone());
        async move {
            let done = crate::trigger::handle(&service, event.payload).await;
            metrics.flush(&event.context);
            done.inspect_err(log_failure("trigger"))
        }
    }))
    .await
}

/// The Router as the HTTP function serves it: requests the event guard flagged are answered 400.
pub fn lambda_router(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(reject_flagged))
}

/// Answers 400 for a request whose event the guard had to empty.
async fn reject_flagged(req: Request, next: Next) -> Response {
    match req.headers().get(REJECTED_EVENT_HEADER) {
        Some(reason) => RequestError::Invalid(format!(
            "the API Gateway event could not be read: {}",
            crate::error::excerpt(&String::from_utf8_lossy(reason.as_bytes()))
        ))
        .into_response(),
        None => next.run(req).await,
    }
}

/// A `lambda_runtime` layer that passes every invocation's event through [`guard_http_event`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EventGuardLayer;

impl<S> tower::Layer<S> for EventGuardLayer {
    type Service = EventGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EventGuard { inner }
    }
}

/// The service of [`EventGuardLayer`].
#[derive(Debug, Clone)]
pub struct EventGuard<S> {
    inner: S,
}

impl<S: tower::Service<LambdaInvocation>> tower::Service<LambdaInvocation> for EventGuard<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        invocation.body = guard_http_event(invocation.body);
        self.inner.call(invocation)
    }
}

/// Makes an HTTP event safe for `lambda_http`'s conversion, which would panic on it otherwise.
///
/// Returns the event unchanged (the same bytes, no copy) when nothing needed mending, which is
/// every event API Gateway itself produces. Otherwise:
/// - a body marked `isBase64Encoded` that is not standard base64: emptied, and the request
///   flagged with [`REJECTED_EVENT_HEADER`] (answered 400);
/// - a `Host` header or `requestContext.domainName` that is not a plain host\[:port\], or an
///   `X-Forwarded-Proto` other than `http`/`https`: dropped (the Router does not use them);
/// - header names or values HTTP does not allow: dropped;
/// - a path without its leading `/`, and bytes a URI cannot hold in the path or raw query
///   string: the `/` added, the bytes percent-encoded.
///
/// Anything that is not a JSON object is left alone: it fails to deserialize, an error rather
/// than a panic.
pub fn guard_http_event(raw: Bytes) -> Bytes {
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(&raw) else { return raw };
    let mut rejected: Option<&'static str> = None;
    let mut changed = false;

    if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        let valid = match event.get("body") {
            Some(Value::String(b)) => base64::engine::general_purpose::STANDARD.decode(b).is_ok(),
            _ => true,
        };
        if !valid {
            event.insert("body".into(), Value::String(String::new()));
            event.insert("isBase64Encoded".into(), Value::Bool(false));
            rejected = Some("its body is marked base64 but is not valid base64");
        }
    }
    for key in ["headers", "multiValueHeaders"] {
        if let Some(Value::Object(headers)) = event.get_mut(key) {
            changed |= guard_headers(headers);
        }
    }
    if let Some(Value::Object(ctx)) = event.get_mut("requestContext")
        && ctx.get("domainName").and_then(Value::as_str).is_some_and(|d| !is_plain_host(d))
    {
        ctx.remove("domainName");
        changed = true;
    }
    for key in ["rawPath", "path"] {
        if let Some(Value::String(path)) = event.get_mut(key)
            && let Some(fixed) = uri_safe(path, true)
        {
            *path = fixed;
            changed = true;
        }
    }
    if let Some(Value::String(query)) = event.get_mut("rawQueryString")
        && let Some(fixed) = uri_safe(query, false)
    {
        *query = fixed;
        changed = true;
    }
    if let Some(reason) = rejected {
        let headers = event.entry("headers").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(h) = headers {
            h.insert(REJECTED_EVENT_HEADER.into(), Value::String(reason.into()));
        }
        if let Some(Value::Object(h)) = event.get_mut("multiValueHeaders") {
            h.insert(REJECTED_EVENT_HEADER.into(), Value::Array(vec![Value::String(reason.into())]));
        }
        changed = true;
    }
    if !changed {
        return raw;
    }
    serde_json::to_vec(&Value::Object(event)).map(Bytes::from).unwrap_or(raw)
}

/// Drops header entries `http` refuses and host/scheme values a URI cannot be built from.
/// Returns whether anything was dropped.
fn guard_headers(headers: &mut Map<String, Value>) -> bool {
    let before = headers.len();
    headers.retain(|name, value| {
        let values: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => return false,
        };
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || values.iter().any(|v| axum::http::HeaderValue::from_str(v).is_err())
        {
            return false;
        }
        match name.to_ascii_lowercase().as_str() {
            "host" => values.iter().all(|v| is_plain_host(v)),
            "x-forwarded-proto" => values.iter().all(|v| matches!(*v, "http" | "https")),
            _ => true,
        }
    });
    headers.len() != before
}

/// A DNS name or IPv4 address with an optional port that `lambda_http` can put in a URL: plain
/// characters, and what the `url` crate (which `lambda_http` unwraps) parses as a host.
fn is_plain_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok())
        && url::Url::parse(&format!("https://{host}/")).is_ok_and(|u| u.host_str().is_some())
}

/// `text` with every byte a URI path (or query) cannot hold percent-encoded, and a path given
/// its leading `/`; `None` when it is fine as it is.
fn uri_safe(text: &str, is_path: bool) -> Option<String> {
    // RFC 3986 pchar plus '/' and '?' ('%' stays: existing escapes are kept).
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b) || (!is_path && b == b'?');
    let needs_slash = is_path && !text.starts_with('/');
    if !needs_slash && text.bytes().all(allowed) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 8);
    if needs_slash {
        out.push('/');
    }
    for b in text.bytes() {
        if allowed(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

/// What `lambda_http` makes of a raw API Gateway / ALB event once guarded and [`routed`]: the
/// request the Router sees in Lambda (for tests and the fuzz target).
pub fn http_request(raw: &[u8]) -> Result<lambda_http::Request, serde_json::Error> {
    let guarded = guard_http_event(Bytes::copy_from_slice(raw));
    lambda_http::request::from_str(std::str::from_utf8(&guarded).unwrap_or("not UTF-8")).map(routed)
}

/// The request with the path its API routes, for API Gateway events, whatever the process's
/// environment:
/// - REST (v1): the event's `path`, which API Gateway gives without the stage (`lambda_http` puts
///   `/{stage}` in front of it unless `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set; a console
///   test event may carry it in `path` itself: taken off too). Under a custom domain, `path`
///   starts with the base path mapping's; the resource template with the path parameters
///   filled in (`/{proxy+}` + `api/detect`, or `/api/detect`) is the API's own path, and is
///   used when `path` ends with it.
/// - HTTP API (v2): a named stage (not `$default`) is the first segment of `rawPath`: taken off.
///
/// Other events, and anything that would not make a valid URI, are left as they are.
pub fn routed(mut req: lambda_http::Request) -> lambda_http::Request {
    use lambda_http::RequestExt as _;
    use lambda_http::request::RequestContext;
    let strip_stage = |path: &str, stage: Option<&str>| -> Option<String> {
        let stage = stage.filter(|s| !s.is_empty() && *s != "$default")?;
        let rest = path.strip_prefix('/')?.strip_prefix(stage)?;
        match rest {
            "" => Some("/".to_string()),
            r if r.starts_with('/') => Some(r.to_string()),
            _ => None,
        }
    };
    let path = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => {
            let raw = req.raw_http_path();
            let mut path = strip_stage(raw, ctx.stage.as_deref()).unwrap_or_else(|| raw.to_string());
            if let Some(own) = ctx.resource_path.as_deref().and_then(|r| expand_resource(r, req.path_parameters_ref()))
                && own != path
                && path.ends_with(&own)
            {
                path = own;
            }
            Some(path)
        }
        Some(RequestContext::ApiGatewayV2(ctx)) => strip_stage(req.uri().path(), ctx.stage.as_deref()),
        _ => None,
    };
    let Some(path) = path.filter(|p| p.starts_with('/') && p != req.uri().path()) else { return req };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// A REST API resource template (`/api/{name}`, `/{proxy+}`) with its path parameters filled in,
/// percent-encoded for a URI; `None` when a parameter is missing.
fn expand_resource(
    template: &str,
    params: Option<&lambda_http::aws_lambda_events::query_map::QueryMap>,
) -> Option<String> {
    let mut out = String::new();
    for segment in template.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => out.push_str(params?.first(name.trim_end_matches('+'))?),
            None => out.push_str(segment),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(uri_safe(&out, true).unwrap_or(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_uri_text() {
        assert!(is_plain_host("abc.execute-api.us-east-1.amazonaws.com"));
        assert!(is_plain_host("127.0.0.1:3000"));
        for bad in ["", "a{b", "a b", "x:99999", "x:", "[::1]", "a/b", "a@b", "1.2.3.999"] {
            assert!(!is_plain_host(bad), "{bad}");
        }
        assert_eq!(uri_safe("/api/detect", true), None);
        assert_eq!(uri_safe("api", true).as_deref(), Some("/api"));
        assert_eq!(uri_safe("/a b{", true).as_deref(), Some("/a%20b%7B"));
        assert_eq!(uri_safe("name=a&name=b", false), None);
        assert_eq!(uri_safe("n=\"x\"#", false).as_deref(), Some("n=%22x%22%23"));
    }

    #[tokio::test]
    async fn an_answer_over_lambdas_limit_is_a_precise_413() {
        let res = too_large(7_340_032);
        assert_eq!(res.status(), 413);
        let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], "response_too_large");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("7.3 MB") && message.contains("6 MB"), "{message}");
    }
}
