//! The HTTP front door: one axum [`Router`] served by `objdet serve` (EC2/Docker/local) and by the
//! Lambda `bootstrap` through `lambda_http`. Handlers only translate HTTP ⇄ [`DetectService`].
//!
//! Every answer the Router gives is JSON, its own rejections included (a bad query string, a
//! stalled body, a request over its deadline, a panic). [`serve`] adds what only a socket needs:
//! a connection cap, header and body timeouts, and a shutdown deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::api::{DetectResponse, UploadsRequest};
use crate::config::{ApiToken, Config, ServerConfig};
use crate::error::{Coded, ErrorCode, ErrorResponse, excerpt};
use crate::service::error::RequestError;
use crate::service::{Arrival, DetectService};
use crate::telemetry::metrics::{self, Source};
use crate::telemetry::ms_since;

/// Largest body accepted by `POST /api/uploads` (it only carries a count and a content type).
const UPLOADS_BODY_LIMIT: usize = 64 * 1024;

/// What one front door allows a request: its body size and its time.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Request body limit (`MAX_BODY_BYTES` on a server, `LAMBDA_MAX_BODY_BYTES` behind API Gateway).
    pub max_body_bytes: usize,
    /// Deadline of a whole request, body included (`REQUEST_TIMEOUT_SECS`): past it the work is
    /// dropped (queued images included) and the client gets 408 `request_timeout`. Images not
    /// yet detected shortly before it ([`RequestLimits::image_deadline`]) are answered
    /// `deadline_exceeded` instead, so the rest of the batch is answered in time.
    pub timeout: Duration,
    /// Requests that carry work (`/api/detect`, `/api/uploads`) worked on at once
    /// (`MAX_CONCURRENT_REQUESTS`); the others wait, bodies unread, within their deadline.
    pub max_concurrent: usize,
}

impl RequestLimits {
    /// When a request stops waiting for its images: 10 % (at most 2 s) before [`Self::timeout`],
    /// which leaves the time to answer.
    pub fn image_deadline(&self) -> Duration {
        self.timeout.saturating_sub((self.timeout / 10).min(Duration::from_secs(2)))
    }

    /// The limits of `objdet serve`.
    pub fn server(config: &Config) -> Self {
        Self {
            max_body_bytes: config.max_body_bytes,
            timeout: config.server.request_timeout,
            max_concurrent: config.max_concurrent_requests,
        }
    }

    /// The limits behind API Gateway / Lambda.
    pub fn lambda(config: &Config) -> Self {
        Self {
            max_body_bytes: config.lambda_max_body_bytes.min(config.max_body_bytes),
            timeout: config.lambda_request_timeout,
            max_concurrent: config.max_concurrent_requests,
        }
    }
}

/// Shared state of the Router.
#[derive(Debug, Clone)]
pub struct AppState {
    service: DetectService,
    max_body_bytes: usize,
}

/// The Router: `POST /api/detect`, `POST /api/uploads`, `GET /healthz`, `GET /openapi.json`, JSON
/// errors elsewhere.
pub fn app(service: DetectService, limits: RequestLimits) -> Router {
    let admission = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1)));
    let source = service.source();
    let work = Router::new()
        .route("/api/detect", post(detect))
        .route("/api/uploads", post(uploads))
        .route_layer(axum::middleware::from_fn_with_state(admission, admit));
    Router::new()
        .merge(work)
        .route("/", get(page))
        .route("/ui.js", get(page_script))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState {
            service: service.with_image_deadline(limits.image_deadline()),
            max_body_bytes: limits.max_body_bytes,
        })
        .layer(axum::middleware::from_fn_with_state(limits.timeout, deadline))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(source, log_errors))
}

/// A request the HTTP front door answers with an error: the service refused it, or no route fits.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// This front door refused the request before the service saw it.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The service refused or failed the request (and counted it in its metrics).
    #[error(transparent)]
    Served(RequestError),
    /// No such route.
    #[error("no route for {method} {path}")]
    RouteNotFound {
        /// The request's method.
        method: String,
        /// The request's path (an excerpt).
        path: String,
    },
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No bearer token, or not the server's (`API_TOKEN`).
    #[error("send the API token as `Authorization: Bearer <token>`")]
    Unauthorized,
}

impl Coded for HttpError {
    fn code(&self) -> ErrorCode {
        match self {
            HttpError::Request(e) | HttpError::Served(e) => e.code(),
            HttpError::RouteNotFound { .. } => ErrorCode::RouteNotFound,
            HttpError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            HttpError::Unauthorized => ErrorCode::Unauthorized,
        }
    }
}

