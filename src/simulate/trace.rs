//! Load traces: built-in scenarios and CSV files, and the arrivals they
//! produce (pure: the caller reads the file; arrivals come from a seeded
//! generator).
//!
//! Two CSV layouts, told apart by their header:
//! - rates: `timestamp_seconds,requests_per_second[,avg_input_tokens,avg_output_tokens]`
//!   (header optional); the rate holds from its timestamp to the next one,
//!   arrivals are Poisson at that rate;
//! - requests, in the Azure LLM inference trace layout:
//!   `TIMESTAMP,ContextTokens,GeneratedTokens`, one request per line,
//!   TIMESTAMP a date-time (`2023-11-16 18:15:46.6805900`) or seconds; or in
//!   BurstGPT's: `Timestamp,Model,Request tokens,Response tokens,Total
//!   tokens,Log Type`, Timestamp in seconds.

use std::f64::consts::PI;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::simulate::replica_model::Request;

/// Prompt tokens of a request when the trace does not say.
pub(crate) const DEFAULT_INPUT_TOKENS: u32 = 512;
/// Generated tokens of a request when the trace does not say.
pub(crate) const DEFAULT_OUTPUT_TOKENS: u32 = 256;

/// A rate that holds from `at` until the next point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePoint {
    pub at: f64,
    pub requests_per_second: f64,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// A load trace.
#[derive(Debug, Clone, PartialEq)]
pub enum Trace {
    /// Piecewise-constant rates (sorted by time).
    Rates(Vec<RatePoint>),
    /// Individual requests (sorted by arrival, first at 0).
    Requests(Vec<Request>),
}

impl Trace {
    /// The time the trace covers: the last request, or the last rate point
    /// plus one minute.
    pub fn natural_duration(&self) -> f64 {
        match self {
            Trace::Rates(p) => p.last().map_or(0.0, |p| p.at + 60.0),
            Trace::Requests(r) => r.last().map_or(0.0, |r| r.arrival + 1.0),
        }
    }

    /// The load a run settles on before the trace starts: its first
    /// minute's rate and token lengths, held (for a request trace, the
    /// requests of its first minute per second, with their mean lengths).
    pub(crate) fn warm_up(&self) -> Trace {
        let point = match self {
            Trace::Rates(p) => p.first().map(|p| RatePoint { at: 0.0, ..*p }),
            Trace::Requests(r) => {
                let first: Vec<&Request> = r.iter().take_while(|r| r.arrival < 60.0).collect();
                let n = first.len().max(1) as u64;
                let mean = |f: fn(&Request) -> u32| {
                    (first.iter().map(|r| u64::from(f(r))).sum::<u64>() / n) as u32
                };
                Some(RatePoint {
                    at: 0.0,
                    requests_per_second: first.len() as f64 / 60.0,
                    input_tokens: mean(|r| r.input_tokens),
                    output_tokens: mean(|r| r.output_tokens),
                })
            }
        };
        Trace::Rates(point.into_iter().collect())
    }
}

/// The built-in scenarios.
pub(crate) const SCENARIOS: [&str; 4] = ["diurnal", "burst", "ramp", "idle-then-burst"];

/// A scenario's default duration.
pub(crate) fn scenario_default_duration(name: &str) -> f64 {
    if name == "diurnal" {
        86_400.0
    } else {
        7_200.0
    }
}

/// A built-in scenario over `duration` seconds, as one rate per minute:
/// - `diurnal`: one day compressed or stretched to the duration, 2 req/s at
///   night up to 40 req/s in the afternoon;
/// - `burst`: 5 req/s with two 10-minute bursts to 30 req/s;
/// - `ramp`: 1 to 40 req/s linearly;
/// - `idle-then-burst`: nothing for the first half, then 25 req/s.
pub fn scenario(name: &str, duration: f64) -> Option<Trace> {
    let rate: Box<dyn Fn(f64) -> f64> = match name {
        "diurnal" => Box::new(move |t| {
            // Minimum at 04:00, peak at 16:00 of the (scaled) day.
            let phase = 2.0 * PI * (t / duration - 4.0 / 24.0);
            2.0 + 38.0 * (1.0 - phase.cos()) / 2.0
        }),
        "burst" => Box::new(move |t| {
            let in_burst = |start: f64| t >= start * duration && t < start * duration + 600.0;
            if in_burst(0.25) || in_burst(0.65) {
                30.0
            } else {
                5.0
            }
        }),
        "ramp" => Box::new(move |t| 1.0 + 39.0 * (t / duration).min(1.0)),
        "idle-then-burst" => Box::new(move |t| if t < duration / 2.0 { 0.0 } else { 25.0 }),
        _ => return None,
    };
    let minutes = (duration / 60.0).ceil().max(1.0) as usize;
    Some(Trace::Rates(
        (0..minutes)
            .map(|m| {
                let at = m as f64 * 60.0;
                RatePoint {
                    at,
                    // The rate in the middle of the minute.
                    requests_per_second: rate(at + 30.0),
                    input_tokens: DEFAULT_INPUT_TOKENS,
                    output_tokens: DEFAULT_OUTPUT_TOKENS,
                }
            })
            .collect(),
    ))
}

