//! The results CSV: the original study's columns first, then objdet's.

use std::path::Path;

use serde::{Deserialize, Serialize};

use anyhow::{Context as _, Result, bail};

/// One measured batch (one repeat of one size against one target).
///
/// Column meanings (README, "The offloading experiment"):
/// - `transfer_mb_s`: the original study's definition, request bytes ÷ the *server's* receive time;
/// - `client_mb_s`: as the client saw it, request bytes ÷ the time to hand the body to the network
///   (for `s3` mode: the image bytes ÷ the presign-and-PUT phase).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// UTC time of the measurement, RFC 3339.
    pub date: String,
    /// Images in the batch.
    pub total_images: usize,
    /// Bytes sent, in MB (10^6): the JSON body (inline), the image bytes (binary, s3, local).
    pub payload_mb: f64,
    /// Original definition: payload ÷ server receive time, MB/s (empty for local and s3).
    pub transfer_mb_s: Option<f64>,
    /// Server-side time of the request(s), s (`timing.total_ms`; summed over requests when several
    /// run at once, so it can exceed `round_trip_s` with `--concurrency` > 1).
    pub server_total_s: f64,
    /// Average `session.run` time per image, s.
    pub avg_inference_s: f64,
    /// Free text: where the service ran ("Location" in the original).
    pub location: String,
    /// `local`, `inline`, `binary` or `s3`.
    pub mode: String,
    /// What the user waited, end to end, s.
    pub round_trip_s: f64,
    /// Time to send the payload as the client saw it (s3: presign + PUTs), s.
    pub upload_s: Option<f64>,
    /// `round_trip_s − server_total_s − upload_s`: latency, response download, client work, s.
    pub client_overhead_s: f64,
    /// Repeat index, 1-based.
    pub repeat: usize,
    /// Emulated uplink, Mbit/s (empty: the real link).
    pub uplink_mbps: Option<f64>,
    /// Emulated round-trip time per request, ms (empty: none).
    pub rtt_ms: Option<f64>,
    /// Payload ÷ `upload_s`, MB/s.
    pub client_mb_s: Option<f64>,
    /// Median round trip over the repeats of this size (when repeats > 1).
    pub round_trip_p50_s: Option<f64>,
    /// 95th percentile round trip over the repeats of this size (when repeats > 1).
    pub round_trip_p95_s: Option<f64>,
    /// Images that came back with an error.
    pub errors: usize,
}

/// The mode of rows read from the original study's table: JSON batches to a server, their
/// payload counted as image bytes and their time the server's total (which includes the upload).
pub const STUDY_MODE: &str = "study";

/// The header, in order.
pub const COLUMNS: &[&str] = &[
    "date",
    "total_images",
    "payload_mb",
    "transfer_mb_s",
    "server_total_s",
    "avg_inference_s",
    "location",
    "mode",
    "round_trip_s",
    "upload_s",
    "client_overhead_s",
    "repeat",
    "uplink_mbps",
    "rtt_ms",
    "client_mb_s",
    "round_trip_p50_s",
    "round_trip_p95_s",
    "errors",
];

/// Appends rows to `path`, writing the header when the file is new or empty; refuses a file whose
/// header is different.
pub fn append(path: &Path, rows: &[Row]) -> Result<()> {
    let io = || format!("writing {}", path.display());
    let exists = path.metadata().map(|m| m.len() > 0).unwrap_or(false);
    if exists {
        let mut r = ::csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        let header: Vec<String> = r
            .headers()
            .with_context(|| format!("reading the header of {}", path.display()))?
            .iter()
            .map(String::from)
            .collect();
        if header != COLUMNS {
            bail!("{} has different columns; write to a new file", path.display());
        }
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(io)?;
    let mut w = ::csv::WriterBuilder::new().has_headers(!exists).from_writer(file);
    for row in rows {
        w.serialize(row).with_context(io)?;
    }
    w.flush().with_context(io)
}

/// A results file as read: the rows that can be used, and why the others cannot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Usable rows, in file order.
    pub rows: Vec<Row>,
    /// Rows left out, by line number (the header is line 1).
    pub skipped: Vec<Skipped>,
    /// What the header said about the file: ignored columns, the format recognised.
    pub notes: Vec<String>,
}

/// A row that could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Line number in the file (the header is line 1).
    pub line: usize,
    /// Why, in words.
    pub reason: String,
}

