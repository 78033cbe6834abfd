//! Output heads: each a pure function from the model's output tensors to candidate boxes in the
//! head's frame ([`Frame`]), with no ONNX Runtime in them (unit-tested on hand-made tensors).
//! [`super::postprocess`] then applies NMS, maps the boxes back to the image and names them.

use serde::{Deserialize, Serialize};

use super::spec::{Extra, Head};

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
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Candidate {
    /// Box (x1, y1, x2, y2); for a rotated box, the box before its rotation about its centre.
    pub bbox: BBox,
    /// Confidence.
    pub score: f32,
    /// Class id.
    pub class: u32,
    /// The anchor or row it came from: where its task channels (mask coefficients, keypoints)
    /// are read after NMS.
    pub index: u32,
    /// Rotation in radians about the box's centre (oriented boxes; 0 otherwise).
    pub angle: f32,
}

impl Default for BBox {
    fn default() -> Self {
        BBox { x1: 0.0, y1: 0.0, x2: 0.0, y2: 0.0 }
    }
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
        Head::Rows { extra, .. } => {
            let t = get(0)?;
            let len = 6 + extra.channels();
            let data = rows_of(t, len).ok_or_else(|| bad(0, "expected [1, N, 6 + task channels]"))?;
            if *extra == Extra::Angle {
                for (i, r) in data.chunks_exact(len).enumerate() {
                    let bbox = xywh([r[0], r[1], r[2], r[3]]);
                    push_at(out, bbox, r[4], r[5], threshold, i, r[6]);
                }
            } else {
                for (i, r) in data.chunks_exact(len).enumerate() {
                    push_at(out, [r[0], r[1], r[2], r[3]], r[4], r[5], threshold, i, 0.0);
                }
            }
        }
        Head::Detr { .. } => {
            let t = get(0)?;
            rows(rows_of(t, 6).ok_or_else(|| bad(0, "expected [1, Q, 6]"))?, threshold, true, out);
        }
        Head::Anchors { classes, extra, .. } => {
            let t = get(0)?;
            let (c, a) = match t.dims {
                [1, c, a] | [c, a] if *c == 4 + classes + extra.channels() => (*c, *a),
                _ => return Err(bad(0, "expected [1, 4 + classes + task channels, anchors]")),
            };
            let data = t.data.get(..c * a).ok_or_else(|| bad(0, "fewer elements than its shape"))?;
            let angles = (*extra == Extra::Angle).then(|| &data[(4 + classes) * a..(5 + classes) * a]);
            anchors(data, *classes, a, threshold, angles, out);
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
                push_at(
                    out,
                    [b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]],
                    scores.data[i],
                    labels.data[i],
                    threshold,
                    i,
                    0.0,
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
                push_at(out, [r[1], r[0], r[3], r[2]], scores.data[i], classes.data[i], threshold, i, 0.0);
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

fn push_at(
    out: &mut Vec<Candidate>,
    [x1, y1, x2, y2]: [f32; 4],
    score: f32,
    class: f32,
    threshold: f32,
    index: usize,
    angle: f32,
) {
    // NaN scores and classes fail these comparisons and are skipped.
    let keep = score >= threshold && class >= 0.0 && class < u32::MAX as f32;
    if !keep {
        return;
    }
    if ![x1, y1, x2, y2, angle].iter().all(|v| v.is_finite()) {
        return;
    }
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    out.push(Candidate { bbox: BBox { x1, y1, x2, y2 }, score, class: class.round() as u32, index, angle });
}

/// `x1, y1, x2, y2, score, class` rows, or `cx, cy, w, h, score, class` (`centre`).
fn rows(data: &[f32], threshold: f32, centre: bool, out: &mut Vec<Candidate>) {
    for (i, r) in data.chunks_exact(6).enumerate() {
        let bbox = if centre { xywh([r[0], r[1], r[2], r[3]]) } else { [r[0], r[1], r[2], r[3]] };
        push_at(out, bbox, r[4], r[5], threshold, i, 0.0);
    }
}

fn xywh([cx, cy, w, h]: [f32; 4]) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// `[4 + classes, anchors]`, channel-major: each anchor's best class (the first of equal
/// scores), kept when it reaches `threshold`. Channels are walked in memory order.
fn anchors(
    data: &[f32],
    classes: usize,
    anchors: usize,
    threshold: f32,
    angles: Option<&[f32]>,
    out: &mut Vec<Candidate>,
) {
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
            let angle = angles.map_or(0.0, |t| t[a]);
            push_at(out, bbox, best[a], best_class[a] as f32, threshold, a, angle);
        }
    }
}

