//! Strict JSON for JOSE headers, JWT claims sets and MCP messages.
//!
//! `serde_json::Value` keeps the last of two members with the same name, so `{"sub":"a",
//! "sub":"b"}` means different things to different parsers; RFC 7519 §4 says to reject it, and
//! we do, at every depth. Nesting is capped at [`MAX_NESTING`] levels before any deeper value is
//! built, so a token of thousands of nested `act` objects costs a bounded amount of stack.
//!
//! [`parse_tree`] reads a document into a [`Json`] tree that borrows its strings from the
//! document where they hold no escape: a token's header and claims are read once and dropped,
//! so building owned strings and maps for them was most of what parsing them cost.
//! [`parse_strict`] gives a `serde_json::Value` for code that keeps what it parsed.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

/// Deepest object/array nesting accepted in a header or claims set. Enough for a delegation
/// chain far beyond any sensible `max_depth` (the chain limit is enforced separately).
pub const MAX_NESTING: usize = 32;

/// Why a JSON document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON, or a member name appears twice in one object.
    Malformed,
    /// Deeper than [`MAX_NESTING`].
    TooDeep,
}

/// One strictly parsed JSON value; strings borrow from the document unless they had escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object's members, sorted by name (byte order, as `serde_json::Map` iterates); no
/// name appears twice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Object<'a> {
    /// The member named `name`.
    pub fn get(&self, name: &str) -> Option<&Json<'a>> {
        self.members
            .binary_search_by(|(member, _)| (**member).cmp(name))
            .ok()
            .map(|at| &self.members[at].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The members in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.members.iter().map(|(name, value)| (&**name, value))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The same members as a `serde_json::Map` (owned).
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(name, value)| (name.to_owned(), value.to_value()))
            .collect()
    }
}

impl<'a> Json<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Self::String(_))
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Self::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// A number as `f64`, as `serde_json::Value::as_f64` gives it.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(number) => number.as_f64(),
            _ => None,
        }
    }

    /// The member `name` of an object; `None` for anything else.
    pub fn get(&self, name: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(name)
    }

    /// The same value as a `serde_json::Value` (owned).
    pub fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(value) => Value::Bool(*value),
            Self::Number(number) => Value::Number(number.clone()),
            Self::String(text) => Value::String(text.clone().into_owned()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(object) => Value::Object(object.to_map()),
        }
    }

    /// An owned tree of `value` (whose objects have unique names already).
    pub fn from_value(value: &Value) -> Json<'static> {
        match value {
            Value::Null => Json::Null,
            Value::Bool(value) => Json::Bool(*value),
            Value::Number(number) => Json::Number(number.clone()),
            Value::String(text) => Json::String(Cow::Owned(text.clone())),
            Value::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            Value::Object(members) => Json::Object(Object {
                members: members
                    .iter()
                    .map(|(name, value)| (Cow::Owned(name.clone()), Json::from_value(value)))
                    .collect(),
            }),
        }
    }

    /// [`Self::to_value`], taking the strings that are already owned.
    pub fn into_value(self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(value) => Value::Bool(value),
            Self::Number(number) => Value::Number(number),
            Self::String(text) => Value::String(text.into_owned()),
            Self::Array(items) => Value::Array(items.into_iter().map(Self::into_value).collect()),
            Self::Object(object) => Value::Object(
                object
                    .members
                    .into_iter()
                    .map(|(name, value)| (name.into_owned(), value.into_value()))
                    .collect(),
            ),
        }
    }
}

/// Parses `bytes` as one JSON value, rejecting duplicate member names and deep nesting.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    parse_strict_bounded(bytes, usize::MAX)
}

/// [`parse_strict`], refusing (as malformed) a document of more than `max_values` values
/// before building them: what a document may cost in memory is then bounded by its count.
pub fn parse_strict_bounded(bytes: &[u8], max_values: usize) -> Result<Value, JsonError> {
    parse_tree(bytes, max_values).map(Json::into_value)
}

