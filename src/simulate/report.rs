//! `report.html`: one self-contained page (inline SVG charts drawn with
//! `plotters`, inline CSS, no scripts, no network) and the same charts as
//! separate SVG files.

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::closed_loop::PolicyRun;
use super::summary::Summary;

/// Chart size: the page (margins included) fits a 1,000 px window.
const WIDTH: u32 = 900;
const HEIGHT: u32 = 300;

/// Runs shorter than this are plotted in minutes, longer ones in hours.
const MINUTES_UP_TO_SECONDS: f64 = 6.0 * 3600.0;

/// The latency axis ends at this multiple of the objective: a burst's
/// minutes of 200 s would otherwise flatten the objective onto the axis.
const LATENCY_CLIP_TIMES_OBJECTIVE: f64 = 5.0;

/// A named line: (time, value) points; a None value breaks the line.
pub(crate) type Series = (String, Vec<(f64, Option<f64>)>);

/// One chart: a title, a y-axis name and one line per series.
pub(crate) struct Chart {
    /// File stem (`replicas` -> `replicas.svg`).
    pub(crate) id: &'static str,
    pub(crate) title: String,
    pub(crate) y_label: &'static str,
    /// `minutes` or `hours`: the unit of the series' x values.
    pub(crate) x_label: &'static str,
    /// The y axis shows whole numbers only (replicas).
    pub(crate) integer_y: bool,
    /// Values above this are drawn at it (the axis ends there).
    pub(crate) y_clip: Option<f64>,
    pub(crate) series: Vec<Series>,
}

/// What each policy is, for the page; a policy without an entry gets a
/// generic line (policies are added without touching the report).
const POLICY_DESCRIPTIONS: &[(&str, &str)] = &[
    ("v1", "this server with the percentage analysis (V1): KV-cache usage and queue length against thresholds, one replica per step, decided on fresh metrics at every HPA sync"),
    ("v2", "this server with the token-based analysis (V2): capacity in KV tokens learned from the replicas, several replicas per step when demand needs them"),
    ("chain", "the chain this server replaces: the WVA controller decides with V1, its result goes through Prometheus and the Prometheus Adapter to the HPA, so every decision acts on data that is a scrape interval, a controller cycle and an adapter cache older"),
    ("oracle", "the bound every other policy is measured against: sized from the replica model's true parameters and the load it is about to get, which no real autoscaler knows"),
    ("reactive", "the oracle without foresight: the replica model's true parameters and exactly the arrivals of the last minute, nothing ahead and no spare capacity held; what sizing to the need from perfect measurements reaches, so the distance from it to the oracle is what only seeing ahead (or paying for headroom) closes"),
    ("slo", "this server sizing against the latency objective: capacity per replica learned from vLLM's own latency and throughput metrics, replicas chosen to keep time to first token under the objective"),
];

/// The description of a policy by name.
pub(crate) fn policy_description(name: &str) -> String {
    POLICY_DESCRIPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| (*d).to_owned())
        .unwrap_or_else(|| format!("policy `{name}` (see docs/simulate.md)"))
}

