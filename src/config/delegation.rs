//! `delegation:`: depth limit, scope ceilings per actor, allowed delegation edges.

use super::reader::{Reader, child};
use crate::decision::delegation::{Ceiling, Edge, PrincipalPattern};
use serde_json::Value;

/// Far below the strict JSON nesting cap, so the depth rule always decides, not the parser.
pub const MAX_DEPTH_LIMIT: u64 = 16;

/// The parts of `delegation:` (trust domains come from `identity:`).
pub struct DelegationRules {
    pub max_depth: usize,
    pub ceilings: Vec<Ceiling>,
    pub edges: Option<Vec<Edge>>,
}

fn pattern(reader: &mut Reader, path: &str, value: &Value) -> Option<PrincipalPattern> {
    let text = reader.string(path, value)?;
    PrincipalPattern::parse(text)
        .map_err(|error| reader.error(path, error))
        .ok()
}

/// Whether `text` is one scope token as a configuration may name it (printable ASCII, no
/// spaces, quotes or backslashes).
pub fn scope_token(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
}

pub fn read_delegation(reader: &mut Reader, value: &Value) -> Option<DelegationRules> {
    let map = reader.mapping("delegation", value, &["max_depth", "ceilings", "edges"])?;
    let max_depth = match map.get("max_depth") {
        None => Some(3),
        Some(value) => reader
            .integer("delegation.max_depth", value, 0, MAX_DEPTH_LIMIT)
            .map(|depth| depth as usize),
    };
    let ceilings = match map.get("ceilings") {
        None => Some(Vec::new()),
        Some(value) => reader.list("delegation.ceilings", value, |reader, path, element| {
            let entry = reader.mapping(path, element, &["actor", "scopes"])?;
            let actor = reader
                .required(path, entry, "actor")
                .and_then(|v| pattern(reader, &child(path, "actor"), v));
            let scopes = reader.required(path, entry, "scopes").and_then(|v| {
                reader.list(&child(path, "scopes"), v, |reader, path, scope| {
                    let text = reader.string(path, scope)?;
                    if !scope_token(text) {
                        reader.error(path, "must be one scope token (printable ASCII, no spaces, quotes or backslashes)");
                        return None;
                    }
                    Some(text.to_owned())
                })
            });
            Some(Ceiling { actor: actor?, scopes: scopes? })
        }),
    };
    let edges = match map.get("edges") {
        None => Some(None),
        Some(value) => reader
            .list("delegation.edges", value, |reader, path, element| {
                let entry = reader.mapping(path, element, &["from", "to"])?;
                let from = reader
                    .required(path, entry, "from")
                    .and_then(|v| pattern(reader, &child(path, "from"), v));
                let to = reader
                    .required(path, entry, "to")
                    .and_then(|v| pattern(reader, &child(path, "to"), v));
                Some(Edge {
                    from: from?,
                    to: to?,
                })
            })
            .map(Some),
    };
    Some(DelegationRules {
        max_depth: max_depth?,
        ceilings: ceilings?,
        edges: edges?,
    })
}
