//! Does a JPEG's entropy-coded data really hold every block its frame claims?
//!
//! The JPEG decoder pads missing scan data with zeros and paints the rest grey, so a file cut
//! short (with an end-of-image marker put back) would be "a good image" with nothing in its lower
//! part. This walks the Huffman-coded data of baseline and extended sequential frames (SOF0/SOF1,
//! the encoding of camera and most web JPEGs) without decoding any pixel: per 8×8 block one DC
//! code and its AC codes, their extra bits skipped. If a block needs bits past the end of its
//! scan, or a frame component never gets a scan, the image is truncated.
//!
//! Progressive and other frames are left to the decoder (and to the size check in `decode`):
//! a progressive file cut after a complete scan is a coarser but whole image.

/// Why the walk gave up, when the data is not whole.
pub type Truncated = String;

/// Bits of lookahead of the fast table.
const FAST: u32 = 10;

#[derive(Clone)]
struct Huffman {
    /// For each `FAST`-bit prefix whose code is at most that long: bits to skip (low 5 bits),
    /// whether those include the symbol's extra bits (bit 5), the symbol (high 8); 0 for longer codes.
    fast: Vec<u16>,
    /// Longest code of each length (-1: none), and where its symbols start in `symbols`.
    max_code: [i32; 17],
    offset: [i32; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    /// From a DHT table: 16 counts, then the symbols. `None` if malformed.
    fn new(counts: &[u8], symbols: &[u8]) -> Option<Self> {
        let mut h =
            Huffman { fast: vec![0; 1 << FAST], max_code: [-1; 17], offset: [0; 17], symbols: symbols.to_vec() };
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16u32 {
            let n = usize::from(counts[len as usize - 1]);
            h.offset[len as usize] = k as i32 - code;
            for _ in 0..n {
                // More codes than this length can hold: not a valid table.
                if code >= (1 << len) {
                    return None;
                }
                let sym = *symbols.get(k)?;
                if len <= FAST {
                    // The symbol's low 4 bits are the count of extra bits after the code (DC
                    // category, AC size): skip them in the same step when they fit.
                    let extra = u32::from(sym & 15);
                    let entry = if len + extra <= FAST { (len + extra) | 32 } else { len };
                    let shift = FAST - len;
                    for low in 0..(1usize << shift) {
                        h.fast[((code as usize) << shift) | low] = entry as u16 | (u16::from(sym) << 8);
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                h.max_code[len as usize] = code - 1;
            }
            code <<= 1;
        }
        Some(h)
    }
}

/// Entropy-coded bits of one scan, up to the next marker. Past it, zeros are supplied and
/// counted, like a decoder does; consuming one of them means the data ran out.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    have: u32,
    /// Of the `have` bits, how many (the last ones) are padding past the data.
    padding: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Bits { data, pos, acc: 0, have: 0, padding: 0 }
    }

    fn fill(&mut self) {
        // Fast path: the next bytes that fit hold no FF (no stuffing, no marker): take them at once.
        let room = ((64 - self.have) / 8) as usize;
        if let Some(next) = self.data.get(self.pos..self.pos + 8)
            && self.padding == 0
            && !next[..room].contains(&0xff)
        {
            let word = u64::from_be_bytes([next[0], next[1], next[2], next[3], next[4], next[5], next[6], next[7]]);
            let bits = room as u32 * 8;
            self.acc |= (word >> (64 - bits)) << (64 - self.have - bits);
            self.have += bits;
            self.pos += room;
            return;
        }
        while self.have <= 56 {
            let byte = match (self.data.get(self.pos), self.data.get(self.pos + 1)) {
                (Some(0xff), Some(0x00)) => {
                    self.pos += 2;
                    Some(0xff)
                }
                (Some(0xff), _) | (None, _) => None, // a marker, or the end: the scan's data ends
                (Some(&b), _) => {
                    self.pos += 1;
                    Some(b)
                }
            };
            if byte.is_none() {
                self.padding += 8;
            }
            self.acc |= u64::from(byte.unwrap_or(0)) << (56 - self.have);
            self.have += 8;
        }
    }

    /// Makes at least 32 bits available: one symbol (≤ 16 bits) and its extra bits (≤ 11).
    #[inline]
    fn ensure(&mut self) {
        if self.have < 32 {
            self.fill();
        }
    }

    #[inline]
    fn peek(&self, n: u32) -> u32 {
        (self.acc >> (64 - n)) as u32
    }

    #[inline]
    fn skip(&mut self, n: u32) {
        self.acc <<= n;
        self.have -= n;
    }

    /// Whether padding past the data has been consumed: the data ran out.
    fn overran(&self) -> bool {
        self.padding > self.have
    }

    /// One Huffman symbol and its extra bits (after [`Bits::ensure`]); `None` for a code the
    /// table does not have.
    #[inline]
    fn symbol(&mut self, h: &Huffman) -> Option<u8> {
        let entry = h.fast[self.peek(FAST) as usize];
        let sym = if entry != 0 {
            self.skip(u32::from(entry & 31));
            let sym = (entry >> 8) as u8;
            if entry & 32 != 0 {
                return Some(sym);
            }
            sym
        } else {
            self.slow_symbol(h)?
        };
        self.skip(u32::from(sym & 15));
        Some(sym)
    }

    fn slow_symbol(&mut self, h: &Huffman) -> Option<u8> {
        let bits = self.peek(16) as i32;
        for len in FAST as usize + 1..=16 {
            let code = bits >> (16 - len);
            if code <= h.max_code[len] {
                self.skip(len as u32);
                return h.symbols.get((code + h.offset[len]) as usize).copied();
            }
        }
        None
    }

    /// Drops what is buffered and moves to the marker the data stopped at.
    fn skip_to_marker(&mut self) -> usize {
        (self.acc, self.have, self.padding) = (0, 0, 0);
        while self.pos < self.data.len() {
            if self.data[self.pos] == 0xff && !matches!(self.data.get(self.pos + 1), Some(0x00) | None) {
                break;
            }
            self.pos += 1;
        }
        self.pos
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    scanned: bool,
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?])))
}

