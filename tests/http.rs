//! The HTTP API through the Router (no socket, `tower::ServiceExt::oneshot`) and over a real socket.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use objdet::server;

fn app() -> axum::Router {
    app_with(&[])
}

fn app_with(pairs: &[(&str, &str)]) -> axum::Router {
    let config = common::config_with(pairs);
    let limits = server::RequestLimits::server(&config);
    server::app(common::service_with(config), limits)
}

async fn call(app: axum::Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"));
    (status, headers, v)
}

fn json_req(body: impl Into<Body>) -> Request<Body> {
    Request::post("/api/detect").header(header::CONTENT_TYPE, "application/json").body(body.into()).unwrap()
}

fn labels(result: &Value) -> Vec<String> {
    result["objects"].as_array().unwrap().iter().map(|o| o["label"].as_str().unwrap().to_string()).collect()
}

async fn expect_error(app: axum::Router, req: Request<Body>, status: StatusCode, code: &str) -> Value {
    let (s, _, v) = call(app, req).await;
    assert_eq!(s, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

#[tokio::test]
async fn seed_api_batch_with_names() {
    let body = json!({
        "images": [common::b64(&common::fixture("dog.jpg")), common::b64(&common::fixture("person.jpg"))],
        "names": ["dog.jpg", "person.jpg"],
    });
    let (status, headers, v) = call(app(), json_req(body.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["name"], "dog.jpg");
    assert_eq!((results[0]["width"].as_u64(), results[0]["height"].as_u64()), (Some(768), Some(576)));
    assert!(labels(&results[0]).contains(&"dog".to_string()));
    assert!(labels(&results[1]).contains(&"person".to_string()));
    let obj = &results[0]["objects"][0];
    for k in ["label", "class_id", "score", "box"] {
        assert!(!obj[k].is_null(), "missing {k} in {obj}");
    }
    for k in ["x1", "y1", "x2", "y2"] {
        assert!(obj["box"][k].is_number());
    }
    assert!(results[0]["inference_ms"].as_f64().unwrap() > 0.0);
    let t = &v["timing"];
    assert_eq!(t["payload_bytes"].as_u64().unwrap() as usize, body.to_string().len());
    for k in ["receive_ms", "decode_ms", "inference_ms_total", "avg_inference_ms", "total_ms"] {
        assert!(t[k].as_f64().is_some(), "timing.{k} in {t}");
    }
    assert!(t["total_ms"].as_f64().unwrap() >= t["avg_inference_ms"].as_f64().unwrap());
    let st = headers.get("server-timing").unwrap().to_str().unwrap();
    for stage in ["receive;dur=", "decode;dur=", "inference;dur=", "total;dur="] {
        assert!(st.contains(stage), "{st}");
    }
}

#[tokio::test]
async fn names_default_and_data_url_prefix() {
    let body = json!({ "images": [
        format!("data:image/jpeg;base64,{}", common::b64(&common::fixture("eagle.jpg"))),
        common::b64(&common::fixture("coffee.png")),
    ]});
    let (status, _, v) = call(app(), json_req(body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["results"][0]["name"], "image-0");
    assert_eq!(v["results"][1]["name"], "image-1");
    assert!(labels(&v["results"][0]).contains(&"bird".to_string()));
    assert!(labels(&v["results"][1]).contains(&"cup".to_string()));
}

#[tokio::test]
async fn raw_image_bodies() {
    for (file, ct, want) in [("dog.jpg", "image/jpeg", "dog"), ("astronaut.png", "image/png", "person")] {
        let req = Request::post("/api/detect?name=mine")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(common::fixture(file)))
            .unwrap();
        let (status, _, v) = call(app(), req).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["results"].as_array().unwrap().len(), 1);
        assert_eq!(v["results"][0]["name"], "mine");
        assert!(labels(&v["results"][0]).contains(&want.to_string()), "{v}");
    }
}

#[tokio::test]
async fn webp_body() {
    let img = image::load_from_memory(&common::fixture("giraffe.jpg")).unwrap();
    let mut webp = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut webp), image::ImageFormat::WebP).unwrap();
    let req = Request::post("/api/detect").header(header::CONTENT_TYPE, "image/webp").body(Body::from(webp)).unwrap();
    let (status, _, v) = call(app(), req).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["name"], "image-0");
    assert!(labels(&v["results"][0]).contains(&"zebra".to_string()), "{v}");
}

