//! Who decides: a policy is an analyzer plus the path its metrics take to
//! it. `v1` and `v2` decide at the HPA's request from data as fresh as the
//! scrape backend keeps it; `chain` runs V1 where the replaced chain runs it
//! (a controller reading Prometheus, its output scraped again before the
//! HPA sees it). A V2 analyzer plugs in as one more [`PolicyKind`].

use std::sync::Arc;

use crate::hpa::ExternalTarget;
use crate::saturation::{PercentageAnalyzer, SaturationAnalyzer};

/// Policies run when `--policies` is not given.
pub const DEFAULT_POLICIES: &str = "v1,chain";

/// The policies this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    V1,
    Chain,
}

/// How stale the decision's data is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataPath {
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
    pub scrape: u64,
    pub controller: u64,
    pub adapter: u64,
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
    pub kind: PolicyKind,
    pub name: &'static str,
    pub analyzer: Arc<dyn SaturationAnalyzer>,
    pub path: DataPath,
    /// How the HPA reads the decision: `wva_desired_ratio` with `Value: 1`
    /// for the server, `wva_desired_replicas` with `AverageValue: 1` for the
    /// chain (as upstream's samples configure it).
    pub target: ExternalTarget,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("analyzer", &self.analyzer.name())
            .field("path", &self.path)
            .finish()
    }
}

/// A `--policies` list that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy v2 is not available in this build: the V2 (token-based) analyzer is not part of it yet; use --policies v1,chain")]
    V2NotAvailable,
    #[error("unknown policy {0:?}: use v1, v2 or chain")]
    Unknown(String),
    #[error("policy {0:?} is listed twice")]
    Duplicate(String),
    #[error("no policy given: use v1, v2 or chain")]
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
                analyzer: Arc::new(PercentageAnalyzer),
                path: DataPath::OnDemand,
                target: ExternalTarget::Value { milli: 1000 },
            },
            "chain" => Policy {
                kind: PolicyKind::Chain,
                name: "chain",
                analyzer: Arc::new(PercentageAnalyzer),
                path: DataPath::Chain(chain),
                target: ExternalTarget::AverageValue { milli: 1000 },
            },
            "v2" => return Err(PolicyError::V2NotAvailable),
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
        assert_eq!(names(DEFAULT_POLICIES), Ok(vec!["v1", "chain"]));
        assert_eq!(names(" chain , V1 "), Ok(vec!["chain", "v1"]));
        assert_eq!(names("v1,v2"), Err(PolicyError::V2NotAvailable));
        assert_eq!(names("v3"), Err(PolicyError::Unknown("v3".into())));
        assert_eq!(names("v1,v1"), Err(PolicyError::Duplicate("v1".into())));
        assert_eq!(names(" , "), Err(PolicyError::Empty));
        assert!(PolicyError::V2NotAvailable
            .to_string()
            .contains("not available in this build"));
    }
}
