//! Authentication: `objdet serve`'s bearer token (`API_TOKEN`) on every route, through the Router
//! and over a real socket with the CLI; the CLI's SigV4 against botocore's independent signer.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use common::server::Server;
use objdet::config::ApiToken;
use objdet::server;

const TOKEN: &str = "a-test-token-of-some-length";

fn app() -> axum::Router {
    let config = common::config();
    let limits = server::RequestLimits::server(&config);
    server::require_token(server::app(common::service_with(config), limits), ApiToken::new(TOKEN).unwrap())
}

async fn status_of(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let res = app().oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Every route: `(method, path, content type, body, status with the right token)`.
fn routes() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>, StatusCode)> {
    vec![
        ("POST", "/api/detect", "image/jpeg", common::fixture("dog.jpg"), StatusCode::OK),
        ("POST", "/api/detect", "application/json", b"{\"images\": []}".to_vec(), StatusCode::BAD_REQUEST),
        (
            "POST",
            "/api/uploads",
            "application/json",
            b"{\"files\": [{\"size\": 1}]}".to_vec(),
            StatusCode::NOT_IMPLEMENTED,
        ),
        ("GET", "/api/detect", "", vec![], StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/nowhere", "", vec![], StatusCode::NOT_FOUND),
    ]
}

fn request(method: &str, path: &str, content_type: &str, body: Vec<u8>, auth: Option<&str>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    if !content_type.is_empty() {
        req = req.header(header::CONTENT_TYPE, content_type);
    }
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    req.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn every_route_that_does_work_needs_the_token() {
    let wrong = [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer a-test-token-of-some-lengtH"),
        Some("Bearer a-test-token-of-some-length-and-more"),
        Some("Basic YTpi"),
        Some("a-test-token-of-some-length"),
    ];
    for (method, path, ct, body, ok) in routes() {
        for auth in wrong {
            let (status, headers, v) = status_of(request(method, path, ct, body.clone(), auth)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {auth:?}: {v}");
            assert_eq!(v["error"]["code"], "unauthorized", "{v}");
            assert_eq!(headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
        }
        let right = format!("Bearer {TOKEN}");
        let (status, _, v) = status_of(request(method, path, ct, body, Some(&right))).await;
        assert_eq!(status, ok, "{method} {path} with the token: {v}");
    }
    // The health check and the API description are public: they cost nothing and read no data.
    for path in ["/healthz", "/openapi.json"] {
        let (status, _, v) = status_of(request("GET", path, "", vec![], None)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
    }
}

#[test]
fn a_short_token_is_refused_at_start_up() {
    let err = objdet::Config::from_lookup(|k| (k == "API_TOKEN").then(|| "short".to_string())).unwrap_err();
    assert!(err.to_string().contains("API_TOKEN"), "{err}");
}

fn objdet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_objdet"));
    common::hermetic(&mut c);
    c.current_dir(common::root()).env("RUST_LOG", "warn").env_remove("OBJDET_TOKEN");
    c
}

/// A real socket: the server wants the token, the CLI sends it (`--token` or `OBJDET_TOKEN`).
#[test]
fn the_cli_sends_the_token_to_a_real_server() {
    let server = Server::start(&[("API_TOKEN", TOKEN)]);
    let detect = |extra: &[&str], env: Option<&str>| {
        let mut c = objdet();
        c.args(["detect", "tests/fixtures/images/dog.jpg", "--endpoint", &server.base]).args(extra);
        if let Some(t) = env {
            c.env("OBJDET_TOKEN", t);
        }
        c.output().unwrap()
    };
    let refused = detect(&[], None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("unauthorized"), "{stderr}");
    let wrong = detect(&["--token", "not-the-token-at-all"], None);
    assert!(!wrong.status.success());
    for out in [detect(&["--token", TOKEN], None), detect(&[], Some(TOKEN))] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: objdet::api::DetectResponse = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v.results[0].objects.iter().any(|o| o.label == "dog"), "{v:?}");
    }
    let health = objdet().args(["health", "--url", &server.base]).output().unwrap();
    assert!(health.status.success(), "the health check needs no token");
}

/// Beyond loopback, `objdet serve` needs a token or an explicit `ALLOW_UNAUTHENTICATED=true`.
#[test]
fn serve_refuses_an_open_api_beyond_loopback() {
    let out = objdet()
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .env_remove("API_TOKEN")
        .env_remove("ALLOW_UNAUTHENTICATED")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("API_TOKEN") && stderr.contains("ALLOW_UNAUTHENTICATED"), "{stderr}");
}

/// The CLI's SigV4 `Authorization` equals botocore's `SigV4Auth` for the same request, clock and
/// credentials (botocore: the independent implementation in the test tools' Python).
#[test]
fn sigv4_matches_botocore() {
    use aws_credential_types::Credentials;
    let url = "https://abc123.execute-api.eu-west-1.amazonaws.com/api/detect?name=a%20b.jpg";
    let body = br#"{"images": ["aGVsbG8="]}"#;
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_590_400); // 2025-12-01T12:00:00Z
    for token in [None, Some("session-token-xyz")] {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(String::from),
            None,
            "test",
        );
        let ours = objdet::offload::auth::sigv4_headers(
            "POST",
            url,
            &[("content-type", "application/json")],
            body,
            &creds,
            "eu-west-1",
            "execute-api",
            time,
        )
        .unwrap();
        let get = |name: &str| ours.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let script = r#"
import sys, json, datetime
from unittest import mock
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
a = json.loads(sys.argv[1])
creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", a["token"])
req = AWSRequest(method="POST", url=a["url"], data=a["body"].encode(), headers={"content-type": "application/json"})
fixed = datetime.datetime(2025, 12, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
    SigV4Auth(creds, "execute-api", "eu-west-1").add_auth(req)
print(json.dumps({"authorization": req.headers["Authorization"], "x-amz-date": req.headers["X-Amz-Date"]}))
"#;
        let args = serde_json::json!({"url": url, "body": std::str::from_utf8(body).unwrap(), "token": token});
        let out = Command::new(common::root().join(".cache/test/bin/python"))
            .args(["-c", script, &args.to_string()])
            .output()
            .expect("the test tools' Python (make setup-test)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let boto: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(get("x-amz-date").as_deref(), boto["x-amz-date"].as_str(), "{ours:?}");
        assert_eq!(get("authorization").as_deref(), boto["authorization"].as_str(), "{ours:?}");
        assert_eq!(get("x-amz-security-token").as_deref(), token);
    }
}
