//! The worker pool behind [`Detector`]: which session runs which image.
//!
//! `Session::run` needs `&mut self`, so one session serialises every image. objdet runs N pool
//! workers instead (default: one per vCPU, one intra-op thread each), each owning a [`Model`] and
//! pulling images from one queue: image *i+1* is decoded and resized on one core while image *i*
//! is in ORT on another, and inference never runs on the async executor (callers await a oneshot
//! reply). Two single-threaded sessions process a batch 1.5× faster than one two-threaded session.
//!
//! One image alone is the opposite case: a single-threaded session leaves the other cores idle.
//! So with several single-threaded pool sessions the *lead* worker also owns a **solo session**
//! with one intra-op thread per vCPU. An image that arrives while nothing else is queued or running
//! runs there; images that queue up go to the pool. The two never run at the same time (their
//! threads would oversubscribe the cores), which lets the solo session share the lead's buffers
//! and ORT arena ([`runtime::Arena::Shared`]) with the lead's pool session: it costs no activation
//! memory of its own.
//!
//! Start-up builds the solo session only; the pool is built on idle-priority threads once the
//! first image is answered, as soon as images queue up, or after [`POOL_BUILD_IDLE`] without
//! requests, and each pool session joins the queue when built. Until then the solo session takes
//! every image. Measurements behind all this are in `docs/performance.md`.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::session::builder::PrepackedWeights;

use super::graph_cache::{self, GraphSource};
use super::{Input, Model, Outcome, PixelBudget, StageTimes, load_labels, runtime};
use crate::api::ms_since;
use crate::config::DetectorConfig;
use crate::error::{Error, Result};

/// With a solo session, the pool is built after the first answered image, as soon as images
/// queue up, or after this long without requests, whichever comes first.
pub const POOL_BUILD_IDLE: Duration = Duration::from_secs(1);

struct Job {
    input: Input,
    budget: Option<Arc<PixelBudget>>,
    reply: tokio::sync::oneshot::Sender<Outcome>,
    /// Queued while nothing was queued or running: a lone image, not part of a batch or of
    /// concurrent requests.
    arrived_idle: bool,
}

/// The kind of session an image ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// The solo session: all vCPUs on one image.
    Solo,
    /// A pool session: one image per core.
    Pool,
}

use SessionKind as Role;

/// What a worker is told to do next.
enum Next {
    Run(Job, Role),
    /// The lead worker's pool session is built: attach it.
    Attach(Session),
}

/// The queue shared by the workers, and what they are doing.
#[derive(Default)]
struct Dispatch {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    closed: bool,
    solo_ready: bool,
    solo_busy: bool,
    pool_ready: usize,
    pool_busy: usize,
    /// The pool should be built: an image was answered, or images queue up behind the solo session.
    pool_wanted: bool,
    /// The lead worker's pool session, built in the background, until the lead picks it up.
    handoff: Option<Session>,
}

impl State {
    /// The next job for a worker that can run the given sessions, if one may start now.
    fn take(&mut self, solo: bool, pool: bool) -> Option<(Job, Role)> {
        if self.jobs.is_empty() || self.solo_busy {
            return None;
        }
        // An image that waited behind another is concurrent traffic: the pool's, once it is built.
        let alone = self.jobs.len() == 1 && self.pool_busy == 0 && self.jobs.front().is_some_and(|j| j.arrived_idle);
        // With a solo session, a pool of fewer than two sessions is no faster than it.
        let pool_useful = self.pool_ready >= 2 || !self.solo_ready;
        let role = if solo && self.pool_busy == 0 && (alone || !pool_useful) {
            Role::Solo
        } else if pool && pool_useful && !(alone && self.solo_ready) {
            Role::Pool
        } else {
            return None;
        };
        let job = self.jobs.pop_front()?;
        match role {
            Role::Solo => self.solo_busy = true,
            Role::Pool => self.pool_busy += 1,
        }
        Some((job, role))
    }
}

