//! Hostile and odd images, built the way an attacker would: tiny files claiming huge frames.

use std::io::Cursor;

use image::ImageEncoder as _;

/// A PNG that is only a signature and an IHDR chunk claiming `w`×`h` (8-bit RGB), no pixel data.
pub fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
    out
}

/// A complete, valid black RGB PNG of `w`×`h`, deflated as hard as possible (a 40,000,000×1 one
/// is ~116 KB).
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let pixels = vec![0u8; w as usize * h as usize * 3];
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
    .expect("encode PNG");
    out
}

/// A real baseline JPEG of a black `w`×`h` image.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::new_rgb8(w, h).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

/// A 64×48 JPEG whose start-of-frame claims `w`×`h`: a few hundred bytes that a lenient decoder
/// would decode into a full frame of grey.
pub fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut img = jpeg(64, 48);
    let sof = img.windows(2).position(|m| m == [0xff, 0xc0]).expect("baseline SOF");
    img[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    img[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    img
}

/// The first `fraction` of a JPEG's bytes with an end-of-image marker appended.
pub fn truncated_with_eoi(jpeg: &[u8], fraction: f64) -> Vec<u8> {
    let mut out = jpeg[..(jpeg.len() as f64 * fraction) as usize].to_vec();
    out.extend_from_slice(&[0xff, 0xd9]);
    out
}
