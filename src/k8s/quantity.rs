//! Kubernetes `resource.Quantity` strings for the values we serve, and the reverse computation
//! the HPA does on them.
//!
//! We hold every served value as an `i64` count of milli-units: that is the precision the HPA
//! reads (`Quantity.MilliValue()`), so computing in milli-units and printing exactly what
//! Kubernetes would print keeps the round trip lossless and predictable.

/// DecimalSI suffixes by power of 1000, starting at milli (10^-3) and ending at exa (10^18).
const DECIMAL_SUFFIXES: [&str; 8] = ["m", "", "k", "M", "G", "T", "P", "E"];

/// Canonical Kubernetes string of a DecimalSI quantity given in milli units, as
/// `resource.Quantity.String()` prints it: the largest exponent (multiple of 3, from -3 up to 18)
/// that keeps an integer mantissa, with suffix m, "", k, M, G, T, P, E.
/// 666 -> "666m", 1500 -> "1500m", 2000 -> "2", 0 -> "0", 1_000_000 -> "1k", -1500 -> "-1500m".
pub fn format_milli(milli: i64) -> String {
    let mut out = String::with_capacity(24);
    write_milli(&mut out, milli);
    out
}

/// Write into an existing buffer without allocating (hot path: one call per served item).
pub(crate) fn write_milli(out: &mut String, milli: i64) {
    if milli == 0 {
        out.push('0');
        return;
    }
    // unsigned_abs: i64::MIN has no positive i64 counterpart.
    let mut mantissa = milli.unsigned_abs();
    let mut suffix = DECIMAL_SUFFIXES[0];
    for next in &DECIMAL_SUFFIXES[1..] {
        if mantissa % 1000 != 0 {
            break;
        }
        mantissa /= 1000;
        suffix = next;
    }
    if milli < 0 {
        out.push('-');
    }
    push_decimal(out, mantissa);
    out.push_str(suffix);
}

/// Appends the decimal digits of `n`, through a stack buffer instead of a temporary `String`.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

/// Why a quantity string could not be turned into milli-units. Inputs are kept (shortened when
/// very long) so the message can say which string was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity is empty")]
    Empty,
    #[error("quantity {0:?} must be a decimal number (optional sign, digits, optional fraction) followed by an optional suffix")]
    Format(String),
    #[error("quantity {quantity:?} has unknown suffix {suffix:?}: expected one of n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3")]
    Suffix { quantity: String, suffix: String },
    #[error("quantity {0:?} is out of range: its milli value does not fit in 64 bits")]
    OutOfRange(String),
}

/// What the HPA computes from a quantity string: `Quantity.MilliValue()` (ceil of value x 1000).
/// Parses the Kubernetes quantity grammar: optional sign, digits, optional fraction, then a
/// suffix among n, u, m, "", k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an e/E exponent.
///
/// The arithmetic is exact (no floating point), so long digit strings and large exponents round
/// correctly. Where we differ from Go, on purpose:
/// - negative values round away from zero (`"-1.5m"` -> -2), as Go's common int64 path does; Go's
///   big-decimal path (more than 18 digits, or finer than nano) rounds some of them differently;
/// - a result beyond `i64` is an error, where Go silently wraps or saturates;
/// - a number needs at least one digit: Go's lenient scanner reads `"."`, `"-"` or `"m"` as zero;
/// - exponents are taken at their full 64-bit value, where Go truncates them to 32 bits.
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (integer, rest) = split_digits(unsigned);
    let (fraction, suffix) = match rest.strip_prefix('.') {
        Some(after_dot) => split_digits(after_dot),
        None => ("", rest),
    };
    if integer.is_empty() && fraction.is_empty() {
        return Err(QuantityError::Format(excerpt(s)));
    }
    let scale = Scale::of_suffix(suffix).ok_or_else(|| QuantityError::Suffix {
        quantity: excerpt(s),
        suffix: excerpt(suffix),
    })?;
    let digits = DigitString {
        head: integer.as_bytes(),
        tail: fraction.as_bytes(),
    };
    let magnitude =
        milli_magnitude(digits, scale).ok_or_else(|| QuantityError::OutOfRange(excerpt(s)))?;
    let signed = if negative {
        -i128::from(magnitude)
    } else {
        i128::from(magnitude)
    };
    i64::try_from(signed).map_err(|_| QuantityError::OutOfRange(excerpt(s)))
}

