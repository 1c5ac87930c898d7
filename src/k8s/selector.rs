//! Kubernetes label selectors (`labelSelector=` query parameter), parsed, validated and matched
//! the way `k8s.io/apimachinery/pkg/labels.Parse` does it.
//!
//! Why a faithful copy of the Kubernetes semantics rather than a simpler grammar: the HPA and users
//! write selectors for the Prometheus Adapter and expect the same answers from us. A selector that
//! Kubernetes accepts must be accepted here, one it rejects must be rejected (400), and `!=` /
//! `notin` must keep matching objects that lack the label.
//!
//! Grammar (whitespace is space, tab, CR or LF and may surround every token):
//!
//! ```text
//! selector    ::= "" | requirement ( "," requirement )*
//! requirement ::= "!" KEY | KEY | KEY ( "=" | "==" | "!=" | ">" | "<" ) VALUE
//!               | KEY ( "in" | "notin" ) "(" VALUE? ( "," VALUE? )* ")"
//! ```
//!
//! Quirks kept from Kubernetes on purpose: `in`/`notin` are keywords only in operator position
//! (`in in (notin)` is a valid selector); `key=` means "equal to the empty string"; `key in ()`
//! and empty list entries (`(a,,b)`) stand for the empty string value.
//!
//! One deliberate deviation: Go's lexer stops at a NUL byte and silently ignores everything after
//! it. Here a NUL byte is an ordinary character, which then fails key/value validation, so such
//! input is rejected instead of being half-read.

mod parse;
mod validate;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::str::FromStr;

use parse::Parser;

/// The relation a [`Requirement`] demands between a label and its values.
///
/// Kubernetes distinguishes `=` from `==` only in how it prints them; both parse to
/// [`Operator::Equals`] here and print as `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One comma-separated term of a selector. All terms must match for the selector to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    pub(crate) key: String,
    pub(crate) operator: Operator,
    /// Sorted and deduplicated, so that matching can binary-search and the printed form is
    /// canonical. Empty for `Exists`/`DoesNotExist`, exactly one value for `=`, `!=`, `>`, `<`.
    pub(crate) values: Vec<String>,
}

/// A parsed, validated label selector. The empty selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Stably sorted by key, as Kubernetes sorts them, so that equal selectors compare equal and
    /// print the same way.
    requirements: Vec<Requirement>,
}

/// Why a selector string was rejected; the message is meant for the 400 response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SelectorError {
    pub(crate) message: String,
}

impl SelectorError {
    fn new(message: String) -> Self {
        SelectorError { message }
    }
}

/// Read access to a set of labels, so one selector can be matched against whatever map type the
/// caller already holds, without copying it.
pub trait Labels {
    /// The value of label `key`, or `None` when the label is absent.
    fn label(&self, key: &str) -> Option<&str>;
}

impl<K: Borrow<str> + Ord, V: AsRef<str>> Labels for BTreeMap<K, V> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

impl<K: Borrow<str> + Hash + Eq, V: AsRef<str>, S: BuildHasher> Labels for HashMap<K, V, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

