//! `actguard policy suggest` (issue #18): the tightest delegation edges, depth limits and
//! per-route `allow_callers` that would have allowed every allowed decision of the audit logs,
//! and nothing broader.
//!
//! From audit records only: for each allowed decision, its route, caller, principal (`sub`,
//! collapsed to its family like `user:*`) and chain. Suggested:
//! - `delegation.edges`: every hop seen (principal family → first delegate → … → current
//!   actor), exact IDs;
//! - `delegation.max_depth`: the longest chain seen; per route `max_depth`, its longest;
//! - per route `allow_callers`: the callers seen, exact, or `…/parent/*` where at least
//!   [`FAMILY`] callers under one parent path were seen (the data shows a family).
//!
//! - `delegation.ceilings`: per actor seen (families as for callers), the scopes its allowed
//!   chains carried, then `*` with none, so an actor never seen carries no scope. Only from
//!   audit lines that record scopes (format version 2); with any older allowed line, not at all.
//!
//! Routes no allowed decision named are left as they are, and reported. With `--config`, the
//! output is that configuration with the suggestion applied, which `check-config` accepts, with
//! comments at the top: each change, a line diff against the current configuration (both as
//! this module writes YAML), and what the suggestion would have decided differently over the
//! audit log ([`Impact`]).

use super::records::{self, Decision};
use crate::decision::delegation::{edges_allowed, within_ceilings};
use crate::decision::policy::caller_allowed;
use crate::decision::reason::DenyReason;
use crate::decision::settings::DecisionSettings;
use crate::decision::spiffe::SpiffeId;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Callers under one parent path that make a family (`parent/*`).
pub const FAMILY: usize = 3;

/// What the allowed decisions showed.
#[derive(Debug, Default)]
pub struct Observed {
    pub allowed: u64,
    pub routes: BTreeMap<String, RouteSeen>,
    pub edges: BTreeSet<(String, String)>,
    pub max_depth: usize,
    /// The scopes the allowed chains through each actor carried.
    pub actor_scopes: BTreeMap<String, BTreeSet<String>>,
    /// Allowed decisions whose lines recorded no scopes (audit format version 1).
    pub unscoped: u64,
}

#[derive(Debug, Default)]
pub struct RouteSeen {
    pub callers: BTreeSet<String>,
    pub max_depth: usize,
}

/// Most distinct scopes kept per actor (a ceiling longer than this is not least privilege).
const MAX_SCOPES_PER_ACTOR: usize = 256;

impl Observed {
    pub fn add(&mut self, decision: &Decision) {
        if !decision.allowed() {
            return;
        }
        let (Some(route), Some(caller)) = (decision.text("route"), decision.text("caller")) else {
            return;
        };
        self.allowed += 1;
        let chain = decision.chain();
        let seen = self.routes.entry(route.to_owned()).or_default();
        seen.callers.insert(caller.to_owned());
        seen.max_depth = seen.max_depth.max(chain.len());
        self.max_depth = self.max_depth.max(chain.len());
        if let (Some(subject), Some(first)) = (decision.text("subject"), chain.first()) {
            self.edges
                .insert((super::graph::principal(subject), (*first).to_owned()));
        }
        for hop in chain.windows(2) {
            self.edges.insert((hop[0].to_owned(), hop[1].to_owned()));
        }
        if decision.version() < 2 {
            self.unscoped += 1;
            return;
        }
        // A direct call's caller is its only actor (as the ceiling check counts it).
        let actors = if chain.is_empty() {
            vec![caller]
        } else {
            chain
        };
        let scopes = decision.scopes();
        for actor in actors {
            let known = self.actor_scopes.entry(actor.to_owned()).or_default();
            for scope in &scopes {
                if known.len() < MAX_SCOPES_PER_ACTOR {
                    known.insert((*scope).to_owned());
                }
            }
        }
    }

