//! Who decides: a policy is an analyzer plus the path its metrics take to
//! it. `v1` and `v2` decide at the HPA's request from data as fresh as the
//! scrape backend keeps it; `chain` runs V1 where the replaced chain runs it
//! (a controller reading Prometheus, its output scraped again before the
//! HPA sees it).

use std::sync::Arc;

use crate::hpa::ExternalTarget;
use crate::saturation::{PercentageAnalyzer, SaturationAnalyzer};

/// Policies run when `--policies` is not given.
pub(crate) const DEFAULT_POLICIES: &str = "v1,v2,chain,slo,oracle,reactive";

/// The policies this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyKind {
    V1,
    V2,
    Chain,
    Slo,
    Oracle,
    Reactive,
}

/// Which of the server's analyses decides.
#[derive(Clone)]
pub(crate) enum Analysis {
    /// V1 (percentages) through `saturation::decide_acted_on`.
    Percentage(Arc<dyn SaturationAnalyzer>),
    /// V2 (tokens): `saturation::v2::TokenAnalyzer::decide`, then
    /// `v2::tolerance_steps`, as the server's decision engine runs them. A
    /// run makes its own `TokenAnalyzer` (its k2 history and remembered
    /// capacities are per run, so that runs do not leak into each other).
    Tokens,
    /// The analysis sized to the latency objective
    /// (`saturation::slo::SloAnalyzer`), falling back to V2 then V1 as the
    /// server does; one analyzer per run.
    Slo,
    /// Clairvoyant: sees the trace's arrivals one start-up delay ahead and
    /// reads the replica model's parameters (no other policy may). The
    /// bound every policy is measured against.
    Oracle,
    /// The oracle without foresight: the replica model's parameters and the
    /// arrivals of the last minute, none ahead. What sizing to the need
    /// from perfect measurements gets: the part of the distance to the
    /// oracle that only seeing ahead (or holding spare capacity) closes.
    Reactive,
}

impl Analysis {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Analysis::Percentage(a) => a.name(),
            Analysis::Tokens => crate::saturation::v2::ANALYZER_NAME,
            Analysis::Slo => crate::saturation::slo::ANALYZER_NAME,
            Analysis::Oracle => "oracle",
            Analysis::Reactive => "reactive",
        }
    }
}

/// How stale the decision's data is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum DataPath {
    /// The server: the collector refreshes every `fetch_interval` seconds
    /// and the decision is made when the HPA asks.
    OnDemand,
    /// The chain: Prometheus scrapes replicas every `scrape` seconds, the
    /// controller decides every `controller` seconds from Prometheus, and
    /// its output reaches the HPA through a scrape every `adapter` seconds.
    Chain(ChainDelays),
}

/// The three periods of the replaced chain (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChainDelays {
    pub(crate) scrape: u64,
    pub(crate) controller: u64,
    pub(crate) adapter: u64,
}

impl Default for ChainDelays {
    fn default() -> Self {
        ChainDelays {
            scrape: 15,
            controller: 30,
            adapter: 15,
        }
    }
}

/// One policy of a simulation.
#[derive(Clone)]
pub struct Policy {
    pub(crate) kind: PolicyKind,
    pub name: &'static str,
    pub(crate) analysis: Analysis,
    pub(crate) path: DataPath,
    /// How the HPA reads the decision: `wva_desired_ratio` with `Value: 1`
    /// for the server, `wva_desired_replicas` with `AverageValue: 1` for the
    /// chain (as upstream's samples configure it).
    pub(crate) target: ExternalTarget,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("analysis", &self.analysis.name())
            .field("path", &self.path)
            .finish()
    }
}

/// A `--policies` list that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown policy {0:?}: use v1, v2, chain, slo, oracle or reactive")]
    Unknown(String),
    #[error("policy {0:?} is listed twice")]
    Duplicate(String),
    #[error("no policy given: use v1, v2, chain, slo, oracle or reactive")]
    Empty,
}

