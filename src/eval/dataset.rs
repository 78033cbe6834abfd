//! Labelled sets for `objdet eval`: an Ultralytics `data.yaml` (its `val` images, YOLO-format
//! labels) or a COCO annotations JSON (with its images' directory).
//!
//! Everything is read and checked before the first image is detected, so a label that does not
//! parse fails the run in a second, naming its file and line, instead of after an hour of
//! inference. Images themselves are read later, one at a time, by the runner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Image extensions Ultralytics lists a directory by (`IMG_FORMATS`): one objdet cannot decode is
/// kept, so that it is counted and named as a failed image rather than silently skipped.
const IMAGE_EXTENSIONS: &[&str] = &["bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"];

/// Why a labelled set cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data YAML is not what Ultralytics reads.
    #[error("{}: {message}", path.display())]
    Yaml {
        /// The YAML file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The COCO JSON is not COCO's annotation format.
    #[error("{}: not a COCO annotations file: {message}", path.display())]
    Coco {
        /// The JSON file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A label line does not parse.
    #[error("{}:{line}: {message}", path.display())]
    Label {
        /// The label file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No image to evaluate.
    #[error("no images in {0}")]
    NoImages(String),
    /// A COCO JSON was given without the directory of its images.
    #[error("a COCO annotations file needs --images DIR (the directory its file_name entries are relative to)")]
    NoImageDir,
}

/// One ground-truth object. Boxes are in pixels for COCO sets; for YOLO labels they stay
/// normalized until the image's size is known (see [`Truth::boxes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GtObject {
    /// Index into [`Dataset::names`].
    pub class: usize,
    /// `[x, y, w, h]`: normalized centre and size (YOLO) or top-left and size in pixels (COCO).
    pub bbox: [f64; 4],
    /// COCO's `area` when the file gives it (a segmentation's area), else the box's.
    pub area: Option<f64>,
    /// COCO's `iscrowd`: matched but never counted as missed or as a false positive.
    pub iscrowd: bool,
    /// What a YOLO label line has beyond the box, normalized: a segment's polygon or an oriented
    /// box's four corners (`x y` pairs), or a pose label's keypoints (`x y v` or `x y` each).
    pub points: Vec<f64>,
}

/// How a set gives its boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFormat {
    /// YOLO: class cx cy w h, normalized to the image's size (after EXIF orientation).
    YoloNormalized,
    /// COCO: x y w h in pixels.
    CocoPixels,
}

/// One image of the set and its objects.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Image id (COCO's, or the position in the set).
    pub id: u64,
    /// The image file.
    pub path: PathBuf,
    /// The name shown in messages (relative to the set's root where possible).
    pub name: String,
    /// Its objects.
    pub objects: Vec<GtObject>,
    /// COCO's recorded size, checked against the decoded image.
    pub size: Option<(u32, u32)>,
}

/// A labelled set, checked.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where it was read from.
    pub source: PathBuf,
    /// Class names; [`GtObject::class`] indexes this.
    pub names: Vec<String>,
    /// The images, in order.
    pub samples: Vec<Sample>,
    /// How the boxes are given.
    pub format: BoxFormat,
    /// Images without a label file (Ultralytics counts them as background images).
    pub unlabelled: usize,
}

/// A box mapped to pixels for an image of `width`×`height`, clamped to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBox {
    /// `[x, y, w, h]` in pixels.
    pub xywh: [f64; 4],
    /// Whether clamping moved it (by more than 0.01 px).
    pub clamped: bool,
}

impl Dataset {
    /// Reads an Ultralytics data YAML (`.yaml`/`.yml`) or a COCO annotations JSON (images from
    /// `images`).
    pub fn read(path: &Path, images: Option<&Path>) -> Result<Self, DataError> {
        let is_json = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json { read_coco(path, images.ok_or(DataError::NoImageDir)?) } else { read_yolo(path, images) }
    }

    /// The number of ground-truth objects.
    pub fn objects(&self) -> usize {
        self.samples.iter().map(|s| s.objects.len()).sum()
    }