/// The strict parse of [`parse_strict_bounded`] as a [`Json`] tree borrowing from `bytes`.
pub fn parse_tree(bytes: &[u8], max_values: usize) -> Result<Json<'_>, JsonError> {
    let too_deep = Cell::new(false);
    let budget = Cell::new(max_values);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let seed = StrictSeed {
        depth: 0,
        too_deep: &too_deep,
        budget: &budget,
    };
    let parsed = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(_) if too_deep.get() => Err(JsonError::TooDeep),
        Err(_) => Err(JsonError::Malformed),
    }
}

#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    depth: usize,
    /// Set when the depth cap fired, so the caller can tell "too deep" from "malformed".
    too_deep: &'a Cell<bool>,
    /// Values still allowed in the document.
    budget: &'a Cell<usize>,
}

impl StrictSeed<'_> {
    fn nested<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_NESTING {
            self.too_deep.set(true);
            return Err(E::custom("nesting limit exceeded"));
        }
        Ok(Self {
            depth: self.depth + 1,
            too_deep: self.too_deep,
            budget: self.budget,
        })
    }

    /// Spends one value of the budget.
    fn count<E: serde::de::Error>(self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom("too many values")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        self.count()?;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Json<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Json<'de>, E> {
        // As `serde_json::Value` does: a number that is not finite is null.
        Ok(Number::from_f64(value).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(value)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let inner = self.nested()?;
        let mut members = Vec::new();
        while let Some(name) = map.next_key_seed(Name)? {
            members.push((name, map.next_value_seed(inner)?));
        }
        // Sorted once (the values are already bounded by the budget), then a duplicate is a
        // neighbour: O(n log n) for any object an attacker can write.
        members.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        if members.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return Err(A::Error::custom("duplicate member name"));
        }
        Ok(Json::Object(Object { members }))
    }
}

/// A member name, borrowed from the document when it has no escape.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_json() {
        let value = parse_strict(br#"{"sub":"a","act":{"sub":"b"},"aud":["x","y"],"exp":1.5}"#);
        assert_eq!(value.unwrap()["act"]["sub"], "b");
    }

    #[test]
    fn rejects_duplicate_members_at_any_depth() {
        assert_eq!(
            parse_strict(br#"{"sub":"a","sub":"b"}"#),
            Err(JsonError::Malformed)
        );
        assert_eq!(
            parse_strict(br#"{"act":{"sub":"a","sub":"b"}}"#),
            Err(JsonError::Malformed)
        );
    }

    #[test]
    fn a_name_written_with_escapes_is_the_same_name() {
        assert_eq!(
            parse_strict(br#"{"sub":"a","s\u0075b":"b"}"#),
            Err(JsonError::Malformed)
        );
        assert_eq!(
            parse_tree(br#"{"s\u0075b":"b","aud":"x"}"#, usize::MAX)
                .unwrap()
                .get("sub")
                .and_then(Json::as_str),
            Some("b")
        );
    }

    #[test]
    fn members_are_found_whatever_order_they_were_written_in() {
        let names: Vec<String> = (0..200).rev().map(|n| format!("m{n}")).collect();
        let document = format!(
            "{{{}}}",
            names
                .iter()
                .enumerate()
                .map(|(value, name)| format!("\"{name}\":{value}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let tree = parse_tree(document.as_bytes(), usize::MAX).unwrap();
        let object = tree.as_object().unwrap();
        assert_eq!(object.len(), names.len());
        for (value, name) in names.iter().enumerate() {
            assert_eq!(object.get(name).and_then(Json::as_f64), Some(value as f64));
        }
        assert!(object.get("m200").is_none());
        assert_eq!(tree.to_value(), parse_strict(document.as_bytes()).unwrap());
    }

    #[test]
    fn rejects_trailing_data_and_garbage() {
        assert_eq!(parse_strict(br#"{"a":1} x"#), Err(JsonError::Malformed));
        assert_eq!(parse_strict(b"not json"), Err(JsonError::Malformed));
    }

    #[test]
    fn caps_nesting_before_building_deep_values() {
        let ok = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert!(parse_strict(ok.as_bytes()).is_ok());
        let deep = format!("{}1{}", r#"{"act":"#.repeat(5000), "}".repeat(5000));
        assert_eq!(parse_strict(deep.as_bytes()), Err(JsonError::TooDeep));
    }
}