    /// `delegation.ceilings`: each actor (or family) seen with the scopes it carried, then
    /// `*` with none; `None` when some allowed line recorded no scopes.
    pub fn ceilings(&self) -> Option<Vec<Value>> {
        if self.unscoped > 0 {
            return None;
        }
        let actors: BTreeSet<String> = self.actor_scopes.keys().cloned().collect();
        let mut out = Vec::new();
        for pattern in callers_with_families(&actors) {
            let scopes: BTreeSet<&String> = match pattern.strip_suffix("/*") {
                Some(parent) => self
                    .actor_scopes
                    .iter()
                    .filter(|(actor, _)| {
                        actor
                            .strip_prefix(parent)
                            .is_some_and(|rest| rest.starts_with('/'))
                    })
                    .flat_map(|(_, scopes)| scopes)
                    .collect(),
                None => self.actor_scopes[&pattern].iter().collect(),
            };
            out.push(json!({"actor": pattern, "scopes": scopes}));
        }
        out.push(json!({"actor": "*", "scopes": []}));
        Some(out)
    }
}

/// `callers` with every family of at least [`FAMILY`] IDs under one parent path as `parent/*`.
pub fn callers_with_families(callers: &BTreeSet<String>) -> Vec<String> {
    let mut by_parent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for caller in callers {
        let parent = caller
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.rfind('/').map(|at| &caller[..at + "spiffe://".len()]))
            .filter(|parent| parent.matches('/').count() >= 3);
        match parent {
            Some(parent) => by_parent.entry(parent).or_default().push(caller),
            None => by_parent.entry(caller).or_default().push(caller),
        }
    }
    let mut out = Vec::new();
    for (parent, members) in by_parent {
        if members.len() >= FAMILY && members.iter().all(|member| *member != parent) {
            out.push(format!("{parent}/*"));
        } else {
            out.extend(members.into_iter().map(str::to_owned));
        }
    }
    out
}

