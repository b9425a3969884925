//! `actguard graph` (issue #18): the delegation graph observed in audit logs.
//!
//! Built from audit records only (the audit format is the contract, README "Audit log"):
//! decision lines, never admin or fleet events. Nodes are principals (a `sub` such as
//! `user:alice` collapsed to its family `user:*`; SPIFFE IDs and plain names kept), agents
//! (the SPIFFE IDs of chains and callers) and tools (the route, or `route tool` for an MCP
//! tool call). Edges are delegation hops (principal → first delegate → … → current actor) and
//! calls (the caller → the tool), each counting allowed and denied decisions, denials with
//! their reasons. Records carry no tokens or argument values, so neither does the graph.
//!
//! Files are streamed line by line (a line longer than 1 MiB is skipped and counted), so memory
//! follows the size of the graph, not of the logs; the graph itself is bounded
//! ([`MAX_NODES`], [`MAX_EDGES`]: what does not fit is counted and reported, never silently
//! dropped). Output is deterministic: nodes and edges in sorted order.

use super::records::{self, Decision};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Most nodes and edges kept; a graph beyond that is not a picture anyone can read.
pub const MAX_NODES: usize = 2_000;
pub const MAX_EDGES: usize = 10_000;
/// Reasons shown per denied edge.
const TOP_REASONS: usize = 3;
/// The largest graph drawn as SVG: the layout crate's placement grows steeply with nodes and
/// edges (measured on this machine: 28 nodes and 90 edges 4.4 s, 38 nodes 44 s). Larger
/// graphs are refused with a pointer to `dot`/`mermaid`/`json`, never left to run for hours.
pub const MAX_SVG_NODES: usize = 24;
pub const MAX_SVG_EDGES: usize = 72;
/// A layout still running after this is abandoned (the process reports it and fails).
const SVG_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Svg,
    Dot,
    Mermaid,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    Principal,
    Agent,
    Tool,
}

impl NodeKind {
    fn name(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Agent => "agent",
            Self::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EdgeKind {
    Delegates,
    Calls,
}

impl EdgeKind {
    fn name(self) -> &'static str {
        match self {
            Self::Delegates => "delegates",
            Self::Calls => "calls",
        }
    }
}

/// Decisions through one edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeCounts {
    pub allowed: u64,
    pub denied: u64,
    pub reasons: BTreeMap<String, u64>,
}

impl EdgeCounts {
    /// The most frequent reasons, most frequent first (ties by name).
    pub fn top_reasons(&self) -> Vec<(&str, u64)> {
        records::top_counts(&self.reasons, TOP_REASONS)
    }
}

/// The observed graph.
#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: BTreeMap<String, NodeKind>,
    pub edges: BTreeMap<(String, String, EdgeKind), EdgeCounts>,
    /// Decision lines read, lines skipped (not JSON, too long, not a decision), and
    /// contributions dropped because the graph was full.
    pub decisions: u64,
    pub skipped: u64,
    pub dropped: u64,
}

/// Longest node id or reason kept (actguard's own audit fields are cut there too); control
/// characters and XML non-characters become U+FFFD, so no output format can be broken.
const MAX_LABEL: usize = 1024;

fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LABEL));
    for character in text.chars() {
        if out.len() + character.len_utf8() > MAX_LABEL {
            break;
        }
        out.push(if records::invisible(character) {
            '\u{fffd}'
        } else {
            character
        });
    }
    out
}

/// The tool node of a decision: its route, or `route tool` for an MCP tool call.
pub fn tool_of(decision: &Decision) -> String {
    match (decision.text("route"), decision.tool()) {
        (Some(route), Some(tool)) => format!("{route} {tool}"),
        (Some(route), None) => route.to_owned(),
        (None, _) => "(no route)".to_owned(),
    }
}

/// `sub` as a principal node: a family `prefix:*` for `prefix:rest` (not a URI), else as is.
pub fn principal(subject: &str) -> String {
    if subject.contains("://") {
        return subject.to_owned();
    }
    match subject.split_once(':') {
        Some((family, rest)) if !family.is_empty() && !rest.is_empty() => format!("{family}:*"),
        _ => subject.to_owned(),
    }
}

