//! An incremental scanner for the `POST /api/detect` JSON body.
//!
//! It is fed the body chunk by chunk as it arrives and hands out each string of `images` as soon
//! as its closing quote is seen, so detection starts while the rest of the body is still on the
//! wire and the whole body is never held in memory. The small members (`names`, `s3`) are captured
//! whole and parsed with serde_json.
//!
//! It accepts exactly what `serde_json` accepts for [`DetectBody`] (RFC 8259: escapes decoded
//! everywhere, keys included; no raw control characters in strings; UTF-8 strings; only
//! space, tab, CR and LF between tokens) and yields the same values; `fuzz/` checks that
//! differentially. Anything else is `invalid_json`. An image string is only JSON here: whether it
//! is base64 is that image's own question.

use serde::Deserialize;

use crate::api::S3Keys;
use crate::error::excerpt;
use crate::service::error::RequestError;

type Result<T, E = RequestError> = std::result::Result<T, E>;

/// The body as a whole, for comparison with `serde_json` (the scanner never builds it).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectBody {
    /// Base64 images.
    pub images: Option<Vec<String>>,
    /// One name per image.
    pub names: Option<Vec<String>>,
    /// S3-keys mode.
    pub s3: Option<S3Keys>,
}

/// What the scanner found.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// One `images` entry: the string's text (UTF-8, JSON escapes resolved).
    Image(Vec<u8>),
    /// The `names` member.
    Names(Vec<String>),
    /// The `s3` member.
    S3(S3Keys),
}

/// Largest `names` or `s3` member, in bytes.
pub const MAX_MEMBER_BYTES: usize = 16 << 20;

/// Longer member names are refused before they end (the known ones have at most 6 bytes).
const MAX_KEY_BYTES: usize = 64;

/// Where a string being read goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Key,
    Image,
}

/// Inside a string: plain text, after a backslash, or inside `\uXXXX` (digits read so far).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Str {
    Text,
    Escape,
    Unicode(u8),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Start,
    /// After `{`: a member name or `}`.
    KeyOrEnd,
    /// After `,`: a member name.
    Key,
    Colon,
    Value,
    /// After `[` of `images`: a string or `]`.
    ImagesFirst,
    /// After `,` in `images`: a string.
    ImagesNext,
    /// After an image string: `,` or `]`.
    ImagesSep,
    /// Reading `null` as the value of `images`: how many of its letters matched.
    ImagesNull(u8),
    String(Target, Str),
    Capture,
    AfterValue,
    Done,
}

