//! The HPA's tolerance band: a usage ratio close enough to 1 changes nothing.
//!
//! Kubernetes compares `1 - scaleDown <= ratio <= 1 + scaleUp`, inclusive at
//! both ends, with both tolerances 0.1 by default
//! (`--horizontal-pod-autoscaler-tolerance`). From Kubernetes 1.33 an HPA may
//! set its own per direction (`behavior.scaleUp.tolerance`,
//! `behavior.scaleDown.tolerance`, feature gate `HPAConfigurableTolerance`).

use crate::k8s::quantity::parse_milli;

/// The controller-wide default of `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// The band the HPA leaves alone, per direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// How far below 1 a ratio may fall and still change nothing.
    pub(crate) scale_down: f64,
    /// How far above 1 a ratio may rise and still change nothing.
    pub(crate) scale_up: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances::uniform(DEFAULT_TOLERANCE)
    }
}

/// A tolerance that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToleranceError {
    #[error("tolerance {0:?} is not a number")]
    NotANumber(String),
    #[error("tolerance {0:?} must be a finite number >= 0")]
    OutOfRange(String),
}

impl Tolerances {
    /// The same tolerance in both directions, as the controller flag sets it.
    pub(crate) const fn uniform(tolerance: f64) -> Self {
        Tolerances {
            scale_down: tolerance,
            scale_up: tolerance,
        }
    }

    /// True when the HPA ignores `usage_ratio`. The same float arithmetic as
    /// Kubernetes (`1.0 - 0.1` is the float64 nearest 0.9, as is `900m /
    /// 1000`), so the band edges land where the HPA puts them: exactly 0.9
    /// and exactly 1.1 are inside. NaN is outside, as in Go.
    pub(crate) fn is_within(&self, usage_ratio: f64) -> bool {
        (1.0 - self.scale_down) <= usage_ratio && usage_ratio <= (1.0 + self.scale_up)
    }
}

/// Parses a tolerance as a plain decimal (`0.1`) or a Kubernetes quantity
/// (`100m`, the form the API server may normalise `behavior.*.tolerance`
/// into). Must be finite and >= 0, as the API server validates it.
pub fn parse_tolerance(text: &str) -> Result<f64, ToleranceError> {
    let text = text.trim();
    let value = match text.parse::<f64>() {
        Ok(v) => v,
        // A quantity with a suffix: the milli value is the HPA's precision
        // for everything else it reads, and a tolerance finer than 1/1000 has
        // no effect on ratios served in milli units.
        Err(_) => match parse_milli(text) {
            Ok(milli) => milli as f64 / 1000.0,
            Err(_) => return Err(ToleranceError::NotANumber(text.to_owned())),
        },
    };
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ToleranceError::OutOfRange(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_edges_are_inside_as_in_kubernetes() {
        let t = Tolerances::default();
        // (ratio, within): the edges as the HPA computes them from milli
        // values, and the nearest milli steps outside.
        let cases = [
            (900.0 / 1000.0, true),
            (1100.0 / 1000.0, true),
            (899.0 / 1000.0, false),
            (1101.0 / 1000.0, false),
            (1.0, true),
            // AverageValue at 10 replicas: 11 / (1 x 10) and 9 / (1 x 10).
            (11_000.0 / (1000.0 * 10.0), true),
            (9_000.0 / (1000.0 * 10.0), true),
            (13_000.0 / (1000.0 * 12.0), true),
            (14_000.0 / (1000.0 * 12.0), false),
            (10_000.0 / (1000.0 * 12.0), false),
            (f64::INFINITY, false),
            (f64::NAN, false),
        ];
        for (ratio, within) in cases {
            assert_eq!(t.is_within(ratio), within, "{ratio}");
        }
    }

    #[test]
    fn directions_are_separate() {
        let t = Tolerances {
            scale_down: 0.2,
            scale_up: 0.05,
        };
        assert!(t.is_within(0.8));
        assert!(!t.is_within(0.799));
        assert!(t.is_within(1.05));
        assert!(!t.is_within(1.051));
        let zero = Tolerances::uniform(0.0);
        assert!(zero.is_within(1.0));
        assert!(!zero.is_within(1.001) && !zero.is_within(0.999));
    }

    #[test]
    fn parses_decimals_and_quantities() {
        assert_eq!(parse_tolerance("0.1"), Ok(0.1));
        assert_eq!(parse_tolerance(" 0.05 "), Ok(0.05));
        assert_eq!(parse_tolerance("50m"), Ok(0.05));
        assert_eq!(parse_tolerance("0"), Ok(0.0));
        assert_eq!(
            parse_tolerance("-0.1"),
            Err(ToleranceError::OutOfRange("-0.1".into()))
        );
        assert_eq!(
            parse_tolerance("inf"),
            Err(ToleranceError::OutOfRange("inf".into()))
        );
        assert_eq!(
            parse_tolerance("ten"),
            Err(ToleranceError::NotANumber("ten".into()))
        );
    }
}
