//! The client side of offloading: sending a batch to a remote objdet (inline JSON, raw bodies, or
//! presigned S3 uploads + keys), with optional uplink emulation, and timing every phase.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use crate::api::{DetectResponse, ImageResult, Timing, UploadsResponse};
use anyhow::{Context as _, Result, anyhow, bail, ensure};

/// A named image to send.
#[derive(Debug, Clone)]
pub struct Image {
    /// Name sent with the image.
    pub name: String,
    /// Encoded bytes.
    pub bytes: Bytes,
}

/// How images travel to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The original JSON body of base64 images.
    Inline,
    /// One raw image body per request.
    Binary,
    /// Presigned PUTs to S3, then detection by key.
    S3,
}

impl Mode {
    /// The CSV name of the mode.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Inline => "inline",
            Mode::Binary => "binary",
            Mode::S3 => "s3",
        }
    }
}

/// An emulated link: the client paces request bodies and waits one RTT per request.
/// Nothing is done to the real network; rows record the emulated values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Link {
    /// Uplink rate in Mbit/s.
    pub uplink_mbps: Option<f64>,
    /// Added round-trip time per request, ms.
    pub rtt_ms: Option<f64>,
}

/// What one batch cost, seen from the client.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Results in batch order (names as sent).
    pub response: DetectResponse,
    /// Bytes put on the uplink.
    pub payload_bytes: u64,
    /// Wall time from the first byte prepared to the last response parsed.
    pub round_trip_s: f64,
    /// Time to hand the payload to the network (s3: presign + all PUTs).
    pub upload_s: f64,
}

/// A remote objdet at `base` (e.g. `http://127.0.0.1:5000` or an API Gateway URL).
#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    http: reqwest::Client,
    link: Link,
    uplink: Arc<Uplink>,
    concurrency: usize,
    auth: super::auth::Auth,
}

/// The content type of encoded image bytes (JPEG's when they are none of the formats).
pub fn content_type(bytes: &[u8]) -> &'static str {
    crate::detector::decode::Format::of_bytes(bytes).map_or("image/jpeg", |f| f.media_type)
}

/// Bytes one image adds to [`inline_body`]: its base64 string and its name (quoted, JSON-escaped),
/// each with the comma before it.
pub fn inline_bytes(img: &Image) -> usize {
    let name = serde_json::to_string(&img.name).map_or(0, |n| n.len());
    (img.bytes.len().div_ceil(3) * 4 + 2 + 1) + (name + 1)
}

/// The length of [`inline_body`] for `images`, without building it.
pub fn inline_len(images: &[Image]) -> usize {
    inline_len_of(images.len(), images.iter().map(inline_bytes).sum())
}

/// The length of an [`inline_body`] of `count` images whose [`inline_bytes`] add up to `bytes`:
/// `{"images":[],"names":[]}` around them, less the two commas no first element has.
pub fn inline_len_of(count: usize, bytes: usize) -> usize {
    r#"{"images":[],"names":[]}"#.len() + bytes - 2 * usize::from(count > 0)
}

