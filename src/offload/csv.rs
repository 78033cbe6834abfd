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

/// Reads every row of a results CSV.
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let mut r = ::csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{} row {}", path.display(), i + 2)))
        .collect()
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
        assert_eq!(read(&p).unwrap(), vec![row.clone(), row]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn utc_format() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'));
    }
}
