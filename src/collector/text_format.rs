//! The Prometheus text exposition format (version 0.0.4, what vLLM's
//! `prometheus_client` and the endpoint picker serve), read line by line.
//!
//! Our own reader instead of a crate: the scrape backend needs only a few
//! series of a page, but the whole page must be valid (a half-written page
//! must not steer scaling), so every line is checked while only the
//! caller's callback looks at values. Nothing is allocated per sample: names
//! and label values borrow from the page (a label value is copied only when
//! it has escapes), and one label buffer is reused for every line.
//!
//! The grammar follows Prometheus' text parser, and `tests/text_format.rs`
//! checks our verdict against `promtool check metrics` on the same inputs:
//! - `# HELP <name> <text>` and `# TYPE <name> [<type>]` (the blank after
//!   `#` optional); any other `#` line is a comment; empty lines are skipped.
//! - `<name>[{<label>="<value>",...}] <value> [<timestamp>]`, names
//!   `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names `[a-zA-Z_][a-zA-Z0-9_]*`,
//!   values with the escapes `\\`, `\"` and `\n`, blanks (spaces and tabs)
//!   allowed between tokens and a trailing comma after the last label,
//!   `__name__` refused as a label name.
//! - the value is a float (`NaN`, `+Inf` and `-Inf` in any case), the
//!   timestamp an integer of milliseconds.

use std::borrow::Cow;

/// A label of one sample.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Label<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: Cow<'a, str>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a, 'l> {
    pub(crate) name: &'a str,
    pub(crate) labels: &'l [Label<'a>],
    pub(crate) value: f64,
    pub(crate) timestamp_ms: Option<i64>,
}

impl Sample<'_, '_> {
    /// The value of a label, if the sample has it.
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_ref())
    }
}

/// Why a page is not valid text format, or why the caller refused a sample,
/// with the 1-based line it happened on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct TextFormatError {
    pub(crate) line: usize,
    pub(crate) problem: String,
}

/// The metric types a `# TYPE` line may name (OpenMetrics' `unknown`,
/// `gaugehistogram`, `stateset` and `info` are not part of this format).
const TYPES: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];

/// Checks every line of `text` and calls `on_sample` for each sample, in
/// page order. The first invalid line, or the first error the callback
/// returns, ends the read with the line number.
pub fn for_each_sample<'a>(
    text: &'a str,
    mut on_sample: impl FnMut(&Sample<'a, '_>) -> Result<(), String>,
) -> Result<(), TextFormatError> {
    let mut labels: Vec<Label<'a>> = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let at = |problem: String| TextFormatError {
            line: index + 1,
            problem,
        };
        // A CRLF page is read as if it had plain newlines.
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim_matches(BLANKS).is_empty() {
            continue;
        }
        if let Some(comment) = line.trim_start_matches(BLANKS).strip_prefix('#') {
            check_comment(comment).map_err(at)?;
            continue;
        }
        labels.clear();
        let sample = parse_sample(line, &mut labels).map_err(at)?;
        on_sample(&sample).map_err(at)?;
    }
    Ok(())
}

const BLANKS: &[char] = &[' ', '\t'];

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_char(c: u8) -> bool {
    is_label_start(c) || c.is_ascii_digit()
}

/// `# HELP` and `# TYPE` lines are checked; other comments are free text.
fn check_comment(comment: &str) -> Result<(), String> {
    // "#HELP x" is a HELP line too, as for Prometheus' own parser.
    let (keyword, rest) = split_token(comment);
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(());
    }
    let (name, rest) = split_token(rest);
    if name.is_empty() {
        return Err(format!("# {keyword} without a metric name"));
    }
    check_metric_name(name)?;
    if keyword == "TYPE" {
        let (kind, extra) = split_token(rest);
        // A TYPE line without a type is untyped, as for Prometheus.
        if !kind.is_empty() && !TYPES.contains(&kind) {
            return Err(format!(
                "# TYPE {name} names the type {kind:?}; expected one of {}",
                TYPES.join(", ")
            ));
        }
        if !extra.trim_matches(BLANKS).is_empty() {
            return Err(format!("# TYPE {name} {kind} is followed by {extra:?}"));
        }
    }
    Ok(())
}