/// A trace file that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceError {
    #[error("{file}: the trace is empty")]
    Empty { file: String },
    #[error("{file} line {line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
}

/// Parses a trace file's text (`file` names it in errors).
pub fn parse_trace(file: &str, text: &str) -> Result<Trace, TraceError> {
    let err = |line: usize, message: String| TraceError::Line {
        file: file.to_owned(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .peekable();
    let Some(&(first_no, first)) = lines.peek() else {
        return Err(TraceError::Empty {
            file: file.to_owned(),
        });
    };
    let header: Vec<String> = first.split(',').map(|f| f.trim().to_lowercase()).collect();
    let trace = if header.first().is_some_and(|h| h == "timestamp") {
        let Some(columns) = RequestColumns::of(&header) else {
            return Err(err(
                first_no,
                format!("header {first:?}: expected TIMESTAMP,ContextTokens,GeneratedTokens (Azure) or Timestamp,Model,Request tokens,Response tokens,... (BurstGPT)"),
            ));
        };
        lines.next();
        parse_requests(lines, &columns, &err)?
    } else {
        if header.first().is_some_and(|h| h == "timestamp_seconds") {
            let known = [
                "timestamp_seconds",
                "requests_per_second",
                "avg_input_tokens",
                "avg_output_tokens",
            ];
            if (header.len() != 2 && header.len() != 4) || header[..] != known[..header.len()] {
                return Err(err(first_no, format!("header {first:?}: expected timestamp_seconds,requests_per_second[,avg_input_tokens,avg_output_tokens]")));
            }
            lines.next();
        } else if first.parse::<f64>().is_err()
            && first
                .split(',')
                .next()
                .is_some_and(|f| f.trim().parse::<f64>().is_err())
        {
            return Err(err(first_no, format!("header {first:?} is neither `timestamp_seconds,requests_per_second[,avg_input_tokens,avg_output_tokens]` nor `TIMESTAMP,ContextTokens,GeneratedTokens`")));
        }
        parse_rates(lines, &err)?
    };
    match &trace {
        Trace::Rates(p) if p.is_empty() => Err(TraceError::Empty {
            file: file.to_owned(),
        }),
        Trace::Requests(r) if r.is_empty() => Err(TraceError::Empty {
            file: file.to_owned(),
        }),
        _ => Ok(trace),
    }
}

fn number(field: &str, what: &str) -> Result<f64, String> {
    match field.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err(format!("{what} {field:?} must be a finite number >= 0")),
        Err(_) => Err(format!("{what} {field:?} is not a number")),
    }
}

fn tokens(field: &str, what: &str) -> Result<u32, String> {
    let v = number(field, what)?;
    if v > f64::from(u32::MAX) {
        return Err(format!("{what} {field:?} is too large"));
    }
    Ok(v.round() as u32)
}

fn parse_rates<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
    err: &impl Fn(usize, String) -> TraceError,
) -> Result<Trace, TraceError> {
    let mut points: Vec<RatePoint> = Vec::new();
    for (no, line) in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 2 && fields.len() != 4 {
            return Err(err(
                no,
                format!(
                    "expected 2 or 4 comma-separated fields, found {}",
                    fields.len()
                ),
            ));
        }
        let at = number(fields[0], "timestamp_seconds").map_err(|m| err(no, m))?;
        let rps = number(fields[1], "requests_per_second").map_err(|m| err(no, m))?;
        let (input, output) = if fields.len() == 4 {
            (
                tokens(fields[2], "avg_input_tokens").map_err(|m| err(no, m))?,
                tokens(fields[3], "avg_output_tokens").map_err(|m| err(no, m))?,
            )
        } else {
            (DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS)
        };
        if let Some(last) = points.last() {
            if at <= last.at {
                return Err(err(
                    no,
                    format!("timestamp {at} is not after the previous one ({})", last.at),
                ));
            }
        }
        points.push(RatePoint {
            at,
            requests_per_second: rps,
            input_tokens: input,
            output_tokens: output,
        });
    }
    // The trace starts at its first timestamp.
    if let Some(t0) = points.first().map(|p| p.at) {
        for p in &mut points {
            p.at -= t0;
        }
    }
    Ok(Trace::Rates(points))
}

