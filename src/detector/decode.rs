//! Bytes → RGB pixels: format sniffing, the pixel-count guard before any pixel is allocated,
//! EXIF orientation, and base64 (with or without a `data:` prefix).

use std::io::{Cursor, ErrorKind};

use base64::Engine as _;
use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use crate::error::{Error, Result};

/// An 8-bit RGB image, rows packed.
#[derive(Debug, Clone, Default)]
pub struct RgbImage {
    /// Width in pixels (after EXIF orientation).
    pub width: u32,
    /// Height in pixels (after EXIF orientation).
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

/// Strips an optional `data:<mime>;base64,` prefix and surrounding whitespace.
pub fn strip_data_url(text: &str) -> &str {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("data:")
        && let Some((_, payload)) = rest.split_once(',')
    {
        return payload.trim();
    }
    t
}

/// Decodes base64 text (standard alphabet, padding optional, `data:` prefix allowed).
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_base64_into(text, &mut out)?;
    Ok(out)
}

/// [`decode_base64`] into a reusable buffer (cleared first), so a worker allocates nothing per image.
pub fn decode_base64_into(text: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let text = std::str::from_utf8(text).map_err(|_| Error::InvalidBase64("not UTF-8 text".into()))?;
    let payload = strip_data_url(text);
    if payload.is_empty() {
        return Err(Error::InvalidBase64("empty string".into()));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    // Line breaks inside base64 (MIME style) are tolerated, as Python's b64decode does.
    let result = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = payload.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        engine.decode_vec(compact, out)
    } else {
        engine.decode_vec(payload, out)
    };
    result.map_err(|e| Error::InvalidBase64(e.to_string()))
}

/// The formats objdet accepts, recognised by their magic bytes.
pub fn sniff_format(bytes: &[u8]) -> Result<ImageFormat> {
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => Ok(f),
        Ok(other) => Err(Error::NotAnImage(format!("{other:?} images are not supported"))),
        Err(_) if bytes.is_empty() => Err(Error::NotAnImage("empty data".into())),
        Err(_) => Err(Error::NotAnImage("unrecognised data (expected JPEG, PNG or WebP)".into())),
    }
}

/// Reads only the header: `(width, height)` before orientation.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    sniff_format(bytes)?;
    let size = imagesize::blob_size(bytes).map_err(|e| Error::NotAnImage(e.to_string()))?;
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Ok((clamp(size.width), clamp(size.height)))
}

/// Decodes JPEG/PNG/WebP bytes to RGB, refusing images over `max_pixels` from their header alone
/// and applying the EXIF orientation.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    let mut out = RgbImage::default();
    decode_image_into(bytes, max_pixels, &mut out)?;
    Ok(out)
}

/// [`decode_image`] into a reusable image: an RGB image without EXIF rotation (the common case)
/// is decoded straight into `out.pixels`, so a worker does not map fresh pages for every image.
pub fn decode_image_into(bytes: &[u8], max_pixels: u64, out: &mut RgbImage) -> Result<()> {
    let format = sniff_format(bytes)?;
    // The guard runs on the header bytes alone (some decoders read far past the header on creation).
    if let Ok(size) = imagesize::blob_size(bytes) {
        check_pixels(size.width as u64, size.height as u64, max_pixels)?;
    }
    // The JPEG decoder fills a cut-off scan with grey instead of failing: check for the end marker.
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(Error::TruncatedImage("the JPEG data ends before its end-of-image marker".into()));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // Decoder working memory beyond the output buffer; the output itself is bounded by max_pixels.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(header_error)?;

    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::NotAnImage(format!("image has no pixels ({w}x{h})")));
    }
    check_pixels(u64::from(w), u64::from(h), max_pixels)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    if decoder.color_type() == ColorType::Rgb8 && orientation == image::metadata::Orientation::NoTransforms {
        let len = usize::try_from(decoder.total_bytes()).map_err(|_| Error::ImageTooLarge {
            width: w,
            height: h,
            limit: max_pixels,
        })?;
        out.pixels.clear();
        out.pixels.resize(len, 0);
        decoder.read_image(&mut out.pixels).map_err(|e| body_error(e, w, h, max_pixels))?;
        (out.width, out.height) = (w, h);
        return Ok(());
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| body_error(e, w, h, max_pixels))?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    *out = RgbImage { width: rgb.width(), height: rgb.height(), pixels: rgb.into_raw() };
    Ok(())
}

/// Whether a JPEG's scan data is followed by an end-of-image marker (FF D9).
///
/// Walks the marker segments up to the first start-of-scan (skipping APP segments, whose embedded
/// thumbnails carry their own markers), then looks for EOI: inside entropy-coded data a literal FF is
/// always stuffed as FF 00, so FF D9 after the scan starts can only be the real end.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut pos = 2; // after SOI
    loop {
        while bytes.get(pos) == Some(&0xff) && bytes.get(pos + 1) == Some(&0xff) {
            pos += 1; // fill bytes
        }
        match (bytes.get(pos), bytes.get(pos + 1)) {
            (Some(0xff), Some(0xda)) => break,
            (Some(0xff), Some(0x01 | 0xd0..=0xd7)) => pos += 2,
            (Some(0xff), Some(_)) => match bytes.get(pos + 2..pos + 4) {
                Some(len) => pos += 2 + usize::from(u16::from_be_bytes([len[0], len[1]])),
                None => return false,
            },
            _ => return false,
        }
    }
    bytes[pos..].windows(2).any(|w| w == [0xff, 0xd9])
}

