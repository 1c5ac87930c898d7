//! Every relative link and every repository path named in README.md and
//! docs/*.md exists: a file moved (deploy/servicemonitor.yaml went under
//! deploy/components/monitoring/) must take its mentions with it.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Top-level directories of the repository: a backticked word starting
/// with one of them is a path that must exist.
const TOP_DIRS: &[&str] = &[
    "deploy/",
    "docs/",
    "src/",
    "tests/",
    "scripts/",
    "overlays/",
    "examples/",
    "benches/",
    "apiservice/",
    "fuzz/",
    "proto/",
    "charts/",
    // Not in the repository: a mention is a stale pointer (design-notes.md
    // named `shared/DESIGN.md`).
    "shared/",
];

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![Path::new(ROOT).join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The targets of `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].trim().to_owned());
        }
    }
    out
}

/// Backticked words that name a repository path.
fn backticked_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, piece) in text.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let word = piece.trim();
        let placeholder = word.contains(|c: char| c.is_whitespace() || "<>*{}$|".contains(c))
            || word.contains("...")
            || word.contains("NAME")
            || word.contains("://");
        if placeholder || !TOP_DIRS.iter().any(|d| word.starts_with(d)) {
            continue;
        }
        // `src/a.rs:12` and `tests/x.rs::name` point into a file.
        let path = word.split("::").next().unwrap_or(word);
        let path = path.split(':').next().unwrap_or(path);
        out.push(path.trim_end_matches(['.', ',', ')']).to_owned());
    }
    out
}

fn is_local(link: &str) -> bool {
    !(link.is_empty()
        || link.starts_with('#')
        || link.contains("://")
        || link.starts_with("mailto:"))
}

#[test]
fn every_relative_link_and_path_in_the_docs_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let dir = doc.parent().unwrap();
        let name = doc.strip_prefix(ROOT).unwrap().display().to_string();
        for link in links(&text).into_iter().filter(|l| is_local(l)) {
            let file = link.split('#').next().unwrap_or_default();
            let file = file.split_whitespace().next().unwrap_or_default();
            checked += 1;
            if !dir.join(file).exists() {
                missing.push(format!("{name}: link ({link})"));
            }
        }
        for path in backticked_paths(&text) {
            checked += 1;
            if !Path::new(ROOT).join(&path).exists() {
                missing.push(format!("{name}: `{path}`"));
            }
        }
    }
    assert!(checked > 50, "the docs were read: {checked} paths");
    assert!(
        missing.is_empty(),
        "paths in the docs that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_extractors_find_links_and_paths() {
    let text = "see [a](docs/a.md#x) and [b](https://x/y), `deploy/servicemonitor.yaml`, \
                `src/run.rs:12`, `tests/flags.rs::FLAG_TESTS`, `deploy/<name>.yaml`, `kubectl apply`";
    assert_eq!(links(text), ["docs/a.md#x", "https://x/y"]);
    assert_eq!(
        backticked_paths(text),
        ["deploy/servicemonitor.yaml", "src/run.rs", "tests/flags.rs"]
    );
    assert!(is_local("docs/a.md") && !is_local("#x") && !is_local("https://x"));
}
