//! A rule in a doc is a promise: every test that `docs/security-choices.md` and
//! `docs/standards.md` name in a `[…]` bracket must exist in the code, as a
//! test function or as the name of a table case (a string literal). A rule whose test is missing
//! fails here, so it cannot ship again.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "py") {
            found.push(path);
        }
    }
}

/// The backticked names inside `[…]` brackets of a Markdown text.
fn cited(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        let bracket = &rest[open + 1..open + close];
        let mut parts = bracket.split('`');
        parts.next();
        while let (Some(name), Some(_)) = (parts.next(), parts.next()) {
            names.push(name.to_owned());
        }
        rest = &rest[open + close + 1..];
    }
    names
}

fn defined(code: &str, name: &str) -> bool {
    code.contains(&format!("fn {name}(")) || code.contains(&format!("\"{name}\""))
}

#[test]
fn every_test_a_doc_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("tests"), &mut files);
    let code: String = files
        .iter()
        .filter(|file| !file.ends_with("docs_cite_tests.rs"))
        .map(|file| std::fs::read_to_string(file).unwrap())
        .collect();
    let mut checked = 0;
    let mut missing = Vec::new();
    for doc in ["docs/security-choices.md", "docs/standards.md"] {
        let text = std::fs::read_to_string(root.join(doc))
            .unwrap_or_else(|error| panic!("{doc} is missing: {error}"));
        for name in cited(&text) {
            checked += 1;
            if !defined(&code, &name) {
                missing.push(format!("{doc}: [`{name}`]"));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} citations found: the parser lost them"
    );
    assert!(
        missing.is_empty(),
        "cited tests that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checker_sees_a_missing_test() {
    let text = "| rule | choice | why [`a_test_nobody_wrote`, `every_test_a_doc_names_exists`] |";
    let names = cited(text);
    assert_eq!(
        names,
        ["a_test_nobody_wrote", "every_test_a_doc_names_exists"]
    );
    let code = "fn every_test_a_doc_names_exists() {}";
    assert!(!defined(code, &names[0]));
    assert!(defined(code, &names[1]));
}

#[test]
fn every_reason_code_is_in_the_readme_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reasons = std::fs::read_to_string(root.join("src/decision/reason.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // `Self::Variant => "code",` lines of DenyReason::code.
    let codes: Vec<&str> = reasons
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Self::"))
        .filter_map(|rest| rest.split_once("=> \"").map(|(_, code)| code))
        .filter_map(|code| code.strip_suffix("\","))
        .collect();
    assert!(codes.len() > 25, "found only {codes:?}");
    let missing: Vec<&&str> = codes
        .iter()
        .filter(|code| !readme.contains(&format!("| `{code}` | ")))
        .collect();
    assert!(
        missing.is_empty(),
        "reason codes missing from README's table: {missing:?}"
    );
}
