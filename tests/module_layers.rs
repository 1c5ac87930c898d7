//! Module dependencies run one way. This test reads the sources (it builds
//! nothing): every `crate::<module>` path in `src/` (in `use` lines, in
//! `use crate::{a, b::c}` groups, and inline in code), from test modules
//! too, is an edge from the file's top-level module to `<module>`. It fails
//!
//! - when the graph of top-level modules has a cycle, naming it with the
//!   file and line of each edge;
//! - when a module uses one in its own layer or a layer above it in
//!   [`LAYERS`], naming the file and line;
//! - when `src/lib.rs` declares a module that [`LAYERS`] does not place (a
//!   new module must be given a layer) or the table names one that is gone;
//! - when the submodules of one top-level module (`collector::exposition`,
//!   `collector::prometheus`, ...) use each other in a cycle. A submodule
//!   is a file or directory directly under `src/<module>/`, with every file
//!   below it; its edges are read from `crate::<module>::<submodule>` and
//!   `super::` paths (resolved from the file and the inline modules, such
//!   as `mod tests`, around the path). Uses between a submodule and its own
//!   module's root file are not edges: the root declares and re-exports
//!   its submodules, so each would be a cycle of the language, not of the
//!   design.
//!
//! `super::` paths cannot leave a top-level module except from its root
//! file (`src/x.rs` or `src/x/mod.rs`), where none is used, so only
//! `crate::` paths are read for the top-level graph. The same list is drawn
//! in docs/architecture.md ("Module layers").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may use modules of lower layers
/// only; modules of one layer do not use each other.
const LAYERS: &[(&str, &[&str])] = &[
    // Kubernetes vocabulary: label selectors, quantities, Status.
    ("vocabulary", &["k8s"]),
    // Leaves: certificates and the crypto provider, the kube clients and
    // ConfigMap watches, the Lease, the server's own metrics, the file
    // poller behind every reloaded file.
    (
        "leaves",
        &["certs", "file_watch", "kube_client", "leader", "telemetry"],
    ),
    // Pure models and analysis.
    ("hpa model", &["hpa"]),
    ("analysis", &["saturation"]),
    // Stores filled in the background.
    ("inventory", &["inventory"]),
    ("collector", &["collector"]),
    // Joins the stores and the analysis.
    ("decision", &["decision"]),
    // Consumers of decisions: the API handlers, the status write-back.
    ("consumers", &["api", "writeback"]),
    // Listeners: the HTTPS server, then the KEDA gRPC port, which reuses
    // its accept loop, connection gate and client-CA verifier.
    ("https listener", &["server"]),
    ("keda listener", &["keda"]),
    // Fatal errors: the one error type that decides exit codes (and the
    // status of the same failure), below the flag groups that return it.
    ("fatal errors", &["fatal"]),
    // `serve`'s flags: each group validates itself and builds its config.
    ("configuration", &["cli"]),
    // Upstream WVA's config file and settings, mapped onto `serve`'s flags.
    ("upstream configuration", &["config_file"]),
    // Wiring of `serve` (and of `demo`'s server).
    ("wiring", &["run"]),
    // Tools: the emulator (cargo feature `emulator`) and the simulator.
    ("tools", &["emulator", "simulate"]),
    ("demo", &["demo"]),
    // The command line.
    ("command", &["command"]),
];

/// One `crate::<to>` path found in `file` at `line`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    to: String,
    file: String,
    line: usize,
}