impl Dispatch {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Blocks until the worker has something to do; `None` once the detector is dropped.
    /// `lead` is true for the worker that owns the solo session.
    fn next(&self, lead: bool, pool: bool) -> Option<Next> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if lead && let Some(session) = s.handoff.take() {
                s.pool_ready += 1;
                return Some(Next::Attach(session));
            }
            if let Some((job, role)) = s.take(lead, pool) {
                return Some(Next::Run(job, role));
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks until the pool is wanted or `idle` has passed; false once the detector is dropped.
    fn wait_for_pool_wanted(&self, idle: Duration) -> bool {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, idle, |s| !s.pool_wanted && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        !s.closed
    }

    fn done(&self, role: Role) {
        self.update(|s| {
            s.pool_wanted = true;
            match role {
                Role::Solo => s.solo_busy = false,
                Role::Pool => s.pool_busy -= 1,
            }
        });
    }

    fn push(&self, input: Input, budget: Option<Arc<PixelBudget>>, reply: tokio::sync::oneshot::Sender<Outcome>) {
        self.update(|s| {
            let arrived_idle = s.jobs.is_empty() && !s.solo_busy && s.pool_busy == 0;
            s.jobs.push_back(Job { input, budget, reply, arrived_idle });
            s.pool_wanted |= s.solo_busy;
        });
    }

    fn close(&self) {
        let jobs = {
            let mut s = self.lock();
            s.closed = true;
            std::mem::take(&mut s.jobs)
        };
        self.changed.notify_all();
        drop(jobs); // their callers see "the inference worker stopped"
    }
}

/// The worker pool: loads the sessions and runs images on them for async and blocking callers.
///
/// Cheap to share (`Arc<Detector>`); dropping the last handle stops the workers.
pub struct Detector {
    dispatch: Arc<Dispatch>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    labels: Arc<[String]>,
    sessions: usize,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("sessions", &self.sessions).finish_non_exhaustive()
    }
}

/// What one thread builds, and when.
struct Build {
    index: usize,
    kind: Kind,
    cfg: DetectorConfig,
    source: GraphSource,
    /// Built after start-up at idle priority, while the solo session serves.
    background: bool,
}

enum Kind {
    /// The lead worker, with the solo session.
    Lead,
    /// The lead's pool session, handed over to the lead when built.
    LeadPool,
    /// A pool worker.
    Pool,
}