/// The suggestion as configuration values: `delegation` and the routes' rules.
fn suggested_delegation(observed: &Observed, current: Option<&Value>) -> Value {
    let mut delegation = current
        .and_then(|config| config.get("delegation"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    delegation.insert("max_depth".into(), json!(observed.max_depth));
    if let Some(ceilings) = observed.ceilings() {
        delegation.insert("ceilings".into(), Value::Array(ceilings));
    }
    delegation.insert(
        "edges".into(),
        Value::Array(
            observed
                .edges
                .iter()
                .map(|(from, to)| json!({"from": from, "to": to}))
                .collect(),
        ),
    );
    Value::Object(delegation)
}

/// MCP tool rules may only lower the route's depth: keeps them within `limit`.
fn clamp_tool_depths(route: &mut Value, limit: usize) {
    if let Some(tools) = route
        .get_mut("mcp")
        .and_then(|mcp| mcp.get_mut("tools"))
        .and_then(Value::as_array_mut)
    {
        for tool in tools {
            if tool["max_depth"]
                .as_u64()
                .is_some_and(|depth| depth as usize > limit)
            {
                tool["max_depth"] = json!(limit);
            }
        }
    }
}

/// Applies the suggestion to `config` (a parsed configuration); the changes, for comments.
fn apply(observed: &Observed, config: &mut Value) -> Vec<String> {
    let mut changes = Vec::new();
    let before = config.get("delegation").cloned().unwrap_or(Value::Null);
    let delegation = suggested_delegation(observed, Some(config));
    changes.push(format!(
        "delegation.max_depth: {} -> {}",
        before
            .get("max_depth")
            .map_or("3 (default)".to_owned(), Value::to_string),
        observed.max_depth
    ));
    changes.push(format!(
        "delegation.edges: {} -> {} edge(s) seen",
        before.get("edges").and_then(Value::as_array).map_or(
            "any hop".to_owned(),
            |edges| format!("{} edge(s)", edges.len())
        ),
        observed.edges.len()
    ));
    let ceilings = |value: Option<&Value>| {
        value
            .and_then(Value::as_array)
            .map_or("none".to_owned(), |ceilings| {
                format!("{} ceiling(s)", ceilings.len())
            })
    };
    match observed.ceilings() {
        Some(suggested) => changes.push(format!(
            "delegation.ceilings: {} -> {} (the scopes each actor's allowed chains carried; `*` none)",
            ceilings(before.get("ceilings")),
            suggested.len()
        )),
        None => changes.push(format!(
            "delegation.ceilings: left as they are ({}): {} allowed line(s) recorded no scopes (audit format version 1)",
            ceilings(before.get("ceilings")),
            observed.unscoped
        )),
    }
    if let Some(map) = config.as_object_mut() {
        map.insert("delegation".into(), delegation);
    }
    let routes = config
        .get_mut("routes")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut updated = Vec::new();
    for mut route in routes {
        let name = route["name"].as_str().unwrap_or_default().to_owned();
        match (observed.routes.get(&name), route.as_object_mut()) {
            (Some(seen), Some(map)) => {
                let callers = callers_with_families(&seen.callers);
                changes.push(format!(
                    "routes[{name}].allow_callers: {} -> {}",
                    map.get("allow_callers")
                        .map_or("any".to_owned(), Value::to_string),
                    json!(callers)
                ));
                changes.push(format!(
                    "routes[{name}].max_depth: {} -> {}",
                    map.get("max_depth")
                        .map_or("global".to_owned(), Value::to_string),
                    seen.max_depth
                ));
                map.insert("allow_callers".into(), json!(callers));
                map.insert("max_depth".into(), json!(seen.max_depth));
                clamp_tool_depths(&mut route, seen.max_depth);
            }
            _ => {
                // Left as it is, but a route's depth may not exceed the global one.
                let limit = observed.max_depth as u64;
                match route.get_mut("max_depth") {
                    Some(depth) if depth.as_u64().is_some_and(|depth| depth > limit) => {
                        changes.push(format!(
                            "routes[{name}]: no allowed decision seen; max_depth {depth} -> {limit} (at most the global max_depth), otherwise left as it is"
                        ));
                        *depth = json!(limit);
                    }
                    _ => changes.push(format!(
                        "routes[{name}]: no allowed decision seen; left as it is"
                    )),
                }
                clamp_tool_depths(&mut route, observed.max_depth);
            }
        }
        updated.push(route);
    }
    if let Some(map) = config.as_object_mut() {
        map.insert("routes".into(), Value::Array(updated));
    }
    for name in observed.routes.keys() {
        let configured = config["routes"]
            .as_array()
            .is_some_and(|routes| routes.iter().any(|route| route["name"] == name.as_str()));
        if !configured {
            changes.push(format!(
                "route {name} was seen in the audit log but is not in this configuration"
            ));
        }
    }
    changes
}

/// A YAML scalar: plain when it reads back as the same string, else double-quoted (JSON
/// escapes are YAML escapes).
fn scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
        && !text.starts_with(['-', ':', '.', '@'])
        && !text.contains(": ")
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~"
        )
        && text.parse::<f64>().is_err();
    if plain {
        text.to_owned()
    } else {
        Value::String(text.to_owned()).to_string()
    }
}

/// `value` as block YAML, indented by `indent` spaces.
fn yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                write_entry(&pad, &scalar(key), child, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first member on the dash's line, the rest aligned under it.
                        let mut first = true;
                        for (key, child) in map {
                            let lead = if first {
                                format!("{pad}- ")
                            } else {
                                format!("{pad}  ")
                            };
                            first = false;
                            write_entry(&lead, &scalar(key), child, indent + 2, out);
                        }
                    }
                    _ => {
                        out.push_str(&format!("{pad}- {}\n", inline(item)));
                    }
                }
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", inline(value))),
    }
}

