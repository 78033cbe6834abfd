//! `make bench`: where a request's time goes, against the floor of a bare `session.run`.
//!
//! Not a timed test: it prints ratios (and the absolute times they come from) for
//! 1. per-image stages on the fixture photos: decode, preprocess, inference, postprocess, JSON encode,
//!    next to the bare `session.run` time in the same run (1 intra-op thread and all cores);
//! 2. `objdet serve` answering one 200-image JSON request (fixtures repeated): server time per image
//!    over the bare `session.run`;
//! 3. cold start: process start → first answered 1-image request;
//! 4. peak RSS of the server after the 200-image request (and after a 50-image one, to show it is flat).
//!
//! Environment: `BENCH_ROUNDS` (default 5) rounds over the fixtures; `BENCH_BATCH` (200).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use base64::Engine as _;
use objdet::api::ms_since;
use objdet::config::Config;
use objdet::detector::decode::decode_image;
use objdet::detector::postprocess::postprocess;
use objdet::detector::preprocess::{INPUT_LEN, Preprocessor, resize_with_image};
use objdet::detector::{Model, load_labels};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = root().join("tests/fixtures/images");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn config() -> Config {
    let root = root();
    let model = root.join("models/centernet_mobilenetv3_coco.onnx").display().to_string();
    let ort = std::env::var("ORT_DYLIB_PATH")
        .unwrap_or_else(|_| root.join(".cache/ort/libonnxruntime.so").display().to_string());
    Config::from_lookup(|k| match k {
        "MODEL_PATH" => Some(model.clone()),
        "ORT_DYLIB_PATH" => Some(ort.clone()),
        _ => std::env::var(k).ok(),
    })
    .expect("config")
}

struct Stages {
    decode: Vec<f64>,
    resize_fir: Vec<f64>,
    resize_image: Vec<f64>,
    infer: Vec<f64>,
    post: Vec<f64>,
    json: Vec<f64>,
}