impl Graph {
    fn node(&mut self, id: &str, kind: NodeKind) -> bool {
        let id = &clean(id);
        if let Some(known) = self.nodes.get_mut(id) {
            // A workload that acts for itself is a principal and an agent: an agent.
            if *known == NodeKind::Principal && kind == NodeKind::Agent {
                *known = NodeKind::Agent;
            }
            return true;
        }
        if self.nodes.len() >= MAX_NODES {
            self.dropped += 1;
            return false;
        }
        self.nodes.insert(id.to_owned(), kind);
        true
    }

    fn edge(&mut self, from: &str, to: &str, kind: EdgeKind, reason: Option<&str>) {
        let key = (clean(from), clean(to), kind);
        if !self.edges.contains_key(&key) && self.edges.len() >= MAX_EDGES {
            self.dropped += 1;
            return;
        }
        let counts = self.edges.entry(key).or_default();
        match reason {
            None => counts.allowed += 1,
            Some(reason) => {
                counts.denied += 1;
                records::count_bounded(&mut counts.reasons, &clean(reason), 1);
            }
        }
    }

    /// Adds one decision.
    pub fn add(&mut self, decision: &Decision) {
        self.decisions += 1;
        let reason = decision.reason();
        let chain = decision.chain();
        let mut previous: Option<String> = None;
        if let Some(subject) = decision.text("subject") {
            let id = principal(subject);
            let kind = if id.starts_with("spiffe://") {
                NodeKind::Agent
            } else {
                NodeKind::Principal
            };
            if self.node(&id, kind) {
                previous = Some(id);
            }
        }
        for actor in &chain {
            if !self.node(actor, NodeKind::Agent) {
                previous = None;
                continue;
            }
            if let Some(from) = &previous {
                self.edge(&from.clone(), actor, EdgeKind::Delegates, reason);
            }
            previous = Some((*actor).to_owned());
        }
        // The call: from the peer that made it (which is the chain's end when it is bound).
        let caller = decision.text("caller");
        let tool = tool_of(decision);
        if let Some(caller) = caller
            && self.node(caller, NodeKind::Agent)
            && self.node(&tool, NodeKind::Tool)
        {
            if chain.is_empty()
                && let Some(from) = &previous
                && from != caller
            {
                // A direct call: the principal's token presented by the caller.
                self.edge(&from.clone(), caller, EdgeKind::Delegates, reason);
            }
            self.edge(caller, &tool, EdgeKind::Calls, reason);
        }
    }

    /// Adds one audit line (tests): a line that is no decision is counted as skipped.
    pub fn add_line(&mut self, line: &[u8]) {
        match Decision::parse(line) {
            Ok(decision) => self.add(&decision),
            Err(_) => self.skipped += 1,
        }
    }

    fn denied_label(counts: &EdgeCounts) -> String {
        let reasons: Vec<String> = counts
            .top_reasons()
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        format!("{} denied: {}", counts.denied, reasons.join(", "))
    }

    fn label(counts: &EdgeCounts) -> String {
        match (counts.allowed, counts.denied) {
            (allowed, 0) => format!("{allowed}"),
            (0, _) => Self::denied_label(counts),
            (allowed, _) => format!("{allowed} allowed, {}", Self::denied_label(counts)),
        }
    }

