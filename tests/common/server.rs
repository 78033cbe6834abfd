//! `objdet serve` as its own process, as a client meets it: a real socket, its memory and CPU
//! read from /proc, its stderr kept for the assertions on logs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::root;

/// The binary under test: `OBJDET_BIN` if set (to run these tests against another build), else
/// this build's `objdet`.
pub fn objdet_bin() -> PathBuf {
    std::env::var_os("OBJDET_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_objdet")))
}

/// A running `objdet serve`.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `127.0.0.1:<port>`.
    pub addr: std::net::SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `objdet serve --port 0` with the bundled model, `envs` on top, and waits until it
    /// listens.
    pub fn start(envs: &[(&str, &str)]) -> Server {
        Self::start_wrapped(&[], envs)
    }

    /// [`Server::start`] under a wrapper command (e.g. `prlimit --nofile=200:200`).
    pub fn start_wrapped(wrapper: &[&str], envs: &[(&str, &str)]) -> Server {
        let dir = root().join("target/test-logs");
        std::fs::create_dir_all(&dir).unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("serve-{}-{n}.log", std::process::id()));
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(objdet_bin());
                c
            }
            None => Command::new(objdet_bin()),
        };
        super::hermetic(&mut cmd);
        cmd.args(["serve", "--port", "0"])
            .current_dir(root())
            .env("RUST_LOG", "info")
            .env("ORT_OPTIMIZED_MODEL_PATH", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn objdet serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(base) = line.trim().strip_prefix("listening on ").map(str::to_string) else {
            let _ = child.kill();
            panic!("objdet serve did not start: {line:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        let addr = base.trim_start_matches("http://").parse().unwrap();
        Server { base, addr, child, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn status_field(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory now, MB.
    pub fn rss_mb(&self) -> f64 {
        self.status_field("VmRSS:") as f64 / 1024.0
    }

    /// Peak resident memory so far, MB.
    pub fn peak_mb(&self) -> f64 {
        self.status_field("VmHWM:") as f64 / 1024.0
    }

    /// CPU time used so far (user + system), seconds.
    pub fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        ticks as f64 / 100.0
    }

    /// `POST /api/detect` of base64 `images` from a blocking test: the status, the JSON answer
    /// and its size in bytes.
    #[allow(dead_code)] // not every test binary posts images this way
    pub fn detect_b64(&self, images: &[String]) -> (u16, serde_json::Value, usize) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let res = reqwest::Client::new()
                .post(format!("{}/api/detect", self.base))
                .json(&serde_json::json!({ "images": images }))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let bytes = res.bytes().await.unwrap();
            (status, serde_json::from_slice(&bytes).unwrap(), bytes.len())
        })
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit; returns its status and how long it took.
    pub fn terminate(&mut self, limit: Duration) -> (Option<ExitStatus>, Duration) {
        let t = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        while t.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (Some(status), t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (None, t.elapsed())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
