//! What a model is, read from the model itself: [`ModelSpec`] describes its input (layout, size,
//! element type, value range, channel order, resize), its output head, its class names and the
//! thresholds and NMS its family is used with. [`probe`] makes one from the graph's inputs and
//! outputs and its metadata (Ultralytics writes `names`, `imgsz`, `stride`, `task`, `head`,
//! `end2end`, `args`), before any session is built; `MODEL_*` settings override what it finds.
//!
//! Families and their defaults (each chosen to give the reference implementation's own results):
//!
//! | format | outputs | boxes | resize | range | NMS | score / IoU |
//! |---|---|---|---|---|---|---|
//! | `anchors` (Ultralytics YOLOv5u…YOLO26 default export) | `[1, 4+nc, A]` | cx, cy, w, h input px | letterbox 114, centred | 0..1 RGB NCHW | per class | 0.25 / 0.7 |
//! | `rows` (Ultralytics end-to-end or `nms=True` export) | `[1, N, 6]` | x1, y1, x2, y2 input px | letterbox 114 | 0..1 | none | 0.25 |
//! | `rows` without Ultralytics metadata (the bundled CenterNet) | `[1, N, 6]` | input px | stretch | NHWC: 0..255 | class-agnostic | 0.3 / 0.4 |
//! | `detr` (Ultralytics RT-DETR) | `[1, Q, 6]` | cx, cy, w, h normalized | stretch | 0..1 | none | 0.25 |
//! | `detr-scores` (older RT-DETR exports) | `[1, Q, 4+nc]` | cx, cy, w, h normalized | stretch | 0..1 | none | 0.25 |
//! | `detr-split` (RT-DETRv2, D-FINE, DEIM) | `labels`, `boxes`, `scores` | x1, y1, x2, y2 (original px with an `orig_target_sizes` input, else normalized) | stretch | 0..1 | none | 0.25 |
//! | `tf-od` (TF Object Detection API via tf2onnx) | `detection_boxes`, `_scores`, `_classes`, `num_detections` | y1, x1, y2, x2 normalized | uint8, any size: none | 0..255 | none | 0.25 |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::onnx::{Dim, ModelInfo, Tensor, dtype};

/// The IDCT a JPEG is decoded with: the one the model's reference implementation decodes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idct {
    /// libjpeg's accurate integer IDCT (OpenCV's and PIL's default).
    #[default]
    Accurate,
    /// libjpeg's fast integer IDCT (TensorFlow's `decode_jpeg` default).
    Fast,
}

/// How the picture is laid out in the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[1, 3, H, W]`.
    Nchw,
    /// `[1, H, W, 3]`.
    Nhwc,
}

/// The input tensor's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    /// float32, `(pixel × scale − mean) / std`.
    F32,
    /// uint8, the pixel values.
    U8,
}

/// How an image becomes the input's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// To the input size on both axes (aspect ratio not kept).
    Stretch,
    /// Scaled to fit, aspect ratio kept, the rest filled with `pad`; `centred` splits the padding
    /// as Ultralytics' `LetterBox` does (rounded `dh/2 ∓ 0.1`). With `stride` (a model with a
    /// dynamic input), the padding is only what makes each side a multiple of `stride`, as the
    /// reference predictor does for such models.
    Letterbox {
        /// The padding value (all channels).
        pad: u8,
        /// Padding split between both sides (else right and bottom only).
        centred: bool,
        /// Minimal padding up to a multiple of this (dynamic inputs), else up to the input size.
        stride: Option<u32>,
    },
    /// The image as it is (a dynamic input that takes any size, like the TF Object Detection
    /// API's graphs).
    None,
}

/// The resampling filter of the resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Bilinear interpolation between the two nearest pixels (OpenCV's `INTER_LINEAR`).
    Linear,
    /// Bilinear with the support widened when shrinking (PIL's `BILINEAR`, antialiased).
    Antialiased,
}

/// The model's input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// The image input's name.
    pub name: String,
    /// Layout.
    pub layout: Layout,
    /// Element type.
    pub dtype: InputType,
    /// Width and height the image is brought to (for [`Resize::None`], the largest it may be fed
    /// at is the image limit instead).
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Whether the input's height and width are dynamic.
    pub dynamic: bool,
    /// Resize.
    pub resize: Resize,
    /// Resampling filter.
    pub filter: Filter,
    /// Multiplies the 0..255 pixel values (1/255 for a 0..1 input).
    pub scale: f32,
    /// Subtracted after scaling, per channel in the model's order.
    pub mean: [f32; 3],
    /// Divides after the mean, per channel in the model's order.
    pub std: [f32; 3],
    /// BGR instead of RGB.
    pub bgr: bool,
    /// An int64 `[1, 2]` input that takes the original image's width and height
    /// (`orig_target_sizes` of RT-DETRv2 / D-FINE / DEIM exports).
    pub sizes_input: Option<String>,
    /// The JPEG IDCT of the family's reference (TensorFlow decodes with the fast one).
    pub idct: Idct,
}

/// The frame the head's boxes come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Pixels of the input tensor.
    InputPixels,
    /// 0..1 of the input tensor's width and height.
    Normalized,
    /// Pixels of the original image.
    OriginalPixels,
}

/// What an Ultralytics task adds to each detection, in the channels after the class scores
/// (anchors) or after `score, class` (rows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Extra {
    /// Nothing: a detector.
    #[default]
    None,
    /// `segment`: `channels` mask coefficients, and a `[1, channels, H/4, W/4]` prototypes output.
    Mask {
        /// The prototypes output.
        protos: String,
        /// Coefficients per detection (32).
        channels: usize,
    },
    /// `pose`: `count` keypoints of `dims` values (`x, y` and, for 3, a confidence).
    Keypoints {
        /// Keypoints per detection.
        count: usize,
        /// 2 or 3.
        dims: usize,
    },
    /// `obb`: one rotation angle in radians; the box is then `cx, cy, w, h` in rows too.
    Angle,
}

impl Extra {
    /// Channels it takes per detection.
    pub fn channels(&self) -> usize {
        match self {
            Extra::None => 0,
            Extra::Mask { channels, .. } => *channels,
            Extra::Keypoints { count, dims } => count * dims,
            Extra::Angle => 1,
        }
    }

