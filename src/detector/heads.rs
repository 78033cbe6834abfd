//! Output heads: each a pure function from the model's output tensors to candidate boxes in the
//! head's frame ([`Frame`]), with no ONNX Runtime in them (unit-tested on hand-made tensors).
//! [`super::postprocess`] then applies NMS, maps the boxes back to the image and names them.

use serde::{Deserialize, Serialize};

use super::spec::Head;

/// A box (x1, y1, x2, y2): in the head's frame in a [`Candidate`], in original-image pixels in
/// an `Object`.
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

/// One output tensor, its elements as f32 (integer outputs such as labels converted).
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// Dimensions.
    pub dims: &'a [usize],
    /// Elements, row-major.
    pub data: &'a [f32],
}

/// A detection before NMS, its box in the head's frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Box (x1, y1, x2, y2).
    pub bbox: BBox,
    /// Confidence.
    pub score: f32,
    /// Class id.
    pub class: u32,
}

/// An output that does not have the shape its head needs.
#[derive(Debug, thiserror::Error)]
#[error("output {index} of shape {dims:?} does not fit the {head} head: {reason}")]
pub struct ShapeError {
    /// Which of the head's outputs.
    pub index: usize,
    /// Its dimensions.
    pub dims: Vec<usize>,
    /// The head's format name.
    pub head: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

/// Decodes `outputs` (in [`Head::outputs`] order) into `out` (cleared first): every candidate
/// scoring at least `threshold`, in output order.
pub fn decode(head: &Head, outputs: &[Output<'_>], threshold: f32, out: &mut Vec<Candidate>) -> Result<(), ShapeError> {
    out.clear();
    let name = head.format().as_str();
    let bad = |index: usize, reason: &'static str| ShapeError {
        index,
        dims: outputs.get(index).map(|o| o.dims.to_vec()).unwrap_or_default(),
        head: name,
        reason,
    };
    let get = |i: usize| outputs.get(i).copied().ok_or_else(|| bad(i, "missing"));
    match head {
        Head::Rows { .. } => {
            let t = get(0)?;
            rows(rows_of(t, 6).ok_or_else(|| bad(0, "expected [1, N, 6]"))?, threshold, false, out);
        }
        Head::Detr { .. } => {
            let t = get(0)?;
            rows(rows_of(t, 6).ok_or_else(|| bad(0, "expected [1, Q, 6]"))?, threshold, true, out);
        }
        Head::Anchors { classes, .. } => {
            let t = get(0)?;
            let (c, a) = match t.dims {
                [1, c, a] | [c, a] if *c == 4 + classes => (*c, *a),
                _ => return Err(bad(0, "expected [1, 4 + classes, anchors]")),
            };
            let data = t.data.get(..c * a).ok_or_else(|| bad(0, "fewer elements than its shape"))?;
            anchors(data, *classes, a, threshold, out);
        }
        Head::DetrScores { classes, .. } => {
            let t = get(0)?;
            let q = rows_of(t, 4 + classes).ok_or_else(|| bad(0, "expected [1, Q, 4 + classes]"))?;
            detr_scores(q, *classes, threshold, out);
        }
        Head::DetrSplit { .. } => {
            let (labels, boxes, scores) = (get(0)?, get(1)?, get(2)?);
            let b = rows_of(boxes, 4).ok_or_else(|| bad(1, "expected [1, Q, 4]"))?;
            let n = b.len() / 4;
            if labels.data.len() < n || scores.data.len() < n {
                return Err(bad(0, "fewer labels or scores than boxes"));
            }
            for i in 0..n {
                push(
                    out,
                    [b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]],
                    scores.data[i],
                    labels.data[i],
                    threshold,
                );
            }
        }
        Head::TfOd { num, .. } => {
            let (boxes, scores, classes) = (get(0)?, get(1)?, get(2)?);
            let b = rows_of(boxes, 4).ok_or_else(|| bad(0, "expected [1, N, 4]"))?;
            let mut n = (b.len() / 4).min(scores.data.len()).min(classes.data.len());
            if num.is_some() {
                let count = get(3)?.data.first().copied().unwrap_or(0.0);
                if count.is_finite() && count >= 0.0 {
                    n = n.min(count as usize);
                }
            }
            for i in 0..n {
                // (ymin, xmin, ymax, xmax) → (x1, y1, x2, y2).
                let r = &b[4 * i..4 * i + 4];
                push(out, [r[1], r[0], r[3], r[2]], scores.data[i], classes.data[i], threshold);
            }
        }
    }
    Ok(())
}

