//! RGB image → the model's input tensor, as its [`InputSpec`] says: resize (stretch, letterbox
//! with Ultralytics' rounding and padding, or none), channel order, value range, mean/std,
//! layout and element type; and the [`Transform`] that maps boxes back.

use fast_image_resize as fr;

use super::decode::RgbImage;
use super::error::DetectError;
use super::spec::{Filter, InputSpec, InputType, Layout, Resize};
use super::transform::Transform;

type Result<T, E = DetectError> = std::result::Result<T, E>;

/// The input tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// float32.
    F32(Vec<f32>),
    /// uint8.
    U8(Vec<u8>),
}

/// One input tensor, reused from image to image.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    /// `[1, 3, H, W]` or `[1, H, W, 3]`.
    pub shape: [usize; 4],
    /// Elements.
    pub data: TensorData,
}

impl InputTensor {
    /// An empty tensor of `spec`'s element type.
    pub fn new(spec: &InputSpec) -> Self {
        let data = match spec.dtype {
            InputType::F32 => TensorData::F32(Vec::new()),
            InputType::U8 => TensorData::U8(Vec::new()),
        };
        Self { shape: [0; 4], data }
    }

    /// Bytes held.
    pub fn capacity_bytes(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.capacity() * 4,
            TensorData::U8(v) => v.capacity(),
        }
    }

    /// Frees the buffer when it holds more than `bytes` (kept otherwise for the next image).
    pub fn release_over(&mut self, bytes: usize) {
        if self.capacity_bytes() > bytes {
            match &mut self.data {
                TensorData::F32(v) => *v = Vec::new(),
                TensorData::U8(v) => *v = Vec::new(),
            }
        }
    }
}

/// Where an image goes in the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The tensor's width.
    pub tensor_width: u32,
    /// The tensor's height.
    pub tensor_height: u32,
    /// The resized image's width.
    pub width: u32,
    /// The resized image's height.
    pub height: u32,
    /// Padding left of it.
    pub left: u32,
    /// Padding above it.
    pub top: u32,
}

impl Geometry {
    /// The picture size the tensor takes from an image of `w`×`h` (what a scaled JPEG decode must
    /// not go below); the image's own size when the input takes any size.
    pub fn wanted(spec: &InputSpec, w: u32, h: u32) -> (u32, u32) {
        let g = Geometry::of(spec, w, h);
        (g.width, g.height)
    }

    /// Where an image of `w`×`h` goes for `spec` (Ultralytics' `LetterBox` rounding for letterbox:
    /// Python's round-half-even, the padding split as `round(d/2 ∓ 0.1)`).
    pub fn of(spec: &InputSpec, w: u32, h: u32) -> Self {
        let (tw, th) = (spec.width, spec.height);
        match spec.resize {
            Resize::Stretch => Geometry { tensor_width: tw, tensor_height: th, width: tw, height: th, left: 0, top: 0 },
            Resize::None => Geometry { tensor_width: w, tensor_height: h, width: w, height: h, left: 0, top: 0 },
            Resize::Letterbox { centred, stride, .. } => {
                let r = (f64::from(th) / f64::from(h)).min(f64::from(tw) / f64::from(w));
                let side = |v: u32, max: u32| ((f64::from(v) * r).round_ties_even() as u32).clamp(1, max);
                let (nw, nh) = (side(w, tw), side(h, th));
                let (mut dw, mut dh) = (f64::from(tw - nw), f64::from(th - nh));
                if let Some(s) = stride.filter(|s| *s > 0) {
                    (dw, dh) = (dw % f64::from(s), dh % f64::from(s));
                }
                let split = |d: f64| -> (u32, u32) {
                    if centred {
                        let half = d / 2.0;
                        ((half - 0.1).round_ties_even() as u32, (half + 0.1).round_ties_even() as u32)
                    } else {
                        (0, d as u32)
                    }
                };
                let ((left, right), (top, bottom)) = (split(dw), split(dh));
                Geometry {
                    tensor_width: nw + left + right,
                    tensor_height: nh + top + bottom,
                    width: nw,
                    height: nh,
                    left,
                    top,
                }
            }
        }
    }

