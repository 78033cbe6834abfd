//! The offload advisor: fits `time ≈ fixed + per_mb·MB + per_image·images` per location and mode
//! from benchmark rows, and turns the fits into break-even payloads and a per-batch decision.

use super::csv::Row;

/// Fits below this R² are reported as unable to support an answer.
pub const MIN_R2: f64 = 0.9;

/// A fitted linear time model for one location and mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// Location label.
    pub location: String,
    /// Mode (`local`, `inline`, `binary`, `s3`).
    pub mode: String,
    /// Rows used.
    pub rows: usize,
    /// Fixed cost per batch, s.
    pub fixed_s: f64,
    /// Cost per MB of payload, s.
    pub per_mb_s: f64,
    /// Cost per image, s.
    pub per_image_s: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Root-mean-square residual, s.
    pub rmse_s: f64,
    /// Payload MB and image count were proportional in the data: the per-MB cost is folded into
    /// the per-image cost (at `mb_per_image`).
    pub collinear: bool,
    /// Mean payload per image in the rows, MB.
    pub mb_per_image: f64,
    /// Mean server time per image, s (for the Lambda cost).
    pub server_s_per_image: f64,
    /// Smallest and largest batch in the rows, images: the fit is not extrapolated beyond.
    pub n_range: (f64, f64),
}

impl Fit {
    /// Predicted wall time of a batch, s, from the payload as this mode sends it.
    pub fn predict(&self, payload_mb: f64, images: f64) -> f64 {
        self.fixed_s + self.per_mb_s * payload_mb + self.per_image_s * images
    }

    /// Payload bytes per byte of image data: objdet's inline rows count the JSON body (base64, 4/3);
    /// the rest (and the study's table, which counted image bytes) raw bytes.
    pub fn wire_factor(&self) -> f64 {
        if self.mode == "inline" { 4.0 / 3.0 } else { 1.0 }
    }

    /// Predicted wall time of `images` images totalling `image_mb` MB of image data.
    pub fn time_for(&self, image_mb: f64, images: f64) -> f64 {
        self.predict(image_mb * self.wire_factor(), images)
    }

    /// Mean image data per image in the rows, MB.
    pub fn image_mb_per_image(&self) -> f64 {
        self.mb_per_image / self.wire_factor()
    }

    /// Whether the fit is good enough to act on.
    pub fn usable(&self) -> bool {
        self.r2 >= MIN_R2 && self.r2.is_finite()
    }

    /// `time ≈ …` as text.
    pub fn formula(&self) -> String {
        if self.collinear {
            format!("{:.3} s + {:.4} s/image (at {:.3} MB/image)", self.fixed_s, self.per_image_s, self.mb_per_image)
        } else {
            format!("{:.3} s + {:.4} s/MB + {:.4} s/image", self.fixed_s, self.per_mb_s, self.per_image_s)
        }
    }
}

/// Why a group could not be fitted.
#[derive(Debug, Clone, PartialEq)]
pub struct NoFit {
    /// Location label.
    pub location: String,
    /// Mode.
    pub mode: String,
    /// Plain explanation.
    pub reason: String,
}

/// Solves the least-squares problem `X b ≈ y` for small `X` by normal equations; `None` when singular.
fn least_squares(x: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let k = x.first()?.len();
    let mut a = vec![vec![0.0; k + 1]; k];
    for (row, &t) in x.iter().zip(y) {
        for i in 0..k {
            for j in 0..k {
                a[i][j] += row[i] * row[j];
            }
            a[i][k] += row[i] * t;
        }
    }
    // Gaussian elimination with partial pivoting; scale-aware singularity test.
    let scale = a.iter().flat_map(|r| r[..k].iter()).fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    for col in 0..k {
        let piv = (col..k).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < scale * 1e-10 {
            return None;
        }
        a.swap(col, piv);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| a[i][k] / a[i][i]).collect())
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va <= 0.0 || vb <= 0.0 { 1.0 } else { cov / (va * vb).sqrt() }
}

