//! The worker pool behind [`Detector`]: threads that own ONNX Runtime sessions and run the images
//! the dispatch rule ([`super::dispatch`]) gives them.
//!
//! `Session::run` needs `&mut self`, so one session serialises every image. objdet runs N pool
//! workers instead (default: one per vCPU, one intra-op thread each), each owning a [`Model`] and
//! taking images from one queue: image *i+1* is decoded and resized on one core while image *i*
//! is in ORT on another, and inference never runs on the async executor (callers await a oneshot
//! reply). With several such workers the *lead* worker also has a solo session for images that
//! arrive alone; its two sessions never run together, so they share its buffers and one ORT arena
//! ([`runtime::Arena::Shared`]).
//!
//! Start-up builds the lead worker (its solo session) only. The rest of the pool is built by
//! builder threads at idle priority once the first image is answered, as soon as images queue up,
//! or after [`POOL_BUILD_IDLE`] without requests: each worker thread (normal priority) has its
//! session built on a short-lived thread in the idle scheduling class, then serves with it (the
//! lead's pool session is handed to the lead). The build needs a thread of its own because a
//! thread cannot leave `SCHED_IDLE` without privilege, and every thread it starts would inherit it:
//! a worker started from an idle thread ran its images at idle priority, 1.38× slower per image on
//! a busy machine (docs/performance.md). `ORT_WARMUP` builds everything during start-up.
//! Without a solo session, start-up builds every worker.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::session::builder::PrepackedWeights;

use super::dispatch::{Queue, SessionKind};
use super::error::{DetectError, LoadError};
use super::graph_cache::{self, GraphSource};
use super::{Input, Model, ModelSpec, Outcome, PixelBudget, StageTimes, describe, runtime};
use crate::config::DetectorConfig;
use crate::telemetry::ms_since;

type Result<T, E = LoadError> = std::result::Result<T, E>;

/// With a solo session, the pool is built after the first answered image, as soon as images
/// queue up, or after this long without requests, whichever comes first.
pub const POOL_BUILD_IDLE: Duration = Duration::from_secs(1);

/// One image to run, and where its outcome goes.
struct Job {
    input: Input,
    budget: Option<Arc<PixelBudget>>,
    reply: tokio::sync::oneshot::Sender<Outcome>,
}

/// The queue shared by the workers and the builders, under one lock.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    queue: Queue<Job>,
    closed: bool,
    /// Builder and worker threads not yet ended (see [`Detector::shutdown`]).
    live_threads: usize,
    /// The lead worker's pool session, built in the background, until the lead picks it up.
    lead_pool: Option<Session>,
}

/// What a worker does next.
enum Next {
    Run(Job, SessionKind),
    /// (The lead worker) its pool session is built: add it.
    AddPoolSession(Session),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Blocks until this worker has something to do; `None` once the detector is dropped.
    fn next(&self, lead: bool, has_pool: bool) -> Option<Next> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if lead && let Some(session) = s.lead_pool.take() {
                s.queue.pool_ready += 1;
                return Some(Next::AddPoolSession(session));
            }
            if let Some((job, kind)) = s.queue.take(lead, has_pool) {
                return Some(Next::Run(job, kind));
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks until the pool is wanted or `idle` has passed; false once the detector is dropped.
    fn wait_for_pool_wanted(&self, idle: Duration) -> bool {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, idle, |s| !s.queue.pool_wanted && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        !s.closed
    }

    fn close(&self) {
        let jobs = {
            let mut s = self.lock();
            s.closed = true;
            s.queue.drain()
        };
        self.changed.notify_all();
        drop(jobs); // their callers see "the inference worker stopped"
    }
}

/// What one builder thread makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// The lead worker: its solo session.
    Lead,
    /// The lead worker's pool session, handed to it when built.
    LeadPool,
    /// Pool worker `n`.
    Pool(usize),
}

