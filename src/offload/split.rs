//! Split offloading: one batch detected here and on a remote objdet at the same time.
//!
//! The images wait in one queue. The local side takes them one at a time from the front (as
//! many in flight as it has sessions); the remote side takes chunks from the back, each chunk
//! sized by [`remote_chunk`] from the current estimates of both sides' time per image, so the two
//! are predicted to finish together. Estimates start from the benchmark fits (or a one-image
//! probe when there are none) and are replaced by what each side has measured so far, so every
//! new chunk is re-planned; a side that runs ahead simply takes more, which is work stealing at
//! the granularity of one request. A remote failure hands its images back to the local side.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::advise;
use super::client::{Image, Remote};
use super::csv::Row;
use crate::api::{DetectResponse, ImageResult, Timing};
use crate::detector::Input;
use crate::service::{Arrival, DetectService};
use anyhow::{Context as _, Result};

/// What is known before the batch starts, s per image (throughput, each side alone).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prior {
    /// Local time per image (e.g. the `local` fit's per-image cost).
    pub local_s_per_image: Option<f64>,
    /// Remote time per image, the link included.
    pub remote_s_per_image: Option<f64>,
    /// Fixed cost of one remote request (e.g. the link's round trip), s.
    pub remote_request_s: f64,
}

impl Prior {
    /// The plan's first guess from benchmark rows: the `local` fit, and the `inline` fit of the
    /// rows measured at `uplink_mbps` (the emulated uplink; `None`: the real link), of `location`
    /// when given (else the location with most rows), each as seconds per image of `image_mb`.
    /// Sides without a usable fit stay unknown (the first request then probes).
    pub fn from_rows(rows: &[Row], image_mb: f64, uplink_mbps: Option<f64>, location: Option<&str>) -> Prior {
        let same_link = |r: &&Row| match (r.uplink_mbps, uplink_mbps) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            (None, None) => true,
            _ => false,
        };
        let per_image = |f: advise::Fit| f.usable().then(|| f.time_for(image_mb, 1.0) - f.fixed_s).filter(|t| *t > 0.0);
        let local: Vec<&Row> = rows.iter().filter(|r| r.mode == "local").collect();
        let remote: Vec<&Row> = rows
            .iter()
            .filter(|r| r.mode == "inline")
            .filter(same_link)
            .filter(|r| location.is_none_or(|l| r.location == l))
            .collect();
        let mut locations: Vec<&str> = remote.iter().map(|r| r.location.as_str()).collect();
        locations.sort_unstable();
        let busiest = locations.chunk_by(|a, b| a == b).max_by_key(|g| g.len()).and_then(|g| g.first().copied());
        let remote: Vec<&Row> = remote.into_iter().filter(|r| Some(r.location.as_str()) == busiest).collect();
        Prior {
            local_s_per_image: advise::fit(&local, |r| r.round_trip_s).ok().and_then(per_image),
            remote_s_per_image: advise::fit(&remote, |r| r.round_trip_s).ok().and_then(per_image),
            remote_request_s: 0.0,
        }
    }
}

/// How a split batch went.
#[derive(Debug, Clone)]
pub struct SplitRun {
    /// Results in the order of the input images, as a local run gives them.
    pub response: DetectResponse,
    /// Images detected here.
    pub local_images: usize,
    /// Images detected remotely.
    pub remote_images: usize,
    /// Remote requests sent (successful or not).
    pub remote_requests: usize,
    /// Bytes put on the uplink.
    pub remote_payload_bytes: u64,
    /// Time spent sending request bodies, s (summed over requests).
    pub upload_s: f64,
    /// Wall time of the whole batch, s.
    pub makespan_s: f64,
    /// When the local side finished its last image, s from the start.
    pub local_finish_s: f64,
    /// When the last remote answer came, s from the start.
    pub remote_finish_s: f64,
    /// A remote failure that sent its images back here, if any.
    pub remote_error: Option<String>,
}

/// How many of the `queued` images the remote side should take now.
///
/// `local_backlog` images are in flight locally; `local` and `remote` are the seconds per image of
/// each side (`None`: not known yet) and `request_s` the remote side's fixed cost per request. With
/// both rates known, the chunk is the share that makes both sides finish together (taking half or
/// three quarters of it and re-planning the rest was slower: README, "Split offloading"), and at
/// least one image whenever the remote side would finish that image before the local side could
/// finish everything left. With a rate unknown, one image probes the remote side (never the
/// only image).
pub fn remote_chunk(
    queued: usize,
    local_backlog: usize,
    local: Option<f64>,
    remote: Option<f64>,
    request_s: f64,
) -> usize {
    if queued == 0 {
        return 0;
    }
    let (Some(a_l), Some(a_r)) = (local, remote) else {
        return usize::from(queued + local_backlog >= 2);
    };
    let local_finish = (local_backlog + queued) as f64 * a_l;
    if request_s + a_r >= local_finish {
        return 0;
    }
    let share = (local_finish - request_s) / (a_l + a_r);
    (share.round() as usize).clamp(1, queued)
}