    /// The Ultralytics task it is (`detect` for none).
    pub fn task(&self) -> &'static str {
        match self {
            Extra::None => "detect",
            Extra::Mask { .. } => "segment",
            Extra::Keypoints { .. } => "pose",
            Extra::Angle => "obb",
        }
    }
}

/// The model's output head: which outputs hold the detections and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// `[1, N, 6 + extra]` rows `x1, y1, x2, y2, score, class` in input pixels (`cx, cy, w, h`
    /// for [`Extra::Angle`]), then the task's channels.
    Rows {
        /// Output name.
        output: String,
        /// The task's channels.
        extra: Extra,
    },
    /// `[1, 4 + nc + extra, A]`: per anchor `cx, cy, w, h` in input pixels, then `nc` class
    /// scores, then the task's channels.
    Anchors {
        /// Output name.
        output: String,
        /// Class count.
        classes: usize,
        /// The task's channels.
        extra: Extra,
    },
    /// `[1, Q, 6]` rows `cx, cy, w, h` (0..1), score, class.
    Detr {
        /// Output name.
        output: String,
    },
    /// `[1, Q, 4 + nc]`: `cx, cy, w, h` (0..1), then `nc` class scores.
    DetrScores {
        /// Output name.
        output: String,
        /// Class count.
        classes: usize,
    },
    /// Three outputs: `labels [1, Q]`, `boxes [1, Q, 4]` (x1, y1, x2, y2), `scores [1, Q]`.
    DetrSplit {
        /// Labels output.
        labels: String,
        /// Boxes output.
        boxes: String,
        /// Scores output.
        scores: String,
        /// The boxes' frame.
        frame: Frame,
    },
    /// TF Object Detection API: `detection_boxes [1, N, 4]` (y1, x1, y2, x2, 0..1),
    /// `detection_scores [1, N]`, `detection_classes [1, N]` (1-based ids), `num_detections [1]`.
    TfOd {
        /// Boxes output.
        boxes: String,
        /// Scores output.
        scores: String,
        /// Classes output.
        classes: String,
        /// Count output (rows past it are padding).
        num: Option<String>,
    },
}

/// The output formats objdet knows, by `MODEL_FORMAT` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// [`Head::Rows`].
    Rows,
    /// [`Head::Anchors`].
    Anchors,
    /// [`Head::Detr`].
    Detr,
    /// [`Head::DetrScores`].
    DetrScores,
    /// [`Head::DetrSplit`].
    DetrSplit,
    /// [`Head::TfOd`].
    TfOd,
}

impl Format {
    /// Every format, in the order `auto` tries them.
    pub const ALL: [Format; 6] =
        [Format::TfOd, Format::DetrSplit, Format::Detr, Format::DetrScores, Format::Rows, Format::Anchors];

    /// The `MODEL_FORMAT` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rows => "rows",
            Format::Anchors => "anchors",
            Format::Detr => "detr",
            Format::DetrScores => "detr-scores",
            Format::DetrSplit => "detr-split",
            Format::TfOd => "tf-od",
        }
    }

    /// The format of a `MODEL_FORMAT` name.
    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// "rows, anchors, …" for messages.
    pub fn names() -> String {
        Format::ALL.map(Format::as_str).join(", ")
    }
}

impl Head {
    /// The format of this head.
    pub fn format(&self) -> Format {
        match self {
            Head::Rows { .. } => Format::Rows,
            Head::Anchors { .. } => Format::Anchors,
            Head::Detr { .. } => Format::Detr,
            Head::DetrScores { .. } => Format::DetrScores,
            Head::DetrSplit { .. } => Format::DetrSplit,
            Head::TfOd { .. } => Format::TfOd,
        }
    }

    /// The task's channels after each detection.
    pub fn extra(&self) -> &Extra {
        match self {
            Head::Rows { extra, .. } | Head::Anchors { extra, .. } => extra,
            _ => &Extra::None,
        }
    }

    /// The outputs the head reads, in the order [`super::heads::decode`] takes them (a
    /// segmenter's prototypes last).
    pub fn outputs(&self) -> Vec<&str> {
        match self {
            Head::Rows { output, extra } | Head::Anchors { output, extra, .. } => match extra {
                Extra::Mask { protos, .. } => vec![output, protos],
                _ => vec![output],
            },
            Head::Detr { output } => vec![output],
            Head::DetrScores { output, .. } => vec![output],
            Head::DetrSplit { labels, boxes, scores, .. } => vec![labels, boxes, scores],
            Head::TfOd { boxes, scores, classes, num } => {
                let mut v = vec![boxes.as_str(), scores, classes];
                v.extend(num.as_deref());
                v
            }
        }
    }

    /// The frame the head's boxes are in.
    pub fn frame(&self) -> Frame {
        match self {
            Head::Rows { .. } | Head::Anchors { .. } => Frame::InputPixels,
            Head::Detr { .. } | Head::DetrScores { .. } | Head::TfOd { .. } => Frame::Normalized,
            Head::DetrSplit { frame, .. } => *frame,
        }
    }

    /// The class count the output's shape declares, if it does.
    pub fn classes(&self) -> Option<usize> {
        match self {
            Head::Anchors { classes, .. } | Head::DetrScores { classes, .. } => Some(*classes),
            _ => None,
        }
    }
}

/// Non-maximum suppression after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nms {
    /// None (the graph selects its boxes itself).
    None,
    /// Among boxes of the same class.
    PerClass,
    /// Among all boxes whatever their class.
    Agnostic,
}

impl Nms {
    /// The `MODEL_NMS` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Nms::None => "none",
            Nms::PerClass => "class",
            Nms::Agnostic => "agnostic",
        }
    }
}

/// Where the class names came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamesSource {
    /// The model's metadata (`names`).
    Metadata,
    /// A labels file (`LABELS_PATH`, or `<model>.labels.txt` beside the model).
    LabelsFile,
    /// The COCO-91 label map of the TF Object Detection API.
    Coco91,
    /// None found: `class_<i>`.
    Generated,
}

