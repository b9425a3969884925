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
//! Not suggested: `delegation.ceilings` (audit records carry no scopes) and routes no allowed
//! decision named (left as they are, and reported). With `--config`, the output is that
//! configuration with the suggestion applied, which `check-config` accepts; the changes are
//! listed as comments at the top.

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
}

#[derive(Debug, Default)]
pub struct RouteSeen {
    pub callers: BTreeSet<String>,
    pub max_depth: usize,
}

impl Observed {
    pub fn add_line(&mut self, line: &[u8]) {
        let Ok(record) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if record.get("event").is_some() || record["decision"] != "allow" {
            return;
        }
        let (Some(route), Some(caller)) = (record["route"].as_str(), record["caller"].as_str())
        else {
            return;
        };
        self.allowed += 1;
        let chain: Vec<&str> = record["chain"]
            .as_array()
            .map(|chain| chain.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let seen = self.routes.entry(route.to_owned()).or_default();
        seen.callers.insert(caller.to_owned());
        seen.max_depth = seen.max_depth.max(chain.len());
        self.max_depth = self.max_depth.max(chain.len());
        if let (Some(subject), Some(first)) = (record["subject"].as_str(), chain.first()) {
            self.edges
                .insert((super::graph::principal(subject), (*first).to_owned()));
        }
        for hop in chain.windows(2) {
            self.edges.insert((hop[0].to_owned(), hop[1].to_owned()));
        }
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
                // MCP tool rules may only lower the route's depth: keep them within it.
                if let Some(tools) = map
                    .get_mut("mcp")
                    .and_then(|mcp| mcp.get_mut("tools"))
                    .and_then(Value::as_array_mut)
                {
                    for tool in tools {
                        if tool["max_depth"]
                            .as_u64()
                            .is_some_and(|depth| depth as usize > seen.max_depth)
                        {
                            tool["max_depth"] = json!(seen.max_depth);
                        }
                    }
                }
            }
            _ => changes.push(format!(
                "routes[{name}]: no allowed decision seen; left as it is"
            )),
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

/// The suggestion as YAML: the whole configuration `current` names with it applied (changes
/// as comments), or, without one, the `delegation` block and the routes' rules.
pub fn suggest(files: &[PathBuf], current: Option<&Path>) -> Result<String, String> {
    let mut observed = Observed::default();
    for file in files {
        let mut too_long = 0;
        super::graph::stream_lines(
            file,
            &mut |line| observed.add_line(line),
            &mut too_long,
            &mut |_| {},
        )
        .map_err(|error| format!("{}: {error}", file.display()))?;
    }
    if observed.allowed == 0 {
        return Err("no allowed decision in the audit log: nothing to derive a policy from".into());
    }
    let mut out = format!(
        "# Suggested by actguard policy suggest from {} allowed decision(s): the tightest edges,\n# depths and callers that allow every one of them. Not derived: delegation.ceilings\n# (audit records carry no scopes).\n",
        observed.allowed
    );
    match current {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            let mut config = crate::config::reader::parse_yaml(&text)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            for change in apply(&observed, &mut config) {
                out.push_str(&format!("# {change}\n"));
            }
            yaml(&config, 0, &mut out);
        }
        None => {
            let mut document = Map::new();
            document.insert("delegation".into(), suggested_delegation(&observed, None));
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
        }
    }
    Ok(out)
}

/// `actguard policy suggest`.
pub fn run(files: &[PathBuf], current: Option<&Path>) -> ExitCode {
    match suggest(files, current) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
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