/// The worker pool: loads the sessions and runs images on them for async and blocking callers.
///
/// Cheap to share (`Arc<Detector>`); dropping the last handle stops the workers (and waits for a
/// session still being built).
pub struct Detector {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    spec: Arc<ModelSpec>,
    sessions: usize,
    cpu: super::cpu::CpuInfo,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("sessions", &self.sessions).finish_non_exhaustive()
    }
}

/// What every builder thread shares.
#[derive(Clone)]
struct Builders {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    spec: Arc<ModelSpec>,
    weights: PrepackedWeights,
}

impl Detector {
    /// Loads ONNX Runtime, the labels and the sessions (sharing packed weights) and starts the
    /// workers. Returns once the solo session, or without one every pool session, is ready.
    pub fn load(cfg: &DetectorConfig) -> Result<Self> {
        // The model is described (and refused if it is not a detector) before anything is built
        // or written to the graph cache.
        let spec = Arc::new(describe(cfg)?);
        tracing::info!(model = %spec.summary(), "model");
        let cpu = super::cpu::CpuInfo::of_this_machine();
        tracing::info!(cpu = %cpu.model, features = ?cpu.features, int8 = cpu.int8, "cpu");
        // The cached weights are read on a spare core while the runtime library loads.
        let reader = {
            let cfg = cfg.clone();
            std::thread::Builder::new().name("objdet-cache".into()).spawn(move || graph_cache::plan(&cfg)).ok()
        };
        let t = Instant::now();
        let env = runtime::environment(cfg.ort_dylib_path.as_deref());
        tracing::debug!(ms = ms_since(t), "ONNX Runtime loaded");
        let plan = match reader {
            Some(reader) => reader.join().map_err(|_| LoadError::ThreadExited("graph-cache reader"))?,
            None => graph_cache::plan(cfg),
        };
        env?;
        let (first, others) = plan.sources();

        let solo = cfg.solo_threads > 1;
        let mut builds = vec![];
        if solo {
            builds.push(Build::Lead);
            if cfg.sessions > 1 {
                builds.push(Build::LeadPool);
            }
        }
        builds.extend((usize::from(solo)..cfg.sessions).map(Build::Pool));
        // With a solo session the pool comes later, unless ORT_WARMUP (provisioned concurrency).
        let (now, later): (Vec<Build>, Vec<Build>) =
            builds.into_iter().partition(|b| *b == Build::Lead || !solo || cfg.warmup);

        let detector = Detector {
            shared: Arc::new(Shared::default()),
            threads: Arc::new(Mutex::new(vec![])),
            spec,
            sessions: cfg.sessions,
            cpu,
        };
        let builders = Builders {
            shared: detector.shared.clone(),
            threads: detector.threads.clone(),
            spec: detector.spec.clone(),
            weights: PrepackedWeights::new(),
        };
        let source = |b: Build| if matches!(b, Build::Lead | Build::Pool(0)) { first.clone() } else { others.clone() };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let awaited = now.len();
        for build in now {
            builders.spawn(build, cfg, source(build), false, Some(ready_tx.clone()))?;
        }
        drop(ready_tx);
        for _ in 0..awaited {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(LoadError::ThreadExited("worker")),
            }
        }
        for build in later {
            builders.spawn(build, cfg, source(build), true, None)?;
        }
        Ok(detector)
    }

    /// Number of pool sessions (images processed at once).
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// The CPU's int8-relevant features (read at load).
    pub fn cpu(&self) -> &super::cpu::CpuInfo {
        &self.cpu
    }

    /// Pool sessions built so far (with a solo session they are built after start-up).
    pub fn pool_ready(&self) -> usize {
        self.shared.lock().queue.pool_ready
    }

    /// The class names, index = class id.
    pub fn labels(&self) -> &[String] {
        &self.spec.names
    }

    /// The model's description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn submit(&self, input: Input, budget: Option<Arc<PixelBudget>>) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.shared.update(|s| s.queue.push(Job { input, budget, reply }));
        rx
    }

    /// Queues one image now and returns a future of its outcome (lets a caller keep feeding the
    /// queue while earlier images are in ORT). Never blocks the async executor. Dropping the
    /// future before a worker takes the image cancels it.
    pub fn start(&self, input: Input) -> futures::future::BoxFuture<'static, Outcome> {
        self.start_within(input, None)
    }

    /// [`Detector::start`] for an image of a request whose images share `budget`.
    pub fn start_within(
        &self,
        input: Input,
        budget: Option<Arc<PixelBudget>>,
    ) -> futures::future::BoxFuture<'static, Outcome> {
        let rx = self.submit(input, budget);
        Box::pin(async move { Self::outcome(rx.await) })
    }

    /// Detects objects in one image without blocking the async executor.
    pub async fn detect(&self, input: Input) -> Outcome {
        self.start(input).await
    }

    /// Detects objects in one image, blocking the calling thread (CLI and benchmarks).
    pub fn detect_blocking(&self, input: Input) -> Outcome {
        Self::outcome(self.submit(input, None).blocking_recv())
    }

    /// Stops the detector: queued images are answered `WorkerStopped`, builders that have not
    /// started a session never do, and workers end after their current image. Waits up to
    /// `within` for every thread to end (a session being built is inside ONNX Runtime until it is
    /// done) and returns whether they all did. Once it returns true no thread of the detector is
    /// inside ONNX Runtime, so the process can exit normally (ORT's static destructors then run
    /// alone). Dropping the last handle does the same without a deadline.
    pub fn shutdown(&self, within: Duration) -> bool {
        self.stop(Some(within))
    }

    fn stop(&self, within: Option<Duration>) -> bool {
        self.shared.close();
        let s = self.shared.lock();
        let running = |s: &mut State| s.live_threads > 0;
        let all_ended = match within {
            Some(within) => {
                let (s, _) =
                    self.shared.changed.wait_timeout_while(s, within, running).unwrap_or_else(|p| p.into_inner());
                s.live_threads == 0
            }
            None => self.shared.changed.wait_while(s, running).unwrap_or_else(|p| p.into_inner()).live_threads == 0,
        };
        if all_ended {
            // Every thread has returned: joining takes no time.
            for t in std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner())) {
                let _ = t.join();
            }
        }
        all_ended
    }

    fn outcome(r: std::result::Result<Outcome, tokio::sync::oneshot::error::RecvError>) -> Outcome {
        r.unwrap_or_else(|_| Outcome::failed(DetectError::WorkerStopped))
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        self.stop(None);
    }
}

