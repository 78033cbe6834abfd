//! The offloading experiment: `objdet bench` (the original study's table against any target),
//! `objdet plot`, `objdet dataset`, `objdet advise`, and the runtime offloading decision.

pub mod advise;
pub mod auth;
pub mod client;
pub mod csv;
pub mod dataset;
pub mod plot;
pub mod split;
pub mod stats;
pub mod tune;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::Config;
use crate::detector::Input;
use crate::service::{Arrival, DetectService};
use anyhow::{Context as _, Result, bail};
use client::{Image, Link, Measured, Mode, Remote};
use csv::Row;

/// The original study's batch sizes.
pub const DEFAULT_BATCH_SIZES: &[usize] = &[1, 2, 5, 10, 20, 50, 100, 200];

/// Where a benchmark runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// In-process, no network: the "don't offload" baseline.
    Local,
    /// A remote objdet at this base URL.
    Remote(String),
    /// Both at once: part of each batch here, part on the objdet at this base URL (`split:URL`).
    Split(String),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if s == "local" {
            Ok(Target::Local)
        } else if url(s) {
            Ok(Target::Remote(s.to_string()))
        } else if let Some(u) = s.strip_prefix("split:").filter(|u| url(u)) {
            Ok(Target::Split(u.to_string()))
        } else {
            Err(format!(
                "target must be `local`, an http(s) URL or `split:` and a URL, got {:?}",
                crate::error::excerpt(s)
            ))
        }
    }
}

/// Everything `objdet bench` needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Where detection runs.
    pub target: Target,
    /// How images travel (ignored for `local`).
    pub mode: Mode,
    /// Directory of images (cycled to fill a batch).
    pub images: PathBuf,
    /// Batch sizes.
    pub sizes: Vec<usize>,
    /// Repeats per size.
    pub repeat: usize,
    /// The "Location" column.
    pub label: String,
    /// Concurrent requests (binary, s3 PUTs, inline split).
    pub concurrency: usize,
    /// Emulated link.
    pub link: Link,
    /// Show a progress bar.
    pub progress: bool,
    /// How to authenticate to a remote target.
    pub auth: auth::AuthArgs,
    /// Earlier rows a split plan starts from (empty: each batch probes first).
    pub profile: Vec<Row>,
}

/// Loads the images of `dir` (JPEG/PNG/WebP), sorted by name.
pub fn load_images(dir: &Path) -> Result<Vec<Image>> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("reading the directory {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| crate::detector::decode::Format::of_extension(x).is_some())
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no JPEG/PNG/WebP images in {}", dir.display());
    }
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Ok(Image { name, bytes: Bytes::from(bytes) })
        })
        .collect()
}

/// The first `n` images of the cycled set, named `<i>-<file>`.
pub fn batch(images: &[Image], n: usize) -> Vec<Image> {
    (0..n)
        .map(|i| {
            let img = &images[i % images.len()];
            Image { name: format!("{i}-{}", img.name), bytes: img.bytes.clone() }
        })
        .collect()
}

/// Runs one batch in-process through the service, timed like a request.
pub async fn run_local(service: &DetectService, images: &[Image]) -> Result<Measured> {
    let start = Instant::now();
    let payload_bytes: u64 = images.iter().map(|i| i.bytes.len() as u64).sum();
    let items = images.iter().map(|i| (i.name.clone(), Input::Image(i.bytes.clone()))).collect();
    let response = service.detect_inputs(items, Arrival::now(payload_bytes as usize)).await?;
    Ok(Measured { response, payload_bytes, round_trip_s: start.elapsed().as_secs_f64(), upload_s: 0.0 })
}

/// A measured batch as a CSV row.
pub fn to_row(m: &Measured, opts: &BenchOptions, mode: &str, repeat: usize) -> Row {
    let t = &m.response.timing;
    let n = m.response.results.len();
    let payload_mb = m.payload_bytes as f64 / 1e6;
    let server_total_s = t.total_ms / 1e3;
    let remote_http = mode == "inline" || mode == "binary";
    let upload = (mode != "local").then_some(m.upload_s);
    Row {
        date: csv::utc_now(),
        total_images: n,
        payload_mb,
        transfer_mb_s: (remote_http && t.receive_ms > 0.0)
            .then(|| (t.payload_bytes as f64 / 1e6) / (t.receive_ms / 1e3)),
        server_total_s,
        avg_inference_s: t.avg_inference_ms / 1e3,
        location: opts.label.clone(),
        mode: mode.to_string(),
        round_trip_s: m.round_trip_s,
        upload_s: upload,
        client_overhead_s: (m.round_trip_s - server_total_s - if mode == "s3" { m.upload_s } else { 0.0 }).max(0.0),
        repeat,
        uplink_mbps: opts.link.uplink_mbps,
        rtt_ms: opts.link.rtt_ms,
        client_mb_s: upload.filter(|u| *u > 0.0).map(|u| payload_mb / u),
        round_trip_p50_s: None,
        round_trip_p95_s: None,
        errors: m.response.results.iter().filter(|r| r.error.is_some()).count(),
    }
}

