//! `actguard report` (issue #18): one self-contained HTML page from audit logs — the
//! delegation graph, the top deny reasons over time, per-agent and per-route tables (calls,
//! denies, depth seen, scopes used) and the policy `actguard policy suggest` derives.
//!
//! One streamed pass over the files feeds the graph ([`super::graph`]), the suggestion
//! ([`super::policy`]) and the tables, each bounded: rows at [`MAX_ROWS`] (the rest summed in
//! one `(other)` row), scopes and reasons per row, time buckets (doubled in width when there are
//! too many). The page has no script and no external reference, and its Content-Security-Policy
//! forbids loading anything; every text from a log is HTML-escaped. The output is deterministic
//! for the same input (no generation time is written), so reports diff cleanly.

use super::graph::{self, Graph};
use super::policy::{self, Observed};
use super::records::{self, Decision, OTHER_REASONS};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Rows per table; further agents or routes are summed in one `(other)` row.
pub const MAX_ROWS: usize = 500;
/// Scopes listed per row (the rest counted).
const MAX_SCOPES: usize = 32;
/// Time buckets kept while reading; past this the bucket width doubles.
const MAX_BUCKETS: usize = 512;
/// Columns of the deny-reasons-over-time chart and table.
const COLUMNS: usize = 24;
/// Reasons the chart colours (the rest are `other`).
const CHART_REASONS: usize = 6;
const OTHER: &str = "(other)";

/// Decisions through one agent or one route.
#[derive(Debug, Default)]
pub struct Row {
    pub allowed: u64,
    pub denied: u64,
    pub max_depth: usize,
    pub scopes: BTreeSet<String>,
    pub more_scopes: bool,
    pub reasons: BTreeMap<String, u64>,
    /// Distinct callers (routes only), bounded like scopes.
    pub callers: BTreeSet<String>,
    pub more_callers: bool,
}

impl Row {
    fn add(&mut self, decision: &Decision, caller: Option<&str>) {
        let depth = decision.chain().len();
        self.max_depth = self.max_depth.max(depth);
        match decision.reason() {
            None => self.allowed += 1,
            Some(reason) => {
                self.denied += 1;
                records::count_bounded(&mut self.reasons, reason, 1);
            }
        }
        for scope in decision.scopes() {
            bounded_insert(&mut self.scopes, &mut self.more_scopes, scope);
        }
        if let Some(caller) = caller {
            bounded_insert(&mut self.callers, &mut self.more_callers, caller);
        }
    }

    fn top_reasons(&self) -> String {
        records::top_counts(&self.reasons, 3)
            .iter()
            .map(|(reason, count)| format!("{reason} ({count})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn bounded_insert(set: &mut BTreeSet<String>, more: &mut bool, value: &str) {
    if set.contains(value) {
        return;
    }
    if set.len() < MAX_SCOPES {
        set.insert(value.to_owned());
    } else {
        *more = true;
    }
}

/// Rows by key, at most [`MAX_ROWS`] plus `(other)`.
#[derive(Debug, Default)]
pub struct Table {
    pub rows: BTreeMap<String, Row>,
}

impl Table {
    fn row(&mut self, key: &str) -> &mut Row {
        let key = if self.rows.contains_key(key) || self.rows.len() < MAX_ROWS {
            key
        } else {
            OTHER
        };
        self.rows.entry(key.to_owned()).or_default()
    }
}

/// Denies per time bucket and reason.
#[derive(Debug)]
pub struct Timeline {
    /// Seconds per bucket (doubles as needed to stay within [`MAX_BUCKETS`]).
    pub width: i64,
    pub buckets: BTreeMap<i64, BTreeMap<String, u64>>,
    /// Denies without a readable time.
    pub untimed: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            width: 60,
            buckets: BTreeMap::new(),
            untimed: 0,
        }
    }
}

impl Timeline {
    fn add(&mut self, time: Option<i64>, reason: &str) {
        let Some(time) = time else {
            self.untimed += 1;
            return;
        };
        let start = time.div_euclid(self.width) * self.width;
        records::count_bounded(self.buckets.entry(start).or_default(), reason, 1);
        while self.buckets.len() > MAX_BUCKETS {
            self.width *= 2;
            let old = std::mem::take(&mut self.buckets);
            for (start, reasons) in old {
                let bucket = self
                    .buckets
                    .entry(start.div_euclid(self.width) * self.width)
                    .or_default();
                for (reason, count) in reasons {
                    records::count_bounded(bucket, &reason, count);
                }
            }
        }
    }

