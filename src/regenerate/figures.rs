//! Figures as SVG strings (plotters' SVG backend, no fonts needed): deterministic, so the freshness test
//! can compare them byte for byte like the tables.

use plotters::prelude::*;

/// One line of a chart.
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Colour as RGB.
    pub rgb: (u8, u8, u8),
    /// Points `(x, y)`, both positive (log axes).
    pub points: Vec<(f64, f64)>,
    /// Draw markers at the points.
    pub markers: bool,
}

/// Every series as a line (markers where asked) with its legend entry, in the lower right; `x` maps a
/// point's x to the chart's coordinate (the identity on a log axis, `log2` on [`semilog2x`]'s).
fn lines_and_legend<'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    series: &[Series],
    x: impl Fn(f64) -> f64,
) -> Result<(), String> {
    for s in series {
        let c = RGBColor(s.rgb.0, s.rgb.1, s.rgb.2);
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(px, py)| (x(px), py)).collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        if s.markers {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    legend(chart)
}

/// The legend of every labelled series, in the lower right on a light box.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// A log-log line chart with optional vertical marker lines `(label, x)`; `y_unit` follows the SI
/// prefix on the y labels (`"B"` gives `1.00 MB`).
pub fn loglog(
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    y_unit: &str,
    series: &[Series],
    vlines: &[(&str, f64)],
) -> Result<String, String> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(
                (x0 / 1.3..x1 * 1.3).log_scale(),
                (y0 / 2.0..y1 * 2.0).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| crate::roofline::si(*v) + y_unit)
            .draw()
            .map_err(|e| e.to_string())?;
        for &(label, x) in vlines {
            let grey = RGBColor(150, 150, 150);
            chart
                .draw_series(LineSeries::new(
                    [(x, y0 / 2.0), (x, y1 * 2.0)],
                    grey.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.to_string(),
                    (x * 1.05, y1),
                    ("sans-serif", 14),
                )))
                .map_err(|e| e.to_string())?;
        }
        lines_and_legend(&mut chart, series, |x| x)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A line chart with a base-2 logarithmic x axis (ticks at the powers of two, labelled `2k`, `64k`)