/// `[Q, 4 + classes]` rows: normalized `cx, cy, w, h`, then per-class scores; each query's best.
fn detr_scores(data: &[f32], classes: usize, threshold: f32, out: &mut Vec<Candidate>) {
    for (i, r) in data.chunks_exact(4 + classes).enumerate() {
        let (mut score, mut class) = (f32::NEG_INFINITY, 0usize);
        for (c, &s) in r[4..].iter().enumerate() {
            if s > score {
                (score, class) = (s, c);
            }
        }
        push_at(out, xywh([r[0], r[1], r[2], r[3]]), score, class as f32, threshold, i, 0.0);
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

    /// Box, score and class only (most tests compare those).
    fn plain(v: Vec<Candidate>) -> Vec<Candidate> {
        v.into_iter().map(|c| Candidate { index: 0, angle: 0.0, ..c }).collect()
    }

    fn b(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    #[test]
    fn rows_are_corners_in_input_pixels() {
        let head = Head::Rows { output: "o".into(), extra: Extra::None };
        #[rustfmt::skip]
        let rows = vec![
            10.0, 20.0, 30.0, 40.0, 0.9, 2.0,
            0.0, 0.0, 5.0, 5.0, 0.1, 1.0,     // below the threshold
            1.0, 1.0, 2.0, 2.0, f32::NAN, 0.0, // NaN score
            1.0, 1.0, 2.0, 2.0, 0.8, -1.0,     // negative class (padding rows)
        ];
        let c = run(&head, &[(vec![1, 4, 6], rows)], 0.25);
        assert_eq!(
            plain(c.clone()),
            vec![Candidate { bbox: b(10.0, 20.0, 30.0, 40.0), score: 0.9, class: 2, ..Default::default() }]
        );
    }

    #[test]
    fn anchors_take_each_anchors_best_class_in_channel_major_order() {
        let head = Head::Anchors { output: "o".into(), classes: 2, extra: Extra::None };
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
        assert_eq!(
            plain(c.clone())[0],
            Candidate { bbox: b(90.0, 80.0, 110.0, 120.0), score: 0.9, class: 1, ..Default::default() }
        );
        assert_eq!(
            plain(c.clone())[1],
            Candidate { bbox: b(45.0, 50.0, 55.0, 70.0), score: 0.7, class: 0, ..Default::default() }
        );
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
        assert_eq!(
            plain(c.clone()),
            vec![Candidate { bbox: b(0.0, 0.0, 1.0, 1.0), score: 0.8, class: 1, ..Default::default() }]
        );
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
        assert_eq!(
            plain(c.clone()),
            vec![Candidate { bbox: b(1.0, 2.0, 30.0, 40.0), score: 0.95, class: 7, ..Default::default() }]
        );
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
        assert_eq!(
            plain(c.clone())[0],
            Candidate { bbox: b(0.2, 0.1, 0.6, 0.5), score: 0.9, class: 18, ..Default::default() }
        );
    }

    #[test]
    fn task_channels_follow_the_classes_and_the_index_finds_them() {
        // OBB anchors, one class: rows cx, cy, w, h, score, angle; two anchors.
        let head = Head::Anchors { output: "o".into(), classes: 1, extra: Extra::Angle };
        #[rustfmt::skip]
        let t = vec![
            10.0, 50.0,  // cx
            10.0, 40.0,  // cy
            8.0, 20.0,   // w
            4.0, 6.0,    // h
            0.1, 0.9,    // score
            0.0, 1.2,    // angle
        ];
        let c = run(&head, &[(vec![1, 6, 2], t)], 0.25);
        assert_eq!(c, vec![Candidate { bbox: b(40.0, 37.0, 60.0, 43.0), score: 0.9, class: 0, index: 1, angle: 1.2 }]);
        // OBB rows are centres too, the angle last.
        let head = Head::Rows { output: "o".into(), extra: Extra::Angle };
        let c = run(&head, &[(vec![1, 1, 7], vec![50.0, 40.0, 20.0, 6.0, 0.8, 1.0, -0.5])], 0.25);
        assert_eq!(c, vec![Candidate { bbox: b(40.0, 37.0, 60.0, 43.0), score: 0.8, class: 1, index: 0, angle: -0.5 }]);
        // Pose rows: corners, score, class, then 2 keypoints of 3; row 1 is the one kept.
        let head = Head::Rows { output: "o".into(), extra: Extra::Keypoints { count: 2, dims: 3 } };
        let mut rows = vec![0.0; 24];
        rows[12..18].copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 0.9, 0.0]);
        let c = run(&head, &[(vec![1, 2, 12], rows.clone())], 0.25);
        assert_eq!((c.len(), c[0].index), (1, 1));
        // The wrong channel count for the task: an error naming the shape.
        let mut out = vec![];
        let e = decode(&head, &[Output { dims: &[1, 2, 11], data: &rows }], 0.25, &mut out).unwrap_err();
        assert!(e.to_string().contains("[1, 2, 11]"), "{e}");
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors_not_panics() {
        let mut out = vec![];
        let head = Head::Anchors { output: "o".into(), classes: 80, extra: Extra::None };
        let data = vec![0.0; 10];
        let e = decode(&head, &[Output { dims: &[1, 5, 2], data: &data }], 0.25, &mut out).unwrap_err();
        assert!(e.to_string().contains("[1, 5, 2]"), "{e}");
        let rows = Head::Rows { output: "o".into(), extra: Extra::None };
        assert!(decode(&rows, &[Output { dims: &[1, 2, 7], data: &data }], 0.25, &mut out).is_err());
        assert!(decode(&rows, &[], 0.25, &mut out).is_err());
        // Claimed dims larger than the data: refused, not indexed.
        assert!(decode(&rows, &[Output { dims: &[1, 100, 6], data: &data }], 0.25, &mut out).is_err());
    }
}
