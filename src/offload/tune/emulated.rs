//! Memory sizes emulated on this machine: for each size the Lambda bootstrap runs under AWS's
//! Runtime Interface Emulator (RIE) inside Linux cgroups (v1) that give it what Lambda gives a
//! function of that size — a CPU quota of `memory ÷ 1,769` vCPUs, the cores Lambda shows (at
//! least 2, one more per 1,769 MB, at most 6, capped by this machine) and a memory limit of the
//! size — with `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` set as Lambda sets it. One cold invocation, then
//! `warm` ones, each with the same batch of images inline in an API Gateway (HTTP API) event.
//!
//! The RIE gives every size the whole machine by itself and reports the configured memory as
//! "Max Memory Used"; the cgroups are what make the sizes differ, and the peak is read from the
//! memory cgroup (the RIE's own few MB included, as Lambda's sandbox includes its runtime).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{MB_PER_VCPU, ReportLine, SizeResult};

/// Where cgroup v1 controllers are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The CFS period the CPU quota is a share of.
const CPU_PERIOD_US: u64 = 100_000;

/// Why the emulated tuning cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// cgroups cannot be used (not root, no v1 controllers).
    #[error(
        "cannot use Linux cgroups here ({reason}): emulated tuning needs root and the cgroup v1 cpu, cpuset and \
         memory controllers mounted under {CGROUP_ROOT}; run it as root on such a machine"
    )]
    NoCgroups {
        /// What is missing.
        reason: String,
        /// The failing call's error.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A cgroup file could not be written or read.
    #[error("cgroup {path}")]
    Cgroup {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The emulator could not be started.
    #[error("cannot start the Lambda emulator {path}")]
    Spawn {
        /// The emulator.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The log directory could not be written.
    #[error("cannot write {path}")]
    Log {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Memory sizes, MB.
    pub sizes: Vec<u32>,
    /// AWS's Runtime Interface Emulator (`aws-lambda-rie`).
    pub rie: PathBuf,
    /// The Lambda bootstrap.
    pub bootstrap: PathBuf,
    /// The bootstrap's environment besides what Lambda sets (`MODEL_PATH`, `ORT_DYLIB_PATH`, ...).
    pub env: Vec<(String, String)>,
    /// The images of one invocation.
    pub images: Vec<(String, Vec<u8>)>,
    /// Warm invocations per size.
    pub warm: usize,
    /// How long a start or an invocation may take before the size is reported as hung.
    pub timeout: Duration,
    /// Where the emulator's logs go (one file per size).
    pub log_dir: PathBuf,
}

/// [`super::lambda_visible_cores`] capped by `machine` cores.
pub fn visible_cores(memory_mb: u32, machine: usize) -> usize {
    super::lambda_visible_cores(memory_mb).min(machine.max(1))
}

/// The CPU quota (µs per [`CPU_PERIOD_US`]) of `memory_mb`: its vCPU share, capped by the cores
/// it sees.
pub fn cpu_quota_us(memory_mb: u32, cores: usize) -> u64 {
    let share = f64::from(memory_mb) / MB_PER_VCPU;
    ((share * CPU_PERIOD_US as f64).round() as u64).clamp(1_000, cores as u64 * CPU_PERIOD_US)
}

/// Refuses early, with what to do, where cgroups cannot be made.
pub fn check_cgroups(root: &Path) -> Result<(), TuneError> {
    for controller in ["cpu", "cpuset", "memory"] {
        let dir = root.join(controller);
        if !dir.join("cgroup.procs").exists() {
            return Err(TuneError::NoCgroups {
                reason: format!("no {} controller at {}", controller, dir.display()),
                source: None,
            });
        }
        let probe = dir.join(format!("objdet-tune-probe-{}", std::process::id()));
        std::fs::create_dir(&probe).map_err(|e| TuneError::NoCgroups {
            reason: format!("cannot create a cgroup under {}", dir.display()),
            source: Some(e),
        })?;
        let _ = std::fs::remove_dir(&probe);
    }
    Ok(())
}

/// The cgroups of one size; removed when dropped (after its processes are killed).
struct Sandbox {
    dirs: Vec<PathBuf>,
    memory: PathBuf,
}

fn write(path: PathBuf, value: impl std::fmt::Display) -> Result<(), TuneError> {
    std::fs::write(&path, value.to_string()).map_err(|source| TuneError::Cgroup { path, source })
}

impl Sandbox {
    fn create(root: &Path, name: &str, memory_mb: u32, cores: usize) -> Result<Sandbox, TuneError> {
        let dir = |c: &str| root.join(c).join(name);
        let mut sandbox = Sandbox { dirs: vec![], memory: dir("memory") };
        for controller in ["cpu", "cpuset", "memory"] {
            let d = dir(controller);
            std::fs::create_dir_all(&d).map_err(|source| TuneError::Cgroup { path: d.clone(), source })?;
            sandbox.dirs.push(d);
        }
        write(dir("cpu").join("cpu.cfs_period_us"), CPU_PERIOD_US)?;
        write(dir("cpu").join("cpu.cfs_quota_us"), cpu_quota_us(memory_mb, cores))?;
        let mems = std::fs::read_to_string(root.join("cpuset/cpuset.mems")).unwrap_or_else(|_| "0".into());
        write(dir("cpuset").join("cpuset.mems"), mems.trim())?;
        write(dir("cpuset").join("cpuset.cpus"), format!("0-{}", cores - 1))?;
        let bytes = u64::from(memory_mb) << 20;
        write(dir("memory").join("memory.limit_in_bytes"), bytes)?;
        // Without swap accounting the limit is on RAM only; with it, no swap either (Lambda has none).
        let memsw = dir("memory").join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(memsw, bytes)?;
        }
        Ok(sandbox)
    }

    /// The processes in the sandbox.
    fn pids(&self) -> Vec<String> {
        std::fs::read_to_string(self.memory.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Peak memory use, MB.
    fn peak_mb(&self) -> Option<f64> {
        let text = std::fs::read_to_string(self.memory.join("memory.max_usage_in_bytes")).ok()?;
        text.trim().parse::<f64>().ok().map(|b| b / f64::from(1u32 << 20))
    }

    /// Processes the kernel killed for the memory limit.
    fn oom_kills(&self) -> u64 {
        let read = |f: &str| std::fs::read_to_string(self.memory.join(f)).unwrap_or_default();
        oom_kills_of(&read("memory.oom_control"), &read("memory.failcnt"), self.pids().len())
    }

    /// Kills every process in the sandbox and waits until it is empty.
    fn kill_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            let _ = std::process::Command::new("kill").arg("-KILL").args(&pids).status();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill_all();
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// OOM kills from a memory cgroup's `memory.oom_control` (its `oom_kill` line, kernels ≥ 4.13).
/// Older kernels only count hits of the limit (`memory.failcnt`): a hit with the emulator left
/// without its function process (`live` < 2) is then taken as one kill.
fn oom_kills_of(oom_control: &str, failcnt: &str, live: usize) -> u64 {
    let kills = oom_control.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok());
    kills.unwrap_or_else(|| u64::from(failcnt.trim().parse::<u64>().unwrap_or(0) > 0 && live < 2))
}

/// An API Gateway HTTP API (v2) event posting `images` inline to `/api/detect`.
pub fn http_event(images: &[(String, Vec<u8>)]) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "images": images.iter().map(|(_, b)| b64.encode(b)).collect::<Vec<_>>(),
        "names": images.iter().map(|(n, _)| n).collect::<Vec<_>>(),
    });
    serde_json::json!({
        "version": "2.0",
        "routeKey": "POST /api/detect",
        "rawPath": "/api/detect",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "tune.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "tune", "domainName": "tune.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "tune", "requestId": "tune", "routeKey": "POST /api/detect", "stage": "$default",
            "time": "02/Dec/2026:00:00:00 +0000", "timeEpoch": 1_795_000_000_000u64,
            "http": {"method": "POST", "path": "/api/detect", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "objdet-tune"}
        },
        "body": body.to_string(),
        "isBase64Encoded": false
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs every size of `opts` in turn; a size that fails (out of memory, a hang, an error answer)
/// is reported in its row and the others go on.
pub async fn run(opts: &Options, root: &Path) -> Result<Vec<SizeResult>, TuneError> {
    check_cgroups(root)?;
    std::fs::create_dir_all(&opts.log_dir).map_err(|source| TuneError::Log { path: opts.log_dir.clone(), source })?;
    let machine = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    // Bytes: every invocation sends the same few MB without copying them.
    let event = bytes::Bytes::from(http_event(&opts.images).to_string());
    let client = reqwest::Client::builder()
        .timeout(opts.timeout)
        .build()
        .map_err(|e| TuneError::Spawn { path: opts.rie.clone(), source: std::io::Error::other(e) })?;
    let mut results = vec![];
    for &mb in &opts.sizes {
        let cores = visible_cores(mb, machine);
        tracing::info!(memory_mb = mb, cores, quota_us = cpu_quota_us(mb, cores), "tuning");
        let result = run_size(opts, root, &client, &event, mb, cores).await?;
        tracing::info!(memory_mb = mb, p50_ms = ?result.p50_ms(), failure = ?result.failure, "done");
        results.push(result);
    }
    Ok(results)
}

async fn run_size(
    opts: &Options,
    root: &Path,
    client: &reqwest::Client,
    event: &bytes::Bytes,
    mb: u32,
    cores: usize,
) -> Result<SizeResult, TuneError> {
    let mut result = SizeResult {
        memory_mb: mb,
        vcpus: f64::from(mb) / MB_PER_VCPU,
        visible_cores: cores,
        batch: opts.images.len(),
        ..Default::default()
    };
    let name = format!("objdet-tune-{}-{mb}", std::process::id());
    let sandbox = Sandbox::create(root, &name, mb, cores)?;
    let log_path = opts.log_dir.join(format!("rie-{mb}.log"));
    let log = std::fs::File::create(&log_path).map_err(|source| TuneError::Log { path: log_path.clone(), source })?;
    let err_log = log.try_clone().map_err(|source| TuneError::Log { path: log_path.clone(), source })?;
    let io_error = |source| TuneError::Spawn { path: opts.rie.clone(), source };
    let (api, runtime) = (free_port().map_err(io_error)?, free_port().map_err(io_error)?);
    let groups: Vec<String> = sandbox.dirs.iter().map(|d| d.display().to_string()).collect();
    // The shell joins the sandbox, then becomes the emulator: everything it starts is inside.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("for g in $OBJDET_TUNE_CGROUPS; do echo $$ > \"$g/cgroup.procs\" || exit 97; done; unset OBJDET_TUNE_CGROUPS; exec \"$@\"")
        .arg("sh")
        .arg(&opts.rie)
        .arg("--runtime-interface-emulator-address")
        .arg(format!("127.0.0.1:{api}"))
        .arg("--runtime-api-address")
        .arg(format!("127.0.0.1:{runtime}"))
        .arg(&opts.bootstrap)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OBJDET_TUNE_CGROUPS", groups.join(" "))
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", mb.to_string())
        .env("_HANDLER", "http")
        .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(log)
        .stderr(err_log)
        .kill_on_drop(true)
        .spawn()
        .map_err(io_error)?;
    let url = format!("http://127.0.0.1:{api}/2015-03-31/functions/function/invocations");

    // Cold: the first invocation answered (the emulator runs Init on it).
    let start = Instant::now();
    let cold = loop {
        match client.post(&url).body(event.clone()).send().await {
            Ok(res) => break Some(res.text().await.unwrap_or_default()),
            Err(e) if e.is_connect() && start.elapsed() < opts.timeout => {
                if let Ok(Some(status)) = child.try_wait() {
                    result.failure = Some(format!("the emulator exited ({status}) before answering"));
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                result.failure = Some(if e.is_timeout() { "no answer in time".into() } else { format!("{e}") });
                break None;
            }
        }
    };
    let mut answers = vec![];
    if let Some(cold) = cold {
        answers.push(cold);
        for _ in 0..opts.warm {
            match client.post(&url).body(event.clone()).send().await {
                Ok(res) => answers.push(res.text().await.unwrap_or_default()),
                Err(e) => {
                    result.failure = Some(if e.is_timeout() { "no answer in time".into() } else { format!("{e}") });
                    break;
                }
            }
        }
    }
    result.peak_mb = sandbox.peak_mb();
    let oom = sandbox.oom_kills();
    drop(sandbox); // kills the emulator and the bootstrap
    let _ = child.wait().await;

    let bad = answers.iter().position(|a| !answered_200(a));
    if oom > 0 {
        result.failure = Some(format!("out of memory ({oom} process(es) killed at the {mb} MB limit)"));
    } else if let Some(i) = bad {
        result
            .failure
            .get_or_insert_with(|| format!("invocation {} failed: {}", i + 1, crate::error::excerpt(&answers[i])));
    }
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (init_ms, reports) = read_log(&text);
    result.init_ms = init_ms;
    if let Some(first) = reports.first() {
        // The emulator's first REPORT counts Init in its Duration.
        result.cold_ms = Some(first.duration_ms - init_ms.unwrap_or(0.0));
    }
    let good = bad.unwrap_or(answers.len());
    result.warm_ms = reports.iter().skip(1).take(good.saturating_sub(1)).map(|r| r.duration_ms).collect();
    Ok(result)
}

/// Whether an invocation's answer is an HTTP 200 response of the front door.
fn answered_200(answer: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(answer).is_ok_and(|v| v["statusCode"] == 200)
}

/// The emulator's Init duration (`INIT REPORT(durationMs: …)`) and its REPORT lines, in order.
pub fn read_log(text: &str) -> (Option<f64>, Vec<ReportLine>) {
    let init = text.lines().find_map(|l| {
        let rest = l.split("INIT REPORT(durationMs: ").nth(1)?;
        rest.split(')').next()?.trim().parse::<f64>().ok()
    });
    (init, text.lines().filter_map(ReportLine::parse).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_read_from_the_kernel_counters() {
        let control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(oom_kills_of(control, "17\n", 2), 3);
        assert_eq!(oom_kills_of("oom_kill_disable 0\noom_kill 0\n", "5\n", 1), 0, "the kernel's count wins");
        // Kernels without the `oom_kill` line: a hit of the limit that took the function process.
        let old = "oom_kill_disable 0\nunder_oom 0\n";
        assert_eq!(oom_kills_of(old, "4\n", 1), 1);
        assert_eq!(oom_kills_of(old, "4\n", 2), 0, "hit the limit but the function lives on");
        assert_eq!(oom_kills_of(old, "0\n", 0), 0);
        assert_eq!(oom_kills_of("", "", 0), 0);
    }

    #[test]
    fn lambda_shares() {
        assert_eq!(visible_cores(512, 16), 2);
        assert_eq!(visible_cores(3538, 16), 2);
        assert_eq!(visible_cores(3539, 16), 3);
        assert_eq!(visible_cores(10_240, 16), 6);
        assert_eq!(visible_cores(10_240, 2), 2);
        assert_eq!(cpu_quota_us(1769, 2), 100_000);
        assert_eq!(cpu_quota_us(512, 2), 28_943);
        assert_eq!(cpu_quota_us(10_240, 2), 200_000);
    }

    #[test]
    fn no_cgroups_is_refused_saying_what_is_needed() {
        let e = check_cgroups(Path::new("/nonexistent-cgroup-root")).unwrap_err().to_string();
        assert!(e.contains("no cpu controller") && e.contains("needs root and the cgroup v1"), "{e}");
    }

    #[test]
    fn the_emulators_log_is_read() {
        let log = "02 Dec 2026 09:18:41,393 [INFO] (rapid) INIT REPORT(durationMs: 255.086000)\n\
                   START RequestId: a Version: $LATEST\n\
                   REPORT RequestId: a\tInit Duration: 0.71 ms\tDuration: 427.81 ms\tBilled Duration: 428 ms\tMemory Size: 1024 MB\tMax Memory Used: 1024 MB\t\n\
                   REPORT RequestId: b\tDuration: 121.73 ms\tBilled Duration: 122 ms\tMemory Size: 1024 MB\tMax Memory Used: 1024 MB\t\n";
        let (init, reports) = read_log(log);
        assert_eq!(init, Some(255.086));
        assert_eq!(reports.iter().map(|r| r.duration_ms).collect::<Vec<_>>(), vec![427.81, 121.73]);
    }
}
