//! The real model on the real ONNX Runtime against the fixture photos, compared with the reference
//! table in models/README.md (Python onnxruntime, threshold 0.3, NMS 0.4).

mod common;

use objdet::api::BBox;
use std::time::{Duration, Instant};

use objdet::detector::{Detector, Input, Model, SessionKind, StageTimes};
use objdet::error::Coded as _;

/// (image, [(label, reference score)]).
const REFERENCE: &[(&str, &[(&str, f32)])] = &[
    ("dog.jpg", &[("car", 0.56), ("bicycle", 0.51), ("dog", 0.42), ("parking meter", 0.32)]),
    ("person.jpg", &[("person", 0.67), ("dog", 0.44)]),
    ("giraffe.jpg", &[("zebra", 0.59), ("giraffe", 0.49)]),
    ("eagle.jpg", &[("bird", 0.55)]),
    ("astronaut.png", &[("person", 0.61)]),
    ("coffee.png", &[("cup", 0.47)]),
    ("scream.jpg", &[]),
];

fn detect(name: &str) -> objdet::detector::Detections {
    let outcome = common::detector().detect_blocking(Input::Image(common::fixture(name).into()));
    outcome.result.unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn matches_the_reference_table() {
    for (image, expected) in REFERENCE {
        let d = detect(image);
        let found = common::labels(&d.objects);
        for (label, score) in *expected {
            let best = found.iter().filter(|(l, _)| l == label).map(|(_, s)| *s).fold(f32::NAN, f32::max);
            assert!((best - score).abs() <= 0.05, "{image}: {label} expected at {score} ± 0.05, found {found:?}");
        }
        // Anything clearly above the threshold must be in the reference too.
        for (label, score) in &found {
            if *score >= 0.35 {
                assert!(expected.iter().any(|(l, _)| l == label), "{image}: unexpected {label} {score}");
            }
        }
    }
}

#[test]
fn dog_has_dog_and_bicycle() {
    let d = detect("dog.jpg");
    assert_eq!((d.width, d.height), (768, 576));
    let labels: Vec<_> = d.objects.iter().map(|o| o.label.as_str()).collect();
    assert!(labels.contains(&"dog") && labels.contains(&"bicycle"), "{labels:?}");
    for o in &d.objects {
        assert!(o.bbox.x1 >= 0.0 && o.bbox.x2 <= 768.0 && o.bbox.y1 >= 0.0 && o.bbox.y2 <= 576.0, "{o:?}");
        assert!(o.bbox.x1 < o.bbox.x2 && o.bbox.y1 < o.bbox.y2, "{o:?}");
    }
}

#[test]
fn person_has_person() {
    assert!(detect("person.jpg").objects.iter().any(|o| o.label == "person"));
}

#[test]
fn astronaut_box_matches_reference() {
    let d = detect("astronaut.png");
    let want = BBox { x1: 8.0, y1: 9.0, x2: 369.0, y2: 520.0 };
    let person = d.objects.iter().find(|o| o.label == "person").expect("a person");
    let iou = person.bbox.iou(&want);
    assert!(iou >= 0.8, "IoU {iou} for {:?}", person.bbox);
}

#[test]
fn scream_has_nothing_confident() {
    let d = detect("scream.jpg");
    assert!(d.objects.iter().all(|o| o.score < 0.5), "{:?}", d.objects);
}

#[test]
fn nms_leaves_no_heavy_overlaps() {
    for (image, _) in REFERENCE {
        let d = detect(image);
        for (i, a) in d.objects.iter().enumerate() {
            for b in &d.objects[i + 1..] {
                assert!(a.bbox.iou(&b.bbox) <= 0.4, "{image}: {a:?} vs {b:?}");
            }
        }
    }
}

#[test]
fn exif_orientation_is_applied() {
    // The same photo re-encoded as a JPEG rotated 90° on disk with EXIF orientation 6 (rotate back 90° CW)
    // must come out upright: same size as the original, same detections.
    let original = image::load_from_memory(&common::fixture("dog.jpg")).unwrap();
    let stored = original.rotate270(); // what a camera writes before tagging "rotate 90 CW"
    let mut jpeg = Vec::new();
    stored.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let tagged = with_exif_orientation(&jpeg, 6);
    let d = common::detector().detect_blocking(Input::Image(tagged.into())).result.unwrap();
    assert_eq!((d.width, d.height), (768, 576));
    assert!(d.objects.iter().any(|o| o.label == "dog"), "{:?}", d.objects);
    assert!(d.objects.iter().any(|o| o.label == "bicycle"), "{:?}", d.objects);
}

/// Inserts an APP1 EXIF segment with the given orientation right after the JPEG SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec(); // big-endian TIFF header, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn single_model_agrees_with_the_pool() {
    let mut model = Model::load(&common::config().detector).unwrap();
    let mut times = StageTimes::default();
    let bytes = common::fixture("person.jpg");
    let single = model.detect(&Input::Image(bytes.clone().into()), &mut times).unwrap();
    let pooled = detect("person.jpg");
    assert_eq!(single.objects, pooled.objects);
    assert!(times.inference_ms > 0.0 && times.decode_ms > 0.0);
}