/// Per-stage times over the fixtures with one session of `threads` intra-op threads.
fn stages(threads: usize, rounds: usize) -> Stages {
    let mut cfg = config().detector;
    cfg.intra_threads = threads;
    let labels = load_labels(&cfg.labels_path).unwrap();
    let mut model = Model::load(&cfg).expect("model");
    let mut pre = Preprocessor::new();
    let mut scratch = vec![0f32; INPUT_LEN];
    let mut s =
        Stages { decode: vec![], resize_fir: vec![], resize_image: vec![], infer: vec![], post: vec![], json: vec![] };
    let photos = fixtures();
    // Warm-up: the first run of a session allocates its arena.
    model.run_session().unwrap();
    for _ in 0..rounds {
        for (_, bytes) in &photos {
            let t = Instant::now();
            let img = decode_image(bytes, cfg.max_pixels).unwrap();
            s.decode.push(ms_since(t));
            let t = Instant::now();
            resize_with_image(&img, &mut scratch).unwrap();
            s.resize_image.push(ms_since(t));
            let t = Instant::now();
            pre.run(&img, model.input_tensor()).unwrap();
            s.resize_fir.push(ms_since(t));
            let t = Instant::now();
            let rows = model.run_session().unwrap();
            s.infer.push(ms_since(t));
            let t = Instant::now();
            let objects = postprocess(&rows, img.width, img.height, cfg.score_threshold, cfg.nms_iou, &labels);
            s.post.push(ms_since(t));
            let t = Instant::now();
            let _ = serde_json::to_vec(&objects).unwrap();
            s.json.push(ms_since(t));
        }
    }
    s
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(extra_env: &[(&str, &str)]) -> (Server, Instant) {
        let t0 = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_objdet"));
        cmd.current_dir(root())
            .args(["serve", "--port", "0"])
            .env("RUST_LOG", "warn")
            .env("MAX_BODY_BYTES", "536870912")
            .stdout(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start objdet serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
        (Server { child, base }, t0)
    }

    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn batch_body(n: usize) -> Vec<u8> {
    let photos = fixtures();
    let b64 = base64::engine::general_purpose::STANDARD;
    let images: Vec<String> = (0..n).map(|i| b64.encode(&photos[i % photos.len()].1)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("{i}-{}", photos[i % photos.len()].0)).collect();
    serde_json::to_vec(&serde_json::json!({ "images": images, "names": names })).unwrap()
}

async fn post_json(client: &reqwest::Client, base: &str, body: Vec<u8>) -> serde_json::Value {
    let res = client
        .post(format!("{base}/api/detect"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert!(res.status().is_success(), "status {}", res.status());
    res.json().await.expect("json")
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: only check that it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("stages: run with `make bench` (cargo bench --bench stages)");
        return;
    }
    let rounds = env_usize("BENCH_ROUNDS", 5);
    let batch = env_usize("BENCH_BATCH", 200);
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let photos = fixtures();
    println!("objdet stage benchmark: {} fixture photos x {rounds} rounds, {cores} cores", photos.len());

    // 1. Stages.
    let one = stages(1, rounds);
    let all = if cores > 1 { Some(stages(cores, rounds)) } else { None };
    let bare1 = median(one.infer.clone());
    let bare_all = all.as_ref().map_or(bare1, |a| median(a.infer.clone()));
    let floor = bare1.min(bare_all);
    println!("\n## Per image (median ms, 1 session)");
    println!("| stage | ms | / bare session.run ({floor:.1} ms) |");
    println!("|---|---|---|");
    let row = |name: &str, v: f64| println!("| {name} | {v:.2} | {:.3} |", v / floor);
    row("decode (JPEG/PNG → RGB)", median(one.decode.clone()));
    row("preprocess (fast_image_resize → f32)", median(one.resize_fir.clone()));
    row("preprocess with image::resize (not used)", median(one.resize_image.clone()));
    row("session.run, 1 intra-op thread", bare1);
    if all.is_some() {
        row(&format!("session.run, {cores} intra-op threads"), bare_all);
    }
    row("postprocess (scale, NMS)", median(one.post.clone()));
    row("JSON encode", median(one.json.clone()));
    let pipeline = median(one.decode.clone()) + median(one.resize_fir.clone()) + bare1 + median(one.post.clone());
    row("sum of stages, 1 thread, serial", pipeline);
    println!(
        "fast_image_resize vs image::resize: {:.1}x faster",
        mean(&one.resize_image) / mean(&one.resize_fir).max(1e-9)
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();

    // 3. Cold start (5 runs): process start → first answered 1-image request.
    let mut cold = vec![];
    for _ in 0..5 {
        let (server, t0) = Server::start(&[]);
        let v = rt.block_on(async {
            let res = client
                .post(format!("{}/api/detect", server.base))
                .header("content-type", "image/jpeg")
                .body(photos[0].1.clone())
                .send()
                .await
                .unwrap();
            res.json::<serde_json::Value>().await.unwrap()
        });
        cold.push(ms_since(t0));
        assert!(v["results"][0]["objects"].is_array());
    }

    // 2 + 4. One big request, server time per image and peak RSS; a smaller batch first for flatness.
    let (server, _) = Server::start(&[]);
    let small = batch_body(batch / 4);
    rt.block_on(post_json(&client, &server.base, small));
    let rss_small = server.peak_rss_mb();
    let body = batch_body(batch);
    let payload_mb = body.len() as f64 / 1e6;
    let mut per_image = vec![];
    let mut rss = vec![];
    for _ in 0..3 {
        let v = rt.block_on(post_json(&client, &server.base, body.clone()));
        let total = v["timing"]["total_ms"].as_f64().unwrap();
        per_image.push(total / batch as f64);
        rss.push(server.peak_rss_mb());
    }
    drop(server);
    let e2e = median(per_image.clone());

    println!("\n## Server, one {batch}-image JSON request ({payload_mb:.1} MB), default config");
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!("| server time per image (median of 3) | {e2e:.1} ms | |");
    println!("| ÷ bare session.run, best config ({floor:.1} ms) | {:.3} | ≤ 1.05 |", e2e / floor);
    println!("| ÷ bare session.run, 1 thread ({bare1:.1} ms) | {:.3} | |", e2e / bare1);
    println!(
        "| cold start, process → first 1-image answer (median of 5) | {:.0} ms | ≤ 150 ms |",
        median(cold.clone())
    );
    println!("| peak RSS after {}-image request | {rss_small:.0} MB | |", batch / 4);
    println!(
        "| peak RSS after {batch}-image requests | {:.0} MB | ≤ 150 MB |",
        rss.iter().cloned().fold(0.0, f64::max)
    );
}