impl NamesSource {
    /// For `/healthz` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NamesSource::Metadata => "model metadata",
            NamesSource::LabelsFile => "labels file",
            NamesSource::Coco91 => "COCO-91 label map",
            NamesSource::Generated => "class_<i>",
        }
    }
}

/// Everything objdet needs to know to run a detector.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The model file's name (for `/healthz`, the page and logs).
    pub file: String,
    /// Who made it, when the metadata says (`Ultralytics 8.4.1`).
    pub producer: Option<String>,
    /// Input.
    pub input: InputSpec,
    /// Output head.
    pub head: Head,
    /// Class names; class id `i` is `names[i]` (ids past the end are named `class_<i>`).
    pub names: Arc<[String]>,
    /// Where the names came from.
    pub names_source: NamesSource,
    /// NMS after the head.
    pub nms: Nms,
    /// Detections scoring below are dropped.
    pub score_threshold: f32,
    /// NMS overlap threshold.
    pub nms_iou: f32,
    /// At most this many objects per image (after NMS).
    pub max_detections: usize,
    /// Names of a pose model's keypoints (the model's `kpt_names`, else COCO's 17 for a
    /// 17-keypoint model, else none).
    pub keypoint_names: Arc<[String]>,
}

impl ModelSpec {
    /// The name of class `id`.
    pub fn label(&self, id: u32) -> String {
        self.names.get(id as usize).cloned().unwrap_or_else(|| format!("class_{id}"))
    }

    /// "yolo11n.onnx: anchors, 640x640 letterbox, 80 classes" for logs and `--help`.
    pub fn summary(&self) -> String {
        let (w, h) = (self.input.width, self.input.height);
        let input = match self.input.resize {
            Resize::Stretch => format!("{w}x{h} stretch"),
            Resize::Letterbox { stride: Some(_), .. } => format!("{w}x{h} letterbox (minimal padding)"),
            Resize::Letterbox { .. } => format!("{w}x{h} letterbox"),
            Resize::None => "any size (the photo's own)".to_string(),
        };
        format!(
            "{}: {}, {input}, {} classes ({}), NMS {}, score >= {}",
            self.file,
            self.head.format().as_str(),
            self.head.classes().unwrap_or(self.names.len()),
            self.names_source.as_str(),
            self.nms.as_str(),
            self.score_threshold
        )
    }
}

/// Settings that override what [`probe`] reads from the model (`MODEL_*`, `LABELS_PATH`,
/// `SCORE_THRESHOLD`, `NMS_IOU`, `MAX_DETECTIONS`); `None` = the model's or its family's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `MODEL_FORMAT` (`auto`: `None`).
    pub format: Option<Format>,
    /// `MODEL_INPUT_SIZE`: width and height for a dynamic input.
    pub input_size: Option<(u32, u32)>,
    /// `MODEL_RESIZE`: `stretch`, `letterbox` or `none`.
    pub resize: Option<ResizeKind>,
    /// `MODEL_PAD_VALUE`: the letterbox padding value.
    pub pad: Option<u8>,
    /// `MODEL_INPUT_RANGE`: `0..1` (scale 1/255) or `0..255` (scale 1).
    pub scale: Option<f32>,
    /// `MODEL_MEAN`: three values, in the input range.
    pub mean: Option<[f32; 3]>,
    /// `MODEL_STD`: three values, in the input range.
    pub std: Option<[f32; 3]>,
    /// `MODEL_CHANNELS`: `rgb` or `bgr`.
    pub bgr: Option<bool>,
    /// `MODEL_NMS`: `none`, `class` or `agnostic`.
    pub nms: Option<Nms>,
    /// `LABELS_PATH`.
    pub labels_path: Option<PathBuf>,
    /// `SCORE_THRESHOLD`.
    pub score_threshold: Option<f32>,
    /// `NMS_IOU`.
    pub nms_iou: Option<f32>,
    /// `MAX_DETECTIONS`.
    pub max_detections: Option<usize>,
}

/// `MODEL_RESIZE` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeKind {
    /// [`Resize::Stretch`].
    Stretch,
    /// [`Resize::Letterbox`].
    Letterbox,
    /// [`Resize::None`].
    None,
}

/// Why a model cannot be run as a detector.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The graph is not one objdet can interpret.
    #[error(
        "{reason}; the model has inputs [{inputs}] and outputs [{outputs}]; objdet runs detectors with outputs in one of the formats {} (MODEL_FORMAT)",
        Format::names()
    )]
    Unsupported {
        /// What does not fit.
        reason: String,
        /// The inputs seen.
        inputs: String,
        /// The outputs seen.
        outputs: String,
    },
    /// The labels file cannot be read.
    #[error("cannot read the labels {path} (LABELS_PATH)")]
    Labels {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The labels file's class count is not the model's.
    #[error("the labels file {path} names {found} classes but the model has {expected} (LABELS_PATH)")]
    LabelsMismatch {
        /// The file.
        path: PathBuf,
        /// Lines in the file.
        found: usize,
        /// Classes of the model.
        expected: usize,
    },
    /// The labels file is empty.
    #[error("the labels file {0} is empty (LABELS_PATH)")]
    NoLabels(PathBuf),
    /// A setting contradicts the model.
    #[error("{0}")]
    Setting(String),
}

/// The default input size of a model with a dynamic input and no `imgsz` in its metadata.
pub const DEFAULT_INPUT_SIZE: u32 = 640;
/// The default for `MAX_DETECTIONS` (Ultralytics' `max_det`).
pub const DEFAULT_MAX_DETECTIONS: usize = 300;

/// The labels file objdet looks for beside a model when neither its metadata nor `LABELS_PATH`
/// names the classes: `<model>.labels.txt`.
pub fn sidecar_labels(model: &Path) -> PathBuf {
    model.with_extension("labels.txt")
}

