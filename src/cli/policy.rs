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
use crate::config::scope_token;
use crate::decision::delegation::{
    Ceiling, Edge, PrincipalPattern, edges_allowed, within_ceilings,
};
use crate::decision::policy::caller_allowed;
use crate::decision::reason::DenyReason;
use crate::decision::settings::DecisionSettings;
use crate::decision::spiffe::SpiffeId;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Allowed decisions not learned from: a member the suggestion needs was cut by the
    /// writer (`truncated`), or the route is not a route name actguard writes.
    pub unusable: u64,
    /// Allowed decisions whose hops or scopes no configuration can name exactly (a subject
    /// that would read as a pattern, a scope that is not one scope token): edges, or
    /// ceilings, are then not derived at all rather than derived wrong.
    pub unnamable_hops: u64,
    pub unnamable_scopes: u64,
    /// What did not fit in the bounds ([`MAX_ROUTES`] …), if anything.
    pub overflow: Option<&'static str>,
    /// Bytes of the strings kept (bounded by [`MAX_OBSERVED_BYTES`]).
    pub bytes: usize,
}

#[derive(Debug, Default)]
pub struct RouteSeen {
    pub callers: BTreeSet<String>,
    pub max_depth: usize,
}

/// Most distinct scopes kept per actor (a ceiling longer than this is not least privilege).
const MAX_SCOPES_PER_ACTOR: usize = 256;
/// Bounds of a suggestion: a log past them shows no least-privilege policy anyone could
/// review, and the suggestion stops instead of growing without bound.
pub const MAX_ROUTES: usize = 1_000;
pub const MAX_CALLERS_PER_ROUTE: usize = 1_000;
pub const MAX_EDGES: usize = 5_000;
pub const MAX_ACTORS: usize = 5_000;
/// Bytes of IDs and scopes kept in all: fields of up to 1 KiB each would otherwise let the
/// counts above hold gigabytes.
pub const MAX_OBSERVED_BYTES: usize = 64 << 20;

/// Whether `text` reads back as a route name (`routes[].name`: `[A-Za-z0-9._-]`).
fn route_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Whether `id` (a principal as [`super::graph::principal`] made it) reads back as a pattern
/// matching what it stands for: an exact ID stays exact, a family stays that family.
fn nameable(subject: &str, id: &str) -> bool {
    let Ok(pattern) = PrincipalPattern::parse(id) else {
        return false;
    };
    match pattern {
        PrincipalPattern::Any => false,
        // A family made of `family:rest`; a subject of its own ending in `*` is not one.
        PrincipalPattern::Prefix(_) => id != subject,
        PrincipalPattern::Exact(_) => true,
        // A SPIFFE pattern with a `*` is a family of IDs, wider than the one subject.
        PrincipalPattern::Spiffe(_) => !id.contains('*'),
    }
}

