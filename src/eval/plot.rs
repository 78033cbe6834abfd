//! `objdet eval --plot pr.svg`: precision against recall at IoU .50, one line per class, from the
//! 101 recall points pycocotools interpolates AP over.

use std::path::Path;

use plotters::prelude::*;

use super::Report;

/// The font every label uses (embedded: plots need no system fonts).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What failed.
    pub message: String,
}

/// Writes the PR curves of `report` to `out` as SVG.
pub fn pr_svg(report: &Report, out: &Path) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError { path: out.display().to_string(), message: e.to_string() };
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let root = SVGBackend::new(out, (760, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Precision-recall at IoU 0.50 — mAP50 {:.3}", report.map50), ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("recall")
        .y_desc("precision")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    let n = report.metrics.pr50.len();
    for (i, (name, curve)) in report.names.iter().zip(&report.metrics.pr50).enumerate() {
        // -1: no object of this class; precision 0 past the last recall reached.
        if curve.is_empty() || curve.iter().all(|&p| p < 0.0) {
            continue;
        }
        let points: Vec<(f64, f64)> =
            curve.iter().enumerate().map(|(r, &p)| (r as f64 / (curve.len() - 1).max(1) as f64, p.max(0.0))).collect();
        let ap = report.metrics.per_class_ap50.get(i).copied().flatten().unwrap_or(0.0);
        let color = Palette99::pick(i % n.max(1)).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("{name} {ap:.3}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
