//! `make bench`: where a request's time goes, against the floor of a bare `session.run`.
//!
//! Not a timed test: it prints ratios (and the absolute times they come from) for
//! 1. per-image stages on the fixture photos: decode, preprocess (fast_image_resize and, for
//!    comparison, `image`'s resize), inference, postprocess, JSON encode, next to the bare
//!    `session.run` time in the same run (1 intra-op thread and all cores);
//! 2. `objdet serve` in three thread layouts (N sessions × 1 thread with and without the solo
//!    session, 1 session × N threads) and the Python reference service (python/reference), on a
//!    1-image request and 40-, 50- and 200-image JSON requests of the original study's ~0.22 MB
//!    images: client and server time per image, over the floor;
//! 3. cold start: process start → first answered 1-image request (with and without the solo
//!    session, interleaved);
//! 4. peak RSS after each request size (flat = not growing with the batch);
//! 5. each model's server time against its own floor (`BENCH_MODELS=0` skips, `BENCH_ONLY_MODELS`;
//!    `BENCH_EXTRA_MODELS=a.onnx,...` adds models, `BENCH_FIXTURES=0` leaves out the bundled and
//!    fixture ones, `BENCH_MODEL_IMAGES=DIR` takes the batch from DIR's photos);
//! 6. 40 phone-size JPEGs against the floor and the Python peer with PIL's draft mode
//!    (`BENCH_PHONE=0` skips, `BENCH_ONLY_PHONE` stops after it).
//!
//! Environment: `BENCH_ROUNDS` (5) rounds over the fixtures, `BENCH_BATCH` (200), `BENCH_REPS` (3),
//! `BENCH_STARTS` (9) cold starts per configuration, `BENCH_MODEL_REPS` (5), `BENCH_PHONE_REPS` (3).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use base64::Engine as _;
use objdet::config::Config;
use objdet::detector::Model;
use objdet::detector::decode::decode_image;
use objdet::telemetry::ms_since;

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
        "ORT_OPTIMIZED_MODEL_PATH" => Some("off".into()),
        _ => std::env::var(k).ok(),
    })
    .expect("config")
}

struct Stages {
    decode: Vec<f64>,
    resize_fir: Vec<f64>,
    infer: Vec<f64>,
    post: Vec<f64>,
    json: Vec<f64>,
}

