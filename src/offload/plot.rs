//! `objdet plot`: the original study's Figure 2 from a results CSV — time vs number of images, one
//! line per location/mode, next to the average inference time per image.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::csv::Row;
use super::stats::median;
use anyhow::{Context as _, Result, anyhow, bail};

/// The font every label uses (embedded: plots need no system fonts).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// One line of the figure.
#[derive(Debug, Clone)]
pub struct Series {
    /// `location (mode)`.
    pub name: String,
    /// (images, median round-trip s, median average inference s).
    pub points: Vec<(f64, f64, f64)>,
}

/// Groups rows into series, medians per batch size.
pub fn series(rows: &[Row]) -> Vec<Series> {
    let mut keys: Vec<(String, String)> = rows.iter().map(|r| (r.location.clone(), r.mode.clone())).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|(loc, mode)| {
            let g: Vec<&Row> = rows.iter().filter(|r| r.location == loc && r.mode == mode).collect();
            let mut sizes: Vec<usize> = g.iter().map(|r| r.total_images).collect();
            sizes.sort_unstable();
            sizes.dedup();
            let points = sizes
                .iter()
                .map(|&n| {
                    let at: Vec<&&Row> = g.iter().filter(|r| r.total_images == n).collect();
                    let rt: Vec<f64> = at.iter().map(|r| r.round_trip_s).collect();
                    let inf: Vec<f64> = at.iter().map(|r| r.avg_inference_s).collect();
                    (n as f64, median(&rt).unwrap_or(f64::NAN), median(&inf).unwrap_or(f64::NAN))
                })
                .collect();
            Series { name: format!("{loc} ({mode})"), points }
        })
        .collect()
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, all: &[Series]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e}");
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let max_n = all.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(1.0, f64::max);
    let max_t = all.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.001, f64::max);
    let max_i = all.iter().flat_map(|s| s.points.iter().map(|p| p.2 * 1e3)).fold(1.0, f64::max);
    type Pick = fn(&(f64, f64, f64)) -> f64;
    let specs: [(&str, &str, f64, Pick); 2] = [
        ("Execution time vs number of images", "round trip (s)", max_t * 1.1, |p| p.1),
        ("Average inference time per image", "inference (ms)", max_i * 1.15, |p| p.2 * 1e3),
    ];
    for (panel, (title, ylabel, ymax, pick)) in panels.iter().zip(specs) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0.8f64..max_n * 1.25).log_scale(), 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("number of images")
            .y_desc(ylabel)
            .x_labels(10)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        for (i, s) in all.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, pick(p))).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Writes the figure to `out` (`.png` or `.svg`); returns the number of series drawn.
pub fn plot(rows: &[Row], out: &Path) -> Result<usize> {
    if rows.is_empty() {
        bail!("no rows to plot");
    }
    // Registering twice (several plots in one process) is harmless.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let all = series(rows);
    let size = (1400, 560);
    match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("svg") => draw(SVGBackend::new(out, size).into_drawing_area(), &all)?,
        Some("png") => {
            let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
            draw(BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area(), &all)?;
            let img =
                image::RgbImage::from_raw(size.0, size.1, rgb).context("the plot's pixel buffer has the wrong size")?;
            img.save_with_format(out, image::ImageFormat::Png).with_context(|| format!("writing {}", out.display()))?;
        }
        _ => bail!("{}: write .png or .svg", out.display()),
    }
    Ok(all.len())
}
