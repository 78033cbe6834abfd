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

/// The photos in `from`, decoded, once `out` exists.
fn sources_and_out_dir(from: &Path, out: &Path) -> Result<Vec<image::RgbImage>> {
    let decoded = super::load_images(from)?
        .iter()
        .map(|s| {
            image::load_from_memory(&s.bytes).map(|i| i.into_rgb8()).with_context(|| format!("decoding {}", s.name))
        })
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok(decoded)
}

/// Writes `count` JPEGs `img-000.jpg`… to `out` from the photos in `from`, averaging `target_mb` MB.
pub fn make(from: &Path, count: usize, out: &Path, target_mb: f64) -> Result<Summary> {
    let decoded = sources_and_out_dir(from, out)?;
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

/// Phone-size photos: `count` JPEGs `phone-000.jpg`… of 12 MP (4032×3024, every third one
/// portrait), 2–5 MB each, from crops of the photos in `from` enlarged with sensor-like noise (a
/// smooth enlargement alone compresses far below a phone's file sizes). Deterministic.
pub fn make_phone(from: &Path, count: usize, out: &Path) -> Result<Summary> {
    let decoded = sources_and_out_dir(from, out)?;
    let mut total = 0u64;
    for i in 0..count {
        let mut rng = Rng(0x0070_686f_6e65 ^ i as u64);
        let src = &decoded[i % decoded.len()];
        let (w, h) = src.dimensions();
        let (ow, oh) = if i % 3 == 2 { (3024, 4032) } else { (4032, 3024) };
        // A crop of the source with the output's aspect ratio, 60-100 % of what fits.
        let fit = (w as f64 / ow as f64).min(h as f64 / oh as f64) * rng.range(0.6, 1.0);
        let (cw, ch) = (((ow as f64 * fit) as u32).max(16), ((oh as f64 * fit) as u32).max(16));
        let x = (rng.range(0.0, 1.0) * w.saturating_sub(cw) as f64) as u32;
        let y = (rng.range(0.0, 1.0) * h.saturating_sub(ch) as f64) as u32;
        let crop = image::imageops::crop_imm(src, x, y, cw, ch).to_image();
        let mut img = image::imageops::resize(&crop, ow, oh, FilterType::Triangle);
        let amplitude = rng.range(5.0, 9.0);
        for p in img.pixels_mut() {
            for c in p.0.iter_mut() {
                let noise = (rng.range(-1.0, 1.0) * amplitude) as i32;
                *c = (i32::from(*c) + noise).clamp(0, 255) as u8;
            }
        }
        // Phone JPEGs are 2-5 MB: a quality that lands outside is stepped once or twice.
        let mut quality = rng.range(88.0, 93.0).round() as u8;
        let mut buf = Vec::new();
        for _ in 0..4 {
            buf.clear();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
                .encode_image(&img)
                .context("encoding a JPEG")?;
            match buf.len() {
                n if n < 2_100_000 && quality < 97 => quality += 3,
                n if n > 4_900_000 && quality > 70 => quality -= 4,
                _ => break,
            }
        }
        let path = out.join(format!("phone-{i:03}.jpg"));
        std::fs::write(&path, &buf).with_context(|| format!("writing {}", path.display()))?;
        total += buf.len() as u64;
    }
    Ok(Summary { count, total_bytes: total })
}