fn check_pixels(w: u64, h: u64, max_pixels: u64) -> Result<()> {
    if w.saturating_mul(h) > max_pixels {
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        return Err(Error::ImageTooLarge { width: clamp(w), height: clamp(h), limit: max_pixels });
    }
    Ok(())
}

/// An error while reading the header: the data is not a usable image.
fn header_error(e: ImageError) -> Error {
    match e {
        ImageError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => {
            Error::TruncatedImage("the image header is cut short".into())
        }
        other => Error::NotAnImage(other.to_string()),
    }
}

/// An error after the header was accepted: the pixel data is cut short or corrupt.
fn body_error(e: ImageError, w: u32, h: u32, max_pixels: u64) -> Error {
    match e {
        ImageError::Limits(_) => Error::ImageTooLarge { width: w, height: h, limit: max_pixels },
        other => Error::TruncatedImage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG header (signature + IHDR) claiming `w`x`h`, with no pixel data at all.
    pub(crate) fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        out.extend_from_slice(&13u32.to_be_bytes());
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&ihdr);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn huge_png_header_is_refused_before_decoding() {
        let png = png_header(50_000, 50_000);
        assert_eq!(dimensions(&png).unwrap(), (50_000, 50_000));
        let err = decode_image(&png, 40_000_000).unwrap_err();
        assert_eq!(err.code(), "image_too_large", "{err}");
    }

    #[test]
    fn garbage_is_not_an_image() {
        assert_eq!(decode_image(b"hello world, not an image", 1 << 20).unwrap_err().code(), "not_an_image");
        assert_eq!(decode_image(b"", 1 << 20).unwrap_err().code(), "not_an_image");
        assert_eq!(decode_image(b"GIF89a\x01\x00\x01\x00", 1 << 20).unwrap_err().code(), "not_an_image");
    }

    #[test]
    fn png_without_pixel_data_is_truncated() {
        let png = png_header(4, 4);
        assert_eq!(decode_image(&png, 1 << 20).unwrap_err().code(), "truncated_image");
    }

    #[test]
    fn jpeg_completeness() {
        let mut img = Vec::new();
        image::DynamicImage::new_rgb8(64, 48).write_to(&mut Cursor::new(&mut img), ImageFormat::Jpeg).unwrap();
        assert!(jpeg_is_complete(&img));
        let mut trailing = img.clone();
        trailing.extend_from_slice(b"trailing metadata");
        assert!(jpeg_is_complete(&trailing));
        assert!(!jpeg_is_complete(&img[..img.len() - 2]));
        assert!(!jpeg_is_complete(&img[..20]));
        assert_eq!(decode_image(&img[..img.len() - 10], 1 << 20).unwrap_err().code(), "truncated_image");
        assert_eq!(decode_image(&img, 1 << 20).unwrap().width, 64);
    }

    #[test]
    fn base64_variants() {
        assert_eq!(decode_base64(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64(b"data:image/png;base64,aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"***").unwrap_err().code(), "invalid_base64");
        assert_eq!(decode_base64(b"").unwrap_err().code(), "invalid_base64");
    }

    #[test]
    fn reused_buffers_decode_like_fresh_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
        let mut rgb = RgbImage::default();
        let mut encoded = Vec::new();
        // An RGBA PNG and a grey JPEG take the converting path; the photos decode in place.
        let mut rgba = Vec::new();
        image::DynamicImage::new_rgba8(64, 48).write_to(&mut Cursor::new(&mut rgba), ImageFormat::Png).unwrap();
        let mut grey = Vec::new();
        image::DynamicImage::new_luma8(40, 30).write_to(&mut Cursor::new(&mut grey), ImageFormat::Jpeg).unwrap();
        let inputs = [("rgba.png", rgba), ("grey.jpg", grey)].into_iter().chain(
            ["rocket.jpg", "dog.jpg", "astronaut.png", "eagle.jpg"].map(|n| (n, std::fs::read(dir.join(n)).unwrap())),
        );
        // Large, smaller, converted and in-place images in turn: the buffers carry nothing over.
        for (name, bytes) in inputs {
            let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
            decode_base64_into(text.as_bytes(), &mut encoded).unwrap();
            assert_eq!(encoded, bytes, "{name}");
            decode_image_into(&encoded, 40_000_000, &mut rgb).unwrap();
            let fresh = decode_image(&bytes, 40_000_000).unwrap();
            assert_eq!((rgb.width, rgb.height), (fresh.width, fresh.height), "{name}");
            assert_eq!(rgb.pixels.len(), (rgb.width * rgb.height * 3) as usize, "{name}");
            assert!(rgb.pixels == fresh.pixels, "{name}: pixels differ from a fresh decode");
        }
        assert_eq!(decode_base64_into(b"***", &mut encoded).unwrap_err().code(), "invalid_base64");
        assert_eq!(decode_image_into(b"not an image", 40_000_000, &mut rgb).unwrap_err().code(), "not_an_image");
    }
}