impl Detector {
    /// Loads ONNX Runtime, the labels and the sessions (sharing packed weights) and starts the
    /// workers. Returns once the solo session, or without one every pool session, is ready.
    pub fn load(cfg: &DetectorConfig) -> Result<Self> {
        let labels = load_labels(&cfg.labels_path)?;
        let arena = match cfg.prefault_bytes() {
            0 => None,
            bytes => Some(super::arena::shared(bytes)?),
        };
        // The cached weights are read while the runtime library loads (or after it, if no thread
        // can be started); then the same spare core faults the lead's arena in while the solo
        // session is built.
        let reader = {
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name("objdet-cache".into())
                .spawn(move || {
                    let plan = graph_cache::plan(&cfg);
                    if let Some(arena) = arena {
                        let _ = std::thread::Builder::new().name("objdet-prefault".into()).spawn(|| arena.fault_in());
                    }
                    plan
                })
                .ok()
        };
        let t = Instant::now();
        let env = runtime::environment(cfg.ort_dylib_path.as_deref());
        tracing::debug!(ms = ms_since(t), "ONNX Runtime loaded");
        let plan = match reader {
            Some(reader) => reader.join().map_err(|_| Error::Internal("reading the graph cache panicked".into()))?,
            None => graph_cache::plan(cfg),
        };
        env?;
        let (first, others) = plan.sources();

        let solo = cfg.solo_threads > 1;
        // With ORT_WARMUP (provisioned concurrency) everything is built and warmed during start-up.
        let background = solo && !cfg.warmup;
        let mut builds = vec![];
        if solo {
            let solo_cfg = DetectorConfig { intra_threads: cfg.solo_threads, ..cfg.clone() };
            builds.push(Build { index: 0, kind: Kind::Lead, cfg: solo_cfg, source: first.clone(), background: false });
            if cfg.sessions > 1 {
                let source = others.clone();
                builds.push(Build { index: 0, kind: Kind::LeadPool, cfg: cfg.clone(), source, background });
            }
        }
        for i in usize::from(solo)..cfg.sessions {
            let source = if i == 0 { first.clone() } else { others.clone() };
            builds.push(Build { index: i, kind: Kind::Pool, cfg: cfg.clone(), source, background });
        }
        let (later, now): (Vec<_>, Vec<_>) = builds.into_iter().partition(|b| b.background);

        let detector = Detector {
            dispatch: Arc::new(Dispatch::default()),
            workers: Mutex::new(vec![]),
            labels,
            sessions: cfg.sessions,
        };
        let weights = PrepackedWeights::new();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let awaited = now.len();
        for build in now {
            detector.spawn(build, &weights, Some(ready_tx.clone()))?;
        }
        drop(ready_tx);
        for _ in 0..awaited {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::Startup("a worker exited while loading the model".into())),
            }
        }
        for build in later {
            detector.spawn(build, &weights, None)?;
        }
        Ok(detector)
    }

    fn spawn(&self, build: Build, weights: &PrepackedWeights, ready: Option<mpsc::Sender<Result<()>>>) -> Result<()> {
        let (labels, weights, dispatch) = (self.labels.clone(), weights.clone(), self.dispatch.clone());
        let name = match build.kind {
            Kind::LeadPool => format!("objdet-build-{}", build.index),
            _ => format!("objdet-infer-{}", build.index),
        };
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || run_thread(build, labels, &weights, &dispatch, ready))
            .map_err(|e| Error::Startup(format!("cannot start worker thread: {e}")))?;
        self.workers.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
        Ok(())
    }

    /// Number of pool sessions (images processed at once).
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// Pool sessions built so far (with a solo session they are built after start-up).
    pub fn pool_ready(&self) -> usize {
        self.dispatch.lock().pool_ready
    }

    /// The class names, index = class id.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    fn submit(&self, input: Input, budget: Option<Arc<PixelBudget>>) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.dispatch.push(input, budget, reply);
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

    fn outcome(r: std::result::Result<Outcome, tokio::sync::oneshot::error::RecvError>) -> Outcome {
        r.unwrap_or_else(|_| Outcome::failed(Error::Internal("the inference worker stopped".into())))
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        self.dispatch.close();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for h in workers {
            let _ = h.join();
        }
    }
}

/// One thread's life: build (in the background at idle priority, if so planned), report, serve.
fn run_thread(
    build: Build,
    labels: Arc<[String]>,
    weights: &PrepackedWeights,
    dispatch: &Dispatch,
    ready: Option<mpsc::Sender<Result<()>>>,
) {
    let background = build.background;
    if background && !dispatch.wait_for_pool_wanted(POOL_BUILD_IDLE) {
        return;
    }
    let Some(running) = begin_ort_work(true) else {
        if let Some(ready) = ready {
            let _ = ready.send(Err(Error::Startup("the process is exiting".into())));
        }
        return;
    };
    let t = Instant::now();
    // The lead's two sessions never run together: one arena for both (unless ORT_CPU_ARENA=false).
    let arena = match build.kind {
        Kind::Lead | Kind::LeadPool if build.cfg.cpu_arena => runtime::Arena::Shared,
        _ => runtime::Arena::Own,
    };
    let make = || -> Result<Built> {
        match build.kind {
            Kind::LeadPool => runtime::session_in(&build.cfg, weights, &build.source, arena).map(Built::Session),
            _ => {
                let mut model = Model::with_parts(&build.cfg, labels, weights, &build.source, arena)?;
                // The first run of a session allocates its buffers and is ~40 % slower; with
                // ORT_WARMUP it is paid during start-up (e.g. provisioned concurrency) instead.
                if build.cfg.warmup {
                    model.run_session()?;
                }
                Ok(Built::Model(Box::new(model)))
            }
        }
    };
    let built = if background { at_idle_priority(build.index, make) } else { make() };
    drop(running);
    tracing::debug!(worker = build.index, ms = ms_since(t), background, "session ready");
    // Each session is registered before start-up is told, so a caller never sees fewer than built.
    let report = |ready: Option<mpsc::Sender<Result<()>>>| {
        if let Some(ready) = ready {
            let _ = ready.send(Ok(()));
        }
    };
    match built {
        Ok(Built::Session(session)) => {
            dispatch.update(|s| s.handoff = Some(session));
            report(ready);
        }
        Ok(Built::Model(model)) => {
            let lead = matches!(build.kind, Kind::Lead);
            dispatch.update(|s| if lead { s.solo_ready = true } else { s.pool_ready += 1 });
            report(ready);
            serve(*model, lead, dispatch);
        }
        Err(e) => match ready {
            Some(ready) => {
                let _ = ready.send(Err(e));
            }
            None => {
                tracing::error!(worker = build.index, error = %e, "a pool session failed to build; serving without it")
            }
        },
    }
}

