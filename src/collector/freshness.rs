//! How old a replica's newest sample may be before it stops steering
//! decisions (DESIGN section 6: fresh < 1m, stale > 2m, unavailable > 5m).

use std::time::Duration;

/// Age thresholds for metric samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessPolicy {
    /// Up to this age a sample is fresh.
    pub fresh: Duration,
    /// Beyond this age a model's metrics are stale: the API answers 503.
    pub stale: Duration,
    /// Beyond this age a replica's entry is dropped from the cache.
    pub unavailable: Duration,
}

impl Default for FreshnessPolicy {
    fn default() -> Self {
        FreshnessPolicy {
            fresh: Duration::from_secs(60),
            stale: Duration::from_secs(120),
            unavailable: Duration::from_secs(300),
        }
    }
}

/// The freshness class of one age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Older than fresh but still usable.
    Aging,
    Stale,
    Unavailable,
}

impl FreshnessPolicy {
    /// Rejects thresholds that are not increasing.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.fresh.is_zero() || self.fresh > self.stale || self.stale > self.unavailable {
            return Err(format!(
                "freshness thresholds must satisfy 0 < fresh <= stale <= unavailable (fresh {:?}, stale {:?}, unavailable {:?})",
                self.fresh, self.stale, self.unavailable
            ));
        }
        Ok(())
    }

    pub(crate) fn classify(&self, age: Duration) -> Freshness {
        if age <= self.fresh {
            Freshness::Fresh
        } else if age <= self.stale {
            Freshness::Aging
        } else if age <= self.unavailable {
            Freshness::Stale
        } else {
            Freshness::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ages_at_each_boundary() {
        let p = FreshnessPolicy::default();
        let cases = [
            (0, Freshness::Fresh),
            (60, Freshness::Fresh),
            (61, Freshness::Aging),
            (120, Freshness::Aging),
            (121, Freshness::Stale),
            (300, Freshness::Stale),
            (301, Freshness::Unavailable),
        ];
        for (secs, want) in cases {
            assert_eq!(p.classify(Duration::from_secs(secs)), want, "age {secs}s");
        }
    }

    #[test]
    fn rejects_thresholds_out_of_order() {
        let bad = FreshnessPolicy {
            fresh: Duration::from_secs(10),
            stale: Duration::from_secs(5),
            unavailable: Duration::from_secs(20),
        };
        assert!(bad.validate().is_err());
        assert!(FreshnessPolicy::default().validate().is_ok());
    }
}
