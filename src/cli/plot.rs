//! `squint report --plot`: draws each point's calibration histogram with the range each observer
//! chooses as SVG (plotters).

use plotters::prelude::*;
use squint::error::{Error, Result};
use squint::pipeline::histograms::PointHistogram;
use std::path::Path;

/// Draws one panel per point into an SVG file.
pub fn plot_svg(path: &Path, points: &[PointHistogram]) -> Result<()> {
    let panel_h = 260u32;
    // Render into memory, then write atomically: a failed plot leaves nothing behind.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, panel_h * points.len().max(1) as u32))
            .into_drawing_area();
        let plot_err =
            |e: &dyn std::fmt::Display| Error::format(path, format!("plotting failed: {e}"));
        root.fill(&WHITE).map_err(|e| plot_err(&e))?;
        let panels = root.split_evenly((points.len().max(1), 1));
        let colors = [RED, BLUE, GREEN, MAGENTA];
        for (p, area) in points.iter().zip(panels.iter()) {
            // Merge 2048 bins into 256 for readability; log-scaled counts.
            let bins = 256usize;
            let per = p.hist.len().div_ceil(bins).max(1);
            let merged: Vec<f64> = p
                .hist
                .chunks(per)
                .map(|c| c.iter().map(|&v| v as f64).sum())
                .collect();
            let width = (p.max - p.min) as f64 / merged.len() as f64;
            let ymax = merged.iter().cloned().fold(1.0, f64::max);
            let (lo, hi) = (p.min as f64, (p.max as f64).max(p.min as f64 + 1e-6));
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{} — calibration histogram and observer ranges", p.name),
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(lo..hi, (1.0..ymax * 1.5).log_scale())
                .map_err(|e| plot_err(&e))?;
            chart
                .configure_mesh()
                .y_desc("count")
                .draw()
                .map_err(|e| plot_err(&e))?;
            chart
                .draw_series(
                    merged
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| c > 0.0)
                        .map(|(i, &c)| {
                            let x0 = lo + i as f64 * width;
                            Rectangle::new(
                                [(x0, 1.0), (x0 + width, c.max(1.0))],
                                BLACK.mix(0.35).filled(),
                            )
                        }),
                )
                .map_err(|e| plot_err(&e))?;
            for (k, (name, a, b)) in p.ranges.iter().enumerate() {
                let c = colors[k % colors.len()];
                chart
                    .draw_series([*a as f64, *b as f64].into_iter().map(|x| {
                        PathElement::new(vec![(x, 1.0), (x, ymax * 1.4)], c.stroke_width(2))
                    }))
                    .map_err(|e| plot_err(&e))?
                    .label(format!("{name}: [{a:.4}, {b:.4}]"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(&e))?;
        }
        root.present().map_err(|e| plot_err(&e))?;
    }
    squint::io::write_atomic(path, svg.as_bytes())
}
