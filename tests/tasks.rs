//! Masks, keypoints and rotated boxes: Ultralytics' `-seg`, `-pose` and `-obb` exports (default
//! and `nms=True`, python/fixtures/make_tasks.py) load from MODEL_PATH alone and answer as
//! Ultralytics' own predictor does (`NAME.oracle.json`): every object clearly above the threshold
//! has a partner of the same class, box IoU ≥ 0.9 and score within 0.02, and
//! - segment: mask IoU ≥ 0.9 with the reference's mask at the photo's size,
//! - pose: every keypoint within 2 px, its confidence within 0.02,
//! - obb: rotated-box IoU ≥ 0.9 (both rasterised at the photo's size).
//!
//! Through `objdet detect` for every export; through `objdet serve`, the Lambda bootstrap's API
//! event and its S3 upload trigger under AWS's emulator for one export of each task.

mod common;

use std::path::PathBuf;

use objdet::detector::mask::rasterize;
use serde_json::{Value, json};

const TASKS: [(&str, &str); 3] = [("segment", "yolo11n-seg"), ("pose", "yolo11n-pose"), ("obb", "yolo11n-obb")];

fn model(name: &str) -> PathBuf {
    common::root().join("tests/fixtures/models").join(format!("{name}.onnx"))
}

/// The oracle's photos (the task's own, then tests/fixtures/images) and objects.
fn oracle(name: &str) -> (String, Vec<(String, Vec<Value>)>) {
    let text = std::fs::read_to_string(model(name).with_extension("oracle.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut photos: Vec<(String, Vec<Value>)> =
        v["images"].as_object().unwrap().iter().map(|(p, o)| (p.clone(), o.as_array().unwrap().clone())).collect();
    photos.sort_by(|a, b| a.0.cmp(&b.0));
    (v["task"].as_str().unwrap().to_string(), photos)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number, not {v}"))
}

fn box_of(o: &Value, w: f64, h: f64) -> [f64; 4] {
    let b = &o["box"];
    let v: Vec<f64> = match b.as_array() {
        Some(a) => a.iter().map(f).collect(),
        None => ["x1", "y1", "x2", "y2"].iter().map(|k| f(&b[*k])).collect(),
    };
    [v[0].clamp(0.0, w), v[1].clamp(0.0, h), v[2].clamp(0.0, w), v[3].clamp(0.0, h)]
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    common::iou(a.map(|v| v as f32), b.map(|v| v as f32)) as f64
}

fn raster_iou(a: &[u8], b: &[u8]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x == 1 && **y == 1).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x == 1 || **y == 1).count();
    if union == 0 { 1.0 } else { inter as f64 / union as f64 }
}

/// The reference's mask: row-major runs from a run of 0s.
fn decode_rle(m: &Value) -> (usize, usize, Vec<u8>) {
    let (h, w) = (m["size"][0].as_u64().unwrap() as usize, m["size"][1].as_u64().unwrap() as usize);
    let mut out = Vec::with_capacity(w * h);
    for (i, c) in m["counts"].as_array().unwrap().iter().enumerate() {
        out.extend(std::iter::repeat_n((i % 2) as u8, c.as_u64().unwrap() as usize));
    }
    assert_eq!(out.len(), w * h);
    (w, h, out)
}

fn polygons(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(|p| p.as_array().unwrap().iter().map(|x| f(x) as f32).collect()).collect()
}

fn quad(corners: &Value) -> Vec<Vec<f32>> {
    vec![corners.as_array().unwrap().iter().flat_map(|p| [f(&p[0]) as f32, f(&p[1]) as f32]).collect()]
}

/// Why `ours` is not `theirs` for the task, or `None` when it is.
fn task_differs(task: &str, ours: &Value, theirs: &Value, w: usize, h: usize) -> Option<String> {
    match task {
        "segment" => {
            let (mw, mh, reference) = decode_rle(&theirs["mask"]);
            assert_eq!((mw, mh), (w, h), "the reference's mask is at the photo's size");
            let mine = rasterize(&polygons(&ours["mask"]), w, h);
            let v = raster_iou(&mine, &reference);
            (v < 0.9).then(|| format!("mask IoU {v:.3}"))
        }
        "pose" => {
            let (mine, reference) = (ours["keypoints"].as_array().unwrap(), theirs["keypoints"].as_array().unwrap());
            if mine.len() != reference.len() {
                return Some(format!("{} keypoints, not {}", mine.len(), reference.len()));
            }
            for (k, (m, r)) in mine.iter().zip(reference).enumerate() {
                let (dx, dy) = ((f(&m["x"]) - f(&r[0])).abs(), (f(&m["y"]) - f(&r[1])).abs());
                let dc = (f(&m["score"]) - f(&r[2])).abs();
                if dx > 2.0 || dy > 2.0 || dc > 0.02 {
                    return Some(format!("keypoint {k}: {m} vs {r}"));
                }
            }
            None
        }
        "obb" => {
            let mine = rasterize(&quad(&ours["rotated_box"]["corners"]), w, h);
            let reference = rasterize(&quad(&theirs["corners"]), w, h);
            let v = raster_iou(&mine, &reference);
            (v < 0.9).then(|| format!("rotated IoU {v:.3}"))
        }
        _ => unreachable!(),
    }
}

