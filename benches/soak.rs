//! `make soak`: a bounded soak of `objdet serve` — `SOAK_SECS` (600) seconds of 8 concurrent
//! clients mixing good batches, bad images and slow or vanishing clients, with the server's RSS
//! sampled every 5 s. Passes when RSS stays within 10 % of its level after the first minute and
//! no request got a 5xx; prints the series as a markdown table (docs/reliability.md).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/images").join(name)).unwrap()
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    ok: AtomicUsize,
    rejected: AtomicUsize,
    server_errors: AtomicUsize,
    transport_errors: AtomicUsize,
    slow: AtomicUsize,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: run with `make soak` (cargo bench --bench soak)");
        return;
    }
    let secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let mut child = Command::new(env!("CARGO_BIN_EXE_objdet"))
        .current_dir(root())
        .args(["serve", "--port", "0"])
        .env("RUST_LOG", "warn")
        .env("HEADER_TIMEOUT_SECS", "2")
        .env("BODY_TIMEOUT_SECS", "2")
        .stdout(Stdio::piped())
        .spawn()
        .expect("objdet serve");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap().to_string();
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    // The mix: good batches, each kind of bad image, and the raw single image.
    let mut liar = {
        let mut img = Vec::new();
        image::DynamicImage::new_rgb8(64, 48)
            .write_to(&mut std::io::Cursor::new(&mut img), image::ImageFormat::Jpeg)
            .unwrap();
        img
    };
    let sof = liar.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
    liar[sof + 5..sof + 9].copy_from_slice(&[0x17, 0x70, 0x17, 0x70]); // claims 6000x6000
    let dog = fixture("dog.jpg");
    let mut cut = dog[..dog.len() / 2].to_vec();
    cut.extend_from_slice(&[0xff, 0xd9]);
    let good = {
        let images: Vec<String> =
            ["dog.jpg", "person.jpg", "giraffe.jpg", "eagle.jpg"].iter().map(|n| b64(&fixture(n))).collect();
        serde_json::json!({ "images": images })
    }
    .to_string();
    let bad = serde_json::json!({"images": [b64(&liar), b64(&cut), b64(b"not an image"), "%%%", b64(&fixture("coffee.png"))]}).to_string();
    let bodies: Arc<Vec<(&'static str, String)>> = Arc::new(vec![
        ("application/json", good),
        ("application/json", bad),
        ("application/json", "{\"images\": [tru".into()),
    ]);

    let counts = Arc::new(Counts::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut samples: Vec<(u64, f64)> = vec![];
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut tasks = vec![];
        for c in 0..8usize {
            let (client, base, bodies, counts, dog) =
                (client.clone(), base.clone(), bodies.clone(), counts.clone(), dog.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while Instant::now() < deadline {
                    i += 1;
                    // Every 8th request: a client that is slow, then vanishes.
                    if i % 8 == 0 {
                        counts.slow.fetch_add(1, Ordering::Relaxed);
                        let _ = tokio::task::spawn_blocking(move || {
                            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                                for b in b"POST /api/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 9999\r\n\r\n{\"ima" {
                                    if s.write_all(&[*b]).is_err() {
                                        break;
                                    }
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                            }
                        })
                        .await;
                        continue;
                    }
                    let req = if i % 8 == 1 {
                        client.post(format!("{base}/api/detect")).header("content-type", "image/jpeg").body(dog.clone())
                    } else {
                        let (ct, body) = &bodies[i % bodies.len()];
                        client.post(format!("{base}/api/detect")).header("content-type", *ct).body(body.clone())
                    };
                    counts.requests.fetch_add(1, Ordering::Relaxed);
                    match req.send().await {
                        Ok(r) if r.status().is_server_error() => counts.server_errors.fetch_add(1, Ordering::Relaxed),
                        Ok(r) if r.status().is_success() => counts.ok.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => counts.rejected.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counts.transport_errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        let start = Instant::now();
        while Instant::now() < deadline {
            samples.push((start.elapsed().as_secs(), rss_mb(pid)));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let after_first_minute: Vec<f64> = samples.iter().filter(|(t, _)| *t >= 60).map(|(_, r)| *r).collect();
    let reference = after_first_minute.first().copied().unwrap_or(f64::NAN);
    let (lo, hi) = after_first_minute.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let within = after_first_minute.iter().all(|r| (r - reference).abs() <= 0.10 * reference);
    let load = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    println!("soak: {secs} s, 8 clients; objdet serve pid {pid}\n");
    println!(
        "requests {} (200: {}, 4xx: {}, 5xx: {}, transport errors: {}), slow/vanishing clients {}",
        load(&counts.requests),
        load(&counts.ok),
        load(&counts.rejected),
        load(&counts.server_errors),
        load(&counts.transport_errors),
        load(&counts.slow)
    );
    println!(
        "RSS after the first minute: {reference:.1} MB at 60 s, range {lo:.1}-{hi:.1} MB ({:+.1} % / {:+.1} %)\n",
        (lo / reference - 1.0) * 100.0,
        (hi / reference - 1.0) * 100.0
    );
    println!("| t (s) | RSS (MB) |\n|---|---|");
    for (t, r) in &samples {
        println!("| {t} | {r:.1} |");
    }
    let _ = child.kill();
    let _ = child.wait();
    let ok = within && load(&counts.server_errors) == 0;
    println!(
        "\nsoak {}: RSS within 10 % after the first minute: {within}; 5xx: {}",
        if ok { "PASSED" } else { "FAILED" },
        load(&counts.server_errors)
    );
    if !ok {
        std::process::exit(1);
    }
}