/// Where a benchmark's batches are detected.
enum Side {
    /// In this process.
    Here(DetectService),
    /// On a remote objdet.
    There(Remote),
    /// Split between the two.
    Both(DetectService, Remote),
}

/// Runs the experiment and returns its rows (also printed as a summary by the CLI).
pub async fn run(opts: &BenchOptions, config: Arc<Config>) -> Result<Vec<Row>> {
    let images = load_images(&opts.images)?;
    let max_body = config.lambda_max_body_bytes;
    let side = match &opts.target {
        Target::Local => Side::Here(DetectService::from_config(config).await?),
        Target::Remote(url) => {
            Side::There(Remote::new(url, opts.link, opts.concurrency)?.with_auth(opts.auth.resolve(url).await?))
        }
        Target::Split(url) => {
            // One request at a time: the planner sizes each one.
            let remote = Remote::new(url, opts.link, 1)?.with_auth(opts.auth.resolve(url).await?);
            Side::Both(DetectService::from_config(config).await?, remote)
        }
    };
    let mode = match side {
        Side::Here(_) => "local",
        Side::There(_) => opts.mode.as_str(),
        Side::Both(..) => "split",
    };
    let image_mb = images.iter().map(|i| i.bytes.len() as f64).sum::<f64>() / 1e6 / images.len() as f64;
    let rows_prior = split::Prior::from_rows(&opts.profile, image_mb, opts.link.uplink_mbps, None);
    let prior = split::Prior {
        remote_request_s: opts.link.rtt_ms.unwrap_or(0.0) / 1e3,
        // The emulated uplink is known exactly (bits per second; a loopback adds nothing).
        uplink_s_per_byte: opts.link.uplink_mbps.map(|m| 8.0 / (m * 1e6)).or(rows_prior.uplink_s_per_byte),
        ..rows_prior
    };
    let total = (opts.sizes.len() * opts.repeat) as u64;
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        let batch = batch(&images, n);
        let mut group = Vec::new();
        for r in 1..=opts.repeat {
            bar.set_message(format!("{n} images, repeat {r}"));
            let measured = match &side {
                Side::Both(service, remote) => {
                    split::detect_split(service, remote, &batch, prior, max_body).await.map(|run| {
                        bar.suspend(|| eprintln!("{}", run.summary("remote")));
                        Measured {
                            payload_bytes: run.remote_payload_bytes,
                            round_trip_s: run.makespan_s,
                            upload_s: run.upload_s,
                            response: run.response,
                        }
                    })
                }
                Side::Here(service) => run_local(service, &batch).await,
                Side::There(remote) => remote.detect(&batch, opts.mode).await,
            };
            match measured {
                Ok(m) => group.push(to_row(&m, opts, mode, r)),
                Err(e) => bar.println(format!("{n} images, repeat {r}: {e}")),
            }
            bar.inc(1);
        }
        if opts.repeat > 1 && !group.is_empty() {
            let rts: Vec<f64> = group.iter().map(|r| r.round_trip_s).collect();
            let (p50, p95) =
                (stats::quantile(&rts, 0.5).unwrap_or(f64::NAN), stats::quantile(&rts, 0.95).unwrap_or(f64::NAN));
            for row in &mut group {
                row.round_trip_p50_s = Some(p50);
                row.round_trip_p95_s = Some(p95);
            }
        }
        rows.extend(group);
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// A readable table of rows (medians per size when repeated).
pub fn summary(rows: &[Row]) -> String {
    let mut out = String::from(
        "| location | mode | images | payload MB | round trip s | server s | avg inference s | transfer MB/s | errors |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut keys: Vec<(String, String, usize)> =
        rows.iter().map(|r| (r.location.clone(), r.mode.clone(), r.total_images)).collect();
    keys.dedup();
    for (loc, mode, n) in keys {
        let g: Vec<&Row> = rows.iter().filter(|r| r.location == loc && r.mode == mode && r.total_images == n).collect();
        let med =
            |f: &dyn Fn(&Row) -> f64| stats::median(&g.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let transfer = g.iter().filter_map(|r| r.transfer_mb_s).collect::<Vec<_>>();
        out.push_str(&format!(
            "| {loc} | {mode} | {n} | {:.2} | {:.3} | {:.3} | {:.4} | {} | {} |\n",
            med(&|r| r.payload_mb),
            med(&|r| r.round_trip_s),
            med(&|r| r.server_total_s),
            med(&|r| r.avg_inference_s),
            if transfer.is_empty() {
                "-".into()
            } else {
                format!("{:.1}", stats::median(&transfer).unwrap_or(f64::NAN))
            },
            g.iter().map(|r| r.errors).sum::<usize>(),
        ));
    }
    out
}