    pub fn to_json(&self) -> String {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|(id, kind)| serde_json::json!({"id": id, "kind": kind.name()}))
            .collect();
        let edges: Vec<Value> = self
            .edges
            .iter()
            .map(|((from, to, kind), counts)| {
                serde_json::json!({
                    "from": from, "to": to, "kind": kind.name(),
                    "allowed": counts.allowed, "denied": counts.denied, "reasons": counts.reasons,
                })
            })
            .collect();
        let document = serde_json::json!({
            "v": 1,
            "decisions": self.decisions,
            "skipped_lines": self.skipped,
            "dropped": self.dropped,
            "nodes": nodes,
            "edges": edges,
        });
        serde_json::to_string_pretty(&document).unwrap_or_default()
    }

    fn ids(&self) -> BTreeMap<&str, String> {
        self.nodes
            .keys()
            .enumerate()
            .map(|(index, id)| (id.as_str(), format!("n{index}")))
            .collect()
    }

    pub fn to_dot(&self) -> String {
        let quote = |text: &str| {
            let mut out = String::from("\"");
            for character in text.chars() {
                match character {
                    '"' | '\\' => {
                        out.push('\\');
                        out.push(character);
                    }
                    '\n' | '\r' => out.push(' '),
                    _ => out.push(character),
                }
            }
            out.push('"');
            out
        };
        let ids = self.ids();
        let mut out = String::from("digraph delegation {\n  rankdir=LR;\n");
        for (id, kind) in &self.nodes {
            let shape = match kind {
                NodeKind::Principal => "ellipse",
                NodeKind::Agent => "box",
                NodeKind::Tool => "component",
            };
            out.push_str(&format!(
                "  {} [label={}, shape={shape}];\n",
                ids[id.as_str()],
                quote(id)
            ));
        }
        for ((from, to, _), counts) in &self.edges {
            let style = if counts.denied > 0 {
                ", color=red, fontcolor=red"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {} -> {} [label={}{style}];\n",
                ids[from.as_str()],
                ids[to.as_str()],
                quote(&Self::label(counts))
            ));
        }
        out.push_str("}\n");
        out
    }

    pub fn to_mermaid(&self) -> String {
        // Mermaid labels are quoted strings; quotes and markup characters become entities.
        let text = |text: &str| {
            let mut out = String::new();
            for character in text.chars() {
                match character {
                    '"' => out.push_str("#quot;"),
                    '<' => out.push_str("#lt;"),
                    '>' => out.push_str("#gt;"),
                    '#' => out.push_str("#35;"),
                    '%' => out.push_str("#37;"),
                    '\n' | '\r' => out.push(' '),
                    _ => out.push(character),
                }
            }
            out
        };
        let ids = self.ids();
        let mut out = String::from("flowchart LR\n");
        for (id, kind) in &self.nodes {
            let (open, close) = match kind {
                NodeKind::Principal => ("([\"", "\"])"),
                NodeKind::Agent => ("[\"", "\"]"),
                NodeKind::Tool => ("[[\"", "\"]]"),
            };
            out.push_str(&format!(
                "  {}{open}{}{close}\n",
                ids[id.as_str()],
                text(id)
            ));
        }
        let mut denied = Vec::new();
        for (index, ((from, to, _), counts)) in self.edges.iter().enumerate() {
            out.push_str(&format!(
                "  {} -->|\"{}\"| {}\n",
                ids[from.as_str()],
                text(&Self::label(counts)),
                ids[to.as_str()]
            ));
            if counts.denied > 0 {
                denied.push(index.to_string());
            }
        }
        if !denied.is_empty() {
            out.push_str(&format!(
                "  linkStyle {} stroke:#c00,color:#c00\n",
                denied.join(",")
            ));
        }
        out
    }

    /// The graph laid out and drawn by actguard itself (layout-rs; no Graphviz).
    pub fn to_svg(&self) -> String {
        use layout::backends::svg::SVGWriter;
        use layout::core::base::Orientation;
        use layout::core::color::Color;
        use layout::core::geometry::Point;
        use layout::core::style::{LineStyleKind, StyleAttr};
        use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
        use layout::topo::layout::VisualGraph;
        let mut graph = VisualGraph::new(Orientation::LeftToRight);
        let mut handles = BTreeMap::new();
        for (id, kind) in &self.nodes {
            let (shape, fill) = match kind {
                NodeKind::Principal => (ShapeKind::new_circle(id), "#e8f0fe"),
                NodeKind::Agent => (ShapeKind::new_box(id), "#f1f3f4"),
                NodeKind::Tool => (ShapeKind::new_double_circle(id), "#e6f4ea"),
            };
            let look = StyleAttr::new(Color::fast("black"), 1, Some(Color::fast(fill)), 0, 12);
            let width = (id.chars().count() as f64 * 7.5 + 24.0).clamp(60.0, 420.0);
            let size = Point::new(width, 40.0);
            let handle =
                graph.add_node(Element::create(shape, look, Orientation::LeftToRight, size));
            handles.insert(id.as_str(), handle);
        }
        for ((from, to, _), counts) in &self.edges {
            let (Some(from), Some(to)) = (handles.get(from.as_str()), handles.get(to.as_str()))
            else {
                continue;
            };
            let color = if counts.denied > 0 { "red" } else { "black" };
            let look = StyleAttr::new(Color::fast(color), 1, None, 0, 11);
            let line = if counts.allowed == 0 {
                LineStyleKind::Dashed
            } else {
                LineStyleKind::Normal
            };
            let arrow = Arrow::new(
                LineEndKind::None,
                LineEndKind::Arrow,
                line,
                &Self::label(counts),
                &look,
                &None,
                &None,
            );
            graph.add_edge(arrow, *from, *to);
        }
        let mut svg = SVGWriter::new();
        if self.nodes.is_empty() {
            return svg.finalize();
        }
        graph.do_it(false, true, false, &mut svg);
        deterministic_styles(svg.finalize())
    }

    pub fn render(&self, format: Format) -> Result<String, String> {
        match format {
            Format::Svg => self.to_bounded_svg(),
            Format::Dot => Ok(self.to_dot()),
            Format::Mermaid => Ok(self.to_mermaid()),
            Format::Json => Ok(self.to_json()),
        }
    }

    /// [`Self::to_svg`] within [`MAX_SVG_NODES`], [`MAX_SVG_EDGES`] and [`SVG_DEADLINE`].
    fn to_bounded_svg(&self) -> Result<String, String> {
        let too_large = || {
            format!(
                "the graph has {} nodes and {} edges: too large to lay out as SVG here (at most {MAX_SVG_NODES} nodes and {MAX_SVG_EDGES} edges); narrow it with --since, or use --format dot (Graphviz), mermaid or json",
                self.nodes.len(),
                self.edges.len()
            )
        };
        if self.nodes.len() > MAX_SVG_NODES || self.edges.len() > MAX_SVG_EDGES {
            return Err(too_large());
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        let graph = Graph {
            nodes: self.nodes.clone(),
            edges: self.edges.clone(),
            ..Graph::default()
        };
        std::thread::spawn(move || {
            let _ = sender.send(graph.to_svg());
        });
        receiver.recv_timeout(SVG_DEADLINE).map_err(|_| {
            format!(
                "the SVG layout did not finish within {}s; {}",
                SVG_DEADLINE.as_secs(),
                too_large()
            )
        })
    }
}