    /// `object`'s box in pixels for an image of `width`×`height` (as decoded, after EXIF
    /// orientation), clamped to the image.
    pub fn pixel_box(&self, object: &GtObject, width: u32, height: u32) -> PixelBox {
        let (w, h) = (f64::from(width), f64::from(height));
        let [a, b, c, d] = object.bbox;
        let (x1, y1, x2, y2) = match self.format {
            BoxFormat::YoloNormalized => ((a - c / 2.0) * w, (b - d / 2.0) * h, (a + c / 2.0) * w, (b + d / 2.0) * h),
            BoxFormat::CocoPixels => (a, b, a + c, b + d),
        };
        let (cx1, cy1, cx2, cy2) = (x1.clamp(0.0, w), y1.clamp(0.0, h), x2.clamp(0.0, w), y2.clamp(0.0, h));
        let moved = [(x1, cx1), (y1, cy1), (x2, cx2), (y2, cy2)].iter().any(|(a, b)| (a - b).abs() > 0.01);
        PixelBox { xywh: [cx1, cy1, (cx2 - cx1).max(0.0), (cy2 - cy1).max(0.0)], clamped: moved }
    }
}

fn read_text(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|source| DataError::Read { path: path.to_path_buf(), source })
}

/// An Ultralytics data YAML: `path` (the set's root), `val` (a directory, a `.txt` list of images
/// or a list of either, relative to `path`), `names` (a list, or a map from id to name).
///
/// `path` is resolved as Ultralytics' `check_det_dataset` does: absent, it is the YAML's
/// directory; relative, it is taken from the working directory when it exists there, else from
/// the YAML's directory (Ultralytics would try its `datasets_dir` setting instead, which objdet
/// does not read). `images` replaces the `val` entry.
fn read_yolo(path: &Path, images: Option<&Path>) -> Result<Dataset, DataError> {
    let text = read_text(path)?;
    let yaml_err = |message: String| DataError::Yaml { path: path.to_path_buf(), message };
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).map_err(|e| yaml_err(format!("not YAML: {e}")))?;
    let doc = docs.into_iter().next().ok_or_else(|| yaml_err("empty".into()))?;
    let yaml_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let root = match doc["path"].as_str() {
        None => yaml_dir.clone(),
        Some(p) if Path::new(p).is_absolute() || Path::new(p).exists() => PathBuf::from(p),
        Some(p) => yaml_dir.join(p),
    };
    let names = yolo_names(&doc["names"]).map_err(yaml_err)?;
    if let (Some(nc), n) = (doc["nc"].as_i64(), names.len())
        && nc != n as i64
    {
        return Err(yaml_err(format!("nc is {nc} but {n} names are given")));
    }
    let entries: Vec<PathBuf> = match images {
        Some(dir) => vec![dir.to_path_buf()],
        None => {
            let val = &doc["val"];
            let list: Vec<&str> = match val {
                yaml_rust2::Yaml::String(s) => vec![s.as_str()],
                yaml_rust2::Yaml::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
                _ => {
                    return Err(yaml_err(
                        "no `val` entry (a directory, a .txt list of images, or a list of them)".into(),
                    ));
                }
            };
            list.into_iter().map(|e| val_path(&root, e)).collect()
        }
    };
    let mut files = Vec::new();
    for entry in &entries {
        list_images(entry, &root, &mut files)?;
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        let shown: Vec<String> = entries.iter().map(|e| e.display().to_string()).collect();
        return Err(DataError::NoImages(shown.join(", ")));
    }
    let has_kpts = !doc["kpt_shape"].is_badvalue();
    let mut samples = Vec::with_capacity(files.len());
    let mut unlabelled = 0;
    for (i, file) in files.into_iter().enumerate() {
        let label = label_path(&file);
        let objects = match std::fs::read_to_string(&label) {
            Ok(text) => parse_labels(&text, &label, names.len(), has_kpts)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                unlabelled += 1;
                Vec::new()
            }
            Err(source) => return Err(DataError::Read { path: label, source }),
        };
        let name = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
        samples.push(Sample { id: i as u64, path: file, name, objects, size: None });
    }
    Ok(Dataset { source: path.to_path_buf(), names, samples, format: BoxFormat::YoloNormalized, unlabelled })
}

