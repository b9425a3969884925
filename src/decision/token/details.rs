//! RFC 9396 `authorization_details`: the claim read from a verified token, and the one question
//! actguard asks of it (does an entry of a type permit this tool call, here, with these
//! arguments — [`AuthorizationDetails::permits`]).
//!
//! Read strictly: the claim, when present, must be an array of objects, each with a string
//! `type`; `actions` and `locations`, when present, arrays of strings; `arguments` (the
//! profile actguard defines for MCP tool calls), when present, an object whose every member is
//! an array of allowed JSON values; arguments the entry does not list are not restricted by
//! it. Numbers compare as exact integers of at most 64 bits: a fraction, an exponent or a
//! larger integer never matches. Anything else makes the token malformed: a detail that
//! cannot be read is never taken to permit nothing-in-particular. Other members (`datatypes`,
//! `identifier`, `privileges`, a type's own fields) are kept in the token as the issuer wrote
//! them and never interpreted.

use super::json::Object;
use crate::decision::reason::{Denial, DenyReason};
use serde_json::{Map, Value};

/// Longest `authorization_details` claim accepted, serialised: details describe a grant, not a
/// data set, and every cached token holds its copy.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;

/// Argument name → the values it may take, in the issuer's order.
pub type AllowedArguments = Box<[(Box<str>, Box<[Value]>)]>;

/// One entry of `authorization_details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationDetail {
    pub detail_type: Box<str>,
    /// `None` when absent: then no action is named, and none is permitted.
    pub actions: Option<Box<[Box<str>]>>,
    /// `None` when absent: the entry applies at every resource server.
    pub locations: Option<Box<[Box<str>]>>,
    /// Argument name → the values it may take; `None` when absent (arguments unrestricted).
    pub arguments: Option<AllowedArguments>,
}

/// The whole claim, in the issuer's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationDetails {
    entries: Box<[AuthorizationDetail]>,
    /// Serialised size, for the cache's byte budget.
    bytes: usize,
}

fn malformed(description: &'static str) -> Denial {
    Denial::new(DenyReason::TokenMalformed, description)
}

fn strings(
    value: Option<&Value>,
    description: &'static str,
) -> Result<Option<Box<[Box<str>]>>, Denial> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(items) = value.as_array() else {
        return Err(malformed(description));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(Box::from)
                .ok_or_else(|| malformed(description))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|items| Some(items.into_boxed_slice()))
}