/// Seconds since the Unix epoch of `YYYY-MM-DD HH:MM:SS[.fraction]`, or a
/// plain number of seconds.
fn timestamp(field: &str) -> Result<f64, String> {
    let field = field.trim();
    if let Ok(v) = field.parse::<f64>() {
        return if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("TIMESTAMP {field:?} must be finite"))
        };
    }
    let dt: jiff::civil::DateTime = field
        .parse()
        .map_err(|e| format!("TIMESTAMP {field:?} is neither seconds nor a date-time: {e}"))?;
    let ts = dt
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|e| format!("TIMESTAMP {field:?}: {e}"))?
        .timestamp();
    Ok(ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9)
}

/// Where a request trace keeps its fields, by its header (lower case).
struct RequestColumns {
    fields: usize,
    input: usize,
    output: usize,
    /// The header's names of the token columns, for errors.
    input_name: &'static str,
    output_name: &'static str,
}

impl RequestColumns {
    /// Azure's LLM inference traces (2023, 2024) or BurstGPT's
    /// (`Timestamp,Model,Request tokens,Response tokens,Total tokens,Log
    /// Type`, timestamps in seconds; a failed request's 0 response tokens
    /// are taken as one).
    fn of(header: &[String]) -> Option<RequestColumns> {
        let names: Vec<&str> = header.iter().map(String::as_str).collect();
        let (input, output, input_name, output_name) = match names[..] {
            ["timestamp", "contexttokens", "generatedtokens"] => {
                (1, 2, "ContextTokens", "GeneratedTokens")
            }
            ["timestamp", "model", "request tokens", "response tokens", "total tokens", "log type"] => {
                (2, 3, "Request tokens", "Response tokens")
            }
            _ => return None,
        };
        Some(RequestColumns {
            fields: names.len(),
            input,
            output,
            input_name,
            output_name,
        })
    }
}

fn parse_requests<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
    columns: &RequestColumns,
    err: &impl Fn(usize, String) -> TraceError,
) -> Result<Trace, TraceError> {
    let mut requests: Vec<Request> = Vec::new();
    for (no, line) in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != columns.fields {
            return Err(err(
                no,
                format!(
                    "expected {} comma-separated fields, found {}",
                    columns.fields,
                    fields.len()
                ),
            ));
        }
        let at = timestamp(fields[0]).map_err(|m| err(no, m))?;
        let input = tokens(fields[columns.input], columns.input_name).map_err(|m| err(no, m))?;
        let output = tokens(fields[columns.output], columns.output_name).map_err(|m| err(no, m))?;
        if let Some(last) = requests.last() {
            if at < last.arrival {
                return Err(err(no, "TIMESTAMP goes back in time".to_owned()));
            }
        }
        requests.push(Request {
            arrival: at,
            input_tokens: input,
            output_tokens: output.max(1),
        });
    }
    if let Some(t0) = requests.first().map(|r| r.arrival) {
        for r in &mut requests {
            r.arrival -= t0;
        }
    }
    Ok(Trace::Requests(requests))
}

/// Produces the requests of a trace in time order. Rate traces give
/// Poisson arrivals from a seeded generator: the same seed, the same
/// requests, so every policy sees exactly the same load.
pub(crate) struct Arrivals<'a> {
    trace: &'a Trace,
    rng: StdRng,
    /// Rate traces: the time reached and the segment index.
    now: f64,
    segment: usize,
    /// Request traces: the next request.
    next: usize,
    pending: Option<Request>,
}

impl<'a> Arrivals<'a> {
    pub(crate) fn new(trace: &'a Trace, seed: u64) -> Self {
        Arrivals {
            trace,
            rng: StdRng::seed_from_u64(seed),
            now: 0.0,
            segment: 0,
            next: 0,
            pending: None,
        }
    }

