//! Which Lambda memory size? Power tuning: the function run at several memory sizes, each size's
//! time and cost per image measured, and the cheapest, the fastest and a balanced size chosen.
//!
//! The pure parts live here: Lambda's `REPORT` log lines parsed ([`ReportLine`]), a size's
//! measurements ([`SizeResult`]) and their price ([`Prices`]), the choice ([`Recommendation`]), the
//! table, the CSV and the plot. Where the sizes run is [`emulated`] (the bootstrap under AWS's
//! Runtime Interface Emulator in a Linux cgroup with Lambda's share of CPU and its memory limit)
//! or [`aws`] (a deployed function, reconfigured and restored).

pub mod aws;
pub mod emulated;

use std::fmt::Write as _;

/// Lambda's vCPU share: 1,769 MB buys one vCPU (Lambda's documentation; `config::vcpus` too).
pub const MB_PER_VCPU: f64 = crate::config::LAMBDA_MB_PER_VCPU as f64;

/// Cores Lambda shows a function of `memory_mb`: at least 2, one per 1,769 MB, at most 6.
pub fn lambda_visible_cores(memory_mb: u32) -> usize {
    ((f64::from(memory_mb) / MB_PER_VCPU).ceil() as usize).clamp(2, 6)
}

/// The memory sizes tried by default (MB).
pub const DEFAULT_MEMORY_SIZES_MB: &[u32] = &[512, 1024, 1536, 1769, 2048, 3008, 3538];

/// One `REPORT` line of a Lambda invocation's log (AWS's and the emulator's format:
/// `REPORT RequestId: … \tInit Duration: 250.12 ms\tDuration: 427.81 ms\tBilled Duration: 428 ms\t
/// Memory Size: 1024 MB\tMax Memory Used: 180 MB`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportLine {
    /// The invocation's request id.
    pub request_id: String,
    /// `Duration`, ms.
    pub duration_ms: f64,
    /// `Billed Duration`, ms.
    pub billed_ms: f64,
    /// `Memory Size`, MB.
    pub memory_size_mb: u32,
    /// `Max Memory Used`, MB.
    pub max_memory_used_mb: u32,
    /// `Init Duration`, ms: on a cold start only.
    pub init_ms: Option<f64>,
}

impl ReportLine {
    /// Parses a `REPORT` line; `None` for any other line, or one without a `Duration`.
    pub fn parse(line: &str) -> Option<ReportLine> {
        let rest = line.trim_start().strip_prefix("REPORT ")?;
        let mut report = ReportLine::default();
        let mut duration = None;
        for field in rest.split('\t') {
            let Some((key, value)) = field.split_once(':') else { continue };
            let value = value.trim();
            let number = || value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
            match key.trim() {
                "RequestId" => report.request_id = value.to_string(),
                "Duration" => duration = number(),
                "Billed Duration" => report.billed_ms = number().unwrap_or(0.0),
                "Memory Size" => report.memory_size_mb = number().map_or(0, |v| v as u32),
                "Max Memory Used" => report.max_memory_used_mb = number().map_or(0, |v| v as u32),
                "Init Duration" => report.init_ms = number(),
                _ => {}
            }
        }
        report.duration_ms = duration?;
        Some(report)
    }
}

/// Lambda's prices (per GB-second and per request), configurable; the defaults are the documented
/// us-east-1 prices of the first tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// Architecture the prices are for (`x86_64` or `arm64`), as the report names it.
    pub arch: &'static str,
    /// $ per GB-second of duration.
    pub gb_second: f64,
    /// $ per request.
    pub request: f64,
}

impl Prices {
    /// x86_64: $0.0000166667 per GB-s, $0.20 per million requests.
    pub const X86_64: Prices = Prices { arch: "x86_64", gb_second: 0.000_016_666_7, request: 0.000_000_2 };
    /// arm64: $0.0000133334 per GB-s, $0.20 per million requests.
    pub const ARM64: Prices = Prices { arch: "arm64", gb_second: 0.000_013_333_4, request: 0.000_000_2 };

    /// The cost of 1,000 images sent `batch` to an invocation billed `billed_ms` at `memory_mb`.
    pub fn per_1000_images(&self, memory_mb: u32, billed_ms: f64, batch: usize) -> f64 {
        let invocations = 1000.0 / batch.max(1) as f64;
        let gb_s = f64::from(memory_mb) / 1024.0 * billed_ms / 1000.0;
        invocations * (gb_s * self.gb_second + self.request)
    }
}

