//! An incremental scanner for the `POST /api/detect` JSON body.
//!
//! It is fed the body chunk by chunk as it arrives and hands out each base64 string of `images` as
//! soon as its closing quote is seen, so detection starts while the rest of the body is still on the
//! wire and the whole body is never held in memory. The small members (`names`, `s3`) are captured
//! and parsed with serde_json. Anything that is not the documented shape is `invalid_json`.

use crate::api::S3Keys;
use crate::error::{Error, Result};

/// What the scanner found.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// One `images` entry: base64 text with JSON escapes resolved.
    Image(Vec<u8>),
    /// The `names` member.
    Names(Vec<String>),
    /// The `s3` member.
    S3(S3Keys),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Start,
    KeyOrEnd,
    Key,
    KeyEscape,
    Colon,
    Value,
    ImagesFirst,
    ImagesNext,
    ImagesSep,
    Image,
    ImageEscape,
    ImageUnicode(u8),
    Capture,
    AfterValue,
    Done,
}

/// The scanner's state between chunks.
#[derive(Debug)]
pub struct BodyScanner {
    state: State,
    key: Vec<u8>,
    image: Vec<u8>,
    unicode: u32,
    seen: Vec<String>,
    // Capture of a whole non-`images` value: raw bytes, nesting depth, string state.
    raw: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Default for BodyScanner {
    fn default() -> Self {
        Self::new()
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidJson(msg.into())
}

impl BodyScanner {
    /// A scanner at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            key: Vec::new(),
            image: Vec::new(),
            unicode: 0,
            seen: Vec::new(),
            raw: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// Scans one chunk, appending what it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<()> {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match self.state {
                State::Image => {
                    // Fast path: copy the run of plain base64 characters up to the next quote or escape.
                    let run = chunk[i..].iter().position(|&c| c == b'"' || c == b'\\').unwrap_or(chunk.len() - i);
                    self.image.extend_from_slice(&chunk[i..i + run]);
                    i += run;
                    match chunk.get(i) {
                        Some(b'"') => {
                            out.push(Event::Image(std::mem::take(&mut self.image)));
                            self.state = State::ImagesSep;
                        }
                        Some(b'\\') => self.state = State::ImageEscape,
                        _ => {}
                    }
                    i += 1;
                    continue;
                }
                State::ImageEscape => {
                    match b {
                        b'/' | b'"' | b'\\' => self.image.push(b),
                        // Whitespace escapes become whitespace, which the base64 decoder skips.
                        b'n' | b'r' | b't' => self.image.push(b' '),
                        b'u' => {
                            self.unicode = 0;
                            self.state = State::ImageUnicode(0);
                            i += 1;
                            continue;
                        }
                        _ => return Err(bad(format!("unexpected escape \\{} in an image string", b as char))),
                    }
                    self.state = State::Image;
                }
                State::ImageUnicode(n) => {
                    let d = (b as char).to_digit(16).ok_or_else(|| bad("bad \\u escape in an image string"))?;
                    self.unicode = self.unicode * 16 + d;
                    if n == 3 {
                        let c = char::from_u32(self.unicode)
                            .filter(char::is_ascii)
                            .ok_or_else(|| bad("non-ASCII character in an image string (base64 is ASCII)"))?;
                        self.image.push(c as u8);
                        self.state = State::Image;
                    } else {
                        self.state = State::ImageUnicode(n + 1);
                    }
                }
                _ if b.is_ascii_whitespace()
                    && !matches!(self.state, State::Key | State::KeyEscape | State::Capture) => {}
                State::Start => {
                    if b != b'{' {
                        return Err(bad("the body must be a JSON object"));
                    }
                    self.state = State::KeyOrEnd;
                }
                State::KeyOrEnd => match b {
                    b'"' => {
                        self.key.clear();
                        self.state = State::Key;
                    }
                    b'}' if self.seen.is_empty() => self.state = State::Done,
                    _ => return Err(bad("expected a member name")),
                },
                State::Key => match b {
                    b'"' => self.state = State::Colon,
                    b'\\' => self.state = State::KeyEscape,
                    _ => self.key.push(b),
                },
                State::KeyEscape => {
                    self.key.push(b);
                    self.state = State::Key;
                }
                State::Colon => {
                    if b != b':' {
                        return Err(bad("expected ':' after a member name"));
                    }
                    let key = String::from_utf8_lossy(&self.key).into_owned();
                    if !matches!(key.as_str(), "images" | "names" | "s3") {
                        return Err(bad(format!("unknown field `{key}`, expected `images`, `names` or `s3`")));
                    }
                    if self.seen.contains(&key) {
                        return Err(bad(format!("duplicate field `{key}`")));
                    }
                    self.seen.push(key);
                    self.state = State::Value;
                }
                State::Value => {
                    if self.key == b"images" {
                        if b != b'[' {
                            return Err(bad("`images` must be an array of base64 strings"));
                        }
                        self.state = State::ImagesFirst;
                    } else {
                        self.raw.clear();
                        self.depth = 0;
                        self.in_string = false;
                        self.escaped = false;
                        self.state = State::Capture;
                        continue; // re-read this byte in Capture
                    }
                }
                State::ImagesFirst | State::ImagesNext => match b {
                    b'"' => self.state = State::Image,
                    b']' if self.state == State::ImagesFirst => self.state = State::AfterValue,
                    _ => return Err(bad("`images` must be an array of base64 strings")),
                },
                State::ImagesSep => match b {
                    b',' => self.state = State::ImagesNext,
                    b']' => self.state = State::AfterValue,
                    _ => return Err(bad("expected ',' or ']' in `images`")),
                },
                State::Capture => {
                    // A scalar (only `null` is valid here) ends just before the next delimiter.
                    let scalar = self.raw.first().is_some_and(|c| !matches!(c, b'[' | b'{' | b'"'));
                    if scalar && matches!(b, b',' | b'}') {
                        self.finish_capture(out)?;
                        self.state = State::AfterValue;
                        continue; // the delimiter belongs to the object
                    }
                    self.raw.push(b);
                    if self.raw.len() > 16 << 20 {
                        return Err(bad("`names`/`s3` member too large"));
                    }
                    if self.in_string {
                        match (self.escaped, b) {
                            (true, _) => self.escaped = false,
                            (false, b'\\') => self.escaped = true,
                            (false, b'"') => self.in_string = false,
                            _ => {}
                        }
                    } else {
                        match b {
                            b'"' => self.in_string = true,
                            b'[' | b'{' => self.depth += 1,
                            b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                            _ => {}
                        }
                    }
                    let scalar = !matches!(self.raw[0], b'[' | b'{' | b'"');
                    if !scalar && self.depth == 0 && !self.in_string {
                        self.finish_capture(out)?;
                        self.state = State::AfterValue;
                    }
                }
                State::AfterValue => match b {
                    b',' => self.state = State::KeyOrEnd,
                    b'}' => self.state = State::Done,
                    _ => return Err(bad("expected ',' or '}' after a member")),
                },
                State::Done => return Err(bad("trailing characters after the JSON object")),
            }
            i += 1;
        }
        Ok(())
    }

    fn finish_capture(&mut self, out: &mut Vec<Event>) -> Result<()> {
        let raw = std::mem::take(&mut self.raw);
        let key = self.seen.last().cloned().unwrap_or_default();
        let text = std::str::from_utf8(&raw).map_err(|_| bad("member is not UTF-8"))?.trim();
        if text == "null" {
            return Ok(());
        }
        match key.as_str() {
            "names" => out.push(Event::Names(
                serde_json::from_str(text).map_err(|e| bad(format!("`names` must be an array of strings: {e}")))?,
            )),
            "s3" => out.push(Event::S3(serde_json::from_str(text).map_err(|e| bad(format!("`s3`: {e}")))?)),
            _ => return Err(bad(format!("unexpected member `{key}`"))),
        }
        Ok(())
    }

    /// Whether the body had this top-level field (even an empty `images` array counts).
    pub fn has_field(&self, key: &str) -> bool {
        self.seen.iter().any(|k| k == key)
    }

    /// Checks that the body was a complete object.
    pub fn finish(&self) -> Result<()> {
        if self.state == State::Done { Ok(()) } else { Err(bad("the JSON body ends early")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_chunks(body: &str, size: usize) -> Result<Vec<Event>> {
        let mut s = BodyScanner::new();
        let mut out = Vec::new();
        for c in body.as_bytes().chunks(size.max(1)) {
            s.feed(c, &mut out)?;
        }
        s.finish()?;
        Ok(out)
    }

    #[test]
    fn every_chunking_gives_the_same_events() {
        let body = r#" { "names" : ["a.jpg", "b \"q\".jpg"], "images": ["QUJD", "RE\/F\u0047", "SE\nlK"] } "#;
        let whole = scan_in_chunks(body, body.len()).unwrap();
        assert_eq!(
            whole,
            vec![
                Event::Names(vec!["a.jpg".into(), "b \"q\".jpg".into()]),
                Event::Image(b"QUJD".to_vec()),
                Event::Image(b"RE/FG".to_vec()),
                Event::Image(b"SE lK".to_vec()),
            ]
        );
        for size in 1..body.len() {
            assert_eq!(scan_in_chunks(body, size).unwrap(), whole, "chunk size {size}");
        }
    }

    #[test]
    fn s3_member_and_empty_cases() {
        let ev = scan_in_chunks(r#"{"s3": {"bucket": "b", "keys": ["uploads/a.jpg"]}}"#, 3).unwrap();
        assert!(matches!(&ev[0], Event::S3(k) if k.keys == ["uploads/a.jpg"] && k.bucket.as_deref() == Some("b")));
        assert_eq!(scan_in_chunks("{}", 1).unwrap(), vec![]);
        assert_eq!(scan_in_chunks(r#"{"images": []}"#, 2).unwrap(), vec![]);
        let mut scanner = BodyScanner::new();
        scanner.feed(br#"{"images": [], "s3": {"keys": []}}"#, &mut Vec::new()).unwrap();
        assert!(scanner.has_field("images") && scanner.has_field("s3") && !scanner.has_field("names"));
        assert_eq!(scan_in_chunks(r#"{"images": ["x"], "names": null}"#, 2).unwrap().len(), 1);
    }

    #[test]
    fn malformed_bodies_are_invalid_json() {
        for body in [
            "",
            "[]",
            r#"{"images": [tru"#,
            r#"{"images": "x"}"#,
            r#"{"images": [1]}"#,
            r#"{"imagez": []}"#,
            r#"{"images": ["a"] "names": []}"#,
            r#"{"images": ["a"]} x"#,
            r#"{"images": ["a"], "images": ["b"]}"#,
            r#"{"names": [1]}"#,
            r#"{"images": ["\u00e9"]}"#,
        ] {
            let err = scan_in_chunks(body, 4).unwrap_err();
            assert_eq!(err.code(), "invalid_json", "{body:?}: {err}");
        }
    }
}