/// Fits one group of rows (one location and mode) on `time(row)`.
pub fn fit(rows: &[&Row], time: impl Fn(&Row) -> f64) -> Result<Fit, NoFit> {
    let (location, mode) = rows.first().map(|r| (r.location.clone(), r.mode.clone())).unwrap_or_default();
    let no = |reason: String| NoFit { location: location.clone(), mode: mode.clone(), reason };
    let rows: Vec<&Row> = rows.iter().copied().filter(|r| r.errors == 0 && time(r).is_finite()).collect();
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.total_images).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if rows.len() < 3 || sizes.len() < 2 {
        return Err(no(format!(
            "{} usable rows over {} batch sizes: need at least 3 rows and 2 sizes to fit fixed + per-image costs",
            rows.len(),
            sizes.len()
        )));
    }
    let y: Vec<f64> = rows.iter().map(|r| time(r)).collect();
    let mb: Vec<f64> = rows.iter().map(|r| r.payload_mb).collect();
    let n: Vec<f64> = rows.iter().map(|r| r.total_images as f64).collect();
    let mb_per_image = mb.iter().sum::<f64>() / n.iter().sum::<f64>();
    let server_s_per_image = rows.iter().map(|r| r.server_total_s).sum::<f64>() / n.iter().sum::<f64>();
    // Separate per-MB and per-image costs only when the data varies them independently.
    let three = rows.len() >= 4 && correlation(&mb, &n).abs() < 0.995;
    let (coef, collinear) = if three {
        let x: Vec<Vec<f64>> = rows.iter().map(|r| vec![1.0, r.payload_mb, r.total_images as f64]).collect();
        match least_squares(&x, &y) {
            Some(c) => (c, false),
            None => (vec![], true),
        }
    } else {
        (vec![], true)
    };
    let (fixed_s, per_mb_s, per_image_s) = if collinear {
        let x: Vec<Vec<f64>> = rows.iter().map(|r| vec![1.0, r.total_images as f64]).collect();
        let c = least_squares(&x, &y).ok_or_else(|| no("the batch sizes do not vary".into()))?;
        (c[0], 0.0, c[1])
    } else {
        (coef[0], coef[1], coef[2])
    };
    let f = Fit {
        location: location.clone(),
        mode: mode.clone(),
        rows: rows.len(),
        fixed_s,
        per_mb_s,
        per_image_s,
        r2: 0.0,
        rmse_s: 0.0,
        collinear,
        mb_per_image,
        server_s_per_image,
        n_range: (n.iter().copied().fold(f64::INFINITY, f64::min), n.iter().copied().fold(0.0, f64::max)),
    };
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let ss_res: f64 =
        rows.iter().zip(&y).map(|(r, t)| (t - f.predict(r.payload_mb, r.total_images as f64)).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|t| (t - mean).powi(2)).sum();
    let r2 = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 0.0 };
    Ok(Fit { r2, rmse_s: (ss_res / y.len() as f64).sqrt(), ..f })
}

/// Fits every (location, mode) group of `rows` on the round-trip time.
///
/// With `uplink_mbps`, remote groups are fitted on the time *not* spent sending the payload
/// (round trip − upload) and the payload's transfer at that uplink is added back as a per-MB cost,
/// so "what if my link were X" can be asked of measurements taken on another link.
pub fn fit_all(rows: &[Row], uplink_mbps: Option<f64>) -> Vec<Result<Fit, NoFit>> {
    let mut groups: Vec<Group> = rows.iter().map(|r| (r.location.clone(), r.mode.clone())).collect();
    groups.sort();
    groups.dedup();
    groups
        .into_iter()
        .map(|(loc, mode)| {
            let g: Vec<&Row> = rows.iter().filter(|r| r.location == loc && r.mode == mode).collect();
            match (mode.as_str(), uplink_mbps) {
                ("local", _) | (_, None) => fit(&g, |r| r.round_trip_s),
                (_, Some(mbps)) => fit(&g, |r| r.round_trip_s - r.upload_s.unwrap_or(0.0)).map(|mut f| {
                    let transfer_per_mb = 8.0 / mbps;
                    if f.collinear {
                        f.per_image_s += transfer_per_mb * f.mb_per_image;
                    } else {
                        f.per_mb_s += transfer_per_mb;
                    }
                    f
                }),
            }
        })
        .collect()
}