/// Splits off the leading ASCII digits.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    // `end` is at an ASCII byte or the end of the string: a char boundary.
    s.split_at(end)
}

/// What a suffix multiplies the number by: 10^pow10 x 2^pow2.
#[derive(Debug, Clone, Copy)]
struct Scale {
    pow10: i64,
    pow2: u32,
}

impl Scale {
    fn of_suffix(suffix: &str) -> Option<Scale> {
        let decimal = |pow10| Some(Scale { pow10, pow2: 0 });
        let binary = |pow2| Some(Scale { pow10: 0, pow2 });
        match suffix {
            "n" => decimal(-9),
            "u" => decimal(-6),
            "m" => decimal(-3),
            "" => decimal(0),
            "k" => decimal(3),
            "M" => decimal(6),
            "G" => decimal(9),
            "T" => decimal(12),
            "P" => decimal(15),
            "E" => decimal(18),
            "Ki" => binary(10),
            "Mi" => binary(20),
            "Gi" => binary(30),
            "Ti" => binary(40),
            "Pi" => binary(50),
            "Ei" => binary(60),
            _ => {
                // `e3`, `E-2`, `e+5`: Go's ParseInt, which like Rust's accepts one leading sign.
                let exponent = suffix
                    .strip_prefix('e')
                    .or_else(|| suffix.strip_prefix('E'))?;
                exponent.parse::<i64>().ok().and_then(decimal)
            }
        }
    }
}

/// A digit string kept as two pieces (the digits written before and after the decimal point),
/// so that it can be cut anywhere without copying.
#[derive(Debug, Clone, Copy)]
struct DigitString<'a> {
    head: &'a [u8],
    tail: &'a [u8],
}

impl<'a> DigitString<'a> {
    fn len(self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The first `at` digits and the rest (`at` is clamped to the length).
    fn split_at(self, at: usize) -> (DigitString<'a>, DigitString<'a>) {
        if at <= self.head.len() {
            let (before, after) = self.head.split_at(at);
            (
                DigitString {
                    head: before,
                    tail: &[],
                },
                DigitString {
                    head: after,
                    tail: self.tail,
                },
            )
        } else {
            let cut = (at - self.head.len()).min(self.tail.len());
            let (before, after) = self.tail.split_at(cut);
            (
                DigitString {
                    head: self.head,
                    tail: before,
                },
                DigitString {
                    head: after,
                    tail: &[],
                },
            )
        }
    }

    /// The digit values in order.
    fn digits(self) -> impl DoubleEndedIterator<Item = u8> + 'a {
        self.head.iter().chain(self.tail).map(|b| b - b'0')
    }
}

/// The largest magnitude the result may have (that of `i64::MIN`); beyond it parsing fails.
const MAX_MAGNITUDE: u128 = 1 << 63;

/// ceil(|number| x scale x 1000), or `None` when it exceeds [`MAX_MAGNITUDE`].
///
/// The digit string is cut at the decimal point moved by the suffix's power of ten (plus 3 for
/// milli): the part before is an integer to multiply by 2^pow2, the part after a fraction whose
/// product with 2^pow2 adds its integer part, plus one if anything fractional remains (ceil).
fn milli_magnitude(digits: DigitString<'_>, scale: Scale) -> Option<u64> {
    let len = i128::try_from(digits.len()).ok()?;
    let integer_len = i128::try_from(digits.head.len()).ok()?;
    // Position of the decimal point in the digit string once scaled to milli units; it may lie
    // far outside the string for large exponents.
    let point = integer_len + i128::from(scale.pow10) + 3;
    let factor = 1u128 << scale.pow2;

    let cut = usize::try_from(point.clamp(0, len)).ok()?;
    let (whole_digits, fraction_digits) = digits.split_at(cut);
    let trailing_zeros = usize::try_from((point - len).max(0)).unwrap_or(usize::MAX);
    let whole = integer_part(whole_digits.digits(), trailing_zeros)?;
    let leading_zeros = usize::try_from((-point).max(0)).unwrap_or(usize::MAX);
    let (carry, inexact) = fraction_times(fraction_digits.digits(), leading_zeros, factor);

    let total = whole
        .checked_mul(factor)?
        .checked_add(carry)?
        .checked_add(u128::from(inexact))?;
    if total > MAX_MAGNITUDE {
        return None;
    }
    u64::try_from(total).ok()
}