fn write_entry(lead: &str, key: &str, child: &Value, indent: usize, out: &mut String) {
    match child {
        Value::Object(map) if !map.is_empty() => {
            out.push_str(&format!("{lead}{key}:\n"));
            yaml(child, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str(&format!("{lead}{key}:\n"));
            yaml(child, indent + 2, out);
        }
        _ => out.push_str(&format!("{lead}{key}: {}\n", inline(child))),
    }
}

/// A value on one line (flow style for empty collections).
fn inline(value: &Value) -> String {
    match value {
        Value::String(text) => scalar(text),
        Value::Array(items) if items.is_empty() => "[]".into(),
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
        other => other.to_string(),
    }
}

/// What the suggestion would have decided differently, over the audit log's decisions, for
/// the checks it changes (depth, edges, ceilings, callers), evaluated with the sidecar's own
/// rules on both configurations.
#[derive(Debug, Default)]
pub struct Impact {
    /// Decisions whose route both configurations name (the others cannot be evaluated).
    pub evaluated: u64,
    pub unevaluated: u64,
    /// Allowed decisions the suggestion would deny, by route and the reason it would give.
    pub newly_denied: BTreeMap<(String, &'static str), u64>,
    /// Denied decisions that would get past the check that denied them, by route and reason.
    pub no_longer_denied: BTreeMap<(String, String), u64>,
}

/// The reasons of the checks a suggestion changes.
fn changed_checks() -> [&'static str; 4] {
    [
        DenyReason::DelegationTooDeep.code(),
        DenyReason::DelegationEdgeDenied.code(),
        DenyReason::DelegationCeilingExceeded.code(),
        DenyReason::CallerNotAllowed.code(),
    ]
}

/// The first of the suggestion's checks `decision` fails under `settings`, in the pipeline's
/// order; `None` when the decision cannot be evaluated there (route unknown, no caller or
/// subject).
fn first_failed(settings: &DecisionSettings, decision: &Decision) -> Option<Option<&'static str>> {
    let name = decision.text("route")?;
    let route = settings.routes.iter().find(|route| &*route.name == name)?;
    let caller = SpiffeId::parse(decision.text("caller")?).ok()?;
    let subject = decision.text("subject")?;
    let chain = decision.chain();
    let policy = &settings.delegation;
    if chain.len() > policy.depth_limit(route) {
        return Some(Some(DenyReason::DelegationTooDeep.code()));
    }
    if let Some(edges) = &policy.edges
        && !edges_allowed(edges, subject, &chain)
    {
        return Some(Some(DenyReason::DelegationEdgeDenied.code()));
    }
    if decision.version() >= 2 {
        let actors = if chain.is_empty() {
            vec![caller.as_str()]
        } else {
            chain
        };
        let scopes: Vec<Box<str>> = decision.scopes().into_iter().map(Into::into).collect();
        if !within_ceilings(&policy.ceilings, &actors, &scopes) {
            return Some(Some(DenyReason::DelegationCeilingExceeded.code()));
        }
    }
    if !caller_allowed(route.allow_callers.as_deref(), &caller) {
        return Some(Some(DenyReason::CallerNotAllowed.code()));
    }
    Some(None)
}

impl Impact {
    fn add(
        &mut self,
        current: &DecisionSettings,
        suggested: &DecisionSettings,
        decision: &Decision,
    ) {
        let (Some(before), Some(after)) = (
            first_failed(current, decision),
            first_failed(suggested, decision),
        ) else {
            self.unevaluated += 1;
            return;
        };
        self.evaluated += 1;
        let route = decision.text("route").unwrap_or_default().to_owned();
        match decision.reason() {
            None => {
                if let Some(reason) = after {
                    *self.newly_denied.entry((route, reason)).or_default() += 1;
                }
            }
            // Denied by one of the changed checks (and so under the current rules), and the
            // suggestion passes all of them.
            Some(reason) if changed_checks().contains(&reason) => {
                if before == Some(reason) && after.is_none() {
                    *self
                        .no_longer_denied
                        .entry((route, reason.to_owned()))
                        .or_default() += 1;
                }
            }
            Some(_) => {}
        }
    }

    fn comments(&self, out: &mut String) {
        out.push_str(&format!(
            "# What it would have decided differently, over the {} decision(s) of the audit log whose route both configurations name ({} not evaluated):\n",
            self.evaluated, self.unevaluated
        ));
        let denied: u64 = self.newly_denied.values().sum();
        out.push_str(&format!("#   allowed decisions it would deny: {denied}\n"));
        for ((route, reason), count) in &self.newly_denied {
            out.push_str(&format!("#     {route}: {count} x {reason}\n"));
        }
        let passed: u64 = self.no_longer_denied.values().sum();
        out.push_str(&format!(
            "#   denied decisions it would no longer deny for their reason (later steps not evaluated): {passed}\n"
        ));
        for ((route, reason), count) in &self.no_longer_denied {
            out.push_str(&format!("#     {route}: {count} x {reason}\n"));
        }
    }
}

/// Most cells of the line-diff table; configurations beyond are not diffed.
const MAX_DIFF_CELLS: usize = 4_000_000;
/// Unchanged lines shown around each change.
const CONTEXT: usize = 2;

/// A line diff of `before` and `after` (longest common subsequence): unchanged lines near a
/// change as `  line`, removed `- line`, added `+ line`, skipped runs as `…`.
pub fn line_diff(before: &str, after: &str) -> Vec<String> {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    if (a.len() + 1).saturating_mul(b.len() + 1) > MAX_DIFF_CELLS {
        return vec![format!(
            "(not diffed: {} and {} lines are too many)",
            a.len(),
            b.len()
        )];
    }
    // lengths[i][j]: the longest common subsequence of a[i..] and b[j..].
    let width = b.len() + 1;
    let mut lengths = vec![0u32; (a.len() + 1) * width];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lengths[i * width + j] = if a[i] == b[j] {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }
    let mut edits: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            edits.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len()
            && (i == a.len() || lengths[i * width + j + 1] >= lengths[(i + 1) * width + j])
        {
            edits.push(('+', b[j]));
            j += 1;
        } else {
            edits.push(('-', a[i]));
            i += 1;
        }
    }
    let near = |index: usize| {
        let from = index.saturating_sub(CONTEXT);
        let to = (index + CONTEXT + 1).min(edits.len());
        edits[from..to].iter().any(|(kind, _)| *kind != ' ')
    };
    let mut out = Vec::new();
    let mut skipped = false;
    for (index, (kind, line)) in edits.iter().enumerate() {
        if *kind == ' ' && !near(index) {
            if !skipped {
                out.push("…".to_owned());
                skipped = true;
            }
            continue;
        }
        skipped = false;
        out.push(format!("{kind} {line}"));
    }
    out
}