/// What one memory size measured (with one model).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SizeResult {
    /// The model's file name (several models are tuned together to choose a variant and a size
    /// at once; empty in a CSV written before models were compared).
    pub model: String,
    /// Memory size, MB.
    pub memory_mb: u32,
    /// CPU share it was given, in vCPUs.
    pub vcpus: f64,
    /// Cores visible to the function.
    pub visible_cores: usize,
    /// Images per invocation.
    pub batch: usize,
    /// Init duration (the cold start's model load), ms.
    pub init_ms: Option<f64>,
    /// The cold invocation's duration (after Init), ms.
    pub cold_ms: Option<f64>,
    /// Warm invocations' durations, ms.
    pub warm_ms: Vec<f64>,
    /// Peak memory of the sandbox, MB.
    pub peak_mb: Option<f64>,
    /// Why this size failed (out of memory, an invocation error), if it did.
    pub failure: Option<String>,
}

impl SizeResult {
    /// Median warm duration per invocation, ms.
    pub fn p50_ms(&self) -> Option<f64> {
        super::stats::quantile(&self.warm_ms, 0.5)
    }

    /// 95th percentile warm duration per invocation, ms.
    pub fn p95_ms(&self) -> Option<f64> {
        super::stats::quantile(&self.warm_ms, 0.95)
    }

    /// Median warm time per image, ms.
    pub fn ms_per_image(&self) -> Option<f64> {
        self.p50_ms().map(|ms| ms / self.batch.max(1) as f64)
    }

    /// Cost of 1,000 images at the median warm duration (billed per ms, rounded up).
    pub fn cost_per_1000(&self, prices: &Prices) -> Option<f64> {
        self.p50_ms().map(|ms| prices.per_1000_images(self.memory_mb, ms.ceil(), self.batch))
    }

    fn usable(&self) -> bool {
        self.failure.is_none() && !self.warm_ms.is_empty()
    }
}

/// One configuration: a model at a memory size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The model's file name (empty when only one, unnamed, was measured).
    pub model: String,
    /// Memory size, MB.
    pub memory_mb: u32,
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.model.is_empty() {
            write!(f, "{} MB", self.memory_mb)
        } else {
            write!(f, "{} at {} MB", self.model, self.memory_mb)
        }
    }
}

/// The configurations to recommend.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Lowest cost per image.
    pub cheapest: Choice,
    /// Lowest time per image.
    pub fastest: Choice,
    /// Lowest sum of cost and time, each relative to its best (AWS Lambda Power Tuning's
    /// "balanced" strategy at weight 0.5).
    pub balanced: Choice,
}

/// Each model's accuracy (`objdet eval`'s mAP50-95, by model file name) and how far below the
/// best one a model may be and still be recommended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Accuracy {
    /// mAP50-95 by model file name.
    pub map: std::collections::BTreeMap<String, f64>,
    /// Allowed drop from the best mAP50-95 (e.g. 0.01: one point).
    pub tolerance: f64,
}

impl Accuracy {
    /// Whether `model` may be recommended: always without evaluations; with them, only a model
    /// evaluated within the tolerance of the best.
    pub fn admits(&self, model: &str) -> bool {
        if self.map.is_empty() {
            return true;
        }
        let best = self.map.values().copied().fold(f64::NEG_INFINITY, f64::max);
        self.map.get(model).is_some_and(|&m| m >= best - self.tolerance - 1e-12)
    }
}

/// Chooses among the configurations that ran and that `accuracy` admits; `None` when none did.
/// Ties go to the smaller size, then to the model listed first.
pub fn recommend(results: &[SizeResult], prices: &Prices, accuracy: &Accuracy) -> Option<Recommendation> {
    let ok: Vec<(&SizeResult, f64, f64)> = results
        .iter()
        .filter(|r| r.usable() && accuracy.admits(&r.model))
        .filter_map(|r| Some((r, r.ms_per_image()?, r.cost_per_1000(prices)?)))
        .collect();
    let best = |key: &dyn Fn(&(&SizeResult, f64, f64)) -> f64| {
        ok.iter()
            .min_by(|a, b| key(a).total_cmp(&key(b)).then(a.0.memory_mb.cmp(&b.0.memory_mb)))
            .map(|r| Choice { model: r.0.model.clone(), memory_mb: r.0.memory_mb })
    };
    let min_t = ok.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    let min_c = ok.iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
    Some(Recommendation {
        cheapest: best(&|r| r.2)?,
        fastest: best(&|r| r.1)?,
        balanced: best(&|r| 0.5 * r.1 / min_t + 0.5 * r.2 / min_c)?,
    })
}