/// The SVG with its `<style>` rules in sorted order: the layout crate writes its font classes
/// from a hash map, in an order that changes from run to run.
fn deterministic_styles(svg: String) -> String {
    let (Some(start), Some(end)) = (svg.find("<style>\n"), svg.find("</style>")) else {
        return svg;
    };
    let body = start + "<style>\n".len();
    if end < body {
        return svg;
    }
    let mut rules: Vec<&str> = svg[body..end]
        .lines()
        .filter(|line| !line.is_empty())
        .collect();
    rules.sort_unstable();
    let mut out = String::with_capacity(svg.len());
    out.push_str(&svg[..body]);
    for rule in rules {
        out.push_str(rule);
        out.push('\n');
    }
    out.push_str(&svg[end..]);
    out
}

/// The graph of `files`, decisions at most `since` old.
pub fn build(files: &[PathBuf], since: Option<&str>) -> Result<Graph, String> {
    let since = records::since_of(since)?;
    let mut graph = Graph::default();
    let totals = records::read(files, since, &mut |decision| graph.add(decision))?;
    graph.skipped = totals.skipped + totals.newer;
    report_dropped(&graph);
    Ok(graph)
}

/// Says on stderr what did not fit in the graph.
pub fn report_dropped(graph: &Graph) {
    if graph.dropped > 0 {
        eprintln!(
            "the graph is bounded at {MAX_NODES} nodes and {MAX_EDGES} edges: {} contribution(s) did not fit",
            graph.dropped
        );
    }
}