/// A `val` entry under the set's root; Ultralytics also takes `../x` as `x` when `../x` does not exist.
fn val_path(root: &Path, entry: &str) -> PathBuf {
    if Path::new(entry).is_absolute() {
        return PathBuf::from(entry);
    }
    let p = root.join(entry);
    match entry.strip_prefix("../") {
        Some(rest) if !p.exists() => root.join(rest),
        _ => p,
    }
}

/// `names:` as a list, or a map from class id (0..n, any order) to name.
fn yolo_names(v: &yaml_rust2::Yaml) -> Result<Vec<String>, String> {
    use yaml_rust2::Yaml;
    let text = |v: &Yaml| match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Yaml::Array(a) if !a.is_empty() => {
            a.iter().map(|n| text(n).ok_or_else(|| "every entry of `names` must be a name".to_string())).collect()
        }
        Yaml::Hash(h) if !h.is_empty() => {
            let mut by_id: Vec<Option<String>> = vec![None; h.len()];
            for (k, n) in h {
                let id = k
                    .as_i64()
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|&i| i < by_id.len())
                    .ok_or_else(|| format!("`names` keys must be the class ids 0..{}", by_id.len() - 1))?;
                by_id[id] = Some(text(n).ok_or_else(|| format!("names[{id}] is not a name"))?);
            }
            by_id.into_iter().enumerate().map(|(i, n)| n.ok_or_else(|| format!("names[{i}] is missing"))).collect()
        }
        _ => Err("no `names` (a list of class names, or a map from class id to name)".into()),
    }
}

/// Image files of a `val` entry: a directory (recursively, as Ultralytics globs `**/*.*`), a
/// `.txt` list of image paths (relative to `root`, as Ultralytics reads them), or one image.
fn list_images(entry: &Path, root: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let read_err = |source| DataError::Read { path: entry.to_path_buf(), source };
    let meta = std::fs::metadata(entry).map_err(read_err)?;
    if meta.is_dir() {
        let mut stack = vec![entry.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let rd = std::fs::read_dir(&dir).map_err(|source| DataError::Read { path: dir.clone(), source })?;
            for e in rd {
                let p = e.map_err(|source| DataError::Read { path: dir.clone(), source })?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if is_image(&p) {
                    out.push(p);
                }
            }
        }
    } else if entry.extension().is_some_and(|e| e == "txt") {
        for line in read_text(entry)?.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let p = Path::new(line.strip_prefix("./").unwrap_or(line));
            out.push(if p.is_absolute() { p.to_path_buf() } else { root.join(p) });
        }
    } else {
        out.push(entry.to_path_buf());
    }
    Ok(())
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Ultralytics' `img2label_paths`: the last `/images/` of the path becomes `/labels/` and the
/// extension `.txt` (an image outside an `images` directory has its labels beside it).
pub fn label_path(image: &Path) -> PathBuf {
    let s = image.to_string_lossy();
    let sep = std::path::MAIN_SEPARATOR;
    let (a, b) = (format!("{sep}images{sep}"), format!("{sep}labels{sep}"));
    let swapped = match s.rfind(&a) {
        Some(i) => format!("{}{b}{}", &s[..i], &s[i + a.len()..]),
        None => s.into_owned(),
    };
    PathBuf::from(swapped).with_extension("txt")
}