/// The CSV header of [`csv`].
pub const CSV_HEADER: &str = "model,memory_mb,vcpus,visible_cores,batch,arch,init_ms,cold_ms,p50_ms,p95_ms,ms_per_image,\
                              cost_per_1000_usd,peak_mb,failure";

/// A size's measured values, in the CSV's and the table's column order (from `init_ms`), each
/// with its digits in the CSV and in the table.
fn measured(r: &SizeResult, prices: &Prices) -> [(Option<f64>, usize, usize); 7] {
    [
        (r.init_ms, 1, 0),
        (r.cold_ms, 1, 0),
        (r.p50_ms(), 1, 0),
        (r.p95_ms(), 1, 0),
        (r.ms_per_image(), 2, 1),
        (r.cost_per_1000(prices), 6, 5),
        (r.peak_mb, 0, 0),
    ]
}

/// The results as CSV, one row per size.
pub fn csv(results: &[SizeResult], prices: &Prices) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for r in results {
        let cells: Vec<String> = measured(r, prices)
            .iter()
            .map(|&(v, digits, _)| v.map_or(String::new(), |v| format!("{v:.digits$}")))
            .collect();
        let clean = |s: &str| s.replace([',', '\n', '"'], " ");
        let (failure, model) = (clean(r.failure.as_deref().unwrap_or("")), clean(&r.model));
        let (mb, vcpus, cores, batch, arch) = (r.memory_mb, r.vcpus, r.visible_cores, r.batch, prices.arch);
        let _ = writeln!(out, "{model},{mb},{vcpus:.3},{cores},{batch},{arch},{},{failure}", cells.join(","));
    }
    out
}

/// Reads a CSV [`csv`] wrote back into results (each size's median as its one warm duration: what
/// [`recommend`] uses) and the prices' architecture it was written for. A CSV without a `model`
/// column (written before models were compared) reads as one unnamed model.
pub fn read_csv(text: &str) -> Result<(Vec<SizeResult>, Prices), String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("no `{name}` column: not a tune CSV"));
    let (mb, batch, p50, init, failure, arch) =
        (col("memory_mb")?, col("batch")?, col("p50_ms")?, col("init_ms")?, col("failure")?, col("arch")?);
    let model = col("model").ok();
    let mut prices = Prices::X86_64;
    let mut results = vec![];
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |i: usize| cells.get(i).copied().unwrap_or("").trim();
        let number = |i: usize| cell(i).parse::<f64>().ok();
        let memory_mb = cell(mb).parse::<u32>().map_err(|_| format!("row {}: memory_mb is not a number", n + 2))?;
        if cell(arch) == "arm64" {
            prices = Prices::ARM64;
        }
        results.push(SizeResult {
            model: model.map(|i| cell(i).to_string()).unwrap_or_default(),
            memory_mb,
            batch: cell(batch).parse().unwrap_or(1),
            init_ms: number(init),
            warm_ms: number(p50).into_iter().collect(),
            failure: Some(cell(failure).to_string()).filter(|f| !f.is_empty()),
            ..Default::default()
        });
    }
    Ok((results, prices))
}

/// The results as a Markdown table, with the recommendation line under it: among the models
/// `accuracy` admits, when it holds evaluations.
pub fn table(results: &[SizeResult], prices: &Prices, accuracy: &Accuracy) -> String {
    let mut out = String::from(
        "| model | mAP50-95 | memory MB | vCPU share | cores | Init ms | cold ms | p50 ms | p95 ms | ms/image | $ per 1,000 images | peak MB | |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let cells: Vec<String> = measured(r, prices)
            .iter()
            .map(|&(v, _, digits)| v.map_or("—".to_string(), |v| format!("{v:.digits$}")))
            .collect();
        let failure = r.failure.as_deref().unwrap_or("");
        let map = accuracy.map.get(&r.model).map_or("—".to_string(), |m| format!("{m:.3}"));
        let (model, mb, vcpus, cores) = (&r.model, r.memory_mb, r.vcpus, r.visible_cores);
        let _ = writeln!(out, "| {model} | {map} | {mb} | {vcpus:.2} | {cores} | {} | {failure} |", cells.join(" | "));
    }
    let within = if accuracy.map.is_empty() {
        String::new()
    } else {
        let best = accuracy.map.values().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(", among models within {:.3} mAP50-95 of the best ({best:.3})", accuracy.tolerance)
    };
    // One model: sizes alone, as before models were compared.
    let several = results.iter().any(|r| r.model != results[0].model);
    let show = |c: &Choice| if several { c.to_string() } else { format!("{} MB", c.memory_mb) };
    match recommend(results, prices, accuracy) {
        Some(rec) => {
            let _ = writeln!(
                out,
                "\nrecommendation ({}{within}): cheapest {}, fastest {}, balanced {}",
                prices.arch,
                show(&rec.cheapest),
                show(&rec.fastest),
                show(&rec.balanced)
            );
        }
        None => {
            let _ = writeln!(out, "\nno configuration ran{within}: nothing to recommend");
        }
    }
    out
}