/// The scanner's state between chunks.
#[derive(Debug)]
pub struct BodyScanner {
    state: State,
    /// The string being read (a key or an image), escapes resolved.
    text: Vec<u8>,
    /// A `\uXXXX` being read, and a high surrogate waiting for its low half.
    unicode: u32,
    high_surrogate: Option<u32>,
    key: String,
    seen: Vec<String>,
    present: Vec<String>,
    // Capture of a whole `names`/`s3` value: raw bytes, nesting depth, string state.
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

fn bad(msg: impl Into<String>) -> RequestError {
    RequestError::json(msg)
}

/// JSON's whitespace (RFC 8259 §2): not form feed or vertical tab.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl BodyScanner {
    /// A scanner at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            text: Vec::new(),
            unicode: 0,
            high_surrogate: None,
            key: String::new(),
            seen: Vec::new(),
            present: Vec::new(),
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
                State::String(target, Str::Text) => {
                    // Fast path: copy the run of plain characters up to the next quote, escape or
                    // (invalid) control character.
                    let run = plain_run(&chunk[i..]);
                    if self.high_surrogate.is_some() && run > 0 {
                        return Err(bad("a lone surrogate in a \\u escape"));
                    }
                    self.text.extend_from_slice(&chunk[i..i + run]);
                    if target == Target::Key && self.text.len() > MAX_KEY_BYTES {
                        return Err(bad(format!(
                            "unknown field `{}`, expected `images`, `names` or `s3`",
                            excerpt(&String::from_utf8_lossy(&self.text))
                        )));
                    }
                    i += run;
                    match chunk.get(i) {
                        Some(b'"') => {
                            if self.high_surrogate.is_some() {
                                return Err(bad("a lone surrogate in a \\u escape"));
                            }
                            self.end_string(target, out)?;
                        }
                        Some(b'\\') => self.state = State::String(target, Str::Escape),
                        Some(_) => return Err(bad("a control character inside a string (escape it)")),
                        None => {}
                    }
                    i += 1;
                    continue;
                }
                State::String(target, Str::Escape) => {
                    let c = match b {
                        b'"' | b'\\' | b'/' => b,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            self.unicode = 0;
                            self.state = State::String(target, Str::Unicode(0));
                            i += 1;
                            continue;
                        }
                        _ => return Err(bad(format!("invalid escape \\{}", excerpt(&(b as char).to_string())))),
                    };
                    if self.high_surrogate.is_some() {
                        return Err(bad("a lone surrogate in a \\u escape"));
                    }
                    self.text.push(c);
                    self.state = State::String(target, Str::Text);
                }
                State::String(target, Str::Unicode(n)) => {
                    let d = (b as char).to_digit(16).ok_or_else(|| bad("a \\u escape needs four hex digits"))?;
                    self.unicode = self.unicode * 16 + d;
                    if n < 3 {
                        self.state = State::String(target, Str::Unicode(n + 1));
                    } else {
                        self.push_unicode()?;
                        self.state = State::String(target, Str::Text);
                    }
                }
                _ if is_ws(b) && !matches!(self.state, State::Capture | State::ImagesNull(_)) => {}
                State::Start => {
                    if b != b'{' {
                        return Err(bad("the body must be a JSON object"));
                    }
                    self.state = State::KeyOrEnd;
                }
                State::KeyOrEnd | State::Key => match b {
                    b'"' => {
                        self.text.clear();
                        self.state = State::String(Target::Key, Str::Text);
                    }
                    b'}' if self.state == State::KeyOrEnd => self.state = State::Done,
                    _ => return Err(bad("expected a member name")),
                },
                State::Colon => {
                    if b != b':' {
                        return Err(bad("expected ':' after a member name"));
                    }
                    self.state = State::Value;
                }
                State::Value => {
                    if self.key == "images" {
                        match b {
                            b'[' => {
                                self.present.push(self.key.clone());
                                self.state = State::ImagesFirst;
                            }
                            b'n' => self.state = State::ImagesNull(1),
                            _ => return Err(bad("`images` must be an array of base64 strings")),
                        }
                    } else {
                        self.raw.clear();
                        self.depth = 0;
                        self.in_string = false;
                        self.escaped = false;
                        self.state = State::Capture;
                        continue; // re-read this byte in Capture
                    }
                }
                State::ImagesNull(n) => {
                    if b != b"null"[usize::from(n)] {
                        return Err(bad("`images` must be an array of base64 strings"));
                    }
                    self.state = if n == 3 { State::AfterValue } else { State::ImagesNull(n + 1) };
                }
                State::ImagesFirst | State::ImagesNext => match b {
                    b'"' => {
                        self.text.clear();
                        self.state = State::String(Target::Image, Str::Text);
                    }
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
                    if self.raw.is_empty() && is_ws(b) {
                        i += 1;
                        continue;
                    }
                    self.raw.push(b);
                    if self.raw.len() > MAX_MEMBER_BYTES {
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
                    b',' => self.state = State::Key,
                    b'}' => self.state = State::Done,
                    _ => return Err(bad("expected ',' or '}' after a member")),
                },
                State::Done => return Err(bad("trailing characters after the JSON object")),
            }
            i += 1;
        }
        Ok(())
    }

    /// Appends the code point of a finished `\uXXXX`, pairing surrogates.
    fn push_unicode(&mut self) -> Result<()> {
        let u = self.unicode;
        let c = match (self.high_surrogate.take(), u) {
            (None, 0xd800..=0xdbff) => {
                self.high_surrogate = Some(u);
                return Ok(());
            }
            (Some(high), 0xdc00..=0xdfff) => 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00),
            (Some(_), _) | (None, 0xdc00..=0xdfff) => return Err(bad("a lone surrogate in a \\u escape")),
            (None, c) => c,
        };
        let c = char::from_u32(c).ok_or_else(|| bad("invalid \\u escape"))?;
        let mut buf = [0u8; 4];
        self.text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    fn end_string(&mut self, target: Target, out: &mut Vec<Event>) -> Result<()> {
        if std::str::from_utf8(&self.text).is_err() {
            return Err(bad("a string is not valid UTF-8"));
        }
        match target {
            Target::Key => {
                let key = String::from_utf8_lossy(&self.text).into_owned();
                if !matches!(key.as_str(), "images" | "names" | "s3") {
                    return Err(bad(format!("unknown field `{}`, expected `images`, `names` or `s3`", excerpt(&key))));
                }
                if self.seen.contains(&key) {
                    return Err(bad(format!("duplicate field `{key}`")));
                }
                self.seen.push(key.clone());
                self.key = key;
                self.state = State::Colon;
            }
            Target::Image => {
                out.push(Event::Image(std::mem::take(&mut self.text)));
                self.state = State::ImagesSep;
            }
        }
        Ok(())
    }

    fn finish_capture(&mut self, out: &mut Vec<Event>) -> Result<()> {
        let raw = std::mem::take(&mut self.raw);
        let text = std::str::from_utf8(&raw).map_err(|_| bad("member is not UTF-8"))?;
        let text = text.trim_end_matches(is_ws_char);
        if text == "null" {
            return Ok(());
        }
        match self.key.as_str() {
            "names" => out.push(Event::Names(
                serde_json::from_str(text)
                    .map_err(|e| RequestError::json_from("`names` must be an array of strings: ", e))?,
            )),
            "s3" => out.push(Event::S3(serde_json::from_str(text).map_err(|e| RequestError::json_from("`s3`: ", e))?)),
            other => return Err(bad(format!("unexpected member `{other}`"))),
        }
        self.present.push(self.key.clone());
        Ok(())
    }

    /// Whether the body had this top-level field with a value other than `null` (an empty
    /// `images` array counts).
    pub fn has_field(&self, key: &str) -> bool {
        self.present.iter().any(|k| k == key)
    }

    /// Checks that the body was a complete object.
    pub fn finish(&self) -> Result<()> {
        if self.state == State::Done { Ok(()) } else { Err(bad("the JSON body ends early")) }
    }
}