    /// The transform back from the tensor to an image of `w`×`h`.
    pub fn transform(&self, w: u32, h: u32) -> Transform {
        Transform {
            gain_x: self.width as f32 / w as f32,
            gain_y: self.height as f32 / h as f32,
            pad_x: self.left as f32,
            pad_y: self.top as f32,
            input_width: self.tensor_width,
            input_height: self.tensor_height,
            width: w,
            height: h,
        }
    }
}

/// OpenCV's `resize(..., INTER_LINEAR)` of 8-bit RGB, bit for bit (its fixed-point arithmetic:
/// 11-bit coefficients, the vertical pass as its vectorised code rounds it): Ultralytics resizes
/// with it, and a model's scores follow its pixels — an int8 model's by whole quantization steps.
/// Measured against OpenCV 5.1 on the fixture photos: identical when shrinking and when enlarging.
/// `rows` is scratch (two horizontally resized rows).
pub fn resize_linear(src: &[u8], w: usize, h: usize, dst: &mut [u8], dw: usize, dh: usize, rows: &mut Vec<i32>) {
    /// Per output coordinate: the two source indices and their coefficients (sum 2048).
    /// Horizontally OpenCV moves a tap outside the image onto the edge with weight 1 (`clamp`);
    /// vertically it keeps the fraction and reads the edge row twice, which rounds differently
    /// in the first and last rows of an enlarged image.
    fn taps(src: usize, dst: usize, clamp: bool) -> Vec<(usize, usize, i32, i32)> {
        let scale = src as f64 / dst as f64;
        let last = src as i64 - 1;
        (0..dst)
            .map(|d| {
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let mut s = f.floor() as i64;
                let mut f = f - s as f32;
                if clamp && s < 0 {
                    (s, f) = (0, 0.0);
                }
                if clamp && s >= last {
                    (s, f) = (last, 0.0);
                }
                let a1 = (f * 2048.0).round_ties_even() as i32;
                let a0 = ((1.0 - f) * 2048.0).round_ties_even() as i32;
                (s.clamp(0, last) as usize, (s + 1).clamp(0, last) as usize, a0, a1)
            })
            .collect()
    }
    let (xs, ys) = (taps(w, dw, true), taps(h, dh, false));
    let row_len = dw * 3;
    rows.clear();
    rows.resize(2 * row_len, 0);
    let mut cached = [usize::MAX; 2];
    let horizontal = |y: usize, out: &mut [i32]| {
        let line = &src[y * w * 3..(y + 1) * w * 3];
        for (x, &(s0, s1, a0, a1)) in xs.iter().enumerate() {
            for c in 0..3 {
                out[x * 3 + c] = i32::from(line[s0 * 3 + c]) * a0 + i32::from(line[s1 * 3 + c]) * a1;
            }
        }
    };
    for (y, &(s0, s1, b0, b1)) in ys.iter().enumerate() {
        for (slot, src_row) in [(0, s0), (1, s1)] {
            if cached[slot] != src_row {
                // Reuse the other slot's row when it already holds this source row.
                if cached[1 - slot] == src_row {
                    let (a, b) = rows.split_at_mut(row_len);
                    if slot == 0 { a.copy_from_slice(b) } else { b.copy_from_slice(a) }
                } else {
                    horizontal(src_row, &mut rows[slot * row_len..(slot + 1) * row_len]);
                }
                cached[slot] = src_row;
            }
        }
        let (r0, r1) = rows.split_at(row_len);
        let out = &mut dst[y * row_len..(y + 1) * row_len];
        for ((o, &v0), &v1) in out.iter_mut().zip(r0).zip(r1) {
            let v = (((b0 * (v0 >> 4)) >> 16) + ((b1 * (v1 >> 4)) >> 16) + 2) >> 2;
            *o = v.clamp(0, 255) as u8;
        }
    }
}