/// The next blank-separated token and what follows it (blanks skipped).
fn split_token(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(BLANKS);
    let end = s.find(BLANKS).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start_matches(BLANKS))
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let valid =
        bytes.first().is_some_and(|c| is_name_start(*c)) && bytes.iter().all(|c| is_name_char(*c));
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid metric name"))
    }
}

/// A cursor over one line.
struct Cursor<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.line.as_bytes().get(self.pos).copied()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// The longest run of bytes matching `first` then `rest`.
    fn take_name(&mut self, first: fn(u8) -> bool, rest: fn(u8) -> bool) -> Option<&'a str> {
        let start = self.pos;
        if !self.peek().is_some_and(first) {
            return None;
        }
        self.pos += 1;
        while self.peek().is_some_and(rest) {
            self.pos += 1;
        }
        Some(&self.line[start..self.pos])
    }

    /// A quoted label value, the opening quote already consumed.
    fn take_quoted(&mut self) -> Result<Cow<'a, str>, String> {
        let start = self.pos;
        let bytes = self.line.as_bytes();
        let mut owned: Option<String> = None;
        let mut copied_to = start;
        while let Some(&c) = bytes.get(self.pos) {
            match c {
                b'"' => {
                    let value = match owned {
                        Some(mut s) => {
                            s.push_str(&self.line[copied_to..self.pos]);
                            Cow::Owned(s)
                        }
                        None => Cow::Borrowed(&self.line[start..self.pos]),
                    };
                    self.pos += 1;
                    return Ok(value);
                }
                b'\\' => {
                    let unescaped = match bytes.get(self.pos + 1) {
                        Some(b'\\') => '\\',
                        Some(b'"') => '"',
                        Some(b'n') => '\n',
                        Some(&other) => {
                            return Err(format!(
                                "invalid escape \\{} in a label value",
                                char::from(other).escape_default()
                            ))
                        }
                        None => return Err("a label value ends in a lone \\".to_owned()),
                    };
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.line[copied_to..self.pos]);
                    s.push(unescaped);
                    self.pos += 2;
                    copied_to = self.pos;
                }
                _ => self.pos += 1,
            }
        }
        Err(format!(
            "the label value starting {:?} has no closing quote",
            truncate(&self.line[start..])
        ))
    }

    /// The next blank-separated token.
    fn take_token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| c != b' ' && c != b'\t') {
            self.pos += 1;
        }
        &self.line[start..self.pos]
    }
}