/// The HTTP status of an error code: the one place codes become statuses. Exhaustive: a new code
/// must be given its status here. (Per-image codes reach HTTP only inside a 200 response's
/// results; their statuses are what a request failing for that reason alone would get.)
pub fn status(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        InvalidJson | InvalidRequest | NoImages | NamesMismatch | InvalidBase64 | NotAnImage | TruncatedImage => {
            StatusCode::BAD_REQUEST
        }
        BucketNotAllowed | KeyNotAllowed | AccessDenied => StatusCode::FORBIDDEN,
        RequestTimeout | DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
        RouteNotFound | NotFound => StatusCode::NOT_FOUND,
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Unauthorized => StatusCode::UNAUTHORIZED,
        UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        PayloadTooLarge | TooManyImages | ImageTooLarge | PixelBudgetExceeded | ResponseTooLarge => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        S3NotConfigured => StatusCode::NOT_IMPLEMENTED,
        S3Error => StatusCode::BAD_GATEWAY,
        InferenceFailed | InternalError | InvalidConfig | StartupFailed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl HttpError {
    /// The HTTP status of the error ([`status`] of its code).
    pub fn status(&self) -> StatusCode {
        status(self.code())
    }
}

/// What an error response carries to [`log_errors`], the one layer that logs refused and failed
/// requests: building a response has no side effects.
#[derive(Debug, Clone)]
struct ErrorLog {
    code: ErrorCode,
    /// The message (4xx) or the whole cause chain (5xx; never sent to the client).
    detail: String,
    server_error: bool,
    /// Whether the service already counted it in the metrics.
    counted: bool,
}

/// A JSON error response, with what [`log_errors`] logs of it.
impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = if status.is_server_error() { crate::error::chain(&self) } else { self.message() };
        let counted = matches!(self, HttpError::Served(_));
        let log = ErrorLog { code: self.code(), detail, server_error: status.is_server_error(), counted };
        let mut res = (status, axum::Json(ErrorResponse { error: self.body() })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res.extensions_mut().insert(log);
        res
    }
}

/// Logs every error response once (it takes the [`ErrorLog`] out, so an outer copy of this layer
/// logs nothing again): server errors with their causes, refusals with their message. Counts
/// those the service did not see in the metrics (as requests through `source`).
async fn log_errors(State(source): State<Source>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if let Some(e) = res.extensions_mut().remove::<ErrorLog>() {
        if !e.counted {
            metrics::failed(source, e.code);
        }
        if e.server_error {
            tracing::error!(code = %e.code, error = %e.detail, "request failed");
        } else {
            tracing::info!(code = %e.code, error = %e.detail, "request rejected");
        }
    }
    res
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}

/// Paths anyone may read: they cost nothing and reveal no data (a load balancer's health check,
/// the API description).
const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/openapi.json", "/", "/ui.js"];

/// `router` with every path but [`PUBLIC_PATHS`] behind the bearer `token` (`objdet serve` with
/// `API_TOKEN`; behind API Gateway, IAM authorizes instead). Unknown paths are refused too, so
/// an unauthenticated client learns nothing of the routes.
pub fn require_token(router: Router, token: ApiToken) -> Router {
    require_token_except(router, token, &[])
}

/// [`require_token`], with `open` paths readable by anyone too (`/metrics` with `METRICS_PUBLIC`).
pub fn require_token_except(router: Router, token: ApiToken, open: &'static [&'static str]) -> Router {
    // Only `objdet serve` checks tokens, so its refusals are counted as `http` requests.
    router
        .layer(axum::middleware::from_fn_with_state((token, open), check_token))
        .layer(axum::middleware::from_fn_with_state(Source::Http, log_errors))
}

async fn check_token(
    State((token, open)): State<(ApiToken, &'static [&'static str])>,
    req: Request,
    next: Next,
) -> Response {
    if PUBLIC_PATHS.contains(&req.uri().path()) || open.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(|t| t.trim_ascii());
    match presented {
        Some(t) if token.matches(t) => next.run(req).await,
        _ => HttpError::Unauthorized.into_response(),
    }
}

/// Waits for one of `MAX_CONCURRENT_REQUESTS` places before the handler reads the body (the
/// deadline around it bounds the wait).
async fn admit(State(places): State<Arc<tokio::sync::Semaphore>>, req: Request, next: Next) -> Response {
    match places.acquire().await {
        Ok(_place) => next.run(req).await,
        Err(_) => RequestError::Internal("the admission queue was closed").into_response(),
    }
}

/// The request's deadline: dropping the handler's future cancels its queued images.
async fn deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => RequestError::TimedOut { secs: timeout.as_secs_f64() }.into_response(),
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    RequestError::Internal("the request handler panicked").into_response()
}

#[derive(Debug, Deserialize)]
struct DetectQuery {
    name: Option<String>,
}

/// The media type of the request, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

