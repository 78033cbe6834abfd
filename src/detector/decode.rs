//! Bytes → RGB pixels: format sniffing, the pixel-count guard before any pixel is allocated,
//! EXIF orientation, and base64 (with or without a `data:` prefix).

use std::io::{Cursor, ErrorKind};

use base64::Engine as _;
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::error::DetectError;
pub use super::spec::Idct;

type Result<T, E = DetectError> = std::result::Result<T, E>;

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

/// Decodes base64 text (standard alphabet, padding optional, `data:` prefix allowed).
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_base64_into(text, &mut out)?;
    Ok(out)
}

/// [`decode_base64`] into a reusable buffer (cleared first), so a worker allocates nothing per image.
///
/// One pass over the text in the common case (no `data:` prefix, no line breaks): the prefix is
/// looked for in the first bytes only, and the UTF-8 check and the whitespace removal run only
/// when the plain decode fails (base64 text is ASCII, so a decoded payload was valid UTF-8).
pub fn decode_base64_into(text: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let text = text.trim_ascii();
    let (prefix, payload) = match text.strip_prefix(b"data:") {
        Some(rest) => match memchr::memchr(b',', rest) {
            Some(comma) => (&text[..5 + comma], rest[comma + 1..].trim_ascii()),
            None => (&[][..], text),
        },
        None => (&[][..], text),
    };
    std::str::from_utf8(prefix).map_err(DetectError::Base64NotText)?;
    if payload.is_empty() {
        return Err(DetectError::Base64Empty);
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let Err(first) = engine.decode_vec(payload, out) else { return Ok(()) };
    std::str::from_utf8(payload).map_err(DetectError::Base64NotText)?;
    if !payload.iter().any(u8::is_ascii_whitespace) {
        return Err(DetectError::Base64(first));
    }
    // Line breaks inside base64 (MIME style) are tolerated, as Python's b64decode does.
    out.clear();
    let compact: Vec<u8> = payload.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    engine.decode_vec(compact, out).map_err(DetectError::Base64)
}

/// One image format objdet reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The decoder's name for it.
    pub format: ImageFormat,
    /// Its media type, as in `Content-Type` and presigned uploads.
    pub media_type: &'static str,
    /// File extensions, the first the one objdet writes.
    pub extensions: &'static [&'static str],
}

/// The image formats objdet reads: the one list every front door, upload and client uses.
pub const FORMATS: &[Format] = &[
    Format { format: ImageFormat::Jpeg, media_type: "image/jpeg", extensions: &["jpg", "jpeg"] },
    Format { format: ImageFormat::Png, media_type: "image/png", extensions: &["png"] },
    Format { format: ImageFormat::WebP, media_type: "image/webp", extensions: &["webp"] },
];

pub use super::error::FORMAT_NAMES;

impl Format {
    /// The format of a media type (lower case, no parameters; `image/jpg` is taken for JPEG).
    pub fn of_media_type(media_type: &str) -> Option<&'static Format> {
        let media_type = if media_type == "image/jpg" { "image/jpeg" } else { media_type };
        FORMATS.iter().find(|f| f.media_type == media_type)
    }

    /// The format of a file extension (any case).
    pub fn of_extension(ext: &str) -> Option<&'static Format> {
        let ext = ext.to_ascii_lowercase();
        FORMATS.iter().find(|f| f.extensions.contains(&ext.as_str()))
    }

    /// The format of encoded bytes, from their magic number.
    pub fn of_bytes(bytes: &[u8]) -> Option<&'static Format> {
        let guessed = image::guess_format(bytes).ok()?;
        FORMATS.iter().find(|f| f.format == guessed)
    }
}

/// The formats objdet accepts, recognised by their magic bytes.
pub fn sniff_format(bytes: &[u8]) -> Result<ImageFormat> {
    match (Format::of_bytes(bytes), image::guess_format(bytes)) {
        (Some(f), _) => Ok(f.format),
        (None, Ok(other)) => Err(DetectError::UnsupportedFormat { format: format!("{other:?}") }),
        (None, Err(_)) if bytes.is_empty() => Err(DetectError::Empty),
        (None, Err(_)) => Err(DetectError::Unrecognised),
    }
}

