//! Model rows → objects: score threshold, scaling from the 512×512 input to image pixels,
//! clamping, and class-agnostic non-maximum suppression.

use super::preprocess::INPUT_SIZE;
use serde::{Deserialize, Serialize};

/// Values per detection row: `x1, y1, x2, y2, score, class`.
pub const ROW_LEN: usize = 6;

/// A box in original-image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left.
    pub x1: f32,
    /// Top.
    pub y1: f32,
    /// Right.
    pub x2: f32,
    /// Bottom.
    pub y2: f32,
}

impl BBox {
    /// Area in square pixels (0 for degenerate boxes).
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// Intersection over union with `other`.
    pub fn iou(&self, other: &BBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// COCO class name.
    pub label: String,
    /// COCO-80 class index.
    pub class_id: u32,
    /// Confidence 0..1.
    pub score: f32,
    /// Box in original-image pixels.
    #[serde(rename = "box")]
    pub bbox: BBox,
}

/// Turns `tower_0/detections` rows into objects in original-image pixels, best first.
pub fn postprocess(
    rows: &[f32],
    width: u32,
    height: u32,
    score_threshold: f32,
    nms_iou: f32,
    labels: &[String],
) -> Vec<Object> {
    let sx = width as f32 / INPUT_SIZE as f32;
    let sy = height as f32 / INPUT_SIZE as f32;
    let (w, h) = (width as f32, height as f32);
    let mut candidates: Vec<Object> = rows
        .chunks_exact(ROW_LEN)
        .filter(|r| r[4].is_finite() && r[4] >= score_threshold)
        .filter_map(|r| {
            let class = r[5];
            if !class.is_finite() || class < 0.0 {
                return None;
            }
            let class_id = class.round() as u32;
            let label = labels.get(class_id as usize).cloned().unwrap_or_else(|| format!("class_{class_id}"));
            let bbox = BBox {
                x1: (r[0] * sx).clamp(0.0, w),
                y1: (r[1] * sy).clamp(0.0, h),
                x2: (r[2] * sx).clamp(0.0, w),
                y2: (r[3] * sy).clamp(0.0, h),
            };
            (bbox.area() > 0.0).then_some(Object { label, class_id, score: r[4], bbox })
        })
        .collect();
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    nms(candidates, nms_iou)
}

/// Greedy class-agnostic NMS on objects sorted by descending score.
pub fn nms(sorted: Vec<Object>, iou: f32) -> Vec<Object> {
    let mut kept: Vec<Object> = Vec::with_capacity(sorted.len());
    for cand in sorted {
        if kept.iter().all(|k| k.bbox.iou(&cand.bbox) <= iou) {
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

    fn labels() -> Vec<String> {
        vec!["person".into(), "bicycle".into()]
    }

    #[test]
    fn scales_clamps_thresholds_and_suppresses() {
        #[rustfmt::skip]
        let rows = [
            // overlapping pair: the lower one (different class) is suppressed class-agnostically
            100.0, 100.0, 300.0, 300.0, 0.9, 0.0,
            110.0, 110.0, 300.0, 300.0, 0.8, 1.0,
            // separate box, partly outside the input: clamped
            400.0, -5.0, 530.0, 100.0, 0.5, 1.0,
            // below threshold
            0.0, 0.0, 50.0, 50.0, 0.1, 0.0,
        ];
        let objs = postprocess(&rows, 1024, 256, 0.3, 0.4, &labels());
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].label, "person");
        assert_eq!(objs[0].bbox, BBox { x1: 200.0, y1: 50.0, x2: 600.0, y2: 150.0 });
        assert_eq!(objs[1].label, "bicycle");
        assert_eq!(objs[1].bbox, BBox { x1: 800.0, y1: 0.0, x2: 1024.0, y2: 50.0 });
    }

    #[test]
    fn unknown_class_and_nan_rows_do_not_panic() {
        let rows = [0.0, 0.0, 10.0, 10.0, 0.9, 77.0, 0.0, 0.0, 10.0, 10.0, f32::NAN, 0.0];
        let objs = postprocess(&rows, 512, 512, 0.3, 0.4, &labels());
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].label, "class_77");
    }
}
