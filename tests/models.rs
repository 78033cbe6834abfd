//! Any ONNX detector: every fixture model in tests/fixtures/models (made by the real exporters,
//! python/fixtures/make_models.py) loads from MODEL_PATH alone and gives its reference
//! implementation's own predictions (`NAME.oracle.json`, written by Ultralytics' predictor on
//! the same photos); the custom-trained model finds its own classes on photos it never saw; graphs
//! that are not detectors are refused before anything is built or cached.

mod common;

use std::path::{Path, PathBuf};

use objdet::detector::{Detector, Input, Object};
use serde_json::Value;

fn models_dir() -> PathBuf {
    common::root().join("tests/fixtures/models")
}

/// The fixture models that have an oracle, by file name.
fn fixtures_with_oracles() -> Vec<(PathBuf, Value)> {
    let mut v: Vec<(PathBuf, Value)> = std::fs::read_dir(models_dir())
        .expect("tests/fixtures/models")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .filter_map(|p| {
            let oracle = p.with_extension("oracle.json");
            let text = std::fs::read_to_string(&oracle).ok()?;
            Some((p, serde_json::from_str(&text).expect("oracle JSON")))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A detector of `model` with nothing but MODEL_PATH set (and ORT's library, and no graph cache).
/// `JPEG_SCALED_DECODE` is the default (on): every oracle photo is under twice the model's input,
/// where no DCT scaling happens, so the decode is the full one the references use (whether the
/// scaling costs accuracy on large photos is measured in docs/accuracy.md, not here).
fn load(model: &Path, extra: &[(&str, &str)]) -> Detector {
    let path = model.display().to_string();
    let mut pairs = vec![("MODEL_PATH", path.as_str())];
    pairs.extend_from_slice(extra);
    let mut cfg = common::config_with(&pairs).detector;
    cfg.warmup = true; // every session built now: nothing left building when the test ends
    Detector::load(&cfg).unwrap_or_else(|e| panic!("{}: {}", model.display(), objdet::error::chain(&e)))
}

fn detect(d: &Detector, photo: &Path) -> Vec<Object> {
    detect_sized(d, photo).0
}

/// The objects and the image's width and height.
fn detect_sized(d: &Detector, photo: &Path) -> (Vec<Object>, f32, f32) {
    let bytes = std::fs::read(photo).unwrap();
    let found =
        d.detect_blocking(Input::Image(bytes.into())).result.unwrap_or_else(|e| panic!("{}: {e}", photo.display()));
    (found.objects, found.width as f32, found.height as f32)
}

/// The reference's objects, their boxes clipped to the `w`×`h` image as objdet reports boxes (some
/// references, e.g. Ultralytics' RT-DETR predictor, leave them unclipped).
fn oracle_objects(v: &Value, w: f32, h: f32) -> Vec<(String, f32, [f32; 4])> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let b: Vec<f32> = o["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            let clipped = [b[0].clamp(0.0, w), b[1].clamp(0.0, h), b[2].clamp(0.0, w), b[3].clamp(0.0, h)];
            (o["label"].as_str().unwrap().to_string(), o["score"].as_f64().unwrap() as f32, clipped)
        })
        .collect()
}

use common::iou;

fn corners(o: &Object) -> [f32; 4] {
    [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2]
}

/// Scores this close to the threshold may fall on either side of it (a 1/255 difference in a
/// resized pixel moves a score by a few thousandths), so they need no partner.
const MARGIN: f32 = 0.01;

/// Every object of either side that scores clearly above `conf` has a partner on the other side:
/// the same class, box IoU ≥ 0.9, score within 0.01. Returns the objects matched, or what differs.
fn agree(what: &str, ours: &[Object], theirs: &[(String, f32, [f32; 4])], conf: f32) -> Result<usize, String> {
    let mut matched = 0;
    for (label, score, b) in theirs.iter().filter(|o| o.1 >= conf + MARGIN) {
        let partner = ours
            .iter()
            .filter(|o| &o.label == label && (o.score - score).abs() <= 0.01)
            .map(|o| iou(corners(o), *b))
            .fold(0.0f32, f32::max);
        if partner < 0.9 {
            return Err(format!("{what}: the reference's {label} {score:.3} at {b:?} has no partner in {ours:?}"));
        }
        matched += 1;
    }
    for o in ours.iter().filter(|o| o.score >= conf + MARGIN) {
        let partner = theirs
            .iter()
            .filter(|t| t.0 == o.label && (t.1 - o.score).abs() <= 0.01)
            .map(|t| iou(corners(o), t.2))
            .fold(0.0f32, f32::max);
        if partner < 0.9 {
            return Err(format!(
                "{what}: objdet's {} {:.3} at {:?} is not in the reference's {theirs:?}",
                o.label,
                o.score,
                corners(o)
            ));
        }
    }
    Ok(matched)
}

#[test]
fn every_fixture_model_matches_its_reference_predictions() {
    let fixtures = fixtures_with_oracles();
    assert!(fixtures.len() >= 11, "expected the exported families in {}", models_dir().display());
    let mut failures = vec![];
    for (model, oracle) in fixtures {
        let name = model.file_name().unwrap().to_string_lossy().to_string();
        let d = load(&model, &[]);
        let conf = oracle["conf"].as_f64().unwrap() as f32;
        assert_eq!(d.spec().score_threshold, conf, "{name}: the family's default threshold is the reference's");
        let mut matched = 0;
        let mut failed = None;
        for (photo, expected) in oracle["images"].as_object().unwrap() {
            let (ours, w, h) = detect_sized(&d, &common::root().join(photo));
            match agree(&format!("{name} on {photo}"), &ours, &oracle_objects(expected, w, h), conf) {
                Ok(n) => matched += n,
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        // The comparison means something only if the reference found things.
        if matched < 20 {
            failed = failed.or(Some(format!("{name}: only {matched} reference detections above the threshold")));
        }
        match failed {
            Some(e) => failures.push(e),
            None => eprintln!("{name}: {} — {matched} reference detections matched", d.spec().summary()),
        }
    }
    assert!(failures.is_empty(), "{} models differ from their references:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_custom_trained_model_finds_its_own_classes_on_photos_it_never_saw() {
    let d = load(&common::shapes_model(), &[]);
    assert_eq!(&*d.spec().names, ["circle", "square", "triangle", "star"]);
    let dir = common::root().join("tests/fixtures/shapes");
    let (mut objects, mut found) = (0, 0);
    for (name, expected) in common::shapes_truth() {
        let ours = serde_json::to_value(detect(&d, &dir.join(&name))).unwrap();
        objects += expected.len();
        found += common::found_in(&ours, &expected);
    }
    assert!(objects >= 80, "{objects} objects in the test set");
    assert!(found * 10 >= objects * 9, "found {found} of {objects} objects with the right class at IoU >= 0.5");
    eprintln!("custom model: {found} of {objects} objects found");
}

#[test]
fn graphs_that_are_not_detectors_are_refused_before_any_cache_is_written() {
    let dir = common::root().join("target/test-tmp").join(format!("refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("optimized.onnx").display().to_string();
    for (model, why) in [("classifier.onnx", "classify"), ("semantic.onnx", "semantic")] {
        let path = models_dir().join(model).display().to_string();
        let cfg = common::config_with(&[("MODEL_PATH", &path), ("ORT_OPTIMIZED_MODEL_PATH", &cache)]).detector;
        let err = Detector::load(&cfg).expect_err(model);
        let text = objdet::error::chain(&err);
        assert!(
            text.contains("MODEL_PATH") && text.contains(why) && text.contains("serves detect, segment, pose and obb"),
            "{model}: {text}"
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{model}: something was written to the cache");
    }
    // A file that is not ONNX at all.
    let cfg = common::config_with(&[("MODEL_PATH", &common::root().join("README.md").display().to_string())]).detector;
    let text = objdet::error::chain(&Detector::load(&cfg).expect_err("README.md"));
    assert!(text.contains("not an ONNX model"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_labels_file_with_another_class_count_is_a_start_up_error() {
    let dir = common::root().join("target/test-tmp").join(format!("labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let labels = dir.join("three.txt");
    std::fs::write(&labels, "a\nb\nc\n").unwrap();
    let model = models_dir().join("shapes-yolo11n.onnx").display().to_string();
    let cfg = common::config_with(&[("MODEL_PATH", &model), ("LABELS_PATH", &labels.display().to_string())]).detector;
    let text = objdet::error::chain(&Detector::load(&cfg).expect_err("3 labels for 4 classes"));
    assert!(text.contains("names 3 classes but the model has 4"), "{text}");
    std::fs::write(&labels, "disc\nbox\ntri\nstar\n").unwrap();
    let cfg = common::config_with(&[("MODEL_PATH", &model), ("LABELS_PATH", &labels.display().to_string())]).detector;
    assert_eq!(Detector::load(&cfg).unwrap().labels()[2], "tri");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The optimized-graph cache works for every family, whatever the element types of its weights:
/// the second start reads the cache and finds the same objects as the first.
#[test]
fn the_graph_cache_serves_every_family() {
    use objdet::detector::graph_cache::{GraphSource, graph_sources};
    use objdet::detector::{Model, StageTimes};
    let dir = common::root().join("target/test-tmp").join(format!("cache-families-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let photo = std::fs::read(common::root().join("tests/fixtures/shapes/test-0003.jpg")).unwrap();
    for (model, _) in fixtures_with_oracles() {
        let name = model.file_stem().unwrap().to_string_lossy().to_string();
        let mut cfg = common::config_with(&[("MODEL_PATH", &model.display().to_string())]).detector;
        cfg.optimized_model_path = Some(dir.join(format!("{name}.optimized.onnx")));
        let mut times = StageTimes::default();
        let input = Input::Image(photo.clone().into());
        let first = Model::load(&cfg).unwrap().detect(&input, &mut times).unwrap();
        assert!(matches!(graph_sources(&cfg).0, GraphSource::Cached(_)), "{name}: no cache written");
        let second = Model::load(&cfg).unwrap().detect(&input, &mut times).unwrap();
        assert_eq!(first.objects, second.objects, "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