/// The columns a reader understands, each with the header spellings that name it (compared after
/// [`header_key`]): objdet's own names, and the original study's published ones.
const ALIASES: &[(&str, &[&str])] = &[
    ("date", &["date"]),
    ("total_images", &["total_images", "images"]),
    ("payload_mb", &["payload_mb", "payload_size", "payload_size_mb"]),
    ("transfer_mb_s", &["transfer_mb_s", "transfer_speed", "transfer_speed_mb_s"]),
    ("server_total_s", &["server_total_s", "total_execution_time_on_server", "total_execution_time_on_server_s"]),
    ("avg_inference_s", &["avg_inference_s", "avg_inference_time", "avg_inference_time_s"]),
    ("location", &["location"]),
    ("mode", &["mode"]),
    ("round_trip_s", &["round_trip_s"]),
    ("upload_s", &["upload_s"]),
    ("client_overhead_s", &["client_overhead_s"]),
    ("repeat", &["repeat"]),
    ("uplink_mbps", &["uplink_mbps"]),
    ("rtt_ms", &["rtt_ms"]),
    ("client_mb_s", &["client_mb_s"]),
    ("round_trip_p50_s", &["round_trip_p50_s"]),
    ("round_trip_p95_s", &["round_trip_p95_s"]),
    ("errors", &["errors"]),
];

/// A header cell reduced to lower-case words joined by `_`: `Total Execution time on server (s)`
/// becomes `total_execution_time_on_server_s`.
pub fn header_key(h: &str) -> String {
    let mut out = String::new();
    for c in h.trim().trim_start_matches('\u{feff}').chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// The number in `cell`, with an optional unit from `units` after it (`0.19MB`, `0.39 MB/s`,
/// `37.73 s`); `None` for an empty cell.
fn number(cell: &str, units: &[&str]) -> Result<Option<f64>, String> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(None);
    }
    let split =
        cell.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))).unwrap_or(cell.len());
    let (num, unit) = cell.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!("`{}` is not a number", crate::error::excerpt(cell)));
    }
    if !unit.is_empty() && !units.iter().any(|u| u.eq_ignore_ascii_case(unit)) {
        let allowed = if units.is_empty() { "none".to_string() } else { units.join(", ") };
        return Err(format!("unit `{}` not understood (allowed: {allowed})", crate::error::excerpt(unit)));
    }
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
        Ok(_) => Err(format!("`{}` is not a non-negative number", crate::error::excerpt(cell))),
        Err(_) => Err(format!("`{}` is not a number", crate::error::excerpt(cell))),
    }
}

/// A date cell as RFC 3339 (`Z` only when the cell gave a zone): RFC 3339 / ISO `YYYY-MM-DD[ HH:MM[:SS]]`
/// as written, and the study's day-first `DD-MM-YYYY[ HH:MM[:SS]]` (or with `/`).
fn date(cell: &str) -> Result<String, String> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(String::new());
    }
    let bad = || {
        format!(
            "date `{}` not understood (expected DD-MM-YYYY HH:MM:SS, as the study wrote it, or RFC 3339)",
            crate::error::excerpt(cell)
        )
    };
    let (day, time) = match cell.split_once(['T', ' ']) {
        Some((d, t)) => (d, t.trim()),
        None => (cell, ""),
    };
    let parts: Vec<&str> = day.split(['-', '/']).collect();
    let nums: Vec<u32> = parts.iter().map(|p| p.parse::<u32>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let (y, m, d) = match (parts.as_slice(), nums.as_slice()) {
        ([a, ..], [y, m, d]) if a.len() == 4 => (*y, *m, *d),
        ([_, _, c], [d, m, y]) if c.len() == 4 => (*y, *m, *d),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let (clock, zone) = match time.find(['Z', 'z', '+']).or_else(|| time.rfind('-')) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, ""),
    };
    let hms: Vec<&str> = if clock.is_empty() { vec![] } else { clock.split(':').collect() };
    let field = |i: usize, max: f64| -> Result<f64, String> {
        let v = hms.get(i).map_or(Ok(0.0), |s| s.parse::<f64>().map_err(|_| bad()))?;
        if (0.0..max).contains(&v) { Ok(v) } else { Err(bad()) }
    };
    if hms.len() > 3 || hms.len() == 1 {
        return Err(bad());
    }
    let (hh, mm, ss) = (field(0, 24.0)?, field(1, 60.0)?, field(2, 61.0)?);
    let zone = if zone.eq_ignore_ascii_case("z") { "Z" } else { zone };
    Ok(format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{zone}", hh as u32, mm as u32, ss as u32))
}