/// The integer formed by `digits` followed by `trailing_zeros` zeros, if it fits the result.
fn integer_part(digits: impl Iterator<Item = u8>, trailing_zeros: usize) -> Option<u128> {
    let mut value: u128 = 0;
    for digit in digits {
        value = value.checked_mul(10)?.checked_add(u128::from(digit))?;
        if value > MAX_MAGNITUDE {
            return None;
        }
    }
    if value == 0 {
        return Some(0);
    }
    for _ in 0..trailing_zeros {
        value = value.checked_mul(10)?;
        if value > MAX_MAGNITUDE {
            return None;
        }
    }
    Some(value)
}

/// Multiplies the fraction 0.(`leading_zeros` zeros)(`digits`) by `factor` (at most 2^60) by
/// schoolbook multiplication from the last digit: returns the integer part of the product and
/// whether a non-zero fractional part remains.
fn fraction_times(
    digits: impl DoubleEndedIterator<Item = u8>,
    leading_zeros: usize,
    factor: u128,
) -> (u128, bool) {
    let mut carry: u128 = 0;
    let mut inexact = false;
    for digit in digits.rev() {
        let product = u128::from(digit) * factor + carry;
        inexact |= product % 10 != 0;
        carry = product / 10;
    }
    // The carry is below 2^64, so after 20 more places it is zero and further zeros change
    // nothing: the loop stays short even for exponents like e-1000000000.
    for _ in 0..leading_zeros.min(40) {
        inexact |= carry % 10 != 0;
        carry /= 10;
    }
    (carry, inexact)
}

/// Keeps error payloads small even for hostile multi-megabyte inputs.
fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut chars = s.chars();
    let mut shown: String = chars.by_ref().take(MAX_CHARS).collect();
    if chars.next().is_some() {
        shown.push_str("...");
    }
    shown
}

/// The ratio served as `wva_desired_ratio`, in milli units: floor(desired*1000/ready); when ready
/// is 0, desired*1000.
///
/// Rounded DOWN so that the HPA's `ceil(ready * value)` gives back exactly `desired` (DESIGN
/// section 3): with r ready pods the served value v satisfies desired - r/1000 < r*v <= desired,
/// so for r < 1000 the ceiling is `desired`. Rounding up instead would overshoot by one replica
/// whenever the division is inexact.
///
/// One more milli comes off when the division is exact but the HPA's float64 arithmetic
/// overshoots: it computes `ceil(milli / 1000.0 * ready)`, and for 249 desired over 15 ready the
/// exact 16.6 becomes 16.600000000000001 in binary, times 15 rounds to 249.00000000000003, and the
/// ceiling says 250. Serving 16.599 instead gives 248.985, whose ceiling is 249. This is exact for
/// every pair with ready <= 1000 (checked exhaustively in the tests); beyond that, milli precision
/// itself cannot express every ratio, and the HPA's tolerance band absorbs the difference.
pub(crate) fn desired_ratio_milli(desired: u32, ready: u32) -> i64 {
    let desired_milli = i64::from(desired) * 1000;
    if ready == 0 {
        return desired_milli;
    }
    let floor = desired_milli / i64::from(ready);
    if hpa_value_replicas(floor, ready) > f64::from(desired) {
        floor - 1
    } else {
        floor
    }
}