/// Reads only the header: `(width, height)` before orientation.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    sniff_format(bytes)?;
    let size = imagesize::blob_size(bytes).map_err(|e| DetectError::Header(e.into()))?;
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Ok((clamp(size.width), clamp(size.height)))
}

/// What an image may cost before any pixel is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pixels per image (`MAX_PIXELS`).
    pub max_pixels: u64,
    /// Width and height each (`MAX_IMAGE_SIDE`). Bounds the buffers that scale with one side of
    /// the input rather than with its area (the resizer's intermediate image is input width × 512).
    pub max_side: u32,
}

impl Limits {
    /// The error for an image of `width`×`height` over these limits.
    pub fn too_large(&self, width: u32, height: u32) -> DetectError {
        DetectError::TooLarge { width, height, max_pixels: self.max_pixels, max_side: self.max_side }
    }

    /// Refuses `w`×`h` when either side or the area is over the limits.
    pub fn check(&self, w: u64, h: u64) -> Result<()> {
        if w > u64::from(self.max_side) || h > u64::from(self.max_side) || w.saturating_mul(h) > self.max_pixels {
            let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            return Err(self.too_large(clamp(w), clamp(h)));
        }
        Ok(())
    }
}

/// Decodes JPEG/PNG/WebP bytes to RGB (see [`decode_image_into`]) with no further admission check.
pub fn decode_image(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    let mut out = RgbImage::default();
    decode_image_into(bytes, limits, &mut out, |_, _| Ok(()))?;
    Ok(out)
}

/// How large a picture the caller needs, given the image's (oriented) width and height: a JPEG at
/// least 4× as large on both sides is decoded at 1/4 or 1/8 scale in the DCT domain (libjpeg-turbo's
/// scaled decompression), never below this size.
pub type Want<'a> = &'a dyn Fn(u32, u32) -> (u32, u32);

/// The DCT scale (n/8, n in 1, 2, 8) to decode a `w`×`h` (stored) JPEG at when `need` (in stored
/// orientation) is enough: 1/8 or 1/4 only, so that photos up to 4× the input keep the full decode
/// their reference implementation made (the scores of Ultralytics' predictor, say, follow it).
pub fn dct_scale(w: u32, h: u32, need: (u32, u32)) -> u8 {
    [1u8, 2]
        .into_iter()
        .find(|&n| {
            let side = |v: u32| (u64::from(v) * u64::from(n)).div_ceil(8);
            side(w) >= u64::from(need.0) && side(h) >= u64::from(need.1)
        })
        .unwrap_or(8)
}

/// Decodes JPEG/PNG/WebP bytes to RGB into a reusable image, refusing images over `limits` from
/// their header alone and applying the EXIF orientation.
///
/// `admit(width, height)` runs once the decoder has read the real dimensions and before any pixel
/// is allocated (the request's pixel budget); its error is this image's. An RGB image without EXIF
/// rotation (the common case) is decoded straight into `out.pixels`, so a worker does not map fresh
/// pages for every image.
pub fn decode_image_into(
    bytes: &[u8],
    limits: &Limits,
    out: &mut RgbImage,
    admit: impl FnOnce(u32, u32) -> Result<()>,
) -> Result<()> {
    decode_image_with(bytes, limits, Idct::Accurate, None, out, admit).map(|_| ())
}