/// Counts a builder or worker thread as ended when it returns or unwinds.
struct LiveThread(Arc<Shared>);

impl Drop for LiveThread {
    fn drop(&mut self) {
        self.0.update(|s| s.live_threads -= 1);
    }
}

impl Builders {
    /// Starts a thread that makes `build` (a background build: at idle priority, on a thread of its
    /// own, so that it does not slow the requests being served) and then serves with it.
    fn spawn(
        &self,
        build: Build,
        cfg: &DetectorConfig,
        source: GraphSource,
        background: bool,
        ready: Option<mpsc::Sender<Result<()>>>,
    ) -> Result<()> {
        let (this, cfg) = (self.clone(), cfg.clone());
        let name = match build {
            Build::Lead => "objdet-infer-lead".to_string(),
            Build::LeadPool => "objdet-build-lead".to_string(),
            Build::Pool(n) => format!("objdet-infer-{n}"),
        };
        self.shared.update(|s| s.live_threads += 1);
        let live = LiveThread(self.shared.clone());
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _live = live;
                this.run(build, &cfg, &source, background, ready)
            })
            .map_err(LoadError::Thread)?;
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
        Ok(())
    }

    fn run(
        &self,
        build: Build,
        cfg: &DetectorConfig,
        source: &GraphSource,
        background: bool,
        ready: Option<mpsc::Sender<Result<()>>>,
    ) {
        if background && !self.shared.wait_for_pool_wanted(POOL_BUILD_IDLE) {
            return;
        }
        let t = Instant::now();
        let built =
            if background { at_idle_priority(|| self.make(build, cfg, source)) } else { self.make(build, cfg, source) };
        tracing::debug!(?build, ms = ms_since(t), background, "session ready");
        let report = |result: Result<()>| {
            if let Some(ready) = &ready {
                let _ = ready.send(result);
            }
        };
        // Each session is counted before start-up is told, so a caller never sees fewer than built.
        match built {
            Err(e) if ready.is_some() => report(Err(e)),
            Err(e) => tracing::error!(?build, error = %e, "a pool session failed to build; serving without it"),
            Ok(Made::Session(session)) => {
                self.shared.update(|s| s.lead_pool = Some(session));
                report(Ok(()));
            }
            Ok(Made::Model(model)) => {
                let lead = build == Build::Lead;
                self.shared.update(|s| if lead { s.queue.solo_ready = true } else { s.queue.pool_ready += 1 });
                report(Ok(()));
                serve(*model, lead, &self.shared);
            }
        }
    }

    fn make(&self, build: Build, cfg: &DetectorConfig, source: &GraphSource) -> Result<Made> {
        // The lead's two sessions never run together: one arena for both.
        let (cfg, arena) = match build {
            Build::Lead => (DetectorConfig { intra_threads: cfg.solo_threads, ..cfg.clone() }, runtime::Arena::Shared),
            Build::LeadPool => (cfg.clone(), runtime::Arena::Shared),
            Build::Pool(_) => (cfg.clone(), runtime::Arena::Own),
        };
        if build == Build::LeadPool {
            return runtime::session_in(&cfg, &self.spec, &self.weights, source, arena).map(Made::Session);
        }
        let mut model = Model::with_parts(&cfg, self.spec.clone(), &self.weights, source, arena)?;
        // The first run of a session allocates its buffers and is slower; with ORT_WARMUP
        // it is paid during start-up (e.g. provisioned concurrency) instead.
        if cfg.warmup {
            model.run_session().map_err(LoadError::Warmup)?;
        }
        Ok(Made::Model(Box::new(model)))
    }
}