/// Describes the model at `model_path` from its interface `info`, with `overrides`.
pub fn probe(model_path: &Path, info: &ModelInfo, o: &Overrides) -> Result<ModelSpec, SpecError> {
    let unsupported = |reason: String| SpecError::Unsupported {
        reason,
        inputs: info.inputs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        outputs: info.outputs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    };
    let mut meta = Meta::read(info);
    meta.forced = o.format;
    meta.extra = task_extra(info, &meta).map_err(unsupported)?;

    // The image input: the rank-4 one; an int64 [N, 2] one takes the original size.
    let mut image = None;
    let mut sizes_input = None;
    for input in &info.inputs {
        match input.dims.len() {
            4 if image.is_none() => image = Some(input),
            2 if input.elem_type == dtype::INT64 => sizes_input = Some(input.name.clone()),
            _ => return Err(unsupported(format!("input {input} is neither an image nor an original-size input"))),
        }
    }
    let image = image.ok_or_else(|| unsupported("no image input (a rank-4 tensor)".into()))?;
    let layout = match (image.dims[1].fixed(), image.dims[3].fixed()) {
        (Some(3), _) => Layout::Nchw,
        (_, Some(3)) => Layout::Nhwc,
        (None, None) => Layout::Nchw,
        _ => return Err(unsupported(format!("input {image} does not have 3 colour channels"))),
    };
    let input_type = match image.elem_type {
        dtype::FLOAT => InputType::F32,
        dtype::UINT8 => InputType::U8,
        t => return Err(unsupported(format!("input {} is {}, not float32 or uint8", image.name, dtype::name(t)))),
    };
    let (h_dim, w_dim) = match layout {
        Layout::Nchw => (&image.dims[2], &image.dims[3]),
        Layout::Nhwc => (&image.dims[1], &image.dims[2]),
    };

    let head = match o.format {
        Some(f) => find_head(f, info, &meta, sizes_input.is_some())
            .ok_or_else(|| unsupported(format!("no output fits MODEL_FORMAT={}", f.as_str())))?,
        None => Format::ALL
            .into_iter()
            .find_map(|f| find_head(f, info, &meta, sizes_input.is_some()))
            .ok_or_else(|| unsupported("no output in a known detection format".into()))?,
    };
    if let (Some(n), Some(c)) = (meta.names.as_ref().map(Vec::len), head.classes())
        && n != c
    {
        return Err(unsupported(format!("the metadata names {n} classes but the output has {c}")));
    }

    // Size: the input's own, else MODEL_INPUT_SIZE, the metadata's imgsz, or 640.
    let dynamic = h_dim.fixed().is_none() || w_dim.fixed().is_none();
    let chosen = o.input_size.or(meta.imgsz).unwrap_or((DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE));
    let (width, height) = match (w_dim.fixed(), h_dim.fixed()) {
        (Some(w), Some(h)) => {
            let fixed = (u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX));
            if let Some(asked) = o.input_size
                && asked != fixed
            {
                return Err(SpecError::Setting(format!(
                    "MODEL_INPUT_SIZE={}x{} but the model's input is fixed at {}x{}",
                    asked.0, asked.1, fixed.0, fixed.1
                )));
            }
            fixed
        }
        (w, h) => (
            w.map_or(chosen.0, |w| u32::try_from(w).unwrap_or(u32::MAX)),
            h.map_or(chosen.1, |h| u32::try_from(h).unwrap_or(u32::MAX)),
        ),
    };
    if !(1..=8192).contains(&width) || !(1..=8192).contains(&height) {
        return Err(unsupported(format!("an input of {width}x{height} pixels is not an image size objdet feeds")));
    }

    let format = head.format();
    let ultralytics = meta.ultralytics;
    // The family's preprocessing.
    let letterbox = Resize::Letterbox {
        pad: 114,
        centred: true,
        stride: (ultralytics && dynamic).then_some(meta.stride.unwrap_or(32)),
    };
    let (default_resize, filter) = match format {
        Format::Anchors | Format::Rows if ultralytics => (letterbox, Filter::Linear),
        Format::Anchors => (letterbox, Filter::Linear),
        Format::Detr | Format::DetrScores => (Resize::Stretch, Filter::Linear),
        Format::TfOd if dynamic => (Resize::None, Filter::Antialiased),
        _ => (Resize::Stretch, Filter::Antialiased),
    };
    let resize = match o.resize {
        None => default_resize,
        Some(ResizeKind::Stretch) => Resize::Stretch,
        Some(ResizeKind::Letterbox) => match default_resize {
            Resize::Letterbox { .. } => default_resize,
            _ => Resize::Letterbox { pad: 114, centred: true, stride: None },
        },
        Some(ResizeKind::None) if dynamic => Resize::None,
        Some(ResizeKind::None) => {
            return Err(SpecError::Setting("MODEL_RESIZE=none needs a model whose input size is dynamic".into()));
        }
    };
    let resize = match (resize, o.pad) {
        (Resize::Letterbox { centred, stride, .. }, Some(pad)) => Resize::Letterbox { pad, centred, stride },
        (r, _) => r,
    };
    let default_scale = match (input_type, layout) {
        (InputType::U8, _) => 1.0,
        // Float NHWC graphs without metadata come from TensorFlow, which mostly takes 0..255 (the
        // bundled CenterNet does); NCHW graphs from PyTorch take 0..1.
        (InputType::F32, Layout::Nhwc) if !ultralytics => 1.0,
        (InputType::F32, _) => 1.0 / 255.0,
    };
    if input_type == InputType::U8 && (o.scale.is_some_and(|s| s != 1.0) || o.mean.is_some() || o.std.is_some()) {
        return Err(SpecError::Setting(
            "a uint8 input takes the pixel values: MODEL_INPUT_RANGE, MODEL_MEAN and MODEL_STD do not apply".into(),
        ));
    }
    let input = InputSpec {
        name: image.name.clone(),
        layout,
        dtype: input_type,
        width,
        height,
        dynamic,
        resize,
        filter,
        scale: o.scale.unwrap_or(default_scale),
        mean: o.mean.unwrap_or([0.0; 3]),
        std: o.std.unwrap_or([1.0; 3]),
        bgr: o.bgr.unwrap_or(false),
        sizes_input,
        idct: if format == Format::TfOd { Idct::Fast } else { Idct::Accurate },
    };

    // Class names: metadata, LABELS_PATH, <model>.labels.txt, the TF-OD label map, class_<i>.
    let sidecar = sidecar_labels(model_path);
    let labels_file = o.labels_path.clone().or_else(|| sidecar.exists().then_some(sidecar));
    let (names, names_source): (Vec<String>, NamesSource) = match (&meta.names, &o.labels_path, &labels_file) {
        (Some(names), None, _) => (names.clone(), NamesSource::Metadata),
        (_, _, Some(path)) => {
            let mut names = read_labels(path)?;
            if let Some(expected) = head.classes().or(meta.names.as_ref().map(Vec::len))
                && expected != names.len()
            {
                return Err(SpecError::LabelsMismatch { path: path.clone(), found: names.len(), expected });
            }
            if format == Format::TfOd {
                names.insert(0, "background".into()); // the label map's ids start at 1
            }
            (names, NamesSource::LabelsFile)
        }
        _ if format == Format::TfOd => (COCO91.iter().map(|s| s.to_string()).collect(), NamesSource::Coco91),
        _ => ((0..head.classes().unwrap_or(0)).map(|i| format!("class_{i}")).collect(), NamesSource::Generated),
    };

    // Thresholds and NMS: Ultralytics' own (0.25 / 0.7) for every family but the bundled
    // CenterNet's kind (rows without Ultralytics metadata), which keeps 0.3 / 0.4 and the
    // class-agnostic NMS its graph leaves to the caller.
    let rows_without_nms = format == Format::Rows && !ultralytics;
    let (score, iou) = if rows_without_nms { (0.3, 0.4) } else { (0.25, 0.7) };
    let nms = o.nms.unwrap_or(match format {
        Format::Anchors => Nms::PerClass,
        Format::Rows if rows_without_nms => Nms::Agnostic,
        _ => Nms::None,
    });
    let keypoint_names = keypoint_names(&meta).into();
    Ok(ModelSpec {
        file: model_path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        producer: meta.producer,
        input,
        head,
        names: names.into(),
        names_source,
        nms,
        score_threshold: o.score_threshold.unwrap_or(score),
        nms_iou: o.nms_iou.unwrap_or(iou),
        max_detections: o.max_detections.unwrap_or(DEFAULT_MAX_DETECTIONS),
        keypoint_names,
    })
}