/// The rows of a `[1, N, len]` (or `[N, len]`) tensor, `None` if it has another shape.
fn rows_of<'a>(t: Output<'a>, len: usize) -> Option<&'a [f32]> {
    let n = match t.dims {
        [1, n, l] | [n, l] if *l == len => *n,
        _ => return None,
    };
    t.data.get(..n * len)
}

fn push(out: &mut Vec<Candidate>, [x1, y1, x2, y2]: [f32; 4], score: f32, class: f32, threshold: f32) {
    // NaN scores and classes fail these comparisons and are skipped.
    let keep = score >= threshold && class >= 0.0 && class < u32::MAX as f32;
    if !keep {
        return;
    }
    if ![x1, y1, x2, y2].iter().all(|v| v.is_finite()) {
        return;
    }
    out.push(Candidate { bbox: BBox { x1, y1, x2, y2 }, score, class: class.round() as u32 });
}

/// `x1, y1, x2, y2, score, class` rows, or `cx, cy, w, h, score, class` (`centre`).
fn rows(data: &[f32], threshold: f32, centre: bool, out: &mut Vec<Candidate>) {
    for r in data.chunks_exact(6) {
        let bbox = if centre { xywh([r[0], r[1], r[2], r[3]]) } else { [r[0], r[1], r[2], r[3]] };
        push(out, bbox, r[4], r[5], threshold);
    }
}

fn xywh([cx, cy, w, h]: [f32; 4]) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// `[4 + classes, anchors]`, channel-major: each anchor's best class (the first of equal
/// scores), kept when it reaches `threshold`. Channels are walked in memory order.
fn anchors(data: &[f32], classes: usize, anchors: usize, threshold: f32, out: &mut Vec<Candidate>) {
    let mut best = vec![f32::NEG_INFINITY; anchors];
    let mut best_class = vec![0u32; anchors];
    for c in 0..classes {
        let scores = &data[(4 + c) * anchors..(5 + c) * anchors];
        for (a, &s) in scores.iter().enumerate() {
            if s > best[a] {
                best[a] = s;
                best_class[a] = c as u32;
            }
        }
    }
    let coord = |k: usize, a: usize| data[k * anchors + a];
    for a in 0..anchors {
        if best[a] >= threshold {
            let bbox = xywh([coord(0, a), coord(1, a), coord(2, a), coord(3, a)]);
            push(out, bbox, best[a], best_class[a] as f32, threshold);
        }
    }
}

