//! Candidates → objects: non-maximum suppression by the model's policy, the boxes mapped back
//! through the exact transform each image went through ([`Transform`]: stretch or letterbox,
//! with padding) and clamped to the image, one place for every head.

use serde::{Deserialize, Serialize};

pub use super::heads::BBox;
use super::heads::Candidate;
use super::spec::{Frame, ModelSpec, Nms};

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Class name (from the model, a labels file, or `class_<id>`).
    pub label: String,
    /// Class id, as the model numbers its classes.
    pub class_id: u32,
    /// Confidence 0..1.
    pub score: f32,
    /// Box in original-image pixels.
    #[serde(rename = "box")]
    pub bbox: BBox,
}

/// How an image was brought to the input tensor, so boxes can be mapped back: input pixel
/// `x = image x × gain_x + pad_x` (and the same for y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Input pixels per image pixel, horizontally.
    pub gain_x: f32,
    /// Input pixels per image pixel, vertically.
    pub gain_y: f32,
    /// Padding left of the image in the input.
    pub pad_x: f32,
    /// Padding above the image in the input.
    pub pad_y: f32,
    /// The input tensor's width.
    pub input_width: u32,
    /// The input tensor's height.
    pub input_height: u32,
    /// The image's width.
    pub width: u32,
    /// The image's height.
    pub height: u32,
}

impl Transform {
    /// A box in `frame` → image pixels, clamped to the image.
    pub fn unmap(&self, b: BBox, frame: Frame) -> BBox {
        let (w, h) = (self.width as f32, self.height as f32);
        let b = match frame {
            Frame::OriginalPixels => b,
            Frame::InputPixels | Frame::Normalized => {
                let (sx, sy) = match frame {
                    Frame::Normalized => (self.input_width as f32, self.input_height as f32),
                    _ => (1.0, 1.0),
                };
                let x = |v: f32| (v * sx - self.pad_x) / self.gain_x;
                let y = |v: f32| (v * sy - self.pad_y) / self.gain_y;
                BBox { x1: x(b.x1), y1: y(b.y1), x2: x(b.x2), y2: y(b.y2) }
            }
        };
        BBox { x1: b.x1.clamp(0.0, w), y1: b.y1.clamp(0.0, h), x2: b.x2.clamp(0.0, w), y2: b.y2.clamp(0.0, h) }
    }
}

/// Candidates (any order) → objects in image pixels, best first: NMS by `spec.nms` in the head's
/// frame (as the reference implementations do it, before clipping), at most
/// `spec.max_detections`, mapped back through `transform`, clamped, named. Boxes that are empty
/// inside the image are dropped.
pub fn finish(candidates: &mut Vec<Candidate>, spec: &ModelSpec, transform: &Transform) -> Vec<Object> {
    // Stable: equal scores keep the head's order.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(MAX_NMS_CANDIDATES);
    let kept = nms(candidates, spec.nms, spec.nms_iou, spec.max_detections);
    let frame = spec.head.frame();
    kept.into_iter()
        .filter_map(|c| {
            let bbox = transform.unmap(c.bbox, frame);
            (bbox.area() > 0.0).then(|| Object { label: spec.label(c.class), class_id: c.class, score: c.score, bbox })
        })
        .collect()
}

/// At most this many candidates enter NMS, the best (Ultralytics' `max_nms`): bounds its
/// quadratic cost whatever the threshold.
pub const MAX_NMS_CANDIDATES: usize = 30_000;