/// Where two models cross, as a payload.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakEven {
    /// `a` is faster below `mb` MB and `b` above (or the reverse, per `a_faster_below`).
    At {
        /// The crossing payload, MB.
        mb: f64,
        /// Whether `a` wins for payloads below `mb`.
        a_faster_below: bool,
    },
    /// One model is faster for every positive payload.
    Never {
        /// Whether `a` is the one that always wins.
        a_always: bool,
    },
}

/// Seconds per MB of image data for a model, at images of `image_mb_per_image` MB.
fn slope(f: &Fit, image_mb_per_image: f64) -> f64 {
    f.per_mb_s * f.wire_factor() + f.per_image_s / image_mb_per_image
}

/// The amount of image data (MB, images of `image_mb_per_image` MB each) at which `a` and `b` take
/// the same time. Payloads are compared as image data, so inline JSON's base64 overhead counts
/// against the inline mode rather than shifting the comparison.
pub fn break_even(a: &Fit, b: &Fit, image_mb_per_image: f64) -> BreakEven {
    let (sa, sb) = (slope(a, image_mb_per_image), slope(b, image_mb_per_image));
    let d_fixed = b.fixed_s - a.fixed_s;
    let d_slope = sa - sb;
    if d_slope.abs() < 1e-12 {
        return BreakEven::Never { a_always: d_fixed > 0.0 };
    }
    let mb = d_fixed / d_slope;
    if mb <= 0.0 {
        // No crossing at positive payloads: compare at one image.
        let at = image_mb_per_image;
        BreakEven::Never { a_always: a.time_for(at, 1.0) < b.time_for(at, 1.0) }
    } else {
        BreakEven::At { mb, a_faster_below: a.fixed_s < b.fixed_s }
    }
}