enum Built {
    Model(Box<Model>),
    Session(Session),
}

/// Threads inside ONNX Runtime (building a session or running one), and whether the process is
/// exiting.
static ORT_WORK: (Mutex<(usize, bool)>, Condvar) = (Mutex::new((0, false)), Condvar::new());

/// Marks ONNX Runtime work (a session build or run) as under way until dropped; `None` once the
/// process is exiting.
///
/// A process can exit while another thread is inside ONNX Runtime (a test binary whose shared
/// detector builds its pool in the background): ORT's static destructors would then run under it
/// and crash. `register` (each build, and each worker's first run) registers an `atexit` handler
/// that stops new work and waits up to 10 s for work under way. Handlers run in reverse order of
/// registration, and ORT registers the destructors of its lazily made statics when they are first
/// used (during a build or a first run), so registering again after those keeps the handler ahead
/// of them (registering once, at the first build, left 3 of 26 test-binary exits crashing).
fn begin_ort_work(register: bool) -> Option<OrtWork> {
    if register {
        // SAFETY: registers a plain `extern "C"` function with no captured state; it may run
        // several times (it is idempotent).
        if unsafe { libc::atexit(wait_for_ort_work) } != 0 {
            tracing::warn!("cannot register the exit handler for ONNX Runtime work");
        }
    }
    let mut state = ORT_WORK.0.lock().unwrap_or_else(|p| p.into_inner());
    if state.1 {
        return None;
    }
    state.0 += 1;
    Some(OrtWork)
}

struct OrtWork;

impl Drop for OrtWork {
    fn drop(&mut self) {
        ORT_WORK.0.lock().unwrap_or_else(|p| p.into_inner()).0 -= 1;
        ORT_WORK.1.notify_all();
    }
}

extern "C" fn wait_for_ort_work() {
    let mut state = ORT_WORK.0.lock().unwrap_or_else(|p| p.into_inner());
    state.1 = true;
    let _ = ORT_WORK.1.wait_timeout_while(state, Duration::from_secs(10), |s| s.0 > 0);
}

/// Runs `f` on a thread of its own in the idle scheduling class (it cannot be raised back).
fn at_idle_priority<T: Send>(index: usize, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(format!("objdet-build-{index}"))
            .spawn_scoped(s, || {
                crate::memory::lower_thread_priority();
                f()
            })
            .map_err(|e| Error::Startup(format!("cannot start a build thread: {e}")))?
            .join()
            .map_err(|_| Error::Internal("building a session panicked".into()))?
    })
}