    /// Appends the requests arriving before `end`.
    pub(crate) fn until(&mut self, end: f64, out: &mut Vec<Request>) {
        match self.trace {
            Trace::Requests(r) => {
                while let Some(req) = r.get(self.next) {
                    if req.arrival >= end {
                        break;
                    }
                    out.push(*req);
                    self.next += 1;
                }
            }
            Trace::Rates(points) => {
                if let Some(p) = self.pending {
                    if p.arrival >= end {
                        return;
                    }
                    out.push(p);
                    self.pending = None;
                }
                while let Some(point) = points.get(self.segment) {
                    let segment_end = points.get(self.segment + 1).map_or(f64::INFINITY, |n| n.at);
                    let rate = point.requests_per_second;
                    if rate <= 0.0 {
                        if segment_end >= end {
                            self.now = self.now.max(end);
                            return;
                        }
                        self.now = segment_end;
                        self.segment += 1;
                        continue;
                    }
                    // Exponential gap; memoryless, so a segment boundary
                    // simply restarts the draw at the new rate.
                    let u: f64 = self.rng.random();
                    let gap = -(1.0 - u).ln() / rate;
                    let t = self.now + gap;
                    if t >= segment_end {
                        self.now = segment_end;
                        self.segment += 1;
                        continue;
                    }
                    self.now = t;
                    let req = Request {
                        arrival: t,
                        input_tokens: point.input_tokens,
                        output_tokens: point.output_tokens.max(1),
                    };
                    if t >= end {
                        self.pending = Some(req);
                        return;
                    }
                    out.push(req);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_error(text: &str) -> (usize, String) {
        match parse_trace("t.csv", text) {
            Err(TraceError::Line { line, message, .. }) => (line, message),
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn parses_rate_files_with_and_without_header() {
        let t = parse_trace(
            "t.csv",
            "timestamp_seconds,requests_per_second,avg_input_tokens,avg_output_tokens\n100,2.5,300,50\n160,0,300,50\n",
        )
        .unwrap();
        assert_eq!(
            t,
            Trace::Rates(vec![
                RatePoint {
                    at: 0.0,
                    requests_per_second: 2.5,
                    input_tokens: 300,
                    output_tokens: 50
                },
                RatePoint {
                    at: 60.0,
                    requests_per_second: 0.0,
                    input_tokens: 300,
                    output_tokens: 50
                },
            ])
        );
        let t = parse_trace("t.csv", "# comment\n0,1\n\n30,2\n").unwrap();
        assert_eq!(t.natural_duration(), 90.0);
    }

    #[test]
    fn parses_azure_request_traces() {
        let t = parse_trace(
            "azure.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n",
        )
        .unwrap();
        let Trace::Requests(r) = t else { panic!() };
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].arrival, r[0].input_tokens, r[0].output_tokens),
            (0.0, 374, 44)
        );
        assert!((r[1].arrival - 4.314579).abs() < 1e-6, "{}", r[1].arrival);
        // Azure's 2024 traces write the offset.
        let t = parse_trace(
            "azure-2024.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.009930+00:00,374,44\n2024-05-10 00:00:01.509930+00:00,396,109\n",
        )
        .unwrap();
        let Trace::Requests(r) = t else { panic!() };
        assert!((r[1].arrival - 1.5).abs() < 1e-6, "{}", r[1].arrival);
    }

    /// BurstGPT's layout: seconds, the model, tokens in and out; a failed
    /// request (0 response tokens) still arrived and prefilled.
    #[test]
    fn parses_burstgpt_request_traces() {
        let t = parse_trace(
            "burstgpt.csv",
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,472,18,490,Conversation log\n45,GPT-4,1087,0,1087,API log\n",
        )
        .unwrap();
        let Trace::Requests(r) = t else { panic!() };
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.arrival, r.input_tokens, r.output_tokens))
            .collect();
        assert_eq!(got, [(0.0, 472, 18), (40.0, 1087, 1)]);
        let (line, message) = line_error(
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,many,18,490,Conversation log\n",
        );
        assert_eq!(line, 2);
        assert!(
            message.contains("Request tokens \"many\" is not a number"),
            "{message}"
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            (
                "0,1\n60,abc\n",
                2,
                "requests_per_second \"abc\" is not a number",
            ),
            ("0,1\n60,-1\n", 2, "must be a finite number >= 0"),
            ("0,1\n0,2\n", 2, "is not after the previous one"),
            ("0,1,2\n", 1, "expected 2 or 4"),
            ("when,how many\n", 1, "is neither"),
            (
                "timestamp_seconds,rps\n0,1\n",
                1,
                "expected timestamp_seconds",
            ),
            (
                "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1\n",
                2,
                "expected 3",
            ),
            (
                "Timestamp,Model,Prompt,Output\n0,m,1,1\n",
                1,
                "expected TIMESTAMP,ContextTokens,GeneratedTokens (Azure) or Timestamp,Model,Request tokens",
            ),
            (
                "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n",
                2,
                "neither seconds nor a date-time",
            ),
            (
                "TIMESTAMP,ContextTokens,GeneratedTokens\n10,1,1\n5,1,1\n",
                3,
                "back in time",
            ),
        ];
        for (text, line, needle) in cases {
            let (got_line, message) = line_error(text);
            assert_eq!(got_line, line, "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
        assert!(matches!(
            parse_trace("t.csv", "\n# only\n"),
            Err(TraceError::Empty { .. })
        ));
        let e = parse_trace("load.csv", "0,1\n60,x\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("load.csv line 2: "), "{e}");
    }

    #[test]
    fn poisson_arrivals_follow_the_rate_and_the_seed() {
        let trace = Trace::Rates(vec![
            RatePoint {
                at: 0.0,
                requests_per_second: 10.0,
                input_tokens: 100,
                output_tokens: 10,
            },
            RatePoint {
                at: 1000.0,
                requests_per_second: 0.0,
                input_tokens: 100,
                output_tokens: 10,
            },
            RatePoint {
                at: 2000.0,
                requests_per_second: 2.0,
                input_tokens: 7,
                output_tokens: 3,
            },
        ]);
        let collect = |seed| {
            let mut a = Arrivals::new(&trace, seed);
            let mut out = Vec::new();
            for s in 1..=3000 {
                a.until(s as f64, &mut out);
            }
            out
        };
        let one = collect(7);
        assert_eq!(one, collect(7), "same seed, same arrivals");
        assert_ne!(one, collect(8));
        let first = one.iter().filter(|r| r.arrival < 1000.0).count();
        let idle = one
            .iter()
            .filter(|r| (1000.0..2000.0).contains(&r.arrival))
            .count();
        let last: Vec<_> = one.iter().filter(|r| r.arrival >= 2000.0).collect();
        // 10,000 expected, sd 100; 2,000 expected, sd 45.
        assert!((9_600..=10_400).contains(&first), "{first}");
        assert_eq!(idle, 0);
        assert!((1_800..=2_200).contains(&last.len()), "{}", last.len());
        assert!(last
            .iter()
            .all(|r| r.input_tokens == 7 && r.output_tokens == 3));
        assert!(one.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    }

    #[test]
    fn warm_up_holds_the_first_minutes_load() {
        let rates = Trace::Rates(vec![
            RatePoint {
                at: 0.0,
                requests_per_second: 7.5,
                input_tokens: 300,
                output_tokens: 90,
            },
            RatePoint {
                at: 60.0,
                requests_per_second: 30.0,
                input_tokens: 512,
                output_tokens: 256,
            },
        ]);
        let only = |t: Trace| match t {
            Trace::Rates(p) if p.len() == 1 => p[0],
            other => panic!("{other:?}"),
        };
        let p = only(rates.warm_up());
        assert_eq!(
            (p.at, p.requests_per_second, p.input_tokens, p.output_tokens),
            (0.0, 7.5, 300, 90)
        );
        // Requests: 3 in the first minute (100/10, 200/20, 600/60), one later.
        let req = |arrival, input_tokens, output_tokens| Request {
            arrival,
            input_tokens,
            output_tokens,
        };
        let requests = Trace::Requests(vec![
            req(0.0, 100, 10),
            req(10.0, 200, 20),
            req(59.9, 600, 60),
            req(60.0, 5000, 500),
        ]);
        let p = only(requests.warm_up());
        assert_eq!(
            (p.requests_per_second, p.input_tokens, p.output_tokens),
            (0.05, 300, 30)
        );
    }

    #[test]
    fn scenarios_have_their_shape() {
        let Some(Trace::Rates(d)) = scenario("diurnal", 86_400.0) else {
            panic!()
        };
        assert_eq!(d.len(), 1440);
        let peak = d.iter().map(|p| p.requests_per_second).fold(0.0, f64::max);
        let low = d
            .iter()
            .map(|p| p.requests_per_second)
            .fold(f64::INFINITY, f64::min);
        assert!(
            (39.0..=40.0).contains(&peak) && (2.0..=2.1).contains(&low),
            "{low} {peak}"
        );
        let Some(Trace::Rates(i)) = scenario("idle-then-burst", 3600.0) else {
            panic!()
        };
        assert_eq!(i[0].requests_per_second, 0.0);
        assert_eq!(i[59].requests_per_second, 25.0);
        assert!(scenario("weekly", 60.0).is_none());
    }
}
