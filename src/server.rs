//! The HTTP front door: one axum [`Router`] served by `objdet serve` (EC2/Docker/local) and by the
//! Lambda `bootstrap` through `lambda_http`. Handlers only translate HTTP ⇄ [`DetectService`].

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::api::{DetectResponse, UploadsRequest, ms_since};
use crate::error::{Error, ErrorResponse};
use crate::service::{Arrival, DetectService};

/// Largest body accepted by `POST /api/uploads` (it only carries a count and a content type).
const UPLOADS_BODY_LIMIT: usize = 64 * 1024;

/// Shared state of the Router.
#[derive(Debug, Clone)]
pub struct AppState {
    service: DetectService,
    max_body_bytes: usize,
}

/// The Router: `POST /api/detect`, `POST /api/uploads`, `GET /healthz`, JSON errors elsewhere.
///
/// `max_body_bytes` is the request body limit of this front door (`MAX_BODY_BYTES` on a server,
/// `LAMBDA_MAX_BODY_BYTES` behind API Gateway).
pub fn app(service: DetectService, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/detect", post(detect))
        .route("/api/uploads", post(uploads))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState { service, max_body_bytes })
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::info!(code = self.code(), error = %self, "request rejected");
        }
        (status, axum::Json(ErrorResponse { error: self.body() })).into_response()
    }
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

/// Refuses a body whose declared `Content-Length` is over `limit` before reading any of it.
fn check_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), Error> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }
    Ok(())
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Error> {
    check_declared_length(headers, limit)?;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(Error::PayloadTooLarge { limit })
        }
        Err(e) => Err(Error::InvalidRequest(format!("could not read the request body: {e}"))),
    }
}

async fn detect(
    State(state): State<AppState>,
    Query(query): Query<DetectQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let start = Instant::now();
    let media = media_type(&headers).unwrap_or_default();
    let is_json = media == "application/json" || media.ends_with("+json");
    let is_image = matches!(media.as_str(), "image/jpeg" | "image/jpg" | "image/png" | "image/webp");
    if !is_json && !is_image {
        return Err(Error::UnsupportedMediaType(if media.is_empty() { "(none)".into() } else { media }));
    }
    let response = if is_json {
        check_declared_length(&headers, state.max_body_bytes)?;
        state.service.detect_json_stream(body.into_data_stream(), state.max_body_bytes, start).await?
    } else {
        let body = read_body(&headers, body, state.max_body_bytes).await?;
        let arrival = Arrival { start, receive_ms: ms_since(start), payload_bytes: body.len() as u64 };
        state.service.detect_raw(body, query.name, arrival).await?
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

async fn uploads(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, Error> {
    let media = media_type(&headers).unwrap_or_default();
    if media != "application/json" {
        return Err(Error::UnsupportedMediaType(if media.is_empty() { "(none)".into() } else { media }));
    }
    let body = read_body(&headers, body, UPLOADS_BODY_LIMIT).await?;
    let req: UploadsRequest = serde_json::from_slice(&body).map_err(|e| Error::InvalidJson(e.to_string()))?;
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
        "s3": state.service.s3().is_some(),
    }))
    .into_response()
}

async fn not_found(req: Request) -> Error {
    Error::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// Serves the Router on `listener` until Ctrl-C / SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