/// The suggestion from the decisions of `files`.
pub fn observe(files: &[PathBuf]) -> Result<Observed, String> {
    let mut observed = Observed::default();
    records::read(files, None, &mut |decision| observed.add(decision))?;
    Ok(observed)
}

fn header(observed: &Observed) -> String {
    let ceilings = if observed.unscoped > 0 {
        format!(
            "Not derived: delegation.ceilings\n# ({} allowed line(s) of audit format version 1 recorded no scopes).",
            observed.unscoped
        )
    } else {
        "Ceilings: the scopes each actor's\n# allowed chains carried.".to_owned()
    };
    format!(
        "# Suggested by actguard policy suggest from {} allowed decision(s): the tightest edges,\n# depths and callers that allow every one of them. {ceilings}\n",
        observed.allowed
    )
}

/// The suggestion alone, with its header: the `delegation` block and the routes' rules.
pub fn standalone(observed: &Observed) -> String {
    let mut out = header(observed);
    let mut document = Map::new();
    document.insert("delegation".into(), suggested_delegation(observed, None));
    let routes: Vec<Value> = observed
        .routes
        .iter()
        .map(|(name, seen)| {
            json!({
                "name": name,
                "allow_callers": callers_with_families(&seen.callers),
                "max_depth": seen.max_depth,
            })
        })
        .collect();
    document.insert("routes".into(), Value::Array(routes));
    out.push_str("# Merge into your configuration (or pass --config to get it merged).\n");
    yaml(&Value::Object(document), 0, &mut out);
    out
}