/// Every object of either side clearly above the threshold (0.25 + 0.02) has a partner on the
/// other side (same class, box IoU ≥ 0.9, score within 0.02, and the task's own test). Returns
/// the reference objects matched.
fn agree(door: &str, task: &str, results: &[Value], photos: &[(String, Vec<Value>)]) -> usize {
    assert_eq!(results.len(), photos.len(), "{door}");
    let mut matched = 0;
    for (result, (photo, theirs)) in results.iter().zip(photos) {
        let (w, h) = (result["width"].as_u64().unwrap() as usize, result["height"].as_u64().unwrap() as usize);
        let ours = result["objects"].as_array().unwrap_or_else(|| panic!("{door} {photo}: {result}"));
        let close = |a: &Value, b: &Value| {
            a["label"] == b["label"]
                && (f(&a["score"]) - f(&b["score"])).abs() <= 0.02
                && iou(box_of(a, w as f64, h as f64), box_of(b, w as f64, h as f64)) >= 0.9
        };
        for t in theirs.iter().filter(|t| f(&t["score"]) >= 0.27) {
            let partner = ours.iter().find(|o| close(o, t));
            let o = partner.unwrap_or_else(|| panic!("{door} {photo}: the reference's {t} has no partner in {ours:?}"));
            if let Some(why) = task_differs(task, o, t, w, h) {
                panic!("{door} {photo}: {why}\n ours {o}\n theirs {t}");
            }
            matched += 1;
        }
        for o in ours.iter().filter(|o| f(&o["score"]) >= 0.27) {
            assert!(theirs.iter().any(|t| close(o, t)), "{door} {photo}: objdet's {o} is not in the reference's");
        }
    }
    matched
}

#[test]
fn every_export_of_every_task_matches_its_reference_through_detect() {
    for (task, name) in TASKS {
        for suffix in ["", "-nms"] {
            let name = format!("{name}{suffix}");
            let (t, photos) = oracle(&name);
            assert_eq!(t, task);
            let results = common::detect_cli(&model(&name), photos.iter().map(|(p, _)| p));
            let matched = agree(&format!("objdet detect {name}"), task, &results, &photos);
            assert!(matched >= 10, "{name}: only {matched} reference objects to compare");
            // The task's own field on every object, and its time reported.
            for r in &results {
                for o in r["objects"].as_array().unwrap() {
                    let field = match task {
                        "segment" => "mask",
                        "pose" => "keypoints",
                        _ => "rotated_box",
                    };
                    assert!(o.get(field).is_some(), "{name}: {o}");
                }
                assert!(r["postprocess_ms"].as_f64().is_some(), "{r}");
            }
        }
    }
}

fn images_b64(photos: &[(String, Vec<Value>)]) -> Vec<String> {
    photos.iter().map(|(p, _)| common::b64(&std::fs::read(common::root().join(p)).unwrap())).collect()
}

#[test]
fn serve_answers_as_the_references() {
    for (task, name) in TASKS {
        let (_, photos) = oracle(name);
        let path = model(name).display().to_string();
        let server = common::server::Server::start(&[("MODEL_PATH", &path)]);
        let (status, body, _) = server.detect_b64(&images_b64(&photos));
        assert_eq!(status, 200, "{body}");
        let matched = agree(&format!("objdet serve {name}"), task, body["results"].as_array().unwrap(), &photos);
        assert!(matched >= 10, "{name}: {matched}");
    }
}