fn read_labels(path: &Path) -> Result<Vec<String>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Labels { path: path.into(), source })?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    if labels.is_empty() {
        return Err(SpecError::NoLabels(path.into()));
    }
    Ok(labels)
}

/// The output of `info` with this name (ignoring a TensorFlow `:0` suffix).
fn output<'a>(info: &'a ModelInfo, name: &str) -> Option<&'a Tensor> {
    info.outputs.iter().find(|o| o.name == name || o.name.strip_suffix(":0") == Some(name))
}

/// The head of format `f` among the outputs, if their names and shapes fit it.
fn find_head(f: Format, info: &ModelInfo, meta: &Meta, has_sizes: bool) -> Option<Head> {
    let rank3 = |t: &&Tensor| t.dims.len() == 3;
    let last = |t: &Tensor| t.dims.last().and_then(Dim::fixed);
    let rtdetr = meta.head.as_deref() == Some("RTDETRDecoder");
    // Masks, keypoints and angles come from Ultralytics' YOLO heads only.
    if meta.extra != Extra::None && !matches!(f, Format::Rows | Format::Anchors) {
        return None;
    }
    match f {
        Format::TfOd => Some(Head::TfOd {
            boxes: output(info, "detection_boxes")?.name.clone(),
            scores: output(info, "detection_scores")?.name.clone(),
            classes: output(info, "detection_classes")?.name.clone(),
            num: output(info, "num_detections").map(|t| t.name.clone()),
        }),
        Format::DetrSplit => Some(Head::DetrSplit {
            labels: output(info, "labels")?.name.clone(),
            boxes: output(info, "boxes")?.name.clone(),
            scores: output(info, "scores")?.name.clone(),
            frame: if has_sizes { Frame::OriginalPixels } else { Frame::Normalized },
        }),
        // Ultralytics' RT-DETR rows have the rows' shape: only the metadata tells them apart.
        Format::Detr => {
            let t = info.outputs.iter().find(rank3).filter(|t| last(t) == Some(6))?;
            (rtdetr || meta.forced(f)).then(|| Head::Detr { output: t.name.clone() })
        }
        Format::DetrScores => {
            let t = info.outputs.iter().find(rank3)?;
            let classes = usize::try_from(last(t)?.checked_sub(4)?).ok().filter(|&c| c > 0)?;
            let fits = meta.names.as_ref().is_none_or(|n| n.len() == classes);
            // Queries first, channels last (`[1, Q, 4 + nc]`, YOLO anchors are `[1, 4 + nc, A]`);
            // with 2 classes it has the rows' shape, which only the metadata tells apart.
            let channels_last = t.dims[1].fixed().is_some_and(|q| q > 4 + classes as i64) && classes != 2;
            (fits && (rtdetr || channels_last || meta.forced(f)))
                .then(|| Head::DetrScores { output: t.name.clone(), classes })
        }
        Format::Rows if rtdetr && !meta.forced(f) => None,
        Format::Rows => {
            let want = 6 + meta.extra.channels() as i64;
            let t = info.outputs.iter().filter(rank3).find(|t| last(t) == Some(want))?;
            Some(Head::Rows { output: t.name.clone(), extra: meta.extra.clone() })
        }
        Format::Anchors => {
            let t = info.outputs.iter().find(rank3)?;
            let channels = t.dims[1].fixed()?;
            let classes = channels.checked_sub(4 + meta.extra.channels() as i64)?;
            let classes = usize::try_from(classes).ok().filter(|&c| c > 0)?;
            // More anchors than channels (a dynamic anchor count is fine).
            let anchors_fit = t.dims[2].fixed().is_none_or(|a| a > channels);
            let fits = meta.names.as_ref().is_none_or(|n| n.len() == classes);
            (anchors_fit && (fits || meta.forced(f))).then(|| Head::Anchors {
                output: t.name.clone(),
                classes,
                extra: meta.extra.clone(),
            })
        }
    }
}

