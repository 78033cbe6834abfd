//! `objdet dataset`: a deterministic benchmark set from a few photos — crops, scales, flips and JPEG
//! qualities — whose files average a target size (the original study's 200 images were 43.6 MB,
//! about 0.22 MB each).

use std::path::Path;

use image::imageops::FilterType;

use anyhow::{Context as _, Result};

/// A small deterministic generator (SplitMix64): the same inputs always give the same set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Files written.
    pub count: usize,
    /// Total bytes.
    pub total_bytes: u64,
}

/// Writes `count` JPEGs `img-000.jpg`… to `out` from the photos in `from`, averaging `target_mb` MB.
pub fn make(from: &Path, count: usize, out: &Path, target_mb: f64) -> Result<Summary> {
    let sources = super::load_images(from)?;
    let decoded: Vec<image::RgbImage> = sources
        .iter()
        .map(|s| {
            image::load_from_memory(&s.bytes).map(|i| i.into_rgb8()).with_context(|| format!("decoding {}", s.name))
        })
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let target = target_mb * 1e6;
    let mut bytes_per_pixel = 0.25; // first guess for a JPEG photo at q≈85; refined as we go
    let mut total = 0u64;
    for i in 0..count {
        let mut rng = Rng(0x6f62_6a64_6574 ^ i as u64);
        let src = &decoded[i % decoded.len()];
        // Crop 70-100 % of each side at a random offset.
        let (w, h) = src.dimensions();
        let cw = ((w as f64 * rng.range(0.7, 1.0)) as u32).max(16);
        let ch = ((h as f64 * rng.range(0.7, 1.0)) as u32).max(16);
        let x = (rng.range(0.0, 1.0) * (w - cw) as f64) as u32;
        let y = (rng.range(0.0, 1.0) * (h - ch) as f64) as u32;
        let mut img = image::imageops::crop_imm(src, x, y, cw, ch).to_image();
        if rng.range(0.0, 1.0) < 0.5 {
            img = image::imageops::flip_horizontal(&img);
        }
        // Scale so the expected file size is near the target (±30 %), from the running bytes/pixel.
        let quality = rng.range(70.0, 95.0).round() as u8;
        let want_pixels = target * rng.range(0.7, 1.3) / bytes_per_pixel;
        let scale = (want_pixels / (cw as f64 * ch as f64)).sqrt().clamp(0.25, 4.0);
        let (nw, nh) = (((cw as f64 * scale) as u32).max(16), ((ch as f64 * scale) as u32).max(16));
        let img = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
            .encode_image(&img)
            .context("encoding a JPEG")?;
        let path = out.join(format!("img-{i:03}.jpg"));
        std::fs::write(&path, &buf).with_context(|| format!("writing {}", path.display()))?;
        total += buf.len() as u64;
        let bpp = buf.len() as f64 / (nw as f64 * nh as f64);
        bytes_per_pixel = 0.7 * bytes_per_pixel + 0.3 * bpp;
    }
    Ok(Summary { count, total_bytes: total })
}