#[tokio::test]
async fn the_lambda_bootstrap_answers_as_the_references_to_api_events_and_uploads() {
    let moto = common::aws::Moto::start();
    let client = moto.client();
    common::aws::create_bucket(&client, common::aws::BUCKET).await;
    for (task, name) in TASKS {
        let (_, photos) = oracle(name);
        let mut env = moto.env();
        env.push(("MODEL_PATH".to_string(), model(name).display().to_string()));
        // The API event.
        let http = common::aws::Emulator::start("http", &env);
        let mut event = common::aws::event("apigw-http-detect-s3.json");
        event["body"] = json!(json!({ "images": images_b64(&photos) }).to_string());
        event["isBase64Encoded"] = json!(false);
        let res = http.invoke(&event).await;
        assert_eq!(res["statusCode"], 200, "{res}");
        let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
        let matched = agree(&format!("bootstrap {name}"), task, body["results"].as_array().unwrap(), &photos);
        assert!(matched >= 10, "{name}: {matched}");
        drop(http);
        // The upload trigger: each photo uploaded, its result document read back.
        let trigger = common::aws::Emulator::start("s3", &env);
        let mut docs = vec![];
        for (i, (photo, _)) in photos.iter().enumerate() {
            let key = format!("uploads/{task}-{i}.jpg");
            common::aws::put(&client, common::aws::BUCKET, &key, std::fs::read(common::root().join(photo)).unwrap())
                .await;
            let mut ev = common::aws::event("s3-put-upload.json");
            ev["Records"][0]["s3"]["object"]["key"] = json!(key);
            let summary = trigger.invoke(&ev).await;
            assert_eq!(summary["processed"][0]["result_key"], format!("results/{key}.json"), "{summary}");
            let doc = common::aws::get(&client, common::aws::BUCKET, &format!("results/{key}.json")).await.unwrap();
            let doc: Value = serde_json::from_slice(&doc).unwrap();
            docs.push(doc["result"].clone());
        }
        let matched = agree(&format!("upload trigger {name}"), task, &docs, &photos);
        assert!(matched >= 10, "{name}: {matched}");
    }
}

/// The union of the objects' masks rasterised at `w`×`h` after scaling their coordinates by
/// `scale` (each object's alone: masks of different objects may overlap).
fn mask_raster(objects: &Value, scale: f32, w: usize, h: usize) -> Vec<u8> {
    let mut union = vec![0u8; w * h];
    for o in objects.as_array().unwrap().iter().filter(|o| f(&o["score"]) >= 0.4) {
        let polys: Vec<Vec<f32>> = polygons(&o["mask"]).iter().map(|p| p.iter().map(|v| v * scale).collect()).collect();
        for (u, v) in union.iter_mut().zip(rasterize(&polys, w, h)) {
            *u |= v;
        }
    }
    union
}

#[test]
fn a_segmenter_on_the_smallest_and_a_maximal_image_and_200_images_at_once() {
    let path = model("yolo11n-seg").display().to_string();
    let server = common::server::Server::start(&[("MODEL_PATH", &path)]);
    let photo = common::root().join("tests/fixtures/tasks/segment/test-0001.jpg");
    let small = image::open(&photo).unwrap().to_rgb8();
    let (w, h) = (small.width() as usize, small.height() as usize);

    // 1x1: an answer, no object, no crash.
    let (status, body, _) = server.detect_b64(&[common::b64(&common::images::png(1, 1))]);
    assert_eq!(status, 200, "{body}");
    assert!(body["results"][0]["error"].is_null(), "{body}");

    // The photo as many times larger on each side as MAX_PIXELS (40 MP) allows (its JPEG decoded
    // at a DCT scale): the same masks, mapped to the large photo's pixels.
    let k = (40_000_000f64 / (w * h) as f64).sqrt().floor() as u32;
    let big = image::imageops::resize(&small, w as u32 * k, h as u32 * k, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(big)
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let (status, body, _) = server.detect_b64(&[common::b64(&std::fs::read(&photo).unwrap()), common::b64(&jpeg)]);
    assert_eq!(status, 200, "{body}");
    let (at_size, large) = (&body["results"][0], &body["results"][1]);
    assert_eq!(large["width"], w as u64 * k as u64, "{large}");
    for o in large["objects"].as_array().unwrap() {
        for p in polygons(&o["mask"]) {
            let inside = p.chunks(2).all(|v| v[0] >= 0.0 && v[0] <= (w as u32 * k) as f32 && v[1] >= 0.0);
            assert!(inside, "a mask vertex outside the photo: {o}");
        }
    }
    let a = mask_raster(&at_size["objects"], 1.0, w, h);
    let b = mask_raster(&large["objects"], 1.0 / k as f32, w, h);
    assert!(a.iter().filter(|&&v| v == 1).count() > 500, "the photo has masks: {at_size}");
    let v = raster_iou(&a, &b);
    assert!(v >= 0.85, "the large photo's masks, scaled down, cover the small one's: IoU {v:.3}");

    // 200 photos with masks in one request: 200 results, every one with its masks, and the
    // answer a bounded size.
    let photos: Vec<String> = std::fs::read_dir(common::root().join("tests/fixtures/tasks/segment"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| common::b64(&std::fs::read(p).unwrap()))
        .collect();
    let many: Vec<String> = photos.iter().cycle().take(200).cloned().collect();
    let (status, body, bytes) = server.detect_b64(&many);
    assert_eq!(status, 200);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 200);
    let masks = results.iter().flat_map(|r| r["objects"].as_array().unwrap()).filter(|o| o["mask"].is_array()).count();
    assert!(masks >= 200, "{masks} masks");
    assert!(bytes < objdet::lambda::MAX_RESPONSE_BYTES, "{bytes} bytes for 200 photos with masks");
    assert!(server.peak_mb() < 1024.0);
}