/// Runs `f` on a thread of its own in the idle scheduling class, which it cannot leave.
fn at_idle_priority<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("objdet-build".into())
            .spawn_scoped(scope, || {
                crate::memory::lower_thread_priority();
                f()
            })
            .map_err(LoadError::Thread)?
            .join()
            .map_err(|_| LoadError::ThreadExited("background build"))?
    })
}

/// What a build made.
enum Made {
    Model(Box<Model>),
    Session(Session),
}

/// A worker's loop: the next image, on the session the dispatch rule chose. The lead starts with
/// its solo session and adds its pool session when that is built.
fn serve(mut model: Model, lead: bool, shared: &Shared) {
    let mut has_pool = !lead;
    while let Some(next) = shared.next(lead, has_pool) {
        let (job, kind) = match next {
            Next::AddPoolSession(session) => {
                model.add_lead_pool_session(session);
                has_pool = true;
                continue;
            }
            Next::Run(job, kind) => (job, kind),
        };
        if job.reply.is_closed() {
            shared.update(|s| s.queue.done(kind)); // the caller went away: skip the work
            continue;
        }
        let mut times = StageTimes::default();
        // A panic inside a decoder must cost one image, not the worker.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            model.detect_on(kind, &job.input, job.budget.as_deref(), &mut times)
        }))
        .unwrap_or_else(|_| Err(DetectError::DecoderPanicked));
        // Free before replying, so the caller's next image sees this session idle.
        shared.update(|s| s.queue.done(kind));
        let _ = job.reply.send(Outcome { result, times, ran_on: Some(kind) });
    }
}