    /// At most [`COLUMNS`] columns over `first..=last`: (start, reasons).
    fn columns(&self, first: i64, last: i64) -> Vec<(i64, BTreeMap<String, u64>)> {
        let span = (last - first).max(1);
        // A column is a whole number of buckets, wide enough for COLUMNS to cover the span.
        let per = (span / self.width / COLUMNS as i64 + 1).max(1);
        let width = per * self.width;
        let origin = first.div_euclid(width) * width;
        let count = ((last - origin) / width + 1) as usize;
        let mut columns: Vec<(i64, BTreeMap<String, u64>)> = (0..count.min(COLUMNS + 1))
            .map(|index| (origin + index as i64 * width, BTreeMap::new()))
            .collect();
        for (start, reasons) in &self.buckets {
            let index = (((start - origin) / width) as usize).min(columns.len() - 1);
            for (reason, count) in reasons {
                *columns[index].1.entry(reason.clone()).or_default() += count;
            }
        }
        columns
    }
}

/// Everything the page shows.
#[derive(Default)]
pub struct Report {
    pub graph: Graph,
    pub observed: Observed,
    pub agents: Table,
    pub routes: Table,
    pub timeline: Timeline,
    pub totals: records::Totals,
    pub allowed: u64,
    pub denied: u64,
    /// Denials on shadow routes (answered with an allow).
    pub shadowed: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl Report {
    pub fn add(&mut self, decision: &Decision) {
        self.graph.add(decision);
        self.observed.add(decision);
        let time = decision.time();
        if let Some(time) = time {
            self.first = Some(self.first.map_or(time, |first| first.min(time)));
            self.last = Some(self.last.map_or(time, |last| last.max(time)));
        }
        match decision.reason() {
            None => self.allowed += 1,
            Some(reason) => {
                self.denied += 1;
                if decision.shadowed() {
                    self.shadowed += 1;
                }
                self.timeline.add(time, reason);
            }
        }
        let caller = decision.text("caller");
        self.agents
            .row(caller.unwrap_or("(no verified caller)"))
            .add(decision, None);
        self.routes
            .row(&graph::tool_of(decision))
            .add(decision, caller);
    }

    /// The report of `files`, decisions at most `since` old.
    pub fn build(files: &[PathBuf], since: Option<&str>) -> Result<Self, String> {
        let since = records::since_of(since)?;
        let mut report = Report::default();
        report.totals = records::read(files, since, &mut |decision| report.add(decision))?;
        graph::report_dropped(&report.graph);
        Ok(report)
    }

    /// The page.
    pub fn to_html(&self, files: &[PathBuf]) -> String {
        let mut page = String::with_capacity(64 * 1024);
        page.push_str(HEAD);
        page.push_str("<h1>actguard report</h1>\n<dl class=\"summary\">\n");
        let sources: Vec<String> = files
            .iter()
            .map(|file| file.display().to_string())
            .collect();
        let mut item = |term: &str, value: String| {
            page.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>\n",
                escape(term),
                escape(&value)
            ));
        };
        item("Audit logs", sources.join(", "));
        item(
            "Decisions",
            format!(
                "{} ({} allowed, {} denied)",
                self.allowed + self.denied,
                self.allowed,
                self.denied
            ),
        );
        if self.shadowed > 0 {
            item(
                "Shadow-mode denials (answered with an allow)",
                self.shadowed.to_string(),
            );
        }
        if let (Some(first), Some(last)) = (self.first, self.last) {
            item("From", format!("{} to {}", utc(first), utc(last)));
        }
        let skipped = self.totals.skipped + self.totals.newer;
        if skipped > 0 || self.totals.older > 0 {
            item(
                "Not counted",
                format!(
                    "{} line(s) not decisions, {} of a newer audit format, {} older than --since",
                    self.totals.skipped, self.totals.newer, self.totals.older
                ),
            );
        }
        page.push_str("</dl>\n");
        self.graph_section(&mut page);
        self.timeline_section(&mut page);
        table_section(
            &mut page,
            "agents",
            "Agents",
            "Each caller that presented a request: the calls it made, its denials and their top reasons, the longest delegation chain it presented and the scopes its tokens carried.",
            "Agent",
            &self.agents,
            false,
        );
        table_section(
            &mut page,
            "routes",
            "Routes and tools",
            "Each route (and MCP tool) that was asked for: calls, denials and their top reasons, the callers seen, the longest chain and the scopes the tokens carried.",
            "Route or tool",
            &self.routes,
            true,
        );
        page.push_str("<section id=\"suggestion\">\n<h2>Suggested policy</h2>\n");
        if self.observed.allowed == 0 {
            page.push_str("<p>Nothing to suggest: no allowed decision was seen.</p>\n");
        } else if let Some(what) = self.observed.overflow {
            page.push_str(&format!(
                "<p class=\"note\">Not derived: the log shows more distinct {} than a reviewable policy holds; run <code>actguard policy suggest</code> on a narrower log.</p>\n",
                escape(what)
            ));
        } else {
            page.push_str("<p>What <code>actguard policy suggest</code> derives from these decisions: the tightest delegation edges, ceilings, depths and callers that allow every allowed one. Run it with <code>--config</code> to get it merged into your configuration, with a diff and the decisions it would have changed.</p>\n<pre>");
            page.push_str(&escape(&policy::standalone(&self.observed)));
            page.push_str("</pre>\n");
        }
        page.push_str("</section>\n<footer>Made by actguard ");
        page.push_str(env!("CARGO_PKG_VERSION"));
        page.push_str(" from audit records only: they hold no tokens and no argument values, and neither does this page.</footer>\n</body>\n</html>\n");
        page
    }