/// An SVG plot of cost per 1,000 images against time per image, one labelled point per size.
pub fn svg(results: &[SizeResult], prices: &Prices) -> String {
    let several = results.iter().any(|r| r.model != results[0].model);
    let points: Vec<(String, f64, f64)> = results
        .iter()
        .filter(|r| r.usable())
        .filter_map(|r| {
            let label = if several { format!("{} {} MB", r.model, r.memory_mb) } else { format!("{} MB", r.memory_mb) };
            let label = label.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            Some((label, r.ms_per_image()?, r.cost_per_1000(prices)?))
        })
        .collect();
    let (w, h, m) = (640.0, 420.0, 60.0);
    let max_t = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let max_c = points.iter().map(|p| p.2).fold(0.0, f64::max).max(1e-12) * 1.1;
    let x = |t: f64| m + t / max_t * (w - 2.0 * m);
    let y = |c: f64| h - m - c / max_c * (h - 2.0 * m);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{m}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{cx}\" y=\"{tb}\" text-anchor=\"middle\">time per image, ms (0 to {max_t:.0})</text>\n\
         <text x=\"14\" y=\"{cy}\" transform=\"rotate(-90 14 {cy})\" text-anchor=\"middle\">$ per 1,000 images ({}, 0 to {max_c:.5})</text>\n",
        prices.arch,
        b = h - m,
        r = w - m,
        cx = w / 2.0,
        tb = h - 20.0,
        cy = h / 2.0,
    );
    for (label, t, c) in &points {
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"steelblue\"/><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
            x(*t),
            y(*c),
            x(*t) + 6.0,
            y(*c) - 6.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded lines: AWS's format (from a function's CloudWatch log) and the emulator's.
    const AWS_COLD: &str = "REPORT RequestId: 6d5b8a3e-2c4f-4a38-9a39-0f3c1e2f7b11\tDuration: 1184.37 ms\tBilled Duration: 1185 ms\tMemory Size: 3538 MB\tMax Memory Used: 212 MB\tInit Duration: 412.96 ms\t";
    const AWS_WARM: &str = "REPORT RequestId: 0b1e4b8e-5f8b-4d3e-8c9a-51e2a6b0c7d2\tDuration: 987.02 ms\tBilled Duration: 988 ms\tMemory Size: 3538 MB\tMax Memory Used: 214 MB\t";
    const RIE_COLD: &str = "REPORT RequestId: 2e433ba5-1616-425d-8f74-d5efd30781a1\tInit Duration: 0.71 ms\tDuration: 427.81 ms\tBilled Duration: 428 ms\tMemory Size: 1024 MB\tMax Memory Used: 1024 MB\t";

    #[test]
    fn report_lines_parse() {
        let cold = ReportLine::parse(AWS_COLD).unwrap();
        assert_eq!(cold.request_id, "6d5b8a3e-2c4f-4a38-9a39-0f3c1e2f7b11");
        assert_eq!((cold.duration_ms, cold.billed_ms), (1184.37, 1185.0));
        assert_eq!((cold.memory_size_mb, cold.max_memory_used_mb), (3538, 212));
        assert_eq!(cold.init_ms, Some(412.96));
        let warm = ReportLine::parse(AWS_WARM).unwrap();
        assert_eq!((warm.duration_ms, warm.init_ms, warm.max_memory_used_mb), (987.02, None, 214));
        let rie = ReportLine::parse(RIE_COLD).unwrap();
        assert_eq!((rie.duration_ms, rie.billed_ms, rie.memory_size_mb), (427.81, 428.0, 1024));
        for other in ["START RequestId: x Version: $LATEST", "END RequestId: x", "REPORT nothing here", ""] {
            assert_eq!(ReportLine::parse(other), None, "{other}");
        }
    }

    fn size(mb: u32, warm: &[f64]) -> SizeResult {
        SizeResult { memory_mb: mb, batch: 2, warm_ms: warm.to_vec(), ..Default::default() }
    }

    #[test]
    fn cost_and_choice() {
        let p = Prices::X86_64;
        // 1,000 images in 500 invocations of 1 s at 1,024 MB: 500 GB-s and 500 requests.
        let c = p.per_1000_images(1024, 1000.0, 2);
        assert!((c - (500.0 * 0.000_016_666_7 + 500.0 * 0.000_000_2)).abs() < 1e-12, "{c}");
        let results = vec![
            size(512, &[4100.0, 4200.0, 4300.0]),
            size(1024, &[1900.0, 2000.0, 2100.0]),
            size(2048, &[1100.0, 1100.0, 1100.0]),
            size(3008, &[990.0, 995.0, 1000.0]),
            SizeResult { failure: Some("out of memory".into()), ..size(256, &[]) },
        ];
        let none = Accuracy::default();
        let rec = recommend(&results, &p, &none).unwrap();
        assert_eq!(rec.fastest.memory_mb, 3008);
        assert_eq!(rec.cheapest.memory_mb, 1024); // 2 GB-s per invocation against 2.1 (512 MB) and 2.2 (2048 MB)
        assert_eq!(rec.balanced.memory_mb, 2048);
        let csv = csv(&results, &p);
        assert_eq!(csv.lines().count(), 6);
        assert!(csv.lines().next().unwrap() == CSV_HEADER);
        assert!(csv.contains(",256,") && csv.contains("out of memory"), "{csv}");
        assert!(table(&results, &p, &none).contains("cheapest 1024 MB, fastest 3008 MB, balanced 2048 MB"));
        assert!(recommend(&results[4..], &p, &none).is_none());
        let (back, prices) = read_csv(&csv).unwrap();
        assert_eq!(prices, p);
        assert_eq!(recommend(&back, &prices, &none), Some(rec));
        assert_eq!(back[4].failure.as_deref(), Some("out of memory"));
        // A CSV of an earlier version (no model column) still reads.
        let old: String = csv.lines().map(|l| format!("{}\n", l.split_once(',').unwrap().1)).collect();
        assert_eq!(read_csv(&old).unwrap().0[1].memory_mb, 1024);
        assert!(read_csv("a,b\n1,2\n").unwrap_err().contains("not a tune CSV"));
    }

    #[test]
    fn models_and_sizes_chosen_together_within_an_accuracy_tolerance() {
        let p = Prices::X86_64;
        let with = |model: &str, mb: u32, warm: f64| SizeResult { model: model.into(), ..size(mb, &[warm]) };
        // The int8 variant is faster and cheaper at every size; fp32 is the most accurate.
        let results = vec![
            with("m.onnx", 1769, 1000.0),
            with("m.onnx", 3538, 600.0),
            with("m.int8.onnx", 1769, 700.0),
            with("m.int8.onnx", 3538, 450.0),
        ];
        let none = Accuracy::default();
        let rec = recommend(&results, &p, &none).unwrap();
        assert_eq!(rec.cheapest, Choice { model: "m.int8.onnx".into(), memory_mb: 1769 });
        assert_eq!(rec.fastest, Choice { model: "m.int8.onnx".into(), memory_mb: 3538 });
        let map = |int8: f64| Accuracy {
            map: [("m.onnx".to_string(), 0.590), ("m.int8.onnx".to_string(), int8)].into_iter().collect(),
            tolerance: 0.01,
        };
        // Within one point of the best: int8 still chosen.
        assert_eq!(recommend(&results, &p, &map(0.582)).unwrap().cheapest.model, "m.int8.onnx");
        // Two points below: only fp32 is admitted.
        let rec = recommend(&results, &p, &map(0.570)).unwrap();
        assert_eq!((rec.cheapest.model.as_str(), rec.fastest.model.as_str()), ("m.onnx", "m.onnx"));
        let t = table(&results, &p, &map(0.570));
        assert!(
            t.contains("within 0.010 mAP50-95 of the best (0.590)") && t.contains("cheapest m.onnx at 1769 MB"),
            "{t}"
        );
        assert!(t.contains("| m.int8.onnx | 0.570 | 1769 |"), "{t}");
        // A model without an evaluation is not recommended once any model has one.
        let only = Accuracy { map: [("m.int8.onnx".to_string(), 0.5)].into_iter().collect(), tolerance: 0.0 };
        assert_eq!(recommend(&results, &p, &only).unwrap().fastest.model, "m.int8.onnx");
        assert!(svg(&results, &p).contains("m.int8.onnx 1769 MB"));
    }
}