/// Greedy NMS on candidates sorted by descending score, keeping at most `max` of them: a
/// candidate is dropped when it overlaps a kept one (of the same class, for [`Nms::PerClass`]) by
/// more than `iou`.
pub fn nms(sorted: &[Candidate], policy: Nms, iou: f32, max: usize) -> Vec<Candidate> {
    let mut kept: Vec<Candidate> = Vec::with_capacity(sorted.len().min(max));
    for &cand in sorted {
        if kept.len() >= max {
            break;
        }
        let suppressed = match policy {
            Nms::None => false,
            Nms::Agnostic => kept.iter().any(|k| k.bbox.iou(&cand.bbox) > iou),
            Nms::PerClass => kept.iter().any(|k| k.class == cand.class && k.bbox.iou(&cand.bbox) > iou),
        };
        if !suppressed {
            kept.push(cand);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let b = BBox { x1: 5.0, y1: 0.0, x2: 15.0, y2: 10.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&a), 1.0);
        let far = BBox { x1: 20.0, y1: 20.0, x2: 30.0, y2: 30.0 };
        assert_eq!(a.iou(&far), 0.0);
    }

    fn cand(x1: f32, y1: f32, x2: f32, y2: f32, score: f32, class: u32) -> Candidate {
        Candidate { bbox: BBox { x1, y1, x2, y2 }, score, class }
    }

    #[test]
    fn nms_policies() {
        let sorted = || {
            vec![
                cand(100.0, 100.0, 300.0, 300.0, 0.9, 0),
                cand(110.0, 110.0, 300.0, 300.0, 0.8, 1), // overlaps the first, other class
                cand(105.0, 105.0, 300.0, 300.0, 0.7, 0), // overlaps the first, same class
                cand(400.0, 0.0, 500.0, 100.0, 0.5, 1),
            ]
        };
        let classes = |v: Vec<Candidate>| v.iter().map(|c| c.score).collect::<Vec<_>>();
        assert_eq!(classes(nms(&sorted(), Nms::Agnostic, 0.4, 300)), vec![0.9, 0.5]);
        assert_eq!(classes(nms(&sorted(), Nms::PerClass, 0.4, 300)), vec![0.9, 0.8, 0.5]);
        assert_eq!(classes(nms(&sorted(), Nms::None, 0.4, 300)), vec![0.9, 0.8, 0.7, 0.5]);
        assert_eq!(classes(nms(&sorted(), Nms::None, 0.4, 2)), vec![0.9, 0.8]);
    }

    fn stretch(width: u32, height: u32) -> Transform {
        Transform {
            gain_x: 512.0 / width as f32,
            gain_y: 512.0 / height as f32,
            pad_x: 0.0,
            pad_y: 0.0,
            input_width: 512,
            input_height: 512,
            width,
            height,
        }
    }

    #[test]
    fn stretch_unmaps_per_axis_and_clamps() {
        let t = stretch(1024, 256);
        let b = t.unmap(BBox { x1: 100.0, y1: 100.0, x2: 300.0, y2: 300.0 }, Frame::InputPixels);
        assert_eq!(b, BBox { x1: 200.0, y1: 50.0, x2: 600.0, y2: 150.0 });
        let b = t.unmap(BBox { x1: 400.0, y1: -5.0, x2: 530.0, y2: 100.0 }, Frame::InputPixels);
        assert_eq!(b, BBox { x1: 800.0, y1: 0.0, x2: 1024.0, y2: 50.0 });
        let b = t.unmap(BBox { x1: 0.25, y1: 0.5, x2: 0.5, y2: 1.0 }, Frame::Normalized);
        assert_eq!(b, BBox { x1: 256.0, y1: 128.0, x2: 512.0, y2: 256.0 });
        let b = t.unmap(BBox { x1: 1.0, y1: 2.0, x2: 3000.0, y2: 4.0 }, Frame::OriginalPixels);
        assert_eq!(b, BBox { x1: 1.0, y1: 2.0, x2: 1024.0, y2: 4.0 });
    }

    #[test]
    fn letterbox_unmaps_through_the_padding() {
        // 400x300 into 320x320: scale 0.8 -> 320x240, 40 px above and below.
        let t = Transform {
            gain_x: 0.8,
            gain_y: 0.8,
            pad_x: 0.0,
            pad_y: 40.0,
            input_width: 320,
            input_height: 320,
            width: 400,
            height: 300,
        };
        let b = t.unmap(BBox { x1: 0.0, y1: 40.0, x2: 320.0, y2: 280.0 }, Frame::InputPixels);
        assert_eq!(b, BBox { x1: 0.0, y1: 0.0, x2: 400.0, y2: 300.0 });
        // A box in the padding is empty once clamped.
        let b = t.unmap(BBox { x1: 10.0, y1: 0.0, x2: 50.0, y2: 30.0 }, Frame::InputPixels);
        assert_eq!(b.area(), 0.0);
    }
}