/// The four charts of a run. Time is in minutes for runs under 6 hours,
/// else in hours.
pub(crate) fn charts(runs: &[PolicyRun], slo_ttft: f64) -> Vec<Chart> {
    let minutes = runs.first().map_or(0, |r| r.minutes.len());
    let (x_label, per_minute) = if minutes as f64 * 60.0 < MINUTES_UP_TO_SECONDS {
        ("minutes", 1.0)
    } else {
        ("hours", 1.0 / 60.0)
    };
    let at = move |i: usize| (i as f64 + 0.5) * per_minute;
    let per_policy = |f: &dyn Fn(&super::closed_loop::Minute) -> Option<f64>| {
        runs.iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.minutes
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (at(i), f(m)))
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
                .map(|(i, m)| (at(i), Some(f64::from(m.arrivals) / 60.0)))
                .collect(),
        )]
    });
    let mut ttft = per_policy(&|m| m.ttft_p95);
    if let Some((_, points)) = ttft.first() {
        let slo: Vec<(f64, Option<f64>)> =
            points.iter().map(|&(h, _)| (h, Some(slo_ttft))).collect();
        ttft.push((format!("objective {slo_ttft} s"), slo));
    }
    let clip = slo_ttft * LATENCY_CLIP_TIMES_OBJECTIVE;
    let ttft_max = ttft
        .iter()
        .flat_map(|(_, p)| p.iter().filter_map(|&(_, y)| y))
        .fold(0.0f64, f64::max);
    let clipped = ttft_max > clip && slo_ttft > 0.0;
    vec![
        Chart {
            id: "load",
            title: "Load".into(),
            y_label: "requests/s",
            x_label,
            integer_y: false,
            y_clip: None,
            series: load,
        },
        Chart {
            id: "replicas",
            title: "Replicas per policy (ready or starting)".into(),
            y_label: "replicas",
            x_label,
            integer_y: true,
            y_clip: None,
            series: per_policy(&|m| Some(m.replicas)),
        },
        Chart {
            id: "ttft-p95",
            title: if clipped {
                format!(
                    "Time to first token, p95 per minute (axis ends at {LATENCY_CLIP_TIMES_OBJECTIVE}x the objective: higher minutes drawn at the top, highest {ttft_max:.0} s)"
                )
            } else {
                "Time to first token, p95 per minute".into()
            },
            y_label: "seconds",
            x_label,
            integer_y: false,
            y_clip: clipped.then_some(clip),
            series: ttft,
        },
        Chart {
            id: "kv-usage",
            title: "KV-cache usage, mean over ready replicas".into(),
            y_label: "fraction",
            x_label,
            integer_y: false,
            y_clip: None,
            series: per_policy(&|m| m.kv_usage),
        },
    ]
}

/// Draws a chart as an SVG document.
pub(crate) fn svg(chart: &Chart) -> Result<String, String> {
    let mut out = String::new();
    draw(chart, &mut out).map_err(|e| format!("drawing chart {:?}: {e}", chart.title))?;
    Ok(out)
}

/// How series `i` of a chart is drawn: colour-blind-safe colours (Okabe
/// and Ito), and from the third series on a dash pattern as well, so that
/// lines that overlap (v1 and chain often do) stay apart.
fn line_style(i: usize, name: &str) -> (RGBColor, Option<(u32, u32)>) {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(0, 114, 178),   // blue
        RGBColor(213, 94, 0),    // vermilion
        RGBColor(0, 158, 115),   // green
        RGBColor(204, 121, 167), // purple
        RGBColor(230, 159, 0),   // orange
        RGBColor(86, 180, 233),  // sky blue
    ];
    if name.starts_with("objective") {
        return (RGBColor(0, 0, 0), Some((6, 4)));
    }
    let dash = match i % 3 {
        0 => None,
        1 => Some((10, 4)),
        _ => Some((3, 3)),
    };
    (COLOURS[i % COLOURS.len()], dash)
}