/// Walks the scans of a baseline JPEG. `Err` with the reason when its data cannot fill the
/// frame; `Ok` when it can, and for what it does not walk (progressive frames, structures it
/// does not recognise: the decoder judges those).
pub fn check(bytes: &[u8]) -> Result<(), Truncated> {
    let mut tables: [Option<Huffman>; 8] = Default::default(); // DC 0-3, AC 4-7
    let mut frame: Option<(usize, usize, Vec<Component>)> = None;
    let mut restart = 0usize;
    let mut pos = 2;
    loop {
        while bytes.get(pos) == Some(&0xff) && bytes.get(pos + 1) == Some(&0xff) {
            pos += 1;
        }
        let (Some(0xff), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return Ok(()); // not at a marker: leave it to the decoder
        };
        if marker == 0xd9 {
            // End of image: every component must have had its scan.
            return match &frame {
                Some((_, _, comps)) if comps.iter().any(|c| !c.scanned) => {
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
        match marker {
            0xc0 | 0xc1 => {
                let (h, w, n) = (be16(seg, 1), be16(seg, 3), seg.get(5).copied());
                let (Some(h), Some(w), Some(n)) = (h, w, n) else { return Ok(()) };
                let comps: Option<Vec<Component>> = (0..usize::from(n))
                    .map(|i| {
                        let c = seg.get(6 + 3 * i..9 + 3 * i)?;
                        let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
                        (h > 0 && v > 0).then_some(Component { id: c[0], h, v, scanned: false })
                    })
                    .collect();
                let Some(comps) = comps.filter(|c| !c.is_empty()) else { return Ok(()) };
                frame = Some((w, h, comps));
            }
            0xc2..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => return Ok(()), // not baseline
            0xc4 => {
                let mut t = seg;
                while t.len() >= 17 {
                    let (class, id) = (usize::from(t[0] >> 4), usize::from(t[0] & 15));
                    let count: usize = t[1..17].iter().map(|&c| usize::from(c)).sum();
                    let (Some(symbols), true) = (t.get(17..17 + count), class < 2 && id < 4) else { return Ok(()) };
                    let Some(table) = Huffman::new(&t[1..17], symbols) else { return Ok(()) };
                    tables[class * 4 + id] = Some(table);
                    t = &t[17 + count..];
                }
            }
            0xdd => restart = be16(seg, 0).unwrap_or(0),
            0xda => {
                let Some((w, h, comps)) = frame.as_mut() else { return Ok(()) };
                match walk_scan(bytes, pos + 2 + len, seg, (*w, *h), comps, &tables, restart) {
                    Walk::End(next) => {
                        pos = next;
                        continue;
                    }
                    Walk::RanOut => return Err("the JPEG's scan data ends before its frame is full".into()),
                    Walk::Unknown => return Ok(()),
                }
            }
            _ => {}
        }
        pos += 2 + len;
    }
}

enum Walk {
    /// The scan is whole; the next marker is at this offset.
    End(usize),
    RanOut,
    /// Something this walk does not handle: leave the image to the decoder.
    Unknown,
}

/// Walks one scan whose header is `sos` and whose data starts at `start`.
fn walk_scan(
    bytes: &[u8],
    start: usize,
    sos: &[u8],
    (width, height): (usize, usize),
    comps: &mut [Component],
    tables: &[Option<Huffman>; 8],
    restart: usize,
) -> Walk {
    let n = usize::from(sos.first().copied().unwrap_or(0));
    let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
    // Per scan component: (DC table, AC table, blocks per MCU across, down).
    let mut scan = Vec::with_capacity(n);
    for i in 0..n {
        let Some(s) = sos.get(1 + 2 * i..3 + 2 * i) else { return Walk::Unknown };
        let Some(c) = comps.iter_mut().find(|c| c.id == s[0]) else { return Walk::Unknown };
        c.scanned = true;
        let (Some(dc), Some(ac)) = (
            tables.get(usize::from(s[1] >> 4)).and_then(Option::as_ref),
            tables.get(4 + usize::from(s[1] & 15)).and_then(Option::as_ref),
        ) else {
            return Walk::Unknown;
        };
        scan.push((dc, ac, c.h, c.v));
    }
    if scan.is_empty() {
        return Walk::Unknown;
    }
    // One component alone is coded block by block over its own size; several, in MCUs.
    let (mcus_x, mcus_y) = if scan.len() == 1 {
        let (_, _, h, v) = scan[0];
        scan[0].2 = 1;
        scan[0].3 = 1;
        ((width * h).div_ceil(hmax).div_ceil(8), (height * v).div_ceil(vmax).div_ceil(8))
    } else {
        (width.div_ceil(8 * hmax), height.div_ceil(8 * vmax))
    };
    let total = mcus_x * mcus_y;
    let mut bits = Bits::new(bytes, start);
    for mcu in 0..total {
        if restart > 0 && mcu > 0 && mcu % restart == 0 {
            let at = bits.skip_to_marker();
            match bytes.get(at + 1) {
                Some(0xd0..=0xd7) => bits = Bits::new(bytes, at + 2),
                _ => return Walk::RanOut,
            }
        }
        for &(dc, ac, h, v) in &scan {
            for _ in 0..h * v {
                match block(&mut bits, dc, ac) {
                    Ok(true) => {}
                    Ok(false) => return Walk::Unknown,
                    Err(()) => return Walk::RanOut,
                }
            }
        }
    }
    Walk::End(bits.skip_to_marker())
}

/// One block's codes: `Err` when the data ran out, `Ok(false)` for a code no table has.
fn block(bits: &mut Bits<'_>, dc: &Huffman, ac: &Huffman) -> Result<bool, ()> {
    bits.ensure();
    if bits.symbol(dc).is_none_or(|s| s > 11) {
        return Ok(false);
    }
    let mut k = 1;
    while k < 64 {
        bits.ensure();
        let Some(rs) = bits.symbol(ac) else { return Ok(false) };
        match (rs >> 4, rs & 15) {
            (15, 0) => k += 16,
            (_, 0) => break, // end of block
            (run, _) => k += usize::from(run) + 1,
        }
    }
    if bits.overran() { Err(()) } else { Ok(k <= 64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encodings() -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut files: Vec<_> = ["images", "jpeg"]
            .iter()
            .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect()
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
    fn baseline_jpegs_cut_short_with_an_end_marker_put_back_are_truncated() {
        for (name, bytes) in encodings() {
            if name.contains("progressive") {
                continue; // not walked: a progressive file cut after a scan is a coarser image
            }
            for fraction in [0.3, 0.6, 0.9, 0.98] {
                let mut cut = bytes[..(bytes.len() as f64 * fraction) as usize].to_vec();
                cut.extend_from_slice(&[0xff, 0xd9]);
                assert!(check(&cut).is_err(), "{name} cut at {fraction}");
            }
        }
    }

    #[test]
    fn an_overfull_huffman_table_is_refused() {
        // Three 1-bit codes cannot exist (found by the fuzzer: it indexed past the fast table).
        let mut counts = [0u8; 16];
        counts[0] = 3;
        assert!(Huffman::new(&counts, &[1, 2, 3]).is_none());
        counts[0] = 2;
        assert!(Huffman::new(&counts, &[1, 2]).is_some());
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
