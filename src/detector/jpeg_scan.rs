//! Does a JPEG code every colour component its frame declares?
//!
//! A sequential JPEG may code its components in separate scans; one cut after its first scan (with
//! an end-of-image marker put back) decodes without a warning into a picture whose other
//! components are flat. This walks the markers of baseline and extended sequential frames
//! (SOF0/SOF1), stepping over each scan's entropy-coded data at memory speed, and refuses a file
//! that ends before every component had a scan.
//!
//! Data cut short *inside* a scan is libjpeg-turbo's to report while it decodes (see
//! `decode::decode_jpeg_into`): it meets the marker or the end of the data where a code should be,
//! and the decode stops there. (An earlier version walked every Huffman code here first: the same
//! entropy decoding twice, a fifth of the CPU time of a phone photo; docs/performance.md.)
//! Progressive and other frames are left to the decoder.

/// Why the walk gave up, when the data is not whole.
pub type Truncated = String;

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?])))
}

/// `Err` when a baseline JPEG's end-of-image marker comes before every frame component had a scan;
/// `Ok` for whole files and for everything this walk does not understand (the decoder judges those).
pub fn check(bytes: &[u8]) -> Result<(), Truncated> {
    // (component id, coded yet) of the frame.
    let mut frame: Option<Vec<(u8, bool)>> = None;
    let mut pos = 2;
    loop {
        while bytes.get(pos) == Some(&0xff) && bytes.get(pos + 1) == Some(&0xff) {
            pos += 1;
        }
        let (Some(0xff), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return Ok(()); // not at a marker: leave it to the decoder
        };
        if marker == 0xd9 {
            return match &frame {
                Some(comps) if comps.iter().any(|c| !c.1) => {
                    Err("the JPEG ends before all of its colour components were coded".into())
                }
                _ => Ok(()),
            };
        }
        if matches!(marker, 0x01 | 0xd0..=0xd7) {
            pos += 2;
            continue;
        }
        let Some(len) = be16(bytes, pos + 2) else { return Ok(()) };
        let Some(seg) = bytes.get(pos + 4..pos + 2 + len) else { return Ok(()) };
        pos += 2 + len;
        match marker {
            0xc0 | 0xc1 => {
                let Some(n) = seg.get(5) else { return Ok(()) };
                let Some(comps) = seg.get(6..6 + 3 * usize::from(*n)) else { return Ok(()) };
                frame = Some(comps.chunks_exact(3).map(|c| (c[0], false)).collect());
            }
            0xc2..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => return Ok(()), // not baseline
            0xda => {
                let Some(comps) = frame.as_mut() else { return Ok(()) };
                let n = usize::from(seg.first().copied().unwrap_or(0));
                for id in seg.get(1..1 + 2 * n).unwrap_or_default().iter().step_by(2) {
                    if let Some(c) = comps.iter_mut().find(|c| c.0 == *id) {
                        c.1 = true;
                    }
                }
                pos = next_marker(bytes, pos);
            }
            _ => {}
        }
    }
}

/// The number of colour components of a JPEG's frame (3 for YCbCr, 4 for CMYK/YCCK), from the
/// markers before its first scan; `None` when there is no readable frame header.
pub fn components(bytes: &[u8]) -> Option<u8> {
    let mut pos = 2;
    loop {
        while bytes.get(pos) == Some(&0xff) && bytes.get(pos + 1) == Some(&0xff) {
            pos += 1;
        }
        let (Some(0xff), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else { return None };
        if matches!(marker, 0x01 | 0xd0..=0xd7) {
            pos += 2;
            continue;
        }
        if marker == 0xda || marker == 0xd9 {
            return None;
        }
        let len = be16(bytes, pos + 2)?;
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            return bytes.get(pos + 9).copied();
        }
        pos += 2 + len;
    }
}

/// The position of the first marker at or after `pos` in entropy-coded data: an FF not followed by
/// a stuffed 00 or a restart marker (RST0..7 belong to the scan).
fn next_marker(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(off) = bytes.get(pos..).and_then(|b| memchr::memchr(0xff, b)) {
        pos += off;
        match bytes.get(pos + 1) {
            Some(0x00 | 0xd0..=0xd7) => pos += 2,
            _ => return pos,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encodings() -> Vec<(String, Vec<u8>)> {
        super::super::decode::fixture_jpegs()
            .into_iter()
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect()
    }

    #[test]
    fn whole_jpegs_pass() {
        let all = encodings();
        assert!(all.len() >= 14, "{}", all.len());
        for (name, bytes) in &all {
            assert_eq!(check(bytes), Ok(()), "{name}");
        }
    }

    #[test]
    fn a_sequential_jpeg_cut_after_its_first_scan_is_truncated() {
        // Three scans, one per component (what libjpeg writes for a non-interleaved file).
        let mut one_scan = Vec::new();
        one_scan
            .extend_from_slice(b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x08\x00\x08\x03\x01\x11\x00\x02\x11\x00\x03\x11\x00");
        one_scan.extend_from_slice(b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\x12\xff\x00\x34\xff\xd0\x56");
        let mut cut = one_scan.clone();
        cut.extend_from_slice(b"\xff\xd9");
        assert!(check(&cut).is_err());
        let mut whole = one_scan;
        for id in [2u8, 3] {
            whole.extend_from_slice(&[0xff, 0xda, 0x00, 0x08, 0x01, id, 0x00, 0x00, 0x3f, 0x00, 0x12]);
        }
        whole.extend_from_slice(b"\xff\xd9");
        assert_eq!(check(&whole), Ok(()));
        assert_eq!(components(&whole), Some(3));
    }

    #[test]
    fn what_it_does_not_know_is_left_to_the_decoder() {
        for odd in
            [&b""[..], b"\xff\xd8", b"\xff\xd8\xff\xc0\x00", b"\xff\xd8garbage", b"\xff\xd8\xff\xda\x00\x02\xff\xd9"]
        {
            assert_eq!(check(odd), Ok(()), "{odd:?}");
        }
    }
}
