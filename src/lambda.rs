//! The Lambda front door: S3 notifications go to the [`trigger`](crate::trigger); every other event
//! (API Gateway REST v1, HTTP API v2, function URL, ALB) is turned into an HTTP request for the same
//! [`Router`] `objdet serve` runs, by `lambda_http`.

use axum::Router;
use lambda_http::RequestExt as _;
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tower::Service as _;

use crate::error::{Error, Result};
use crate::service::DetectService;

/// Handles one invocation of the bootstrap.
#[derive(Clone)]
pub struct LambdaHandler {
    router: Router,
    service: DetectService,
}

/// What kind of event an invocation carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An S3 notification (`Records[].eventSource == "aws:s3"`).
    S3,
    /// Anything else: treated as an HTTP event.
    Http,
}

/// Looks at the event's shape: S3 notifications have `Records` whose `eventSource` is `aws:s3`.
pub fn event_kind(event: &Value) -> EventKind {
    let is_s3 = event
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(|r| r.get("eventSource"))
        .and_then(Value::as_str)
        == Some("aws:s3");
    if is_s3 { EventKind::S3 } else { EventKind::Http }
}

impl LambdaHandler {
    /// A handler serving `router` for HTTP events and `service` for S3 events.
    pub fn new(router: Router, service: DetectService) -> Self {
        Self { router, service }
    }

    /// Dispatches one event on its shape and returns the JSON Lambda sends back.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value> {
        let LambdaEvent { payload, context } = event;
        match event_kind(&payload) {
            EventKind::S3 => {
                let s3_event = serde_json::from_value(payload)
                    .map_err(|e| Error::InvalidJson(format!("malformed S3 event: {e}")))?;
                let summary = crate::trigger::handle(&self.service, s3_event).await?;
                serde_json::to_value(summary).map_err(|e| Error::Internal(e.to_string()))
            }
            EventKind::Http => {
                let request: LambdaRequest = serde_json::from_value(payload).map_err(|e| {
                    Error::InvalidRequest(format!("unsupported event: neither S3 nor an HTTP (API Gateway) event: {e}"))
                })?;
                let service = tower::ServiceExt::map_request(self.router.clone(), strip_stage);
                let mut adapter = lambda_http::Adapter::from(service);
                let response = adapter
                    .call(LambdaEvent::new(request, context))
                    .await
                    .map_err(|e: std::convert::Infallible| Error::Internal(e.to_string()))?;
                serde_json::to_value(response).map_err(|e| Error::Internal(e.to_string()))
            }
        }
    }

    /// Runs the Lambda runtime loop with this handler.
    pub async fn run(self) -> std::result::Result<(), lambda_runtime::Error> {
        lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<Value>| {
            let handler = self.clone();
            async move { handler.handle(event).await }
        }))
        .await
    }
}

/// Removes the API Gateway stage (`/prod/api/detect` → `/api/detect`) that `lambda_http` puts in front
/// of the path, so the same routes answer on any stage name, `$default` included.
pub fn strip_stage(mut req: lambda_http::Request) -> lambda_http::Request {
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else { return req };
    let prefix = format!("/{stage}");
    let Some(rest) = req.uri().path().strip_prefix(&prefix).filter(|r| r.is_empty() || r.starts_with('/')) else {
        return req;
    };
    let path = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}