/// [`decode_image_into`] with the JPEG IDCT `idct` and, with `want`, DCT-scaled decoding of large
/// JPEGs. Returns the image's full (oriented) width and height: `out` may be smaller.
pub fn decode_image_with(
    bytes: &[u8],
    limits: &Limits,
    idct: Idct,
    want: Option<Want<'_>>,
    out: &mut RgbImage,
    admit: impl FnOnce(u32, u32) -> Result<()>,
) -> Result<(u32, u32)> {
    let format = sniff_format(bytes)?;
    // The guard runs on the header bytes alone (some decoders read far past the header on creation).
    if let Ok(size) = imagesize::blob_size(bytes) {
        limits.check(size.width as u64, size.height as u64)?;
    }
    // The JPEG decoder fills missing scan data with grey instead of failing.
    if format == ImageFormat::Jpeg {
        check_jpeg_scan(bytes)?;
        super::jpeg_scan::check(bytes).map_err(|reason| DetectError::TruncatedScan { reason })?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // Decoder working memory beyond the output buffer; the output itself is bounded by max_pixels.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| header_error(e, limits))?;

    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(DetectError::NoPixels { width: w, height: h });
    }
    limits.check(u64::from(w), u64::from(h))?;
    admit(w, h)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    // JPEGs through libjpeg-turbo (CMYK ones too, converted as the `image` crate does).
    use image::metadata::Orientation::{NoTransforms, Rotate90, Rotate90FlipH, Rotate270, Rotate270FlipH};
    let turned = matches!(orientation, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH);
    let full = if turned { (h, w) } else { (w, h) };
    if format == ImageFormat::Jpeg && matches!(decoder.color_type(), ColorType::Rgb8 | ColorType::L8) {
        drop(decoder);
        // The size wanted is of the oriented picture; the JPEG is stored unturned.
        let scale = want.map_or(8, |want| {
            let need = want(full.0, full.1);
            dct_scale(w, h, if turned { (need.1, need.0) } else { need })
        });
        let cmyk = super::jpeg_scan::components(bytes) == Some(4);
        decode_jpeg_into(bytes, w, h, idct, scale, cmyk, out)?;
        if orientation != NoTransforms {
            let pixels = std::mem::take(&mut out.pixels);
            let buf = image::RgbImage::from_raw(out.width, out.height, pixels)
                .ok_or_else(|| DetectError::Resize("the pixel buffer does not match its dimensions".into()))?;
            let mut img = DynamicImage::ImageRgb8(buf);
            img.apply_orientation(orientation);
            let rgb = img.into_rgb8();
            *out = RgbImage { width: rgb.width(), height: rgb.height(), pixels: rgb.into_raw() };
        }
        return Ok(full);
    }
    if decoder.color_type() == ColorType::Rgb8 && orientation == image::metadata::Orientation::NoTransforms {
        let len = usize::try_from(decoder.total_bytes()).map_err(|_| limits.too_large(w, h))?;
        out.pixels.clear();
        out.pixels.resize(len, 0);
        decoder.read_image(&mut out.pixels).map_err(|e| body_error(e, w, h, limits))?;
        (out.width, out.height) = (w, h);
        return Ok(full);
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| body_error(e, w, h, limits))?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    *out = RgbImage { width: rgb.width(), height: rgb.height(), pixels: rgb.into_raw() };
    Ok(full)
}

/// Decodes a JPEG whose header (`w`×`h`, checked against the limits) has been read, into `out` as
/// RGB, with libjpeg-turbo's defaults (fancy upsampling; the accurate integer IDCT unless `idct`
/// says otherwise) — the pixels OpenCV's `imread` and PIL give. libjpeg reports a fatal error by unwinding (MozJPEG's error
/// manager), caught here as this image's error.
fn decode_jpeg_into(bytes: &[u8], w: u32, h: u32, idct: Idct, scale: u8, cmyk: bool, out: &mut RgbImage) -> Result<()> {
    // libjpeg's scaled output size: ceil(side × scale / 8).
    let (w, h) = if scale == 8 {
        (w, h)
    } else {
        let side = |v: u32| (u64::from(v) * u64::from(scale)).div_ceil(8) as u32;
        (side(w), side(h))
    };
    let len =
        usize::try_from(u64::from(w) * u64::from(h) * 3).map_err(|_| DetectError::Truncated("too large".into()))?;
    out.pixels.clear();
    out.pixels.resize(len, 0);
    let pixels = &mut out.pixels;
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> std::io::Result<(usize, usize)> {
        let mut decompress = mozjpeg::decompress::DecompressBuilder::new().with_err(error_manager()).from_mem(bytes)?;
        if idct == Idct::Fast {
            decompress.dct_method(mozjpeg::DctMethod::IntegerFast);
        }
        if scale != 8 {
            decompress.scale(scale);
        }
        let mut started =
            if cmyk { decompress.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK)? } else { decompress.rgb()? };
        let size = (started.width(), started.height());
        if size == (w as usize, h as usize) {
            if cmyk {
                let mut four = vec![0u8; w as usize * h as usize * 4];
                started.read_scanlines_into::<u8>(&mut four)?;
                cmyk_to_rgb(&four, pixels);
            } else {
                started.read_scanlines_into::<u8>(pixels)?;
            }
        }
        started.finish()?;
        Ok(size)
    }));
    let message = |payload: Box<dyn std::any::Any + Send>| -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libjpeg failed".into())
    };
    match decoded {
        Ok(Ok(size)) if size == (w as usize, h as usize) => {
            (out.width, out.height) = (w, h);
            Ok(())
        }
        Ok(Ok((dw, dh))) => {
            Err(DetectError::Truncated(format!("libjpeg decoded {dw}x{dh}, the header says {w}x{h}").into()))
        }
        Ok(Err(e)) => Err(DetectError::Truncated(e.into())),
        Err(payload) => Err(DetectError::Truncated(message(payload).into())),
    }
}

