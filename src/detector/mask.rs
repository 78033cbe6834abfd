//! Instance masks of Ultralytics `-seg` models, as its predictor makes them (`process_mask` with
//! `upsample=True`): the mask logits `coefficients · prototypes` at the prototypes' resolution,
//! upsampled bilinearly (PyTorch's `align_corners=False`) to the model's input, positive logits
//! kept (sigmoid > 0.5) inside the object's box; then, instead of a bitmap, the outer contour of
//! each connected part, traced along pixel edges, mapped back through the image's letterbox and
//! simplified (Douglas–Peucker) — polygons in original pixels, as COCO's `segmentation` lists them.
//!
//! Only the box's pixels are computed, and every buffer lives in a [`MaskScratch`] kept by the
//! session's model: nothing is allocated per object once the buffers have grown.

use super::heads::{BBox, Output};
use super::transform::Transform;

/// Polygons simplified to this tolerance, in original-image pixels.
pub const TOLERANCE_PX: f32 = 1.0;
/// At most this many vertices per object over all its parts: past it the tolerance doubles until
/// the outline fits, then the smallest parts are left out (a speckled mask cannot make a response
/// grow without bound).
pub const MAX_VERTICES: usize = 512;

/// Reusable buffers for masks.
#[derive(Debug, Default)]
pub struct MaskScratch {
    coefficients: Vec<f32>,
    logits: Vec<f32>,
    grid: Vec<u8>,
    labels: Vec<u32>,
    stack: Vec<(usize, usize)>,
    keep: Vec<bool>,
    /// Every part's ring, one after another (image pixels).
    points: Vec<[f32; 2]>,
    /// Each part: its area and where its ring is in `points`.
    parts: Vec<(u32, std::ops::Range<usize>)>,
}

impl MaskScratch {
    /// The coefficients buffer, for the caller to fill before [`MaskScratch::polygons`].
    pub fn coefficients(&mut self) -> &mut Vec<f32> {
        &mut self.coefficients
    }

    /// The mask of one object as polygons in original pixels (`[x1, y1, x2, y2, …]` each), from
    /// its coefficients (filled through [`MaskScratch::coefficients`]), the prototypes
    /// `[1, C, mh, mw]`, its box in input pixels and the image's transform. Empty if no pixel of
    /// the box is in the mask (the reference then drops the object).
    pub fn polygons(&mut self, protos: Output<'_>, b: BBox, t: &Transform) -> Vec<Vec<f32>> {
        let (c, mh, mw) = match protos.dims {
            [1, c, h, w] | [c, h, w] => (*c, *h, *w),
            _ => return Vec::new(),
        };
        if c != self.coefficients.len() || mh == 0 || mw == 0 || protos.data.len() < c * mh * mw {
            return Vec::new();
        }
        let (iw, ih) = (t.input_width as usize, t.input_height as usize);
        // The input pixels r with x1 <= r < x2 (crop_mask), inside the picture (not the padding).
        let span = |lo: f32, hi: f32, pad: f32, content: f32, n: usize| {
            let lo = lo.max(pad.floor()).max(0.0).ceil();
            let hi = hi.min((pad + content).ceil()).min(n as f32).ceil();
            (lo as usize, (hi as usize).max(lo as usize))
        };
        let (x0, x1) = span(b.x1, b.x2, t.pad_x, t.width as f32 * t.gain_x, iw);
        let (y0, y1) = span(b.y1, b.y2, t.pad_y, t.height as f32 * t.gain_y, ih);
        if x0 >= x1 || y0 >= y1 {
            return Vec::new();
        }
        // PyTorch's bilinear source index (align_corners=False): (dst + 0.5) · scale − 0.5, ≥ 0.
        let src = |d: usize, scale: f32| ((d as f32 + 0.5) * scale - 0.5).max(0.0);
        let (sx, sy) = (mw as f32 / iw as f32, mh as f32 / ih as f32);
        let (px0, px1) = (src(x0, sx) as usize, (src(x1 - 1, sx) as usize + 1).min(mw - 1));
        let (py0, py1) = (src(y0, sy) as usize, (src(y1 - 1, sy) as usize + 1).min(mh - 1));
        let (lw, lh) = (px1 - px0 + 1, py1 - py0 + 1);
        self.logits.clear();
        self.logits.resize(lw * lh, 0.0);
        for (k, &coef) in self.coefficients.iter().enumerate() {
            let plane = &protos.data[k * mh * mw..(k + 1) * mh * mw];
            for y in 0..lh {
                let row = &plane[(py0 + y) * mw + px0..(py0 + y) * mw + px0 + lw];
                for (l, p) in self.logits[y * lw..(y + 1) * lw].iter_mut().zip(row) {
                    *l += coef * p;
                }
            }
        }
        // The grid: the box's pixels with a border of zeros, 1 where the upsampled logit > 0.
        let (gw, gh) = (x1 - x0 + 2, y1 - y0 + 2);
        self.grid.clear();
        self.grid.resize(gw * gh, 0);
        let mut any = false;
        for y in y0..y1 {
            let fy = src(y, sy);
            let ya = fy as usize;
            let yb = (ya + 1).min(mh - 1);
            let ly = fy - ya as f32;
            let (ra, rb) = ((ya - py0) * lw, (yb - py0) * lw);
            for x in x0..x1 {
                let fx = src(x, sx);
                let xa = fx as usize;
                let xb = (xa + 1).min(mw - 1);
                let lx = fx - xa as f32;
                let (ca, cb) = (xa - px0, xb - px0);
                let l = &self.logits;
                let v = (1.0 - ly) * ((1.0 - lx) * l[ra + ca] + lx * l[ra + cb])
                    + ly * ((1.0 - lx) * l[rb + ca] + lx * l[rb + cb]);
                if v > 0.0 {
                    self.grid[(y - y0 + 1) * gw + (x - x0 + 1)] = 1;
                    any = true;
                }
            }
        }
        if !any {
            return Vec::new();
        }
        // Grid corner (gx, gy) is input pixel edge (x0 + gx − 1, y0 + gy − 1).
        let to_image = |gx: usize, gy: usize| t.unmap_point((x0 + gx) as f32 - 1.0, (y0 + gy) as f32 - 1.0);
        self.trace_parts(gw, gh, to_image);
        self.simplified()
    }