impl Observed {
    pub fn add(&mut self, decision: &Decision) {
        if !decision.allowed() {
            return;
        }
        let (Some(route), Some(caller)) = (decision.text("route"), decision.text("caller")) else {
            return;
        };
        self.allowed += 1;
        if !route_name(route)
            || ["caller", "subject", "chain", "scopes"]
                .iter()
                .any(|name| decision.truncated(name))
        {
            self.unusable += 1;
            return;
        }
        if self.bytes > MAX_OBSERVED_BYTES {
            self.overflow = Some("IDs and scopes (bytes)");
        }
        if self.overflow.is_some() {
            return;
        }
        let chain = decision.chain();
        if !self.routes.contains_key(route) {
            if self.routes.len() >= MAX_ROUTES {
                self.overflow = Some("routes");
                return;
            }
            self.bytes += route.len();
        }
        let seen = self.routes.entry(route.to_owned()).or_default();
        if seen.callers.insert(caller.to_owned()) {
            self.bytes += caller.len();
            if seen.callers.len() > MAX_CALLERS_PER_ROUTE {
                self.overflow = Some("callers of one route");
                return;
            }
        }
        seen.max_depth = seen.max_depth.max(chain.len());
        self.max_depth = self.max_depth.max(chain.len());
        if let (Some(subject), Some(first)) = (decision.text("subject"), chain.first()) {
            let principal = super::graph::principal(subject);
            if !nameable(subject, &principal) {
                self.unnamable_hops += 1;
            }
            self.edge(&principal, first);
        }
        for hop in chain.windows(2) {
            self.edge(hop[0], hop[1]);
        }
        if self.edges.len() > MAX_EDGES {
            self.overflow = Some("delegation edges");
            return;
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
        if !scopes.iter().all(|scope| scope_token(scope)) {
            self.unnamable_scopes += 1;
        }
        for actor in actors {
            if !self.actor_scopes.contains_key(actor) {
                if self.actor_scopes.len() >= MAX_ACTORS {
                    self.overflow = Some("actors");
                    return;
                }
                self.bytes += actor.len();
            }
            let known = self.actor_scopes.entry(actor.to_owned()).or_default();
            for scope in &scopes {
                if known.len() < MAX_SCOPES_PER_ACTOR && known.insert((*scope).to_owned()) {
                    self.bytes += scope.len();
                }
            }
        }
    }

    /// Keeps the hop `from → to` (its bytes counted once).
    fn edge(&mut self, from: &str, to: &str) {
        let hop = (from.to_owned(), to.to_owned());
        if !self.edges.contains(&hop) {
            self.bytes += from.len() + to.len();
            self.edges.insert(hop);
        }
    }

    /// Why `delegation.ceilings` are not derived, if they are not.
    fn no_ceilings(&self) -> Option<String> {
        if self.unscoped > 0 {
            Some(format!(
                "{} allowed line(s) of audit format version 1 recorded no scopes",
                self.unscoped
            ))
        } else if self.unnamable_scopes > 0 {
            Some(format!(
                "{} allowed decision(s) carried a scope a ceiling cannot name (not one scope token)",
                self.unnamable_scopes
            ))
        } else {
            None
        }
    }

    /// `delegation.ceilings`: each actor (or family) seen with the scopes it carried — exact
    /// IDs first, then families, deepest first, so no family hides a more exact entry (the
    /// first match applies) — then `*` with none; `None` when they cannot be derived
    /// ([`Self::no_ceilings`]).
    pub fn ceilings(&self) -> Option<Vec<Value>> {
        if self.no_ceilings().is_some() {
            return None;
        }
        let actors: BTreeSet<String> = self.actor_scopes.keys().cloned().collect();
        let mut exact = Vec::new();
        let mut families = Vec::new();
        for pattern in callers_with_families(&actors) {
            match pattern.strip_suffix("/*") {
                Some(parent) => {
                    // Every actor under `parent/`: one range of the sorted map.
                    let under = format!("{parent}/");
                    let scopes: BTreeSet<&String> = self
                        .actor_scopes
                        .range(under.clone()..)
                        .take_while(|(actor, _)| actor.starts_with(&under))
                        .flat_map(|(_, scopes)| scopes)
                        .collect();
                    families.push((parent.len(), json!({"actor": pattern, "scopes": scopes})));
                }
                None => {
                    exact.push(json!({"actor": pattern, "scopes": self.actor_scopes[&pattern]}))
                }
            }
        }
        families.sort_by_key(|family| std::cmp::Reverse(family.0));
        let mut out = exact;
        out.extend(families.into_iter().map(|(_, ceiling)| ceiling));
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
    if observed.unnamable_hops == 0 {
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
    }
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
    let edges_before = before
        .get("edges")
        .and_then(Value::as_array)
        .map_or("any hop".to_owned(), |edges| {
            format!("{} edge(s)", edges.len())
        });
    if observed.unnamable_hops == 0 {
        changes.push(format!(
            "delegation.edges: {edges_before} -> {} edge(s) seen",
            observed.edges.len()
        ));
    } else {
        changes.push(format!(
            "delegation.edges: left as they are ({edges_before}): {} allowed decision(s) had a subject no edge can name exactly (it would read as a pattern)",
            observed.unnamable_hops
        ));
    }
    let ceilings = |value: Option<&Value>| {
        value
            .and_then(Value::as_array)
            .map_or("none".to_owned(), |ceilings| {
                format!("{} ceiling(s)", ceilings.len())
            })
    };
    match observed.no_ceilings() {
        None => changes.push(format!(
            "delegation.ceilings: {} -> {} (the scopes each actor's allowed chains carried; `*` none)",
            ceilings(before.get("ceilings")),
            ceilings(delegation.get("ceilings"))
        )),
        Some(why) => changes.push(format!(
            "delegation.ceilings: left as they are ({}): {why}",
            ceilings(before.get("ceilings"))
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

/// A YAML scalar: plain only when it cannot read back as anything but this string (it starts
/// with a letter or `/`, holds only `[A-Za-z0-9-_./:@]`, is no YAML 1.1 boolean or null),
/// else [`quoted`].
fn scalar(text: &str) -> String {
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
        && !text.contains(": ")
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain { text.to_owned() } else { quoted(text) }
}

/// `text` as a YAML double-quoted scalar: quotes and backslashes escaped, and every character
/// YAML does not allow there or a reader would not see ([`records::invisible`]) as `\uXXXX`.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        if matches!(character, '"' | '\\') {
            out.push('\\');
        }
        push_visible(&mut out, character);
    }
    out.push('"');
    out
}

/// `text` for a `# ` comment line: what [`records::invisible`] names escaped, so no value from an
/// audit log or a path can end the comment and start live YAML.
pub fn comment_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        push_visible(&mut out, character);
    }
    out
}

/// `character`, or `\uXXXX` when it is [`records::invisible`].
fn push_visible(out: &mut String, character: char) {
    if records::invisible(character) {
        out.push_str(&format!("\\u{:04X}", character as u32));
    } else {
        out.push(character);
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
#[derive(Default)]
pub struct Impact {
    /// Decisions whose route both configurations name (the others cannot be evaluated).
    pub evaluated: u64,
    pub unevaluated: u64,
    /// Allowed decisions the suggestion would deny, by route and the reason it would give.
    pub newly_denied: BTreeMap<(String, &'static str), u64>,
    /// Denied decisions that would get past the check that denied them, by route and reason.
    pub no_longer_denied: BTreeMap<(String, String), u64>,
    /// The current configuration's answers, and the suggestion's.
    memos: [Memo; 2],
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

/// Most remembered hop and actor results per configuration; past it they are computed anew.
const MAX_MEMO: usize = 100_000;

/// What one configuration answered for hops and actors already seen: the log repeats them on
/// every line, and the edge and ceiling lists a suggestion holds can be long.
#[derive(Default)]
struct Memo {
    /// `from` → `to` → allowed.
    hops: HashMap<String, HashMap<String, bool>>,
    remembered_hops: usize,
    /// The index of the first ceiling whose pattern matches the actor (the one that applies).
    ceilings: HashMap<String, Option<usize>>,
}

impl Memo {
    /// `edges_allowed` for one hop.
    fn hop(&mut self, edges: &[Edge], from: &str, to: &str) -> bool {
        if let Some(allowed) = self.hops.get(from).and_then(|to_map| to_map.get(to)) {
            return *allowed;
        }
        let allowed = edges_allowed(edges, from, &[to]);
        if self.remembered_hops < MAX_MEMO {
            self.remembered_hops += 1;
            self.hops
                .entry(from.to_owned())
                .or_default()
                .insert(to.to_owned(), allowed);
        }
        allowed
    }

    /// `within_ceilings` for one actor: the first matching ceiling decides.
    fn within(&mut self, ceilings: &[Ceiling], actor: &str, scopes: &[Box<str>]) -> bool {
        let index = match self.ceilings.get(actor) {
            Some(index) => *index,
            None => {
                let index = ceilings
                    .iter()
                    .position(|ceiling| ceiling.actor.matches(actor));
                if self.ceilings.len() < MAX_MEMO {
                    self.ceilings.insert(actor.to_owned(), index);
                }
                index
            }
        };
        index.is_none_or(|index| within_ceilings(&ceilings[index..=index], &[actor], scopes))
    }

    /// The first of the suggestion's checks `decision` fails under `settings`, in the
    /// pipeline's order; `None` when it cannot be evaluated there (route unknown, no caller
    /// or subject).
    fn first_failed(
        &mut self,
        settings: &DecisionSettings,
        decision: &Decision,
    ) -> Option<Option<&'static str>> {
        let name = decision.text("route")?;
        let route = settings.routes.iter().find(|route| &*route.name == name)?;
        let caller = SpiffeId::parse(decision.text("caller")?).ok()?;
        let subject = decision.text("subject")?;
        let chain = decision.chain();
        let policy = &settings.delegation;
        if chain.len() > policy.depth_limit(route) {
            return Some(Some(DenyReason::DelegationTooDeep.code()));
        }
        if let Some(edges) = &policy.edges {
            let mut from = subject;
            for to in &chain {
                if !self.hop(edges, from, to) {
                    return Some(Some(DenyReason::DelegationEdgeDenied.code()));
                }
                from = to;
            }
        }
        if decision.version() >= 2 {
            let actors = if chain.is_empty() {
                vec![caller.as_str()]
            } else {
                chain
            };
            let scopes: Vec<Box<str>> = decision.scopes().into_iter().map(Into::into).collect();
            if !actors
                .iter()
                .all(|actor| self.within(&policy.ceilings, actor, &scopes))
            {
                return Some(Some(DenyReason::DelegationCeilingExceeded.code()));
            }
        }
        if !caller_allowed(route.allow_callers.as_deref(), &caller) {
            return Some(Some(DenyReason::CallerNotAllowed.code()));
        }
        Some(None)
    }
}

impl Impact {
    fn add(
        &mut self,
        current: &DecisionSettings,
        suggested: &DecisionSettings,
        decision: &Decision,
    ) {
        let (Some(before), Some(after)) = (
            self.memos[0].first_failed(current, decision),
            self.memos[1].first_failed(suggested, decision),
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
        comment(
            out,
            &format!(
                "What it would have decided differently, over the {} decision(s) of the audit log whose route both configurations name ({} not evaluated; the suggestion was derived from these same decisions):",
                self.evaluated, self.unevaluated
            ),
        );
        let denied: u64 = self.newly_denied.values().sum();
        comment(out, &format!("  allowed decisions it would deny: {denied}"));
        for ((route, reason), count) in &self.newly_denied {
            comment(out, &format!("    {route}: {count} x {reason}"));
        }
        let passed: u64 = self.no_longer_denied.values().sum();
        comment(
            out,
            &format!(
                "  denied decisions it would no longer deny for their reason (later steps not evaluated): {passed}"
            ),
        );
        for ((route, reason), count) in &self.no_longer_denied {
            comment(out, &format!("    {route}: {count} x {reason}"));
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

/// The suggestion from the decisions of `files`, and how many decisions were read.
pub fn observe(files: &[PathBuf]) -> Result<(Observed, u64), String> {
    let mut observed = Observed::default();
    let totals = records::read(files, None, &mut |decision| observed.add(decision))?;
    if let Some(what) = observed.overflow {
        return Err(format!(
            "the audit log shows more distinct {what} than a reviewable policy holds (at most {MAX_ROUTES} routes, {MAX_CALLERS_PER_ROUTE} callers per route, {MAX_EDGES} edges, {MAX_ACTORS} actors, {} MiB of IDs and scopes): suggest from a narrower log, one workload or one day",
            MAX_OBSERVED_BYTES >> 20
        ));
    }
    Ok((observed, totals.decisions))
}

fn header(observed: &Observed) -> String {
    let mut out = format!(
        "# Suggested by actguard policy suggest from {} allowed decision(s): the tightest edges,\n# depths, callers and ceilings that allow every one of them. Allows the audit log sampled\n# out (audit.sample_allows below 1) are not among them.\n",
        observed.allowed
    );
    if let Some(why) = observed.no_ceilings() {
        comment(
            &mut out,
            &format!("Not derived: delegation.ceilings ({why})."),
        );
    }
    if observed.unnamable_hops > 0 {
        comment(
            &mut out,
            &format!(
                "Not derived: delegation.edges ({} allowed decision(s) had a subject no edge can name exactly).",
                observed.unnamable_hops
            ),
        );
    }
    if observed.unusable > 0 {
        comment(
            &mut out,
            &format!(
                "Not learned from: {} allowed decision(s) whose caller, subject, chain or scopes the audit log cut, or whose route is no route name; a policy from the rest may deny them.",
                observed.unusable
            ),
        );
    }
    out
}

/// Appends `text` as one `# ` comment line, whatever it holds ([`comment_text`]).
fn comment(out: &mut String, text: &str) {
    out.push_str("# ");
    out.push_str(&comment_text(text));
    out.push('\n');
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
    let (observed, decisions) = observe(files)?;
    if observed.allowed == 0 {
        return Err("no allowed decision in the audit log: nothing to derive a policy from".into());
    }
    let Some(path) = current else {
        return Ok(standalone(&observed));
    };
    let mut out = header(&observed);
    // Read once (bounded, as the sidecar reads it), parsed as a document to edit and loaded
    // as the configuration in force.
    let text = crate::config::reader::read_text(path)
        .map_err(|errors| format!("{}: {errors}", path.display()))?;
    let mut config = crate::config::reader::parse_yaml(&text)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let current = crate::config::Config::from_yaml(&text, base)
        .map_err(|errors| format!("{}: {errors}", path.display()))?;
    let mut before = String::new();
    yaml(&config, 0, &mut before);
    for change in apply(&observed, &mut config) {
        comment(&mut out, &change);
    }
    let mut body = String::new();
    yaml(&config, 0, &mut body);
    // The promise is that check-config accepts the output: a suggestion it would refuse is
    // an error here, never printed.
    let suggested = crate::config::Config::from_yaml(&body, base).map_err(|errors| {
        format!("the suggestion would not be a valid configuration, so none is printed: {errors}")
    })?;
    comment(
        &mut out,
        &format!(
            "Diff against {} (both as actguard writes YAML, comments dropped):",
            path.display()
        ),
    );
    for line in line_diff(&before, &body) {
        comment(&mut out, &line);
    }
    let mut impact = Impact::default();
    let again = records::read(files, None, &mut |decision| {
        impact.add(&current.decision, &suggested.decision, decision)
    })?;
    if again.decisions != decisions {
        return Err(format!(
            "the audit log read {decisions} decision(s) the first time and {} the second: the impact needs regular files that do not change meanwhile (not a pipe)",
            again.decisions
        ));
    }
    impact.comments(&mut out);
    out.push_str(&body);
    Ok(out)
}

/// `actguard policy suggest`.
pub fn run(files: &[PathBuf], current: Option<&Path>) -> ExitCode {
    records::respond(None, suggest(files, current))
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
        // Whatever a string holds, it reads back as that string: numbers in any YAML
        // notation, characters YAML forbids unescaped, bidirectional overrides.
        for text in [
            "0x10",
            "0o10",
            "0b1",
            "1_000",
            "1e3",
            "+1",
            "-1",
            ".5",
            "nan",
            ".inf",
            "~",
            "",
            "x\u{86}y",
            "x\u{fffe}y",
            "a\u{202e}b",
            "line\nbreak",
            "tab\tx",
            "quote\"s",
            "back\\s",
            "#comment",
            "- item",
            "{a: b}",
            "[1]",
            "&anchor",
            "*alias",
            "!tag",
            "%directive",
        ] {
            let mut out = String::new();
            yaml(&json!({ "value": text }), 0, &mut out);
            let back = crate::config::reader::parse_yaml(&out)
                .unwrap_or_else(|error| panic!("{text:?}: {out} {error}"));
            assert_eq!(back["value"], text, "{out}");
        }
    }

    #[test]
    fn comment_text_cannot_end_its_line() {
        for text in ["x\naudit:\n  output: off", "a\rb", "a\u{2028}b", "a\u{85}b"] {
            let mut out = String::new();
            comment(&mut out, text);
            assert_eq!(out.lines().count(), 1, "{out:?}");
            assert!(out.starts_with("# ") && out.ends_with('\n'));
        }
    }

    fn allowed_line(
        route: &str,
        caller: &str,
        subject: &str,
        chain: &[&str],
        scopes: &[&str],
    ) -> Decision {
        let line = json!({"time": "2026-12-04T00:00:00.000Z", "v": 2, "caller": caller,
            "subject": subject, "chain": chain, "scopes": scopes, "route": route,
            "decision": "allow"});
        Decision::parse(line.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn what_no_configuration_can_name_exactly_is_not_derived_wrong() {
        let agent = "spiffe://e.org/agent/a";
        // A route that is no route name is not learned from.
        let mut observed = Observed::default();
        observed.add(&allowed_line(
            "x\naudit:",
            agent,
            "user:a",
            &[agent],
            &["s"],
        ));
        assert_eq!((observed.allowed, observed.unusable), (1, 1));
        assert!(observed.routes.is_empty());
        // A scope that is not one scope token: no ceilings at all.
        let mut observed = Observed::default();
        observed.add(&allowed_line("r", agent, "user:a", &[agent], &["café"]));
        assert!(observed.ceilings().is_none() && observed.no_ceilings().is_some());
        // A subject that would read as a pattern: no edges at all.
        for subject in [
            "a*b*",
            "*",
            "all*",
            "spiffe://Example.org/u",
            "spiffe://e.org/agent/*",
        ] {
            let mut observed = Observed::default();
            observed.add(&allowed_line("r", agent, subject, &[agent], &["s"]));
            assert_eq!(observed.unnamable_hops, 1, "{subject}");
            let delegation = suggested_delegation(&observed, None);
            assert!(delegation.get("edges").is_none(), "{subject}");
        }
        // A family stays a family, an exact ID stays exact.
        let mut observed = Observed::default();
        observed.add(&allowed_line("r", agent, "user:alice", &[agent], &["s"]));
        observed.add(&allowed_line("r", agent, agent, &[], &["s"]));
        assert_eq!(observed.unnamable_hops, 0);
    }

    #[test]
    fn a_log_past_the_bounds_is_refused_not_grown_without_end() {
        let mut observed = Observed::default();
        for index in 0..=MAX_ROUTES {
            observed.add(&allowed_line(
                &format!("r{index}"),
                "spiffe://e.org/agent/a",
                "user:a",
                &[],
                &[],
            ));
        }
        assert_eq!(observed.overflow, Some("routes"));
        assert_eq!(observed.routes.len(), MAX_ROUTES);
    }

    #[test]
    fn ceilings_name_exact_actors_before_families_deepest_first() {
        let mut observed = Observed::default();
        for name in ["a", "b", "c"] {
            let actor = format!("spiffe://e.org/agent/{name}");
            observed.add(&allowed_line("r", &actor, "user:u", &[&actor], &["read"]));
        }
        for name in ["x", "y", "z"] {
            let actor = format!("spiffe://e.org/agent/team/{name}");
            observed.add(&allowed_line("r", &actor, "user:u", &[&actor], &["write"]));
        }
        observed.add(&allowed_line(
            "r",
            "spiffe://e.org/tool/t",
            "user:u",
            &["spiffe://e.org/tool/t"],
            &["admin"],
        ));
        let ceilings = observed.ceilings().unwrap();
        let actors: Vec<&str> = ceilings
            .iter()
            .map(|c| c["actor"].as_str().unwrap())
            .collect();
        assert_eq!(
            actors,
            [
                "spiffe://e.org/tool/t",
                "spiffe://e.org/agent/team/*",
                "spiffe://e.org/agent/*",
                "*"
            ]
        );
        // A family's ceiling is what its members' chains carried, the deeper family's too
        // (the pattern admits them).
        assert_eq!(ceilings[1]["scopes"], json!(["write"]));
        assert_eq!(ceilings[2]["scopes"], json!(["read", "write"]));
        assert_eq!(ceilings[3]["scopes"], json!([]));
    }
}