/// Adobe's (inverted) CMYK, as libjpeg gives CMYK and YCCK files, to RGB: R = C × K / 255 (what
/// the `image` crate's decoder computes, rounded the same way).
fn cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8]) {
    let blend = |a: u8, b: u8| {
        let t = u32::from(a) * u32::from(b) + 0x80;
        (((t >> 8) + t) >> 8) as u8
    };
    for (p, q) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        q[0] = blend(p[0], p[3]);
        q[1] = blend(p[1], p[3]);
        q[2] = blend(p[2], p[3]);
    }
}

/// libjpeg's error manager with its fatal errors unwinding (as MozJPEG's own) and its warnings
/// that mean the scan data ended before the frame was full (premature end of a scan or of the file,
/// a restart marker missing) unwinding too, at the moment they are met: a file cut short with an
/// end-of-image marker put back is refused after decoding only the data it has, instead of
/// becoming a picture with grey below the cut. Other warnings (extraneous bytes before a marker,
/// odd JFIF versions: common in camera files that decode well) are ignored, as OpenCV and PIL do.
fn error_manager() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: all fields are plain data or nullable function pointers, so zeroed is a valid value
    // to start from; jpeg_std_error only fills in the struct it is given and keeps no pointer to it.
    let mut err = unsafe {
        let mut err: mozjpeg_sys::jpeg_error_mgr = std::mem::zeroed();
        mozjpeg_sys::jpeg_std_error(&mut err);
        err
    };
    err.error_exit = Some(fatal);
    err.emit_message = Some(warning);
    err
}

extern "C-unwind" fn fatal(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    std::panic::resume_unwind(Box::new(format!("the JPEG data is corrupt (libjpeg error {})", message_code(cinfo))));
}

extern "C-unwind" fn warning(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: std::os::raw::c_int) {
    use mozjpeg_sys::{JWRN_HIT_MARKER, JWRN_JPEG_EOF, JWRN_MUST_RESYNC};
    if level >= 0 {
        return; // trace messages
    }
    let code = message_code(cinfo);
    let reason = match code {
        JWRN_HIT_MARKER => "the JPEG's scan data ends before its frame is full",
        JWRN_JPEG_EOF => "the JPEG data ends before its end-of-image marker",
        JWRN_MUST_RESYNC => "the JPEG's scan data ends where a restart marker should be",
        _ => return,
    };
    std::panic::resume_unwind(Box::new(reason.to_string()));
}

/// The code of the message libjpeg is reporting.
fn message_code(cinfo: &mozjpeg_sys::jpeg_common_struct) -> i32 {
    // SAFETY: libjpeg calls the error manager's hooks with `err` pointing at that manager, which
    // the `Decompress` owning `cinfo` keeps alive.
    unsafe { cinfo.err.as_ref() }.map_or(0, |e| e.msg_code)
}