    fn graph_section(&self, page: &mut String) {
        page.push_str("<section id=\"graph\">\n<h2>Delegation graph</h2>\n<p>Principals (families such as <code>user:*</code>), agents and tools; each delegation hop and call with its count, denied edges in red with their top reasons.</p>\n");
        if self.graph.nodes.is_empty() {
            page.push_str("<p>No decision named a caller or subject.</p>\n</section>\n");
            return;
        }
        match self.graph.render(graph::Format::Svg) {
            Ok(svg) => {
                // Inline: the prolog is not allowed inside HTML.
                let start = svg.find("<svg").unwrap_or(0);
                page.push_str("<figure>");
                page.push_str(&svg[start..]);
                page.push_str("</figure>\n");
            }
            Err(error) => {
                page.push_str(&format!("<p class=\"note\">{}</p>\n", escape(&error)));
            }
        }
        page.push_str("</section>\n");
    }

    fn timeline_section(&self, page: &mut String) {
        page.push_str("<section id=\"denies\">\n<h2>Deny reasons over time</h2>\n");
        let (Some(first), Some(last)) = (self.first, self.last) else {
            page.push_str("<p>No decision with a time.</p>\n</section>\n");
            return;
        };
        if self.timeline.buckets.is_empty() {
            page.push_str("<p>No denials.</p>\n</section>\n");
            return;
        }
        let columns = self.timeline.columns(first, last);
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for (_, reasons) in &columns {
            for (reason, count) in reasons {
                *totals.entry(reason.clone()).or_default() += count;
            }
        }
        // The most frequent reasons by name, then everything else as one series (the
        // overflow of the bounded counts included).
        let overflow = totals.remove(OTHER_REASONS).unwrap_or(0);
        let shown: Vec<&str> = records::top_counts(&totals, CHART_REASONS)
            .into_iter()
            .map(|(reason, _)| reason)
            .collect();
        let mut series: Vec<Option<&str>> = shown.iter().copied().map(Some).collect();
        if overflow > 0 || totals.len() > shown.len() {
            series.push(None);
        }
        let value = |reasons: &BTreeMap<String, u64>, name: Option<&str>| -> u64 {
            match name {
                Some(name) => reasons.get(name).copied().unwrap_or(0),
                None => reasons
                    .iter()
                    .filter(|(reason, _)| !shown.contains(&reason.as_str()))
                    .map(|(_, count)| count)
                    .sum(),
            }
        };
        let label = |name: Option<&str>| escape(name.unwrap_or(OTHER_REASONS));
        // The chart: one stacked bar per column.
        let peak = columns
            .iter()
            .map(|(_, reasons)| reasons.values().sum::<u64>())
            .max()
            .unwrap_or(1)
            .max(1);
        let (bar, gap, height) = (28.0, 6.0, 160.0);
        let chart_width = columns.len() as f64 * (bar + gap) + 60.0;
        page.push_str(&format!(
            "<figure><svg class=\"chart\" role=\"img\" aria-label=\"denials per interval\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{chart_width:.0}\" height=\"{:.0}\">\n",
            height + 40.0
        ));
        page.push_str(&format!(
            "<text x=\"0\" y=\"12\" class=\"axis\">{peak}</text><text x=\"0\" y=\"{:.0}\" class=\"axis\">0</text>\n",
            height + 10.0
        ));
        for (index, (_, reasons)) in columns.iter().enumerate() {
            let x = 40.0 + index as f64 * (bar + gap);
            let mut y = height + 10.0;
            for (colour, name) in series.iter().enumerate() {
                let count = value(reasons, *name);
                if count == 0 {
                    continue;
                }
                let h = count as f64 / peak as f64 * height;
                y -= h;
                page.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.0}\" height=\"{h:.1}\" fill=\"{}\"><title>{} {count}</title></rect>\n",
                    PALETTE[colour % PALETTE.len()],
                    label(*name)
                ));
            }
        }
        page.push_str("</svg></figure>\n<ul class=\"legend\">\n");
        for (colour, name) in series.iter().enumerate() {
            page.push_str(&format!(
                "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>\n",
                PALETTE[colour % PALETTE.len()],
                label(*name)
            ));
        }
        page.push_str("</ul>\n<table>\n<thead><tr><th>From (UTC)</th>");
        for name in &series {
            page.push_str(&format!("<th>{}</th>", label(*name)));
        }
        page.push_str("<th>All</th></tr></thead>\n<tbody>\n");
        for (start, reasons) in &columns {
            page.push_str(&format!("<tr><td>{}</td>", utc(*start)));
            for name in &series {
                page.push_str(&format!("<td class=\"n\">{}</td>", value(reasons, *name)));
            }
            page.push_str(&format!(
                "<td class=\"n\">{}</td></tr>\n",
                reasons.values().sum::<u64>()
            ));
        }
        page.push_str("</tbody>\n</table>\n");
        if self.timeline.untimed > 0 {
            page.push_str(&format!(
                "<p class=\"note\">{} denial(s) had no readable time and are not in the chart.</p>\n",
                self.timeline.untimed
            ));
        }
        page.push_str("</section>\n");
    }
}