    /// Labels the grid's 4-connected parts and traces each one's outer boundary into `points`
    /// (image pixels), listing each part's area and ring in `parts`.
    fn trace_parts(&mut self, gw: usize, gh: usize, to_image: impl Fn(usize, usize) -> [f32; 2]) {
        self.labels.clear();
        self.labels.resize(gw * gh, 0);
        self.parts.clear();
        self.points.clear();
        let mut next = 0u32;
        for start in 0..gw * gh {
            if self.grid[start] == 0 || self.labels[start] != 0 {
                continue;
            }
            next += 1;
            let mut area = 0u32;
            self.stack.clear();
            self.stack.push((start % gw, start / gw));
            self.labels[start] = next;
            while let Some((x, y)) = self.stack.pop() {
                area += 1;
                for (nx, ny) in [(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)] {
                    let i = ny * gw + nx;
                    if self.grid[i] != 0 && self.labels[i] == 0 {
                        self.labels[i] = next;
                        self.stack.push((nx, ny));
                    }
                }
            }
            // The part's first pixel in raster order: its top edge is on the outer boundary.
            let first = self.points.len();
            trace(&self.labels, gw, gh, (start % gw, start / gw), next, &to_image, &mut self.points);
            self.parts.push((area, first..self.points.len()));
        }
    }

    /// The parts' rings simplified, largest parts first, within [`MAX_VERTICES`].
    fn simplified(&mut self) -> Vec<Vec<f32>> {
        self.parts.sort_by_key(|p| std::cmp::Reverse(p.0));
        let mut tolerance = TOLERANCE_PX;
        let mut out: Vec<Vec<f32>> = Vec::new();
        for _ in 0..12 {
            out.clear();
            let mut total = 0;
            for (_, ring) in &self.parts {
                let poly = simplify_ring(&self.points[ring.clone()], tolerance, &mut self.keep);
                if poly.len() < 3 {
                    continue;
                }
                total += poly.len();
                if total > MAX_VERTICES && !out.is_empty() {
                    total -= poly.len();
                    continue;
                }
                out.push(poly.iter().flat_map(|p| [round1(p[0]), round1(p[1])]).collect());
            }
            if total <= MAX_VERTICES {
                break;
            }
            tolerance *= 2.0;
        }
        out
    }
}