fn unsupported(media: String) -> RequestError {
    RequestError::UnsupportedMediaType(if media.is_empty() { "(none)".into() } else { excerpt(&media) })
}

/// The one place a request body is limited: refused from its declared `Content-Length` before any
/// of it is read, and cut off as soon as it passes `limit` bytes while it is read (see
/// [`body_error`]).
fn limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Body, RequestError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(RequestError::PayloadTooLarge { limit });
    }
    Ok(Body::new(http_body_util::Limited::new(body, limit)))
}

/// An error while reading a [`limited`] body: past the limit, stalled (the server's
/// `BODY_TIMEOUT_SECS`), or the connection broke.
fn body_error(limit: usize) -> impl Fn(axum::Error) -> RequestError {
    move |e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.is::<http_body_util::LengthLimitError>() {
                return RequestError::PayloadTooLarge { limit };
            }
            if c.is::<tower_http::timeout::TimeoutError>() {
                return RequestError::BodyStalled;
            }
            cause = c.source();
        }
        RequestError::BodyBroken(e.into())
    }
}

/// Reads a whole body of at most `limit` bytes.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, RequestError> {
    let collected = limited(headers, body, limit)?.collect().await.map_err(body_error(limit))?;
    Ok(collected.to_bytes())
}

async fn detect(
    State(state): State<AppState>,
    query: Result<Query<DetectQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let start = Instant::now();
    let Query(query) =
        query.map_err(|e| RequestError::Invalid(format!("invalid query string: {}", excerpt(&e.body_text()))))?;
    let media = media_type(&headers).unwrap_or_default();
    let is_json = media == "application/json" || media.ends_with("+json");
    let is_image = crate::detector::decode::Format::of_media_type(&media).is_some();
    if !is_json && !is_image {
        return Err(unsupported(media).into());
    }
    let limit = state.max_body_bytes;
    let response = if is_json {
        let stream =
            futures::TryStreamExt::map_err(limited(&headers, body, limit)?.into_data_stream(), body_error(limit));
        state.service.detect_json_stream(stream, start).await.map_err(HttpError::Served)?
    } else {
        let body = read_body(&headers, body, state.max_body_bytes).await?;
        let arrival = Arrival { start, receive_ms: ms_since(start), payload_bytes: body.len() as u64 };
        state.service.detect_raw(body, query.name, arrival).await.map_err(HttpError::Served)?
    };
    Ok(detect_response(response))
}

/// `200` with the JSON results and a `Server-Timing` header of the same stages.
fn detect_response(response: DetectResponse) -> Response {
    let timing = response.timing.server_timing_header();
    tracing::info!(
        images = response.results.len(),
        failed = response.results.iter().filter(|r| r.error.is_some()).count(),
        payload_bytes = response.timing.payload_bytes,
        total_ms = response.timing.total_ms,
        inference_ms = response.timing.inference_ms_total,
        "detect"
    );
    let mut res = axum::Json(response).into_response();
    if let Ok(v) = HeaderValue::from_str(&timing) {
        res.headers_mut().insert("server-timing", v);
    }
    res
}

async fn uploads(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, HttpError> {
    let media = media_type(&headers).unwrap_or_default();
    if media != "application/json" {
        return Err(unsupported(media).into());
    }
    let body = read_body(&headers, body, UPLOADS_BODY_LIMIT).await?;
    let req: UploadsRequest = serde_json::from_slice(&body).map_err(|e| RequestError::json_from("", e))?;
    let res = state.service.presign_uploads(req).await?;
    Ok(axum::Json(res).into_response())
}

async fn healthz(State(state): State<AppState>) -> Response {
    let d = state.service.detector();
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "sessions": d.sessions(),
        "classes": d.labels().len(),
        "model": model_json(d.spec()),
        "cpu": d.cpu(),
        "s3": state.service.s3().is_some(),
        "limits": {"max_body_bytes": state.max_body_bytes, "max_images": state.service.config().max_images},
    }))
    .into_response()
}

/// What `/healthz` says of the model: enough for a client (the page) to name it and its classes.
fn model_json(spec: &crate::detector::ModelSpec) -> serde_json::Value {
    serde_json::json!({
        "file": spec.file,
        "producer": spec.producer,
        "format": spec.head.format().as_str(),
        "input": {"width": spec.input.width, "height": spec.input.height, "dynamic": spec.input.dynamic},
        "classes": spec.head.classes().unwrap_or(spec.names.len()),
        "names": spec.names,
        "names_from": spec.names_source.as_str(),
        "score_threshold": spec.score_threshold,
        "nms": spec.nms.as_str(),
    })
}

/// The path `objdet serve` answers with its metrics in Prometheus text format.
pub const METRICS_PATH: &str = "/metrics";

