//! `actguard graph` (issue #18) from audit logs written by real runs: the demo's scenario
//! (`actguard demo --audit FILE`) and a generated workload large enough to show that memory
//! follows the graph, not the log.

mod common;

use common::observe::{actguard, fail_saying, succeed, wait_measuring_peak};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

fn graph(args: &[&str]) -> String {
    succeed(actguard().arg("graph").args(args))
}

fn demo_audit(dir: &Path) -> String {
    common::observe::demo_audit(dir).display().to_string()
}

#[test]
fn the_demos_graph_shows_who_delegated_to_whom_and_what_was_denied() {
    let dir = tempfile::tempdir().unwrap();
    let audit = demo_audit(dir.path());
    let json: serde_json::Value =
        serde_json::from_str(&graph(&["--audit", &audit, "--format", "json"])).unwrap();
    let kind_of = |id: &str| {
        json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["id"] == id)
            .map(|node| node["kind"].as_str().unwrap().to_owned())
    };
    assert_eq!(kind_of("user:*").as_deref(), Some("principal"));
    assert_eq!(
        kind_of("spiffe://example.org/agent/scheduler").as_deref(),
        Some("agent")
    );
    assert_eq!(kind_of("calendar-read").as_deref(), Some("tool"));
    let edge = |from: &str, to: &str| {
        json["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|edge| edge["from"] == from && edge["to"] == to)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {from} -> {to}: {json}"))
    };
    let delegated = edge(
        "spiffe://example.org/agent/orchestrator",
        "spiffe://example.org/agent/scheduler",
    );
    assert_eq!(delegated["kind"], "delegates");
    assert!(delegated["allowed"].as_u64().unwrap() >= 1);
    let calls = edge("spiffe://example.org/agent/scheduler", "calendar-read");
    assert_eq!(calls["kind"], "calls");
    assert!(calls["allowed"].as_u64().unwrap() >= 1);
    assert!(calls["reasons"]["token_expired"].as_u64().unwrap() >= 1);
    // The foreign agent's attempt is a denied edge named by its reason.
    let mallory = edge("spiffe://evil.example/agent/mallory", "(no route)");
    assert_eq!(mallory["allowed"], 0);
    assert_eq!(mallory["reasons"]["caller_trust_domain_denied"], 1);
    // Every format: deterministic, and nothing of a token in it.
    for format in ["svg", "dot", "mermaid", "json"] {
        let first = graph(&["--audit", &audit, "--format", format]);
        assert_eq!(
            first,
            graph(&["--audit", &audit, "--format", format]),
            "{format}"
        );
        assert!(!first.contains("eyJ"), "{format} carries a token");
    }
    let svg = graph(&["--audit", &audit, "--format", "svg"]);
    assert!(svg.starts_with("<?xml") && svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("scheduler") && svg.contains("token_expired"));
    let dot = graph(&["--audit", &audit, "--format", "dot"]);
    assert!(dot.starts_with("digraph delegation {") && dot.contains("color=red"));
    let mermaid = graph(&["--audit", &audit, "--format", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR"));
    // --out writes the file; --since keeps only recent decisions (the demo's are seconds old).
    let out = dir.path().join("graph.svg");
    graph(&["--audit", &audit, "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), svg);
    let recent: serde_json::Value = serde_json::from_str(&graph(&[
        "--audit", &audit, "--since", "1h", "--format", "json",
    ]))
    .unwrap();
    assert_eq!(recent["decisions"], json["decisions"]);
}

#[test]
fn since_drops_old_decisions_and_bad_input_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("old.jsonl");
    std::fs::write(
        &log,
        concat!(
            r#"{"time":"2020-01-01T00:00:00.000Z","caller":"spiffe://e.org/a","subject":"user:x","chain":[],"route":"r","decision":"allow","reason":null}"#,
            "\n",
            "garbage\n",
            r#"{"time":"2026-12-04T00:00:00.000Z","event":"admin","op":"revoke"}"#,
            "\n"
        ),
    )
    .unwrap();
    let log = log.to_str().unwrap();
    let all: serde_json::Value =
        serde_json::from_str(&graph(&["--audit", log, "--format", "json"])).unwrap();
    assert_eq!(
        (all["decisions"].as_u64(), all["skipped_lines"].as_u64()),
        (Some(1), Some(2))
    );
    let recent: serde_json::Value = serde_json::from_str(&graph(&[
        "--audit", log, "--since", "24h", "--format", "json",
    ]))
    .unwrap();
    assert_eq!(recent["decisions"], 0);
    fail_saying(
        actguard().args(["graph", "--audit", "/nonexistent/audit.jsonl"]),
        "/nonexistent/audit.jsonl",
    );
    let bad_since = actguard()
        .args(["graph", "--audit", log, "--since", "soon"])
        .output()
        .unwrap();
    assert!(!bad_since.status.success());
}

#[test]
fn rule_a_large_log_is_streamed_in_memory_bounded_by_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("large.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    // A generated multi-agent workload: 40 users, 12 agents in chains of up to 3, 6 tools.
    let mut written = 0usize;
    let mut index = 0u64;
    while written < 64 << 20 {
        let agent = |n: u64| format!("spiffe://example.org/agent/a{}", n % 12);
        let chain = [agent(index), agent(index / 12 + 1), agent(index / 144 + 2)];
        let depth = (index % 3 + 1) as usize;
        let line = serde_json::json!({
            "time": "2026-12-04T00:00:00.000Z",
            "v": 2,
            "request_id": format!("req-{index}"),
            "caller": chain[depth - 1],
            "subject": format!("user:u{}", index % 40),
            "chain": &chain[..depth],
            "scopes": [format!("tool-{}:read", index % 6), "profile".to_owned()],
            "route": format!("tool-{}", index % 6),
            "method": "GET",
            "path": format!("/tool-{}/items/{index}", index % 6),
            "decision": if index.is_multiple_of(7) { "deny" } else { "allow" },
            "reason": if index.is_multiple_of(7) { Some("insufficient_scope") } else { None },
            "jti": format!("tok-{index}"),
            "sid": format!("s-{}", index % 1000),
            "branch": "b-AAAAAAAAAAAAAAAAAAAAAA",
            "latency_us": 7,
        })
        .to_string();
        writeln!(file, "{line}").unwrap();
        written += line.len() + 1;
        index += 1;
    }
    file.flush().unwrap();
    drop(file);
    let mut child = actguard()
        .args(["graph", "--format", "json", "--audit"])
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let reader = std::thread::spawn({
        let mut stdout = child.stdout.take().unwrap();
        move || {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
            out
        }
    });
    let (_, peak) = wait_measuring_peak(&mut child);
    out.push_str(&reader.join().unwrap());
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["decisions"].as_u64(), Some(index));
    // 64 MiB of audit lines; the process never held more than a small part of it.
    assert!(peak > 0 && peak < 32 * 1024, "peak RSS {peak} KiB");
    // The HTML report of the same log: one pass, bounded tables, within the same memory.
    let page = dir.path().join("report.html");
    let mut child = actguard()
        .args(["report", "--out"])
        .arg(&page)
        .arg("--audit")
        .arg(&log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, peak) = wait_measuring_peak(&mut child);
    assert!(status.success());
    assert!(peak > 0 && peak < 32 * 1024, "report: peak RSS {peak} KiB");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains(&format!("{index} (")), "decision count");
    assert!(html.contains("too large to lay out as SVG"));
    assert!(html.contains("tool-3:read"));
    // Too large to lay out as SVG: refused at once with what to use instead.
    fail_saying(
        actguard()
            .args(["graph", "--format", "svg", "--audit"])
            .arg(&log),
        "too large to lay out as SVG",
    );
}