/// `actguard graph`.
pub fn run(files: &[PathBuf], since: Option<&str>, format: Format, out: Option<&Path>) -> ExitCode {
    records::respond(
        out,
        build(files, since).and_then(|graph| graph.render(format)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(value: serde_json::Value) -> Vec<u8> {
        value.to_string().into_bytes()
    }

    #[test]
    fn principals_collapse_by_family_and_agents_keep_their_ids() {
        assert_eq!(principal("user:alice"), "user:*");
        assert_eq!(
            principal("spiffe://example.org/agent/a"),
            "spiffe://example.org/agent/a"
        );
        assert_eq!(principal("alice"), "alice");
    }

    #[test]
    fn hops_and_calls_are_counted_and_denials_keep_their_reasons() {
        let mut graph = Graph::default();
        let a = "spiffe://e.org/a";
        let b = "spiffe://e.org/b";
        for _ in 0..2 {
            graph.add_line(&line(
                serde_json::json!({"time": "2026-12-04T00:00:00.000Z", "caller": b,
                    "subject": "user:alice", "chain": [a, b], "route": "cal", "decision": "allow"}),
            ));
        }
        graph.add_line(&line(
            serde_json::json!({"time": "2026-12-04T00:00:00.000Z", "caller": a,
                "subject": "user:bob", "chain": [a, b], "route": "cal", "decision": "deny",
                "reason": "actor_mismatch"}),
        ));
        graph.add_line(&line(serde_json::json!({"event": "admin", "op": "revoke"})));
        graph.add_line(b"not json");
        assert_eq!(graph.decisions, 3);
        assert_eq!(graph.skipped, 2);
        let hop = &graph.edges[&("user:*".to_owned(), a.to_owned(), EdgeKind::Delegates)];
        assert_eq!((hop.allowed, hop.denied), (2, 1));
        let denied_call = &graph.edges[&(a.to_owned(), "cal".to_owned(), EdgeKind::Calls)];
        assert_eq!(denied_call.reasons["actor_mismatch"], 1);
        assert!(graph.to_dot().contains("color=red"));
        assert!(graph.to_mermaid().contains("linkStyle"));
        // Deterministic.
        assert_eq!(graph.to_json(), graph.to_json());
    }

    #[test]
    fn labels_in_dot_and_mermaid_cannot_break_out_of_their_quotes() {
        let mut graph = Graph::default();
        graph.add_line(&line(
            serde_json::json!({"caller": "spiffe://e.org/a\"];x[\"", "subject": "u\"]:<b>",
                "chain": [], "route": "r", "decision": "allow"}),
        ));
        let dot = graph.to_dot();
        assert!(dot.contains("\\\"];x[\\\""), "{dot}");
        let mermaid = graph.to_mermaid();
        assert!(
            !mermaid.contains("<b>") && mermaid.contains("#quot;"),
            "{mermaid}"
        );
        let svg = graph.to_svg();
        assert!(!svg.contains("<b>"), "{svg}");
        // Control characters cannot make the SVG invalid XML, nor a huge id a huge node (a
        // subject past the writer's 1 KiB cap is no line actguard wrote, and is skipped).
        let mut graph = Graph::default();
        graph.add_line(&line(
            serde_json::json!({"caller": "spiffe://e.org/a", "subject": "x".repeat(5000),
                "chain": [], "route": "r", "decision": "deny", "reason": "r"}),
        ));
        assert_eq!((graph.decisions, graph.skipped), (0, 1));
        let long = "x".repeat(1000);
        graph.add_line(&line(
            serde_json::json!({"caller": "spiffe://e.org/a\u{1}\u{202e}", "subject": long,
                "chain": [], "route": "r", "decision": "deny", "reason": "r\u{0}"}),
        ));
        assert!(
            graph
                .nodes
                .keys()
                .all(|id| id.len() <= MAX_LABEL && !id.contains(['\u{1}', '\u{202e}']))
        );
        assert!(!graph.to_svg().contains('\u{1}'));
        assert!(graph.to_mermaid().contains('\u{fffd}'));
    }
}