/// Reads a results CSV: objdet's own from any version (absent optional columns take their
/// defaults: no errors, no emulated link, repeat 1), or the original study's seven-column table
/// (`Date, Total Images, Payload Size, Transfer Speed, Total Execution time on server (s),
/// Avg Inference Time (s), Location`; headers compared case- and spacing-insensitively, units
/// `MB`, `MB/s`, `s` allowed in cells, day-first dates).
///
/// The study's rows are mapped as the study defined its columns (README, "Reading the study's
/// table"): `Location` is the series and the mode is [`STUDY_MODE`]; *Total Execution time on
/// server* ran "from when the request was received in the server until it was returned to the
/// client", so it already holds the upload and is the time waited; *Payload Size* is "the
/// accumulated size of all the images", i.e. image bytes (not a base64 body); the upload time is
/// payload ÷ *Transfer Speed*, a part of the server time. A missing location becomes the file's
/// name. Rows that cannot be used are listed in [`Table::skipped`], never fatal; a file without
/// an image count or any time column is an error.
pub fn read(path: &Path) -> Result<Table> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let fallback_location = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    read_from(file, &fallback_location).with_context(|| format!("reading {}", path.display()))
}

/// [`read`] over any reader; `fallback_location` names rows without a location.
pub fn read_from(input: impl std::io::Read, fallback_location: &str) -> Result<Table> {
    let mut r = ::csv::ReaderBuilder::new().flexible(true).trim(::csv::Trim::All).from_reader(input);
    let headers = r.headers().context("reading the header")?.clone();
    let mut table = Table::default();
    // Field → (index, the header as the file spells it).
    let mut column: std::collections::HashMap<&str, (usize, String)> = std::collections::HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let key = header_key(h);
        match ALIASES.iter().find(|(_, names)| names.contains(&key.as_str())) {
            Some((field, _)) if !column.contains_key(field) => {
                column.insert(field, (i, crate::error::excerpt(h)));
            }
            Some(_) => {
                table.notes.push(format!("column `{}` repeats an earlier one: ignored", crate::error::excerpt(h)))
            }
            None if key.is_empty() => {}
            None => table.notes.push(format!("column `{}` is not one objdet reads: ignored", crate::error::excerpt(h))),
        }
    }
    if !column.contains_key("total_images") {
        bail!("no `total_images` (or the study's `Total Images`) column");
    }
    let study = !column.contains_key("round_trip_s");
    if study && !column.contains_key("server_total_s") {
        bail!("no time column: need `round_trip_s` (objdet) or `Total Execution time on server (s)` (the study)");
    }
    if study {
        table.notes.push(format!(
            "no `round_trip_s` column: read as the study's table (mode {STUDY_MODE}: waited = the server's total, which \
             includes the upload; payload = image bytes)"
        ));
    }
    for (i, record) in r.records().enumerate() {
        let line = i + 2;
        let record = match record {
            Ok(rec) => rec,
            Err(e) => {
                table.skipped.push(Skipped { line, reason: format!("not CSV: {e}") });
                continue;
            }
        };
        if record.iter().all(|c| c.is_empty()) {
            continue;
        }
        match parse_row(&record, &column, study, fallback_location) {
            Ok(row) => table.rows.push(row),
            Err(reason) => table.skipped.push(Skipped { line, reason }),
        }
    }
    Ok(table)
}