/// and a linear y axis from zero, for rates that vary by less than a decade.
pub fn semilog2x(
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    y_unit: &str,
    series: &[Series],
) -> Result<String, String> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x0 = all().map(|p| p.0.log2()).fold(f64::MAX, f64::min);
    let x1 = all().map(|p| p.0.log2()).fold(f64::MIN, f64::max);
    let y1 = all().map(|p| p.1).fold(0.0, f64::max);
    if !(x0 <= x1 && y1 > 0.0) {
        return Err("nothing to draw".into());
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(x0 - 0.3..x1 + 0.3, 0.0..y1 * 1.15)
            .map_err(|e| e.to_string())?;
        let ticks = (x1 - x0).round() as usize + 1;
        chart
            .configure_mesh()
            .x_labels(ticks)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| {
                let n = v.exp2().round() as u64;
                if n >= 1024 {
                    format!("{}k", n / 1024)
                } else {
                    n.to_string()
                }
            })
            .y_label_formatter(&|v| {
                if *v == 0.0 {
                    "0".to_string()
                } else {
                    crate::roofline::si(*v) + y_unit
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        lines_and_legend(&mut chart, series, f64::log2)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// One measured dot on a roofline.
pub struct Dot {
    /// Label drawn beside the dot.
    pub label: String,
    /// Arithmetic intensity, FLOP/byte.
    pub intensity: f64,
    /// Attained rate, FLOP/s.
    pub flops: f64,
    /// Colour.
    pub rgb: (u8, u8, u8),
    /// Filled circle (true) or hollow triangle (false): used for the two anchor lengths.
    pub filled: bool,
}

/// A roofline: the roof `min(peak, I * bandwidth)` and the measured dots, log-log.
pub fn roofline(
    caption: &str,
    peak: f64,
    bandwidth: f64,
    second: Option<(&str, f64, f64)>,
    dots: &[Dot],
) -> Result<String, String> {
    let (mut x0, mut x1) = (peak / bandwidth / 50.0, peak / bandwidth * 20.0);
    let (mut y0, y1) = (peak / 1e4, peak * 3.0);
    for d in dots {
        x0 = x0.min(d.intensity / 2.0);
        x1 = x1.max(d.intensity * 8.0);
        y0 = y0.min(d.flops / 3.0);
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("arithmetic intensity (FLOP/byte, traffic model)")
            .y_desc("attained FLOP/s")
            .x_label_formatter(&|v| crate::roofline::si(*v))
            .y_label_formatter(&|v| crate::roofline::si(*v) + "FLOP/s")
            .draw()
            .map_err(|e| e.to_string())?;
        let steps = 200;
        let roof = (0..=steps).map(|i| {
            let x = x0 * (x1 / x0).powf(i as f64 / steps as f64);
            (x, (x * bandwidth).min(peak))
        });
        chart
            .draw_series(LineSeries::new(roof, BLACK.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("roof: min(peak, intensity x bandwidth)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        if let Some((label, peak2, bw2)) = second {
            // A lower roof (e.g. one thread's), drawn thin and grey.
            let grey = RGBColor(150, 150, 150);
            let roof2 = (0..=steps).map(|i| {
                let x = x0 * (x1 / x0).powf(i as f64 / steps as f64);
                (x, (x * bw2).min(peak2))
            });
            chart
                .draw_series(LineSeries::new(roof2, grey.stroke_width(1)))
                .map_err(|e| e.to_string())?
                .label(label.to_string())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1))
                });
        }
        // Label positions already used, to nudge a label down when it would overprint another
        // (dots at the same intensity and nearly the same height, e.g. GQA flash beside flash).
        let mut placed: Vec<(f64, f64)> = Vec::new();
        for d in dots {
            let c = RGBColor(d.rgb.0, d.rgb.1, d.rgb.2);
            let p = (d.intensity, d.flops);
            if d.filled {
                chart.draw_series(std::iter::once(Circle::new(p, 5, c.filled())))
            } else {
                chart.draw_series(std::iter::once(TriangleMarker::new(
                    p,
                    7,
                    c.stroke_width(2),
                )))
            }
            .map_err(|e| e.to_string())?;
            // N = 64 labels sit beside their dot, N = 2048 labels just below theirs.
            let x = d.intensity * 1.12;
            let mut y = if d.filled { d.flops } else { d.flops * 0.78 };
            while placed
                .iter()
                .any(|&(px, py)| (x / px).ln().abs() < 0.9 && (y / py).ln().abs() < 0.2)
            {
                y *= 0.8;
            }
            placed.push((x, y));
            chart
                .draw_series(std::iter::once(Text::new(
                    d.label.clone(),
                    (x, y),
                    ("sans-serif", 12).into_font().color(&c),
                )))
                .map_err(|e| e.to_string())?;
        }
        legend(&mut chart)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// One bar of a [`gantt`] row: start, end and colour.
pub type Bar = (f64, f64, (u8, u8, u8));

/// One panel of a [`gantt`] chart: a title, and per row a name and its bars `(start, end, colour)`.
pub struct GanttPanel {
    /// Drawn above the panel.
    pub title: String,
    /// Rows from the top: name and bars, x in the panel's units.
    pub rows: Vec<(String, Vec<Bar>)>,
    /// The x range shown.
    pub x: (f64, f64),
}

/// Timelines: panels stacked vertically, each row a sequence of coloured bars, with a legend of the
/// colours below them.
pub fn gantt(
    caption: &str,
    x_desc: &str,
    panels: &[GanttPanel],
    legend: &[(String, (u8, u8, u8))],
) -> Result<String, String> {
    let per_row = 4;
    let legend_h = 24 * legend.len().div_ceil(per_row) as u32 + 16;
    let panel_h = 190u32;
    let (w, h) = (900u32, 40 + panel_h * panels.len() as u32 + legend_h);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(caption, ("sans-serif", 18))
            .map_err(|e| e.to_string())?;
        let (charts, bottom) = root.split_vertically(panel_h * panels.len() as u32);
        let areas = charts.split_evenly((panels.len(), 1));
        for (panel, area) in panels.iter().zip(&areas) {
            let n = panel.rows.len();
            let names: Vec<String> = panel.rows.iter().map(|r| r.0.clone()).collect();
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(36)
                .y_label_area_size(90)
                .build_cartesian_2d(panel.x.0..panel.x.1, -0.5..n as f64 - 0.5)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(n)
                .x_desc(x_desc)
                .y_label_formatter(&|v| {
                    let i = v.round();
                    if (v - i).abs() < 0.01 && i >= 0.0 && (i as usize) < n {
                        names[n - 1 - i as usize].clone() // the first row on top
                    } else {
                        String::new()
                    }
                })
                .draw()
                .map_err(|e| e.to_string())?;
            for (r, (_, bars)) in panel.rows.iter().enumerate() {
                let y = (n - 1 - r) as f64;
                chart
                    .draw_series(
                        bars.iter()
                            .filter(|b| b.1 > panel.x.0 && b.0 < panel.x.1)
                            .map(|&(a, b, c)| {
                                Rectangle::new(
                                    [(a.max(panel.x.0), y - 0.38), (b.min(panel.x.1), y + 0.38)],
                                    RGBColor(c.0, c.1, c.2).filled(),
                                )
                            }),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
        for (i, (name, c)) in legend.iter().enumerate() {
            let (col, row) = ((i % per_row) as i32, (i / per_row) as i32);
            let (x, y) = (100 + col * 200, 8 + row * 24);
            bottom
                .draw(&Rectangle::new(
                    [(x, y), (x + 14, y + 14)],
                    RGBColor(c.0, c.1, c.2).filled(),
                ))
                .map_err(|e| e.to_string())?;
            bottom
                .draw(&Text::new(name.clone(), (x + 20, y), ("sans-serif", 13)))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base-2 x axis labelled at the powers of two, a linear y axis from zero, every series named.
    #[test]
    fn semilog2x_labels_powers_of_two_from_zero() {
        let series = [Series {
            name: "ours".into(),
            rgb: (0, 0, 0),
            points: vec![(2048.0, 3e12), (4096.0, 3.5e12), (65536.0, 4.5e12)],
            markers: true,
        }];
        let svg = semilog2x("t", "N", "rate", "B/s", &series).expect("drawn");
        for label in ["2k", "4k", "64k", "\n0\n", "ours"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(
            semilog2x("t", "N", "rate", "B/s", &[]).is_err(),
            "nothing to draw"
        );
    }
    #[test]
    fn gantt_draws_the_bars_in_range_and_the_legend() {
        let panel = GanttPanel {
            title: "p".into(),
            rows: vec![
                (
                    "a".into(),
                    vec![(0.0, 1.0, (10, 20, 30)), (5.0, 6.0, (40, 50, 60))],
                ),
                ("b".into(), vec![(0.5, 2.0, (70, 80, 90))]),
            ],
            x: (0.0, 3.0),
        };
        let svg = gantt("c", "x", &[panel], &[("state one".into(), (10, 20, 30))]).unwrap();
        assert!(svg.contains("#0A141E"), "the first bar's colour");
        assert!(svg.contains("#46505A"), "the second row's bar");
        assert!(
            !svg.contains("#28323C"),
            "a bar past the x range is not drawn"
        );
        assert!(svg.contains("state one"));
    }
}
