//! Split offloading: one batch detected here and on a remote objdet at the same time.
//!
//! The images wait in one queue, largest first. The local side takes them one at a time from the
//! front (as many in flight as it has sessions); the remote side takes the smallest from the back,
//! one request at a time, because every byte it is sent costs uplink time while an image costs
//! the same to detect on either side. Each request's size is chosen by [`remote_chunk`]: the
//! number of images that makes the later of the two sides finish earliest, from a model of each
//! side ([`Rates`]). The model starts from benchmark rows ([`Prior`]), or a one-image probe when
//! there are none, and is replaced by what each side has measured so far, so every request is
//! re-planned; a side that runs ahead simply takes more, which is work stealing at the
//! granularity of one request. A remote failure hands its images back to the local side.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use futures::future::join_all;

use super::advise;
use super::client::{self, Image, Remote};
use super::csv::Row;
use crate::api::{DetectResponse, ImageResult, Timing};
use crate::detector::Input;
use crate::service::{Arrival, DetectService};
use anyhow::{Context as _, Result};

/// What is known before the batch starts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prior {
    /// Local time per image, s (the `local` fit's per-image cost).
    pub local_s_per_image: Option<f64>,
    /// The server's own time per image (decode and inference), s.
    pub remote_s_per_image: Option<f64>,
    /// Uplink time per byte sent, s.
    pub uplink_s_per_byte: Option<f64>,
    /// Fixed cost of one remote request (e.g. the link's round trip), s.
    pub remote_request_s: f64,
}

impl Prior {
    /// The plan's first guess from benchmark rows: the `local` fit's cost per image of `image_mb`;
    /// for the remote side, of `location` when given (else the location with most inline rows at
    /// this link), the server's time per image in its fastest row (at a slow link that time also
    /// waits for the upload, so this errs towards sending less) and the uplink's time per byte in
    /// the rows measured at `uplink_mbps` (the emulated uplink; `None`: the real link). What the
    /// rows cannot tell stays unknown (the first request then probes).
    pub fn from_rows(rows: &[Row], image_mb: f64, uplink_mbps: Option<f64>, location: Option<&str>) -> Prior {
        let same_link = |r: &Row| match (r.uplink_mbps, uplink_mbps) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            (None, None) => true,
            _ => false,
        };
        let per_image = |f: advise::Fit| f.usable().then(|| f.time_for(image_mb, 1.0) - f.fixed_s).filter(|t| *t > 0.0);
        let local: Vec<&Row> = rows.iter().filter(|r| r.mode == "local").collect();
        let remote: Vec<&Row> = rows
            .iter()
            .filter(|r| r.mode == "inline" && r.errors == 0 && r.total_images > 0)
            .filter(|r| location.is_none_or(|l| r.location == l))
            .collect();
        let mut locations: Vec<&str> = remote.iter().filter(|r| same_link(r)).map(|r| r.location.as_str()).collect();
        locations.sort_unstable();
        let busiest = locations.chunk_by(|a, b| a == b).max_by_key(|g| g.len()).and_then(|g| g.first().copied());
        let remote: Vec<&Row> = remote.into_iter().filter(|r| Some(r.location.as_str()) == busiest).collect();
        let server_s = remote
            .iter()
            .map(|r| r.server_total_s / r.total_images as f64)
            .filter(|t| t.is_finite() && *t > 0.0)
            .min_by(f64::total_cmp);
        let (sent_s, sent_bytes) = remote
            .iter()
            .filter(|r| same_link(r))
            .filter_map(|r| Some((r.upload_s?, r.payload_mb * 1e6)))
            .fold((0.0, 0.0), |(s, b), (u, p)| (s + u, b + p));
        Prior {
            local_s_per_image: advise::fit(&local, |r| r.round_trip_s).ok().and_then(per_image),
            remote_s_per_image: server_s,
            uplink_s_per_byte: (sent_bytes > 0.0 && sent_s.is_finite()).then(|| sent_s / sent_bytes),
            remote_request_s: 0.0,
        }
    }
}

/// The planner's model of both sides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Local time per image, s.
    pub local_s: f64,
    /// The server's time per image, s.
    pub remote_s: f64,
    /// Uplink time per byte, s.
    pub s_per_byte: f64,
    /// Fixed cost of one remote request, s.
    pub request_s: f64,
}

impl Rates {
    /// Predicted time of one remote request carrying images of these wire sizes, in sending order.
    /// The server starts on an image as soon as it has arrived, so upload and detection overlap:
    /// the request ends after the longer of "first image uploaded, then every image detected" and
    /// "every image uploaded, then the last one detected".
    pub fn remote_time(&self, wire_bytes: &[usize]) -> f64 {
        let Some(&first) = wire_bytes.first() else { return 0.0 };
        let all: usize = wire_bytes.iter().sum();
        self.request_time(first, all, wire_bytes.len())
    }

