//! The folders of `src/` are layers: `decision` decides and knows no transport, `serve` serves
//! decisions, `cli` is the command line, `config` parses into the decision's types. These
//! tests read the sources (a plain scan of `use` paths and crate names) and fail when an arrow
//! points up, so the layout stays the architecture.

use std::path::{Path, PathBuf};

fn sources(folder: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, found: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(folder);
    let mut found = Vec::new();
    walk(&root, &mut found);
    assert!(!found.is_empty(), "no sources under {}", root.display());
    found
}

/// Lines of code that name `needle` as a path segment (comments and doc comments skipped).
fn naming(folder: &str, needles: &[&str]) -> Vec<String> {
    let mut offences = Vec::new();
    for (path, text) in sources(folder) {
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for needle in needles {
                let hit = code.match_indices(needle).any(|(at, _)| {
                    let before = code[..at].chars().next_back();
                    let after = code[at + needle.len()..].chars().next();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                        && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if hit {
                    offences.push(format!("{}:{}: {}", path.display(), number + 1, code));
                }
            }
        }
    }
    offences
}

#[test]
fn the_decision_core_names_no_transport_and_nothing_above_it() {
    let offences = naming(
        "decision",
        &[
            "tonic",
            "tonic_health",
            "tonic_reflection",
            "axum",
            "hyper",
            "hyper_util",
            "tokio::net",
            "tokio::io",
            "crate::serve",
            "crate::cli",
            "crate::config",
            "crate::inject",
        ],
    );
    assert!(
        offences.is_empty(),
        "decision reaches up or into transport:\n{}",
        offences.join("\n")
    );
}

#[test]
fn config_sits_below_serving_and_the_command_line() {
    let offences = naming(
        "config",
        &[
            "crate::serve",
            "crate::cli",
            "crate::inject",
            "tonic",
            "axum",
            "hyper",
        ],
    );
    assert!(
        offences.is_empty(),
        "config imports from above:\n{}",
        offences.join("\n")
    );
}

#[test]
fn serving_never_imports_the_command_line() {
    let offences = naming("serve", &["crate::cli"]);
    assert!(
        offences.is_empty(),
        "serve imports the command line:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_scan_sees_an_import_that_is_there() {
    // The scan must be able to fail: serve does use the decision core, so it must find that.
    let offences = naming("serve", &["crate::decision"]);
    assert!(
        !offences.is_empty(),
        "the scan missed serve's imports of the decision core"
    );
}