fn arguments(value: Option<&Value>) -> Result<Option<AllowedArguments>, Denial> {
    const DESCRIPTION: &str =
        "an authorization_details arguments member is not an object of arrays";
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(members) = value.as_object() else {
        return Err(malformed(DESCRIPTION));
    };
    members
        .iter()
        .map(|(name, allowed)| match allowed.as_array() {
            Some(values) => Ok((Box::from(name.as_str()), values.clone().into_boxed_slice())),
            None => Err(malformed(DESCRIPTION)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|members| Some(members.into_boxed_slice()))
}

impl AuthorizationDetails {
    /// The claim as found in the claims set: `Ok(None)` when absent.
    pub fn from_claims(claims: &Object<'_>) -> Result<Option<Self>, Denial> {
        claims
            .get("authorization_details")
            .map(|claim| Self::read(&claim.to_value()))
            .transpose()
    }

    /// The claim's value: kept as `serde_json` values, as the issuer wrote them.
    fn read(claim: &Value) -> Result<Self, Denial> {
        let Some(items) = claim.as_array() else {
            return Err(malformed("the authorization_details claim is not an array"));
        };
        let bytes = serde_json::to_vec(claim).map_or(usize::MAX, |text| text.len());
        if bytes > MAX_DETAILS_BYTES {
            return Err(malformed(
                "the authorization_details claim is longer than 16 KiB",
            ));
        }
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let Some(object) = item.as_object() else {
                return Err(malformed("an authorization_details entry is not an object"));
            };
            let Some(detail_type) = object.get("type").and_then(Value::as_str) else {
                return Err(malformed(
                    "an authorization_details entry has no string type",
                ));
            };
            entries.push(AuthorizationDetail {
                detail_type: detail_type.into(),
                actions: strings(
                    object.get("actions"),
                    "an authorization_details actions member is not an array of strings",
                )?,
                locations: strings(
                    object.get("locations"),
                    "an authorization_details locations member is not an array of strings",
                )?,
                arguments: arguments(object.get("arguments"))?,
            });
        }
        Ok(Self {
            entries: entries.into_boxed_slice(),
            bytes,
        })
    }

    pub fn entries(&self) -> &[AuthorizationDetail] {
        &self.entries
    }

    /// Rough heap footprint (the serialised size is a fair proxy).
    pub fn approximate_size(&self) -> usize {
        self.bytes + self.entries.len() * std::mem::size_of::<AuthorizationDetail>()
    }

    /// Whether one entry of `detail_type` permits calling `tool` at `location` with
    /// `call_arguments`: its `actions` contain `tool`; its `locations`, when present, contain
    /// `location`; every argument it lists is present in the call and equal (exact JSON
    /// equality) to one of the allowed values.
    pub fn permits(
        &self,
        detail_type: &str,
        tool: &str,
        location: &str,
        call_arguments: Option<&Map<String, Value>>,
    ) -> bool {
        self.entries.iter().any(|entry| {
            *entry.detail_type == *detail_type
                && entry
                    .actions
                    .as_ref()
                    .is_some_and(|actions| actions.iter().any(|action| **action == *tool))
                && entry
                    .locations
                    .as_ref()
                    .is_none_or(|locations| locations.iter().any(|l| **l == *location))
                && entry.arguments.as_ref().is_none_or(|listed| {
                    listed.iter().all(|(name, allowed)| {
                        call_arguments
                            .and_then(|arguments| arguments.get(&**name))
                            .is_some_and(|value| allowed.iter().any(|a| exactly_equal(a, value)))
                    })
                })
        })
    }
}

/// JSON equality that never equates numbers through floating point: a number with a fraction
/// or an exponent, or an integer beyond 64 bits (which the parser turns into a float, so
/// `18446744073709551617` would equal `18446744073709551616`), equals nothing.
fn exactly_equal(allowed: &Value, value: &Value) -> bool {
    match (allowed, value) {
        (Value::Number(a), Value::Number(b)) => !a.is_f64() && !b.is_f64() && a == b,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| exactly_equal(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(name, a)| b.get(name).is_some_and(|b| exactly_equal(a, b)))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn details(claim: Value) -> Result<Option<AuthorizationDetails>, Denial> {
        from_claims(json!({ "authorization_details": claim }))
    }

    fn from_claims(claims: Value) -> Result<Option<AuthorizationDetails>, Denial> {
        let claims = super::super::json::Json::from_value(&claims);
        AuthorizationDetails::from_claims(claims.as_object().unwrap())
    }

    const LOCAL: &str = "spiffe://example.org/tool/calendar";
    const TYPE: &str = "https://example.org/rar/mcp-tool";

    #[test]
    fn absent_is_none_and_malformed_shapes_are_token_malformed() {
        assert_eq!(from_claims(json!({})), Ok(None));
        for bad in [
            json!({"type": TYPE}),
            json!([1]),
            json!([{"actions": ["x"]}]),
            json!([{"type": 5}]),
            json!([{"type": TYPE, "actions": "x"}]),
            json!([{"type": TYPE, "actions": [1]}]),
            json!([{"type": TYPE, "locations": [null]}]),
            json!([{"type": TYPE, "arguments": ["to"]}]),
            json!([{"type": TYPE, "arguments": {"to": "a@example.org"}}]),
            json!([{"type": TYPE, "datatypes": ["x"], "x": "y".repeat(MAX_DETAILS_BYTES)}]),
        ] {
            let denial = details(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(denial.reason, DenyReason::TokenMalformed, "{bad}");
        }
    }

    #[test]
    fn an_entry_permits_only_its_type_actions_locations_and_argument_values() {
        let claim = details(json!([{
            "type": TYPE,
            "actions": ["email.send"],
            "locations": [LOCAL],
            "arguments": {"to": ["a@example.org", {"group": "team"}]},
            "privileges": ["kept, not read"]
        }]))
        .unwrap()
        .unwrap();
        let args = |value: Value| value.as_object().cloned();
        let to_a = args(json!({"to": "a@example.org", "body": "anything"}));
        assert!(claim.permits(TYPE, "email.send", LOCAL, to_a.as_ref()));
        let group = args(json!({"to": {"group": "team"}}));
        assert!(claim.permits(TYPE, "email.send", LOCAL, group.as_ref()));
        // Another type, tool or location; a value outside the list; the listed argument missing.
        assert!(!claim.permits("other", "email.send", LOCAL, to_a.as_ref()));
        assert!(!claim.permits(TYPE, "email.delete", LOCAL, to_a.as_ref()));
        assert!(!claim.permits(TYPE, "email.send", "spiffe://example.org/x", to_a.as_ref()));
        let to_b = args(json!({"to": "b@example.org"}));
        assert!(!claim.permits(TYPE, "email.send", LOCAL, to_b.as_ref()));
        let missing = args(json!({"body": "x"}));
        assert!(!claim.permits(TYPE, "email.send", LOCAL, missing.as_ref()));
        assert!(!claim.permits(TYPE, "email.send", LOCAL, None));
        // Exact JSON equality: a number is not its string, 1 is not 1.0.
        let numbers = details(json!([{"type": TYPE, "actions": ["t"], "arguments": {"n": [1]}}]))
            .unwrap()
            .unwrap();
        assert!(numbers.permits(TYPE, "t", LOCAL, args(json!({"n": 1})).as_ref()));
        assert!(!numbers.permits(TYPE, "t", LOCAL, args(json!({"n": "1"})).as_ref()));
        assert!(!numbers.permits(TYPE, "t", LOCAL, args(json!({"n": 1.0})).as_ref()));
        // Numbers that are not exact integers of 64 bits never match, not even themselves.
        let big = details(json!([{"type": TYPE, "actions": ["t"], "arguments": {
            "n": [serde_json::from_str::<Value>("18446744073709551616").unwrap(), 0.5, [1, {"a": 2}]]
        }}]))
        .unwrap()
        .unwrap();
        let beyond = serde_json::from_str::<Value>(r#"{"n": 18446744073709551617}"#).unwrap();
        assert!(!big.permits(TYPE, "t", LOCAL, beyond.as_object()));
        assert!(!big.permits(TYPE, "t", LOCAL, args(json!({"n": 0.5})).as_ref()));
        assert!(big.permits(TYPE, "t", LOCAL, args(json!({"n": [1, {"a": 2}]})).as_ref()));
        assert!(!big.permits(
            TYPE,
            "t",
            LOCAL,
            args(json!({"n": [1, {"a": 2, "b": 3}]})).as_ref()
        ));
    }

    #[test]
    fn no_actions_permits_nothing_and_no_locations_means_anywhere() {
        let claim = details(json!([{"type": TYPE}, {"type": TYPE, "actions": ["t"]}]))
            .unwrap()
            .unwrap();
        assert!(claim.permits(TYPE, "t", LOCAL, None));
        assert!(!claim.permits(TYPE, "u", LOCAL, None));
    }
}
