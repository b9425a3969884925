//! `routes[].mcp`: the MCP block of a route ([`crate::decision::mcp`]).

use super::reader::{Reader, child, item};
use super::{read_allow_callers, read_quotable, read_scopes, read_string_list};
use crate::decision::mcp::{MAX_TOOL_NAME_BYTES, McpRules, TOOLS_CALL, ToolName, ToolRule};
use crate::decision::spiffe::TrustDomain;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};

/// Default and largest `max_body_bytes`. Envoy buffers the body for the check; a JSON-RPC
/// message that needs more than 1 MiB to name a tool and its arguments is not a tool call.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;
pub const MAX_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// Reads `mcp`; `depth_limit` is the route's effective `max_depth` (tools may only lower it).
pub fn read_mcp(
    reader: &mut Reader,
    path: &str,
    value: &Value,
    trust_domains: Option<&BTreeSet<TrustDomain>>,
    depth_limit: Option<usize>,
) -> Option<McpRules> {
    let map = reader.mapping(path, value, &["max_body_bytes", "methods", "tools"])?;
    let max_body_bytes = match map.get("max_body_bytes") {
        None => Some(DEFAULT_MAX_BODY_BYTES),
        Some(value) => reader.integer(&child(path, "max_body_bytes"), value, 1, MAX_MAX_BODY_BYTES),
    };
    let methods = match map.get("methods") {
        None => Some(Vec::new()),
        Some(value) => read_string_list(
            reader,
            &child(path, "methods"),
            value,
            |method| method != TOOLS_CALL && !method.chars().any(char::is_control),
            "must be a JSON-RPC method other than tools/call (tool calls are allowed by mcp.tools)",
        ),
    };
    let tools = match map.get("tools") {
        None => Some(Vec::new()),
        Some(value) => reader.list(&child(path, "tools"), value, |reader, path, element| {
            read_tool(reader, path, element, trust_domains, depth_limit)
        }),
    };
    if let Some(tools) = &tools {
        let mut seen = HashSet::new();
        for (index, tool) in tools.iter().enumerate() {
            if !seen.insert(&tool.label) {
                reader.error(
                    item(&child(path, "tools"), index),
                    format!(
                        "names {} again: only the first rule would apply",
                        tool.label
                    ),
                );
            }
        }
    }
    if let (Some(methods), Some(tools)) = (&methods, &tools)
        && methods.is_empty()
        && tools.is_empty()
    {
        reader.error(
            path.to_owned(),
            "allows no message: list methods (e.g. initialize, tools/list) or tools",
        );
    }
    Some(McpRules {
        max_body_bytes: max_body_bytes? as usize,
        methods: methods?,
        tools: tools?,
    })
}

fn read_tool(
    reader: &mut Reader,
    path: &str,
    value: &Value,
    trust_domains: Option<&BTreeSet<TrustDomain>>,
    depth_limit: Option<usize>,
) -> Option<ToolRule> {
    let keys = [
        "name",
        "require_scopes",
        "allow_callers",
        "max_depth",
        "authorization_details",
    ];
    let map = reader.mapping(path, value, &keys)?;
    let name = reader.required(path, map, "name").and_then(|value| {
        let key_path = child(path, "name");
        let text = reader.string(&key_path, value)?;
        // One '*', last: a prefix (`*` alone names every tool).
        let star_inside = text
            .strip_suffix('*')
            .unwrap_or(text)
            .contains('*');
        if star_inside || text.len() > MAX_TOOL_NAME_BYTES || text.chars().any(char::is_control) {
            reader.error(
                key_path,
                "must be a tool name, or a prefix ending in one '*', of at most 256 bytes without control characters",
            );
            return None;
        }
        Some(text.to_owned())
    });
    let require_scopes = match map.get("require_scopes") {
        None => Some(Vec::new()),
        Some(value) => read_scopes(reader, &child(path, "require_scopes"), value),
    };
    let allow_callers = match map.get("allow_callers") {
        None => Some(None),
        Some(value) => {
            read_allow_callers(reader, &child(path, "allow_callers"), value, trust_domains)
                .map(Some)
        }
    };
    let max_depth = match map.get("max_depth") {
        None => Some(None),
        Some(value) => reader
            .integer(
                &child(path, "max_depth"),
                value,
                0,
                depth_limit.map_or(super::delegation::MAX_DEPTH_LIMIT, |depth| depth as u64),
            )
            .map(|depth| Some(depth as usize)),
    };
    let detail_type = match map.get("authorization_details") {
        None => Some(None),
        Some(value) => {
            let details_path = child(path, "authorization_details");
            reader
                .mapping(&details_path, value, &["type"])
                .and_then(|details| {
                    let value = reader.required(&details_path, details, "type")?;
                    read_quotable(reader, &child(&details_path, "type"), value).map(Some)
                })
        }
    };
    let name = name?;
    Some(ToolRule {
        name: ToolName::parse(&name),
        label: name,
        require_scopes: require_scopes?,
        allow_callers: allow_callers?,
        max_depth: max_depth?,
        detail_type: detail_type?,
    })
}

/// Warnings for MCP routes an earlier route without `mcp` can take requests from (routes match
/// first come, so such requests are decided without the MCP checks).
pub fn shadow_warnings(routes: &crate::decision::routes::RouteTable) -> Vec<String> {
    use crate::decision::path::has_segment_prefix;
    fn overlap(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a
                .iter()
                .any(|x| b.iter().any(|y| x.eq_ignore_ascii_case(y))),
            _ => true,
        }
    }
    let routes: Vec<_> = routes.iter().collect();
    let mut warnings = Vec::new();
    for (later, mcp_route) in routes.iter().enumerate().filter(|(_, r)| r.mcp.is_some()) {
        for (earlier, route) in routes[..later].iter().enumerate() {
            if route.mcp.is_none()
                && overlap(&route.methods, &mcp_route.methods)
                && overlap(&route.hosts, &mcp_route.hosts)
                && (has_segment_prefix(&mcp_route.path_prefix, &route.path_prefix)
                    || has_segment_prefix(&route.path_prefix, &mcp_route.path_prefix))
            {
                warnings.push(format!(
                    "routes[{earlier}] ({}) comes before the MCP route routes[{later}] ({}) and can match the same requests: those are decided without the MCP checks (list the MCP route first, or narrow routes[{earlier}])",
                    route.name, mcp_route.name
                ));
            }
        }
    }
    warnings
}