fn round1(v: f32) -> f32 {
    (v * 10.0).round() / 10.0
}

/// The outer boundary of the part labelled `label` whose first pixel in raster order is
/// `(sx, sy)`, followed along pixel edges with the part on the right; a vertex where it turns,
/// appended to `ring`.
fn trace(
    labels: &[u32],
    gw: usize,
    gh: usize,
    (sx, sy): (usize, usize),
    label: u32,
    to_image: impl Fn(usize, usize) -> [f32; 2],
    ring: &mut Vec<[f32; 2]>,
) {
    // Directions east, south, west, north (y down): a right turn is the next one.
    const DIRS: [(isize, isize); 4] = [(1, 0), (0, 1), (-1, 0), (0, -1)];
    let inside = |x: isize, y: isize| {
        x >= 0 && y >= 0 && (x as usize) < gw && (y as usize) < gh && labels[y as usize * gw + x as usize] == label
    };
    let (mut cx, mut cy, mut d) = (sx as isize, sy as isize, 0usize);
    ring.push(to_image(sx, sy));
    for _ in 0..4 * (gw + 1) * (gh + 1) {
        cx += DIRS[d].0;
        cy += DIRS[d].1;
        // The pixels ahead of corner (cx, cy), left and right of the direction of travel.
        let (left, right) = match d {
            0 => ((cx, cy - 1), (cx, cy)),
            1 => ((cx, cy), (cx - 1, cy)),
            2 => ((cx - 1, cy), (cx - 1, cy - 1)),
            _ => ((cx - 1, cy - 1), (cx, cy - 1)),
        };
        let turn = if !inside(right.0, right.1) {
            (d + 1) % 4
        } else if inside(left.0, left.1) {
            (d + 3) % 4
        } else {
            d
        };
        if cx == sx as isize && cy == sy as isize && turn == 0 {
            break;
        }
        if turn != d {
            ring.push(to_image(cx as usize, cy as usize));
            d = turn;
        }
    }
}

/// Douglas–Peucker on a closed ring: the vertices farther than `tolerance` from the simplified
/// outline are kept.
fn simplify_ring(ring: &[[f32; 2]], tolerance: f32, keep: &mut Vec<bool>) -> Vec<[f32; 2]> {
    let n = ring.len();
    if n <= 3 {
        return ring.to_vec();
    }
    // Split at the first vertex and the one farthest from it.
    let far = (1..n).max_by(|&a, &b| dist2(ring[0], ring[a]).total_cmp(&dist2(ring[0], ring[b]))).unwrap_or(n / 2);
    keep.clear();
    keep.resize(n + 1, false);
    keep[0] = true;
    keep[far] = true;
    keep[n] = true;
    let at = |i: usize| ring[i % n];
    let mut stack = vec![(0usize, far), (far, n)];
    while let Some((a, b)) = stack.pop() {
        let (mut best, mut best_d) = (0, tolerance);
        for i in a + 1..b {
            let d = segment_distance(at(i), at(a), at(b));
            if d > best_d {
                (best, best_d) = (i, d);
            }
        }
        if best != 0 {
            keep[best] = true;
            stack.push((a, best));
            stack.push((best, b));
        }
    }
    (0..n).filter(|&i| keep[i]).map(|i| ring[i]).collect()
}

