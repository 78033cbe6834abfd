//! A hostile but realistic client against `objdet serve` running as its own process: each test is
//! one class of input that used to crash, exhaust or hold the server, tried at its extremes.
//! (`OBJDET_BIN=path/to/old/objdet cargo test --test hostile` runs them against another build.)
// The serializing lock is held across awaits on purpose (see `alone`).
#![allow(clippy::await_holding_lock)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::images;
use common::server::Server;

/// The tests here bound a server's CPU time, memory and timing: each runs alone in this binary, so
/// that what it measures is its own server's, not its neighbours' start-up. (Held across awaits:
/// each test has a runtime of its own, in which nothing else takes the lock.)
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

async fn post_json(server: &Server, body: &Value) -> (u16, Value) {
    let res = client().post(format!("{}/api/detect", server.base)).json(body).send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:.300}")))
}

async fn post_raw(server: &Server, ct: &str, body: Vec<u8>) -> (u16, Value) {
    let res = client()
        .post(format!("{}/api/detect", server.base))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn healthy(server: &Server) -> bool {
    client().get(format!("{}/healthz", server.base)).send().await.is_ok_and(|r| r.status() == 200)
}

fn labels(result: &Value) -> Vec<String> {
    result["objects"].as_array().unwrap().iter().map(|o| o["label"].as_str().unwrap().to_string()).collect()
}

/// Finding 1: a 116 KB PNG of 40,000,000×1 pixels (under MAX_PIXELS) aborted the process in the
/// resize. Every side is now limited, both orientations, and the batch keeps its other images.
#[tokio::test]
async fn extreme_aspect_ratios_cost_one_image_not_the_server() {
    let _alone = alone();
    let mut server = Server::start(&[]);
    let wide = images::png(40_000_000, 1);
    assert!(wide.len() < 200_000, "{} bytes", wide.len());
    let tall = images::png(1, 40_000_000);
    let (status, v) = post_json(
        &server,
        &json!({"images": [common::b64(&wide), common::b64(&common::fixture("dog.jpg")), common::b64(&tall)]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["error"]["code"], "image_too_large", "{v}");
    assert!(labels(&v["results"][1]).contains(&"dog".into()), "{v}");
    assert_eq!(v["results"][2]["error"]["code"], "image_too_large", "{v}");
    let (status, v) = post_raw(&server, "image/png", wide).await;
    assert_eq!((status, v["results"][0]["error"]["code"].as_str()), (200, Some("image_too_large")), "{v}");
    // The largest accepted extremes decode and are answered.
    for (w, h) in [(16_384, 1), (1, 16_384)] {
        let (status, v) = post_raw(&server, "image/png", images::png(w, h)).await;
        assert_eq!(status, 200, "{v}");
        assert!(v["results"][0]["error"].is_null(), "{w}x{h}: {v}");
    }
    assert!(server.alive() && healthy(&server).await);
}

/// Finding 2: per-worker buffers grown for one unusually shaped image stayed (a 2,986-byte
/// 1,000,000×1 PNG left 1.6 GB resident). After the largest images the limits allow, memory
/// returns to its level before them.
#[tokio::test]
async fn memory_returns_to_idle_after_the_largest_images() {
    let _alone = alone();
    // Every session built and warmed at start-up, so idle is idle.
    let server = Server::start(&[("ORT_WARMUP", "true")]);
    let warm = json!({"images": (0..6).map(|_| common::b64(&common::fixture("dog.jpg"))).collect::<Vec<_>>()});
    for _ in 0..3 {
        assert_eq!(post_json(&server, &warm).await.0, 200);
    }
    let idle = server.rss_mb();
    let million = images::png(1_000_000, 1);
    assert!(million.len() < 4_000, "{}", million.len());
    for _ in 0..10 {
        let (status, v) = post_raw(&server, "image/png", million.clone()).await;
        assert_eq!((status, v["results"][0]["error"]["code"].as_str()), (200, Some("image_too_large")));
    }
    // Accepted at the limits: 16,384 wide (the resizer's largest scratch), 40 MP in all.
    let big = [images::png(16_384, 1), images::png(16_384, 2_441), images::png(2_441, 16_384)];
    for png in &big {
        let (status, v) = post_raw(&server, "image/png", png.clone()).await;
        assert_eq!(status, 200);
        assert!(v["results"][0]["error"].is_null(), "{v}");
    }
    let peak = server.peak_mb();
    let after = server.rss_mb();
    assert!(peak > idle + 100.0, "the 40 MP images were decoded: peak {peak:.0} MB, idle {idle:.0} MB");
    assert!(after <= idle + 20.0, "RSS {after:.0} MB after the large images, {idle:.0} MB before (peak {peak:.0})");
}

/// Finding 4: a 633-byte JPEG claiming 6000×6000 decoded to grey at 0.3 s of CPU; 40 of them in
/// a 34 KB body cost 10.6 s. Now refused from the bytes alone. A JPEG cut short with an
/// end-of-image marker appended is not a good image either.
#[tokio::test]
async fn jpegs_that_cannot_fill_their_frame_cost_no_cpu() {
    let _alone = alone();
    let server = Server::start(&[]);
    let liar = images::jpeg_claiming(6000, 6000);
    assert!(liar.len() < 1000);
    let body = json!({"images": (0..40).map(|_| common::b64(&liar)).collect::<Vec<_>>()});
    assert!(body.to_string().len() < 40_000);
    let before = server.cpu_secs();
    let (status, v) = post_json(&server, &body).await;
    let cpu = server.cpu_secs() - before;
    assert_eq!(status, 200, "{v}");
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["error"]["code"], "truncated_image", "{r}");
    }
    assert!(cpu < 1.0, "40 lying JPEGs cost {cpu:.2} s of CPU");

    let cut = images::truncated_with_eoi(&common::fixture("dog.jpg"), 0.5);
    let (status, v) = post_raw(&server, "image/jpeg", cut).await;
    assert_eq!((status, v["results"][0]["error"]["code"].as_str()), (200, Some("truncated_image")), "{v}");
}

/// Finding 4, the general bound: whatever the images, one request decodes at most
/// MAX_REQUEST_PIXELS; the images past it get their own error and the others their results.
#[tokio::test]
async fn one_request_decodes_at_most_its_pixel_budget() {
    let _alone = alone();
    // dog.jpg is 768x576 = 442,368 pixels: two fit in 1,000,000, the third does not.
    let server = Server::start(&[("MAX_REQUEST_PIXELS", "1000000"), ("ORT_SESSIONS", "1")]);
    let dog = common::b64(&common::fixture("dog.jpg"));
    let (status, v) = post_json(&server, &json!({"images": [dog, dog, dog]})).await;
    assert_eq!(status, 200, "{v}");
    let codes: Vec<Option<&str>> =
        v["results"].as_array().unwrap().iter().map(|r| r["error"]["code"].as_str()).collect();
    assert_eq!(codes, [None, None, Some("pixel_budget_exceeded")], "{v}");
    // Each request has its own budget.
    let (_, v) = post_json(&server, &json!({"images": [dog]})).await;
    assert!(v["results"][0]["error"].is_null(), "{v}");
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
fn read_until_closed(mut s: TcpStream) -> (String, Instant) {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&all).into_owned(), Instant::now()),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Finding 5: slow and idle connections were held forever and nothing was logged. Headers must
/// arrive within HEADER_TIMEOUT_SECS (also the keep-alive idle limit), a body may not stall for
/// BODY_TIMEOUT_SECS.
#[test]
fn slow_and_idle_clients_are_disconnected_within_their_timeouts() {
    let _alone = alone();
    let server = Server::start(&[("HEADER_TIMEOUT_SECS", "1"), ("BODY_TIMEOUT_SECS", "1")]);
    // A slowloris: one header byte every 200 ms, forever.
    let t = Instant::now();
    let mut s = connect(&server);
    let slow = std::thread::spawn(move || {
        for b in b"POST /api/detect HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
            if s.write_all(&[*b]).is_err() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        unreachable!()
    });
    // A keep-alive connection left idle after one answered request.
    let mut idle = connect(&server);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let t_idle = Instant::now();
    let (answered, closed) = read_until_closed(idle);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let idle_for = closed - t_idle;
    // A body that stops after 10 of its 1,000 bytes.
    let mut stall = connect(&server);
    stall
        .write_all(b"POST /api/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"images\":")
        .unwrap();
    let t_stall = Instant::now();
    let (answer, closed) = read_until_closed(stall);
    let stalled_for = closed - t_stall;
    let slowloris_for = slow.join().unwrap();

    assert!(slowloris_for < Duration::from_secs(4), "slowloris held {slowloris_for:?}");
    assert!((Duration::from_millis(900)..Duration::from_secs(4)).contains(&idle_for), "idle held {idle_for:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(stalled_for < Duration::from_secs(4), "stalled body held {stalled_for:?}");
    assert!(server.log().contains("no complete request headers in time"), "{}", server.log());
}

/// Finding 5: with a 200-descriptor limit, 260 idle sockets made normal requests hang. The
/// connection cap stays under the open-file limit, the overflow waits in the backlog, the header
/// timeout frees the slots, and a normal request is answered.
#[tokio::test]
async fn a_flood_of_idle_connections_cannot_starve_the_server() {
    let _alone = alone();
    let server = Server::start_wrapped(&["prlimit", "--nofile=200:200", "--"], &[("HEADER_TIMEOUT_SECS", "2")]);
    let idle: Vec<TcpStream> = (0..260).filter_map(|_| TcpStream::connect(server.addr).ok()).collect();
    assert!(idle.len() >= 200, "{} sockets", idle.len());
    let t = Instant::now();
    let (status, v) = post_raw(&server, "image/jpeg", common::fixture("dog.jpg")).await;
    assert_eq!(status, 200, "{v}");
    assert!(t.elapsed() < Duration::from_secs(15), "answered after {:?}", t.elapsed());
    let log = server.log();
    assert!(log.contains("MAX_CONNECTIONS lowered to fit the open-file limit"), "{log}");
    assert!(log.contains("connection limit reached"), "{log}");
    drop(idle);
}

/// Finding 6: shutdown never finished while a client held a partly sent request. After SIGTERM
/// requests under way get SHUTDOWN_GRACE_SECS, then the process exits.
#[test]
fn sigterm_exits_within_the_grace_period_with_a_request_held_open() {
    let _alone = alone();
    let mut server = Server::start(&[("SHUTDOWN_GRACE_SECS", "2"), ("BODY_TIMEOUT_SECS", "60")]);
    let mut held = connect(&server);
    held.write_all(b"POST /api/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"images\":[\"")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = server.terminate(Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("still running after {took:?}"));
    assert!(status.success(), "{status:?}");
    // 2 s of grace, then the exit itself: seconds of slack for a machine busy with other tests.
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    assert!(server.log().contains("abandoning"), "{}", server.log());
}

/// Finding 7: requests whose clients hung up kept burning CPU. Their queued images are dropped.
#[tokio::test]
async fn abandoned_requests_are_cancelled() {
    let _alone = alone();
    let server = Server::start(&[]);
    let forty =
        json!({"images": (0..40).map(|_| common::b64(&common::fixture("dog.jpg"))).collect::<Vec<_>>()}).to_string();
    let before = server.cpu_secs();
    assert_eq!(post_json(&server, &serde_json::from_str(&forty).unwrap()).await.0, 200);
    let full = server.cpu_secs() - before;

    let before = server.cpu_secs();
    for _ in 0..5 {
        let mut s = connect(&server);
        let head = format!(
            "POST /api/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            forty.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(forty.as_bytes()).unwrap();
        drop(s); // hang up without reading
    }
    // Give the server time to do whatever it is going to do.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let abandoned = server.cpu_secs() - before;
    assert!(
        abandoned < 0.5 * full,
        "five abandoned 40-image requests cost {abandoned:.2} s of CPU, one answered {full:.2} s"
    );
    assert!(healthy(&server).await);
}

/// Finding 8: `?name=a&name=b` was answered 400 text/plain. Every rejection is JSON.
#[tokio::test]
async fn every_rejection_is_json() {
    let _alone = alone();
    let server = Server::start(&[]);
    for query in ["name=a&name=b", "name=a&name=b&name=c"] {
        let res = client()
            .post(format!("{}/api/detect?{query}", server.base))
            .header("content-type", "image/jpeg")
            .body(common::fixture("dog.jpg"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(res.headers()["content-type"], "application/json", "{query}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_request", "{query}: {v}");
    }
}

/// Finding 11: an unknown 10 MB key came back as a 10 MB error body and a 10 MB log line, and a
/// name with a newline and ESC forged log lines in the text log.
#[tokio::test]
async fn client_input_is_never_echoed_at_length_or_logged_raw() {
    let _alone = alone();
    let server = Server::start(&[("LOG_FORMAT", "text")]);
    // The answer comes before the body is all sent (the server stops reading it): a raw socket,
    // whose writer may meet a closed connection.
    let body = format!("{{\"{}\": 1}}", "k".repeat(10 << 20));
    let mut s = connect(&server);
    let head = format!(
        "POST /api/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(body.as_bytes()).is_ok());
    let (answer, _) = read_until_closed(s);
    let _ = sender.join();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.300}");
    assert!(answer.len() < 1000, "{} bytes of answer", answer.len());
    assert!(answer.contains("invalid_json"), "{answer}");

    let forged = "x.jpg\n2026-01-01T00:00:00Z  INFO objdet: forged line\u{1b}[2J";
    let body = json!({"images": [common::b64(b"not an image")], "names": [forged]});
    let (status, v) = post_json(&server, &body).await;
    assert_eq!(status, 200);
    assert_eq!(v["results"][0]["name"], forged, "the name itself is returned as sent");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    assert!(log.contains("image failed"), "{log}");
    assert!(!log.contains('\u{1b}'), "raw ESC in the log");
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")), "a forged line in the log:\n{log}");
    assert!(log.lines().all(|l| l.len() < 2000), "a log line over 2,000 bytes");
}

/// Finding 12: an unwritable ORT_OPTIMIZED_MODEL_PATH failed start-up.
#[tokio::test]
async fn an_unwritable_graph_cache_costs_the_cache_not_the_start() {
    let _alone = alone();
    let server = Server::start(&[("ORT_OPTIMIZED_MODEL_PATH", "/proc/objdet-cache/graph.onnx")]);
    let (status, v) = post_raw(&server, "image/jpeg", common::fixture("dog.jpg")).await;
    assert_eq!(status, 200, "{v}");
    assert!(labels(&v["results"][0]).contains(&"dog".into()));
    assert!(server.log().contains("running without it"), "{}", server.log());
}

/// Finding 3: S3-keys mode queued fetched objects without back-pressure: one 50 MB object asked
/// for 64 times peaked at 2,585 MB. Fetched bytes in flight are bounded (S3_MAX_BYTES_IN_FLIGHT).
#[tokio::test]
async fn s3_keys_hold_a_bounded_number_of_bytes_whatever_the_count() {
    let _alone = alone();
    use common::aws::{self, BUCKET, Moto};
    let moto = Moto::start();
    aws::create_bucket(&moto.client(), BUCKET).await;
    // A real photo followed by 50 MB the decoder never looks at: cheap to detect, heavy to hold.
    let mut big = common::fixture("dog.jpg");
    big.resize(big.len() + (50 << 20), 0x5a);
    aws::put(&moto.client(), BUCKET, "uploads/big.jpg", big).await;
    let env: Vec<(String, String)> = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start(&env);
    let idle = server.peak_mb();
    let (status, v) = post_json(&server, &json!({"s3": {"keys": vec!["uploads/big.jpg"; 64]}})).await;
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 64);
    assert!(results.iter().all(|r| labels(r).contains(&"dog".into())), "{v}");
    let peak = server.peak_mb();
    assert!(peak < 400.0, "peak RSS {peak:.0} MB fetching 64 x 50 MB (idle {idle:.0} MB)");
}

/// Per-request bounds times the connection cap was still a lot of memory (512 raw bodies of
/// 64 MiB). At most MAX_CONCURRENT_REQUESTS requests are worked on at once; the others wait with
/// their bodies unread, so the memory all clients together can make the server hold is bounded.
#[tokio::test]
async fn concurrent_large_bodies_wait_their_turn() {
    let _alone = alone();
    let mut body = common::fixture("dog.jpg");
    body.resize(body.len() + (30 << 20), 0); // a real photo, then 30 MB the decoder never reads
    let peak_with = |limit: &'static str| {
        let body = body.clone();
        async move {
            let server = Server::start(&[("MAX_CONCURRENT_REQUESTS", limit), ("ORT_WARMUP", "true")]);
            let idle = server.peak_mb();
            let requests: Vec<_> = (0..12)
                .map(|_| {
                    let (url, body) = (format!("{}/api/detect", server.base), body.clone());
                    tokio::spawn(async move {
                        client()
                            .post(url)
                            .header("content-type", "image/jpeg")
                            .body(body)
                            .send()
                            .await
                            .map(|r| r.status())
                    })
                })
                .collect();
            for r in requests {
                assert_eq!(r.await.unwrap().unwrap(), 200);
            }
            server.peak_mb() - idle
        }
    };
    let limited = peak_with("2").await;
    let unlimited = peak_with("1000").await;
    eprintln!("12 x 30 MB raw bodies: peak +{limited:.0} MB with 2 at once, +{unlimited:.0} MB with 1000");
    assert!(limited < 150.0, "peak grew {limited:.0} MB with 2 requests at once");
}