/// At most 40 characters of a text for an error message.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn parse_sample<'a, 'l>(
    line: &'a str,
    labels: &'l mut Vec<Label<'a>>,
) -> Result<Sample<'a, 'l>, String> {
    let mut cur = Cursor { line, pos: 0 };
    cur.skip_blanks();
    let name = cur.take_name(is_name_start, is_name_char).ok_or_else(|| {
        format!(
            "expected a metric name at the start of {:?}",
            truncate(line.trim_start_matches(BLANKS))
        )
    })?;
    let after_name = cur.pos;
    cur.skip_blanks();
    // The closing brace separates the labels from the value by itself.
    let mut separated = cur.pos > after_name;
    if cur.peek() == Some(b'{') {
        cur.pos += 1;
        parse_labels(&mut cur, name, labels)?;
        cur.skip_blanks();
        separated = true;
    }
    if !separated && cur.peek().is_some() {
        return Err(format!(
            "{name}: expected a blank before the value, found {:?}",
            truncate(&line[cur.pos..])
        ));
    }
    let value_text = cur.take_token();
    if value_text.is_empty() {
        return Err(format!("{name} has no value"));
    }
    let value = parse_float(value_text)
        .ok_or_else(|| format!("{name} has the value {value_text:?}, which is not a number"))?;
    cur.skip_blanks();
    let timestamp_ms = match cur.take_token() {
        "" => None,
        t => Some(t.parse::<i64>().map_err(|_| {
            format!("{name} has the timestamp {t:?}, which is not an integer of milliseconds")
        })?),
    };
    cur.skip_blanks();
    if cur.peek().is_some() {
        return Err(format!(
            "{name}: unexpected {:?} after the value and timestamp",
            truncate(&line[cur.pos..])
        ));
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// Labels up to and including the closing brace (the opening one consumed).
fn parse_labels<'a>(
    cur: &mut Cursor<'a>,
    metric: &str,
    labels: &mut Vec<Label<'a>>,
) -> Result<(), String> {
    loop {
        cur.skip_blanks();
        if cur.peek() == Some(b'}') {
            cur.pos += 1;
            return Ok(());
        }
        let name = cur
            .take_name(is_label_start, is_label_char)
            .ok_or_else(|| {
                format!(
                    "{metric}: expected a label name or '}}', found {:?}",
                    truncate(&cur.line[cur.pos..])
                )
            })?;
        cur.skip_blanks();
        if cur.peek() != Some(b'=') {
            return Err(format!("{metric}: expected '=' after the label {name}"));
        }
        cur.pos += 1;
        cur.skip_blanks();
        if cur.peek() != Some(b'"') {
            return Err(format!(
                "{metric}: the value of the label {name} is not quoted"
            ));
        }
        cur.pos += 1;
        let value = cur.take_quoted()?;
        if name == "__name__" {
            return Err(format!("{metric}: the label name __name__ is reserved"));
        }
        if labels.iter().any(|l| l.name == name) {
            return Err(format!("{metric}: the label {name} appears twice"));
        }
        labels.push(Label { name, value });
        cur.skip_blanks();
        match cur.peek() {
            Some(b',') => cur.pos += 1,
            Some(b'}') => {}
            _ => {
                return Err(format!(
                    "{metric}: expected ',' or '}}' after the label {name}"
                ))
            }
        }
    }
}

/// A float as Prometheus reads it: decimal or exponent notation, or `NaN`,
/// `Inf`, `+Inf`, `-Inf` in any case (Go's `ParseFloat`). Rust's parser
/// also takes `infinity`, like Go's.
fn parse_float(text: &str) -> Option<f64> {
    // Rust accepts "1." and ".5" and so does Go; both reject "0x10", "1_0".
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every sample of a page as (name, labels, value, timestamp).
    type Row = (String, Vec<(String, String)>, f64, Option<i64>);

    fn read(text: &str) -> Result<Vec<Row>, TextFormatError> {
        let mut rows = Vec::new();
        for_each_sample(text, |s| {
            rows.push((
                s.name.to_owned(),
                s.labels
                    .iter()
                    .map(|l| (l.name.to_owned(), l.value.to_string()))
                    .collect(),
                s.value,
                s.timestamp_ms,
            ));
            Ok(())
        })?;
        Ok(rows)
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_samples_labels_values_and_timestamps() {
        let page = "# HELP vllm:num_requests_waiting Requests waiting.\n\
# TYPE vllm:num_requests_waiting gauge\n\
vllm:num_requests_waiting{engine=\"0\",model_name=\"meta/llama\"} 2.0\n\
\n\
   up 1 1700000000000\n\
esc{a=\"x\\\"y\\\\z\\nw\",} -3e-2\r\n\
spaced { a = \"1\" , b=\"2\" }\t+Inf\n\
nan NaN\n";
        let rows = read(page).unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0],
            (
                "vllm:num_requests_waiting".to_owned(),
                labels(&[("engine", "0"), ("model_name", "meta/llama")]),
                2.0,
                None
            )
        );
        assert_eq!(
            rows[1],
            ("up".to_owned(), vec![], 1.0, Some(1_700_000_000_000))
        );
        assert_eq!(rows[2].1, labels(&[("a", "x\"y\\z\nw")]));
        assert_eq!(rows[2].2, -0.03);
        assert_eq!(rows[3].1, labels(&[("a", "1"), ("b", "2")]));
        assert_eq!(rows[3].2, f64::INFINITY);
        assert!(rows[4].2.is_nan());
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "ok 1\nbad{a=\"b\" 1\n",
                2,
                "expected ',' or '}' after the label a",
            ),
            ("x{a=\"b} 1\n", 1, "no closing quote"),
            ("x{a=b} 1\n", 1, "not quoted"),
            ("x{a\"b\"} 1\n", 1, "expected '=' after the label a"),
            ("x{1a=\"b\"} 1\n", 1, "expected a label name"),
            ("x{a=\"1\",a=\"2\"} 1\n", 1, "the label a appears twice"),
            ("x{a=\"\\t\"} 1\n", 1, "invalid escape"),
            ("x\n", 1, "x has no value"),
            ("x{}\n", 1, "x has no value"),
            ("x zero\n", 1, "not a number"),
            ("x 0x10\n", 1, "not a number"),
            ("x 1 1.5\n", 1, "not an integer of milliseconds"),
            ("x 1 2 3\n", 1, "unexpected \"3\""),
            ("x{__name__=\"y\"} 1\n", 1, "reserved"),
            ("1x 1\n", 1, "expected a metric name"),
            (
                "\n\n# TYPE x flavour\nx 1\n",
                3,
                "names the type \"flavour\"",
            ),
            ("# TYPE x gauge extra\n", 1, "is followed by"),
            ("# HELP 1x text\n", 1, "not a valid metric name"),
            ("# TYPE\n", 1, "without a metric name"),
            ("#HELP 1x text\n", 1, "not a valid metric name"),
        ];
        for (page, line, words) in cases {
            let err = read(page).expect_err(page);
            assert_eq!(err.line, *line, "{page:?}: {err}");
            assert!(err.problem.contains(words), "{page:?}: {err}");
        }
    }

    #[test]
    fn comments_are_free_text() {
        let page = "# a comment { with \" anything\n#HELP x help\n# TYPE x\n# EOF\nx 1\n";
        assert_eq!(read(page).unwrap().len(), 1);
        assert_eq!(read("").unwrap(), vec![]);
    }

    #[test]
    fn the_callback_can_refuse_a_sample_and_gets_its_line() {
        let err = for_each_sample("a 1\nb -1\n", |s| {
            if s.value < 0.0 {
                Err(format!("{} is negative", s.name))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "line 2: b is negative");
    }

    fn metric_name() -> impl Strategy<Value = String> {
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}"
    }

    fn label_value() -> impl Strategy<Value = String> {
        // Quotes, backslashes, newlines, braces and non-ASCII included.
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('\n'),
                Just('}'),
                Just(','),
                Just('é'),
                proptest::char::range(' ', '~'),
            ],
            0..10,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn escape(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    proptest! {
        /// Whatever the page, the reader returns; it never panics.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,200}") {
            let _ = read(&text);
        }

        /// Near-valid pages (valid lines with one byte changed) likewise.
        #[test]
        fn mutated_pages_are_read_or_refused(
            at in 0usize..80,
            byte in prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b'\\'), Just(b'='), Just(b','), Just(b' '), Just(b'\n'), Just(b'#'), Just(b'e')],
        ) {
            let page = "# TYPE m gauge\nm{a=\"x\",b=\"y\\\"z\"} 1.5e3 12\n";
            let mut bytes = page.as_bytes().to_vec();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = read(&text);
            }
        }

        /// What is written in the format reads back equal.
        #[test]
        fn written_samples_read_back_equal(
            rows in proptest::collection::vec(
                (
                    metric_name(),
                    proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", label_value(), 0..4),
                    prop_oneof![any::<f64>().prop_filter("finite", |v| v.is_finite()), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
                    proptest::option::of(any::<i64>()),
                ),
                0..6,
            ),
            trailing_comma in any::<bool>(),
        ) {
            let mut page = String::new();
            for (name, labels, value, ts) in &rows {
                page.push_str(name);
                if !labels.is_empty() {
                    let body: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                    page.push('{');
                    page.push_str(&body.join(","));
                    if trailing_comma { page.push(','); }
                    page.push('}');
                }
                page.push_str(&format!(" {value:?}"));
                if let Some(ts) = ts { page.push_str(&format!(" {ts}")); }
                page.push('\n');
            }
            let got = read(&page).map_err(|e| TestCaseError::fail(format!("{page:?}: {e}")))?;
            prop_assert_eq!(got.len(), rows.len());
            for (got, (name, labels, value, ts)) in got.iter().zip(&rows) {
                prop_assert_eq!(&got.0, name);
                let want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(&got.1, &want);
                prop_assert_eq!(got.2, *value);
                prop_assert_eq!(got.3, *ts);
            }
        }
    }
}
