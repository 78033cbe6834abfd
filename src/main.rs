//! `objdet`: the command-line front door — the server, local or offloaded detection, and the
//! offloading experiment (bench, plot, dataset, advise).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

use objdet::detector::Input;
use objdet::offload::auth::AuthArgs;
use objdet::offload::client::{self, Image, Link, Mode, Remote};
use objdet::offload::{self, BenchOptions, Target, advise};
use objdet::service::Arrival;
use objdet::telemetry::metrics::Source;
use objdet::{Config, DetectService, server, telemetry};

#[derive(Debug, Parser)]
#[command(name = "objdet", version, about = "Object detection here, on EC2/Docker, or on AWS Lambda — and which wins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum BulkAction {
    /// Start a run over s3://BUCKET/PREFIX (results/<key>.json; unchanged objects are skipped).
    Start {
        /// The state machine (the stack's BulkStateMachineArn output).
        #[arg(long, env = "OBJDET_STATE_MACHINE")]
        state_machine: String,
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// The prefix (under the stack's BulkInputPrefix).
        #[arg(long)]
        prefix: String,
        /// Show progress until the run ends, then its summary.
        #[arg(long)]
        wait: bool,
        /// No progress bar (with --wait).
        #[arg(long)]
        quiet: bool,
    },
    /// Where a run stands (its summary once it has ended).
    Status {
        /// The execution's ARN (what `bulk start` printed).
        execution: String,
    },
}

/// Whether `detect` runs here or on `--endpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Offload {
    /// Always run locally.
    Never,
    /// Always send to --endpoint.
    Always,
    /// Decide per batch from a benchmark profile (--profile results.csv).
    Auto,
    /// Run part here and part on --endpoint at the same time (planned from --profile when given,
    /// re-planned from what each side measures).
    Split,
}

/// `objdet bench`'s flags.
#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// `local` (in-process, no network) or the service's base URL.
    #[arg(long, default_value = "local")]
    target: Target,
    /// How images travel to a remote target.
    #[arg(long, value_enum, default_value = "inline")]
    mode: Mode,
    /// Directory of images, cycled to fill each batch.
    #[arg(long, default_value = "tests/fixtures/images")]
    images: PathBuf,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = offload::DEFAULT_BATCH_SIZES.to_vec())]
    sizes: Vec<usize>,
    /// Repeats per size (p50/p95 columns when > 1).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// The "Location" column.
    #[arg(long, default_value = "local")]
    label: String,
    /// CSV to append to.
    #[arg(long, default_value = "results.csv")]
    out: PathBuf,
    /// Concurrent requests (binary mode, S3 PUTs; inline splits the batch into this many requests).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Emulate an uplink of this many Mbit/s (the client paces request bodies).
    #[arg(long)]
    uplink_mbps: Option<f64>,
    /// Emulated round-trip time added per request, ms.
    #[arg(long)]
    rtt_ms: Option<f64>,
    /// With `--target split:URL`: earlier rows (local, and the remote's inline ones) the first
    /// request of each batch is planned from.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    auth: AuthArgs,
}