/// A worker's loop. The lead starts on its solo session and attaches its pool session when built.
fn serve(mut model: Model, lead: bool, dispatch: &Dispatch) {
    let mut on = if lead { Role::Solo } else { Role::Pool };
    let mut has_pool = !lead;
    // Whether this worker's current sessions have run (see `begin_ort_work`).
    let mut ran = false;
    while let Some(next) = dispatch.next(lead, has_pool) {
        let (Job { input, budget, reply, .. }, role) = match next {
            Next::Attach(session) => {
                model.attach(session);
                has_pool = true;
                ran = false;
                continue;
            }
            Next::Run(job, role) => (job, role),
        };
        if role != on && model.swap_sessions() {
            on = role;
        }
        if reply.is_closed() {
            dispatch.done(role); // the client went away: skip the work
            continue;
        }
        let mut times = StageTimes::default();
        let result = match begin_ort_work(!ran) {
            // A panic inside a decoder must cost one image, not the worker.
            Some(_running) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                model.detect_within(&input, budget.as_deref(), &mut times)
            }))
            .unwrap_or_else(|_| Err(Error::Internal("the image decoder panicked".into()))),
            None => Err(Error::Internal("the process is exiting".into())),
        };
        ran = true;
        // Free before replying, so the caller's next image sees this session idle.
        dispatch.done(role);
        if lead {
            tracing::trace!(arena = ?super::arena::shared_stats(), ?role, "lead worker ran an image");
        }
        let _ = reply.send(Outcome { result, times, ran_on: Some(role) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `queued` images that arrived to an idle detector only if `idle`.
    fn state(queued: usize, solo_ready: bool, pool_ready: usize) -> State {
        let mut s = State { solo_ready, pool_ready, ..State::default() };
        for i in 0..queued {
            let (reply, _) = tokio::sync::oneshot::channel();
            s.jobs.push_back(Job {
                input: Input::Image(bytes::Bytes::new()),
                budget: None,
                reply,
                arrived_idle: i == 0,
            });
        }
        s
    }

    fn role(taken: Option<(Job, Role)>) -> Option<Role> {
        taken.map(|(_, role)| role)
    }

    #[test]
    fn a_lone_image_runs_on_the_solo_session() {
        let mut s = state(1, true, 2);
        assert_eq!(role(s.take(false, true)), None, "a pool worker leaves it to the lead");
        assert_eq!(role(s.take(true, true)), Some(Role::Solo));
        assert!(s.solo_busy);
    }

    #[test]
    fn queued_images_go_to_the_pool_never_beside_the_solo_session() {
        let mut s = state(3, true, 2);
        assert_eq!(role(s.take(true, true)), Some(Role::Pool));
        assert_eq!(role(s.take(false, true)), Some(Role::Pool));
        assert_eq!(s.pool_busy, 2);
        // One left while the pool runs: it stays in the pool, not on the solo session.
        assert_eq!(role(s.take(true, true)), Some(Role::Pool));

        let mut s = state(2, true, 2);
        s.solo_busy = true;
        assert_eq!(role(s.take(false, true)), None, "nothing starts beside the solo session");
    }

    #[test]
    fn an_image_that_waited_behind_the_solo_session_goes_to_the_pool() {
        let mut s = state(2, true, 2);
        assert_eq!(role(s.take(true, true)), Some(Role::Pool), "two queued: the pool's");
        s.pool_busy = 0;
        // The second one is alone now, but it arrived while the first was queued.
        assert_eq!(role(s.take(false, true)), Some(Role::Pool));

        let dispatch = Dispatch::default();
        dispatch.lock().solo_ready = true;
        dispatch.lock().pool_ready = 2;
        let (reply, _rx) = tokio::sync::oneshot::channel();
        dispatch.push(Input::Image(bytes::Bytes::new()), None, reply);
        assert_eq!(role(dispatch.lock().take(true, true)), Some(Role::Solo), "arrived idle");
        let (reply, _rx) = tokio::sync::oneshot::channel();
        dispatch.push(Input::Image(bytes::Bytes::new()), None, reply);
        assert!(dispatch.lock().pool_wanted, "queued behind the solo session: build the pool");
        dispatch.lock().solo_busy = false;
        assert_eq!(role(dispatch.lock().take(true, true)), Some(Role::Pool), "arrived while busy");
    }

    #[test]
    fn until_two_pool_sessions_are_ready_the_solo_session_takes_everything() {
        let mut s = state(3, true, 1);
        assert_eq!(role(s.take(false, true)), None);
        assert_eq!(role(s.take(true, true)), Some(Role::Solo));
        assert_eq!(role(s.take(true, true)), None, "one image at a time on the solo session");
        let mut s = state(3, true, 0);
        assert_eq!(role(s.take(true, false)), Some(Role::Solo));
    }

    #[test]
    fn without_a_solo_session_the_pool_takes_every_image() {
        let mut s = state(1, false, 2);
        assert_eq!(role(s.take(false, true)), Some(Role::Pool));
        let mut s = state(2, false, 1);
        assert_eq!(role(s.take(false, true)), Some(Role::Pool));
    }
}
