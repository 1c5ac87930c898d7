//! Issue 29: no source file holds more than 600 lines of non-test code, so
//! that each file can be read as one concern. A file's non-test code is
//! every line before its first top-level `#[cfg(test)]`; files that are
//! test modules (`tests.rs`, or under a `tests/` directory of `src/`) hold
//! none. Fails naming each file over the limit and its count.

use std::path::{Path, PathBuf};

const MAX_NON_TEST_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines before the first top-level `#[cfg(test)]` (all of them without one).
fn non_test_lines(text: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with("#[cfg(test)]"))
        .unwrap_or_else(|| text.lines().count())
}

fn is_test_module(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
}

#[test]
fn no_source_file_holds_more_than_600_lines_of_non_test_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let mut over: Vec<String> = files
        .iter()
        .filter(|p| !is_test_module(p.strip_prefix(&src).unwrap_or(p)))
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let n = non_test_lines(&text);
            (n > MAX_NON_TEST_LINES).then(|| format!("{}: {n}", p.display()))
        })
        .collect();
    over.sort();
    assert!(
        over.is_empty(),
        "over {MAX_NON_TEST_LINES} lines: {over:#?}"
    );
}

#[test]
fn the_count_stops_at_the_first_top_level_test_module() {
    let text = "fn a() {}\n// two\n#[cfg(test)]\nmod tests {\n}\n";
    assert_eq!(non_test_lines(text), 2);
    assert_eq!(non_test_lines("fn a() {}\n    #[cfg(test)]\n"), 2);
    assert!(is_test_module(Path::new("saturation/slo/tests.rs")));
    assert!(is_test_module(Path::new("decision/tests/sweep.rs")));
    assert!(!is_test_module(Path::new("decision/sweep.rs")));
}
