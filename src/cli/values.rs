//! The value parsers of the flags: each refuses a bad value with a
//! message that says what is expected.

use std::time::Duration;

/// The shape of every boolean flag with an environment form: `--flag`
/// alone is true, `--flag=false` (or the variable) says false; a bare
/// `--flag false` is not taken (the value must follow `=`), so a flag never
/// swallows the next argument. Used in the derive as the raw attribute
/// `#[arg(long, env = "VAR", bool_flag = false, value_parser = parse_bool)]`
/// (`false` is the default) with the trait in scope. The parser stays an
/// attribute of its own: the derive applies `value_parser` before raw
/// attributes, whatever their order, so a parser set here would replace a
/// flag's own (`--scale-to-zero`'s).
pub(crate) trait BoolFlag {
    fn bool_flag(self, default: bool) -> Self;
}

impl BoolFlag for clap::Arg {
    fn bool_flag(self, default: bool) -> Self {
        self.value_name("BOOL")
            .default_value(if default { "true" } else { "false" })
            .num_args(0..=1)
            .require_equals(true)
            .action(clap::ArgAction::Set)
            .default_missing_value("true")
    }
}

/// Parses durations such as `2s`, `500ms`, `1m30s`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration (like 2s, 500ms, 1m): {e}"))
}

/// A boolean flag value: true/false (also 1/0, yes/no), any case.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean: use true or false")),
    }
}

/// `--scale-to-zero` / `WVA_SCALE_TO_ZERO`: `true` or `false` only (as
/// documented for the variable).
pub(crate) fn parse_scale_to_zero(s: &str) -> Result<bool, String> {
    crate::saturation::scale_to_zero::env_enabled(Some(s)).map_err(|e| e.to_string())
}

/// A count above zero.
pub(crate) fn parse_positive_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("{s:?}: must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// A duration above zero (a zero timeout or interval would spin or fail everything).
pub(crate) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s.trim())?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// `--kube-api-qps`: a finite number above 0.
pub(crate) fn parse_kube_api_qps(s: &str) -> Result<f64, String> {
    let qps: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    crate::kube_client::RateLimitSettings { qps, burst: 1 }
        .validate()
        .map(|()| qps)
        .map_err(|e| e.to_string())
}

/// A request rate: a finite number >= 0 of requests per second.
#[cfg(feature = "emulator")]
pub(crate) fn parse_request_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of requests per second"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s:?}: the request rate must be a finite number >= 0"
        ))
    }
}

/// A tolerance: a finite decimal >= 0 (or a quantity such as `50m`).
pub(crate) fn parse_hpa_tolerance(s: &str) -> Result<f64, String> {
    crate::hpa::parse_tolerance(s).map_err(|e| e.to_string())
}

/// A controller instance is a label value: it must be one to match labels.
pub(crate) fn parse_controller_instance(s: &str) -> Result<String, String> {
    let ok = s.len() <= 63
        && !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a valid label value (up to 63 of [A-Za-z0-9-_.], starting and ending alphanumeric)"
        ))
    }
}

/// A ConfigMap name: a DNS subdomain (lowercase alphanumerics, '-' and '.', at most 253).
pub(crate) fn parse_configmap_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a ConfigMap name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers_accept_and_refuse() {
        for (text, want) in [
            ("true", Some(true)),
            ("TRUE", Some(true)),
            (" 1 ", Some(true)),
            ("yes", Some(true)),
            ("false", Some(false)),
            ("0", Some(false)),
            ("No", Some(false)),
            ("", None),
            ("sure", None),
            ("on", None),
        ] {
            assert_eq!(parse_bool(text).ok(), want, "{text:?}");
        }
        // WVA_SCALE_TO_ZERO is stricter: true or false only.
        assert_eq!(parse_scale_to_zero("True"), Ok(true));
        assert!(parse_scale_to_zero("1")
            .unwrap_err()
            .contains("WVA_SCALE_TO_ZERO"));
        for (text, want) in [
            ("1", Some(1)),
            ("4096", Some(4096)),
            ("0", None),
            ("-1", None),
            ("x", None),
        ] {
            assert_eq!(parse_positive_count(text).ok(), want, "{text:?}");
        }
        for (text, want) in [
            ("1s", Some(1000)),
            ("500ms", Some(500)),
            (" 2s ", Some(2000)),
            ("0s", None),
            ("soon", None),
        ] {
            assert_eq!(
                parse_positive_duration(text).ok().map(|d| d.as_millis()),
                want,
                "{text:?}"
            );
        }
    }
}