/// `[Q, 4 + classes]` rows: normalized `cx, cy, w, h`, then per-class scores; each query's best.
fn detr_scores(data: &[f32], classes: usize, threshold: f32, out: &mut Vec<Candidate>) {
    for r in data.chunks_exact(4 + classes) {
        let (mut score, mut class) = (f32::NEG_INFINITY, 0usize);
        for (c, &s) in r[4..].iter().enumerate() {
            if s > score {
                (score, class) = (s, c);
            }
        }
        push(out, xywh([r[0], r[1], r[2], r[3]]), score, class as f32, threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::spec::Frame;

    fn run(head: &Head, outputs: &[(Vec<usize>, Vec<f32>)], threshold: f32) -> Vec<Candidate> {
        let views: Vec<Output<'_>> = outputs.iter().map(|(d, v)| Output { dims: d, data: v }).collect();
        let mut out = vec![];
        decode(head, &views, threshold, &mut out).unwrap();
        out
    }

    fn b(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    #[test]
    fn rows_are_corners_in_input_pixels() {
        let head = Head::Rows { output: "o".into() };
        #[rustfmt::skip]
        let rows = vec![
            10.0, 20.0, 30.0, 40.0, 0.9, 2.0,
            0.0, 0.0, 5.0, 5.0, 0.1, 1.0,     // below the threshold
            1.0, 1.0, 2.0, 2.0, f32::NAN, 0.0, // NaN score
            1.0, 1.0, 2.0, 2.0, 0.8, -1.0,     // negative class (padding rows)
        ];
        let c = run(&head, &[(vec![1, 4, 6], rows)], 0.25);
        assert_eq!(c, vec![Candidate { bbox: b(10.0, 20.0, 30.0, 40.0), score: 0.9, class: 2 }]);
    }

    #[test]
    fn anchors_take_each_anchors_best_class_in_channel_major_order() {
        let head = Head::Anchors { output: "o".into(), classes: 2 };
        // Three anchors; rows: cx, cy, w, h, class 0, class 1.
        #[rustfmt::skip]
        let t = vec![
            100.0, 50.0, 10.0,   // cx
            100.0, 60.0, 10.0,   // cy
            20.0, 10.0, 4.0,     // w
            40.0, 20.0, 4.0,     // h
            0.1, 0.7, 0.2,       // class 0
            0.9, 0.3, 0.2,       // class 1
        ];
        let c = run(&head, &[(vec![1, 6, 3], t)], 0.25);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], Candidate { bbox: b(90.0, 80.0, 110.0, 120.0), score: 0.9, class: 1 });
        assert_eq!(c[1], Candidate { bbox: b(45.0, 50.0, 55.0, 70.0), score: 0.7, class: 0 });
    }

    #[test]
    fn detr_rows_are_normalized_centres() {
        let head = Head::Detr { output: "o".into() };
        let c = run(&head, &[(vec![1, 2, 6], vec![0.5, 0.5, 0.2, 0.4, 0.6, 3.0, 0.1, 0.1, 0.1, 0.1, 0.2, 0.0])], 0.25);
        assert_eq!(c.len(), 1);
        assert!((c[0].bbox.x1 - 0.4).abs() < 1e-6 && (c[0].bbox.y2 - 0.7).abs() < 1e-6, "{c:?}");
        assert_eq!(c[0].class, 3);
    }

    #[test]
    fn detr_scores_take_the_best_class_per_query() {
        let head = Head::DetrScores { output: "o".into(), classes: 3 };
        #[rustfmt::skip]
        let t = vec![
            0.5, 0.5, 1.0, 1.0, 0.1, 0.8, 0.3,
            0.5, 0.5, 1.0, 1.0, 0.1, 0.1, 0.2,
        ];
        let c = run(&head, &[(vec![1, 2, 7], t)], 0.25);
        assert_eq!(c, vec![Candidate { bbox: b(0.0, 0.0, 1.0, 1.0), score: 0.8, class: 1 }]);
    }

    #[test]
    fn detr_split_pairs_labels_boxes_and_scores() {
        let head =
            Head::DetrSplit { labels: "l".into(), boxes: "b".into(), scores: "s".into(), frame: Frame::OriginalPixels };
        let outputs = [
            (vec![1, 2], vec![7.0, 1.0]),
            (vec![1, 2, 4], vec![1.0, 2.0, 30.0, 40.0, 5.0, 5.0, 6.0, 6.0]),
            (vec![1, 2], vec![0.95, 0.05]),
        ];
        let c = run(&head, &outputs, 0.25);
        assert_eq!(c, vec![Candidate { bbox: b(1.0, 2.0, 30.0, 40.0), score: 0.95, class: 7 }]);
    }

    #[test]
    fn tf_od_boxes_are_y_first_and_num_detections_cuts_the_padding() {
        let head = Head::TfOd { boxes: "b".into(), scores: "s".into(), classes: "c".into(), num: Some("n".into()) };
        let outputs = [
            (vec![1, 3, 4], vec![0.1, 0.2, 0.5, 0.6, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]),
            (vec![1, 3], vec![0.9, 0.8, 0.99]),
            (vec![1, 3], vec![18.0, 1.0, 5.0]),
            (vec![1], vec![2.0]),
        ];
        let c = run(&head, &outputs, 0.25);
        assert_eq!(c.len(), 2, "the third row is past num_detections");
        assert_eq!(c[0], Candidate { bbox: b(0.2, 0.1, 0.6, 0.5), score: 0.9, class: 18 });
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors_not_panics() {
        let mut out = vec![];
        let head = Head::Anchors { output: "o".into(), classes: 80 };
        let data = vec![0.0; 10];
        let e = decode(&head, &[Output { dims: &[1, 5, 2], data: &data }], 0.25, &mut out).unwrap_err();
        assert!(e.to_string().contains("[1, 5, 2]"), "{e}");
        let rows = Head::Rows { output: "o".into() };
        assert!(decode(&rows, &[Output { dims: &[1, 2, 7], data: &data }], 0.25, &mut out).is_err());
        assert!(decode(&rows, &[], 0.25, &mut out).is_err());
        // Claimed dims larger than the data: refused, not indexed.
        assert!(decode(&rows, &[Output { dims: &[1, 100, 6], data: &data }], 0.25, &mut out).is_err());
    }
}