/// Reusable resize state and buffers (one per worker, so nothing is allocated per image once
/// the buffers have grown to the input's size).
pub struct Preprocessor {
    spec: InputSpec,
    resizer: fr::Resizer,
    options: fr::ResizeOptions,
    resized: Vec<u8>,
    rows: Vec<i32>,
    /// Per model channel: 0..255 → the tensor's float value.
    lut: [[f32; 256]; 3],
}

impl Preprocessor {
    /// A preprocessor for `spec`'s input.
    pub fn new(spec: &InputSpec) -> Self {
        let alg = match spec.filter {
            // (Linear uses `resize_linear`, OpenCV's own arithmetic; this is its fallback name.)
            Filter::Linear => fr::ResizeAlg::Interpolation(fr::FilterType::Bilinear),
            // Convolution: the kernel widens with the downscale factor, as PIL's BILINEAR.
            Filter::Antialiased => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
        };
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
        Self {
            spec: spec.clone(),
            resizer: fr::Resizer::new(),
            options: fr::ResizeOptions::new().resize_alg(alg),
            resized: Vec::new(),
            rows: Vec::new(),
            lut,
        }
    }

    /// Frees the scratch buffers when they hold more than `bytes`. The resizer's grow with the
    /// input's width (the vertical pass runs first: width × output height × 3 bytes) and would
    /// otherwise stay at the largest size ever seen.
    pub fn release_buffers_over(&mut self, bytes: usize) {
        if self.resizer.size_of_internal_buffers() > bytes {
            self.resizer.reset_internal_buffers();
        }
        if self.resized.capacity() > bytes {
            self.resized = Vec::new();
        }
        if self.rows.capacity() * 4 > bytes {
            self.rows = Vec::new();
        }
    }

    /// Brings `img` to the model's input in `out`, returning the transform back.
    pub fn run(&mut self, img: &RgbImage, out: &mut InputTensor) -> Result<Transform> {
        self.run_from(img, (img.width, img.height), out)
    }

    /// [`Preprocessor::run`] for a picture decoded smaller than the image (DCT-scaled JPEG
    /// decoding): `full` is the image's own size, which the tensor's layout and the transform back
    /// are computed from, as for a full decode; only the resize starts from fewer pixels.
    pub fn run_from(&mut self, img: &RgbImage, full: (u32, u32), out: &mut InputTensor) -> Result<Transform> {
        let g = Geometry::of(&self.spec, full.0, full.1);
        let pixels: &[u8] = if (g.width, g.height) == (img.width, img.height) {
            &img.pixels
        } else if self.spec.filter == Filter::Linear {
            self.resized.clear();
            self.resized.resize(g.width as usize * g.height as usize * 3, 0);
            let (w, h) = (img.width as usize, img.height as usize);
            resize_linear(&img.pixels, w, h, &mut self.resized, g.width as usize, g.height as usize, &mut self.rows);
            &self.resized
        } else {
            let src = fr::images::ImageRef::new(img.width, img.height, &img.pixels, fr::PixelType::U8x3)
                .map_err(|e| DetectError::Resize(e.into()))?;
            let mut buf = std::mem::take(&mut self.resized);
            buf.clear();
            buf.resize(g.width as usize * g.height as usize * 3, 0);
            let mut dst = fr::images::Image::from_vec_u8(g.width, g.height, buf, fr::PixelType::U8x3)
                .map_err(|e| DetectError::Resize(e.into()))?;
            self.resizer.resize(&src, &mut dst, &self.options).map_err(|e| DetectError::Resize(e.into()))?;
            self.resized = dst.into_vec();
            &self.resized
        };
        let pad = match self.spec.resize {
            Resize::Letterbox { pad, .. } => pad,
            _ => 0,
        };
        fill(&self.spec, &self.lut, &g, pixels, pad, out);
        Ok(g.transform(full.0, full.1))
    }
}