fn parse_row(
    record: &::csv::StringRecord,
    column: &std::collections::HashMap<&str, (usize, String)>,
    study: bool,
    fallback_location: &str,
) -> Result<Row, String> {
    let cell = |f: &str| column.get(f).and_then(|(i, _)| record.get(*i)).unwrap_or("");
    let name = |f: &str| column.get(f).map_or(f.to_string(), |(_, h)| h.clone());
    let num = |f: &str, units: &[&str]| number(cell(f), units).map_err(|e| format!("{}: {e}", name(f)));
    let need = |f: &str, units: &[&str]| num(f, units)?.ok_or_else(|| format!("{} is empty", name(f)));
    let count = |f: &str, default: usize| -> Result<usize, String> {
        match num(f, &[])? {
            None => Ok(default),
            Some(v) if v.fract() == 0.0 && v <= 1e9 => Ok(v as usize),
            Some(_) => Err(format!("{}: `{}` is not a whole number", name(f), crate::error::excerpt(cell(f)))),
        }
    };
    let total_images = count("total_images", 0)?;
    if total_images == 0 {
        return Err(format!("{} is empty or 0", name("total_images")));
    }
    let secs: &[&str] = &["s"];
    let payload_mb = num("payload_mb", &["MB"])?.unwrap_or(0.0);
    let transfer_mb_s = num("transfer_mb_s", &["MB/s"])?;
    let server_total_s = num("server_total_s", secs)?;
    let location = match cell("location") {
        "" => fallback_location.to_string(),
        l => l.to_string(),
    };
    let mode = match cell("mode") {
        "" if study => STUDY_MODE.to_string(),
        "" => "inline".to_string(),
        m => m.to_ascii_lowercase(),
    };
    let (round_trip_s, upload_s) = if study {
        // The server's total already holds the upload (the study timed the body's arrival inside it).
        let server = server_total_s.ok_or_else(|| format!("{} is empty", name("server_total_s")))?;
        let upload = match transfer_mb_s {
            Some(t) if t > 0.0 => Some(payload_mb / t),
            _ => None,
        };
        (server, upload)
    } else {
        (need("round_trip_s", secs)?, num("upload_s", secs)?)
    };
    Ok(Row {
        date: date(cell("date"))?,
        total_images,
        payload_mb,
        transfer_mb_s,
        server_total_s: server_total_s.unwrap_or(0.0),
        avg_inference_s: num("avg_inference_s", secs)?.unwrap_or(0.0),
        location,
        mode,
        round_trip_s,
        upload_s,
        client_overhead_s: num("client_overhead_s", secs)?.unwrap_or(0.0),
        repeat: count("repeat", 1)?.max(1),
        uplink_mbps: num("uplink_mbps", &[])?,
        rtt_ms: num("rtt_ms", &[])?,
        client_mb_s: num("client_mb_s", &[])?,
        round_trip_p50_s: num("round_trip_p50_s", secs)?,
        round_trip_p95_s: num("round_trip_p95_s", secs)?,
        errors: count("errors", 0)?,
    })
}

/// The current time as RFC 3339 UTC, seconds precision.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_the_struct() {
        let row = Row {
            date: utc_now(),
            total_images: 1,
            payload_mb: 0.1,
            transfer_mb_s: None,
            server_total_s: 0.05,
            avg_inference_s: 0.04,
            location: "here, there".into(),
            mode: "local".into(),
            round_trip_s: 0.06,
            upload_s: None,
            client_overhead_s: 0.01,
            repeat: 1,
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("objdet-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.csv");
        let _ = std::fs::remove_file(&p);
        append(&p, std::slice::from_ref(&row)).unwrap();
        append(&p, std::slice::from_ref(&row)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
        assert_eq!(text.lines().count(), 3);
        assert_eq!(read(&p).unwrap().rows, vec![row.clone(), row]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cells_with_units_and_the_studys_dates() {
        assert_eq!(number("0.19MB", &["MB"]), Ok(Some(0.19)));
        assert_eq!(number(" 0.39 mb/s ", &["MB/s"]), Ok(Some(0.39)));
        assert_eq!(number("37.73", &["s"]), Ok(Some(37.73)));
        assert_eq!(number("", &["s"]), Ok(None));
        assert!(number("12KB", &["MB"]).unwrap_err().contains("unit `KB`"));
        assert!(number("-1", &[]).unwrap_err().contains("non-negative"));
        assert!(number("MB", &["MB"]).unwrap_err().contains("not a number"));
        assert!(number("inf", &[]).is_err());
        assert_eq!(date("09-07-2023 00:12:28").unwrap(), "2023-07-09T00:12:28");
        assert_eq!(date("9/7/2023").unwrap(), "2023-07-09T00:00:00");
        assert_eq!(date("2026-12-01T14:58:17Z").unwrap(), "2026-12-01T14:58:17Z");
        assert_eq!(date("2026-12-01 14:58:17+01:00").unwrap(), "2026-12-01T14:58:17+01:00");
        for bad in ["13-13-2023", "09-07-23 00:00", "yesterday", "09-07-2023 25:00:00", "09-07-2023 10"] {
            assert!(date(bad).is_err(), "{bad}");
        }
        assert_eq!(header_key(" Total Execution time on server (s)"), "total_execution_time_on_server_s");
        assert_eq!(header_key("\u{feff}Date"), "date");
    }

    #[test]
    fn utc_format() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'));
    }
}