/// `code` with comments, string literals and character literals blanked
/// out (newlines kept, so that byte offsets still give line numbers).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend(bytes.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }))
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            // Block comments nest in Rust.
            let (mut depth, mut j) = (0usize, 0usize);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = raw_string_len(b, i) {
            blank(&mut out, &b[i..i + len]);
            i += len;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if let Some(len) = char_literal_len(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

/// Length of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) starting at
/// `i`, if one does.
fn raw_string_len(b: &[u8], i: usize) -> Option<usize> {
    // An `r` that ends an identifier (`for"`, `bar#`) starts nothing.
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    j += hashes;
    if b.get(j) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'"'];
    close.extend(std::iter::repeat_n(b'#', hashes));
    let body = &b[j + 1..];
    let end = body
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map_or(body.len(), |p| p + close.len());
    Some(j + 1 - i + end)
}

/// Length of a character literal (`'a'`, `'\''`, `'"'`, `'\u{1F600}'`) at
/// the start of `rest`; None for a lifetime (`'a`).
fn char_literal_len(rest: &[u8]) -> Option<usize> {
    if rest.first() != Some(&b'\'') {
        return None;
    }
    if rest.get(1) == Some(&b'\\') {
        let close = rest[2..].iter().position(|&c| c == b'\'')?;
        return Some(close + 3);
    }
    // One (possibly multi-byte) character, then the closing quote.
    let text = (1..=4).find_map(|n| std::str::from_utf8(rest.get(1..1 + n)?).ok())?;
    let c = text.chars().next()?;
    let after = 1 + c.len_utf8();
    (rest.get(after) == Some(&b'\'')).then_some(after + 1)
}

/// The top-level modules named by every `crate::` path in `code` (already
/// [`code_only`]), with their byte offsets.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("crate::") {
        let at = from + p;
        from = at + "crate::".len();
        // `$crate::` (macros) and `foo_crate::` are not this crate's paths.
        if at > 0 && (b[at - 1] == b'$' || b[at - 1] == b'_' || b[at - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of every item at the group's top level.
            let mut depth = 0usize;
            let mut item_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                        item_start = false;
                        let name: String = group[k..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        found.push((name, at));
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((name, at));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Edges between top-level modules: from -> to -> where.
type Graph = BTreeMap<String, BTreeMap<String, Vec<Use>>>;

/// The module graph of the crate under `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut graph = Graph::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        if module == "main" || module == "lib" {
            // main.rs is the binary (it reaches the library by its crate
            // name); lib.rs only declares the modules (checked below).
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&path).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for (to, at) in crate_paths(&code) {
            if to == module {
                continue;
            }
            edges.entry(to.clone()).or_default().push(Use {
                to,
                file: format!("src/{}", rel.display()),
                line: code[..at].matches('\n').count() + 1,
            });
        }
    }
    graph
}

/// A cycle of the graph, as its modules (first repeated at the end), if
/// there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|m| m == node).unwrap();
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut marks, &mut Vec::new()))
}

/// Each edge of a cycle with the first place that makes it.
fn describe_cycle(graph: &Graph, cycle: &[String]) -> String {
    let mut text = cycle.join(" -> ");
    for pair in cycle.windows(2) {
        let at = &graph[&pair[0]][&pair[1]][0];
        text.push_str(&format!(
            "\n  {} -> {}: {}:{}",
            pair[0], pair[1], at.file, at.line
        ));
    }
    text
}