/// A YOLO label file: `class cx cy w h` per object (normalized); a line with more values is a
/// polygon (`class x1 y1 x2 y2 …`, boxed by its extremes, as Ultralytics' `segments2boxes`),
/// or, for a pose set (`kpt_shape` in the YAML), a box followed by keypoints.
fn parse_labels(text: &str, path: &Path, classes: usize, has_kpts: bool) -> Result<Vec<GtObject>, DataError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| DataError::Label { path: path.to_path_buf(), line: i + 1, message };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let shown = crate::error::excerpt(line.trim());
        let values = fields[1..]
            .iter()
            .map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| err(format!("not numbers: `{shown}`")))?;
        let class =
            fields[0].parse::<f64>().ok().filter(|c| c.fract() == 0.0 && *c >= 0.0).ok_or_else(|| {
                err(format!("the class id `{}` is not a whole number", crate::error::excerpt(fields[0])))
            })?;
        if class >= classes as f64 {
            return Err(err(format!(
                "class id {class} but the data YAML names {classes} classes (0..{})",
                classes - 1
            )));
        }
        let points = match values.len() {
            n if has_kpts && n > 4 => values[4..].to_vec(),
            n if n >= 6 && n % 2 == 0 => values.clone(),
            _ => Vec::new(),
        };
        let bbox = match values.len() {
            4 => [values[0], values[1], values[2], values[3]],
            n if has_kpts && n > 4 => [values[0], values[1], values[2], values[3]],
            n if n >= 6 && n % 2 == 0 => {
                let (xs, ys): (Vec<f64>, Vec<f64>) = values.chunks(2).map(|p| (p[0], p[1])).unzip();
                let (x1, x2) =
                    (xs.iter().copied().fold(f64::MAX, f64::min), xs.iter().copied().fold(f64::MIN, f64::max));
                let (y1, y2) =
                    (ys.iter().copied().fold(f64::MAX, f64::min), ys.iter().copied().fold(f64::MIN, f64::max));
                [(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1]
            }
            n => {
                return Err(err(format!(
                    "{} values after the class id: expected 4 (cx cy w h) or a polygon (an even number >= 6): `{shown}`",
                    n
                )));
            }
        };
        if bbox[2] < 0.0 || bbox[3] < 0.0 {
            return Err(err(format!("a negative width or height: `{shown}`")));
        }
        out.push(GtObject { class: class as usize, bbox, area: None, iscrowd: false, points });
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(serde::Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    width: Option<u32>,
    height: Option<u32>,
}

#[derive(serde::Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    area: Option<f64>,
    #[serde(default, deserialize_with = "int_or_bool")]
    iscrowd: bool,
}

fn int_or_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Int(i64),
    }
    Ok(match <B as serde::Deserialize>::deserialize(d)? {
        B::Bool(b) => b,
        B::Int(i) => i != 0,
    })
}

#[derive(serde::Deserialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

