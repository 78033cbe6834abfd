//! Oriented boxes of Ultralytics `-obb` models: overlap as Ultralytics measures it (`probiou`,
//! the Bhattacharyya overlap of the boxes' Gaussians), its "fast NMS" (a box is dropped when any
//! better-scoring box overlaps it, kept or not), and the box's corners.

use super::heads::Candidate;
use super::spec::Nms;

/// A rotated box: centre, width and height along its own axes, rotation in radians.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rbox {
    /// Centre x.
    pub cx: f32,
    /// Centre y.
    pub cy: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
    /// Rotation, radians.
    pub angle: f32,
}

impl Rbox {
    /// The candidate's rotated box (its `bbox` is the box before rotation).
    pub fn of(c: &Candidate) -> Self {
        let b = c.bbox;
        Rbox { cx: (b.x1 + b.x2) / 2.0, cy: (b.y1 + b.y2) / 2.0, w: b.x2 - b.x1, h: b.y2 - b.y1, angle: c.angle }
    }

    /// The four corners, in Ultralytics' `xywhr2xyxyxyxy` order.
    pub fn corners(&self) -> [[f32; 2]; 4] {
        let (s, c) = self.angle.sin_cos();
        let v1 = [self.w / 2.0 * c, self.w / 2.0 * s];
        let v2 = [-self.h / 2.0 * s, self.h / 2.0 * c];
        let p = |a: f32, b: f32| [self.cx + a * v1[0] + b * v2[0], self.cy + a * v1[1] + b * v2[1]];
        [p(1.0, 1.0), p(1.0, -1.0), p(-1.0, -1.0), p(-1.0, 1.0)]
    }

    /// The same box with its angle in [0, π/2), width and height swapped where that takes a
    /// quarter turn (Ultralytics' `regularize_rboxes`).
    pub fn regularized(self) -> Self {
        let half = std::f32::consts::FRAC_PI_2;
        let swap = self.angle.rem_euclid(std::f32::consts::PI) >= half;
        let (w, h) = if swap { (self.h, self.w) } else { (self.w, self.h) };
        Rbox { w, h, angle: self.angle.rem_euclid(half), ..self }
    }

    /// The covariance (a, b, c) of the box's Gaussian (`_get_covariance_matrix`).
    fn covariance(&self) -> (f32, f32, f32) {
        let (a, b) = (self.w * self.w / 12.0, self.h * self.h / 12.0);
        let (s, c) = self.angle.sin_cos();
        (a * c * c + b * s * s, a * s * s + b * c * c, (a - b) * c * s)
    }

    /// Ultralytics' `probiou` of two rotated boxes (1 − Hellinger distance of their Gaussians).
    pub fn probiou(&self, o: &Rbox) -> f32 {
        const EPS: f32 = 1e-7;
        let (a1, b1, c1) = self.covariance();
        let (a2, b2, c2) = o.covariance();
        let (dx, dy) = (self.cx - o.cx, self.cy - o.cy);
        let den = (a1 + a2) * (b1 + b2) - (c1 + c2).powi(2) + EPS;
        let t1 = ((a1 + a2) * dy * dy + (b1 + b2) * dx * dx) / den * 0.25;
        let t2 = ((c1 + c2) * (o.cx - self.cx) * dy) / den * 0.5;
        let det = ((a1 * b1 - c1 * c1).max(0.0) * (a2 * b2 - c2 * c2).max(0.0)).sqrt();
        let t3 = (((a1 + a2) * (b1 + b2) - (c1 + c2).powi(2)) / (4.0 * det + EPS) + EPS).ln() * 0.5;
        let bd = (t1 + t2 + t3).clamp(EPS, 100.0);
        let hd = (1.0 - (-bd).exp() + EPS).sqrt();
        1.0 - hd
    }
}

