//! The numbers a run ends with: `summary.json`, `minutes.csv` and the
//! printed table.

use serde::Serialize;

use super::closed_loop::{percentile, PolicyRun};

/// One policy's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySummary {
    pub(crate) name: String,
    /// Minutes whose p95 time to first token exceeded the SLO.
    pub slo_violation_minutes: u32,
    /// Pods (ready or starting) x minutes: what the accelerators cost.
    pub replica_minutes: f64,
    /// replica hours x cost per replica hour.
    pub(crate) cost: f64,
    /// Changes of the scale target's replicas by the HPA.
    pub(crate) scale_events: u32,
    pub(crate) requests: u64,
    /// Requests cut off mid-stream by a scale-down.
    pub(crate) interrupted_requests: u64,
    pub(crate) ttft_p50_seconds: Option<f64>,
    pub(crate) ttft_p95_seconds: Option<f64>,
    pub(crate) ttft_p99_seconds: Option<f64>,
    pub max_replicas: u32,
    pub(crate) mean_replicas: f64,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub(crate) trace: String,
    pub(crate) duration_seconds: u64,
    /// Seconds run before the trace and not counted.
    pub(crate) warm_up_seconds: u64,
    pub(crate) seed: u64,
    pub(crate) slo_ttft_seconds: f64,
    pub(crate) policies: Vec<PolicySummary>,
}

/// Totals of one run.
pub fn summarize(run: &PolicyRun, slo_ttft: f64, cost_per_replica_hour: f64) -> PolicySummary {
    let mut ttfts: Vec<f64> = run.ttfts.iter().map(|&t| f64::from(t)).collect();
    let replica_minutes = run.replica_seconds / 60.0;
    let minutes = run.minutes.len().max(1) as f64;
    PolicySummary {
        name: run.name.clone(),
        slo_violation_minutes: run
            .minutes
            .iter()
            .filter(|m| m.ttft_p95.is_some_and(|p| p > slo_ttft))
            .count() as u32,
        replica_minutes: round3(replica_minutes),
        cost: round3(replica_minutes / 60.0 * cost_per_replica_hour),
        scale_events: run.scale_events,
        requests: run.requests,
        interrupted_requests: run.interrupted_requests,
        ttft_p50_seconds: percentile(&mut ttfts, 0.50).map(round3),
        ttft_p95_seconds: percentile(&mut ttfts, 0.95).map(round3),
        ttft_p99_seconds: percentile(&mut ttfts, 0.99).map(round3),
        max_replicas: run.max_replicas,
        mean_replicas: round3(run.minutes.iter().map(|m| m.replicas).sum::<f64>() / minutes),
    }
}

/// `minutes.csv`: every counted minute of every policy, so that a
/// violation minute can be found and read beside its load and replicas (the
/// totals say how many, not when).
pub(crate) fn minutes_csv(runs: &[PolicyRun], slo_ttft: f64) -> String {
    let mut out = String::from(
        "policy,minute,arrivals,replicas,ready_replicas,ttft_p95_seconds,kv_usage,over_objective\n",
    );
    for run in runs {
        for (i, m) in run.minutes.iter().enumerate() {
            let optional = |v: Option<f64>| v.map_or(String::new(), |v| round3(v).to_string());
            out.push_str(&format!(
                "{},{i},{},{},{},{},{},{}\n",
                run.name,
                m.arrivals,
                round3(m.replicas),
                round3(m.ready_replicas),
                optional(m.ttft_p95),
                optional(m.kv_usage),
                u8::from(m.ttft_p95.is_some_and(|p| p > slo_ttft)),
            ));
        }
    }
    out
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The table printed at the end.
pub(crate) fn table(summary: &Summary) -> String {
    let mut out = format!(
        "{:<8} {:>14} {:>15} {:>10} {:>12} {:>12} {:>12} {:>9}\n",
        "policy",
        "SLO-viol. min",
        "replica-min",
        "cost",
        "scale events",
        "TTFT p95 s",
        "mean repl.",
        "max repl."
    );
    for p in &summary.policies {
        out.push_str(&format!(
            "{:<8} {:>14} {:>15.1} {:>10.2} {:>12} {:>12} {:>12.2} {:>9}\n",
            p.name,
            p.slo_violation_minutes,
            p.replica_minutes,
            p.cost,
            p.scale_events,
            p.ttft_p95_seconds
                .map_or_else(|| "-".to_owned(), |t| format!("{t:.3}")),
            p.mean_replicas,
            p.max_replicas
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::closed_loop::Minute;

    #[test]
    fn totals_count_minutes_over_the_slo_and_pod_time() {
        let minute = |p95: Option<f64>, replicas: f64| Minute {
            arrivals: 1,
            replicas,
            ready_replicas: replicas,
            ttft_p95: p95,
            kv_usage: None,
        };
        let run = PolicyRun {
            name: "v1".into(),
            minutes: vec![
                minute(Some(0.5), 2.0),
                minute(Some(2.5), 2.0),
                minute(None, 3.0),
                minute(Some(2.0), 3.0),
            ],
            requests: 4,
            interrupted_requests: 0,
            scale_events: 1,
            scale_history: vec![(120, 3)],
            max_replicas: 3,
            replica_seconds: 600.0,
            ttfts: vec![0.5, 2.5, 2.0, 0.1],
        };
        let csv = minutes_csv(std::slice::from_ref(&run), 2.0);
        assert_eq!(
            csv,
            "policy,minute,arrivals,replicas,ready_replicas,ttft_p95_seconds,kv_usage,over_objective\n\
             v1,0,1,2,2,0.5,,0\n\
             v1,1,1,2,2,2.5,,1\n\
             v1,2,1,3,3,,,0\n\
             v1,3,1,3,3,2,,0\n"
        );
        let s = summarize(&run, 2.0, 12.0);
        // Only 2.5 > 2.0: the SLO is met at exactly 2 s.
        assert_eq!(s.slo_violation_minutes, 1);
        assert_eq!(s.replica_minutes, 10.0);
        assert_eq!(s.cost, 2.0);
        assert_eq!(s.mean_replicas, 2.5);
        assert_eq!(s.ttft_p95_seconds, Some(2.5));
        assert_eq!(s.ttft_p50_seconds, Some(0.5));
        let json = serde_json::to_value(&s).unwrap();
        for key in [
            "name",
            "slo_violation_minutes",
            "replica_minutes",
            "cost",
            "scale_events",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