/// A COCO annotations JSON; class indices follow the categories sorted by id.
fn read_coco(path: &Path, images: &Path) -> Result<Dataset, DataError> {
    let err = |message: String| DataError::Coco { path: path.to_path_buf(), message };
    let meta = std::fs::metadata(images).map_err(|source| DataError::Read { path: images.to_path_buf(), source })?;
    if !meta.is_dir() {
        return Err(DataError::Read {
            path: images.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let file: CocoFile = serde_json::from_str(&read_text(path)?).map_err(|e| err(e.to_string()))?;
    let mut cats: Vec<&CocoCategory> = file.categories.iter().collect();
    cats.sort_by_key(|c| c.id);
    let class_of: HashMap<u64, usize> = cats.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    if class_of.len() != cats.len() {
        return Err(err("two categories share an id".into()));
    }
    let mut by_image: HashMap<u64, Vec<GtObject>> = HashMap::new();
    for (i, a) in file.annotations.iter().enumerate() {
        let class = *class_of
            .get(&a.category_id)
            .ok_or_else(|| err(format!("annotations[{i}] has category_id {} that no category has", a.category_id)))?;
        if a.bbox.iter().any(|v| !v.is_finite()) || a.bbox[2] < 0.0 || a.bbox[3] < 0.0 {
            return Err(err(format!("annotations[{i}] has the box {:?}", a.bbox)));
        }
        by_image.entry(a.image_id).or_default().push(GtObject {
            class,
            bbox: a.bbox,
            area: a.area,
            iscrowd: a.iscrowd,
            points: Vec::new(),
        });
    }
    let known: std::collections::HashSet<u64> = file.images.iter().map(|i| i.id).collect();
    if let Some(orphan) = by_image.keys().find(|id| !known.contains(id)) {
        return Err(err(format!("annotations refer to image_id {orphan}, which is not in images")));
    }
    let samples: Vec<Sample> = file
        .images
        .into_iter()
        .map(|img| Sample {
            id: img.id,
            path: images.join(&img.file_name),
            objects: by_image.remove(&img.id).unwrap_or_default(),
            size: img.width.zip(img.height),
            name: img.file_name,
        })
        .collect();
    if samples.is_empty() {
        return Err(DataError::NoImages(path.display().to_string()));
    }
    let names = cats.iter().map(|c| c.name.clone()).collect();
    Ok(Dataset { source: path.to_path_buf(), names, samples, format: BoxFormat::CocoPixels, unlabelled: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_paths_as_ultralytics_derives_them() {
        assert_eq!(label_path(Path::new("/d/images/val/a.jpg")), PathBuf::from("/d/labels/val/a.txt"));
        assert_eq!(label_path(Path::new("/d/images/x/images/a.b.png")), PathBuf::from("/d/images/x/labels/a.b.txt"));
        assert_eq!(label_path(Path::new("/d/shapes/a.jpg")), PathBuf::from("/d/shapes/a.txt"));
    }

    #[test]
    fn label_lines_parse_or_name_their_line() {
        let p = Path::new("l.txt");
        let ok = parse_labels("0 0.5 0.5 0.2 0.4\n\n2 0.1 0.1 0.3 0.1 0.2 0.3\n", p, 3, false).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].bbox, [0.5, 0.5, 0.2, 0.4]);
        // The polygon (0.1,0.1) (0.3,0.1) (0.2,0.3) boxed by its extremes.
        let b = ok[1].bbox;
        assert!((b[0] - 0.2).abs() < 1e-9 && (b[1] - 0.2).abs() < 1e-9 && (b[2] - 0.2).abs() < 1e-9);
        for (text, line, what) in [
            ("0 0.5 0.5 0.2 0.4\n0 0.5 x 0.2 0.4\n", 2, "not numbers"),
            ("3 0.5 0.5 0.2 0.4\n", 1, "class id 3"),
            ("1.5 0.5 0.5 0.2 0.4\n", 1, "whole number"),
            ("0 0.5 0.5 0.2\n", 1, "3 values"),
            ("0 0.5 0.5 -0.2 0.1\n", 1, "negative"),
        ] {
            let e = parse_labels(text, p, 3, false).unwrap_err().to_string();
            assert!(e.starts_with(&format!("l.txt:{line}: ")) && e.contains(what), "{e}");
        }
        // Pose labels: the box, then keypoints.
        let pose = parse_labels("0 0.5 0.5 0.2 0.2 0.4 0.4 2 0.6 0.6 2\n", p, 1, true).unwrap();
        assert_eq!(pose[0].bbox, [0.5, 0.5, 0.2, 0.2]);
    }

    #[test]
    fn boxes_outside_the_image_are_clamped_and_flagged() {
        let d = Dataset {
            source: PathBuf::new(),
            names: vec!["a".into()],
            samples: vec![],
            format: BoxFormat::YoloNormalized,
            unlabelled: 0,
        };
        let inside = GtObject { class: 0, bbox: [0.5, 0.5, 0.5, 0.5], area: None, iscrowd: false, points: vec![] };
        assert_eq!(d.pixel_box(&inside, 200, 100), PixelBox { xywh: [50.0, 25.0, 100.0, 50.0], clamped: false });
        let over = GtObject { bbox: [0.95, 0.5, 0.2, 0.5], ..inside.clone() };
        let b = d.pixel_box(&over, 200, 100);
        assert!(b.clamped);
        assert!((b.xywh[0] - 170.0).abs() < 1e-9 && (b.xywh[2] - 30.0).abs() < 1e-9);
    }

    #[test]
    fn names_as_list_or_map() {
        let load = |s: &str| yaml_rust2::YamlLoader::load_from_str(s).unwrap().remove(0);
        assert_eq!(yolo_names(&load("names: [a, b]")["names"]).unwrap(), vec!["a", "b"]);
        assert_eq!(yolo_names(&load("names:\n  1: b\n  0: a\n")["names"]).unwrap(), vec!["a", "b"]);
        assert!(yolo_names(&load("names:\n  0: a\n  2: c\n")["names"]).is_err());
        assert!(yolo_names(&load("nc: 2")["names"]).is_err());
    }
}