/// Ultralytics' rotated NMS on candidates sorted by descending score: a candidate is dropped when
/// a better one (kept or not) of the same class (any class for [`Nms::Agnostic`]) overlaps it by
/// more than `iou` (probiou); at most `max` kept. Quadratic in the candidates, as the reference.
pub fn nms(sorted: &[Candidate], policy: Nms, iou: f32, max: usize) -> Vec<Candidate> {
    let boxes: Vec<Rbox> = sorted.iter().map(Rbox::of).collect();
    let mut kept = Vec::with_capacity(sorted.len().min(max));
    for (j, cand) in sorted.iter().enumerate() {
        if kept.len() >= max {
            break;
        }
        let suppressed = policy != Nms::None
            && (0..j).any(|i| {
                (policy == Nms::Agnostic || sorted[i].class == cand.class) && boxes[i].probiou(&boxes[j]) > iou
            });
        if !suppressed {
            kept.push(*cand);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::heads::BBox;
    use std::f32::consts::{FRAC_PI_2, PI};

    fn r(cx: f32, cy: f32, w: f32, h: f32, angle: f32) -> Rbox {
        Rbox { cx, cy, w, h, angle }
    }

    #[test]
    fn corners_at_zero_and_a_quarter_turn() {
        let c = r(10.0, 20.0, 8.0, 4.0, 0.0).corners();
        assert_eq!(c, [[14.0, 22.0], [14.0, 18.0], [6.0, 18.0], [6.0, 22.0]]);
        let q = r(10.0, 20.0, 8.0, 4.0, FRAC_PI_2).corners();
        for (p, e) in q.iter().zip([[8.0, 24.0], [12.0, 24.0], [12.0, 16.0], [8.0, 16.0]]) {
            assert!((p[0] - e[0]).abs() < 1e-5 && (p[1] - e[1]).abs() < 1e-5, "{q:?}");
        }
    }

    #[test]
    fn regularizing_keeps_the_geometry_and_wraps_the_angle() {
        for angle in [0.0, 0.3, FRAC_PI_2, FRAC_PI_2 + 0.2, PI - 1e-4, PI, -0.3, 3.0 * PI + 0.1] {
            let b = r(50.0, 40.0, 30.0, 10.0, angle);
            let g = b.regularized();
            assert!((0.0..FRAC_PI_2).contains(&g.angle), "{angle} -> {}", g.angle);
            // Same set of corners (in some order).
            let (mut a, mut c) = (b.corners().to_vec(), g.corners().to_vec());
            let key = |p: &[f32; 2]| ((p[0] * 100.0).round() as i64, (p[1] * 100.0).round() as i64);
            a.sort_by_key(key);
            c.sort_by_key(key);
            for (p, q) in a.iter().zip(&c) {
                assert!((p[0] - q[0]).abs() < 1e-2 && (p[1] - q[1]).abs() < 1e-2, "{angle}: {a:?} vs {c:?}");
            }
            assert!((b.probiou(&g) - 1.0).abs() < 1e-3, "the same box");
        }
    }

    #[test]
    fn probiou_of_known_pairs() {
        let a = r(0.0, 0.0, 20.0, 10.0, 0.0);
        assert!((a.probiou(&a) - 1.0).abs() < 1e-3);
        // A quarter turn of a square is the same square.
        let s = r(0.0, 0.0, 10.0, 10.0, 0.0);
        assert!((s.probiou(&r(0.0, 0.0, 10.0, 10.0, FRAC_PI_2)) - 1.0).abs() < 1e-3);
        // Far apart: nothing; a bar crossing at a right angle: partial.
        assert!(a.probiou(&r(500.0, 0.0, 20.0, 10.0, 0.0)) < 1e-3);
        let cross = a.probiou(&r(0.0, 0.0, 20.0, 10.0, FRAC_PI_2));
        assert!(cross > 0.2 && cross < 0.9, "{cross}");
        // Near the wrap: angles π − ε and −ε are the same box.
        let e = 1e-3;
        assert!((r(0.0, 0.0, 20.0, 10.0, PI - e).probiou(&r(0.0, 0.0, 20.0, 10.0, -e)) - 1.0).abs() < 1e-3);
    }

    fn cand(cx: f32, cy: f32, w: f32, h: f32, angle: f32, score: f32, class: u32) -> Candidate {
        let bbox = BBox { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0 };
        Candidate { bbox, score, class, index: 0, angle }
    }

    #[test]
    fn fast_nms_drops_what_any_better_box_overlaps() {
        let sorted = [
            cand(0.0, 0.0, 40.0, 10.0, 0.3, 0.9, 0),
            cand(0.5, 0.0, 40.0, 10.0, 0.32, 0.8, 0), // the first, nearly
            cand(0.0, 0.0, 40.0, 10.0, 0.3, 0.7, 1),  // the first, other class
            cand(200.0, 0.0, 40.0, 10.0, 0.0, 0.6, 0),
        ];
        let scores = |v: Vec<Candidate>| v.iter().map(|c| c.score).collect::<Vec<_>>();
        assert_eq!(scores(nms(&sorted, Nms::PerClass, 0.7, 300)), vec![0.9, 0.7, 0.6]);
        assert_eq!(scores(nms(&sorted, Nms::Agnostic, 0.7, 300)), vec![0.9, 0.6]);
        assert_eq!(scores(nms(&sorted, Nms::None, 0.7, 2)), vec![0.9, 0.8]);
        // Fast NMS: C overlaps only B, which A suppressed; C is dropped all the same.
        let chain = [
            cand(0.0, 0.0, 40.0, 10.0, 0.0, 0.9, 0),
            cand(6.0, 0.0, 40.0, 10.0, 0.0, 0.8, 0),
            cand(12.0, 0.0, 40.0, 10.0, 0.0, 0.7, 0),
        ];
        let ab = Rbox::of(&chain[0]).probiou(&Rbox::of(&chain[1]));
        let ac = Rbox::of(&chain[0]).probiou(&Rbox::of(&chain[2]));
        let thr = (ab + ac) / 2.0;
        assert!(ac < thr && Rbox::of(&chain[1]).probiou(&Rbox::of(&chain[2])) > thr);
        assert_eq!(scores(nms(&chain, Nms::PerClass, thr, 300)), vec![0.9]);
    }
}