fn dist2(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

fn segment_distance(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    if len2 == 0.0 {
        return dist2(p, a).sqrt();
    }
    let t = (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0);
    dist2(p, [a[0] + t * dx, a[1] + t * dy]).sqrt()
}

/// Polygons (`[x1, y1, x2, y2, …]` each) rasterised at `width`×`height`: a pixel is in when its
/// centre is inside an odd number of them (the polygons of one mask do not overlap). Row-major,
/// 0 or 1. For tests and evaluation.
pub fn rasterize(polygons: &[Vec<f32>], width: usize, height: usize) -> Vec<u8> {
    let mut out = vec![0u8; width * height];
    let mut xs: Vec<f32> = Vec::new();
    for y in 0..height {
        let cy = y as f32 + 0.5;
        xs.clear();
        for p in polygons {
            let n = p.len() / 2;
            for i in 0..n {
                let (ax, ay, bx, by) = (p[2 * i], p[2 * i + 1], p[2 * ((i + 1) % n)], p[2 * ((i + 1) % n) + 1]);
                if (ay <= cy) != (by <= cy) {
                    xs.push(ax + (cy - ay) / (by - ay) * (bx - ax));
                }
            }
        }
        xs.sort_by(f32::total_cmp);
        for pair in xs.chunks_exact(2) {
            // Pixels whose centre x + 0.5 lies in [a, b).
            let a = (pair[0] - 0.5).ceil().max(0.0) as usize;
            let b = ((pair[1] - 0.5).ceil().max(0.0) as usize).min(width);
            for v in out[y * width..].iter_mut().take(b).skip(a) {
                *v = 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(w: u32, h: u32) -> Transform {
        Transform {
            gain_x: 1.0,
            gain_y: 1.0,
            pad_x: 0.0,
            pad_y: 0.0,
            input_width: w,
            input_height: h,
            width: w,
            height: h,
        }
    }

    /// One prototype whose value is `r² − (x − cx)² − (y − cy)²` at the prototypes' pixel
    /// centres: with coefficient 1 its positive part is a disc of radius r.
    fn disc_protos(mw: usize, mh: usize, cx: f32, cy: f32, r: f32) -> Vec<f32> {
        let mut v = Vec::with_capacity(mw * mh);
        for y in 0..mh {
            for x in 0..mw {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                v.push(r * r - dx * dx - dy * dy);
            }
        }
        v
    }

    #[test]
    fn a_coefficient_set_gives_the_disc_it_describes() {
        // Prototypes at a quarter of a 128x128 input (32x32); a disc of radius 8 prototype pixels
        // centred at (16, 16) is a disc of radius 32 input pixels centred at (64, 64).
        let protos = disc_protos(32, 32, 16.0, 16.0, 8.0);
        let mut s = MaskScratch::default();
        s.coefficients().clear();
        s.coefficients().push(1.0);
        let t = identity(128, 128);
        let whole = BBox { x1: 0.0, y1: 0.0, x2: 128.0, y2: 128.0 };
        let polys = s.polygons(Output { dims: &[1, 1, 32, 32], data: &protos }, whole, &t);
        assert_eq!(polys.len(), 1, "one part");
        let raster = rasterize(&polys, 128, 128);
        let area = raster.iter().filter(|&&v| v == 1).count() as f32;
        let expected = std::f32::consts::PI * 32.0 * 32.0;
        assert!((area - expected).abs() / expected < 0.03, "area {area} vs {expected}");
        assert_eq!(raster[64 * 128 + 64], 1);
        assert_eq!(raster[64 * 128 + 100], 0);
        // The box crops it: only the left half.
        let left = BBox { x1: 0.0, y1: 0.0, x2: 64.0, y2: 128.0 };
        let polys = s.polygons(Output { dims: &[1, 1, 32, 32], data: &protos }, left, &t);
        let raster = rasterize(&polys, 128, 128);
        let half = raster.iter().filter(|&&v| v == 1).count() as f32;
        assert!((half - expected / 2.0).abs() / expected < 0.03, "{half}");
        assert!((64..128).all(|x| raster[64 * 128 + x] == 0));
        // Coefficient −1: the outside of the disc, cropped to a box away from it.
        s.coefficients()[0] = -1.0;
        let corner = BBox { x1: 0.0, y1: 0.0, x2: 16.0, y2: 16.0 };
        let polys = s.polygons(Output { dims: &[1, 1, 32, 32], data: &protos }, corner, &t);
        assert_eq!(rasterize(&polys, 128, 128).iter().filter(|&&v| v == 1).count(), 256);
        // Nothing positive in the box: no polygon.
        let centre = BBox { x1: 60.0, y1: 60.0, x2: 68.0, y2: 68.0 };
        assert!(s.polygons(Output { dims: &[1, 1, 32, 32], data: &protos }, centre, &t).is_empty());
    }

    #[test]
    fn polygons_map_back_through_the_letterbox() {
        // A 200x100 photo letterboxed into 128x128: gain 0.64, 32 px above and below.
        let t = Transform {
            gain_x: 0.64,
            gain_y: 0.64,
            pad_x: 0.0,
            pad_y: 32.0,
            input_width: 128,
            input_height: 128,
            width: 200,
            height: 100,
        };
        let protos = disc_protos(32, 32, 16.0, 16.0, 6.0);
        let mut s = MaskScratch::default();
        s.coefficients().clear();
        s.coefficients().push(1.0);
        let polys = s.polygons(
            Output { dims: &[1, 1, 32, 32], data: &protos },
            BBox { x1: 0.0, y1: 0.0, x2: 128.0, y2: 128.0 },
            &t,
        );
        let raster = rasterize(&polys, 200, 100);
        // Centre (64, 64) input = (100, 50) photo; radius 24 input = 37.5 photo px.
        assert_eq!(raster[50 * 200 + 100], 1);
        let area = raster.iter().filter(|&&v| v == 1).count() as f32;
        let expected = std::f32::consts::PI * 37.5 * 37.5;
        assert!((area - expected).abs() / expected < 0.04, "{area} vs {expected}");
        for p in &polys {
            assert!(p.chunks(2).all(|v| (0.0..=200.0).contains(&v[0]) && (0.0..=100.0).contains(&v[1])));
        }
    }

    #[test]
    fn separate_parts_are_separate_polygons_and_the_vertex_budget_holds() {
        // A checkerboard of 2x2 blocks: many parts; the outline stays within the budget.
        let (w, h) = (64usize, 64usize);
        let mut protos = vec![0.0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                protos[y * w + x] = if (x / 4 + y / 4) % 2 == 0 { 1.0 } else { -1.0 };
            }
        }
        let mut s = MaskScratch::default();
        s.coefficients().clear();
        s.coefficients().push(1.0);
        let t = identity(64, 64);
        let polys = s.polygons(
            Output { dims: &[1, 1, 64, 64], data: &protos },
            BBox { x1: 0.0, y1: 0.0, x2: 64.0, y2: 64.0 },
            &t,
        );
        let vertices: usize = polys.iter().map(|p| p.len() / 2).sum();
        assert!(vertices <= MAX_VERTICES, "{vertices}");
        assert!(polys.len() > 10, "{} parts", polys.len());
        // Two blocks far apart: two rectangles of four vertices each.
        let mut protos = vec![-1.0f32; w * h];
        for (x0, y0) in [(4, 4), (40, 40)] {
            for y in y0..y0 + 8 {
                for x in x0..x0 + 12 {
                    protos[y * w + x] = 1.0;
                }
            }
        }
        let polys = s.polygons(
            Output { dims: &[1, 1, 64, 64], data: &protos },
            BBox { x1: 0.0, y1: 0.0, x2: 64.0, y2: 64.0 },
            &t,
        );
        assert_eq!(polys.len(), 2);
        assert!(polys.iter().all(|p| p.len() == 8), "{polys:?}");
        assert_eq!(polys[0], vec![4.0, 4.0, 16.0, 4.0, 16.0, 12.0, 4.0, 12.0]);
    }

    #[test]
    fn bad_prototypes_give_no_mask_rather_than_a_panic() {
        let mut s = MaskScratch::default();
        s.coefficients().clear();
        s.coefficients().extend([1.0, 1.0]);
        let t = identity(8, 8);
        let b = BBox { x1: 0.0, y1: 0.0, x2: 8.0, y2: 8.0 };
        let data = vec![1.0; 4];
        assert!(s.polygons(Output { dims: &[1, 2, 2, 2], data: &data }, b, &t).is_empty(), "too few elements");
        assert!(s.polygons(Output { dims: &[1, 3, 1, 1], data: &data }, b, &t).is_empty(), "coefficient count");
        assert!(s.polygons(Output { dims: &[1, 2, 0, 2], data: &data }, b, &t).is_empty());
        let nan = BBox { x1: f32::NAN, y1: 0.0, x2: 8.0, y2: 8.0 };
        let one = vec![1.0; 8];
        let _ = s.polygons(Output { dims: &[1, 2, 2, 2], data: &one }, nan, &t);
    }
}