/// A list of pairs; if a key repeats, its first occurrence wins.
impl<K: AsRef<str>, V: AsRef<str>> Labels for [(K, V)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Labels for [(K, V); N] {
    fn label(&self, key: &str) -> Option<&str> {
        self.as_slice().label(key)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Labels for Vec<(K, V)> {
    fn label(&self, key: &str) -> Option<&str> {
        self.as_slice().label(key)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

impl Requirement {
    /// Whether `labels` satisfy this requirement. As in Kubernetes, `!=` and `notin` match when
    /// the label is absent, while `=`, `in`, `>` and `<` need it present.
    pub(crate) fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.label(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.has_value(v)),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(|v| self.has_value(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => value.is_some_and(|v| self.compares(v)),
        }
    }

    fn has_value(&self, value: &str) -> bool {
        self.values
            .binary_search_by(|candidate| candidate.as_str().cmp(value))
            .is_ok()
    }

    /// `>`/`<`: both sides must parse as 64-bit integers (Go's `strconv.ParseInt`, which like
    /// Rust's parser accepts a leading sign); a label that is not a number never matches.
    fn compares(&self, label_value: &str) -> bool {
        let (Ok(actual), [bound]) = (label_value.parse::<i64>(), self.values.as_slice()) else {
            return false;
        };
        let Ok(bound) = bound.parse::<i64>() else {
            return false;
        };
        match self.operator {
            Operator::GreaterThan => actual > bound,
            Operator::LessThan => actual < bound,
            _ => false,
        }
    }
}

/// Prints the requirement as Kubernetes' `Requirement.String()` does (`==` printed as `=`).
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let infix = match self.operator {
            Operator::Exists => return f.write_str(&self.key),
            Operator::DoesNotExist => return write!(f, "!{}", self.key),
            Operator::Equals => "=",
            Operator::NotEquals => "!=",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::In => " in (",
            Operator::NotIn => " notin (",
        };
        f.write_str(&self.key)?;
        f.write_str(infix)?;
        for (i, value) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(value)?;
        }
        if matches!(self.operator, Operator::In | Operator::NotIn) {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl LabelSelector {
    /// Parses and validates a selector; an empty or blank string selects everything.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Parser::new(s).parse_selector()?;
        // Stable sort: requirements on the same key keep their written order.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// The selector without requirements, which matches every label set.
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// True when the selector has no requirements (selects everything).
    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub(crate) fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when every requirement matches `labels`.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// If the selector pins `key` to exactly one value (`key=v`, `key==v`, `key in (v)`), that
    /// value. Used to index lookups: every label set this selector matches has `key` set to the
    /// returned value. The converse does not hold (other requirements may still reject), so
    /// callers must still run [`LabelSelector::matches`] on the candidates.
    pub(crate) fn exact_value(&self, key: &str) -> Option<&str> {
        self.requirements
            .iter()
            .filter(|r| r.key == key && matches!(r.operator, Operator::Equals | Operator::In))
            .find_map(|r| match r.values.as_slice() {
                [value] => Some(value.as_str()),
                _ => None,
            })
    }
}

/// The canonical Kubernetes form: requirements joined by `,` in key order. Parsing it back
/// yields an equal selector.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            fmt::Display::fmt(requirement, f)?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn valid_selectors_parse_to_expected_requirements_and_canonical_form() {
        use Operator::*;
        let long_name = "a".repeat(63);
        let long_prefix = format!("{}.{}", "b".repeat(126), "c".repeat(126)); // 253 chars
        let long_key = format!("{long_prefix}/{long_name}");
        let max_key_value = format!("{long_key}={long_name}");
        let cases: Vec<(&str, &str, Vec<Requirement>)> = vec![
            ("", "", vec![]),
            ("   \t\r\n", "", vec![]),
            ("a", "a", vec![req("a", Exists, &[])]),
            ("!a", "!a", vec![req("a", DoesNotExist, &[])]),
            (" ! a ", "!a", vec![req("a", DoesNotExist, &[])]),
            ("a=b", "a=b", vec![req("a", Equals, &["b"])]),
            ("a==b", "a=b", vec![req("a", Equals, &["b"])]),
            ("a!=b", "a!=b", vec![req("a", NotEquals, &["b"])]),
            ("a = b", "a=b", vec![req("a", Equals, &["b"])]),
            ("\ta\n==\r\nb ", "a=b", vec![req("a", Equals, &["b"])]),
            ("a=", "a=", vec![req("a", Equals, &[""])]),
            ("a==", "a=", vec![req("a", Equals, &[""])]),
            (
                "a!=,b",
                "a!=,b",
                vec![req("a", NotEquals, &[""]), req("b", Exists, &[])],
            ),
            ("a in (b,c)", "a in (b,c)", vec![req("a", In, &["b", "c"])]),
            (
                "a in (c, b, b)",
                "a in (b,c)",
                vec![req("a", In, &["b", "c"])],
            ),
            ("a in(b)", "a in (b)", vec![req("a", In, &["b"])]),
            (
                "a notin (x, y)",
                "a notin (x,y)",
                vec![req("a", NotIn, &["x", "y"])],
            ),
            ("a in ()", "a in ()", vec![req("a", In, &[""])]),
            ("a in (,b)", "a in (,b)", vec![req("a", In, &["", "b"])]),
            ("a in (b,)", "a in (,b)", vec![req("a", In, &["", "b"])]),
            (
                "a in (b,,c)",
                "a in (,b,c)",
                vec![req("a", In, &["", "b", "c"])],
            ),
            ("a notin (,)", "a notin ()", vec![req("a", NotIn, &[""])]),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
                vec![
                    req("x", In, &["", "baz", "foo"]),
                    req("y", Exists, &[]),
                    req("z", NotIn, &[""]),
                ],
            ),
            (
                "b=1,a=2",
                "a=2,b=1",
                vec![req("a", Equals, &["2"]), req("b", Equals, &["1"])],
            ),
            (
                "a=2,a=1",
                "a=2,a=1",
                vec![req("a", Equals, &["2"]), req("a", Equals, &["1"])],
            ),
            ("a>5", "a>5", vec![req("a", GreaterThan, &["5"])]),
            ("a < 10", "a<10", vec![req("a", LessThan, &["10"])]),
            ("a>007", "a>007", vec![req("a", GreaterThan, &["007"])]),
            ("in=notin", "in=notin", vec![req("in", Equals, &["notin"])]),
            (
                "in in (in,notin)",
                "in in (in,notin)",
                vec![req("in", In, &["in", "notin"])],
            ),
            ("notin", "notin", vec![req("notin", Exists, &[])]),
            ("!in", "!in", vec![req("in", DoesNotExist, &[])]),
            (
                "app.kubernetes.io/name in (vllm)",
                "app.kubernetes.io/name in (vllm)",
                vec![req("app.kubernetes.io/name", In, &["vllm"])],
            ),
            (
                "target_name=my-va,namespace!=kube-system",
                "namespace!=kube-system,target_name=my-va",
                vec![
                    req("namespace", NotEquals, &["kube-system"]),
                    req("target_name", Equals, &["my-va"]),
                ],
            ),
            (
                "A_b.c-D=X_y.z-9",
                "A_b.c-D=X_y.z-9",
                vec![req("A_b.c-D", Equals, &["X_y.z-9"])],
            ),
            ("1=2", "1=2", vec![req("1", Equals, &["2"])]),
            (
                &max_key_value,
                &max_key_value,
                vec![req(&long_key, Equals, &[&long_name])],
            ),
        ];
        for (input, display, expected) in cases {
            let selector = LabelSelector::parse(input)
                .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            assert_eq!(
                selector.requirements(),
                expected.as_slice(),
                "input {input:?}"
            );
            assert_eq!(selector.to_string(), display, "input {input:?}");
            assert_eq!(selector.is_empty(), expected.is_empty(), "input {input:?}");
            let reparsed: LabelSelector = display.parse().expect("canonical form parses");
            assert_eq!(reparsed, selector, "input {input:?}");
        }
    }

    #[test]
    fn invalid_selectors_are_rejected() {
        let long_name = "a".repeat(64);
        let long_prefix = format!("{}.{}", "b".repeat(127), "c".repeat(126)); // 254 chars
        let owned = [
            format!("{long_name}=x"),
            format!("x={long_name}"),
            format!("x in (a,{long_name})"),
            format!("{long_prefix}/a=x"),
            "a=".to_owned() + &"b".repeat(1 << 20),
            "a in (".repeat(10_000),
        ];
        let mut cases: Vec<&str> = vec![
            "target_name in (",
            "target_name in (a",
            "target_name in (a,",
            "target_name in (,",
            "target_name in (a b)",
            // Kubernetes quirk: one empty entry is fine, two at the end are not.
            "a in (,,)",
            "a in (b,,)",
            "a in b",
            "a in",
            "a notin",
            "a in ((b))",
            "a in (b))",
            "a in (=)",
            "a in (b=c)",
            "=x",
            "a=b c",
            "a=b=c",
            "a===b",
            "a=(b)",
            "a>x",
            "a>",
            "a<",
            "a>-1",
            "a>+1",
            "a>1.5",
            "a>99999999999999999999",
            "a>=1",
            "a b",
            "a!b",
            "a!",
            ",",
            "a,",
            ",a",
            "a,,b",
            "a,=",
            "!",
            "!!a",
            "!a=b",
            "!a in (b)",
            "!=a",
            "(a)",
            "a)",
            "in (a)",
            "Example.com/a=x",
            "/a=x",
            "a/=x",
            "a/b/c=x",
            "a..b/c=x",
            "-a=x",
            "a-=x",
            "_a",
            "a=-b",
            "a=b-",
            "a=.b",
            "a in (b,-c)",
            "é=1",
            "a=é",
            "a\u{0}=b",
            "a=b\u{0}",
            "a=b \u{0}",
            "a;b",
            "a=b;c",
            "a:b",
            "a*",
        ];
        cases.extend(owned.iter().map(String::as_str));
        for input in cases {
            let shown: String = input.chars().take(40).collect();
            match LabelSelector::parse(input) {
                Ok(selector) => panic!("{shown:?} should be rejected, parsed as {selector}"),
                Err(e) => {
                    assert!(!e.message.is_empty());
                    assert!(e.message.len() < 400, "message too long: {}", e.message);
                }
            }
        }
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let cases = [
            (
                "target_name in (",
                "unable to parse requirement: found '' at position 16, expected: ',', ')' or identifier",
            ),
            ("a,", "found '' at position 2, expected: identifier after ','"),
            ("a=b c", "found 'c' at position 4, expected: ',' or end of string"),
            ("=x", "found '=' at position 0, expected: '!', identifier, or end of string"),
            ("!", "unable to parse requirement: found '' at position 1, expected: identifier"),
            (
                "a in b",
                "unable to parse requirement: found 'b' at position 5, expected: '('",
            ),
            (
                "a=x y",
                "found 'y' at position 4, expected: ',' or end of string",
            ),
            (
                "a=-x",
                "unable to parse requirement: invalid label value '-x' for key 'a': must be empty or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ),
            (
                "a>x",
                "unable to parse requirement: for '>' and '<' on key 'a' the value must be a 64-bit integer, found 'x'",
            ),
            (
                "Foo.com/x",
                "unable to parse requirement: invalid label key 'Foo.com/x': must be a lowercase RFC 1123 subdomain: lowercase alphanumeric characters, '-' or '.', each dot-separated part starting and ending with an alphanumeric character",
            ),
        ];
        for (input, message) in cases {
            let error = LabelSelector::parse(input).expect_err(input);
            assert_eq!(error.message, message, "input {input:?}");
            assert_eq!(error.to_string(), message);
        }
        let long = format!("a={}", "b".repeat(5000));
        let error = LabelSelector::parse(&long).expect_err("too long");
        assert!(
            error.message.contains("no more than 63"),
            "{}",
            error.message
        );
        assert!(error.message.contains("(5000 bytes)"), "{}", error.message);
        let control = LabelSelector::parse("a=b\u{0}").expect_err("nul");
        assert!(control.message.contains("\\0"), "{}", control.message);
    }

    #[test]
    fn matching_follows_kubernetes_semantics() {
        type Case = (&'static str, &'static [(&'static str, &'static str)], bool);
        let cases: &[Case] = &[
            ("", &[], true),
            ("", &[("a", "b")], true),
            ("a=b", &[("a", "b")], true),
            ("a=b", &[("a", "c")], false),
            ("a=b", &[], false),
            ("a==b", &[("a", "b"), ("c", "d")], true),
            ("a!=b", &[], true),
            ("a!=b", &[("a", "b")], false),
            ("a!=b", &[("a", "c")], true),
            ("a in (b,c)", &[("a", "c")], true),
            ("a in (b,c)", &[("a", "d")], false),
            ("a in (b,c)", &[], false),
            ("a notin (b,c)", &[], true),
            ("a notin (b,c)", &[("a", "b")], false),
            ("a notin (b,c)", &[("a", "x")], true),
            ("a", &[("a", "")], true),
            ("a", &[("b", "a")], false),
            ("!a", &[], true),
            ("!a", &[("a", "")], false),
            ("a=", &[("a", "")], true),
            ("a=", &[], false),
            ("a!=", &[], true),
            ("a!=", &[("a", "")], false),
            ("a in ()", &[("a", "")], true),
            ("a in ()", &[("a", "x")], false),
            ("a>5", &[("a", "6")], true),
            ("a>5", &[("a", "5")], false),
            ("a>5", &[("a", "+6")], true),
            ("a>5", &[("a", "x")], false),
            ("a>5", &[("a", "")], false),
            ("a>5", &[], false),
            ("a<5", &[("a", "-7")], true),
            ("a<5", &[("a", "5")], false),
            ("a<5", &[("a", "99999999999999999999")], false),
            ("a>005", &[("a", "6")], true),
            ("a=b,c=d", &[("a", "b"), ("c", "d")], true),
            ("a=b,c=d", &[("a", "b")], false),
            ("a=b,a=c", &[("a", "b")], false),
            (
                "target_name=va,!variant_name",
                &[("target_name", "va")],
                true,
            ),
            (
                "target_name=va,!variant_name",
                &[("target_name", "va"), ("variant_name", "v")],
                false,
            ),
        ];
        for (selector, labels, expected) in cases {
            let parsed = LabelSelector::parse(selector).expect(selector);
            assert_eq!(
                parsed.matches(*labels),
                *expected,
                "{selector:?} on {labels:?}"
            );
            let map: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(
                parsed.matches(&map),
                *expected,
                "{selector:?} on map {labels:?}"
            );
        }
    }

    #[test]
    fn labels_implementations_agree() {
        let selector = LabelSelector::parse("a=1,b notin (x)").expect("valid");
        let btree: BTreeMap<String, String> = [("a".to_owned(), "1".to_owned())].into();
        let btree_str: BTreeMap<&str, &str> = [("a", "1"), ("b", "y")].into();
        let hash: HashMap<String, String> = [("a".to_owned(), "1".to_owned())].into();
        let pairs = vec![("a".to_owned(), "1".to_owned())];
        assert!(selector.matches(&btree));
        assert!(selector.matches(&btree_str));
        assert!(selector.matches(&hash));
        assert!(selector.matches(&pairs));
        assert!(selector.matches(&[("a", "1")]));
        assert!(selector.matches(&[("a", "1")][..]));
        assert!(selector.matches(&&btree));
        assert!(!selector.matches(&[("a", "1"), ("b", "x")]));
        // First occurrence wins in a list of pairs.
        assert!(selector.matches(&[("a", "1"), ("a", "2")]));
        assert!(LabelSelector::everything().matches(&hash));
    }

    #[test]
    fn exact_value_reports_pinned_keys_only() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("a=b", "a", Some("b")),
            ("a==b", "a", Some("b")),
            ("a in (b)", "a", Some("b")),
            ("a in (b,b)", "a", Some("b")),
            ("a=", "a", Some("")),
            ("a in (b,c)", "a", None),
            ("a!=b", "a", None),
            ("a notin (b)", "a", None),
            ("a", "a", None),
            ("!a", "a", None),
            ("a>1", "a", None),
            ("a=b", "c", None),
            ("", "a", None),
            ("a in (b,c),a=c,z=1", "a", Some("c")),
            ("x=1,a=b,z=2", "a", Some("b")),
        ];
        for (selector, key, expected) in cases {
            let parsed = LabelSelector::parse(selector).expect(selector);
            assert_eq!(
                parsed.exact_value(key),
                *expected,
                "{selector:?} key {key:?}"
            );
        }
    }

    #[test]
    fn everything_is_empty_and_default() {
        let everything = LabelSelector::everything();
        assert!(everything.is_empty());
        assert_eq!(everything, LabelSelector::default());
        assert_eq!(everything.to_string(), "");
        assert_eq!(LabelSelector::parse(" ").expect("blank"), everything);
    }

    // ------------------------------------------------------------------------------------
    // Property tests

    fn name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "[A-Za-z0-9]([-A-Za-z0-9_.]{0,12}[A-Za-z0-9])?",
            1 => Just("in".to_owned()),
            1 => Just("notin".to_owned()),
        ]
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        (
            proptest::option::of("[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}"),
            name_strategy(),
        )
            .prop_map(|(prefix, name)| match prefix {
                Some(prefix) => format!("{prefix}/{name}"),
                None => name,
            })
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => Just(String::new()),
            6 => name_strategy(),
        ]
    }

    fn operator_strategy() -> impl Strategy<Value = Operator> {
        prop_oneof![
            Just(Operator::Equals),
            Just(Operator::NotEquals),
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
            Just(Operator::GreaterThan),
            Just(Operator::LessThan),
        ]
    }

    /// A requirement together with a hand-written (non-canonical) spelling of it.
    fn requirement_strategy() -> impl Strategy<Value = (Requirement, String)> {
        (
            key_strategy(),
            operator_strategy(),
            proptest::collection::vec(value_strategy(), 1..4),
            "[0-9]{1,18}",
            proptest::sample::select(vec!["", " ", "  ", "\t", "\n"]),
        )
            .prop_map(|(key, operator, values, number, ws)| {
                let (text, values) = match operator {
                    Operator::Exists => (key.clone(), vec![]),
                    Operator::DoesNotExist => (format!("!{ws}{key}"), vec![]),
                    Operator::Equals => (
                        format!("{key}{ws}=={ws}{}", values[0]),
                        vec![values[0].clone()],
                    ),
                    Operator::NotEquals => (
                        format!("{key}{ws}!={ws}{}", values[0]),
                        vec![values[0].clone()],
                    ),
                    Operator::GreaterThan => (format!("{key}{ws}>{ws}{number}"), vec![number]),
                    Operator::LessThan => (format!("{key}<{number}"), vec![number]),
                    Operator::In | Operator::NotIn => {
                        // Empty values are written the canonical way (one leading comma, or
                        // `()` alone): Kubernetes rejects some other spellings, like `(,,)`.
                        let word = if operator == Operator::In {
                            "in"
                        } else {
                            "notin"
                        };
                        let non_empty: Vec<&str> = values
                            .iter()
                            .map(String::as_str)
                            .filter(|v| !v.is_empty())
                            .collect();
                        let mut list = non_empty.join(&format!("{ws},{ws}"));
                        if non_empty.len() < values.len() && !non_empty.is_empty() {
                            list.insert_str(0, &format!("{ws},{ws}"));
                        }
                        (format!("{key} {word}{ws}({ws}{list}{ws})"), values)
                    }
                };
                let mut values = values;
                values.sort();
                values.dedup();
                (
                    Requirement {
                        key,
                        operator,
                        values,
                    },
                    text,
                )
            })
    }

    proptest! {
        #[test]
        fn generated_selectors_parse_and_round_trip(
            parts in proptest::collection::vec(requirement_strategy(), 0..6),
        ) {
            let text = parts.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" , ");
            let mut expected: Vec<Requirement> = parts.into_iter().map(|(r, _)| r).collect();
            expected.sort_by(|a, b| a.key.cmp(&b.key));
            let parsed = LabelSelector::parse(&text)
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(parsed.requirements(), expected.as_slice());
            let canonical = parsed.to_string();
            let reparsed = LabelSelector::parse(&canonical)
                .map_err(|e| TestCaseError::fail(format!("{canonical:?}: {e}")))?;
            prop_assert_eq!(&reparsed, &parsed);
            prop_assert_eq!(reparsed.to_string(), canonical);
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(input in any::<String>()) {
            if let Ok(selector) = LabelSelector::parse(&input) {
                prop_assert_eq!(LabelSelector::parse(&selector.to_string()), Ok(selector));
            }
        }

        #[test]
        fn parse_never_panics_on_selector_like_strings(
            input in "[abin otx=!(),<>0-9./_\\-\t\u{0}é]{0,40}",
        ) {
            if let Ok(selector) = LabelSelector::parse(&input) {
                let canonical = selector.to_string();
                prop_assert_eq!(LabelSelector::parse(&canonical), Ok(selector));
            }
        }
    }
}
