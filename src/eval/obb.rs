//! Rotated-box mAP as Ultralytics' OBB `val` computes it — no pycocotools counterpart exists:
//! detections matched to the truth by `probiou` (the boxes' Gaussian overlap, not their polygon
//! intersection) with its `match_predictions` (pairs above each IoU threshold taken by
//! descending IoU, one per detection, then one per truth), and AP per class by its `ap_per_class`
//! and `compute_ap` (the precision envelope interpolated at 101 recall points, integrated by the
//! trapezoid rule), averaged over IoU .50:.05:.95 and over the classes that have truth.
//!
//! Streaming: each image is matched as it arrives; what is kept is 10 flags, a score and a class
//! per detection.

use crate::detector::rotated::Rbox;

/// The IoU thresholds .50:.05:.95.
const THRESHOLDS: usize = 10;

/// Accumulates matches image by image.
#[derive(Debug, Default)]
pub struct ObbAp {
    /// Per detection: score, class, hit at each threshold.
    detections: Vec<(f64, usize, [bool; THRESHOLDS])>,
    /// Truth objects per class.
    truth: Vec<usize>,
}

/// The result: AP @[.50:.95], @.50, @.75 and per class (`None`: no truth of it).
#[derive(Debug, Clone, PartialEq)]
pub struct ObbMetrics {
    /// mAP @[.50:.95].
    pub map50_95: f64,
    /// mAP @ .50.
    pub map50: f64,
    /// mAP @ .75.
    pub map75: f64,
    /// AP @[.50:.95] per class.
    pub per_class: Vec<Option<f64>>,
}

impl ObbAp {
    /// An accumulator over `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self { detections: Vec::new(), truth: vec![0; classes] }
    }

    /// One image: its truth `(class, box)` and detections `(class, score, box)`.
    pub fn add(&mut self, truth: &[(usize, Rbox)], found: &[(usize, f64, Rbox)]) {
        for (c, _) in truth {
            if let Some(n) = self.truth.get_mut(*c) {
                *n += 1;
            }
        }
        let mut hits = vec![[false; THRESHOLDS]; found.len()];
        // (truth, detection, IoU) of the same class.
        let mut pairs: Vec<(usize, usize, f32)> = Vec::new();
        for (gi, (gc, g)) in truth.iter().enumerate() {
            for (di, (dc, _, d)) in found.iter().enumerate() {
                if gc == dc {
                    pairs.push((gi, di, g.probiou(d)));
                }
            }
        }
        for (t, thr) in (0..THRESHOLDS).map(|t| (t, 0.5 + 0.05 * t as f32)) {
            let mut m: Vec<(usize, usize, f32)> = pairs.iter().copied().filter(|p| p.2 >= thr).collect();
            // Ultralytics: by IoU descending (numpy's argsort reversed), then the first of each
            // detection (np.unique returns them by detection index), then the first of each truth
            // in that order.
            m.sort_by(|a, b| b.2.total_cmp(&a.2));
            let mut by_det: Vec<(usize, usize, f32)> = Vec::new();
            for p in &m {
                if !by_det.iter().any(|q| q.1 == p.1) {
                    by_det.push(*p);
                }
            }
            by_det.sort_by_key(|p| p.1);
            let mut by_truth: Vec<(usize, usize, f32)> = Vec::new();
            for p in &by_det {
                if !by_truth.iter().any(|q| q.0 == p.0) {
                    by_truth.push(*p);
                }
            }
            for p in by_truth {
                hits[p.1][t] = true;
            }
        }
        self.detections.extend(found.iter().zip(hits).map(|((c, s, _), h)| (*s, *c, h)));
    }

    /// The metrics over every image added.
    pub fn finish(mut self) -> ObbMetrics {
        self.detections.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut per_class_t: Vec<Option<[f64; THRESHOLDS]>> = vec![None; self.truth.len()];
        for (c, &n) in self.truth.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let mine: Vec<&[bool; THRESHOLDS]> = self.detections.iter().filter(|d| d.1 == c).map(|d| &d.2).collect();
            let mut ap = [0.0; THRESHOLDS];
            if !mine.is_empty() {
                for (t, a) in ap.iter_mut().enumerate() {
                    let (mut tp, mut fp) = (0.0, 0.0);
                    let mut recall = Vec::with_capacity(mine.len());
                    let mut precision = Vec::with_capacity(mine.len());
                    for h in &mine {
                        if h[t] {
                            tp += 1.0;
                        } else {
                            fp += 1.0;
                        }
                        recall.push(tp / (n as f64 + 1e-16));
                        precision.push(tp / (tp + fp));
                    }
                    *a = compute_ap(&recall, &precision);
                }
            }
            per_class_t[c] = Some(ap);
        }
        let present: Vec<&[f64; THRESHOLDS]> = per_class_t.iter().flatten().collect();
        let mean = |f: &dyn Fn(&[f64; THRESHOLDS]) -> f64| {
            if present.is_empty() { -1.0 } else { present.iter().map(|a| f(a)).sum::<f64>() / present.len() as f64 }
        };
        ObbMetrics {
            map50_95: mean(&|a| a.iter().sum::<f64>() / THRESHOLDS as f64),
            map50: mean(&|a| a[0]),
            map75: mean(&|a| a[5]),
            per_class: per_class_t.iter().map(|a| a.map(|a| a.iter().sum::<f64>() / THRESHOLDS as f64)).collect(),
        }
    }
}