fn table_section(
    page: &mut String,
    id: &str,
    title: &str,
    lead: &str,
    first: &str,
    table: &Table,
    callers: bool,
) {
    page.push_str(&format!(
        "<section id=\"{id}\">\n<h2>{}</h2>\n<p>{}</p>\n<table>\n<thead><tr><th>{}</th><th>Calls</th><th>Allowed</th><th>Denied</th>{}<th>Max depth</th><th>Scopes used</th><th>Top deny reasons</th></tr></thead>\n<tbody>\n",
        escape(title),
        escape(lead),
        escape(first),
        if callers { "<th>Callers</th>" } else { "" }
    ));
    // Busiest first (ties by name), `(other)` last.
    let mut rows: Vec<(&String, &Row)> = table
        .rows
        .iter()
        .filter(|(key, _)| key.as_str() != OTHER)
        .collect();
    rows.sort_by(|a, b| {
        (b.1.allowed + b.1.denied)
            .cmp(&(a.1.allowed + a.1.denied))
            .then(a.0.cmp(b.0))
    });
    let other_key = OTHER.to_owned();
    let tail = table.rows.get(OTHER).map(|row| (&other_key, row));
    for (key, row) in rows.into_iter().chain(tail) {
        let mut scopes: Vec<&str> = row.scopes.iter().map(String::as_str).collect();
        if row.more_scopes {
            scopes.push("…");
        }
        page.push_str(&format!(
            "<tr><td class=\"id\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td>",
            escape(key),
            row.allowed + row.denied,
            row.allowed,
            if row.denied > 0 { " denied" } else { "" },
            row.denied
        ));
        if callers {
            page.push_str(&format!(
                "<td class=\"n\">{}{}</td>",
                row.callers.len(),
                if row.more_callers { "+" } else { "" }
            ));
        }
        page.push_str(&format!(
            "<td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>\n",
            row.max_depth,
            escape(&scopes.join(" ")),
            escape(&row.top_reasons())
        ));
    }
    page.push_str("</tbody>\n</table>\n</section>\n");
}

/// Colours of the chart's series (the last is `other`'s when all are used).
const PALETTE: [&str; 7] = [
    "#c5221f", "#e37400", "#1967d2", "#188038", "#9334e6", "#007b83", "#80868b",
];

