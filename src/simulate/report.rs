//! `report.html`: one self-contained page (inline SVG charts drawn with
//! `plotters`, inline CSS, no scripts, no network) and the same charts as
//! separate SVG files.

use plotters::prelude::*;

use super::closed_loop::PolicyRun;
use super::summary::Summary;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 300;

/// A named line: (hours, value) points; a None value breaks the line.
pub type Series = (String, Vec<(f64, Option<f64>)>);

/// One chart: a title, a y-axis name and one line per series.
pub struct Chart {
    /// File stem (`replicas` -> `replicas.svg`).
    pub id: &'static str,
    pub title: String,
    pub y_label: &'static str,
    pub series: Vec<Series>,
}

/// The four charts of a run.
pub fn charts(runs: &[PolicyRun], slo_ttft: f64) -> Vec<Chart> {
    let hours = |i: usize| (i as f64 + 0.5) / 60.0;
    let per_policy = |f: &dyn Fn(&super::closed_loop::Minute) -> Option<f64>| {
        runs.iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.minutes
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (hours(i), f(m)))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    let load = runs.first().map_or_else(Vec::new, |r| {
        vec![(
            "requests/s".to_owned(),
            r.minutes
                .iter()
                .enumerate()
                .map(|(i, m)| (hours(i), Some(f64::from(m.arrivals) / 60.0)))
                .collect(),
        )]
    });
    let mut ttft = per_policy(&|m| m.ttft_p95);
    if let Some((_, points)) = ttft.first() {
        let slo: Vec<(f64, Option<f64>)> =
            points.iter().map(|&(h, _)| (h, Some(slo_ttft))).collect();
        ttft.push((format!("SLO {slo_ttft} s"), slo));
    }
    vec![
        Chart {
            id: "load",
            title: "Load".into(),
            y_label: "requests/s",
            series: load,
        },
        Chart {
            id: "replicas",
            title: "Replicas per policy (ready or starting)".into(),
            y_label: "replicas",
            series: per_policy(&|m| Some(m.replicas)),
        },
        Chart {
            id: "ttft-p95",
            title: "Time to first token, p95 per minute".into(),
            y_label: "seconds",
            series: ttft,
        },
        Chart {
            id: "kv-usage",
            title: "KV-cache usage, mean over ready replicas".into(),
            y_label: "fraction",
            series: per_policy(&|m| m.kv_usage),
        },
    ]
}

/// Draws a chart as an SVG document.
pub fn svg(chart: &Chart) -> Result<String, String> {
    let mut out = String::new();
    draw(chart, &mut out).map_err(|e| format!("drawing chart {:?}: {e}", chart.title))?;
    Ok(out)
}

fn draw<'a>(chart: &Chart, out: &'a mut String) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let x_max = chart
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(0.0f64, f64::max)
        .max(1.0 / 60.0);
    let y_max = chart
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().filter_map(|&(_, y)| y))
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    let y_max = if y_max <= 0.0 { 1.0 } else { y_max * 1.1 };
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    ctx.configure_mesh()
        .x_desc("hours")
        .y_desc(chart.y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, (name, points)) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Split at gaps so that a minute without data is not bridged.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in points {
            match y {
                Some(y) if y.is_finite() => {
                    if let Some(s) = segments.last_mut() {
                        s.push((x, y));
                    }
                }
                _ => {
                    if segments.last().is_some_and(|s| !s.is_empty()) {
                        segments.push(Vec::new());
                    }
                }
            }
        }
        let mut first = true;
        for segment in segments.into_iter().filter(|s| !s.is_empty()) {
            let series = ctx.draw_series(LineSeries::new(segment, color.stroke_width(2)))?;
            if first {
                series.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
                first = false;
            }
        }
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML page: the summary table and the charts, inline.
pub fn html(summary: &Summary, charts: &[(String, String)]) -> String {
    let mut rows = String::new();
    for p in &summary.policies {
        let t = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&p.name),
            p.slo_violation_minutes,
            p.replica_minutes,
            p.cost,
            p.scale_events,
            t(p.ttft_p50_seconds),
            t(p.ttft_p95_seconds),
            p.mean_replicas,
            p.max_replicas,
            p.requests,
        ));
    }
    let mut figures = String::new();
    for (title, svg) in charts {
        // The SVG document minus its XML declaration, inline.
        let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
        figures.push_str(&format!(
            "<figure><figcaption>{}</figcaption>\n{body}\n</figure>\n",
            escape(title)
        ));
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>wva-metrics-server simulate: {trace}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }}
figcaption {{ font-weight: bold; margin-bottom: .3em; }}
</style></head><body>
<h1>simulate: {trace}</h1>
<p>{duration} s of virtual time after {warm_up} s of warm-up at the first minute's load (not counted), seed {seed}, SLO: p95 time to first token per minute &le; {slo} s.</p>
<table>
<tr><th>policy</th><th>SLO-violation minutes</th><th>replica-minutes</th><th>cost</th><th>scale events</th><th>TTFT p50 s</th><th>TTFT p95 s</th><th>mean replicas</th><th>max replicas</th><th>requests</th></tr>
{rows}</table>
{figures}</body></html>
"#,
        trace = escape(&summary.trace),
        duration = summary.duration_seconds,
        warm_up = summary.warm_up_seconds,
        seed = summary.seed,
        slo = summary.slo_ttft_seconds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_series() {
        let chart = Chart {
            id: "t",
            title: "Replicas".into(),
            y_label: "replicas",
            series: vec![
                (
                    "v1".into(),
                    vec![(0.0, Some(1.0)), (0.5, None), (1.0, Some(3.0))],
                ),
                ("chain".into(), vec![(0.0, Some(2.0)), (1.0, Some(2.0))]),
            ],
        };
        let s = svg(&chart).unwrap();
        assert!(s.contains("<svg") && s.contains("</svg>"), "{s}");
        assert!(
            s.contains(">\nv1\n</text>") && s.contains(">\nchain\n</text>"),
            "legend names: {s}"
        );
        assert!(s.contains("<polyline"), "lines drawn");
        let page = html(
            &Summary {
                trace: "<x>".into(),
                duration_seconds: 60,
                warm_up_seconds: 0,
                seed: 1,
                slo_ttft_seconds: 2.0,
                policies: vec![],
            },
            &[("Replicas".into(), s)],
        );
        assert!(page.contains("&lt;x&gt;") && !page.contains("<?xml"));
        assert!(!page.contains("http://") || page.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(!page.contains("<script"));
    }
}