/// `router` with `GET /metrics`: what `handle`'s recorder holds, in Prometheus text format
/// (`objdet serve`; on Lambda the metrics go out as EMF log lines instead).
pub fn with_metrics(router: Router, handle: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    let render = move || {
        let handle = handle.clone();
        async move {
            handle.run_upkeep();
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
        }
    };
    router.route(METRICS_PATH, get(render))
}

/// The browser page (`GET /`): drop photos, see the boxes and the timing. Embedded, no external
/// resource: the content security policy allows only this server.
const PAGE: &str = include_str!("ui/index.html");
const PAGE_SCRIPT: &str = include_str!("ui/ui.js");
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' blob: data:; \
                           connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, PAGE_POLICY)], PAGE)
        .into_response()
}

async fn page_script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], PAGE_SCRIPT).into_response()
}

/// The API's OpenAPI 3.0 description (written by hand, checked against the server by schemathesis).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(req: Request) -> HttpError {
    HttpError::RouteNotFound { method: excerpt(req.method().as_str()), path: excerpt(req.uri().path()) }
}

async fn method_not_allowed() -> HttpError {
    HttpError::MethodNotAllowed
}

/// Serves `router` on `listener` until Ctrl-C / SIGTERM, within the bounds of `limits`:
///
/// - at most `max_connections` connections at once; past that, new ones wait in the listen
///   backlog (nothing is read from them, so they cost no memory of ours);
/// - a client must send a request's headers within `header_timeout`, which also closes a
///   keep-alive connection idle for that long;
/// - a body that stalls for `body_timeout` gets 408 and its connection closed;
/// - on a signal the listener closes, idle connections close, and requests under way get up to
///   `shutdown_grace` to finish; then the rest is abandoned and this returns.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, limits: ServerConfig) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let max_connections = effective_connection_cap(limits.max_connections);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout));
    let full = Arc::new(AtomicBool::new(false));
    tracing::info!(
        max_connections,
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        body_timeout_s = limits.body_timeout.as_secs_f64(),
        "serving"
    );

    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
            () = &mut signal => break,
        };
        if slots.available_permits() == 0 && !full.swap(true, Ordering::Relaxed) {
            tracing::warn!(max_connections, "connection limit reached: new connections wait (MAX_CONNECTIONS)");
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, never spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            |req: Request<hyper::body::Incoming>| req.map(Body::new),
        ));
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let full = full.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log_connection_error(peer, &e);
            }
            drop(slot);
            full.store(false, Ordering::Relaxed);
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(open_connections = open, grace_s = limits.shutdown_grace.as_secs_f64(), "shutting down");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_s = limits.shutdown_grace.as_secs_f64(),
            "connections still open after the shutdown grace period (SHUTDOWN_GRACE_SECS): abandoning them"
        );
    }
    Ok(())
}

/// Ends the process right away: stdout and stderr flushed, then `_exit`, without running exit
/// handlers or static destructors. Only for when [`Detector::shutdown`](crate::detector::Detector::shutdown)
/// ran out of time.
///
/// The shutdown deadline must hold for the whole process, and one piece of work cannot be cut
/// short: a pool session being built in the background, at idle priority, is inside ONNX Runtime
/// until it is done — on a busy machine an idle-priority thread may not run for seconds
/// (docs/reliability.md, finding 6). A normal `exit` would run ONNX Runtime's static destructors
/// under it. Nothing of the server's needs tearing down then: connections are closed or abandoned,
/// and the kernel frees the rest.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process; it touches no memory of ours and cannot return.
    unsafe { libc::_exit(code) }
}

fn log_connection_error(peer: SocketAddr, e: &hyper::Error) {
    if e.is_timeout() {
        tracing::info!(%peer, "connection closed: the client sent no complete request headers in time");
    } else if e.is_incomplete_message() || e.is_canceled() {
        tracing::debug!(%peer, error = %e, "connection closed early");
    } else {
        tracing::info!(%peer, error = %e, "connection error");
    }
}

/// `MAX_CONNECTIONS`, lowered to leave 64 descriptors free under the process's open-file limit
/// (so a full house of connections cannot make `accept` or the model files fail).
fn effective_connection_cap(wanted: usize) -> usize {
    let limit = open_file_limit();
    let cap = match limit {
        Some(n) => wanted.min(n.saturating_sub(64).max(1)),
        None => wanted,
    };
    if cap < wanted {
        tracing::warn!(wanted, cap, open_file_limit = limit, "MAX_CONNECTIONS lowered to fit the open-file limit");
    }
    cap.max(1)
}

/// The soft limit on open files, from `/proc/self/limits` (Linux; `None` elsewhere or unlimited).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Resolves at Ctrl-C (SIGINT) or SIGTERM. A signal whose handler cannot be installed never
/// resolves (rather than at once, which would read as a request to stop).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
