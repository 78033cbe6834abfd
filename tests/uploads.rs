//! Presigned uploads are bounded: each URL is signed for one file's exact size and content type,
//! for a short time. Checked against s3s-fs, an S3 server that verifies signatures (moto accepts
//! a tampered presigned URL), and through the Router for the per-file and per-call limits.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::aws::{self, S3sFs};
use objdet::api::{UploadFile, UploadsRequest};
use objdet::s3::S3Store;
use objdet::{DetectService, server};

const BUCKET: &str = "objdet-uploads";

fn service(endpoint: &str, extra: &[(&str, &str)]) -> DetectService {
    let mut pairs = vec![("UPLOAD_BUCKET", BUCKET), ("S3_FORCE_PATH_STYLE", "true")];
    pairs.extend_from_slice(extra);
    let config = Arc::new(common::config_with(&pairs));
    let s3 = S3Store::new(aws::client_for(endpoint), config.s3.clone());
    DetectService::new(common::detector(), Some(s3), config)
}

async fn put(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> u16 {
    let mut req = reqwest::Client::new().put(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.body(body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_presigned_put_takes_exactly_the_file_it_was_signed_for() {
    let s3 = S3sFs::start();
    s3.client().create_bucket().bucket(BUCKET).send().await.unwrap();
    let svc = service(&s3.endpoint, &[]);
    let photo = common::fixture("dog.jpg");
    let len = photo.len() as u64;
    let req = |size| UploadsRequest { files: vec![UploadFile { size, content_type: "image/jpeg".into() }] };
    let slots = svc.presign_uploads(req(len)).await.unwrap();
    let slot = &slots.uploads[0];
    assert_eq!(slot.expires_in, 300, "a short expiry by default");
    assert_eq!(slot.headers.get("content-length").map(String::as_str), Some(len.to_string().as_str()), "{slot:?}");
    assert!(slot.url.contains("content-length"), "content-length is a signed header: {}", slot.url);
    let ok_headers = [("content-type", "image/jpeg".to_string()), ("content-length", len.to_string())];

    // Refused: a longer body, another content type, a tampered signature.
    let mut longer = photo.clone();
    longer.push(0);
    let longer_headers = [("content-type", "image/jpeg".to_string()), ("content-length", (len + 1).to_string())];
    assert_eq!(put(&slot.url, &longer_headers, longer).await, 403, "a longer body");
    let png = [("content-type", "image/png".to_string()), ("content-length", len.to_string())];
    assert_eq!(put(&slot.url, &png, photo.clone()).await, 403, "another content type");
    let sig = slot.url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = slot.url.clone();
    let flipped = if &tampered[sig..sig + 1] == "0" { "1" } else { "0" };
    tampered.replace_range(sig..sig + 1, flipped);
    assert_eq!(put(&tampered, &ok_headers, photo.clone()).await, 403, "a tampered signature");
    // (A shorter body cannot be sent under this content-length: HTTP framing waits for the rest.)

    // Accepted: exactly the file, and detection then reads it by key.
    assert_eq!(put(&slot.url, &ok_headers, photo.clone()).await, 200);
    let stored = s3.client().get_object().bucket(BUCKET).key(&slot.key).send().await.unwrap();
    assert_eq!(stored.content_length(), Some(len as i64));

    // Expired.
    let svc = service(&s3.endpoint, &[("PRESIGN_EXPIRES_SECS", "1")]);
    let slots = svc.presign_uploads(req(len)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(put(&slots.uploads[0].url, &ok_headers, photo).await, 403, "an expired URL");
}

async fn uploads(app: axum::Router, body: Value) -> (StatusCode, Value) {
    let req = Request::post("/api/uploads")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// The limits of one call, at their edges (presigning is local: no S3 server is needed).
#[tokio::test]
async fn uploads_are_limited_per_file_and_per_call() {
    let extra = [("MAX_UPLOAD_BYTES", "1000"), ("MAX_UPLOAD_BATCH_BYTES", "2500"), ("MAX_IMAGES", "4")];
    let svc = service("http://127.0.0.1:9", &extra);
    let app = || server::app(svc.clone(), server::RequestLimits::server(svc.config()));
    let file = |size: u64| json!({"size": size, "content_type": "image/jpeg"});
    let cases = [
        (json!({"files": [file(1000), file(1000)]}), StatusCode::OK, None),
        (json!({"files": [file(1001)]}), StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        (json!({"files": [file(u64::MAX)]}), StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        (
            json!({"files": [file(1000), file(1000), file(501)]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("payload_too_large"),
        ),
        (json!({"files": vec![file(1); 5]}), StatusCode::PAYLOAD_TOO_LARGE, Some("too_many_images")),
        (json!({"files": [file(0)]}), StatusCode::BAD_REQUEST, Some("invalid_request")),
        // A malformed entry is refused as such even after one over the limit (found by schemathesis).
        (json!({"files": [file(5000), file(0)]}), StatusCode::BAD_REQUEST, Some("invalid_request")),
        (json!({"files": []}), StatusCode::BAD_REQUEST, Some("no_images")),
        (
            json!({"files": [{"size": 10, "content_type": "image/gif"}]}),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type"),
        ),
        (json!({"count": 2}), StatusCode::BAD_REQUEST, Some("invalid_json")),
    ];
    for (body, status, code) in cases {
        let (s, v) = uploads(app(), body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        if let Some(code) = code {
            assert_eq!(v["error"]["code"], code, "{body}: {v}");
        } else {
            assert_eq!(v["uploads"].as_array().map(Vec::len), Some(2), "{v}");
        }
    }
    let err = objdet::Config::from_lookup(|k| match k {
        "MAX_UPLOAD_BYTES" => Some("100".into()),
        "MAX_BODY_BYTES" => Some("50".into()),
        _ => None,
    });
    assert!(err.is_err(), "an upload larger than detection may read is refused at start-up");
}