/// The HPA's replica count for a `Value` target of 1 (`targetUsage` = 1000 milli):
/// `usageRatio = usage / targetUsage` in float64, then `ceil(usageRatio * readyPods)`.
fn hpa_value_replicas(milli: i64, ready: u32) -> f64 {
    let usage_ratio = milli as f64 / 1000.0;
    (usage_ratio * f64::from(ready)).ceil()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_kubernetes() {
        let cases: &[(i64, &str)] = &[
            (0, "0"),
            (1, "1m"),
            (-1, "-1m"),
            (666, "666m"),
            (1500, "1500m"),
            (-1500, "-1500m"),
            (999, "999m"),
            (1000, "1"),
            (2000, "2"),
            (-2000, "-2"),
            (10_000, "10"),
            (100_000, "100"),
            (1_000_000, "1k"),
            (1_500_000, "1500"),
            (1_000_500, "1000500m"),
            (12_000_000, "12k"),
            (1_000_000_000, "1M"),
            (1_000_000_000_000, "1G"),
            (1_000_000_000_000_000, "1T"),
            (1_000_000_000_000_000_000, "1P"),
            (9_000_000_000_000_000_000, "9P"),
            (i64::MAX, "9223372036854775807m"),
            (i64::MIN, "-9223372036854775808m"),
            (-1_000_000_000_000_000_000, "-1P"),
        ];
        for &(milli, expected) in cases {
            assert_eq!(format_milli(milli), expected, "milli {milli}");
        }
    }

    #[test]
    fn write_milli_appends() {
        let mut out = String::from("value=");
        write_milli(&mut out, 666);
        out.push(',');
        write_milli(&mut out, 3000);
        assert_eq!(out, "value=666m,3");
    }

    #[test]
    fn parses_like_milli_value() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("000", 0),
            ("0m", 0),
            ("0Ki", 0),
            ("0e99", 0),
            ("0.0", 0),
            ("1", 1000),
            ("+1", 1000),
            ("-1", -1000),
            ("1.5", 1500),
            ("1.", 1000),
            (".5", 500),
            ("0.0001", 1),
            ("0.0010001", 2),
            ("0.001", 1),
            ("666m", 666),
            ("1500m", 1500),
            ("1.5m", 2),
            ("-1.5m", -2),
            ("100n", 1),
            ("1000000n", 1),
            ("1000001n", 2),
            ("1u", 1),
            ("1k", 1_000_000),
            ("1.5k", 1_500_000),
            ("1M", 1_000_000_000),
            ("1G", 1_000_000_000_000),
            ("1T", 1_000_000_000_000_000),
            ("1P", 1_000_000_000_000_000_000),
            ("9.2P", 9_200_000_000_000_000_000),
            ("1Ki", 1_024_000),
            ("1Mi", 1_048_576_000),
            ("1.5Ki", 1_536_000),
            ("0.5Mi", 524_288_000),
            ("0.0001Ki", 103),     // 0.1024 -> ceil 103
            ("0.000001Mi", 1_049), // 1.048576 -> ceil 1049
            ("1Ti", 1_099_511_627_776_000),
            ("1Pi", 1_125_899_906_842_624_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e+3", 1_000_000),
            ("1e-3", 1),
            ("1.5e-4", 1),
            ("15e-5", 1),
            ("1e-1000000000", 1),
            ("-1e-1000000000", -1),
            ("12e-1", 1200),
            ("00012.50", 12_500),
            ("9223372036854775807m", i64::MAX),
            ("-9223372036854775808m", i64::MIN),
            ("9223372036854775.807", i64::MAX),
            ("9223372036854775.8069", i64::MAX),
            ("0.00000000000000000000000000000000000000000000000001", 1),
            ("1000000000000000000000000000000000000000e-36", 1_000_000),
        ];
        for &(input, expected) in cases {
            assert_eq!(parse_milli(input), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn rejects_bad_quantities() {
        assert_eq!(parse_milli(""), Err(QuantityError::Empty));
        let long = "9".repeat(10_000);
        let bad_format = [
            ".", "-", "+", "m", "k", "Ki", "e3", "-.", "+-1", "--1", " 1",
        ];
        let bad_suffix = [
            "1 ",
            "1ki",
            "1KI",
            "1mi",
            "1e",
            "1E+",
            "1e1.5",
            "1.5.5",
            "1..5",
            "1,5",
            "1K",
            "1x",
            "1Kib",
            "1mm",
            "1e3m",
            "1é",
            "1\u{0}",
            "1e99999999999999999999",
        ];
        let out_of_range = [
            "9223372036854775.808",
            "9223372036854775.8071",
            "-9223372036854775.809",
            "10P",
            "9E",
            "1e16",
            "8Ei",
            "9223372036854775807",
            "1e1000000000",
            long.as_str(),
        ];
        for input in bad_format {
            assert!(
                matches!(parse_milli(input), Err(QuantityError::Format(_))),
                "{input:?}: {:?}",
                parse_milli(input)
            );
        }
        for input in bad_suffix {
            assert!(
                matches!(parse_milli(input), Err(QuantityError::Suffix { .. })),
                "{input:?}: {:?}",
                parse_milli(input)
            );
        }
        for input in out_of_range {
            let result = parse_milli(input);
            assert!(
                matches!(result, Err(QuantityError::OutOfRange(_))),
                "{:?}: {result:?}",
                &input[..input.len().min(30)]
            );
        }
        let message = parse_milli(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn format_then_parse_round_trips() {
        let mut samples: Vec<i64> =
            vec![0, 1, -1, 999, 1000, 1001, i64::MAX, i64::MIN, i64::MIN + 1];
        for exponent in 0..19 {
            let power = 10i64.pow(exponent);
            samples.extend([
                power,
                -power,
                power - 1,
                power + 1,
                3 * power,
                7 * power + 666,
            ]);
        }
        samples.extend((1..=5_000).map(|i| i * 37));
        for milli in samples {
            let text = format_milli(milli);
            assert_eq!(
                parse_milli(&text),
                Ok(milli),
                "{milli} formatted as {text:?}"
            );
        }
    }

    #[test]
    fn desired_ratio_examples() {
        assert_eq!(desired_ratio_milli(2, 3), 666);
        assert_eq!(format_milli(desired_ratio_milli(2, 3)), "666m");
        assert_eq!(desired_ratio_milli(3, 2), 1500);
        assert_eq!(desired_ratio_milli(4, 2), 2000);
        assert_eq!(format_milli(desired_ratio_milli(4, 2)), "2");
        // Exact division whose float64 product overshoots: one milli less (see the doc).
        assert_eq!(desired_ratio_milli(249, 15), 16_599);
        assert_eq!(desired_ratio_milli(0, 5), 0);
        assert_eq!(desired_ratio_milli(0, 0), 0);
        assert_eq!(desired_ratio_milli(7, 0), 7000);
        assert_eq!(desired_ratio_milli(u32::MAX, 0), i64::from(u32::MAX) * 1000);
        assert_eq!(desired_ratio_milli(u32::MAX, 1), i64::from(u32::MAX) * 1000);
    }

    /// The HPA's computation for a `Value` target of 1 (`targetUsage` = 1000 milli): it reads
    /// our quantity with `MilliValue()`, computes `usageRatio = usage / targetUsage` in float64
    /// and `replicas = ceil(usageRatio * readyPods)`, or `ceil(usageRatio)` with no ready pod.
    fn hpa_replicas(served: &str, ready: u32) -> f64 {
        let usage = parse_milli(served).expect("we serve valid quantities");
        let usage_ratio = usage as f64 / 1000.0;
        if ready == 0 {
            usage_ratio.ceil()
        } else {
            (usage_ratio * f64::from(ready)).ceil()
        }
    }

    #[test]
    fn hpa_round_trip_gives_back_desired_for_every_pair() {
        let mut served = String::with_capacity(24);
        for ready in 1..=1000u32 {
            for desired in 1..=1000u32 {
                served.clear();
                write_milli(&mut served, desired_ratio_milli(desired, ready));
                let replicas = hpa_replicas(&served, ready);
                assert_eq!(
                    replicas,
                    f64::from(desired),
                    "desired {desired}, ready {ready}, served {served:?}"
                );
            }
        }
    }

    #[test]
    fn hpa_at_zero_ready_replicas_gets_desired_itself() {
        for desired in 0..=1000u32 {
            let served = format_milli(desired_ratio_milli(desired, 0));
            assert_eq!(parse_milli(&served), Ok(i64::from(desired) * 1000));
            assert_eq!(hpa_replicas(&served, 0), f64::from(desired), "{served}");
        }
    }

    proptest! {
        #[test]
        fn any_milli_round_trips(milli in any::<i64>()) {
            prop_assert_eq!(parse_milli(&format_milli(milli)), Ok(milli));
        }

        #[test]
        fn parse_never_panics(input in "[-+]?[0-9]{0,25}(\\.[0-9]{0,25})?([numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]{1,12})?") {
            let _ = parse_milli(&input);
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(input in any::<String>()) {
            let _ = parse_milli(&input);
        }

        /// Exact reference check on small decimals: ceil(value * 1000) computed with integers.
        #[test]
        fn decimal_fractions_round_up_to_milli(whole in 0u64..1_000_000, frac in 0u64..1_000_000) {
            let text = format!("{whole}.{frac:06}");
            let micro = whole * 1_000_000 + frac;
            let expected = i64::try_from(micro.div_ceil(1000)).unwrap();
            prop_assert_eq!(parse_milli(&text), Ok(expected));
        }
    }
}