    /// [`Rates::remote_time`] from the first image's and all images' wire bytes and the count.
    fn request_time(&self, first_bytes: usize, all_bytes: usize, images: usize) -> f64 {
        let compute_bound = first_bytes as f64 * self.s_per_byte + images as f64 * self.remote_s;
        let link_bound = all_bytes as f64 * self.s_per_byte + self.remote_s;
        self.request_s + compute_bound.max(link_bound)
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

impl SplitRun {
    /// One line for people (and scripts): `split, N images: K here (done at X s), M on REMOTE in
    /// R requests (done at Y s), T s`, and the remote failure if there was one.
    pub fn summary(&self, remote: &str) -> String {
        let failed =
            self.remote_error.as_ref().map(|e| format!("; the remote side failed and its images ran here: {e}"));
        format!(
            "split, {} images: {} here (done at {:.3} s), {} on {remote} in {} requests (done at {:.3} s), {:.3} s{}",
            self.response.results.len(),
            self.local_images,
            self.local_finish_s,
            self.remote_images,
            self.remote_requests,
            self.remote_finish_s,
            self.makespan_s,
            failed.unwrap_or_default()
        )
    }
}

/// How many of the queued images the remote side should take now, given their wire sizes
/// smallest first (the ones it would take) and `local_backlog` images already in flight here.
///
/// With `rates` known, it is the count that minimises the later of the two predicted finishing
/// times (the remote request's, and the local side's for everything left), ties going to fewer
/// remote images; 0 when the remote side cannot help. Taking only part of that share and
/// re-planning the rest was slower (README, "Split offloading"). Without rates, one image probes
/// the remote side (never the only image).
pub fn remote_chunk(smallest_first: &[usize], local_backlog: usize, rates: Option<Rates>) -> usize {
    let queued = smallest_first.len();
    if queued == 0 {
        return 0;
    }
    let Some(r) = rates else {
        return usize::from(queued + local_backlog >= 2);
    };
    let local_finish = |c: usize| (local_backlog + queued - c) as f64 * r.local_s;
    let mut best = (0, local_finish(0));
    let mut all_bytes = 0;
    for (taken, &w) in smallest_first.iter().enumerate() {
        let c = taken + 1;
        all_bytes += w;
        let remote = r.request_time(smallest_first[0], all_bytes, c);
        if remote >= best.1 {
            break; // the remote side only gets slower with more
        }
        let t = remote.max(local_finish(c));
        if t < best.1 {
            best = (c, t);
        }
    }
    best.0
}

struct State {
    /// Indices of the images nobody has taken, largest first.
    queue: VecDeque<usize>,
    results: Vec<Option<ImageResult>>,
    local_started: Instant,
    local_done: usize,
    local_in_flight: usize,
    local_busy_s: f64,
    local_finish_s: f64,
    remote_finish_s: f64,
    remote_done: usize,
    /// The server's own time (decode + inference) summed over the remote images.
    remote_server_s: f64,
    /// Upload time and bytes summed over the remote requests.
    remote_upload: (f64, u64),
    /// Measured request time beyond what the model explains, summed over requests.
    remote_extra_s: f64,
    remote_requests_done: usize,
    /// Images in the request out (0: none).
    remote_in_flight: usize,
    local_error: Option<crate::service::error::RequestError>,
}

impl State {
    /// The model from what has been measured, each part falling back to the prior.
    fn rates(&self, prior: &Prior) -> Option<Rates> {
        let local_s = if self.local_done > 0 {
            Some(self.local_busy_s / self.local_done as f64)
        } else {
            prior.local_s_per_image
        };
        let remote_s = if self.remote_done > 0 {
            Some(self.remote_server_s / self.remote_done as f64)
        } else {
            prior.remote_s_per_image
        };
        let (sent_s, sent_bytes) = self.remote_upload;
        let s_per_byte = if sent_bytes > 0 { Some(sent_s / sent_bytes as f64) } else { prior.uplink_s_per_byte };
        let request_s = if self.remote_requests_done > 0 {
            prior.remote_request_s.max(self.remote_extra_s / self.remote_requests_done as f64)
        } else {
            prior.remote_request_s
        };
        Some(Rates { local_s: local_s?, remote_s: remote_s?, s_per_byte: s_per_byte.unwrap_or(0.0), request_s })
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
    // Each image's share of a request body, computed once: the planner looks at every queued one.
    let wire: Vec<usize> = images.iter().map(client::inline_bytes).collect();
    let mut queue: Vec<usize> = (0..images.len()).collect();
    queue.sort_by_key(|&i| std::cmp::Reverse(images[i].bytes.len()));
    let state = Mutex::new(State {
        queue: queue.into(),
        results: vec![None; images.len()],
        local_started: start,
        local_done: 0,
        local_in_flight: 0,
        local_busy_s: 0.0,
        local_finish_s: 0.0,
        remote_finish_s: 0.0,
        remote_done: 0,
        remote_server_s: 0.0,
        remote_upload: (0.0, 0),
        remote_extra_s: 0.0,
        remote_requests_done: 0,
        remote_in_flight: 0,
        local_error: None,
    });
    let sessions = local.config().detector.sessions.max(1);
    // Woken whenever an image is done on either side: a worker waiting for images the remote side
    // may give back, and the remote side waiting for the local side to move on, look again then.
    let changed = tokio::sync::Notify::new();
    // Local workers: one image each, until nothing is queued and nothing can come back.
    let worker = || async {
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let wake = changed.notified();
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
                wake.await;
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
            drop(s);
            changed.notify_waiters();
        }
    };
    let mut remote_requests = 0;
    let mut remote_error = None;
    let remote_side = async {
        loop {
            let wake = changed.notified();
            let (chunk, chunk_wire): (Vec<usize>, Vec<usize>) = {
                let mut s = lock(&state);
                if s.queue.is_empty() {
                    return;
                }
                let smallest_first: Vec<usize> = s.queue.iter().rev().map(|&i| wire[i]).collect();
                let c = remote_chunk(&smallest_first, s.local_in_flight, s.rates(&prior));
                // From the back (smallest first, so the server starts soonest), as many as fit
                // in one request body.
                let mut taken: (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
                let mut bytes = 0;
                while taken.0.len() < c {
                    let Some(&i) = s.queue.back() else { break };
                    let w = wire[i];
                    if client::inline_len_of(taken.0.len() + 1, bytes + w) > max_body_bytes {
                        break;
                    }
                    bytes += w;
                    taken.0.push(i);
                    taken.1.push(w);
                    s.queue.pop_back();
                }
                s.remote_in_flight = taken.0.len();
                taken
            };
            if chunk.is_empty() {
                // Not worth a request now: look again when the local side has moved on.
                wake.await;
                continue;
            }
            let batch: Vec<Image> = chunk.iter().map(|&i| images[i].clone()).collect();
            let sent = Instant::now();
            remote_requests += 1;
            let outcome = remote.detect_inline(&batch).await;
            let took_s = sent.elapsed().as_secs_f64();
            // However this request ends, the workers may have something to do (or to stop).
            let _notify = NotifyOnDrop(&changed);
            let mut s = lock(&state);
            s.remote_in_flight = 0;
            match outcome {
                Ok(m) if m.response.results.len() == chunk.len() => {
                    s.remote_upload.0 += m.upload_s;
                    s.remote_upload.1 += m.payload_bytes;
                    s.remote_server_s +=
                        m.response.results.iter().map(|r| r.decode_ms + r.inference_ms).sum::<f64>() / 1e3;
                    s.remote_done += chunk.len();
                    // What the model (with what is now known) leaves unexplained is per-request cost.
                    if let Some(r) = s.rates(&prior) {
                        s.remote_extra_s += (took_s - (r.remote_time(&chunk_wire) - r.request_s)).max(0.0);
                        s.remote_requests_done += 1;
                    }
                    for (&i, r) in chunk.iter().zip(m.response.results) {
                        s.results[i] = Some(r);
                    }
                    s.remote_finish_s = start.elapsed().as_secs_f64();
                }
                other => {
                    let why = match other {
                        Ok(m) => format!("{} results for {} images", m.response.results.len(), chunk.len()),
                        Err(e) => format!("{e:#}"),
                    };
                    tracing::warn!(error = %why, images = chunk.len(), "remote side failed; detecting its images here");
                    for &i in chunk.iter() {
                        s.queue.push_back(i);
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
        remote_payload_bytes: s.remote_upload.1,
        upload_s: s.remote_upload.0,
        makespan_s,
        local_finish_s: s.local_finish_s,
        remote_finish_s: s.remote_finish_s,
        remote_error,
    })
}

/// Wakes every waiter of a `Notify` when dropped (after the state's lock, declared before it).
struct NotifyOnDrop<'a>(&'a tokio::sync::Notify);

impl Drop for NotifyOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(local_s: f64, remote_s: f64, s_per_byte: f64, request_s: f64) -> Option<Rates> {
        Some(Rates { local_s, remote_s, s_per_byte, request_s })
    }

    #[test]
    fn unknown_rates_probe_with_one_image_but_never_the_only_one() {
        assert_eq!(remote_chunk(&[100; 10], 0, None), 1);
        assert_eq!(remote_chunk(&[100], 0, None), 0);
        assert_eq!(remote_chunk(&[100], 1, None), 1);
        assert_eq!(remote_chunk(&[], 3, None), 0);
    }

    #[test]
    fn equal_sides_share_the_work_and_a_slow_remote_gets_none() {
        // Equal rates, a free link: half each.
        assert_eq!(remote_chunk(&[1000; 100], 0, rates(0.1, 0.1, 0.0, 0.0)), 50);
        // Three times faster remotely: three quarters there.
        assert_eq!(remote_chunk(&[1000; 100], 0, rates(0.3, 0.1, 0.0, 0.0)), 75);
        // The remote side would finish one image after the local side finishes all 3.
        assert_eq!(remote_chunk(&[1000; 3], 0, rates(0.1, 0.4, 0.0, 0.0)), 0);
        assert_eq!(remote_chunk(&[1000; 3], 0, rates(0.1, 0.15, 0.0, 0.0)), 1);
        // A fixed cost per request larger than everything left: nothing.
        assert_eq!(remote_chunk(&[1000; 5], 1, rates(0.1, 0.01, 0.0, 1.0)), 0);
    }

    #[test]
    fn the_link_is_paid_per_byte_so_small_images_go_further() {
        // A link-bound remote (1 s per MB, 0.05 s per image): 100 KB images cost it 0.1 s each,
        // 1 MB images 1 s each. Local: 0.1 s per image, 20 images in all.
        let small = remote_chunk(&[100_000; 20], 0, rates(0.1, 0.05, 1e-6, 0.0));
        let large = remote_chunk(&[1_000_000; 20], 0, rates(0.1, 0.05, 1e-6, 0.0));
        assert_eq!((small, large), (10, 1));
        // Upload and detection overlap: a compute-bound remote is not charged for the link twice.
        let r = Rates { local_s: 0.1, remote_s: 0.1, s_per_byte: 1e-7, request_s: 0.0 };
        assert!((r.remote_time(&[100_000; 10]) - (0.01 + 1.0)).abs() < 1e-9);
        assert!((r.remote_time(&[2_000_000; 10]) - (2.0 + 0.1)).abs() < 1e-9);
    }

    /// Runs the planner against two sides of fixed speeds (one request at a time, the model
    /// exact) and returns the makespan, as detect_split would see it.
    fn simulate(sizes: &[usize], r: Rates) -> f64 {
        let mut queue: Vec<usize> = sizes.to_vec();
        queue.sort_unstable_by(|a, b| b.cmp(a)); // largest first; the remote side takes from the end
        queue.remove(0); // the local side starts on the largest at once
        let (mut local_next, mut remote_free) = (r.local_s, 0.0f64);
        let (mut local_end, mut remote_end) = (r.local_s, 0.0f64);
        while local_next.is_finite() || remote_free.is_finite() {
            if local_next <= remote_free {
                if queue.is_empty() {
                    local_next = f64::INFINITY;
                } else {
                    queue.remove(0);
                    local_next += r.local_s;
                    local_end = local_next;
                }
            } else {
                let smallest_first: Vec<usize> = queue.iter().rev().copied().collect();
                let c = remote_chunk(&smallest_first, usize::from(local_next.is_finite()), Some(r));
                if c > 0 {
                    remote_free += r.remote_time(&smallest_first[..c]);
                    remote_end = remote_free;
                    queue.truncate(queue.len() - c);
                } else if queue.is_empty() {
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
        // Image sizes spread like the bundled dataset's (50 KB to 840 KB).
        let sizes: Vec<usize> = (0..200).map(|i| 50_000 + (i * 7919 % 200) * 3_950).collect();
        for (local_s, remote_s, s_per_byte) in
            [(0.06, 0.06, 1e-7), (0.06, 0.06, 1e-6), (0.06, 0.3, 1e-8), (0.3, 0.06, 1e-7)]
        {
            for n in [20, 50, 200] {
                let r = Rates { local_s, remote_s, s_per_byte, request_s: 0.01 };
                let batch = &sizes[..n];
                let t = simulate(batch, r);
                let best_single = (n as f64 * local_s).min(r.remote_time(batch));
                assert!(t <= best_single + 1e-9, "{n} images at {r:?}: {t} s, slower than one side ({best_single})");
                // Both sides' throughputs added, the remote's at the batch's mean image size.
                let remote_per_image = r.remote_time(batch) / n as f64;
                let ideal = n as f64 / (1.0 / local_s + 1.0 / remote_per_image);
                // Whole images: at most one image of the slower side over the fluid ideal.
                let slower = local_s.max(remote_per_image);
                assert!(t <= ideal * 1.05 + slower, "{n} images at {r:?}: {t} s vs ideal {ideal}");
            }
        }
    }
}