impl BenchArgs {
    /// The experiment these flags describe, and the CSV its rows go to.
    fn options(self) -> anyhow::Result<(BenchOptions, PathBuf)> {
        if self.repeat == 0 || self.sizes.is_empty() || self.sizes.contains(&0) {
            bail!("--repeat and every --sizes entry must be at least 1");
        }
        let profile = match &self.profile {
            Some(p) => read_results(std::slice::from_ref(p))?,
            None => Vec::new(),
        };
        let opts = BenchOptions {
            target: self.target,
            mode: self.mode,
            images: self.images,
            sizes: self.sizes,
            repeat: self.repeat,
            label: self.label,
            concurrency: self.concurrency.max(1),
            link: Link { uplink_mbps: self.uplink_mbps, rtt_ms: self.rtt_ms },
            progress: !self.quiet,
            auth: self.auth,
            profile,
        };
        Ok((opts, self.out))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (POST /api/detect, POST /api/uploads, GET /healthz).
    Serve {
        /// Address to bind (env HOST, default 127.0.0.1).
        #[arg(long)]
        host: Option<String>,
        /// Port to bind (env PORT, default 5000; 0 picks a free port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Bulk detection over an S3 prefix, on the stack's Step Functions state machine.
    Bulk {
        #[command(subcommand)]
        action: BulkAction,
    },
    /// Load ONNX Runtime and the model, detect the bundled photo, exit 0 (the image build's check).
    SelfTest,
    /// Exit 0 when the server on 127.0.0.1:$PORT answers /healthz (the container HEALTHCHECK).
    Health {
        /// Base URL (default http://127.0.0.1:$PORT).
        #[arg(long)]
        url: Option<String>,
    },
    /// Detect objects in image files and print the server's JSON — here, or offloaded.
    Detect {
        /// Image files (JPEG, PNG, WebP).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A remote objdet (base URL) to offload to.
        #[arg(long)]
        endpoint: Option<String>,
        /// never | always | auto | split (default: always with --endpoint, never without).
        #[arg(long, value_enum)]
        offload: Option<Offload>,
        /// Benchmark CSV the `auto` decision (or the `split` plan's first guess) is fitted from.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Location label of the remote rows in --profile (default: the one with most rows).
        #[arg(long)]
        profile_location: Option<String>,
        /// Pretty-print the JSON.
        #[arg(long)]
        pretty: bool,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// Measure a target like the original study: batches of 1..200 images, one CSV row per batch.
    Bench(BenchArgs),
    /// Draw execution time and average inference time vs number of images from results CSVs
    /// (objdet's, of any version, or the original study's seven-column table).
    Plot {
        /// Results CSVs, drawn together.
        #[arg(required = true)]
        csv: Vec<PathBuf>,
        /// Output .png or .svg.
        #[arg(long, default_value = "fig.png")]
        out: PathBuf,
    },
    /// Make a deterministic benchmark image set (crops, scales, flips, JPEG qualities).
    Dataset {
        /// Source photos.
        #[arg(long, default_value = "tests/fixtures/images")]
        from: PathBuf,
        /// Images to write.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Target average file size, MB (the original: 43.6 MB / 200).
        #[arg(long, default_value_t = 0.218)]
        avg_mb: f64,
        /// Phone-size photos instead: 12 MP (4032×3024) JPEGs of 2–5 MB (`phone-000.jpg`…).
        #[arg(long)]
        phone: bool,
    },
    /// Choose a Lambda memory size (power tuning): for each size the Lambda bootstrap runs under
    /// AWS's Lambda emulator in Linux cgroups with that size's CPU share, visible cores and memory
    /// limit (root, cgroup v1), or a deployed function is set to it (--function); a cold and
    /// `--warm` invocations of one batch each. Prints the table and the cheapest, fastest and
    /// balanced size; writes a CSV (and an SVG plot).
    Tune(TuneArgs),
    /// Accuracy through the serving path: a labelled set (an Ultralytics data.yaml, or a COCO
    /// annotations JSON with --images) detected as requests are, scored as pycocotools scores
    /// boxes (AP@[.50:.95], AP50, AP75, by area, AR, per class).
    Eval(EvalArgs),
    /// Calibration tensors for int8 quantization (`make quantize`): images of a labelled set
    /// decoded and preprocessed exactly as serving does, written as one NumPy .npy array.
    Calibration {
        /// An Ultralytics data YAML or a COCO annotations JSON (with --images).
        #[arg(long)]
        data: PathBuf,
        /// With a COCO JSON: its images' directory; with a data YAML: instead of `val`.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Images to take, spread over the set.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// The .npy file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fit the benchmark rows and say when offloading pays. Exit 0 with a verdict (a break-even,
    /// or none within the measured sizes), 2 when the data cannot decide, 1 on an error.
    Advise {
        /// Results CSV (objdet's, or the original study's table); repeat to read several.
        #[arg(long, required = true)]
        from: Vec<PathBuf>,
        /// Also decide for this payload, MB.
        #[arg(long)]
        payload_mb: Option<f64>,
        /// Re-estimate remote times at this uplink, Mbit/s.
        #[arg(long)]
        uplink_mbps: Option<f64>,
        /// Lambda memory for the cost estimate, MB.
        #[arg(long, default_value_t = 3538.0)]
        memory_mb: f64,
        /// The cost estimate at the balanced size an `objdet tune` CSV measured (instead of --memory-mb).
        #[arg(long)]
        tune: Option<PathBuf>,
    },
}

/// Errors are printed as a message with their causes and exit 1, whatever `RUST_BACKTRACE` says:
/// a verdict or a configuration mistake is not a crash (panics keep their backtraces).
fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("objdet: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("objdet: {e:#}");
            match e.downcast_ref::<Undecided>() {
                Some(_) => std::process::ExitCode::from(UNDECIDED),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// `objdet advise`'s exit code when the data cannot decide (fits too noisy, a side missing), as
/// opposed to 0 for a verdict — a break-even, or none within the measured sizes — and 1 for an error.
const UNDECIDED: u8 = 2;

/// The data cannot decide (see [`UNDECIDED`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Undecided(String);

async fn run() -> anyhow::Result<()> {
    let cli = parse_cli();
    let process = objdet::config::ProcessConfig::from_env();
    telemetry::init(process.log_json);
    let malloc_tuned = objdet::memory::tune_malloc(process.malloc_tuned_by_env);
    tracing::debug!(malloc_tuned, "malloc mmap threshold");
    let mut config = Config::from_env()?;
    match cli.command {
        Command::Serve { host, port } => {
            if let Some(h) = host {
                config.host = h;
            }
            if let Some(p) = port {
                config.port = p;
            }
            let loopback =
                config.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || config.host == "localhost";
            anyhow::ensure!(
                config.api_token.is_some() || loopback || config.allow_unauthenticated,
                "refusing to serve /api/* without a token on {}: set API_TOKEN (the clients send it as \
                 `Authorization: Bearer`), or ALLOW_UNAUTHENTICATED=true to serve it open",
                config.host
            );
            let config = Arc::new(config);
            // Before the model loads, so that its start is counted (`ColdStart`, `InitMs`).
            let metrics = match config.metrics.enabled {
                true => Some(objdet::telemetry::metrics::prometheus::install().context("cannot start the metrics")?),
                false => None,
            };
            let service = DetectService::from_config(config.clone()).await?.with_source(Source::Http);
            let detector = service.detector().clone();
            let mut router = server::app(service, server::RequestLimits::server(&config));
            if let Some(metrics) = metrics {
                router = server::with_metrics(router, metrics);
            }
            if let Some(token) = config.api_token.clone() {
                let open: &'static [&'static str] = if config.metrics.public { &[server::METRICS_PATH] } else { &[] };
                router = server::require_token_except(router, token, open);
            } else if !loopback {
                tracing::warn!(host = %config.host, "serving /api/* without authentication (ALLOW_UNAUTHENTICATED)");
            }
            let addr = format!("{}:{}", config.host, config.port);
            let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot bind {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(address = %local, "listening");
            // A machine-readable line for scripts that start the server on port 0.
            println!("listening on http://{local}");
            server::serve(listener, router, config.server).await?;
            // No thread of the detector may be inside ONNX Runtime when the process exits (its
            // static destructors run then): stop it, waiting for a session still being built.
            // The grace period is spent: the workers end after their current image; a pool
            // session still being built at idle priority may need longer (then: exit_now).
            if !detector.shutdown(std::time::Duration::from_millis(500)) {
                tracing::warn!(
                    "a model session was still being built after the shutdown grace period: ending the process without it"
                );
                server::exit_now(0);
            }
            tracing::info!("stopped");
        }
        Command::Bulk { action } => bulk(action).await?,
        Command::SelfTest => {
            let report =
                tokio::task::block_in_place(|| objdet::selftest::run(&config.detector, &process.selftest_expect))
                    .map_err(|e| anyhow::anyhow!("{}", objdet::error::chain(&e)))?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Health { url } => {
            let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{}", config.port));
            let res = reqwest::Client::new()
                .get(format!("{}/healthz", url.trim_end_matches('/')))
                .timeout(std::time::Duration::from_secs(3))
                .send()
                .await
                .context("health check request")?;
            anyhow::ensure!(res.status().is_success(), "health check answered {}", res.status());
        }
        Command::Detect { files, endpoint, offload, profile, profile_location, pretty, auth } => {
            let response = detect(Arc::new(config), files, endpoint, offload, profile, profile_location, auth).await?;
            let out = if pretty { serde_json::to_string_pretty(&response)? } else { serde_json::to_string(&response)? };
            println!("{out}");
        }
        Command::Bench(args) => {
            let (opts, out) = args.options()?;
            let rows = offload::run(&opts, Arc::new(config)).await?;
            if rows.is_empty() {
                bail!("no batch succeeded");
            }
            offload::csv::append(&out, &rows)?;
            println!("{}", offload::summary(&rows));
            println!("appended {} rows to {}", rows.len(), out.display());
        }
        Command::Plot { csv, out } => {
            let rows = read_results(&csv)?;
            let n = offload::plot::plot(&rows, &out)?;
            println!("wrote {} with {n} series", out.display());
        }
        Command::Dataset { from, count, out, avg_mb, phone } => {
            let s = if phone {
                offload::dataset::make_phone(&from, count, &out)?
            } else {
                offload::dataset::make(&from, count, &out, avg_mb)?
            };
            println!(
                "wrote {} images to {}: {:.1} MB, {:.3} MB per image",
                s.count,
                out.display(),
                s.total_bytes as f64 / 1e6,
                s.total_bytes as f64 / 1e6 / s.count.max(1) as f64
            );
        }
        Command::Tune(args) => tune(args, &config).await?,
        Command::Eval(args) => eval(args, config).await?,
        Command::Calibration { data, images, count, out } => {
            let data = objdet::eval::Dataset::read(&data, images.as_deref())?;
            let mut model = tokio::task::block_in_place(|| objdet::detector::Model::load(&config.detector))
                .map_err(|e| anyhow::anyhow!("{}", objdet::error::chain(&e)))?;
            let w = tokio::task::block_in_place(|| objdet::eval::calibration::write(&mut model, &data, count, &out))?;
            println!("wrote {} tensors of {:?} to {} ({} images skipped)", w.count, w.shape, out.display(), w.failed);
        }
        Command::Advise { from, payload_mb, uplink_mbps, mut memory_mb, tune } => {
            if let Some(tune) = tune {
                memory_mb = f64::from(measured_memory_size(&tune)?);
            }
            let rows = read_results(&from)?;
            let (text, ok) = advise::report(&rows, payload_mb, uplink_mbps, memory_mb);
            println!("{text}");
            if !ok {
                let names: Vec<String> = from.iter().map(|p| p.display().to_string()).collect();
                return Err(Undecided(format!(
                    "the data in {} can't support an answer (see above; exit code {UNDECIDED})",
                    names.join(", ")
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// The command line. `objdet detect --help` also says which model a local run would load (read
/// from the model file's interface, without ONNX Runtime), or why it cannot.
/// The balanced memory size of an `objdet tune` CSV.
fn measured_memory_size(path: &std::path::Path) -> anyhow::Result<u32> {
    use objdet::offload::tune;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (results, prices) = tune::read_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let rec = tune::recommend(&results, &prices, &tune::Accuracy::default())
        .with_context(|| format!("{}: no memory size ran", path.display()))?;
    eprintln!("Lambda cost at {} MB: the balanced size {} measured", rec.balanced.memory_mb, path.display());
    Ok(rec.balanced.memory_mb)
}

/// The arguments of `objdet eval`.
#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// An Ultralytics data YAML (its `val` images, YOLO labels) or a COCO annotations JSON.
    #[arg(long)]
    data: PathBuf,
    /// The images: with a COCO JSON, the directory its `file_name`s are relative to; with a data
    /// YAML, instead of its `val` entry.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every scored detection in COCO's results format here (for pycocotools).
    #[arg(long)]
    detections: Option<PathBuf>,
    /// Draw precision against recall at IoU 0.50, one line per class, to this SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Lowest score kept (the references evaluate at 0.001).
    #[arg(long, default_value_t = objdet::eval::EVAL_SCORE_THRESHOLD)]
    conf: f32,
    /// At most this many detections per image (COCO: 100).
    #[arg(long, default_value_t = objdet::eval::EVAL_MAX_DETECTIONS)]
    max_det: usize,
    /// NMS IoU (default: the model's, as serving uses it).
    #[arg(long)]
    iou: Option<f32>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

async fn eval(args: EvalArgs, mut config: Config) -> anyhow::Result<()> {
    use std::io::Write as _;
    anyhow::ensure!((0.0..=1.0).contains(&args.conf), "--conf must be between 0 and 1");
    anyhow::ensure!(args.max_det >= 1, "--max-det must be at least 1");
    anyhow::ensure!(args.iou.is_none_or(|v| (0.0..=1.0).contains(&v)), "--iou must be between 0 and 1");
    let data = objdet::eval::Dataset::read(&args.data, args.images.as_deref())?;
    // Every session built before the first image (ORT_WARMUP), so the timing is the pool's.
    config.detector.warmup = true;
    config.detector.model.score_threshold = Some(args.conf);
    config.detector.model.max_detections = Some(args.max_det);
    if let Some(iou) = args.iou {
        config.detector.model.nms_iou = Some(iou);
    }
    let opts = objdet::eval::Options { in_flight: None, jpeg_scaled_decode: config.detector.scaled_jpeg };
    let service = DetectService::from_config(Arc::new(config)).await?;
    let bar = (!args.quiet).then(|| {
        let b = indicatif::ProgressBar::new(data.samples.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} images {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut out = match &args.detections {
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("writing {}", p.display()))?;
            let mut w = std::io::BufWriter::new(f);
            w.write_all(b"[")?;
            Some((w, true, p))
        }
        None => None,
    };
    let mut write_error = None;
    let report = objdet::eval::run(
        service.detector().clone(),
        &data,
        &opts,
        |done, _| {
            if let Some(b) = &bar {
                b.set_position(done as u64);
            }
        },
        |results| {
            let Some((w, first, _)) = out.as_mut() else { return };
            for r in results {
                let sep: &[u8] = if std::mem::take(first) { b"\n" } else { b",\n" };
                let line = serde_json::to_vec(r).map_err(std::io::Error::from);
                if let Err(e) = line.and_then(|l| w.write_all(sep).and_then(|()| w.write_all(&l))) {
                    write_error.get_or_insert(e);
                }
            }
        },
    )
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some((mut w, _, p)) = out {
        if let Some(e) = write_error {
            return Err(anyhow::Error::new(e).context(format!("writing {}", p.display())));
        }
        w.write_all(b"\n]\n").and_then(|()| w.flush()).with_context(|| format!("writing {}", p.display()))?;
    }
    print!("{}", report.table());
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &args.plot {
        objdet::eval::plot::pr_svg(&report, p)?;
        println!("wrote {}", p.display());
    }
    anyhow::ensure!(report.evaluated > 0, "no image of {} could be evaluated", args.data.display());
    Ok(())
}

/// The arguments of `objdet tune`.
#[derive(clap::Args, Debug)]
struct TuneArgs {
    /// Memory sizes, MB, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = objdet::offload::tune::DEFAULT_MEMORY_SIZES_MB.to_vec())]
    memory: Vec<u32>,
    /// Directory of photos; an invocation sends the first `--batch` of them inline.
    #[arg(long)]
    images: PathBuf,
    /// Images per invocation.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Warm invocations per size.
    #[arg(long, default_value_t = 5)]
    warm: usize,
    /// Lambda prices: x86_64 or arm64 (documented us-east-1 prices).
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// Price per GB-second instead of the architecture's.
    #[arg(long)]
    price_gb_s: Option<f64>,
    /// Price per request instead of $0.0000002.
    #[arg(long)]
    price_request: Option<f64>,
    /// The CSV to write.
    #[arg(long, default_value = "tune.csv")]
    out: PathBuf,
    /// An SVG plot of cost per 1,000 images against time per image.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// AWS's Lambda Runtime Interface Emulator (make setup-test installs it).
    #[arg(long, default_value = ".cache/test/bin/aws-lambda-rie")]
    rie: PathBuf,
    /// The Lambda bootstrap (default: `bootstrap` beside this executable).
    #[arg(long)]
    bootstrap: Option<PathBuf>,
    /// Seconds a start or an invocation may take before its size is reported as hung.
    #[arg(long, default_value_t = 120.0)]
    timeout_secs: f64,
    /// Models to compare, each at every size, so that a model variant (e.g. fp32 and int8) and a
    /// memory size are chosen together (default: MODEL_PATH). With --function: S3 URIs (set as the
    /// function's MODEL_URI) or paths inside its image (set as MODEL_PATH); its environment is
    /// restored at the end.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// `objdet eval --json` reports of the models: only models within --map-tolerance of the best
    /// mAP50-95 are recommended.
    #[arg(long, value_delimiter = ',')]
    eval_json: Vec<PathBuf>,
    /// mAP50-95 a model may lose against the best evaluated one and still be recommended.
    #[arg(long, default_value_t = 0.01)]
    map_tolerance: f64,
    /// Measure a deployed function (name or ARN) instead: each size applied with
    /// UpdateFunctionConfiguration, invoked with LogType=Tail, the original size restored at
    /// the end, on an error and on Ctrl-C or SIGTERM. Uses the default AWS credentials and region.
    #[arg(long)]
    function: Option<String>,
}

async fn tune(args: TuneArgs, config: &Config) -> anyhow::Result<()> {
    use objdet::offload::tune::{self, Prices};
    let mut prices = match args.arch.as_str() {
        "x86_64" => Prices::X86_64,
        "arm64" => Prices::ARM64,
        other => bail!("--arch {} is not x86_64 or arm64", objdet::error::excerpt(other)),
    };
    prices.gb_second = args.price_gb_s.unwrap_or(prices.gb_second);
    prices.request = args.price_request.unwrap_or(prices.request);
    if args.memory.is_empty() || args.memory.iter().any(|&mb| !(128..=10_240).contains(&mb)) {
        bail!("--memory takes sizes from 128 to 10240 MB");
    }
    let images: Vec<(String, Vec<u8>)> = offload::load_images(&args.images)?
        .into_iter()
        .take(args.batch.max(1))
        .map(|i| (i.name, i.bytes.to_vec()))
        .collect();
    let accuracy = tune_accuracy(&args.eval_json, args.map_tolerance)?;
    let results = match &args.function {
        Some(function) => tune_deployed(function, &args, &images).await?,
        None => {
            let models: Vec<PathBuf> = match args.models.is_empty() {
                true => vec![config.detector.model_path.clone()],
                false => args.models.iter().map(PathBuf::from).collect(),
            };
            let mut all = Vec::new();
            for (i, model) in models.iter().enumerate() {
                all.extend(tune_emulated(&args, images.clone(), config, model, i).await?);
            }
            all
        }
    };
    println!("{}", tune::table(&results, &prices, &accuracy));
    std::fs::write(&args.out, tune::csv(&results, &prices))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    if let Some(plot) = &args.plot {
        std::fs::write(plot, tune::svg(&results, &prices)).with_context(|| format!("writing {}", plot.display()))?;
        println!("wrote {}", plot.display());
    }
    Ok(())
}

/// The models' accuracy from `objdet eval --json` reports, by model file name.
fn tune_accuracy(reports: &[PathBuf], tolerance: f64) -> anyhow::Result<objdet::offload::tune::Accuracy> {
    anyhow::ensure!((0.0..=1.0).contains(&tolerance), "--map-tolerance must be between 0 and 1");
    let mut map = std::collections::BTreeMap::new();
    for p in reports {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
        match (v["model_file"].as_str(), v["map50_95"].as_f64()) {
            (Some(model), Some(m)) => map.insert(model.to_string(), m),
            _ => bail!("{}: not an `objdet eval --json` report (no model_file and map50_95)", p.display()),
        };
    }
    Ok(objdet::offload::tune::Accuracy { map, tolerance })
}

async fn tune_deployed(
    function: &str,
    args: &TuneArgs,
    images: &[(String, Vec<u8>)],
) -> anyhow::Result<Vec<objdet::offload::tune::SizeResult>> {
    use objdet::offload::tune::{aws, emulated};
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_lambda::Client::new(&sdk);
    let opts = aws::Options {
        function: function.to_string(),
        sizes: args.memory.clone(),
        payload: emulated::http_event(images).to_string().into_bytes(),
        batch: images.len(),
        warm: args.warm,
        models: args.models.clone(),
        update_timeout: std::time::Duration::from_secs_f64(args.timeout_secs.max(1.0)),
        poll: std::time::Duration::from_secs(1),
    };
    Ok(aws::run(&client, &opts, objdet::server::shutdown_signal()).await?)
}

/// Every size emulated with `model` (the `index`-th of the run).
async fn tune_emulated(
    args: &TuneArgs,
    images: Vec<(String, Vec<u8>)>,
    config: &Config,
    model: &std::path::Path,
    index: usize,
) -> anyhow::Result<Vec<objdet::offload::tune::SizeResult>> {
    use objdet::offload::tune::emulated;
    let bootstrap = match args.bootstrap.clone() {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("bootstrap"),
    };
    for (what, path) in [("the Lambda emulator (--rie)", &args.rie), ("the bootstrap (--bootstrap)", &bootstrap)] {
        if !path.exists() {
            bail!("{what} {} does not exist", path.display());
        }
    }
    let log_dir =
        std::env::temp_dir().join(format!("objdet-tune-{}", std::process::id())).join(format!("model-{index}"));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let absolute = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    // The bootstrap gets this process's settings (model, overrides), not its Lambda or AWS ones,
    // and a graph cache written once before the sizes (as the image's build step does).
    let mut env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| !k.starts_with("AWS_") && !k.starts_with("_") && k != "PATH").collect();
    env.retain(|(k, _)| k != "MODEL_PATH");
    env.push(("MODEL_PATH".into(), absolute(model).display().to_string()));
    if let Some(ort) = &config.detector.ort_dylib_path {
        env.push(("ORT_DYLIB_PATH".into(), absolute(ort).display().to_string()));
    }
    env.push(("ORT_OPTIMIZED_MODEL_PATH".into(), log_dir.join("optimized.onnx").display().to_string()));
    env.push(("AWS_REGION".into(), "us-east-1".into()));
    env.push(("LOG_FORMAT".into(), "json".into()));
    env.push(("SELFTEST_EXPECT".into(), "none".into()));
    let primed = std::process::Command::new(&bootstrap)
        .arg("--self-test")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .with_context(|| format!("running {} --self-test", bootstrap.display()))?;
    if !primed.status.success() {
        bail!(
            "the bootstrap cannot run the model: {}",
            objdet::error::excerpt(String::from_utf8_lossy(&primed.stderr).trim())
        );
    }
    let opts = emulated::Options {
        sizes: args.memory.clone(),
        rie: args.rie.clone(),
        bootstrap,
        env,
        images,
        warm: args.warm,
        timeout: std::time::Duration::from_secs_f64(args.timeout_secs.max(1.0)),
        log_dir: log_dir.clone(),
    };
    let mut results = emulated::run(&opts, std::path::Path::new(emulated::CGROUP_ROOT)).await?;
    println!("emulator logs in {}", log_dir.display());
    let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for r in &mut results {
        r.model = name.clone();
    }
    Ok(results)
}

fn parse_cli() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let asks_detect_help =
        args.iter().any(|a| a == "detect") && args.iter().any(|a| a == "--help" || a == "-h" || a == "help");
    let mut command = Cli::command();
    if asks_detect_help {
        let model = match Config::from_env() {
            Ok(c) => match objdet::detector::describe(&c.detector) {
                Ok(spec) => format!("Model (MODEL_PATH): {}", spec.summary()),
                Err(e) => format!("Model (MODEL_PATH): {}", objdet::error::chain(&e)),
            },
            Err(e) => format!("Configuration: {e}"),
        };
        command = command.mut_subcommand("detect", |c| c.after_help(model));
    }
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The usable rows of results files; what could not be used is reported on stderr, by line.
fn read_results(paths: &[PathBuf]) -> anyhow::Result<Vec<offload::csv::Row>> {
    let mut rows = Vec::new();
    for path in paths {
        let table = offload::csv::read(path)?;
        for note in &table.notes {
            eprintln!("objdet: {}: {note}", path.display());
        }
        for s in &table.skipped {
            eprintln!("objdet: {} line {}: not used: {}", path.display(), s.line, s.reason);
        }
        if table.rows.is_empty() {
            bail!("{}: no usable rows", path.display());
        }
        rows.extend(table.rows);
    }
    Ok(rows)
}

/// `objdet detect --offload split`: part of the batch here, part on `endpoint`, planned from
/// `profile` when given (else probed).
async fn detect_split(
    config: Arc<Config>,
    images: &[Image],
    endpoint: &str,
    profile: Option<PathBuf>,
    profile_location: Option<String>,
    auth: AuthArgs,
) -> anyhow::Result<objdet::api::DetectResponse> {
    let prior = match &profile {
        Some(profile) => {
            let rows = read_results(std::slice::from_ref(profile))?;
            let payload: usize = images.iter().map(|i| i.bytes.len()).sum();
            let image_mb = payload as f64 / 1e6 / images.len() as f64;
            offload::split::Prior::from_rows(&rows, image_mb, None, profile_location.as_deref())
        }
        None => offload::split::Prior::default(),
    };
    let remote = Remote::new(endpoint, Link::default(), 1)?.with_auth(auth.resolve(endpoint).await?);
    let service = DetectService::from_config(config.clone()).await?;
    let run = offload::split::detect_split(&service, &remote, images, prior, config.lambda_max_body_bytes).await?;
    eprintln!("objdet: {}", run.summary(endpoint));
    Ok(run.response)
}

/// `objdet detect`: locally, or on `--endpoint` (inline under the Lambda limit, else via S3 uploads),
/// or chosen per batch from a benchmark profile. The JSON is the same either way.
async fn detect(
    config: Arc<Config>,
    files: Vec<PathBuf>,
    endpoint: Option<String>,
    offload: Option<Offload>,
    profile: Option<PathBuf>,
    profile_location: Option<String>,
    auth: AuthArgs,
) -> anyhow::Result<objdet::api::DetectResponse> {
    let start = std::time::Instant::now();
    let mut images = Vec::with_capacity(files.len());
    for f in &files {
        let data = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        images.push(Image { name: f.display().to_string(), bytes: data.into() });
    }
    let payload: usize = images.iter().map(|i| i.bytes.len()).sum();
    let inline_fits = client::inline_len(&images) <= config.lambda_max_body_bytes;
    let remote_mode = if inline_fits { Mode::Inline } else { Mode::S3 };
    let offload = offload.unwrap_or(if endpoint.is_some() { Offload::Always } else { Offload::Never });
    let go_remote = match offload {
        Offload::Split => {
            let endpoint = endpoint.as_deref().context("--offload split needs --endpoint URL")?;
            return detect_split(config, &images, endpoint, profile, profile_location, auth).await;
        }
        Offload::Never => false,
        Offload::Always => true,
        Offload::Auto => {
            let profile = profile.context("--offload auto needs --profile results.csv")?;
            let rows = read_results(std::slice::from_ref(&profile))?;
            let fits: Vec<advise::Fit> =
                advise::fit_all(&rows, None).into_iter().filter_map(|f| f.ok()).filter(|f| f.usable()).collect();
            let local = fits.iter().find(|f| f.mode == "local");
            let remote = fits
                .iter()
                .filter(|f| f.mode == remote_mode.as_str())
                .filter(|f| profile_location.as_ref().is_none_or(|l| &f.location == l))
                .max_by_key(|f| f.rows);
            match (local, remote) {
                (Some(l), Some(r)) => {
                    let d = advise::decide(l, r, payload as f64 / 1e6, images.len());
                    eprintln!("objdet: {}", d.reason);
                    d.offload
                }
                _ => {
                    eprintln!(
                        "objdet: {} has no usable local and {} fits: running locally",
                        profile.display(),
                        remote_mode.as_str()
                    );
                    false
                }
            }
        }
    };
    if go_remote {
        let endpoint = endpoint.context("offloading needs --endpoint URL")?;
        let remote = Remote::new(&endpoint, Link::default(), 4)?.with_auth(auth.resolve(&endpoint).await?);
        eprintln!("objdet: sending {} images to {endpoint} ({})", images.len(), remote_mode.as_str());
        Ok(remote.detect(&images, remote_mode).await?.response)
    } else {
        let service = DetectService::from_config(config).await?;
        let items = images.into_iter().map(|i| (i.name, Input::Image(i.bytes))).collect();
        let arrival = Arrival { start, receive_ms: objdet::telemetry::ms_since(start), payload_bytes: payload as u64 };
        Ok(service.detect_inputs(items, arrival).await?)
    }
}

/// `objdet bulk start|status`.
async fn bulk(action: BulkAction) -> anyhow::Result<()> {
    use objdet::bulk_run::{BulkRuns, Status};
    let client = objdet::config::BulkClientConfig::from_lookup(|k| std::env::var(k).ok())?;
    let runs = BulkRuns::from_env(&client).await?;
    let status = match action {
        BulkAction::Start { state_machine, bucket, prefix, wait, quiet } => {
            let execution = runs.start(&state_machine, &bucket, &prefix).await?;
            eprintln!("objdet: started {execution}");
            if !wait {
                println!("{}", serde_json::json!({ "execution": execution }));
                return Ok(());
            }
            let bar = (!quiet).then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} items {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            let every = client.poll;
            let status = runs
                .wait(&execution, every, |s: &Status| {
                    let n = |k: &str| s.items.get(k).copied().unwrap_or(0).max(0) as u64;
                    let line = format!(
                        "{}: {} of {} items done ({} failed, {} running, {} pending)",
                        s.status,
                        n("succeeded") + n("failed"),
                        n("total"),
                        n("failed"),
                        n("running"),
                        n("pending")
                    );
                    match &bar {
                        Some(b) => {
                            b.set_length(n("total"));
                            b.set_position(n("succeeded") + n("failed"));
                            b.set_message(format!("{} failed, {}", n("failed"), s.status));
                        }
                        None => eprintln!("objdet: {line}"),
                    }
                })
                .await?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            status
        }
        BulkAction::Status { execution } => runs.status(&execution).await?,
    };
    let n = |k: &str| status.items.get(k).copied().unwrap_or(0);
    eprintln!(
        "objdet: {} {}: {} items, {} succeeded, {} failed{}",
        status.execution,
        status.status,
        n("total"),
        n("succeeded"),
        n("failed"),
        status.manifest.as_ref().map(|m| format!("; manifest {m}")).unwrap_or_default()
    );
    if let Some(s) = &status.summary {
        let failed: usize = s.failed.values().sum();
        eprintln!(
            "objdet: {}: {} objects, {} detected, {} skipped (unchanged), {} failed {:?}, {} ignored; results in results/<key>.json{}",
            status.status,
            s.items,
            s.processed - failed,
            s.skipped,
            failed,
            s.failed,
            s.ignored,
            status.manifest.as_ref().map(|m| format!(", manifest {m}")).unwrap_or_default()
        );
    }
    println!("{}", serde_json::to_string_pretty(&status)?);
    if status.ended() && status.status != "SUCCEEDED" {
        anyhow::bail!("the run ended {}: {}", status.status, status.error.as_deref().unwrap_or("no error given"));
    }
    Ok(())
}