/// The inline JSON size of one image: base64 plus its name and separators.
fn wire_bytes(img: &Image) -> usize {
    img.bytes.len().div_ceil(3) * 4 + img.name.len() + 8
}

struct State {
    queue: VecDeque<usize>,
    results: Vec<Option<ImageResult>>,
    local_started: Instant,
    local_done: usize,
    local_in_flight: usize,
    local_busy_s: f64,
    local_finish_s: f64,
    remote_finish_s: f64,
    remote_done: usize,
    /// Time the remote side had a request out.
    remote_busy_s: f64,
    /// Images in the request out (0: none).
    remote_in_flight: usize,
    local_error: Option<crate::error::RequestError>,
}

impl State {
    fn local_rate(&self, prior: Option<f64>) -> Option<f64> {
        if self.local_done > 0 { Some(self.local_busy_s / self.local_done as f64) } else { prior }
    }

    fn remote_rate(&self, prior: Option<f64>) -> Option<f64> {
        if self.remote_done > 0 { Some(self.remote_busy_s / self.remote_done as f64) } else { prior }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Detects `images` split between `local` and `remote` (inline JSON, each request at most
/// `max_body_bytes`); the response is in input order, shaped like a local run's.
pub async fn detect_split(
    local: &DetectService,
    remote: &Remote,
    images: &[Image],
    prior: Prior,
    max_body_bytes: usize,
) -> Result<SplitRun> {
    let start = Instant::now();
    let state = Mutex::new(State {
        queue: (0..images.len()).collect(),
        results: vec![None; images.len()],
        local_started: start,
        local_done: 0,
        local_in_flight: 0,
        local_busy_s: 0.0,
        local_finish_s: 0.0,
        remote_finish_s: 0.0,
        remote_done: 0,
        remote_busy_s: 0.0,
        remote_in_flight: 0,
        local_error: None,
    });
    let sessions = local.config().detector.sessions.max(1);
    // Local workers: one image each, until nothing is queued and nothing can come back.
    let worker = || async {
        loop {
            let next = {
                let mut s = lock(&state);
                match s.queue.pop_front() {
                    Some(i) => {
                        if s.local_in_flight == 0 && s.local_done == 0 {
                            s.local_started = Instant::now();
                        }
                        s.local_in_flight += 1;
                        Some(i)
                    }
                    None if s.remote_in_flight > 0 => None,
                    None => return,
                }
            };
            let Some(i) = next else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            };
            let img = &images[i];
            let item = vec![(img.name.clone(), Input::Image(img.bytes.clone()))];
            let outcome = local.detect_inputs(item, Arrival::now(img.bytes.len())).await;
            let mut s = lock(&state);
            match outcome {
                Ok(mut r) => s.results[i] = r.results.pop(),
                Err(e) => {
                    // A request-level failure here (the service shutting down, ...) ends the batch.
                    s.local_error.get_or_insert(e);
                    s.queue.clear();
                }
            }
            s.local_in_flight -= 1;
            s.local_done += 1;
            s.local_busy_s = s.local_started.elapsed().as_secs_f64();
            s.local_finish_s = start.elapsed().as_secs_f64();
        }
    };
    let mut remote_requests = 0;
    let mut remote_payload_bytes = 0u64;
    let mut upload_s = 0.0;
    let mut remote_error = None;
    let remote_side = async {
        loop {
            let chunk: Vec<usize> = {
                let mut s = lock(&state);
                if s.queue.is_empty() {
                    return;
                }
                let a_r = s.remote_rate(prior.remote_s_per_image);
                let a_l = s.local_rate(prior.local_s_per_image);
                // A request costs one image more than its share of the throughput: its first image
                // must arrive before the server starts, its last be detected after the upload
                // ends; the smaller of the two rates bounds that.
                let fill = a_l.zip(a_r).map_or(0.0, |(l, r)| l.min(r));
                let c = remote_chunk(s.queue.len(), s.local_in_flight, a_l, a_r, prior.remote_request_s + fill);
                // From the back, as many as fit in one request body.
                let mut taken = Vec::new();
                let mut bytes = 64;
                while taken.len() < c {
                    let Some(&i) = s.queue.back() else { break };
                    let w = wire_bytes(&images[i]);
                    if bytes + w > max_body_bytes {
                        break;
                    }
                    bytes += w;
                    taken.push(i);
                    s.queue.pop_back();
                }
                taken.reverse();
                s.remote_in_flight = taken.len();
                taken
            };
            if chunk.is_empty() {
                // Not worth a request now: look again when the local side has moved on.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let batch: Vec<Image> = chunk.iter().map(|&i| images[i].clone()).collect();
            let sent = Instant::now();
            remote_requests += 1;
            let outcome = remote.detect_inline(&batch).await;
            let mut s = lock(&state);
            s.remote_in_flight = 0;
            match outcome {
                Ok(m) if m.response.results.len() == chunk.len() => {
                    remote_payload_bytes += m.payload_bytes;
                    upload_s += m.upload_s;
                    for (&i, r) in chunk.iter().zip(m.response.results) {
                        s.results[i] = Some(r);
                    }
                    s.remote_done += chunk.len();
                    s.remote_busy_s += sent.elapsed().as_secs_f64();
                    s.remote_finish_s = start.elapsed().as_secs_f64();
                }
                other => {
                    let why = match other {
                        Ok(m) => format!("{} results for {} images", m.response.results.len(), chunk.len()),
                        Err(e) => format!("{e:#}"),
                    };
                    tracing::warn!(error = %why, images = chunk.len(), "remote side failed; detecting its images here");
                    for &i in chunk.iter().rev() {
                        s.queue.push_front(i);
                    }
                    remote_error = Some(why);
                    return;
                }
            }
        }
    };
    let locals = join_all((0..sessions).map(|_| worker()));
    futures::join!(locals, remote_side);
    let makespan_s = start.elapsed().as_secs_f64();
    let s = state.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = s.local_error {
        return Err(anyhow::Error::new(e).context("detecting the local share"));
    }
    let results: Vec<ImageResult> = s
        .results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("image {i} got no result")))
        .collect::<Result<_>>()?;
    let payload: u64 = images.iter().map(|i| i.bytes.len() as u64).sum();
    let timing = Timing::of(&results, payload, 0.0, None, makespan_s * 1e3);
    Ok(SplitRun {
        response: DetectResponse { results, timing },
        local_images: s.local_done,
        remote_images: s.remote_done,
        remote_requests,
        remote_payload_bytes,
        upload_s,
        makespan_s,
        local_finish_s: s.local_finish_s,
        remote_finish_s: s.remote_finish_s,
        remote_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_rates_probe_with_one_image_but_never_the_only_one() {
        assert_eq!(remote_chunk(10, 0, None, None, 0.0), 1);
        assert_eq!(remote_chunk(10, 0, Some(0.1), None, 0.0), 1);
        assert_eq!(remote_chunk(1, 0, None, None, 0.0), 0);
        assert_eq!(remote_chunk(0, 3, None, None, 0.0), 0);
    }

    #[test]
    fn equal_sides_share_the_work_and_a_slow_remote_gets_none() {
        // Equal rates, no overhead: half each.
        assert_eq!(remote_chunk(100, 0, Some(0.1), Some(0.1), 0.0), 50);
        // Three times faster remotely: three quarters there.
        assert_eq!(remote_chunk(100, 0, Some(0.3), Some(0.1), 0.0), 75);
        // The remote side would finish one image after the local side finishes all 3.
        assert_eq!(remote_chunk(3, 0, Some(0.1), Some(0.4), 0.0), 0);
        assert_eq!(remote_chunk(3, 0, Some(0.1), Some(0.25), 0.0), 1);
        // A fixed cost per request larger than everything left: nothing.
        assert_eq!(remote_chunk(5, 1, Some(0.1), Some(0.01), 1.0), 0);
    }

    /// Runs the planner against two sides of fixed speeds (one request at a time, a fixed cost per
    /// request) and returns the makespan, as detect_split would see it.
    fn simulate(n: usize, a_l: f64, a_r: f64, request_s: f64) -> f64 {
        let mut queued = n - 1; // the local side starts on the first image at once
        let (mut local_next, mut remote_free) = (a_l, 0.0f64);
        let (mut local_end, mut remote_end) = (a_l, 0.0f64);
        while local_next.is_finite() || remote_free.is_finite() {
            if local_next <= remote_free {
                if queued > 0 {
                    queued -= 1;
                    local_next += a_l;
                    local_end = local_next;
                } else {
                    local_next = f64::INFINITY;
                }
            } else {
                let backlog = usize::from(local_next.is_finite());
                let c = remote_chunk(queued, backlog, Some(a_l), Some(a_r), request_s + a_l.min(a_r));
                if c > 0 {
                    queued -= c;
                    remote_free += request_s + c as f64 * a_r;
                    remote_end = remote_free;
                } else if queued == 0 {
                    remote_free = f64::INFINITY;
                } else {
                    remote_free = local_next; // look again when the local side has moved on
                }
            }
        }
        local_end.max(remote_end)
    }

    #[test]
    fn planned_chunks_finish_both_sides_together() {
        for (a_l, a_r) in [(0.06, 0.06), (0.06, 0.3), (0.3, 0.06), (0.06, 0.1)] {
            for n in [20, 50, 200] {
                let ideal = n as f64 / (1.0 / a_l + 1.0 / a_r);
                let t = simulate(n, a_l, a_r, 0.01);
                let best_single = n as f64 * a_l.min(a_r);
                assert!(
                    t <= best_single + 1e-9,
                    "{n} images at {a_l}/{a_r}: {t} s, slower than one side ({best_single})"
                );
                // Whole images: at most one image of the slower side over the fluid ideal.
                assert!(t <= ideal * 1.05 + a_l.max(a_r), "{n} images at {a_l}/{a_r}: {t} s vs ideal {ideal}");
            }
        }
    }
}