fn draw<'a>(chart: &Chart, out: &'a mut String) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let x_max = chart
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(0.0f64, f64::max)
        .max(1.0 / 60.0);
    let y_top = chart
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().filter_map(|&(_, y)| y))
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    let y_top = chart.y_clip.map_or(y_top, |c| y_top.min(c));
    let y_max = if y_top <= 0.0 {
        1.0
    } else if chart.integer_y {
        (y_top + 1.0).ceil()
    } else {
        y_top * 1.1
    };
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    let integer_labels = |v: &f64| format!("{v:.0}");
    let decimal_labels = |v: &f64| {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    let mut mesh = ctx.configure_mesh();
    mesh.x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&decimal_labels);
    if chart.integer_y {
        // One tick per replica up to 10, then plotters' round steps; whole
        // numbers either way.
        mesh.y_labels((y_max as usize + 1).min(11))
            .y_label_formatter(&integer_labels);
    } else {
        mesh.y_label_formatter(&decimal_labels);
    }
    mesh.draw()?;
    for (i, (name, points)) in chart.series.iter().enumerate() {
        let (colour, dash) = line_style(i, name);
        let style = colour.stroke_width(2);
        // Split at gaps so that a minute without data is not bridged.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in points {
            match y {
                Some(y) if y.is_finite() => {
                    let y = chart.y_clip.map_or(y, |c| y.min(c));
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
            let series = match dash {
                None => ctx.draw_series(LineSeries::new(segment, style))?,
                Some((on, off)) => {
                    ctx.draw_series(DashedLineSeries::new(segment, on, off, style))?
                }
            };
            if first {
                series
                    .label(name.as_str())
                    .legend(move |(x, y)| match dash {
                        None => PathElement::new(vec![(x, y), (x + 24, y)], style).into_dyn(),
                        Some((on, off)) => {
                            DashedPathElement::new(vec![(x, y), (x + 24, y)], on, off, style)
                                .into_dyn()
                        }
                    });
                first = false;
            }
        }
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
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

/// The HTML page: what each policy is, the summary table with units, and
/// the charts, inline. Fits a 1,000 px window without scrolling sideways.
pub(crate) fn html(summary: &Summary, charts: &[(String, String)]) -> String {
    let mut rows = String::new();
    let mut policies = String::new();
    for p in &summary.policies {
        let t = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
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
            p.interrupted_requests,
        ));
        policies.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>\n",
            escape(&p.name),
            escape(&policy_description(&p.name))
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
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wva-metrics-server simulate: {trace}</title>
<style>
body {{ font-family: sans-serif; margin: 1em auto; padding: 0 1em; max-width: 920px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
td, th {{ border: 1px solid #bbb; padding: 3px 5px; text-align: right; }}
th {{ font-weight: normal; background: #f3f3f3; vertical-align: bottom; }}
td:first-child, th:first-child {{ text-align: left; }}
dt {{ font-weight: bold; margin-top: .4em; }}
dd {{ margin-left: 1.5em; }}
figure {{ margin: 1.5em 0; }}
figure svg {{ max-width: 100%; height: auto; }}
figcaption {{ font-weight: bold; margin-bottom: .3em; }}
</style></head><body>
<h1>simulate: {trace}</h1>
<p>{duration} of virtual time after {warm_up} of warm-up at the first minute's load (not counted), seed {seed}. Objective: p95 time to first token per minute &le; {slo} s.</p>
<h2>Policies</h2>
<dl>
{policies}</dl>
<h2>Summary</h2>
<table>
<tr><th>policy</th><th>minutes over the objective</th><th>replica-minutes</th><th>cost (replica-hours &times; --cost-per-replica-hour)</th><th>scale events</th><th>TTFT p50 (s)</th><th>TTFT p95 (s)</th><th>mean replicas</th><th>max replicas</th><th>requests</th><th>requests interrupted by a scale-down</th></tr>
{rows}</table>
{figures}</body></html>
"#,
        trace = escape(&summary.trace),
        duration = human_duration(summary.duration_seconds),
        warm_up = human_duration(summary.warm_up_seconds),
        seed = summary.seed,
        slo = summary.slo_ttft_seconds,
    )
}

/// `2 h`, `90 min`, `45 s`.
fn human_duration(seconds: u64) -> String {
    if seconds >= 3600 && seconds % 3600 == 0 {
        format!("{} h", seconds / 3600)
    } else if seconds >= 60 && seconds % 60 == 0 {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
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
            x_label: "minutes",
            integer_y: true,
            y_clip: None,
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

    #[test]
    fn replica_ticks_are_whole_numbers_and_policies_are_explained() {
        let chart = Chart {
            id: "replicas",
            title: "Replicas".into(),
            y_label: "replicas",
            x_label: "minutes",
            integer_y: true,
            y_clip: None,
            series: vec![("v1".into(), vec![(0.5, Some(1.0)), (1.5, Some(4.0))])],
        };
        let s = svg(&chart).unwrap();
        // Tick labels are text elements holding a number alone.
        let labels: Vec<&str> = s
            .split("</text>")
            .filter_map(|t| t.rsplit('>').next())
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .collect();
        assert!(!labels.is_empty(), "{s}");
        assert!(
            labels
                .iter()
                .all(|l| !l.contains('.') || chart.x_label == "minutes"),
            "{labels:?}"
        );
        assert!(
            !s.contains(">\n2.0\n<") && !s.contains(">\n4.0\n<"),
            "{labels:?}"
        );
        for name in ["v1", "v2", "chain", "oracle", "reactive", "slo"] {
            assert!(!policy_description(name).contains("see docs"), "{name}");
        }
        assert_eq!(
            policy_description("newpolicy"),
            "policy `newpolicy` (see docs/simulate.md)"
        );
    }
}