/// Every use against [`LAYERS`], as messages.
fn layer_violations(graph: &Graph, layers: &[(&str, &[&str])]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (*m, i)))
        .collect();
    let mut out = Vec::new();
    for (from, edges) in graph {
        for (to, uses) in edges {
            let (Some(&lf), Some(&lt)) = (layer_of.get(from.as_str()), layer_of.get(to.as_str()))
            else {
                out.push(format!(
                    "{}:{}: `{from}` uses `{to}`, and the layer table places only {:?}",
                    uses[0].file,
                    uses[0].line,
                    layer_of.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            if lt >= lf {
                for u in uses {
                    out.push(format!(
                        "{}:{}: `{from}` (layer {lf}, {}) uses `{}` (layer {lt}, {}): a module may use only lower layers",
                        u.file, u.line, layers[lf].0, u.to, layers[lt].0
                    ));
                }
            }
        }
    }
    out
}

/// The modules `src/lib.rs` declares (`pub mod x;`, `mod x;`, with any
/// `#[cfg]` before them).
fn declared_modules(lib: &str) -> BTreeSet<String> {
    code_only(lib)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// How a module path starts: `crate::`, or `super::` repeated this many
/// times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathRoot {
    Crate,
    Super(usize),
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The paths of a use tree at the start of `rest` (after its `crate::` or
/// `super::`), each cut to its first `depth` names: `a::b::c` gives
/// `[a, b]`, `{a::b, c::{d, e}}` gives `[a, b]`, `[c, d]`, `[c, e]`. A
/// glob or `self` ends a path.
fn use_tree(rest: &str, depth: usize) -> Vec<Vec<String>> {
    fn tree(s: &str, i: &mut usize, depth: usize) -> Vec<Vec<String>> {
        let b = s.as_bytes();
        let skip_ws = |i: &mut usize| {
            while *i < b.len() && b[*i].is_ascii_whitespace() {
                *i += 1;
            }
        };
        skip_ws(i);
        if b.get(*i) == Some(&b'{') {
            *i += 1;
            let mut out = Vec::new();
            loop {
                skip_ws(i);
                match b.get(*i) {
                    None => return out,
                    Some(b'}') => {
                        *i += 1;
                        return out;
                    }
                    Some(b',') => *i += 1,
                    Some(_) => {
                        let before = *i;
                        out.extend(tree(s, i, depth));
                        if *i == before {
                            // Not a path (`*`, `self as x`): skip a byte.
                            *i += 1;
                        }
                    }
                }
            }
        }
        let start = *i;
        while *i < b.len() && is_ident_byte(b[*i]) {
            *i += 1;
        }
        let name = &s[start..*i];
        if name.is_empty() || name == "self" {
            return Vec::new();
        }
        let mut j = *i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if b.get(j) == Some(&b'(') {
            // A function (`crate::inventory::resolve(x)`), not a module.
            return vec![vec!["()".to_owned()]];
        }
        if depth > 1 && s[j..].starts_with("::") {
            *i = j + 2;
            let tails = tree(s, i, depth - 1);
            if tails.is_empty() {
                return vec![vec![name.to_owned()]];
            }
            return tails
                .into_iter()
                .map(|mut t| {
                    t.insert(0, name.to_owned());
                    t
                })
                .collect();
        }
        skip_rest(s, i);
        vec![vec![name.to_owned()]]
    }
    /// Past the names beyond the depth read (`::c`, `::{d, e}`, `::*`).
    fn skip_rest(s: &str, i: &mut usize) {
        let b = s.as_bytes();
        loop {
            let mut j = *i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if !s[j..].starts_with("::") {
                return;
            }
            j += 2;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if b.get(j) == Some(&b'{') {
                let mut depth = 0usize;
                while j < b.len() {
                    match b[j] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                j += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            } else {
                while j < b.len() && (is_ident_byte(b[j]) || b[j] == b'*') {
                    j += 1;
                }
            }
            *i = j;
        }
    }
    tree(rest, &mut 0, depth)
}

/// Every `crate::` and `super::` path in `code` (already [`code_only`]),
/// cut to two names after its root, with its byte offset.
fn module_paths(code: &str) -> Vec<(PathRoot, Vec<String>, usize)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at = i;
        // Only a path's first name: not `$crate::`, `my_crate::`, `x::super::`.
        let starts_name =
            at == 0 || !(is_ident_byte(b[at - 1]) || b[at - 1] == b'$' || b[at - 1] == b':');
        let root = if !starts_name {
            None
        } else if code[at..].starts_with("crate::") {
            Some((PathRoot::Crate, "crate::".len()))
        } else if code[at..].starts_with("super::") {
            let mut n = 0;
            let mut len = 0;
            while code[at + len..].starts_with("super::") {
                n += 1;
                len += "super::".len();
            }
            Some((PathRoot::Super(n), len))
        } else {
            None
        };
        match root {
            Some((root, len)) => {
                for path in use_tree(&code[at + len..], 2) {
                    found.push((root, path, at));
                }
                i = at + len;
            }
            None => i += 1,
        }
    }
    found
}

/// An inline module of a file (`mod tests { ... }`).
struct InlineModule {
    name: String,
    /// Its body's byte range.
    body: std::ops::Range<usize>,
    /// Compiled for tests only (`#[cfg(test)]` before it).
    test_only: bool,
}

/// The inline modules of `code` (already [`code_only`]).
fn inline_modules(code: &str) -> Vec<InlineModule> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("mod ") {
        let at = from + p;
        from = at + 4;
        if at > 0 && is_ident_byte(b[at - 1]) {
            continue;
        }
        let rest = &code[at + 4..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = rest.trim_start()[name.len()..].trim_start();
        if name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        let mut depth = 0usize;
        let mut end = code.len();
        for (k, &c) in b.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let test_only = code[..at].trim_end().ends_with("#[cfg(test)]");
        out.push(InlineModule {
            name,
            body: open..end,
            test_only,
        });
    }
    out
}

/// The module path of a file under `src/`: `collector/prometheus/mod.rs`
/// is `[collector, prometheus]`, `run/tls.rs` is `[run, tls]`.
fn file_module(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Edges between the submodules of each top-level module, named
/// `module::submodule`, from the files' relative paths and their code.
fn submodule_graph_of(files: &[(String, String)]) -> Graph {
    // The submodules: the second name of every file's module path.
    let submodules: BTreeSet<(String, String)> = files
        .iter()
        .map(|(rel, _)| file_module(rel))
        .filter(|m| m.len() >= 2)
        .map(|m| (m[0].clone(), m[1].clone()))
        .collect();
    let node = |m: &[String]| -> Option<String> {
        (m.len() >= 2 && submodules.contains(&(m[0].clone(), m[1].clone())))
            .then(|| format!("{}::{}", m[0], m[1]))
    };
    let mut graph = Graph::new();
    for (rel, src) in files {
        let module = file_module(rel);
        let Some(from) = node(&module) else {
            continue;
        };
        let code = code_only(src);
        let inline = inline_modules(&code);
        for (root, path, at) in module_paths(&code) {
            let around = || inline.iter().filter(|m| m.body.contains(&at));
            // A test module is a module nothing uses: a use from it cannot
            // close a cycle (a test of `resolve` may read its input with
            // the file parser, which uses `resolve`).
            if around().any(|m| m.test_only) {
                continue;
            }
            let mut absolute = match root {
                PathRoot::Crate => Vec::new(),
                PathRoot::Super(n) => {
                    // The module the path is written in: the file's, then
                    // the inline modules around the path.
                    let mut here = module.clone();
                    here.extend(around().map(|m| m.name.clone()));
                    if n > here.len() {
                        continue;
                    }
                    here.truncate(here.len() - n);
                    here
                }
            };
            absolute.extend(path);
            let Some(to) = node(&absolute) else {
                continue;
            };
            if to == from || absolute[0] != module[0] {
                continue;
            }
            edges_push(&mut graph, &from, &to, rel, &code, at);
        }
    }
    graph
}

/// Adds the edge `from -> to` at `rel`'s byte `at`, once per line.
fn edges_push(graph: &mut Graph, from: &str, to: &str, rel: &str, code: &str, at: usize) {
    let at = Use {
        to: to.to_owned(),
        file: format!("src/{rel}"),
        line: code[..at].matches('\n').count() + 1,
    };
    let uses = graph
        .entry(from.to_owned())
        .or_default()
        .entry(to.to_owned())
        .or_default();
    if !uses.contains(&at) {
        uses.push(at);
    }
}

/// The submodule graph of the crate under `src`.
fn submodule_graph(src: &Path) -> Graph {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    paths.sort();
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(src).unwrap();
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            (rel, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    submodule_graph_of(&files)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn module_dependencies_have_no_cycle() {
    let graph = module_graph(&src());
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "module dependency cycle: {}",
            describe_cycle(&graph, &cycle)
        );
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let graph = module_graph(&src());
    let violations = layer_violations(&graph, LAYERS);
    assert!(
        violations.is_empty(),
        "uses against the layer order of tests/module_layers.rs:\n{}",
        violations.join("\n")
    );
    // Not vacuous: the request path's edges are seen.
    for (from, to) in [("server", "api"), ("api", "decision"), ("decision", "k8s")] {
        assert!(
            graph.get(from).is_some_and(|e| e.contains_key(to)),
            "{from} -> {to} not found"
        );
    }
}

#[test]
fn every_module_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared = declared_modules(&lib);
    let placed: BTreeSet<String> = LAYERS
        .iter()
        .flat_map(|(_, ms)| ms.iter().map(|m| m.to_string()))
        .collect();
    assert_eq!(
        declared, placed,
        "src/lib.rs's modules and the layers of tests/module_layers.rs differ: give a new module a layer"
    );
    // Only module declarations in the crate root: an item there would be
    // used by modules the root itself declares.
    let code = code_only(&lib);
    let items: Vec<&str> = code
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("#[") && !l.contains("mod "))
        .collect();
    assert!(
        items.is_empty(),
        "src/lib.rs holds more than module declarations: {items:?}"
    );
}

#[test]
fn the_scanner_reads_paths_groups_and_skips_comments_and_strings() {
    let cases: &[(&str, &[&str])] = &[
        ("use crate::api::router::route;", &["api"]),
        (
            "use crate::{decision::X, k8s::{a, b}, inventory};",
            &["decision", "k8s", "inventory"],
        ),
        (
            "use crate::{\n    a::b,\n    c::{d, e::f},\n};",
            &["a", "c"],
        ),
        (
            "let x = crate::collector::pod(1) + crate::hpa::f();",
            &["collector", "hpa"],
        ),
        (
            "// use crate::api;\n/* crate::x /* nested crate::y */ crate::z */",
            &[],
        ),
        ("/// [`crate::api`]\nfn f() {}", &[]),
        (
            "let s = \"crate::api\"; let r = r#\"crate::x \" crate::y\"#;",
            &[],
        ),
        ("let c = '\"'; use crate::k8s;", &["k8s"]),
        ("fn f<'a>(x: &'a str) -> &'a crate::k8s::T {}", &["k8s"]),
        (
            "macro_rules! m { () => { $crate::api::f() } } use my_crate::x;",
            &[],
        ),
    ];
    for (code, want) in cases {
        let got: Vec<String> = crate_paths(&code_only(code))
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(&got, want, "{code}");
    }
}

#[test]
fn a_cycle_and_an_upward_use_are_reported_with_their_place() {
    let at = |to: &str, file: &str, line| Use {
        to: to.into(),
        file: file.into(),
        line,
    };
    let mut graph = Graph::new();
    graph
        .entry("a".into())
        .or_default()
        .insert("b".into(), vec![at("b", "src/a.rs", 3)]);
    graph
        .entry("b".into())
        .or_default()
        .insert("a".into(), vec![at("a", "src/b/mod.rs", 7)]);
    let cycle = find_cycle(&graph).unwrap();
    assert_eq!(cycle, ["a", "b", "a"]);
    assert_eq!(
        describe_cycle(&graph, &cycle),
        "a -> b -> a\n  a -> b: src/a.rs:3\n  b -> a: src/b/mod.rs:7"
    );
    let layers: &[(&str, &[&str])] = &[("low", &["a"]), ("high", &["b"])];
    assert_eq!(
        layer_violations(&graph, layers),
        ["src/a.rs:3: `a` (layer 0, low) uses `b` (layer 1, high): a module may use only lower layers"]
    );
    graph.get_mut("b").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn submodules_have_no_cycle() {
    let graph = submodule_graph(&src());
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "submodule dependency cycle: {}",
            describe_cycle(&graph, &cycle)
        );
    }
    // Not vacuous: edges between submodules are seen, from `crate::` and
    // from `super::` paths.
    for (from, to) in [
        ("collector::prometheus", "collector::exposition"),
        ("inventory::resolve", "inventory::pods"),
    ] {
        assert!(
            graph.get(from).is_some_and(|e| e.contains_key(to)),
            "{from} -> {to} not found"
        );
    }
}

#[test]
fn a_submodule_cycle_is_found_from_crate_and_super_paths() {
    let file = |rel: &str, code: &str| (rel.to_owned(), code.to_owned());
    let files = [
        // collector::exposition -> collector::prometheus by a crate path
        // inside a function.
        file(
            "collector/exposition.rs",
            "fn f() {\n    use crate::collector::prometheus::queries::{A, B};\n}",
        ),
        // collector::prometheus -> collector::exposition from a file two
        // levels down, by `crate::` in code and `super::super::`.
        file(
            "collector/prometheus/results.rs",
            "fn g() { crate::collector::exposition::kv(1); }\nuse super::super::sample::S;",
        ),
        file("collector/prometheus/mod.rs", "pub mod results;"),
        file("collector/sample.rs", "pub struct S;"),
        file("collector/mod.rs", "pub mod exposition;\npub use prometheus::X;"),
        // inventory::pods <-> inventory::resolve by `super::` paths; an
        // inline module's `super::` is pods itself, not a sibling; a test
        // module's uses are not edges.
        file(
            "inventory/pods.rs",
            "use super::{resolve::{A, B}, store};\nmod inner {\n    use super::resolve_me;\n}\n#[cfg(test)]\nmod tests {\n    use crate::inventory::file::parse;\n}",
        ),
        file("inventory/resolve.rs", "use super::pods::P;"),
        file("inventory/store.rs", ""),
        file("inventory/file.rs", "use super::resolve::resolve;"),
        // Not edges: to another top-level module, to the module's root
        // (and a function of it), in comments and strings.
        file(
            "inventory/snapshot.rs",
            "use crate::collector::sample::S;\nuse super::Root;\n// super::pods\nlet s = \"super::pods\";\nsuper::pods(1);",
        ),
    ];
    let graph = submodule_graph_of(&files);
    let edges: Vec<String> = graph
        .iter()
        .flat_map(|(from, tos)| {
            tos.iter().flat_map(move |(to, uses)| {
                uses.iter()
                    .map(move |u| format!("{from} -> {to} at {}:{}", u.file, u.line))
            })
        })
        .collect();
    assert_eq!(
        edges,
        [
            "collector::exposition -> collector::prometheus at src/collector/exposition.rs:2",
            "collector::prometheus -> collector::exposition at src/collector/prometheus/results.rs:1",
            "collector::prometheus -> collector::sample at src/collector/prometheus/results.rs:2",
            "inventory::file -> inventory::resolve at src/inventory/file.rs:1",
            "inventory::pods -> inventory::resolve at src/inventory/pods.rs:1",
            "inventory::pods -> inventory::store at src/inventory/pods.rs:1",
            "inventory::resolve -> inventory::pods at src/inventory/resolve.rs:1",
        ]
    );
    let cycle = find_cycle(&graph).unwrap();
    assert_eq!(
        cycle,
        [
            "collector::exposition",
            "collector::prometheus",
            "collector::exposition"
        ]
    );
    assert_eq!(
        describe_cycle(&graph, &cycle),
        "collector::exposition -> collector::prometheus -> collector::exposition\n  \
         collector::exposition -> collector::prometheus: src/collector/exposition.rs:2\n  \
         collector::prometheus -> collector::exposition: src/collector/prometheus/results.rs:1"
    );
    // Broken one way, the other cycle is still found; broken both ways,
    // none is.
    let mut graph = graph;
    graph.get_mut("collector::exposition").unwrap().clear();
    assert_eq!(
        find_cycle(&graph).unwrap(),
        [
            "inventory::resolve",
            "inventory::pods",
            "inventory::resolve"
        ]
    );
    graph.get_mut("inventory::resolve").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn use_trees_and_module_paths_are_read_to_two_names() {
    assert_eq!(use_tree("a::b::c;", 2), [["a", "b"]]);
    assert_eq!(
        use_tree("{a::b, c::{d, e::f}, g, self, *};", 2),
        [vec!["a", "b"], vec!["c", "d"], vec!["c", "e"], vec!["g"]]
    );
    // A function call is not a module path.
    assert_eq!(use_tree("x(1)", 2), [["()"]]);
    let got: Vec<(PathRoot, Vec<String>)> = module_paths(&code_only(
        "use super::super::a::b; $crate::x::y; my_crate::z; crate::{p::q, r};",
    ))
    .into_iter()
    .map(|(r, p, _)| (r, p))
    .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        [
            (PathRoot::Super(2), s(&["a", "b"])),
            (PathRoot::Crate, s(&["p", "q"])),
            (PathRoot::Crate, s(&["r"])),
        ]
    );
}