#[tokio::test]
async fn a_bad_image_does_not_lose_the_others() {
    let png = common::fixture("astronaut.png");
    // A real PNG header claiming 50000x50000, no pixel data.
    let huge = common::images::png_header(50_000, 50_000);
    let body = json!({
        "images": [
            common::b64(&common::fixture("dog.jpg")),
            "%%% not base64 %%%",
            common::b64(b"plain text, not an image"),
            common::b64(&png[..png.len() / 3]),
            common::b64(&huge),
            common::b64(&common::fixture("person.jpg")),
        ],
        "names": ["dog", "b64", "text", "cut", "huge", "person"],
    });
    let (status, _, v) = call(app(), json_req(body.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 6);
    assert!(labels(&r[0]).contains(&"dog".to_string()));
    assert!(r[0]["error"].is_null());
    for (i, code) in [(1, "invalid_base64"), (2, "not_an_image"), (3, "truncated_image"), (4, "image_too_large")] {
        assert_eq!(r[i]["error"]["code"], code, "{}", r[i]);
        assert!(r[i]["error"]["message"].as_str().unwrap().len() > 5);
        assert_eq!(r[i]["objects"].as_array().unwrap().len(), 0);
    }
    assert!(labels(&r[5]).contains(&"person".to_string()));
}

#[tokio::test]
async fn error_invalid_json() {
    expect_error(app(), json_req("{\"images\": [tru"), StatusCode::BAD_REQUEST, "invalid_json").await;
    expect_error(app(), json_req("{\"imagez\": []}"), StatusCode::BAD_REQUEST, "invalid_json").await;
    expect_error(app(), json_req("{\"images\": \"x\"}"), StatusCode::BAD_REQUEST, "invalid_json").await;
}

#[tokio::test]
async fn error_no_images() {
    expect_error(app(), json_req("{\"images\": []}"), StatusCode::BAD_REQUEST, "no_images").await;
    expect_error(app(), json_req("{}"), StatusCode::BAD_REQUEST, "no_images").await;
    let raw = Request::post("/api/detect").header(header::CONTENT_TYPE, "image/jpeg").body(Body::empty()).unwrap();
    expect_error(app(), raw, StatusCode::BAD_REQUEST, "no_images").await;
}

#[tokio::test]
async fn error_names_mismatch() {
    let body = json!({"images": [common::b64(&common::fixture("eagle.jpg"))], "names": ["a", "b"]});
    expect_error(app(), json_req(body.to_string()), StatusCode::BAD_REQUEST, "names_mismatch").await;
}

#[tokio::test]
async fn error_unsupported_media_type() {
    let req = Request::post("/api/detect").header(header::CONTENT_TYPE, "text/plain").body(Body::from("hi")).unwrap();
    expect_error(app(), req, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    let req = Request::post("/api/detect").body(Body::from("hi")).unwrap();
    expect_error(app(), req, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
}

#[tokio::test]
async fn error_payload_too_large() {
    let app = app_with(&[("MAX_BODY_BYTES", "1000")]);
    let body = json!({"images": [common::b64(&common::fixture("eagle.jpg"))]}).to_string();
    let v = expect_error(app.clone(), json_req(body.clone()), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("/api/uploads"), "{v}");
    // Also without a Content-Length (a streamed body).
    let stream = futures::stream::iter(
        body.into_bytes().chunks(100).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let req = Request::post("/api/detect")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    expect_error(app, req, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn error_too_many_images() {
    let app = app_with(&[("MAX_IMAGES", "2")]);
    let one = common::b64(&common::fixture("eagle.jpg"));
    let body = json!({"images": [one, one, one]});
    expect_error(app, json_req(body.to_string()), StatusCode::PAYLOAD_TOO_LARGE, "too_many_images").await;
}

#[tokio::test]
async fn s3_without_configuration() {
    let body = json!({"s3": {"keys": ["uploads/a.jpg"]}});
    expect_error(app(), json_req(body.to_string()), StatusCode::NOT_IMPLEMENTED, "s3_not_configured").await;
}

#[tokio::test]
async fn images_and_s3_together_are_refused() {
    // Checked before S3 configuration, and an empty `images` array still counts as sent.
    for images in [json!([]), json!([common::b64(&common::fixture("eagle.jpg"))])] {
        let body = json!({"images": images, "s3": {"keys": ["uploads/a.jpg"]}});
        expect_error(app(), json_req(body.to_string()), StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn unknown_route_and_method() {
    let req = Request::get("/nope").body(Body::empty()).unwrap();
    expect_error(app(), req, StatusCode::NOT_FOUND, "route_not_found").await;
    let req = Request::get("/api/detect").body(Body::empty()).unwrap();
    expect_error(app(), req, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn healthz() {
    let (status, _, v) = call(app(), Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["classes"], 80);
    // Which model is loaded: file, format, input size, classes and their names.
    let m = &v["model"];
    assert_eq!(m["file"], "centernet_mobilenetv3_coco.onnx", "{v}");
    assert_eq!((m["format"].as_str(), m["classes"].as_u64()), (Some("rows"), Some(80)), "{v}");
    assert_eq!((m["input"]["width"].as_u64(), m["input"]["height"].as_u64()), (Some(512), Some(512)));
    assert_eq!((m["names"][0].as_str(), m["names_from"].as_str()), (Some("person"), Some("labels file")));
    // The CPU as /proc/cpuinfo has it, and the int8 path its features give ONNX Runtime.
    let cpu = objdet::detector::cpu::CpuInfo::of_this_machine();
    assert_eq!(v["cpu"]["model"].as_str(), Some(cpu.model.as_str()), "{v}");
    assert_eq!(v["cpu"]["features"], serde_json::json!(cpu.features), "{v}");
    assert!(v["cpu"]["int8"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
}

#[tokio::test]
async fn real_socket() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = common::config();
    tokio::spawn(server::serve(listener, app(), config.server));
    let client = reqwest::Client::new();
    let res = client
        .post(format!("http://{addr}/api/detect?name=dog.jpg"))
        .header("content-type", "image/jpeg")
        .body(common::fixture("dog.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("server-timing"));
    let v: Value = res.json().await.unwrap();
    assert!(labels(&v["results"][0]).contains(&"bicycle".to_string()));
    let body = json!({"images": [common::b64(&common::fixture("person.jpg"))]});
    let res = client.post(format!("http://{addr}/api/detect")).json(&body).send().await.unwrap();
    let v: Value = res.json().await.unwrap();
    assert!(labels(&v["results"][0]).contains(&"person".to_string()));
    let res = client.post(format!("http://{addr}/api/detect")).body("x").send().await.unwrap();
    assert_eq!(res.status(), 415);
}

/// A batch larger than the request's time: the images detected before the deadline are answered,
/// the rest `deadline_exceeded`, all in one 200 before the request timeout (not a 408 that loses
/// the whole batch, or API Gateway's 503 after 30 s).
#[tokio::test]
async fn images_past_the_deadline_are_answered_not_lost() {
    let timeout = 2.0;
    let image = common::b64(&common::fixture("person.jpg"));
    // The batch is sized from this machine's own time per image (measured on the same detector),
    // so that it takes about twice the deadline on 2 cores or 16, busy or idle.
    let probe = 4 * common::detector().sessions();
    let t = std::time::Instant::now();
    let (status, _, _) = call(app(), json_req(json!({"images": vec![image.clone(); probe]}).to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let per_image = t.elapsed().as_secs_f64() / probe as f64;
    let n = ((2.0 * timeout / per_image).ceil() as usize).max(16);
    let app = app_with(&[
        ("REQUEST_TIMEOUT_SECS", "2"),
        ("MAX_IMAGES", &n.to_string()),
        ("MAX_BODY_BYTES", &(n * (image.len() + 8) + 4096).to_string()),
    ]);
    let body = json!({"images": vec![image; n]});
    let (status, _, v) = call(app, json_req(body.to_string())).await;
    // 200, not the 408 the request's deadline layer answers past REQUEST_TIMEOUT_SECS: the answer
    // came within the timeout, by the server's own clock (the test's would add its own parsing).
    assert_eq!(status, StatusCode::OK, "{}", v["error"]);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), n);
    let late: Vec<&Value> = results.iter().filter(|r| !r["error"].is_null()).collect();
    assert!(late.iter().all(|r| r["error"]["code"] == "deadline_exceeded"), "{:?}", late.first());
    assert!(!late.is_empty(), "{n} images ({per_image:.3} s each) within {timeout} s: the deadline was never reached");
    assert!(late.len() < n, "no image was detected before the deadline");
    assert!(results.iter().filter(|r| r["error"].is_null()).all(|r| !labels(r).is_empty()));
}

/// The browser page and its script are served, with a policy that allows only this server.
#[tokio::test]
async fn the_page_is_served_self_contained() {
    for (path, kind) in [("/", "text/html"), ("/ui.js", "text/javascript")] {
        let res = app().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(res.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
        let policy = res.headers().get(header::CONTENT_SECURITY_POLICY).map(|v| v.to_str().unwrap().to_string());
        let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(!body.contains("https://") && !body.contains("//cdn"), "{path} names an external resource");
        if path == "/" {
            assert!(policy.is_some_and(|p| p.contains("default-src 'none'") && p.contains("connect-src 'self'")));
            assert!(body.contains(r#"<script src="ui.js">"#));
        }
    }
}