/// What objdet reads of the metadata.
#[derive(Debug, Default)]
struct Meta {
    ultralytics: bool,
    producer: Option<String>,
    names: Option<Vec<String>>,
    imgsz: Option<(u32, u32)>,
    stride: Option<u32>,
    task: Option<String>,
    head: Option<String>,
    /// `kpt_shape`: keypoints per detection and values per keypoint.
    kpt_shape: Option<(usize, usize)>,
    /// `kpt_names`, as written.
    kpt_names: Option<String>,
    /// What the task adds to each detection (from `task` and the outputs).
    extra: Extra,
    /// Set by `probe` callers that force a format (MODEL_FORMAT): shapes alone decide.
    forced: Option<Format>,
}

impl Meta {
    fn read(info: &ModelInfo) -> Self {
        let author = info.meta("author");
        let names = info.meta("names").and_then(parse_names);
        let stride = info.meta("stride").and_then(|s| s.trim().parse().ok());
        let ultralytics = author == Some("Ultralytics") || (names.is_some() && stride.is_some());
        let producer = author.map(|a| match info.meta("version") {
            Some(v) => format!("{} {}", crate::error::excerpt(a), crate::error::excerpt(v)),
            None => crate::error::excerpt(a),
        });
        Meta {
            ultralytics,
            producer,
            names,
            imgsz: info.meta("imgsz").and_then(parse_imgsz),
            stride,
            task: info.meta("task").map(str::to_string),
            head: info.meta("head").map(str::to_string),
            kpt_shape: info.meta("kpt_shape").and_then(parse_imgsz).map(|(d, k)| (k as usize, d as usize)),
            kpt_names: info.meta("kpt_names").map(str::to_string),
            extra: Extra::None,
            forced: None,
        }
    }

    fn forced(&self, f: Format) -> bool {
        self.forced == Some(f)
    }
}

/// The task's channels: Ultralytics' `task` (absent: detect), its prototypes output (segment) or
/// `kpt_shape` (pose); a task objdet does not serve is refused, naming it.
fn task_extra(info: &ModelInfo, meta: &Meta) -> Result<Extra, String> {
    match meta.task.as_deref() {
        None | Some("detect") => Ok(Extra::None),
        Some("segment") => info
            .outputs
            .iter()
            .find(|t| t.dims.len() == 4)
            .and_then(|t| {
                let channels = usize::try_from(t.dims[1].fixed()?).ok().filter(|c| (1..=256).contains(c))?;
                Some(Extra::Mask { protos: t.name.clone(), channels })
            })
            .ok_or_else(|| "a segment model without a [1, 32, H, W] prototypes output".to_string()),
        Some("pose") => match meta.kpt_shape {
            Some((count, dims @ (2 | 3))) if (1..=1000).contains(&count) => Ok(Extra::Keypoints { count, dims }),
            _ => Err("a pose model without a usable kpt_shape ([K, 2] or [K, 3]) in its metadata".to_string()),
        },
        Some("obb") => Ok(Extra::Angle),
        Some(task) => Err(format!(
            "the model's task is {:?}; objdet serves detect, segment, pose and obb models",
            crate::error::excerpt(task)
        )),
    }
}

/// A pose model's keypoint names: its `kpt_names` (`{0: ['tip', 'left', ...]}`, the first
/// class's), else COCO's person keypoints when it has 17, else none.
fn keypoint_names(meta: &Meta) -> Vec<String> {
    let Extra::Keypoints { count, .. } = meta.extra else { return Vec::new() };
    if let Some(names) = meta.kpt_names.as_deref().and_then(parse_kpt_names).filter(|n| n.len() == count) {
        return names;
    }
    if count == COCO_KEYPOINTS.len() {
        return COCO_KEYPOINTS.iter().map(|s| s.to_string()).collect();
    }
    Vec::new()
}

/// `{0: ['a', 'b'], ...}` → the first list's names.
fn parse_kpt_names(s: &str) -> Option<Vec<String>> {
    let list = &s[s.find('[')? + 1..];
    let list = &list[..list.find(']')?];
    let names: Vec<String> = list
        .split(',')
        .map(|n| n.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .filter(|n| !n.is_empty())
        .map(|n| crate::error::excerpt(&n))
        .collect();
    (!names.is_empty()).then_some(names)
}

/// COCO's 17 person keypoints, in its order.
pub const COCO_KEYPOINTS: [&str; 17] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// `[640, 640]` (height, width) or `640`.
fn parse_imgsz(s: &str) -> Option<(u32, u32)> {
    let nums: Vec<u32> = s
        .trim_matches(|c| matches!(c, '[' | ']' | '(' | ')' | ' '))
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<_>>()?;
    match nums.as_slice() {
        [n] => Some((*n, *n)),
        [h, w] => Some((*w, *h)),
        _ => None,
    }
}

/// Ultralytics' `names`: a Python dict literal `{0: 'person', 1: "kid's bike", ...}`, keys the
/// class ids 0..n. `None` if it is not one.
pub fn parse_names(s: &str) -> Option<Vec<String>> {
    let body = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut names = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let colon = rest.find(':')?;
        let id: usize = rest[..colon].trim().parse().ok()?;
        if id != names.len() {
            return None;
        }
        let after = rest[colon + 1..].trim_start();
        let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let mut name = String::new();
        let mut chars = after[1..].char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => name.push(chars.next()?.1),
                c if c == quote => break i + 2,
                c => name.push(c),
            }
        };
        names.push(name);
        rest = after[end..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    (!names.is_empty()).then_some(names)
}

