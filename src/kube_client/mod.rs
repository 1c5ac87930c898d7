//! The kube clients the server talks to the API server with. Every
//! request except watches passes a client-side token bucket
//! ([`rate_limit`]), as client-go's QPS/burst does for controllers: an
//! unbounded client is throttled by API Priority and Fairness, and that
//! delays our own reflectors' re-lists with it.

pub(crate) mod configmap;
pub(crate) mod rate_limit;
pub(crate) mod watch;

pub(crate) use rate_limit::{ApiBudget, ApiRateLimitLayer, RateLimitSettings};