fn is_ws_char(c: char) -> bool {
    c.is_ascii() && is_ws(c as u8)
}

/// Scans a whole body at once into the value `serde_json` would build (differential tests).
pub fn scan_whole(body: &[u8]) -> Result<DetectBody> {
    let mut scanner = BodyScanner::new();
    let mut events = Vec::new();
    scanner.feed(body, &mut events)?;
    scanner.finish()?;
    let mut out = DetectBody::default();
    for e in events {
        match e {
            Event::Image(text) => out
                .images
                .get_or_insert_with(Vec::new)
                .push(String::from_utf8(text).map_err(|_| bad("a string is not valid UTF-8"))?),
            Event::Names(n) => out.names = Some(n),
            Event::S3(k) => out.s3 = Some(k),
        }
    }
    if scanner.has_field("images") && out.images.is_none() {
        out.images = Some(Vec::new());
    }
    Ok(out)
}

/// The length of the run of plain string characters `bytes` starts with: up to the first quote,
/// backslash or control character, or all of it. Whole 32-byte blocks are tested without an early
/// exit, which the compiler turns into vector compares (a base64 image is megabytes of one run).
fn plain_run(bytes: &[u8]) -> usize {
    // Bitwise, not short-circuit, operators: no branch per byte.
    let special = |c: u8| (c == b'"') | (c == b'\\') | (c < 0x20);
    let (blocks, _) = bytes.as_chunks::<32>();
    let plain =
        blocks.iter().take_while(|block| block.iter().fold(0u8, |any, &c| any | u8::from(special(c))) == 0).count()
            * 32;
    plain + bytes[plain..].iter().position(|&c| special(c)).unwrap_or(bytes.len() - plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Coded as _;

    #[test]
    fn plain_runs_end_at_the_first_special_byte_wherever_it_is() {
        for len in [0, 1, 31, 32, 33, 64, 100] {
            assert_eq!(plain_run(&vec![b'A'; len]), len);
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                    let mut bytes = vec![b'A'; len];
                    bytes[at] = special;
                    if at + 1 < len {
                        bytes[len - 1] = b'"'; // a later special byte does not count
                    }
                    assert_eq!(plain_run(&bytes), at, "len {len}, {special:#x} at {at}");
                }
            }
        }
        assert_eq!(plain_run("é ok 0x20 and DEL \u{7f}".as_bytes()), "é ok 0x20 and DEL \u{7f}".len());
    }

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
        let body = r#" { "names" : ["a.jpg", "b \"q\".jpg"], "im\u0061ges": ["QUJD", "RE\/F\u0047", "SE\nlK", "\ud83d\ude00"] } "#;
        let whole = scan_in_chunks(body, body.len()).unwrap();
        assert_eq!(
            whole,
            vec![
                Event::Names(vec!["a.jpg".into(), "b \"q\".jpg".into()]),
                Event::Image(b"QUJD".to_vec()),
                Event::Image(b"RE/FG".to_vec()),
                Event::Image(b"SE\nlK".to_vec()),
                Event::Image("😀".as_bytes().to_vec()),
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
        let mut scanner = BodyScanner::new();
        scanner.feed(br#"{"images": null, "s3": {"keys": ["k"]}}"#, &mut Vec::new()).unwrap();
        assert!(!scanner.has_field("images") && scanner.has_field("s3"));
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
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
            "{\"images\": [\"a\nb\"]}",
            "{\"images\": [\"a\tb\"]}",
            "{\"ima\nges\": []}",
            "\u{c}{\"images\": []}",
            r#"{"images": ["\ud800"]}"#,
            r#"{"images": ["\udc00x"]}"#,
            r#"{"images": ["\x"]}"#,
            r#"{"images": nul}"#,
            r#"{"images": [],}"#,
            r#"{"images": ["a",]}"#,
        ] {
            assert!(serde_json::from_str::<DetectBody>(body).is_err(), "serde accepts {body:?}");
            let err = scan_in_chunks(body, 4).unwrap_err();
            assert_eq!(err.code(), "invalid_json", "{body:?}: {err}");
        }
    }

    #[test]
    fn what_serde_json_accepts_is_read_the_same() {
        for body in [
            r#"{"im\u0061ges": ["QUJD"]}"#,
            r#"{"images": null}"#,
            r#"{"images": ["caf\u00e9", "\u20ac"], "names": ["x", "y"]}"#,
            "{\"images\":[\"\u{e9}\"]}",
            r#"{"s3": {"keys": ["a"]}, "names": null}"#,
            "\r\n{\t\"images\" : [ ] }\n",
        ] {
            let want: DetectBody = serde_json::from_str(body).unwrap();
            assert_eq!(scan_whole(body.as_bytes()).unwrap(), want, "{body:?}");
        }
    }

    #[test]
    fn unknown_keys_are_quoted_short() {
        let body = format!("{{\"{}\": 1}}", "k".repeat(100_000));
        let err = scan_in_chunks(&body, 4096).unwrap_err();
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
    }
}
