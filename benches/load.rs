//! `make load-test`: closed-loop load on `objdet serve` at 1, 2, 4 and 8 concurrent clients, each
//! sending one raw-JPEG request at a time for `LOAD_SECS` (10) seconds. Prints throughput, latency
//! percentiles and errors, and the ratio of each level to the best single-client throughput.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: run with `make load-test` (cargo bench --bench load)");
        return;
    }
    let secs: u64 = std::env::var("LOAD_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut child = Command::new(env!("CARGO_BIN_EXE_objdet"))
        .current_dir(root())
        .args(["serve", "--port", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("objdet serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap().to_string();
    let image = std::fs::read(root().join("tests/fixtures/images/dog.jpg")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("{base}/api/detect");
    println!("closed-loop load on objdet serve, {secs} s per level, dog.jpg (768x576) per request\n");
    println!("| clients | requests/s | p50 ms | p95 ms | p99 ms | errors | ÷ 1-client throughput |");
    println!("|---|---|---|---|---|---|---|");
    let mut single = f64::NAN;
    for clients in [1usize, 2, 4, 8] {
        let (lat, errors, elapsed) = rt.block_on(async {
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            let tasks: Vec<_> = (0..clients)
                .map(|_| {
                    let (client, url, image) = (client.clone(), url.clone(), image.clone());
                    tokio::spawn(async move {
                        let mut lat = vec![];
                        let mut errors = 0usize;
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            let ok = client
                                .post(&url)
                                .header("content-type", "image/jpeg")
                                .body(image.clone())
                                .send()
                                .await
                                .is_ok_and(|r| r.status().is_success());
                            if ok {
                                lat.push(t.elapsed().as_secs_f64() * 1e3);
                            } else {
                                errors += 1;
                            }
                        }
                        (lat, errors)
                    })
                })
                .collect();
            let mut all = vec![];
            let mut errors = 0;
            for t in tasks {
                let (l, e) = t.await.unwrap();
                all.extend(l);
                errors += e;
            }
            (all, errors, start.elapsed().as_secs_f64())
        });
        let mut lat = lat;
        let rps = lat.len() as f64 / elapsed;
        if clients == 1 {
            single = rps;
        }
        println!(
            "| {clients} | {rps:.1} | {:.1} | {:.1} | {:.1} | {errors} | {:.2} |",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.95),
            pct(&mut lat, 0.99),
            rps / single
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