/// Writes the resized pixels (`g.width`×`g.height` RGB) into the tensor at `g.left, g.top`,
/// padding with `pad`.
fn fill(spec: &InputSpec, lut: &[[f32; 256]; 3], g: &Geometry, pixels: &[u8], pad: u8, out: &mut InputTensor) {
    let (tw, th) = (g.tensor_width as usize, g.tensor_height as usize);
    let (w, h, left, top) = (g.width as usize, g.height as usize, g.left as usize, g.top as usize);
    out.shape = match spec.layout {
        Layout::Nchw => [1, 3, th, tw],
        Layout::Nhwc => [1, th, tw, 3],
    };
    let len = tw * th * 3;
    // Model channel c takes image channel src[c].
    let src: [usize; 3] = if spec.bgr { [2, 1, 0] } else { [0, 1, 2] };
    let padded = (tw, th) != (w, h);
    match &mut out.data {
        TensorData::F32(v) => {
            v.clear();
            v.resize(len, 0.0);
            let value = |c: usize, p: u8| lut[c][usize::from(p)];
            match spec.layout {
                Layout::Nchw => {
                    let plane = tw * th;
                    for c in 0..3 {
                        let dst = &mut v[c * plane..(c + 1) * plane];
                        if padded {
                            dst.fill(value(c, pad));
                        }
                        for y in 0..h {
                            let row = &pixels[y * w * 3..(y + 1) * w * 3];
                            let out_row = &mut dst[(y + top) * tw + left..(y + top) * tw + left + w];
                            for (o, px) in out_row.iter_mut().zip(row.chunks_exact(3)) {
                                *o = value(c, px[src[c]]);
                            }
                        }
                    }
                }
                Layout::Nhwc => {
                    if padded {
                        let fill = [value(0, pad), value(1, pad), value(2, pad)];
                        for px in v.chunks_exact_mut(3) {
                            px.copy_from_slice(&fill);
                        }
                    }
                    for y in 0..h {
                        let row = &pixels[y * w * 3..(y + 1) * w * 3];
                        let out_row = &mut v[((y + top) * tw + left) * 3..((y + top) * tw + left + w) * 3];
                        for (o, px) in out_row.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                            for c in 0..3 {
                                o[c] = value(c, px[src[c]]);
                            }
                        }
                    }
                }
            }
        }
        TensorData::U8(v) => {
            v.clear();
            v.resize(len, pad);
            match spec.layout {
                Layout::Nchw => {
                    let plane = tw * th;
                    for c in 0..3 {
                        for y in 0..h {
                            let row = &pixels[y * w * 3..(y + 1) * w * 3];
                            let start = c * plane + (y + top) * tw + left;
                            for (o, px) in v[start..start + w].iter_mut().zip(row.chunks_exact(3)) {
                                *o = px[src[c]];
                            }
                        }
                    }
                }
                Layout::Nhwc => {
                    for y in 0..h {
                        let row = &pixels[y * w * 3..(y + 1) * w * 3];
                        let start = ((y + top) * tw + left) * 3;
                        let out_row = &mut v[start..start + w * 3];
                        if !spec.bgr {
                            out_row.copy_from_slice(row);
                        } else {
                            for (o, px) in out_row.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                                o.copy_from_slice(&[px[2], px[1], px[0]]);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resize: Resize, layout: Layout, dtype: InputType) -> InputSpec {
        InputSpec {
            name: "images".into(),
            layout,
            dtype,
            width: 320,
            height: 320,
            dynamic: false,
            resize,
            filter: Filter::Linear,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            bgr: false,
            sizes_input: None,
            idct: crate::detector::decode::Idct::Accurate,
        }
    }

    const LETTERBOX: Resize = Resize::Letterbox { pad: 114, centred: true, stride: None };

    #[test]
    fn letterbox_geometry_follows_ultralytics_rounding() {
        let s = spec(LETTERBOX, Layout::Nchw, InputType::F32);
        // 400x300 → 320x240, 80 px of padding split 40/40.
        let g = Geometry::of(&s, 400, 300);
        assert_eq!((g.width, g.height, g.left, g.top, g.tensor_width, g.tensor_height), (320, 240, 0, 40, 320, 320));
        // 300x400 with an odd split: 241 → 79 px, round(39.4) = 39 left, round(39.6) = 40 right.
        let g = Geometry::of(&s, 300, 401);
        assert_eq!((g.width, g.height), (239, 320));
        assert_eq!((g.left, g.tensor_width), (40, 320));
        // Round half to even: 333x1000 → 106.56 → 107; 17x32 → 170 exactly.
        assert_eq!(Geometry::of(&s, 17, 32).width, 170);
        // A long thin image keeps at least one pixel.
        let g = Geometry::of(&s, 16_000, 1);
        assert_eq!((g.width, g.height), (320, 1));
        // Dynamic input (stride 32): only the padding to a multiple of 32.
        let dynamic =
            spec(Resize::Letterbox { pad: 114, centred: true, stride: Some(32) }, Layout::Nchw, InputType::F32);
        let g = Geometry::of(&dynamic, 400, 300);
        assert_eq!((g.tensor_width, g.tensor_height, g.top), (320, 256, 8));
    }

    #[test]
    fn letterbox_pads_and_scales_nchw() {
        let s = spec(LETTERBOX, Layout::Nchw, InputType::F32);
        let mut pre = Preprocessor::new(&s);
        let img = RgbImage { width: 400, height: 300, pixels: [255u8, 0, 51].repeat(400 * 300) };
        let mut t = InputTensor::new(&s);
        let tr = pre.run(&img, &mut t).unwrap();
        assert_eq!(t.shape, [1, 3, 320, 320]);
        let TensorData::F32(v) = &t.data else { panic!() };
        let at = |c: usize, y: usize, x: usize| v[c * 320 * 320 + y * 320 + x];
        assert!((at(0, 0, 0) - 114.0 / 255.0).abs() < 1e-6, "padding");
        assert!((at(0, 160, 160) - 1.0).abs() < 1e-6 && at(1, 160, 160) == 0.0 && (at(2, 160, 160) - 0.2).abs() < 1e-6);
        assert_eq!((tr.pad_y, tr.gain_x), (40.0, 0.8));
    }

    #[test]
    fn stretch_nhwc_raw_bgr_and_uint8() {
        let mut s = spec(Resize::Stretch, Layout::Nhwc, InputType::F32);
        s.scale = 1.0;
        s.bgr = true;
        let img = RgbImage { width: 40, height: 30, pixels: [10u8, 20, 30].repeat(40 * 30) };
        let mut t = InputTensor::new(&s);
        Preprocessor::new(&s).run(&img, &mut t).unwrap();
        assert_eq!(t.shape, [1, 320, 320, 3]);
        let TensorData::F32(v) = &t.data else { panic!() };
        assert_eq!(&v[..3], &[30.0, 20.0, 10.0]);

        let u8spec = spec(Resize::None, Layout::Nhwc, InputType::U8);
        let mut t = InputTensor::new(&u8spec);
        let tr = Preprocessor::new(&u8spec).run(&img, &mut t).unwrap();
        assert_eq!(t.shape, [1, 30, 40, 3]);
        assert_eq!(t.data, TensorData::U8(img.pixels.clone()));
        assert_eq!((tr.gain_x, tr.gain_y), (1.0, 1.0));
    }

    #[test]
    fn linear_resize_keeps_flat_colours_and_interpolates_between_columns() {
        let mut rows = vec![];
        let flat = [7u8, 100, 255].repeat(40 * 30);
        let mut out = vec![0u8; 13 * 11 * 3];
        resize_linear(&flat, 40, 30, &mut out, 13, 11, &mut rows);
        assert!(out.chunks(3).all(|p| p == [7, 100, 255]));
        // 2 columns (0 and 200) to 4: OpenCV gives 0, 50, 150, 200.
        let src = [0u8, 0, 0, 200, 200, 200];
        let mut out = vec![0u8; 4 * 3];
        resize_linear(&src, 2, 1, &mut out, 4, 1, &mut rows);
        assert_eq!(out.chunks(3).map(|p| p[0]).collect::<Vec<_>>(), vec![0, 50, 150, 200]);
    }

    #[test]
    fn enlarging_rounds_the_edge_rows_as_opencv_does() {
        // cv2.resize(src, (9, 7), interpolation=cv2.INTER_LINEAR) of a 5x4 pattern, OpenCV 5.1:
        // the first and last rows read the edge row twice with the fraction kept.
        let src: Vec<u8> = (0..4)
            .flat_map(|y| (0..5).flat_map(move |x| (0..3).map(move |c| ((x * 37 + y * 91 + c * 53) % 256) as u8)))
            .collect();
        let opencv: [u8; 189] = [
            0, 53, 106, 12, 65, 118, 33, 86, 139, 53, 106, 159, 74, 127, 180, 95, 147, 200, 115, 168, 221, 136, 188,
            242, 148, 201, 254, 32, 85, 138, 45, 98, 151, 65, 118, 171, 86, 139, 151, 106, 159, 121, 127, 180, 141,
            148, 190, 162, 168, 160, 183, 180, 142, 195, 85, 137, 190, 97, 150, 203, 117, 170, 223, 138, 191, 138, 158,
            211, 27, 179, 232, 47, 199, 226, 68, 220, 115, 88, 232, 48, 101, 137, 190, 115, 149, 159, 127, 169, 108,
            147, 133, 115, 111, 83, 136, 61, 103, 156, 81, 124, 162, 102, 144, 112, 122, 157, 82, 135, 170, 223, 38,
            182, 156, 51, 203, 45, 71, 118, 39, 92, 6, 59, 112, 27, 80, 133, 47, 100, 151, 68, 121, 162, 80, 133, 168,
            76, 129, 90, 88, 111, 103, 109, 80, 123, 89, 91, 144, 59, 111, 164, 79, 132, 185, 99, 153, 187, 120, 173,
            116, 132, 185, 74, 17, 70, 123, 29, 82, 135, 50, 103, 156, 70, 123, 176, 91, 144, 197, 111, 165, 217, 132,
            185, 209, 152, 206, 88, 165, 218, 15,
        ];
        let (mut out, mut rows) = (vec![0u8; 9 * 7 * 3], vec![]);
        resize_linear(&src, 5, 4, &mut out, 9, 7, &mut rows);
        assert_eq!(out, opencv);
    }

    #[test]
    fn mean_and_std_apply_after_scaling() {
        let mut s = spec(Resize::Stretch, Layout::Nchw, InputType::F32);
        s.mean = [0.5, 0.5, 0.5];
        s.std = [0.25, 0.5, 1.0];
        let img = RgbImage { width: 2, height: 2, pixels: vec![255; 12] };
        let mut t = InputTensor::new(&s);
        Preprocessor::new(&s).run(&img, &mut t).unwrap();
        let TensorData::F32(v) = &t.data else { panic!() };
        let plane = 320 * 320;
        assert_eq!((v[0], v[plane], v[2 * plane]), (2.0, 1.0, 0.5));
    }

    #[test]
    fn left_right_halves_stay_apart() {
        let (w, h) = (100u32, 50u32);
        let mut pixels = Vec::with_capacity((w * h * 3) as usize);
        for _y in 0..h {
            for x in 0..w {
                let v = if x < w / 2 { 0 } else { 255 };
                pixels.extend_from_slice(&[v, v, v]);
            }
        }
        let mut s = spec(Resize::Stretch, Layout::Nhwc, InputType::F32);
        s.scale = 1.0;
        s.filter = Filter::Antialiased;
        let mut t = InputTensor::new(&s);
        Preprocessor::new(&s).run(&RgbImage { width: w, height: h, pixels }, &mut t).unwrap();
        let TensorData::F32(v) = &t.data else { panic!() };
        let at = |x: usize, y: usize| v[(y * 320 + x) * 3];
        assert_eq!(at(10, 100), 0.0);
        assert_eq!(at(310, 100), 255.0);
    }
}