/// Parses `--policies` (comma-separated).
pub fn parse_policies(list: &str, chain: ChainDelays) -> Result<Vec<Policy>, PolicyError> {
    let mut out: Vec<Policy> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let policy = match name.to_ascii_lowercase().as_str() {
            "v1" => Policy {
                kind: PolicyKind::V1,
                name: "v1",
                analysis: Analysis::Percentage(Arc::new(PercentageAnalyzer)),
                path: DataPath::OnDemand,
                target: ExternalTarget::Value { milli: 1000 },
            },
            "chain" => Policy {
                kind: PolicyKind::Chain,
                name: "chain",
                analysis: Analysis::Percentage(Arc::new(PercentageAnalyzer)),
                path: DataPath::Chain(chain),
                target: ExternalTarget::AverageValue { milli: 1000 },
            },
            "v2" => Policy {
                kind: PolicyKind::V2,
                name: "v2",
                analysis: Analysis::Tokens,
                path: DataPath::OnDemand,
                target: ExternalTarget::Value { milli: 1000 },
            },
            "slo" => Policy {
                kind: PolicyKind::Slo,
                name: "slo",
                analysis: Analysis::Slo,
                path: DataPath::OnDemand,
                target: ExternalTarget::Value { milli: 1000 },
            },
            "oracle" => Policy {
                kind: PolicyKind::Oracle,
                name: "oracle",
                analysis: Analysis::Oracle,
                path: DataPath::OnDemand,
                target: ExternalTarget::Value { milli: 1000 },
            },
            "reactive" => Policy {
                kind: PolicyKind::Reactive,
                name: "reactive",
                analysis: Analysis::Reactive,
                path: DataPath::OnDemand,
                target: ExternalTarget::Value { milli: 1000 },
            },
            _ => return Err(PolicyError::Unknown(name.to_owned())),
        };
        if out.iter().any(|p| p.kind == policy.kind) {
            return Err(PolicyError::Duplicate(name.to_owned()));
        }
        out.push(policy);
    }
    if out.is_empty() {
        return Err(PolicyError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_what_cannot_run() {
        let names = |s: &str| {
            parse_policies(s, ChainDelays::default())
                .map(|v| v.iter().map(|p| p.name).collect::<Vec<_>>())
        };
        assert_eq!(
            names(DEFAULT_POLICIES),
            Ok(vec!["v1", "v2", "chain", "slo", "oracle", "reactive"])
        );
        assert_eq!(names("oracle,SLO"), Ok(vec!["oracle", "slo"]));
        assert_eq!(names("Reactive"), Ok(vec!["reactive"]));
        assert_eq!(names(" chain , V1 "), Ok(vec!["chain", "v1"]));
        assert_eq!(names("V2"), Ok(vec!["v2"]));
        assert_eq!(names("v3"), Err(PolicyError::Unknown("v3".into())));
        assert_eq!(names("v1,v1"), Err(PolicyError::Duplicate("v1".into())));
        assert_eq!(names("v2,v1,v2"), Err(PolicyError::Duplicate("v2".into())));
        assert_eq!(names(" , "), Err(PolicyError::Empty));
    }

    #[test]
    fn each_policy_names_its_analysis_data_path_and_hpa_target() {
        let all = parse_policies("v1,v2,chain", ChainDelays::default()).unwrap();
        let shape: Vec<_> = all
            .iter()
            .map(|p| (p.name, p.analysis.name(), p.path, p.target))
            .collect();
        assert_eq!(
            shape,
            [
                (
                    "v1",
                    "percentage",
                    DataPath::OnDemand,
                    ExternalTarget::Value { milli: 1000 }
                ),
                (
                    "v2",
                    crate::saturation::v2::ANALYZER_NAME,
                    DataPath::OnDemand,
                    ExternalTarget::Value { milli: 1000 }
                ),
                (
                    "chain",
                    "percentage",
                    DataPath::Chain(ChainDelays::default()),
                    ExternalTarget::AverageValue { milli: 1000 }
                ),
            ]
        );
    }
}
