//! Why a model cannot be decided.

/// Why no decision can be given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecisionError {
    #[error("the variant inventory has not been loaded yet")]
    InventoryNotSynced,
    #[error("no variant in namespace {namespace:?} matches selector {selector:?}")]
    NoMatch { namespace: String, selector: String },
    #[error("scale target {kind} {namespace}/{name} of variant {variant:?} does not exist")]
    TargetMissing {
        namespace: String,
        variant: String,
        kind: String,
        name: String,
    },
    /// No fetch has reached the model's metrics since it appeared: `why`
    /// says what happened (the source's failure), or that the first fetch
    /// is still to come.
    #[error("no metrics for model {model_id:?} in namespace {namespace:?}: {why}")]
    NotFetchedYet {
        namespace: String,
        model_id: String,
        why: String,
    },
    #[error("metrics of model {model_id:?} in namespace {namespace:?} are stale: the newest sample is {age_secs}s old (stale after {stale_secs}s)")]
    Stale {
        namespace: String,
        model_id: String,
        age_secs: u64,
        stale_secs: u64,
    },
    #[error("metrics of model {model_id:?} in namespace {namespace:?} are stale: the metrics backend has not been reached for {age_secs}s (stale after {stale_secs}s){why}")]
    BackendUnreachable {
        namespace: String,
        model_id: String,
        age_secs: u64,
        stale_secs: u64,
        /// `: <the source's failure>` when known, else empty.
        why: String,
    },
}

impl DecisionError {
    /// Whether the error is about data that is not there (yet), which a
    /// client should retry, rather than about what it asked for.
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DecisionError::InventoryNotSynced
                | DecisionError::NotFetchedYet { .. }
                | DecisionError::Stale { .. }
                | DecisionError::BackendUnreachable { .. }
        )
    }
}