/// Refuses a JPEG whose entropy-coded data cannot be the frame its header claims.
///
/// Two checks on the bytes alone, before decoding: an end-of-image marker (FF D9) must follow the
/// first start-of-scan, and the bytes between them must hold at least one bit per 8×8 block of
/// every component. Huffman coding (the only kind decoded) spends at least one bit on each block's
/// DC coefficient, in baseline and progressive scans alike, so less data cannot fill the frame:
/// the decoder would paint the rest grey at the full frame's cost (docs/reliability.md, finding 4).
pub fn check_jpeg_scan(bytes: &[u8]) -> Result<()> {
    let truncated = |reason: String| Err(DetectError::TruncatedScan { reason });
    let mut pos = 2; // after SOI
    let mut blocks: Option<u64> = None;
    let scan_start = loop {
        while bytes.get(pos) == Some(&0xff) && bytes.get(pos + 1) == Some(&0xff) {
            pos += 1; // fill bytes
        }
        let (Some(0xff), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return truncated("the JPEG data ends before its first scan".into());
        };
        if matches!(marker, 0x01 | 0xd0..=0xd7) {
            pos += 2;
            continue;
        }
        let Some(len) = bytes.get(pos + 2..pos + 4).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else {
            return truncated("the JPEG data ends inside a marker segment".into());
        };
        // Start-of-frame markers C0..CF, except DHT (C4), JPG (C8) and DAC (CC).
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            blocks = bytes.get(pos + 4..).and_then(frame_blocks);
        }
        pos += 2 + len;
        if marker == 0xda {
            break pos;
        }
    };
    let Some(scan) = bytes.get(scan_start..) else {
        return truncated("the JPEG data ends inside its first scan header".into());
    };
    // Inside entropy-coded data a literal FF is stuffed as FF 00, so the first FF D9 is the end.
    let Some(end) = memchr::memmem::find(scan, &[0xff, 0xd9]) else {
        return truncated("the JPEG data ends before its end-of-image marker".into());
    };
    if let Some(blocks) = blocks
        && (end as u64).saturating_mul(8) < blocks
    {
        return truncated(format!("the JPEG's scan data ({end} bytes) cannot fill its frame of {blocks} 8x8 blocks"));
    }
    Ok(())
}

/// 8×8 blocks of all components of a start-of-frame segment (the bytes after its length field).
fn frame_blocks(sof: &[u8]) -> Option<u64> {
    let height = u64::from(u16::from_be_bytes([*sof.get(1)?, *sof.get(2)?]));
    let width = u64::from(u16::from_be_bytes([*sof.get(3)?, *sof.get(4)?]));
    let count = usize::from(*sof.get(5)?);
    let sampling: Vec<(u64, u64)> =
        sof.get(6..6 + 3 * count)?.chunks_exact(3).map(|c| (u64::from(c[1] >> 4), u64::from(c[1] & 15))).collect();
    let hmax = sampling.iter().map(|s| s.0).max()?.max(1);
    let vmax = sampling.iter().map(|s| s.1).max()?.max(1);
    let blocks = |side: u64, factor: u64, max: u64| (side * factor).div_ceil(max).div_ceil(8);
    Some(sampling.iter().map(|&(h, v)| blocks(width, h, hmax) * blocks(height, v, vmax)).sum())
}

/// An error while reading the header: the data is not a usable image.
fn header_error(e: image::ImageError, limits: &Limits) -> DetectError {
    match e {
        image::ImageError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => DetectError::Truncated(io.into()),
        image::ImageError::Limits(_) => limits.too_large(0, 0),
        other => DetectError::Header(other.into()),
    }
}

/// An error after the header was accepted: the pixel data is cut short or corrupt.
fn body_error(e: image::ImageError, w: u32, h: u32, limits: &Limits) -> DetectError {
    match e {
        image::ImageError::Limits(_) => limits.too_large(w, h),
        other => DetectError::Truncated(other.into()),
    }
}