/// Whether a location names this machine (`localhost`, `127.0.0.1`, `::1`, with or without a scheme
/// and port).
pub fn is_loopback(location: &str) -> bool {
    let rest = location.trim().split_once("://").map_or(location.trim(), |(_, r)| r);
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else if rest.matches(':').count() > 1 {
        rest.split('/').next().unwrap_or("")
    } else {
        rest.split([':', '/']).next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The break-even of `a` and `b` in words, only within the batch sizes both were measured at, and
/// whether there is one there.
fn crossing(a: &Fit, b: &Fit, a_name: &str, b_name: &str) -> (String, bool) {
    let lo = a.n_range.0.max(b.n_range.0);
    let hi = a.n_range.1.min(b.n_range.1);
    if hi <= lo {
        return ("the two were measured at batch sizes that do not overlap: no comparison".into(), false);
    }
    let mpi = (a.image_mb_per_image() + b.image_mb_per_image()) / 2.0;
    let faster = |n: f64| if a.time_for(n * mpi, n) <= b.time_for(n * mpi, n) { a_name } else { b_name };
    match break_even(a, b, mpi) {
        BreakEven::At { mb, a_faster_below } if mb / mpi >= lo && mb / mpi <= hi => (
            format!(
                "break-even at {mb:.2} MB of images (≈ {:.0} images of {mpi:.2} MB); {} is faster below, {} above",
                mb / mpi,
                if a_faster_below { a_name } else { b_name },
                if a_faster_below { b_name } else { a_name },
            ),
            true,
        ),
        _ => (
            format!(
                "{} is faster at every batch measured ({lo:.0}–{hi:.0} images, {:.2}–{:.2} MB); the lines do not cross there",
                faster((lo * hi).sqrt()),
                lo * mpi,
                hi * mpi
            ),
            false,
        ),
    }
}

/// A group of rows: (location, mode).
type Group = (String, String);

/// The side that runs here (mode `local`, else a server on this machine) and the others, by group.
fn sides(rows: &[Row]) -> Option<(Group, Vec<Group>)> {
    let mut groups: Vec<Group> = rows.iter().map(|r| (r.location.clone(), r.mode.clone())).collect();
    groups.sort();
    groups.dedup();
    let here = groups.iter().find(|g| g.1 == "local").or_else(|| groups.iter().find(|g| is_loopback(&g.0)))?.clone();
    let others = groups.into_iter().filter(|g| *g != here).collect();
    Some((here, others))
}

/// The median of the (non-empty) values, as every summary takes it ([`super::stats::median`]).
fn median(v: Vec<f64>) -> f64 {
    super::stats::median(&v).unwrap_or(f64::NAN)
}

/// What the measurements show without any model: per batch size measured on both sides, which
/// side the user waited less for; how many sizes the fits call the other way, and whether those
/// gaps are within the fits' scatter. For the study's table, also whether its own conclusion
/// (offloading pays below ~2.5 MB) holds in its rows.
fn observed(rows: &[Row], fits: &[Result<Fit, NoFit>]) -> String {
    let Some((here, others)) = sides(rows) else { return String::new() };
    let fit_of =
        |g: &(String, String)| fits.iter().filter_map(|f| f.as_ref().ok()).find(|f| f.location == g.0 && f.mode == g.1);
    let mut out = String::new();
    for there in &others {
        let at = |g: &(String, String), n: usize| -> Vec<&Row> {
            rows.iter().filter(|r| r.location == g.0 && r.mode == g.1 && r.total_images == n).collect()
        };
        let mut sizes: Vec<usize> =
            rows.iter().filter(|r| r.location == there.0 && r.mode == there.1).map(|r| r.total_images).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes.retain(|&n| !at(&here, n).is_empty());
        if sizes.is_empty() {
            continue;
        }
        let (mut remote_faster, mut against_fits, mut within_scatter) = (vec![], 0, 0);
        let mut claim = (0, 0); // (remote faster, sizes) under 2.5 MB of images
        for &n in &sizes {
            let (h, r) = (at(&here, n), at(there, n));
            let th = median(h.iter().map(|x| x.round_trip_s).collect());
            let tr = median(r.iter().map(|x| x.round_trip_s).collect());
            let remote_wins = tr < th;
            if remote_wins {
                remote_faster.push(n);
            }
            if let (Some(fh), Some(fr)) = (fit_of(&here), fit_of(there)) {
                let (mh, mr) = (
                    median(h.iter().map(|x| x.payload_mb).collect()),
                    median(r.iter().map(|x| x.payload_mb).collect()),
                );
                let predicted_remote = fr.predict(mr, n as f64) < fh.predict(mh, n as f64);
                if predicted_remote != remote_wins {
                    against_fits += 1;
                    if (tr - th).abs() <= fh.rmse_s.max(fr.rmse_s) {
                        within_scatter += 1;
                    }
                }
            }
            if there.1 == super::csv::STUDY_MODE {
                let image_mb = median(r.iter().map(|x| x.payload_mb).collect());
                if image_mb < 2.5 {
                    claim.1 += 1;
                    claim.0 += usize::from(remote_wins);
                }
            }
        }
        let list = |v: &[usize]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        out.push_str(&format!(
            "Measured: {} {} was faster than {} (here) at {} of {} batch sizes{}.\n",
            there.0,
            there.1,
            here.0,
            remote_faster.len(),
            sizes.len(),
            if remote_faster.is_empty() { String::new() } else { format!(" ({} images)", list(&remote_faster)) },
        ));
        if against_fits > 0 {
            out.push_str(&format!(
                "  The fitted lines call {against_fits} of these sizes the other way; {within_scatter} of those \
                 gaps are within the fits' scatter (RMSE), so only a model, not the rows, disagrees there.\n"
            ));
        }
        if claim.1 > 0 {
            out.push_str(&format!(
                "  The study's conclusion (offloading pays below ~2.5 MB): {} was faster in {} of the {} sizes under \
                 2.5 MB of images — {}.\n",
                there.0,
                claim.0,
                claim.1,
                if claim.0 * 2 > claim.1 { "its rows support it" } else { "its own rows do not support it" }
            ));
        }
    }
    out
}

/// Lambda compute + request cost of 1,000 images sent `images_per_request` at a time, at the
/// server time per image of `f`: `tune`'s price formula with x86_64's prices (the default
/// architecture).
pub fn lambda_cost_per_1000(f: &Fit, memory_mb: f64, images_per_request: usize) -> f64 {
    let billed_ms = f.server_s_per_image * images_per_request.max(1) as f64 * 1000.0;
    super::tune::Prices::X86_64.per_1000_images(memory_mb.round() as u32, billed_ms, images_per_request)
}

/// The decision for one batch: run locally or send it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// True to offload.
    pub offload: bool,
    /// Predicted local time, s.
    pub local_s: f64,
    /// Predicted remote time, s.
    pub remote_s: f64,
    /// One-line reason.
    pub reason: String,
}

/// Chooses between `local` and `remote` for a batch of `images` totalling `payload_mb` of image data.
pub fn decide(local: &Fit, remote: &Fit, payload_mb: f64, images: usize) -> Decision {
    let n = images as f64;
    let (l, r) = (local.time_for(payload_mb, n), remote.time_for(payload_mb, n));
    let offload = r < l;
    let reason = format!(
        "{} {images} images ({payload_mb:.2} MB): predicted {:.2} s locally vs {:.2} s via {} {} (fits: local R² {:.2}, remote R² {:.2})",
        if offload { "offloading" } else { "running locally" },
        l,
        r,
        remote.location,
        remote.mode,
        local.r2,
        remote.r2
    );
    Decision { offload, local_s: l, remote_s: r, reason }
}

/// The advisor's report on a set of rows.
pub fn report(rows: &[Row], payload_mb: Option<f64>, uplink_mbps: Option<f64>, memory_mb: f64) -> (String, bool) {
    let mut out = String::new();
    let fits = fit_all(rows, uplink_mbps);
    let mut ok = true;
    out.push_str(&format!("objdet advise: {} rows", rows.len()));
    if let Some(u) = uplink_mbps {
        out.push_str(&format!(", remote transfer re-estimated at {u} Mbit/s"));
    }
    out.push_str("\n\n| location | mode | rows | model | R² | RMSE s |\n|---|---|---|---|---|---|\n");
    let mut good: Vec<Fit> = Vec::new();
    for f in &fits {
        match f {
            Ok(f) => {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {:.3} | {:.3} |\n",
                    f.location,
                    f.mode,
                    f.rows,
                    f.formula(),
                    f.r2,
                    f.rmse_s
                ));
                if f.usable() {
                    good.push(f.clone());
                }
            }
            Err(e) => {
                out.push_str(&format!("| {} | {} | - | cannot fit: {} | - | - |\n", e.location, e.mode, e.reason))
            }
        }
    }
    for f in fits.iter().filter_map(|f| f.as_ref().ok()).filter(|f| !f.usable()) {
        out.push_str(&format!(
            "\nThe {} {} data can't support an answer: the linear model explains only R² = {:.2} of the variation \
             (need ≥ {MIN_R2}); measure more sizes or repeats.\n",
            f.location, f.mode, f.r2
        ));
    }
    // "Here" is the in-process run; without one, a server on this machine (the study measured its
    // local side as a server on http://localhost).
    let here = |f: &&Fit| f.mode == "local";
    let local = good.iter().find(here).or_else(|| good.iter().find(|f| is_loopback(&f.location)));
    let remotes: Vec<&Fit> = good.iter().filter(|f| local.is_none_or(|l| !std::ptr::eq(*f, l))).collect();
    // What the rows themselves show, fits or no fits (the part a noisy table can still answer).
    out.push_str(&observed(rows, &fits));
    out.push('\n');
    let mut verdicts = Vec::new();
    match local {
        None => {
            ok = false;
            out.push_str(
                "No usable rows for running here (mode `local`, or a server on localhost): run \
                 `objdet bench --target local` to compare against running here.\n",
            );
        }
        Some(l) => {
            let name = if l.mode == "local" { "local".to_string() } else { format!("{} (here)", l.location) };
            if l.mode != "local" {
                out.push_str(&format!("Here: the {} {} rows (a server on this machine).\n", l.location, l.mode));
            }
            for r in &remotes {
                let (text, crosses) = crossing(l, r, &name, "offloading");
                out.push_str(&format!("- {name} vs {} {}: {text}\n", r.location, r.mode));
                verdicts.push(if crosses {
                    format!("against {} {}: {text}", r.location, r.mode)
                } else {
                    format!("against {} {}: no break-even is supported ({text})", r.location, r.mode)
                });
            }
        }
    }
    // S3 vs inline per location.
    for s3 in remotes.iter().filter(|f| f.mode == "s3") {
        if let Some(inline) = remotes.iter().find(|f| f.mode == "inline" && f.location == s3.location) {
            out.push_str(&format!("- {}: inline vs S3: {}\n", s3.location, crossing(inline, s3, "inline", "S3").0));
        }
    }
    if let (Some(mb), Some(l)) = (payload_mb, local) {
        for r in &remotes {
            let d = decide(l, r, mb, (mb / r.image_mb_per_image()).round().max(1.0) as usize);
            out.push_str(&format!("- for {mb} MB: {}\n", d.reason));
        }
    }
    for r in remotes.iter().filter(|f| f.mode != "local") {
        out.push_str(&format!(
            "- if {} {} ran on Lambda at {memory_mb:.0} MB: ${:.4} per 1,000 images ({:.3} s server time per image)\n",
            r.location,
            r.mode,
            lambda_cost_per_1000(r, memory_mb, 10),
            r.server_s_per_image
        ));
    }
    if remotes.is_empty() {
        ok = false;
        out.push_str("No usable remote rows: run `objdet bench --target URL` to measure offloading.\n");
    }
    out.push_str("\nVerdict: ");
    if verdicts.is_empty() {
        out.push_str(
            "these data support no break-even (see above for what is missing; the measured comparison above \
             still holds).\n",
        );
    } else {
        out.push_str(&verdicts.join("; "));
        out.push('\n');
    }
    (out, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(loc: &str, mode: &str, n: usize, mb: f64, t: f64) -> Row {
        Row {
            date: String::new(),
            total_images: n,
            payload_mb: mb,
            transfer_mb_s: None,
            server_total_s: t * 0.8,
            avg_inference_s: 0.04,
            location: loc.into(),
            mode: mode.into(),
            round_trip_s: t,
            upload_s: Some(mb),
            client_overhead_s: 0.0,
            repeat: 1,
            ..Default::default()
        }
    }

    #[test]
    fn recovers_known_coefficients() {
        let rows: Vec<Row> = [(1, 0.5), (2, 0.3), (5, 2.0), (10, 1.5), (20, 7.0), (50, 8.0)]
            .iter()
            .map(|&(n, mb)| row("x", "inline", n, mb, 0.5 + 1.0 * mb + 0.05 * n as f64))
            .collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let f = fit(&refs, |r| r.round_trip_s).unwrap();
        assert!(!f.collinear);
        assert!(
            (f.fixed_s - 0.5).abs() < 1e-6 && (f.per_mb_s - 1.0).abs() < 1e-6 && (f.per_image_s - 0.05).abs() < 1e-6
        );
        assert!((f.r2 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn collinear_data_folds_mb_into_images() {
        let rows: Vec<Row> =
            [1, 2, 5, 10].iter().map(|&n| row("x", "inline", n, 0.2 * n as f64, 0.3 + 0.1 * n as f64)).collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let f = fit(&refs, |r| r.round_trip_s).unwrap();
        assert!(f.collinear);
        assert!((f.per_image_s - 0.1).abs() < 1e-9 && (f.fixed_s - 0.3).abs() < 1e-9);
    }

    #[test]
    fn too_few_rows_are_refused() {
        let rows = [row("x", "inline", 1, 0.2, 0.3), row("x", "inline", 2, 0.4, 0.4)];
        let refs: Vec<&Row> = rows.iter().collect();
        assert!(fit(&refs, |r| r.round_trip_s).unwrap_err().reason.contains("need at least 3 rows"));
    }
}