const HEAD: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>actguard report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #202124; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .25rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
figure { margin: 0; overflow-x: auto; }
#graph svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin-top: .5rem; font-size: .9rem; }
th, td { border: 1px solid #dadce0; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f1f3f4; } td.n { text-align: right; } td.denied { color: #c5221f; font-weight: 600; }
td.id { font-family: ui-monospace, monospace; word-break: break-all; max-width: 32rem; }
pre { background: #f8f9fa; border: 1px solid #dadce0; padding: 1rem; overflow-x: auto; }
ul.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 1rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: middle; }
.axis { font-size: 10px; fill: #5f6368; } .note { color: #5f6368; }
footer { margin-top: 2rem; color: #5f6368; font-size: .85rem; }
</style>
</head>
<body>
";

/// Text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push('\n'),
            c if records::invisible(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix second.
fn utc(seconds: i64) -> String {
    let text = crate::serve::audit::civil_second(seconds.max(0) as u64);
    format!("{} {}", &text[..10], &text[11..16])
}

/// `actguard report`.
pub fn run(files: &[PathBuf], since: Option<&str>, out: Option<&Path>) -> ExitCode {
    records::respond(
        out,
        Report::build(files, since).map(|report| report.to_html(files)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(value: serde_json::Value) -> Decision {
        Decision::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn text_from_a_log_cannot_become_markup() {
        let mut report = Report::default();
        report.add(&decision(serde_json::json!({
            "time": "2026-12-04T00:00:00.000Z", "v": 2,
            "caller": "spiffe://e.org/<script>alert(1)</script>", "subject": "user:\"x'\u{202e}",
            "chain": [], "scopes": ["a<b"], "route": "r&d", "decision": "deny",
            "reason": "<img src=x>"
        })));
        let page = report.to_html(&[PathBuf::from("a<b>.jsonl")]);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;") && page.contains("r&amp;d"));
        assert!(page.contains("a&lt;b"));
        // A bidirectional override would show an ID reversed: replaced.
        assert!(!page.contains('\u{202e}'));
    }

    #[test]
    fn reasons_past_the_bound_are_one_series_counted_once() {
        let mut report = Report::default();
        for index in 0..40 {
            report.add(&decision(serde_json::json!({
                "time": "2026-12-04T00:00:00.000Z", "v": 2, "caller": "spiffe://e.org/a",
                "subject": "user:a", "chain": [], "scopes": [], "route": "r",
                "decision": "deny", "reason": format!("reason_{index:02}")
            })));
        }
        let page = report.to_html(&[]);
        let table = &page[page.find("<thead><tr><th>From (UTC)</th>").unwrap()..];
        let table = &table[..table.find("</table>").unwrap()];
        // Six reasons by name and one series for the rest, whose cells add up to the 40.
        assert_eq!(table.matches("(other reasons)").count(), 1, "{table}");
        let row = &table[table.find("<tbody>").unwrap()..];
        let cells: Vec<u64> = row
            .split("<td class=\"n\">")
            .skip(1)
            .map(|cell| cell[..cell.find('<').unwrap()].parse().unwrap())
            .collect();
        assert_eq!(cells.len(), 8, "{row}");
        assert_eq!(cells[..7].iter().sum::<u64>(), 40);
        assert_eq!(cells[7], 40);
    }

    #[test]
    fn rows_and_time_buckets_stay_bounded() {
        let mut report = Report::default();
        for index in 0..(MAX_ROWS + 50) {
            // A denial a day apart each: the buckets must coarsen, not grow.
            let time = records::unix_seconds_of("2026-01-01T00:00:00.000Z").unwrap()
                + index as i64 * 86_400;
            let text = crate::serve::audit::civil_second(time as u64);
            report.add(&decision(serde_json::json!({
                "time": format!("{text}.000Z"), "v": 2,
                "caller": format!("spiffe://e.org/agent/{index}"), "subject": "user:a",
                "chain": [], "scopes": [], "route": format!("r{index}"), "decision": "deny",
                "reason": format!("reason_{}", index % 40)
            })));
        }
        assert_eq!(report.agents.rows.len(), MAX_ROWS + 1);
        assert_eq!(report.agents.rows[OTHER].denied, 50);
        assert!(report.timeline.buckets.len() <= MAX_BUCKETS);
        let first = report.first.unwrap();
        let last = report.last.unwrap();
        let columns = report.timeline.columns(first, last);
        assert!(columns.len() <= COLUMNS + 1);
        let charted: u64 = columns
            .iter()
            .map(|(_, reasons)| reasons.values().sum::<u64>())
            .sum();
        assert_eq!(charted, (MAX_ROWS + 50) as u64);
        // The same input gives the same page.
        assert_eq!(report.to_html(&[]), report.to_html(&[]));
    }
}
