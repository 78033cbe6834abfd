//! Ultralytics' own int8 export (`export(format="onnx", int8=True, data=...)`: static QDQ through
//! ONNX Runtime, Conv/Gemm/MatMul quantized) answers as its own predictor does — same class, box
//! IoU ≥ 0.9, score within 0.02 — through every front door: `objdet detect`, `objdet serve` and
//! the Lambda bootstrap under AWS's emulator. The oracle is `yolo11n-int8.oracle.json`
//! (python/fixtures/make_int8.py). An int8 model's scores move by whole quantization steps when a
//! pixel differs by one level, so this holds only with OpenCV's resize arithmetic exactly.

mod common;

use std::path::PathBuf;

use serde_json::{Value, json};

/// An object: (label, score, [x1, y1, x2, y2]).
type Obj = (String, f64, [f64; 4]);
/// A photo's path and its objects.
type Photo = (String, Vec<Obj>);

fn model() -> PathBuf {
    common::root().join("tests/fixtures/models/yolo11n-int8.onnx")
}

/// The shapes photos of the oracle and its objects for each, as (label, score, box).
fn oracle() -> Vec<Photo> {
    let text = std::fs::read_to_string(model().with_extension("oracle.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut photos: Vec<Photo> = v["images"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with("tests/fixtures/shapes/"))
        .map(|(p, objs)| {
            let objs = objs
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    let b: Vec<f64> = o["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                    (o["label"].as_str().unwrap().to_string(), o["score"].as_f64().unwrap(), [b[0], b[1], b[2], b[3]])
                })
                .collect();
            (p.clone(), objs)
        })
        .collect();
    photos.sort_by(|a, b| a.0.cmp(&b.0));
    photos.truncate(12);
    photos
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Every object of either side clearly above the threshold (0.25 + 0.02) has a partner on the
/// other side: same class, IoU ≥ 0.9, score within 0.02. Returns the reference objects matched.
fn agree(door: &str, results: &[Value], photos: &[Photo]) -> usize {
    assert_eq!(results.len(), photos.len(), "{door}");
    let mut matched = 0;
    for (result, (photo, theirs)) in results.iter().zip(photos) {
        let ours: Vec<Obj> = result["objects"]
            .as_array()
            .unwrap_or_else(|| panic!("{door} {photo}: {result}"))
            .iter()
            .map(|o| {
                let b = &o["box"];
                let corner = |k: &str| b[k].as_f64().unwrap();
                (
                    o["label"].as_str().unwrap().to_string(),
                    o["score"].as_f64().unwrap(),
                    [corner("x1"), corner("y1"), corner("x2"), corner("y2")],
                )
            })
            .collect();
        let has_partner = |o: &Obj, side: &[Obj]| {
            side.iter().any(|t| t.0 == o.0 && (t.1 - o.1).abs() <= 0.02 && iou(t.2, o.2) >= 0.9)
        };
        for t in theirs.iter().filter(|t| t.1 >= 0.27) {
            assert!(has_partner(t, &ours), "{door} {photo}: the reference's {t:?} has no partner in {ours:?}");
            matched += 1;
        }
        for o in ours.iter().filter(|o| o.1 >= 0.27) {
            assert!(has_partner(o, theirs), "{door} {photo}: objdet's {o:?} is not in the reference's {theirs:?}");
        }
    }
    assert!(matched >= 20, "{door}: only {matched} reference objects to compare");
    matched
}

fn images_b64(photos: &[Photo]) -> Vec<String> {
    photos.iter().map(|(p, _)| common::b64(&std::fs::read(common::root().join(p)).unwrap())).collect()
}

#[test]
fn detect_answers_as_the_int8_reference() {
    let photos = oracle();
    let results = common::detect_cli(&model(), photos.iter().map(|(p, _)| p));
    agree("objdet detect", &results, &photos);
}

#[test]
fn serve_answers_as_the_int8_reference() {
    let photos = oracle();
    let model = model().display().to_string();
    let server = common::server::Server::start(&[("MODEL_PATH", &model)]);
    let (_, body, _) = server.detect_b64(&images_b64(&photos));
    agree("objdet serve", body["results"].as_array().unwrap(), &photos);
}

#[tokio::test]
async fn the_lambda_bootstrap_answers_as_the_int8_reference() {
    let photos = oracle();
    let emulator = common::aws::Emulator::start("http", &[("MODEL_PATH".to_string(), model().display().to_string())]);
    let mut event = common::aws::event("apigw-http-detect-s3.json");
    event["body"] = json!(json!({ "images": images_b64(&photos) }).to_string());
    event["isBase64Encoded"] = json!(false);
    let res = emulator.invoke(&event).await;
    assert_eq!(res["statusCode"], 200, "{res}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    agree("the Lambda bootstrap", body["results"].as_array().unwrap(), &photos);
}