/// The original service's JSON body for `images`.
pub fn inline_body(images: &[Image]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = json!({
        "images": images.iter().map(|i| b64.encode(&i.bytes)).collect::<Vec<_>>(),
        "names": images.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The emulated uplink, shared by every request of one [`Remote`]: concurrent bodies take turns
/// on it, so together they never go faster than the link (as on a real one).
#[derive(Debug)]
struct Uplink {
    /// Bytes per second; `None`: not emulated.
    rate: Option<f64>,
    /// When the link is free again.
    free_at: Mutex<Instant>,
}

impl Uplink {
    /// Waits until `len` more bytes have gone out at the link's rate after everything already queued.
    async fn send(&self, len: usize) {
        let Some(rate) = self.rate else { return };
        let done = {
            let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
            *free = (*free).max(Instant::now()) + Duration::from_secs_f64(len as f64 / rate);
            *free
        };
        tokio::time::sleep_until(done.into()).await;
    }
}

/// A request body that goes out at the emulated uplink rate, recording when its last byte left.
fn paced_body(body: Bytes, uplink: Arc<Uplink>, sent: Arc<Mutex<Option<Instant>>>) -> reqwest::Body {
    // About 10 ms of the link per write (at least 16 KiB): fine-grained enough to pace, few enough
    // wake-ups not to load the client's core at fast rates.
    let chunk = uplink.rate.map_or(256 * 1024, |r| ((r / 100.0) as usize).clamp(16 * 1024, 1024 * 1024));
    let stream = futures::stream::unfold(0usize, move |off| {
        let (body, sent, uplink) = (body.clone(), sent.clone(), uplink.clone());
        async move {
            if off >= body.len() {
                *sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                return None;
            }
            let end = (off + chunk).min(body.len());
            uplink.send(end - off).await;
            Some((Ok::<Bytes, std::io::Error>(body.slice(off..end)), end))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

impl Remote {
    /// A client for the service at `base`.
    pub fn new(base: &str, link: Link, concurrency: usize) -> Result<Self> {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(900)).build().context("building the HTTP client")?;
        let base = base.trim_end_matches('/').to_string();
        let uplink =
            Arc::new(Uplink { rate: link.uplink_mbps.map(|m| m * 1e6 / 8.0), free_at: Mutex::new(Instant::now()) });
        Ok(Self { base, http, link, uplink, concurrency: concurrency.max(1), auth: super::auth::Auth::None })
    }

    /// The same client, sending `auth` with every request to the service (never with the
    /// presigned S3 uploads, which carry their own signature).
    pub fn with_auth(mut self, auth: super::auth::Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sends `body` with the emulated link; returns (status, response bytes, seconds until the body was sent).
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(reqwest::StatusCode, Bytes, f64)> {
        if let Some(rtt) = self.link.rtt_ms {
            tokio::time::sleep(Duration::from_secs_f64(rtt / 1e3)).await;
        }
        let sent = Arc::new(Mutex::new(None));
        let len = body.len();
        let mut req = self.http.request(method.clone(), url);
        if url.starts_with(&format!("{}/", self.base)) {
            for (name, value) in self.auth.headers(method.as_str(), url, &[("content-type", content_type)], &body)? {
                req = req.header(name, value);
            }
        }
        let start = Instant::now();
        let res = req
            .header("content-type", content_type)
            .header("content-length", len)
            .body(paced_body(body, self.uplink.clone(), sent.clone()))
            .send()
            .await
            .with_context(|| format!("sending to {url}"))?;
        let upload = sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or_else(|| start.elapsed(), |t| t.duration_since(start))
            .as_secs_f64();
        let status = res.status();
        let bytes = res.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
        Ok((status, bytes, upload))
    }

    async fn detect_request(&self, content_type: &str, body: Bytes, query: &str) -> Result<(DetectResponse, f64)> {
        let url = format!("{}/api/detect{query}", self.base);
        let (status, bytes, upload) = self.send(reqwest::Method::POST, &url, content_type, body).await?;
        if !status.is_success() {
            return Err(remote_error(status, &bytes));
        }
        let response = serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer from {url}"))?;
        Ok((response, upload))
    }

    /// Sends the batch in `mode`.
    pub async fn detect(&self, images: &[Image], mode: Mode) -> Result<Measured> {
        match mode {
            Mode::Inline => self.detect_inline(images).await,
            Mode::Binary => self.detect_binary(images).await,
            Mode::S3 => self.detect_s3(images).await,
        }
    }

    /// The original JSON API; with concurrency > 1 the batch is split into that many requests sent at once.
    pub async fn detect_inline(&self, images: &[Image]) -> Result<Measured> {
        let start = Instant::now();
        let chunk = images.len().div_ceil(self.concurrency).max(1);
        let bodies: Vec<Bytes> = images.chunks(chunk).map(|c| Bytes::from(inline_body(c))).collect();
        let payload_bytes = bodies.iter().map(|b| b.len() as u64).sum();
        let parts =
            futures::future::try_join_all(bodies.into_iter().map(|b| self.detect_request("application/json", b, "")))
                .await?;
        let upload_s = parts.iter().map(|(_, u)| *u).fold(0.0, f64::max);
        let response = merge(parts.into_iter().map(|(r, _)| r).collect());
        Ok(Measured { response, payload_bytes, round_trip_s: start.elapsed().as_secs_f64(), upload_s })
    }

    /// One raw-body request per image, `concurrency` at a time.
    pub async fn detect_binary(&self, images: &[Image]) -> Result<Measured> {
        let start = Instant::now();
        let payload_bytes = images.iter().map(|i| i.bytes.len() as u64).sum();
        let parts: Vec<Result<(DetectResponse, f64)>> = futures::stream::iter(images.iter())
            .map(|img| async move {
                let query = format!("?name={}", percent_encoding::utf8_percent_encode(&img.name, QUERY));
                self.detect_request(content_type(&img.bytes), img.bytes.clone(), &query).await
            })
            .buffered(self.concurrency)
            .collect()
            .await;
        let parts: Vec<_> = parts.into_iter().collect::<Result<_>>()?;
        let upload_s = parts.iter().map(|(_, u)| *u).sum();
        let response = merge(parts.into_iter().map(|(r, _)| r).collect());
        Ok(Measured { response, payload_bytes, round_trip_s: start.elapsed().as_secs_f64(), upload_s })
    }

    /// Presigned uploads (`POST /api/uploads`, then PUTs), then detection by key. Upload time counts.
    pub async fn detect_s3(&self, images: &[Image]) -> Result<Measured> {
        let start = Instant::now();
        let url = format!("{}/api/uploads", self.base);
        let files: Vec<_> =
            images.iter().map(|i| json!({"size": i.bytes.len(), "content_type": content_type(&i.bytes)})).collect();
        let req = json!({ "files": files }).to_string();
        let (status, bytes, _) = self.send(reqwest::Method::POST, &url, "application/json", req.into()).await?;
        if !status.is_success() {
            return Err(remote_error(status, &bytes));
        }
        let slots: UploadsResponse =
            serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer from {url}"))?;
        ensure!(
            slots.uploads.len() == images.len(),
            "asked for {} upload URLs, got {}",
            images.len(),
            slots.uploads.len()
        );
        let puts: Vec<Result<()>> = futures::stream::iter(slots.uploads.iter().zip(images))
            .map(|(slot, img)| async move {
                let ct = slot.headers.get("content-type").map_or(content_type(&img.bytes), String::as_str);
                let (status, body, _) = self.send(reqwest::Method::PUT, &slot.url, ct, img.bytes.clone()).await?;
                if !status.is_success() {
                    bail!(
                        "PUT {}: {status} {}",
                        slot.key,
                        String::from_utf8_lossy(&body).chars().take(300).collect::<String>()
                    );
                }
                Ok(())
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        puts.into_iter().collect::<Result<Vec<()>>>()?;
        let upload_s = start.elapsed().as_secs_f64();
        let keys: Vec<&str> = slots.uploads.iter().map(|u| u.key.as_str()).collect();
        let body = json!({"s3": {"bucket": slots.bucket, "keys": keys}}).to_string();
        let (mut response, _) = self.detect_request("application/json", body.into(), "").await?;
        for (r, img) in response.results.iter_mut().zip(images) {
            r.name = img.name.clone();
        }
        let payload_bytes = images.iter().map(|i| i.bytes.len() as u64).sum();
        Ok(Measured { response, payload_bytes, round_trip_s: start.elapsed().as_secs_f64(), upload_s })
    }
}

/// Characters escaped in a `?name=` value.
const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Turns a non-2xx answer into an error that carries the service's code and message.
fn remote_error(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    let detail = serde_json::from_slice::<crate::error::ErrorResponse>(body)
        .map(|e| format!("{}: {}", e.error.code, e.error.message))
        .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(300).collect());
    anyhow!("the service answered {status}: {detail}")
}

/// Concatenates the results of several requests; their timing is that of all the results, with
/// the requests' payloads, receive, S3 and total times summed.
pub fn merge(parts: Vec<DetectResponse>) -> DetectResponse {
    let sum = |f: fn(&Timing) -> f64| parts.iter().map(|p| f(&p.timing)).sum::<f64>();
    let (receive_ms, total_ms) = (sum(|t| t.receive_ms), sum(|t| t.total_ms));
    let s3_fetch_ms = parts.iter().filter_map(|p| p.timing.s3_fetch_ms).reduce(|a, b| a + b);
    let payload_bytes = parts.iter().map(|p| p.timing.payload_bytes).sum();
    let results: Vec<ImageResult> = parts.into_iter().flat_map(|p| p.results).collect();
    let timing = Timing::of(&results, payload_bytes, receive_ms, s3_fetch_ms, total_ms);
    DetectResponse { results, timing }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_len_is_the_bodys_length() {
        let img = |name: &str, n: usize| Image { name: name.into(), bytes: vec![0xA5; n].into() };
        for images in [
            vec![],
            vec![img("a.jpg", 0)],
            vec![img("a.jpg", 1), img("b \"quoted\" \\ é\u{1}.png", 2), img("", 3), img("c", 1000)],
        ] {
            assert_eq!(inline_len(&images), inline_body(&images).len(), "{images:?}");
        }
    }
}