/// Per-stage times over the fixtures with one session of `threads` intra-op threads.
fn stages(threads: usize, rounds: usize) -> Stages {
    let mut cfg = config().detector;
    cfg.intra_threads = threads;
    let mut model = Model::load(&cfg).expect("model");
    let mut s = Stages { decode: vec![], resize_fir: vec![], infer: vec![], post: vec![], json: vec![] };
    let photos = fixtures();
    // Warm-up: the first run of a session allocates its arena.
    model.run_session().unwrap();
    for _ in 0..rounds {
        for (_, bytes) in &photos {
            let t = Instant::now();
            let img = decode_image(bytes, &cfg.limits()).unwrap();
            s.decode.push(ms_since(t));
            let t = Instant::now();
            let transform = model.preprocess(&img).unwrap();
            s.resize_fir.push(ms_since(t));
            let t = Instant::now();
            model.run_session().unwrap();
            s.infer.push(ms_since(t));
            let t = Instant::now();
            let objects = model.postprocess(&transform).unwrap();
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
    started: Instant,
    // Kept open: a server that logs to stdout must not die of a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// `objdet serve` on a free port with `env`.
    fn objdet(env: &[(&str, &str)]) -> Server {
        Self::objdet_bin(std::path::Path::new(env!("CARGO_BIN_EXE_objdet")), env)
    }

    /// [`Server::objdet`] from another build of `objdet` (the baseline of an A/B).
    fn objdet_bin(bin: &std::path::Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--port", "0"]).env("RUST_LOG", "warn").env("MAX_BODY_BYTES", "536870912");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::spawn(cmd)
    }

    /// The Python reference service (python/reference/app.py), installed by `scripts/setup.sh pyref`.
    fn python() -> Option<Server> {
        Self::python_with(&[])
    }

    /// [`Server::python`] with `env` (`PIL_DRAFT=1`: DCT-scaled JPEG decoding).
    fn python_with(env: &[(&str, &str)]) -> Option<Server> {
        let py = root().join(".cache/pyref/bin/python");
        if !py.exists() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut cmd = Command::new(py);
        cmd.arg(root().join("python/reference/app.py")).arg(port.to_string());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Some(Server::spawn(cmd))
    }

    fn spawn(mut cmd: Command) -> Server {
        let started = Instant::now();
        cmd.current_dir(root()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start the server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let base = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
        Server { child, base, started, _stdout: stdout }
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

    /// Process start → first answered 1-image request (retrying until the port accepts).
    fn cold_start_ms(&mut self, rt: &tokio::runtime::Runtime, client: &reqwest::Client, image: &[u8]) -> f64 {
        let body = batch_body(&[image.to_vec()], 1);
        loop {
            assert!(self.child.try_wait().ok().flatten().is_none(), "the server at {} exited", self.base);
            assert!(self.started.elapsed().as_secs() < 60, "the server at {} never answered", self.base);
            let ok = rt.block_on(async {
                client
                    .post(format!("{}/api/detect", self.base))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            });
            if ok {
                return ms_since(self.started);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The original API's JSON body: the first `n` of `images`, cycled.
fn batch_body(images: &[Vec<u8>], n: usize) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let imgs: Vec<String> = (0..n).map(|i| b64.encode(&images[i % images.len()])).collect();
    let names: Vec<String> = (0..n).map(|i| format!("image-{i}")).collect();
    serde_json::to_vec(&serde_json::json!({ "images": imgs, "names": names })).unwrap()
}

/// (client round trip ms, server total ms, response) of one JSON request.
fn post(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    base: &str,
    body: &[u8],
) -> (f64, f64, serde_json::Value) {
    rt.block_on(async {
        let t = Instant::now();
        let res = client
            .post(format!("{base}/api/detect"))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
        assert!(res.status().is_success(), "status {}", res.status());
        let v: serde_json::Value = res.json().await.expect("json");
        (ms_since(t), v["timing"]["total_ms"].as_f64().unwrap_or(f64::NAN), v)
    })
}

/// What one server did on the batch requests.
struct ServerRun {
    name: String,
    cold_ms: f64,
    /// Median client round trip of a 1-image request once started.
    single_ms: f64,
    per_image_ms: Vec<(usize, f64, f64)>, // (batch, client ms per image, server ms per image)
    rss_mb: Vec<(usize, f64)>,
}

fn measure(
    name: &str,
    mut server: Server,
    rt: &tokio::runtime::Runtime,
    images: &[Vec<u8>],
    batches: &[usize],
    reps: usize,
) -> ServerRun {
    let client = reqwest::Client::new();
    let cold_ms = server.cold_start_ms(rt, &client, &images[0]);
    let one = batch_body(images, 1);
    let single_ms = median((0..10).map(|_| post(rt, &client, &server.base, &one).0).collect());
    let mut per_image_ms = vec![];
    let mut rss_mb = vec![];
    for &n in batches {
        let body = batch_body(images, n);
        let mut c = vec![];
        let mut s = vec![];
        for _ in 0..reps {
            let (client_ms, server_ms, v) = post(rt, &client, &server.base, &body);
            assert_eq!(v["results"].as_array().map(Vec::len), Some(n));
            c.push(client_ms / n as f64);
            s.push(server_ms / n as f64);
        }
        per_image_ms.push((n, median(c), median(s)));
        rss_mb.push((n, server.peak_rss_mb()));
    }
    ServerRun { name: name.to_string(), cold_ms, single_ms, per_image_ms, rss_mb }
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
    row("session.run, 1 intra-op thread", bare1);
    if all.is_some() {
        row(&format!("session.run, {cores} intra-op threads"), bare_all);
    }
    row("postprocess (scale, NMS)", median(one.post.clone()));
    row("JSON encode", median(one.json.clone()));
    let pipeline = median(one.decode.clone()) + median(one.resize_fir.clone()) + bare1 + median(one.post.clone());
    row("sum of stages, 1 thread, serial", pipeline);

    // The original study's images: ~0.22 MB each (a deterministic set made from the fixtures).
    let data_dir = root().join("target/bench-data");
    if !data_dir.join(format!("img-{:03}.jpg", batch - 1)).exists() {
        objdet::offload::dataset::make(&root().join("tests/fixtures/images"), batch, &data_dir, 0.218)
            .expect("dataset");
    }
    let images: Vec<Vec<u8>> =
        (0..batch).map(|i| std::fs::read(data_dir.join(format!("img-{i:03}.jpg"))).unwrap()).collect();
    let payload_mb = images.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let json_mb = batch_body(&images, batch).len() as f64 / 1e6;
    println!("\n{batch}-image request: {payload_mb:.1} MB of JPEGs, {json_mb:.1} MB of JSON");

    let rt = tokio::runtime::Runtime::new().unwrap();
    if std::env::var("BENCH_ONLY_MEMORY").is_ok() {
        memory_peaks(&rt, &images, batch, env_usize("BENCH_MEMORY_REPS", 3));
        return;
    }
    let baseline_env = std::env::var("BENCH_BASELINE_ENV").unwrap_or_default();
    if std::env::var_os("BENCH_BASELINE").is_some() || !baseline_env.is_empty() {
        let this = std::path::PathBuf::from(env!("CARGO_BIN_EXE_objdet"));
        let baseline = std::env::var_os("BENCH_BASELINE").map_or(this, std::path::PathBuf::from);
        let env: Vec<(&str, &str)> = baseline_env.split(',').filter_map(|kv| kv.split_once('=')).collect();
        compare_with_baseline(&baseline, &env, &rt, &images, batch);
        return;
    }
    // 2. Every model: the server against the floor of its own model.
    if std::env::var("BENCH_MODELS").as_deref() != Ok("0") {
        // `BENCH_MODEL_IMAGES=DIR`: the models' batch from these photos instead (e.g. a task's own
        // photos, so that a segmenter's masks are part of what is timed), cycled to 40.
        let own: Vec<Vec<u8>> = std::env::var("BENCH_MODEL_IMAGES").map_or_else(
            |_| Vec::new(),
            |dir| {
                let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .expect("BENCH_MODEL_IMAGES")
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
                    .collect();
                paths.sort();
                paths.iter().cycle().take(40).map(|p| std::fs::read(p).expect("photo")).collect()
            },
        );
        let set = if own.is_empty() { &images[..40.min(images.len())] } else { &own[..] };
        model_ratios(&rt, set, env_usize("BENCH_MODEL_REPS", 5));
    }
    // 3. Phone-size photos: DCT-scaled decoding against the floor and the Python peer.
    if std::env::var("BENCH_PHONE").as_deref() != Ok("0") {
        phone(&rt, env_usize("BENCH_PHONE_REPS", 3));
    }
    if std::env::var("BENCH_ONLY_PHONE").is_ok() {
        return;
    }
    if std::env::var("BENCH_ONLY_MODELS").is_ok() {
        return;
    }

    let reps = env_usize("BENCH_REPS", 3);
    let batches = [40, batch / 4, batch];
    // Cold start with the optimized-graph cache, the default (the first start writes it, later ones
    // read it); here in target/ rather than the user's cache directory.
    let cache = root().join("target/bench-optimized.onnx");
    let cache_s = cache.display().to_string();
    let client = reqwest::Client::new();
    // Interleaved with starts without the solo session (this VM's speed drifts within minutes).
    Server::objdet(&[("ORT_OPTIMIZED_MODEL_PATH", &cache_s)]).cold_start_ms(&rt, &client, &images[0]);
    let (mut cached_cold, mut no_solo_cold) = (vec![], vec![]);
    for _ in 0..env_usize("BENCH_STARTS", 9) {
        let mut s = Server::objdet(&[("ORT_OPTIMIZED_MODEL_PATH", &cache_s)]);
        cached_cold.push(s.cold_start_ms(&rt, &client, &images[0]));
        let mut s = Server::objdet(&[("ORT_OPTIMIZED_MODEL_PATH", &cache_s), ("ORT_SOLO_THREADS", "0")]);
        no_solo_cold.push(s.cold_start_ms(&rt, &client, &images[0]));
    }
    let (cached_cold, no_solo_cold) = (median(cached_cold), median(no_solo_cold));

    let cores_s = cores.to_string();
    let mut runs = vec![
        measure(
            &format!("objdet: {cores} sessions x 1 thread + solo session, optimized graph cached (default)"),
            Server::objdet(&[("ORT_OPTIMIZED_MODEL_PATH", &cache_s)]),
            &rt,
            &images,
            &batches,
            reps,
        ),
        measure(
            &format!("objdet: {cores} sessions x 1 thread + solo session, no cache (first start, Lambda)"),
            Server::objdet(&[("ORT_OPTIMIZED_MODEL_PATH", "off")]),
            &rt,
            &images,
            &batches,
            reps,
        ),
        measure(
            &format!("objdet: {cores} sessions x 1 thread, no solo session, optimized graph cached"),
            Server::objdet(&[("ORT_OPTIMIZED_MODEL_PATH", &cache_s), ("ORT_SOLO_THREADS", "0")]),
            &rt,
            &images,
            &batches,
            reps,
        ),
        measure(
            &format!("objdet: 1 session x {cores} threads"),
            Server::objdet(&[("ORT_SESSIONS", "1"), ("ORT_INTRA_THREADS", &cores_s)]),
            &rt,
            &images,
            &batches,
            reps,
        ),
    ];
    if let Some(py) = Server::python() {
        runs.push(measure("Python reference (Flask + onnxruntime + PIL)", py, &rt, &images, &batches, reps));
    } else {
        println!("(no Python reference: run `scripts/setup.sh pyref`)");
    }

    println!("\n## Servers on one request (median of {reps}); bare session.run floor {floor:.1} ms");
    println!(
        "| server | cold start ms | 1-image request ms | batch | client ms/image | server ms/image | ÷ floor | peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &runs {
        for ((n, c, s), (_, rss)) in r.per_image_ms.iter().zip(&r.rss_mb) {
            println!(
                "| {} | {:.0} | {:.1} | {n} | {c:.1} | {s:.1} | {:.3} | {rss:.0} |",
                r.name,
                r.cold_ms,
                r.single_ms,
                s / floor
            );
        }
    }
    let objdet_200 = runs[0].per_image_ms.last().map_or(f64::NAN, |p| p.1);
    println!("\nTargets:");
    println!(
        "- server time per image, {batch}-image request: {:.1} ms = {:.3} x bare session.run (target <= 1.05)",
        runs[0].per_image_ms.last().map_or(f64::NAN, |p| p.2),
        runs[0].per_image_ms.last().map_or(f64::NAN, |p| p.2) / floor
    );
    if let Some(py) = runs.iter().find(|r| r.name.starts_with("Python")) {
        let py_200 = py.per_image_ms.last().map_or(f64::NAN, |p| p.1);
        println!(
            "- vs the Python reference per image (client-side, {batch} images): {:.2}x faster (target >= 1.5)",
            py_200 / objdet_200
        );
        println!(
            "- cold start: objdet {cached_cold:.0} ms with the optimized graph cached (default; {no_solo_cold:.0} ms without the solo session), {:.0} ms without the cache (first start, Lambda), Python {:.0} ms (target <= 150 ms)",
            runs[1].cold_ms, py.cold_ms
        );
    } else {
        println!(
            "- cold start: objdet {cached_cold:.0} ms with the optimized graph cached (default; {no_solo_cold:.0} ms without the solo session), {:.0} ms without the cache (first start, Lambda) (target <= 150 ms)",
            runs[1].cold_ms
        );
    }
    for r in &runs[..2] {
        println!(
            "- peak RSS after the {batch}-image request, {}: {:.0} MB (target <= 150 MB; after {}: {:.0} MB, after 40: {:.0} MB)",
            r.name,
            r.rss_mb.last().map_or(f64::NAN, |r| r.1),
            batches[1],
            r.rss_mb[1].1,
            r.rss_mb[0].1,
        );
    }
}

/// Peak RSS of one `objdet serve` on the `batch`-image request, (a) alone in a fresh process and
/// (b) after five 40-image requests while two busy processes compete for the cores — the order
/// and the load under which the peak used to depend on timing. `reps` fresh servers each,
/// alternating; the busy processes are `sh` loops, killed afterwards.
fn memory_peaks(rt: &tokio::runtime::Runtime, images: &[Vec<u8>], batch: usize, reps: usize) {
    let client = reqwest::Client::new();
    let big = batch_body(images, batch);
    let forty = batch_body(images, 40);
    let bin = std::env::var_os("BENCH_MEMORY_BIN")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_objdet")), std::path::PathBuf::from);
    let (mut alone, mut loaded, mut alone_ms, mut loaded_ms) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let mut s = Server::objdet_bin(&bin, &[]);
        s.cold_start_ms(rt, &client, &images[0]);
        let (_, server_ms, _) = post(rt, &client, &s.base, &big);
        alone.push(s.peak_rss_mb());
        alone_ms.push(server_ms / batch as f64);
        drop(s);

        let mut s = Server::objdet_bin(&bin, &[]);
        s.cold_start_ms(rt, &client, &images[0]);
        let mut hogs: Vec<std::process::Child> = (0..2)
            .map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("a busy loop"))
            .collect();
        for _ in 0..5 {
            post(rt, &client, &s.base, &forty);
        }
        let (_, server_ms, _) = post(rt, &client, &s.base, &big);
        loaded.push(s.peak_rss_mb());
        loaded_ms.push(server_ms / batch as f64);
        for h in &mut hogs {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
    println!(
        "\n## Peak RSS of the {batch}-image request ({} MB of JSON), {reps} fresh servers each",
        big.len() / 1_000_000
    );
    println!("| sequence | peak RSS MB (median, max) | server ms/image (median) |");
    println!("|---|---|---|");
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    println!("| alone | {:.0}, {:.0} | {:.1} |", median(alone.clone()), max(&alone), median(alone_ms));
    println!(
        "| after five 40-image requests, two busy processes | {:.0}, {:.0} | {:.1} |",
        median(loaded.clone()),
        max(&loaded),
        median(loaded_ms)
    );
    println!("(target: <= 150 MB in both)");
}

/// The models `make bench` compares with their floors: the bundled one and every fixture
/// detector (those with a reference-predictions file).
fn bench_models() -> Vec<PathBuf> {
    let mut models = vec![root().join("models/centernet_mobilenetv3_coco.onnx")];
    let dir = root().join("tests/fixtures/models");
    let mut fixtures: Vec<PathBuf> =
        std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    fixtures.retain(|p| p.extension().is_some_and(|e| e == "onnx") && p.with_extension("oracle.json").exists());
    fixtures.sort();
    if std::env::var("BENCH_FIXTURES").as_deref() == Ok("0") {
        models.clear();
        fixtures.clear();
    }
    models.extend(fixtures);
    // `BENCH_EXTRA_MODELS=a.onnx,b.onnx`: models of a realistic size beside the tiny fixtures.
    let extra = std::env::var("BENCH_EXTRA_MODELS").unwrap_or_default();
    models.extend(extra.split(',').filter(|p| !p.is_empty()).map(PathBuf::from));
    models
}

/// The floor of `model`: one single-thread session per core, all running at once on an input
/// already in place (no decoding, no resizing), in ms per image of throughput.
fn floor_ms(model: &std::path::Path, cores: usize, runs: usize) -> f64 {
    let mut cfg = config().detector;
    cfg.model_path = model.to_path_buf();
    cfg.intra_threads = 1;
    let photo = decode_image(&fixtures()[0].1, &cfg.limits()).unwrap();
    let mut models: Vec<Model> = (0..cores)
        .map(|_| {
            let mut m = Model::load(&cfg).expect("model");
            m.preprocess(&photo).unwrap();
            m.run_session().unwrap(); // the first run sizes the arena
            m
        })
        .collect();
    let barrier = std::sync::Barrier::new(cores);
    let t = Instant::now();
    std::thread::scope(|s| {
        for m in &mut models {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for _ in 0..runs {
                    m.run_session().unwrap();
                }
            });
        }
    });
    ms_since(t) / (cores * runs) as f64
}

/// The decode floor of `images` for a model taking `input`: the photos decoded and nothing else,
/// one thread per core in parallel, in ms per image of throughput; the faster of two decoders:
/// libjpeg-turbo as objdet calls it (DCT-scaled where the input allows) and the `image` crate's
/// own decoders (zune-jpeg for JPEG, always a full decode). The work any server must do before the
/// model runs: `floor_ms + decode_floor_ms` is what a pipeline with no overhead would take.
fn decode_floor_ms(input: &objdet::detector::spec::InputSpec, images: &[Vec<u8>], cores: usize) -> f64 {
    use objdet::detector::decode::{RgbImage, decode_image_with};
    use objdet::detector::preprocess::Geometry;
    let limits = config().detector.limits();
    let wanted = |w: u32, h: u32| Geometry::wanted(input, w, h);
    let objdet = |bytes: &Vec<u8>, out: &mut RgbImage| {
        decode_image_with(bytes, &limits, input.idct, Some(&wanted), out, |_, _| Ok(())).expect("decode");
    };
    let crate_decoder = |bytes: &Vec<u8>, _: &mut RgbImage| {
        std::hint::black_box(image::load_from_memory(bytes).expect("decode").into_rgb8());
    };
    let parallel = |decode: &(dyn Fn(&Vec<u8>, &mut RgbImage) + Sync)| {
        let t = Instant::now();
        std::thread::scope(|s| {
            for share in images.chunks(images.len().div_ceil(cores)) {
                s.spawn(move || {
                    let mut out = RgbImage::default();
                    share.iter().for_each(|b| decode(b, &mut out));
                });
            }
        });
        ms_since(t) / images.len() as f64
    };
    parallel(&objdet).min(parallel(&crate_decoder))
}

/// For each model: `objdet serve` (defaults) on a 40-image mixed batch, server time per image,
/// against the model's floor measured in the same run, interleaved rep by rep.
fn model_ratios(rt: &tokio::runtime::Runtime, images: &[Vec<u8>], reps: usize) {
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let client = reqwest::Client::new();
    let body = batch_body(images, images.len());
    println!(
        "
## Each model: server time per image on a {}-image mixed batch ÷ its floor",
        images.len()
    );
    println!("(floor: {cores} single-thread sessions in parallel, no decoding; decode: the same photos decoded alone,");
    println!(
        " the faster decoder of libjpeg-turbo and zune-jpeg, {cores} threads; medians of {reps} interleaved reps)"
    );
    println!(
        "| model | format, input | objects/image | floor ms/image | decode ms/image | server ms/image | ÷ floor | ÷ (floor + decode) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for model in bench_models() {
        let mut cfg = config().detector;
        cfg.model_path = model.clone();
        let spec = objdet::detector::describe(&cfg).expect("model");
        let path = model.display().to_string();
        let server = Server::objdet(&[("MODEL_PATH", &path), ("ORT_OPTIMIZED_MODEL_PATH", "off")]);
        post(rt, &client, &server.base, &body); // warm: every session built and run
        // Runs per floor rep: about as many images as the batch.
        let runs = images.len().div_ceil(cores).max(4);
        let (mut floors, mut decodes, mut served) = (vec![], vec![], vec![]);
        let mut objects = 0.0;
        for _ in 0..reps {
            floors.push(floor_ms(&model, cores, runs));
            decodes.push(decode_floor_ms(&spec.input, images, cores));
            let (_, server_ms, v) = post(rt, &client, &server.base, &body);
            let results = v["results"].as_array().expect("results");
            assert_eq!(results.len(), images.len());
            objects = results.iter().map(|r| r["objects"].as_array().map_or(0, Vec::len)).sum::<usize>() as f64
                / images.len() as f64;
            served.push(server_ms / images.len() as f64);
        }
        drop(server);
        let (f, d, s) = (median(floors), median(decodes), median(served));
        let task = spec.head.extra().task();
        let task = if task == "detect" { String::new() } else { format!(" ({task})") };
        println!(
            "| {}{task} | {}, {}x{} | {objects:.1} | {f:.2} | {d:.2} | {s:.2} | {:.3} | {:.3} |",
            spec.file,
            spec.head.format().as_str(),
            spec.input.width,
            spec.input.height,
            s / f,
            s / (f + d)
        );
    }
}

/// 40 phone-size JPEGs (`objdet dataset --phone`: 12 MP, 2–5 MB) in one request: server time per
/// image of `objdet serve` (DCT-scaled decoding on, and off), of the Python peer with PIL's draft
/// mode and without, against the bundled model's floor, interleaved rep by rep.
fn phone(rt: &tokio::runtime::Runtime, reps: usize) {
    let dir = root().join("target/bench-phone");
    let count = 40;
    let names: Vec<PathBuf> = (0..count).map(|i| dir.join(format!("phone-{i:03}.jpg"))).collect();
    if !names.iter().all(|p| p.exists()) {
        let _ = std::fs::remove_dir_all(&dir);
        objdet::offload::dataset::make_phone(&root().join("tests/fixtures/images"), count, &dir).expect("phone set");
    }
    let images: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).expect("phone photo")).collect();
    let mb = images.iter().map(Vec::len).sum::<usize>() as f64 / 1e6 / count as f64;
    let body = batch_body(&images, count);
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let model = root().join("models/centernet_mobilenetv3_coco.onnx");
    let mut servers: Vec<(&str, Server)> = vec![
        ("objdet (DCT-scaled decoding, default)", Server::objdet(&[])),
        ("objdet, JPEG_SCALED_DECODE=false", Server::objdet(&[("JPEG_SCALED_DECODE", "false")])),
    ];
    for (name, env) in [("Python peer, PIL draft mode", &[("PIL_DRAFT", "1")][..]), ("Python peer, full decode", &[])] {
        match Server::python_with(env) {
            Some(s) => servers.push((name, s)),
            None => println!("(no Python reference: run `scripts/setup.sh pyref`)"),
        }
    }
    let client = reqwest::Client::new();
    for (_, s) in &servers {
        post(rt, &client, &s.base, &batch_body(&images, 2)); // warm
    }
    let mut cfg = config().detector;
    cfg.model_path = model.clone();
    let input = objdet::detector::describe(&cfg).expect("model").input;
    let (mut floors, mut decodes, mut served) = (vec![], vec![], vec![vec![]; servers.len()]);
    for _ in 0..reps {
        floors.push(floor_ms(&model, cores, count.div_ceil(cores)));
        decodes.push(decode_floor_ms(&input, &images, cores));
        for (i, (_, s)) in servers.iter().enumerate() {
            let (_, server_ms, v) = post(rt, &client, &s.base, &body);
            let results = v["results"].as_array().expect("results");
            assert_eq!(results.len(), count);
            assert!(results.iter().all(|r| r["error"].is_null()), "an image failed: {v}");
            served[i].push(server_ms / count as f64);
        }
    }
    let (floor, decode) = (median(floors), median(decodes));
    println!("\n## Phone-size photos: {count} JPEGs of 4032x3024 ({mb:.2} MB each) in one request, bundled model");
    println!(
        "(floor: {cores} single-thread sessions in parallel, no decoding: {floor:.2} ms/image; decode: the photos decoded alone, \
         the faster of libjpeg-turbo at objdet's DCT scale and zune-jpeg, {cores} threads: {decode:.2} ms/image; \
         medians of {reps} interleaved reps)"
    );
    println!("| server | server ms/image | ÷ floor | ÷ (floor + decode) |");
    println!("|---|---|---|---|");
    for ((name, _), times) in servers.iter().zip(served) {
        let t = median(times);
        println!("| {name} | {t:.2} | {:.3} | {:.3} |", t / floor, t / (floor + decode));
    }
}

/// `BENCH_BASELINE=path/to/other/objdet make bench`: this build against another one in the same
/// run, interleaved (this VM's speed drifts by ±15 % within minutes): `BENCH_STARTS` (15) cold
/// starts each, then `BENCH_REPS` (5) `batch`-image requests each, alternating servers.
/// `BENCH_BASELINE_ENV=K=V,...` runs the baseline with those settings (alone: this build with
/// and without them, e.g. `ORT_PREFAULT_MB=0`).
fn compare_with_baseline(
    baseline: &std::path::Path,
    baseline_env: &[(&str, &str)],
    rt: &tokio::runtime::Runtime,
    images: &[Vec<u8>],
    batch: usize,
) {
    let this = std::path::PathBuf::from(env!("CARGO_BIN_EXE_objdet"));
    let builds = [("this build", this.as_path()), ("baseline", baseline)];
    let caches: Vec<String> =
        (0..2).map(|i| root().join(format!("target/bench-ab-optimized-{i}.onnx")).display().to_string()).collect();
    let client = reqwest::Client::new();
    let mut cold: [Vec<f64>; 2] = [vec![], vec![]];
    for (i, (_, bin)) in builds.iter().enumerate() {
        // The first start of each writes its graph cache.
        Server::objdet_bin(bin, &[("ORT_OPTIMIZED_MODEL_PATH", &caches[i])]).cold_start_ms(rt, &client, &images[0]);
    }
    for round in 0..env_usize("BENCH_STARTS", 15) {
        for k in 0..2 {
            let i = (round + k) % 2; // alternate which goes first
            let mut s = Server::objdet_bin(builds[i].1, &[("ORT_OPTIMIZED_MODEL_PATH", &caches[i])]);
            cold[i].push(s.cold_start_ms(rt, &client, &images[0]));
        }
    }
    let servers: Vec<Server> =
        (0..2).map(|i| Server::objdet_bin(builds[i].1, &[("ORT_OPTIMIZED_MODEL_PATH", &caches[i])])).collect();
    let body = batch_body(images, batch);
    for s in &servers {
        post(rt, &client, &s.base, &body); // warm: every session built and run
    }
    let mut per_image: [Vec<f64>; 2] = [vec![], vec![]];
    for _ in 0..env_usize("BENCH_REPS", 5) {
        for (i, s) in servers.iter().enumerate() {
            let (_, server_ms, v) = post(rt, &client, &s.base, &body);
            assert_eq!(v["results"].as_array().map(Vec::len), Some(batch));
            per_image[i].push(server_ms / batch as f64);
        }
    }
    println!("\n## A/B against {} {baseline_env:?} (interleaved)", baseline.display());
    println!(
        "| build | cold start ms (median of {}) | {batch}-image request, server ms/image (median of {}) | peak RSS MB |",
        cold[0].len(),
        per_image[0].len()
    );
    println!("|---|---|---|---|");
    let (c, p) = (cold.map(median), per_image.map(median));
    for (i, (name, _)) in builds.iter().enumerate() {
        println!("| {name} | {:.1} | {:.2} | {:.0} |", c[i], p[i], servers[i].peak_rss_mb());
    }
    println!(
        "\nthis build / baseline: cold start {:.3}, {batch}-image time per image {:.3} (no regression: both <= 1.05)",
        c[0] / c[1],
        p[0] / p[1]
    );
}