/// Ultralytics' `compute_ap`: the recall curve closed with (0, 1) and (1, 0), the precision
/// envelope, sampled at 101 recall points by linear interpolation, integrated by trapezoids.
fn compute_ap(recall: &[f64], precision: &[f64]) -> f64 {
    let mut mrec = Vec::with_capacity(recall.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(recall);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(precision.len() + 2);
    mpre.push(1.0);
    mpre.extend_from_slice(precision);
    mpre.push(0.0);
    for i in (0..mpre.len() - 1).rev() {
        mpre[i] = mpre[i].max(mpre[i + 1]);
    }
    let x: Vec<f64> = (0..101).map(|i| i as f64 / 100.0).collect();
    let y: Vec<f64> = x.iter().map(|&v| interp(v, &mrec, &mpre)).collect();
    x.windows(2).zip(y.windows(2)).map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0).sum()
}

/// numpy's `interp` on increasing `xp` (ties: the last of equal `xp` values, as numpy's search).
fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    if x <= xp[0] {
        return fp[0];
    }
    let last = xp.len() - 1;
    if x >= xp[last] {
        return fp[last];
    }
    // The last j with xp[j] <= x.
    let j = xp.partition_point(|&v| v <= x) - 1;
    let (x0, x1) = (xp[j], xp[j + 1]);
    if x1 == x0 {
        return fp[j];
    }
    fp[j] + (x - x0) * (fp[j + 1] - fp[j]) / (x1 - x0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cx: f32, cy: f32, w: f32, h: f32, angle: f32) -> Rbox {
        Rbox { cx, cy, w, h, angle }
    }

    #[test]
    fn perfect_none_and_a_wrong_class() {
        let g = r(50.0, 50.0, 40.0, 10.0, 0.3);
        let mut e = ObbAp::new(2);
        e.add(&[(0, g)], &[(0, 0.9, g)]);
        let m = e.finish();
        // Ultralytics' perfect score: the envelope falls to 0 at recall 1, the last trapezoid halves.
        assert!((m.map50_95 - 0.995).abs() < 1e-9, "{m:?}");
        assert_eq!(m.per_class[1], None, "a class without truth is not averaged");
        let mut e = ObbAp::new(2);
        e.add(&[(0, g)], &[(1, 0.9, g)]);
        assert_eq!(e.finish().map50_95, 0.0);
        let mut e = ObbAp::new(1);
        e.add(&[(0, g)], &[]);
        assert_eq!(e.finish().map50_95, 0.0);
    }

    #[test]
    fn a_duplicate_is_a_false_positive_and_ranks_by_score() {
        let g = r(50.0, 50.0, 40.0, 10.0, 0.0);
        let mut e = ObbAp::new(1);
        // The better-scored duplicate first: still 0.995 (the false positive comes after full recall).
        e.add(&[(0, g)], &[(0, 0.9, g), (0, 0.8, g)]);
        assert!((e.finish().map50 - 0.995).abs() < 1e-9);
        // Two truths, one found after a false positive at a higher score: precision 1/2 at recall 1/2.
        let mut e = ObbAp::new(1);
        let far = r(300.0, 300.0, 40.0, 10.0, 0.0);
        e.add(&[(0, g), (0, r(150.0, 50.0, 40.0, 10.0, 0.0))], &[(0, 0.9, far), (0, 0.8, g)]);
        let m = e.finish();
        // Envelope 1 at recall 0, 0.5 up to recall 0.5, then linear to 0 at recall 1:
        // 0.0075 + 0.245 + 0.125.
        assert!((m.map50 - 0.3775).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn interp_and_compute_ap_follow_numpy() {
        assert_eq!(interp(0.5, &[0.0, 1.0], &[1.0, 0.0]), 0.5);
        assert_eq!(interp(0.5, &[0.0, 0.5, 0.5, 1.0], &[1.0, 0.8, 0.2, 0.0]), 0.2);
        assert!((compute_ap(&[1.0], &[1.0]) - 0.995).abs() < 1e-12);
    }
}