/// Waits until the detector's pool has `n` sessions.
fn wait_for_pool(d: &Detector, n: usize) {
    let t = Instant::now();
    while d.pool_ready() < n {
        assert!(t.elapsed() < Duration::from_secs(60), "the pool was never built ({} of {n})", d.pool_ready());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn lone_images_run_on_the_solo_session_queued_ones_on_the_pool_with_the_same_detections() {
    let cfg = common::config_with(&[("ORT_SESSIONS", "2"), ("ORT_INTRA_THREADS", "1"), ("ORT_SOLO_THREADS", "2")]);
    let d = Detector::load(&cfg.detector).unwrap();
    assert_eq!(d.pool_ready(), 0, "start-up builds the solo session only");
    let dog = || Input::Image(common::fixture("dog.jpg").into());

    let first = d.detect_blocking(dog());
    assert_eq!(first.ran_on, Some(SessionKind::Solo));
    let solo = first.result.unwrap().objects;
    assert!(!solo.is_empty());

    // The answered image asks for the pool; queued images then run there, two at a time.
    wait_for_pool(&d, 2);
    let pending: Vec<_> = (0..8).map(|_| d.start(dog())).collect();
    let outcomes: Vec<_> = pending.into_iter().map(futures::executor::block_on).collect();
    let on_pool = outcomes.iter().filter(|o| o.ran_on == Some(SessionKind::Pool)).count();
    assert!(on_pool >= 6, "queued images ran on the pool: {on_pool} of 8");
    for outcome in outcomes {
        let objects = outcome.result.unwrap().objects;
        assert_eq!(objects.len(), solo.len());
        for (a, b) in objects.iter().zip(&solo) {
            assert_eq!(a.label, b.label);
            assert!((a.score - b.score).abs() < 1e-3, "{} vs {}", a.score, b.score);
            assert!((a.bbox.x1 - b.bbox.x1).abs() < 1.0 && (a.bbox.y2 - b.bbox.y2).abs() < 1.0);
        }
    }
    // Alone again: back on the solo session.
    assert_eq!(d.detect_blocking(dog()).ran_on, Some(SessionKind::Solo));

    // Without requests the pool is built after a short idle time.
    let idle = Detector::load(&cfg.detector).unwrap();
    wait_for_pool(&idle, 2);
    // With ORT_WARMUP (provisioned concurrency) start-up builds the pool too.
    let mut warm = cfg.detector.clone();
    warm.warmup = true;
    let warm = Detector::load(&warm).unwrap();
    assert!(warm.pool_ready() >= 1, "the pool is built during start-up");
    wait_for_pool(&warm, 2);
    // A single-session pool has no solo session: everything runs on the pool.
    let one = Detector::load(&common::config_with(&[("ORT_SESSIONS", "1")]).detector).unwrap();
    assert_eq!((one.pool_ready(), one.detect_blocking(dog()).ran_on), (1, Some(SessionKind::Pool)));
}

#[test]
fn missing_library_or_model_is_a_clear_error() {
    let mut cfg = common::config().detector;
    cfg.model_path = "/nonexistent/model.onnx".into();
    let err = Model::load(&cfg).err().expect("must fail");
    assert_eq!(err.code(), "startup_failed");
    assert!(err.to_string().contains("MODEL_PATH"), "{err}");
    let mut cfg = common::config().detector;
    cfg.model.labels_path = Some("/nonexistent/labels.txt".into());
    let err = Model::load(&cfg).err().expect("must fail");
    assert!(objdet::error::chain(&err).contains("LABELS_PATH"), "{}", objdet::error::chain(&err));
}

#[test]
fn corrupt_and_truncated_inputs_are_per_image_errors() {
    let d = common::detector();
    let png = common::fixture("astronaut.png");
    let code = |input| d.detect_blocking(input).result.unwrap_err().code();
    assert_eq!(code(Input::Image(png[..png.len() / 2].to_vec().into())), "truncated_image");
    let jpg = common::fixture("dog.jpg");
    assert_eq!(code(Input::Image(jpg[..jpg.len() / 2].to_vec().into())), "truncated_image");
    assert_eq!(code(Input::Image(b"definitely not an image".to_vec().into())), "not_an_image");
    assert_eq!(code(Input::Base64(b"!!!not base64!!!".to_vec().into())), "invalid_base64");
    // After errors, the workers still answer.
    assert!(d.detect_blocking(Input::Image(common::fixture("eagle.jpg").into())).result.is_ok());
}

#[test]
fn optimized_graph_cache_is_written_then_used_with_the_same_detections() {
    use objdet::detector::graph_cache::{GraphSource, graph_sources};
    let dir = common::root().join("target/test-tmp").join(format!("ortcache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data_files = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "data"))
            .collect();
        v.sort();
        v
    };
    let mut cfg = common::config().detector;
    cfg.optimized_model_path = Some(dir.join("optimized.onnx"));
    assert!(matches!(graph_sources(&cfg).0, GraphSource::ModelSavingTo(_)));
    let bytes = common::fixture("dog.jpg");
    let mut times = StageTimes::default();
    let first = Model::load(&cfg).unwrap().detect(&Input::Image(bytes.clone().into()), &mut times).unwrap();
    assert!(!first.objects.is_empty());

    // The graph is small; its weights went to one side file the graph names.
    let graph_len = std::fs::metadata(dir.join("optimized.onnx")).unwrap().len();
    let data = data_files();
    assert_eq!(data.len(), 1, "{data:?}");
    let data_len = std::fs::metadata(&data[0]).unwrap().len();
    assert!(graph_len < 1 << 20 && data_len > 7 << 20, "graph {graph_len} B, weights {data_len} B");
    assert!(dir.join("optimized.onnx.source").exists());

    // Later loads read the weights once and share them; each session finds the same objects.
    let GraphSource::Cached(cached) = graph_sources(&cfg).0 else { panic!("the cache is not used") };
    assert!(cached.weights.len() > 50, "{} shared weights", cached.weights.len());
    let second = Model::load(&cfg).unwrap().detect(&Input::Image(bytes.clone().into()), &mut times).unwrap();
    assert_eq!(first.objects, second.objects);
    let mut two = cfg.clone();
    two.sessions = 2;
    let d = Detector::load(&two).unwrap();
    let both: Vec<_> = (0..4).map(|_| d.start(Input::Image(bytes.clone().into()))).collect();
    for outcome in futures::executor::block_on(futures::future::join_all(both)) {
        assert_eq!(outcome.result.unwrap().objects, first.objects);
    }
    drop(d);

    // A cached graph whose weights file disappears between reading and loading still loads: the
    // session falls back to optimizing the model.
    let (source, _) = objdet::detector::graph_cache::plan(&cfg).sources();
    assert!(matches!(source, GraphSource::Cached(_)));
    let kept = std::fs::read(&data[0]).unwrap();
    std::fs::remove_file(&data[0]).unwrap();
    let weights = ort::session::builder::PrepackedWeights::new();
    let spec = objdet::detector::describe(&cfg).unwrap();
    assert!(objdet::detector::runtime::session(&cfg, &spec, &weights, &source).is_ok());
    std::fs::write(&data[0], kept).unwrap();

    // A truncated weights file is not used: the cache is rebuilt.
    std::fs::write(&data[0], b"short").unwrap();
    assert!(matches!(graph_sources(&cfg).0, GraphSource::ModelSavingTo(_)));
    // A stamp for another model invalidates the cache; the rebuild replaces the old weights file.
    std::fs::write(dir.join("optimized.onnx.source"), "another model").unwrap();
    assert!(matches!(graph_sources(&cfg).0, GraphSource::ModelSavingTo(_)));
    let third = Model::load(&cfg).unwrap().detect(&Input::Image(bytes.into()), &mut times).unwrap();
    assert_eq!(first.objects, third.objects);
    let rebuilt = data_files();
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert_ne!(rebuilt, data);
    assert!(matches!(graph_sources(&cfg).0, GraphSource::Cached(_)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The size guards run on the header alone: a PNG that is only a header claiming a huge frame,
/// or a side over MAX_IMAGE_SIDE, is refused without decoding; one claiming a small frame has no
/// pixel data and is truncated.
#[test]
fn size_guards_read_only_the_header() {
    use objdet::detector::decode::{decode_image, dimensions};
    let limits = common::config().detector.limits();
    let huge = common::images::png_header(50_000, 50_000);
    assert_eq!(dimensions(&huge).unwrap(), (50_000, 50_000));
    for (w, h) in [(50_000, 50_000), (40_000_000, 1), (1, 40_000_000)] {
        let err = decode_image(&common::images::png_header(w, h), &limits).unwrap_err();
        assert_eq!(err.code(), "image_too_large", "{w}x{h}: {err}");
    }
    assert_eq!(decode_image(&common::images::png_header(4, 4), &limits).unwrap_err().code(), "truncated_image");
}

/// Phone-size photos (12 MP JPEGs, `objdet dataset --phone`) are decoded at a DCT scale, never
/// below the model's input: the detections agree with a full decode's — same labels, box IoU ≥ 0.9
/// for every object clearly above the threshold — for the bundled model (stretch to 512) and a
/// letterboxing one.
#[test]
fn phone_size_photos_decoded_at_a_dct_scale_agree_with_a_full_decode() {
    let model = common::shapes_model().display().to_string();
    for (extra, photos) in
        [(vec![], "tests/fixtures/images"), (vec![("MODEL_PATH", model.as_str())], "tests/fixtures/shapes")]
    {
        let dir = common::root().join("target/test-tmp").join(format!("phone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        objdet::offload::dataset::make_phone(&common::root().join(photos), 6, &dir).unwrap();
        let load = |scaled: &str| {
            let mut pairs = extra.clone();
            pairs.push(("JPEG_SCALED_DECODE", scaled));
            let mut cfg = common::config_with(&pairs).detector;
            cfg.sessions = 1;
            objdet::detector::Model::load(&cfg).unwrap()
        };
        let (mut scaled, mut full) = (load("true"), load("false"));
        let threshold = scaled.spec().score_threshold;
        let mut compared = 0;
        for i in 0..6 {
            let bytes = std::fs::read(dir.join(format!("phone-{i:03}.jpg"))).unwrap();
            assert!((2_000_000..=5_000_000).contains(&bytes.len()), "phone-{i:03}.jpg: {} bytes", bytes.len());
            let input = Input::Image(bytes.into());
            let mut times = StageTimes::default();
            let a = scaled.detect(&input, &mut times).unwrap();
            let b = full.detect(&input, &mut times).unwrap();
            assert_eq!((a.width, a.height), (b.width, b.height), "the image's own size is reported");
            for (x, y) in [(&a, &b), (&b, &a)] {
                for o in x.objects.iter().filter(|o| o.score >= threshold + 0.1) {
                    let partner = y
                        .objects
                        .iter()
                        .filter(|p| p.label == o.label)
                        .map(|p| p.bbox.iou(&o.bbox))
                        .fold(0.0f32, f32::max);
                    assert!(
                        partner >= 0.9,
                        "phone-{i:03}.jpg: {} {:.2} at {:?} has no partner (IoU {partner:.2})",
                        o.label,
                        o.score,
                        o.bbox
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared >= 4, "{photos}: only {compared} confident objects compared");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
