//! The README's CLI reference is the program's own `--help`, so it cannot
//! drift: this test fails when they differ. Regenerate it with
//! `UPDATE_CLI_REFERENCE=1 cargo test --test cli_reference`.

#![cfg(feature = "emulator")] // the reference is the default build's help, `demo` and `emulate` included

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BEGIN: &str = "<!-- BEGIN CLI REFERENCE (generated from --help: UPDATE_CLI_REFERENCE=1 cargo test --test cli_reference) -->";
const END: &str = "<!-- END CLI REFERENCE -->";

/// Every subcommand's help, as `$ wva-metrics-server ... --help` blocks.
fn generated() -> String {
    let mut out = String::from("```text\n");
    for args in [
        &[][..],
        &["serve"],
        &["demo"],
        &["emulate"],
        &["certs"],
        &["crd"],
        &["simulate"],
    ] {
        let result = Command::new(env!("CARGO_BIN_EXE_wva-metrics-server"))
            .args(args)
            .arg("--help")
            // Help shows the values of the environment variables flags read
            // (`[env: POD_NAMESPACE=...]`): the reference must not depend on them.
            .env_clear()
            .output()
            .unwrap();
        assert!(result.status.success(), "{args:?} --help failed");
        let help = String::from_utf8(result.stdout).unwrap();
        out.push_str(&format!(
            "$ wva-metrics-server {}--help\n",
            args.iter().map(|a| format!("{a} ")).collect::<String>()
        ));
        out.push_str(help.trim_end());
        out.push_str("\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push_str("\n```\n");
    out
}

/// A new subcommand must join the list above: every command the top-level
/// help names (but `help`) has its block in the reference.
#[test]
fn every_subcommand_is_in_the_reference() {
    let top = Command::new(env!("CARGO_BIN_EXE_wva-metrics-server"))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let help = String::from_utf8(top.stdout).unwrap();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 6, "{help}");
    let reference = generated();
    for c in commands {
        assert!(
            reference.contains(&format!("$ wva-metrics-server {c} --help")),
            "`{c}` is missing from the CLI reference list in tests/cli_reference.rs"
        );
    }
}

#[test]
fn readme_cli_reference_is_the_help_output() {
    let path = Path::new(ROOT).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no CLI reference markers:\n{BEGIN}\n...\n{END}");
    };
    let current = &readme[begin + BEGIN.len() + 1..end];
    let want = generated();
    if current == want {
        return;
    }
    if std::env::var_os("UPDATE_CLI_REFERENCE").is_some() {
        let updated = format!("{}{BEGIN}\n{want}{}", &readme[..begin], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        eprintln!("README.md: CLI reference regenerated");
        return;
    }
    let first_difference = current
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .map(|i| {
            format!(
                "line {} of the reference: README has {:?}, --help says {:?}",
                i + 1,
                current.lines().nth(i).unwrap_or(""),
                want.lines().nth(i).unwrap_or("")
            )
        })
        .unwrap_or_else(|| "one is a prefix of the other".to_owned());
    panic!(
        "README.md's CLI reference differs from --help ({first_difference}); \
         regenerate it: UPDATE_CLI_REFERENCE=1 cargo test --test cli_reference"
    );
}

#[test]
fn every_flag_of_serve_is_in_the_reference() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    for flag in [
        "--header-read-timeout",
        "--watch-namespaces",
        "--namespace",
        "--insecure-disable-auth",
        "--force",
    ] {
        assert!(readme.contains(flag), "README lacks {flag}");
    }
}
