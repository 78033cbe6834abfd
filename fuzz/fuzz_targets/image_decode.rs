//! Image bytes through the guards and the decoder: never a panic, never an image over the
//! limits, and the JPEG checks never refuse what... they may refuse; they must not crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use objdet::detector::decode::{Idct, Limits, RgbImage, decode_base64_into, decode_image_into, decode_image_with};

// Small limits keep each execution fast; the guards are the same code at any size.
const LIMITS: Limits = Limits { max_pixels: 4_000_000, max_side: 4_096 };

fuzz_target!(|data: &[u8]| {
    let mut out = RgbImage::default();
    let mut admitted = None;
    if decode_image_into(data, &LIMITS, &mut out, |w, h| {
        admitted = Some((w, h));
        Ok(())
    })
    .is_ok()
    {
        assert!(u64::from(out.width) * u64::from(out.height) <= LIMITS.max_pixels);
        assert!(out.width <= LIMITS.max_side && out.height <= LIMITS.max_side);
        assert_eq!(out.pixels.len(), out.width as usize * out.height as usize * 3);
        assert!(admitted.is_some(), "decoded without asking the budget");
    }
    // The DCT-scaled path (libjpeg-turbo at 1/8 or 1/4) and the fast IDCT: the same promises, and
    // never a picture larger than the image it claims.
    let want = |w: u32, h: u32| (w / 8, h / 8);
    let mut scaled = RgbImage::default();
    if let Ok((fw, fh)) = decode_image_with(data, &LIMITS, Idct::Fast, Some(&want), &mut scaled, |_, _| Ok(())) {
        assert!(scaled.width <= fw && scaled.height <= fh);
        assert_eq!(scaled.pixels.len(), scaled.width as usize * scaled.height as usize * 3);
    }
    // The same bytes as base64 text: never a panic either.
    let mut decoded = Vec::new();
    let _ = decode_base64_into(data, &mut decoded);
});
