//! RGB image → the model's input: stretch to 512×512 (bilinear, no letterbox), NHWC f32 0..255.

use fast_image_resize as fr;

use super::decode::RgbImage;
use crate::error::ImageError;

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Side of the square model input.
pub const INPUT_SIZE: u32 = 512;
/// Elements of one input tensor `[1, 512, 512, 3]`.
pub const INPUT_LEN: usize = (INPUT_SIZE * INPUT_SIZE * 3) as usize;

/// Reusable resize state and buffers (one per worker, so nothing is allocated per image).
pub struct Preprocessor {
    resizer: fr::Resizer,
    options: fr::ResizeOptions,
    resized: fr::images::Image<'static>,
}

impl Default for Preprocessor {
    fn default() -> Self {
        Self::new()
    }
}

impl Preprocessor {
    /// A preprocessor with its 512×512 RGB buffer allocated.
    pub fn new() -> Self {
        Self {
            resizer: fr::Resizer::new(),
            // Convolution with a bilinear kernel = PIL's BILINEAR resize, which the reference used.
            options: fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)),
            resized: fr::images::Image::new(INPUT_SIZE, INPUT_SIZE, fr::PixelType::U8x3),
        }
    }

    /// Frees the resizer's scratch buffers when they hold more than `bytes`. They grow with the
    /// input's width (the vertical pass runs first: width × 512 × 3 bytes, 25 MB at 16,384 pixels
    /// wide) and would otherwise stay at the largest size ever seen.
    pub fn release_buffers_over(&mut self, bytes: usize) {
        if self.resizer.size_of_internal_buffers() > bytes {
            self.resizer.reset_internal_buffers();
        }
    }

    /// Resizes `img` to 512×512 and writes it as f32 NHWC into `out` (`INPUT_LEN` elements).
    pub fn run(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        let src = fr::images::ImageRef::new(img.width, img.height, &img.pixels, fr::PixelType::U8x3)
            .map_err(|e| ImageError::Resize(e.into()))?;
        self.resizer.resize(&src, &mut self.resized, &self.options).map_err(|e| ImageError::Resize(e.into()))?;
        to_f32(self.resized.buffer(), out);
        Ok(())
    }
}

/// Widens u8 pixels to f32 (values stay 0..255: the model has no mean/std normalisation).
pub fn to_f32(pixels: &[u8], out: &mut [f32]) {
    for (o, &p) in out.iter_mut().zip(pixels) {
        *o = f32::from(p);
    }
}

/// The same resize with the `image` crate (triangle filter), kept for the benchmark comparison.
pub fn resize_with_image(img: &RgbImage, out: &mut [f32]) -> Result<()> {
    let buf = image::RgbImage::from_raw(img.width, img.height, img.pixels.clone())
        .ok_or_else(|| ImageError::Resize("the pixel buffer does not match its dimensions".into()))?;
    let resized = image::imageops::resize(&buf, INPUT_SIZE, INPUT_SIZE, image::imageops::FilterType::Triangle);
    to_f32(resized.as_raw(), out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_colour_survives_resize() {
        let img = RgbImage { width: 40, height: 30, pixels: [10u8, 20, 30].repeat(40 * 30) };
        let mut out = vec![0f32; INPUT_LEN];
        Preprocessor::new().run(&img, &mut out).unwrap();
        assert_eq!(&out[..3], &[10.0, 20.0, 30.0]);
        assert_eq!(&out[INPUT_LEN - 3..], &[10.0, 20.0, 30.0]);
    }

    #[test]
    fn left_right_halves_stay_apart() {
        // Left half black, right half white: the resized image keeps that layout (NHWC order).
        let (w, h) = (100u32, 50u32);
        let mut pixels = Vec::with_capacity((w * h * 3) as usize);
        for _y in 0..h {
            for x in 0..w {
                let v = if x < w / 2 { 0 } else { 255 };
                pixels.extend_from_slice(&[v, v, v]);
            }
        }
        let mut out = vec![0f32; INPUT_LEN];
        Preprocessor::new().run(&RgbImage { width: w, height: h, pixels }, &mut out).unwrap();
        let at = |x: usize, y: usize| out[(y * INPUT_SIZE as usize + x) * 3];
        assert_eq!(at(10, 100), 0.0);
        assert_eq!(at(500, 100), 255.0);
    }
}