/// The suggestion as YAML: the whole configuration `current` names with it applied (changes,
/// a diff and its impact as comments), or, without one, the `delegation` block and the routes'
/// rules.
pub fn suggest(files: &[PathBuf], current: Option<&Path>) -> Result<String, String> {
    let observed = observe(files)?;
    if observed.allowed == 0 {
        return Err("no allowed decision in the audit log: nothing to derive a policy from".into());
    }
    let mut out = header(&observed);
    match current {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            let mut config = crate::config::reader::parse_yaml(&text)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            let mut before = String::new();
            yaml(&config, 0, &mut before);
            for change in apply(&observed, &mut config) {
                out.push_str(&format!("# {change}\n"));
            }
            let mut body = String::new();
            yaml(&config, 0, &mut body);
            out.push_str(&format!(
                "# Diff against {} (both as actguard writes YAML, comments dropped):\n",
                path.display()
            ));
            for line in line_diff(&before, &body) {
                out.push_str(&format!("# {line}\n"));
            }
            let base = path.parent().unwrap_or(Path::new("."));
            let loaded = crate::config::Config::from_file(path)
                .map_err(|errors| format!("{}: {errors}", path.display()))
                .and_then(|current| {
                    crate::config::Config::from_yaml(&body, base)
                        .map(|suggested| (current, suggested))
                        .map_err(|errors| format!("the suggestion: {errors}"))
                });
            match loaded {
                Ok((current, suggested)) => {
                    let mut impact = Impact::default();
                    records::read(files, None, &mut |decision| {
                        impact.add(&current.decision, &suggested.decision, decision)
                    })?;
                    impact.comments(&mut out);
                }
                Err(error) => out.push_str(&format!(
                    "# What it would have decided differently: not evaluated ({})\n",
                    error.replace('\n', " ")
                )),
            }
            out.push_str(&body);
        }
        None => out = standalone(&observed),
    }
    Ok(out)
}

/// `actguard policy suggest`.
pub fn run(files: &[PathBuf], current: Option<&Path>) -> ExitCode {
    match suggest(files, current) {
        Ok(text) => records::write_output(None, &text),
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_needs_enough_members_under_one_parent() {
        let set = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect();
        assert_eq!(
            callers_with_families(&set(&[
                "spiffe://e.org/agent/a",
                "spiffe://e.org/agent/b",
                "spiffe://e.org/agent/c",
                "spiffe://e.org/tool/x",
            ])),
            ["spiffe://e.org/agent/*", "spiffe://e.org/tool/x"]
        );
        assert_eq!(
            callers_with_families(&set(&["spiffe://e.org/agent/a", "spiffe://e.org/agent/b"])),
            ["spiffe://e.org/agent/a", "spiffe://e.org/agent/b"]
        );
    }

    #[test]
    fn yaml_scalars_that_would_read_back_otherwise_are_quoted() {
        for (text, expected) in [
            ("user:*", "\"user:*\""),
            ("y", "\"y\""),
            ("off", "\"off\""),
            ("3", "\"3\""),
            ("spiffe://e.org/a", "spiffe://e.org/a"),
            ("calendar-read", "calendar-read"),
            ("a: b", "\"a: b\""),
        ] {
            assert_eq!(scalar(text), expected, "{text}");
        }
        let mut out = String::new();
        yaml(
            &json!({"routes": [{"name": "r", "allow_callers": ["spiffe://e.org/a"], "max_depth": 1}]}),
            0,
            &mut out,
        );
        let back: Value = crate::config::reader::parse_yaml(&out).unwrap();
        assert_eq!(back["routes"][0]["allow_callers"][0], "spiffe://e.org/a");
        assert_eq!(back["routes"][0]["max_depth"], 1);
    }
}