/// The TF Object Detection API's COCO label map: index = class id (1-based; unused ids "N/A").
pub const COCO91: [&str; 91] = [
    "background",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "N/A",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "N/A",
    "backpack",
    "umbrella",
    "N/A",
    "N/A",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "N/A",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "N/A",
    "dining table",
    "N/A",
    "N/A",
    "toilet",
    "N/A",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "N/A",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, elem_type: i32, dims: &[i64]) -> Tensor {
        let dims = dims.iter().map(|&d| if d > 0 { Dim::Fixed(d) } else { Dim::Dynamic(String::new()) }).collect();
        Tensor { name: name.into(), elem_type, dims }
    }

    fn ultralytics(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut m = vec![
            ("author", "Ultralytics"),
            ("version", "8.4.190"),
            ("stride", "32"),
            ("task", "detect"),
            ("imgsz", "[320, 320]"),
            ("names", "{0: 'circle', 1: 'square', 2: \"kid's star\"}"),
        ];
        m.extend_from_slice(extra);
        m.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn probe_info(info: &ModelInfo) -> Result<ModelSpec, SpecError> {
        probe(Path::new("/nonexistent/m.onnx"), info, &Overrides::default())
    }

    #[test]
    fn the_bundled_centernet_kind_stretches_raw_nhwc_with_agnostic_nms() {
        let info = ModelInfo {
            inputs: vec![t("tower_0/images:0", dtype::FLOAT, &[1, 512, 512, 3])],
            outputs: vec![
                t("tower_0/detections", dtype::FLOAT, &[1, 100, 6]),
                t("tower_0/keypoints", dtype::FLOAT, &[1, 128, 128, 80]),
            ],
            metadata: vec![],
        };
        let s = probe_info(&info).unwrap();
        assert_eq!(s.head, Head::Rows { output: "tower_0/detections".into(), extra: Extra::None });
        assert_eq!((s.input.layout, s.input.resize, s.input.scale), (Layout::Nhwc, Resize::Stretch, 1.0));
        assert_eq!((s.nms, s.score_threshold, s.nms_iou), (Nms::Agnostic, 0.3, 0.4));
        assert_eq!(s.names_source, NamesSource::Generated);
    }

    #[test]
    fn ultralytics_anchors_letterbox_with_metadata_names() {
        let info = ModelInfo {
            inputs: vec![t("images", dtype::FLOAT, &[1, 3, 320, 320])],
            outputs: vec![t("output0", dtype::FLOAT, &[1, 7, 2100])],
            metadata: ultralytics(&[("head", "Detect")]),
        };
        let s = probe_info(&info).unwrap();
        assert_eq!(s.head, Head::Anchors { output: "output0".into(), classes: 3, extra: Extra::None });
        assert_eq!(&*s.names, ["circle", "square", "kid's star"]);
        assert_eq!(s.input.resize, Resize::Letterbox { pad: 114, centred: true, stride: None });
        assert_eq!((s.input.filter, s.input.scale), (Filter::Linear, 1.0 / 255.0));
        assert_eq!((s.nms, s.score_threshold, s.nms_iou), (Nms::PerClass, 0.25, 0.7));
        assert_eq!(s.producer.as_deref(), Some("Ultralytics 8.4.190"));
    }

    #[test]
    fn end_to_end_rows_and_rtdetr_rows_are_told_apart_by_the_metadata() {
        let rows = |head: &str| ModelInfo {
            inputs: vec![t("images", dtype::FLOAT, &[1, 3, 320, 320])],
            outputs: vec![t("output0", dtype::FLOAT, &[1, 300, 6])],
            metadata: ultralytics(&[("head", head), ("end2end", "True")]),
        };
        let e2e = probe_info(&rows("v10Detect")).unwrap();
        assert_eq!((e2e.head.format(), e2e.nms), (Format::Rows, Nms::None));
        let detr = probe_info(&rows("RTDETRDecoder")).unwrap();
        assert_eq!((detr.head.format(), detr.input.resize, detr.nms), (Format::Detr, Resize::Stretch, Nms::None));
        // The older RT-DETR export: per-class scores, and (Ultralytics 8.3) no `head` in the metadata.
        let mut old = rows("RTDETRDecoder");
        old.outputs = vec![t("output0", dtype::FLOAT, &[1, 300, 7])];
        assert_eq!(probe_info(&old).unwrap().head, Head::DetrScores { output: "output0".into(), classes: 3 });
        old.metadata.retain(|(k, _)| k != "head");
        let s = probe_info(&old).unwrap();
        assert_eq!((s.head.format(), s.input.resize), (Format::DetrScores, Resize::Stretch));
    }

    #[test]
    fn a_dynamic_ultralytics_input_takes_imgsz_and_minimal_padding() {
        let info = ModelInfo {
            inputs: vec![t("images", dtype::FLOAT, &[-1, 3, -1, -1])],
            outputs: vec![t("output0", dtype::FLOAT, &[-1, 7, -1])],
            metadata: ultralytics(&[]),
        };
        let s = probe_info(&info).unwrap();
        assert_eq!((s.input.width, s.input.height, s.input.dynamic), (320, 320, true));
        assert_eq!(s.input.resize, Resize::Letterbox { pad: 114, centred: true, stride: Some(32) });
        let o = Overrides { input_size: Some((640, 480)), ..Default::default() };
        let s = probe(Path::new("m.onnx"), &info, &o).unwrap();
        assert_eq!((s.input.width, s.input.height), (640, 480));
        // A fixed input cannot be resized by a setting.
        let fixed = ModelInfo { inputs: vec![t("images", dtype::FLOAT, &[1, 3, 320, 320])], ..info };
        assert!(matches!(probe(Path::new("m.onnx"), &fixed, &o), Err(SpecError::Setting(_))));
    }

    #[test]
    fn detr_split_and_tf_od_graphs() {
        let detr = ModelInfo {
            inputs: vec![t("images", dtype::FLOAT, &[1, 3, 640, 640]), t("orig_target_sizes", dtype::INT64, &[1, 2])],
            outputs: vec![
                t("labels", dtype::INT64, &[1, 300]),
                t("boxes", dtype::FLOAT, &[1, 300, 4]),
                t("scores", dtype::FLOAT, &[1, 300]),
            ],
            metadata: vec![],
        };
        let s = probe_info(&detr).unwrap();
        assert_eq!(s.head.frame(), Frame::OriginalPixels);
        assert_eq!(s.input.sizes_input.as_deref(), Some("orig_target_sizes"));
        assert_eq!((s.input.resize, s.input.scale, s.nms), (Resize::Stretch, 1.0 / 255.0, Nms::None));

        let tfod = ModelInfo {
            inputs: vec![t("input_tensor", dtype::UINT8, &[1, -1, -1, 3])],
            outputs: vec![
                t("detection_boxes", dtype::FLOAT, &[1, 100, 4]),
                t("detection_classes", dtype::FLOAT, &[1, 100]),
                t("detection_scores", dtype::FLOAT, &[1, 100]),
                t("num_detections", dtype::FLOAT, &[1]),
            ],
            metadata: vec![],
        };
        let s = probe_info(&tfod).unwrap();
        assert_eq!((s.head.format(), s.input.dtype, s.input.resize), (Format::TfOd, InputType::U8, Resize::None));
        assert_eq!(
            (s.label(1), s.label(90), s.names_source),
            ("person".to_string(), "toothbrush".to_string(), NamesSource::Coco91)
        );
    }

    #[test]
    fn graphs_that_are_not_detectors_are_refused_naming_what_they_have() {
        let classifier = ModelInfo {
            inputs: vec![t("input", dtype::FLOAT, &[1, 3, 224, 224])],
            outputs: vec![t("logits", dtype::FLOAT, &[1, 1000])],
            metadata: vec![],
        };
        let e = probe_info(&classifier).unwrap_err().to_string();
        assert!(e.contains("logits float32[1, 1000]") && e.contains("anchors"), "{e}");
        let mut seg = ModelInfo {
            inputs: vec![t("images", dtype::FLOAT, &[1, 3, 320, 320])],
            outputs: vec![t("output0", dtype::FLOAT, &[1, 39, 2100]), t("output1", dtype::FLOAT, &[1, 32, 80, 80])],
            metadata: ultralytics(&[("task", "segment")]),
        };
        seg.metadata.retain(|(k, v)| k != "task" || v == "segment");
        let s = probe_info(&seg).unwrap();
        assert_eq!(
            s.head,
            Head::Anchors {
                output: "output0".into(),
                classes: 3,
                extra: Extra::Mask { protos: "output1".into(), channels: 32 }
            }
        );
        assert_eq!(s.head.outputs(), ["output0", "output1"]);
        // Tasks objdet does not serve are refused, named.
        for task in ["classify", "semantic", "depth"] {
            let mut m = seg.clone();
            m.metadata.retain(|(k, _)| k != "task");
            m.metadata.push(("task".into(), task.into()));
            let e = probe_info(&m).unwrap_err().to_string();
            assert!(e.contains(task) && e.contains("serves detect, segment, pose and obb"), "{e}");
        }
        // A pose model needs its kpt_shape; 17 keypoints are COCO's.
        let mut pose = seg.clone();
        pose.metadata.retain(|(k, _)| k != "task");
        pose.metadata.push(("task".into(), "pose".into()));
        pose.outputs = vec![t("output0", dtype::FLOAT, &[1, 4 + 3 + 51, 2100])];
        assert!(probe_info(&pose).unwrap_err().to_string().contains("kpt_shape"));
        pose.metadata.push(("kpt_shape".into(), "[17, 3]".into()));
        let s = probe_info(&pose).unwrap();
        assert_eq!(s.head.extra(), &Extra::Keypoints { count: 17, dims: 3 });
        assert_eq!((s.keypoint_names.len(), s.keypoint_names[16].as_str()), (17, "right_ankle"));
        // OBB: one angle channel after the classes; end-to-end rows are 7 wide.
        let mut obb = pose.clone();
        obb.metadata.retain(|(k, _)| k != "task");
        obb.metadata.push(("task".into(), "obb".into()));
        obb.outputs = vec![t("output0", dtype::FLOAT, &[1, 8, 2100])];
        assert_eq!(probe_info(&obb).unwrap().head.extra(), &Extra::Angle);
        obb.outputs = vec![t("output0", dtype::FLOAT, &[1, 300, 7])];
        assert_eq!(probe_info(&obb).unwrap().head, Head::Rows { output: "output0".into(), extra: Extra::Angle });
        let grey = ModelInfo {
            inputs: vec![t("x", dtype::FLOAT, &[1, 1, 64, 64])],
            outputs: vec![t("y", dtype::FLOAT, &[1, 10, 6])],
            metadata: vec![],
        };
        assert!(probe_info(&grey).unwrap_err().to_string().contains("colour channels"));
        let fp16 = ModelInfo {
            inputs: vec![t("x", dtype::FLOAT16, &[1, 3, 64, 64])],
            outputs: vec![t("y", dtype::FLOAT, &[1, 10, 6])],
            metadata: vec![],
        };
        assert!(probe_info(&fp16).unwrap_err().to_string().contains("float16"));
    }

    #[test]
    fn labels_files_must_match_the_class_count() {
        let dir = std::env::temp_dir().join(format!("objdet-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let labels = dir.join("l.txt");
        std::fs::write(&labels, "a\nb\n").unwrap();
        let info = ModelInfo {
            inputs: vec![t("images", dtype::FLOAT, &[1, 3, 320, 320])],
            outputs: vec![t("output0", dtype::FLOAT, &[1, 7, 2100])],
            metadata: vec![],
        };
        let o = Overrides { labels_path: Some(labels.clone()), ..Default::default() };
        let e = probe(Path::new("m.onnx"), &info, &o).unwrap_err();
        assert!(matches!(e, SpecError::LabelsMismatch { found: 2, expected: 3, .. }), "{e}");
        std::fs::write(&labels, "a\nb\nc\n").unwrap();
        let s = probe(Path::new("m.onnx"), &info, &o).unwrap();
        assert_eq!(
            (&*s.names, s.names_source),
            (&["a".to_string(), "b".into(), "c".into()][..], NamesSource::LabelsFile)
        );
        // Without metadata or labels: class_<i>.
        let s = probe_info(&info).unwrap();
        assert_eq!(s.label(2), "class_2");
        // A sidecar beside the model is found without LABELS_PATH.
        std::fs::write(dir.join("m.labels.txt"), "x\ny\nz\n").unwrap();
        let s = probe(&dir.join("m.onnx"), &info, &Overrides::default()).unwrap();
        assert_eq!(s.label(1), "y");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_parse_as_python_dicts() {
        assert_eq!(parse_names("{0: 'a', 1: 'b c'}").unwrap(), ["a", "b c"]);
        assert_eq!(parse_names("{0: \"it's\", 1: 'x\\'y'}").unwrap(), ["it's", "x'y"]);
        assert_eq!(parse_names("{}"), None);
        assert_eq!(parse_names("{1: 'a'}"), None, "ids must count from 0");
        assert_eq!(parse_names("{0: 'a'"), None);
        assert_eq!(parse_imgsz("[480, 640]"), Some((640, 480)));
    }
}