/// The test fixtures' JPEGs (tests/fixtures/images and tests/fixtures/jpeg), sorted.
#[cfg(test)]
pub(crate) fn fixture_jpegs() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = ["images", "jpeg"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Coded as _;

    const LIMITS: Limits = Limits { max_pixels: 40_000_000, max_side: 16_384 };
    const SMALL: Limits = Limits { max_pixels: 1 << 20, max_side: 16_384 };

    #[test]
    fn every_side_is_limited_not_only_the_area() {
        for (w, h) in [(40_000_000, 1), (1, 40_000_000), (16_385, 2), (2, 16_385), (50_000, 50_000)] {
            assert!(LIMITS.check(w, h).is_err(), "{w}x{h}");
        }
        for (w, h) in [(16_384, 1), (1, 16_384), (16_384, 2_441)] {
            assert!(LIMITS.check(w, h).is_ok(), "{w}x{h}");
        }
    }

    #[test]
    fn admission_runs_after_the_header_and_before_the_pixels() {
        let mut jpeg = Vec::new();
        image::DynamicImage::new_rgb8(64, 48).write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();
        let mut seen = None;
        let err = decode_image_into(&jpeg, &LIMITS, &mut RgbImage::default(), |w, h| {
            seen = Some((w, h));
            Err(DetectError::PixelBudgetExceeded { budget: 1 })
        })
        .unwrap_err();
        assert_eq!(seen, Some((64, 48)));
        assert_eq!(err.code(), "pixel_budget_exceeded");
    }

    #[test]
    fn garbage_is_not_an_image() {
        assert_eq!(decode_image(b"hello world, not an image", &SMALL).unwrap_err().code(), "not_an_image");
        assert_eq!(decode_image(b"", &SMALL).unwrap_err().code(), "not_an_image");
        assert_eq!(decode_image(b"GIF89a\x01\x00\x01\x00", &SMALL).unwrap_err().code(), "not_an_image");
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let mut img = Vec::new();
        image::DynamicImage::new_rgb8(w, h).write_to(&mut Cursor::new(&mut img), ImageFormat::Jpeg).unwrap();
        img
    }

    #[test]
    fn jpeg_completeness() {
        let img = jpeg(64, 48);
        assert!(check_jpeg_scan(&img).is_ok());
        let mut trailing = img.clone();
        trailing.extend_from_slice(b"trailing metadata");
        assert!(check_jpeg_scan(&trailing).is_ok());
        assert!(check_jpeg_scan(&img[..img.len() - 2]).is_err());
        assert!(check_jpeg_scan(&img[..20]).is_err());
        assert_eq!(decode_image(&img[..img.len() - 10], &SMALL).unwrap_err().code(), "truncated_image");
        assert_eq!(decode_image(&img, &SMALL).unwrap().width, 64);
    }

    /// Rewrites the frame size in a JPEG's start-of-frame segment.
    fn claim_size(jpeg: &mut [u8], w: u16, h: u16) {
        let sof = jpeg.windows(2).position(|m| m == [0xff, 0xc0]).expect("baseline SOF");
        jpeg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    }

    #[test]
    fn a_jpeg_whose_scan_cannot_fill_the_claimed_frame_is_truncated() {
        // A flat image compresses to a few bits per 8x8 block: the smallest honest JPEGs pass.
        let flat = jpeg(2000, 1500);
        assert!(flat.len() < 300_000, "{}", flat.len());
        assert_eq!(decode_image(&flat, &LIMITS).unwrap().width, 2000);
        // The same kind of file claiming 6000x6000 (36 MP, under the limits) has ~90x too little data.
        let mut liar = jpeg(64, 48);
        claim_size(&mut liar, 6000, 6000);
        assert!(liar.len() < 1000);
        let err = decode_image(&liar, &LIMITS).unwrap_err();
        assert_eq!(err.code(), "truncated_image", "{err}");
        assert!(err.to_string().contains("cannot fill"), "{err}");
    }

    #[test]
    fn cmyk_jpegs_decode_to_the_colours_the_image_crate_gives() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg/cmyk.jpg");
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(crate::detector::jpeg_scan::components(&bytes), Some(4));
        let ours = decode_image(&bytes, &LIMITS).unwrap();
        let theirs = image::load_from_memory(&bytes).unwrap().into_rgb8();
        assert_eq!((ours.width, ours.height), theirs.dimensions());
        let diff: u64 = ours.pixels.iter().zip(theirs.as_raw()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
        let mean = diff as f64 / ours.pixels.len() as f64;
        assert!(mean < 2.0, "mean difference {mean:.2} per channel");
    }

    #[test]
    fn jpegs_cut_short_with_an_end_marker_put_back_are_truncated_at_every_scale() {
        let files = fixture_jpegs();
        assert!(files.len() >= 14, "{}", files.len());
        let eighth = |w: u32, h: u32| (w / 8, h / 8);
        for path in files {
            let bytes = std::fs::read(&path).unwrap();
            for want in [None, Some(&eighth as Want<'_>)] {
                let mut out = RgbImage::default();
                decode_image_with(&bytes, &LIMITS, Idct::Accurate, want, &mut out, |_, _| Ok(()))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for fraction in [0.3, 0.6, 0.9, 0.98] {
                    let mut cut = bytes[..(bytes.len() as f64 * fraction) as usize].to_vec();
                    let without_end = cut.clone();
                    cut.extend_from_slice(&[0xff, 0xd9]);
                    for bad in [&cut, &without_end] {
                        let err = decode_image_with(bad, &LIMITS, Idct::Accurate, want, &mut out, |_, _| Ok(()))
                            .expect_err(&format!("{} cut at {fraction}", path.display()));
                        assert_eq!(err.code(), "truncated_image", "{}: {err}", path.display());
                    }
                }
            }
        }
    }

    #[test]
    fn large_jpegs_decode_at_a_dct_scale_never_below_what_is_wanted() {
        assert_eq!(dct_scale(4032, 3024, (320, 240)), 1, "1/8: 504x378");
        assert_eq!(dct_scale(4032, 3024, (640, 480)), 2, "1/4: 1008x756");
        assert_eq!(dct_scale(4032, 3024, (1024, 768)), 8, "1/4 would be 1008 wide: full decode");
        assert_eq!(dct_scale(768, 576, (320, 240)), 8, "1/2 is never used: reference parity");
        let img = jpeg(2000, 1600);
        let mut out = RgbImage::default();
        let want = |w: u32, h: u32| (w / 5, h / 5);
        let full = decode_image_with(&img, &LIMITS, Idct::Accurate, Some(&want), &mut out, |w, h| {
            assert_eq!((w, h), (2000, 1600), "the budget counts the original pixels");
            Ok(())
        })
        .unwrap();
        assert_eq!((full, out.width, out.height), ((2000, 1600), 500, 400));
        assert_eq!(out.pixels.len(), 500 * 400 * 3);
        // Without a wish, the full picture.
        let full = decode_image_with(&img, &LIMITS, Idct::Accurate, None, &mut out, |_, _| Ok(())).unwrap();
        assert_eq!((full, out.width), ((2000, 1600), 2000));
    }

    #[test]
    fn base64_variants() {
        assert_eq!(decode_base64(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64(b"data:image/png;base64,aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"***").unwrap_err().code(), "invalid_base64");
        assert_eq!(decode_base64(b"").unwrap_err().code(), "invalid_base64");
        // Whitespace around and inside, a prefix: the slow path gives the same bytes.
        assert_eq!(decode_base64(b" data:image/jpeg;base64,\n aGVs\r\nbG8= \n").unwrap(), b"hello");
        assert!(matches!(decode_base64(b"data:image/png;base64, \n"), Err(DetectError::Base64Empty)));
        assert!(matches!(decode_base64(b"aGVs\xffbG8="), Err(DetectError::Base64NotText(_))));
        assert!(matches!(decode_base64(b"data:\xff,aGVsbG8="), Err(DetectError::Base64NotText(_))));
        assert!(matches!(decode_base64(b"aGVs bG8*"), Err(DetectError::Base64(_))));
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
            decode_image_into(&encoded, &LIMITS, &mut rgb, |_, _| Ok(())).unwrap();
            let fresh = decode_image(&bytes, &LIMITS).unwrap();
            assert_eq!((rgb.width, rgb.height), (fresh.width, fresh.height), "{name}");
            assert_eq!(rgb.pixels.len(), (rgb.width * rgb.height * 3) as usize, "{name}");
            assert!(rgb.pixels == fresh.pixels, "{name}: pixels differ from a fresh decode");
        }
        assert_eq!(decode_base64_into(b"***", &mut encoded).unwrap_err().code(), "invalid_base64");
        assert_eq!(
            decode_image_into(b"not an image", &LIMITS, &mut rgb, |_, _| Ok(())).unwrap_err().code(),
            "not_an_image"
        );
    }
}
