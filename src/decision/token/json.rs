//! Strict JSON for JOSE headers and JWT claims sets.
//!
//! `serde_json::Value` keeps the last of two members with the same name, so `{"sub":"a",
//! "sub":"b"}` means different things to different parsers; RFC 7519 §4 says to reject it, and
//! we do, at every depth. Nesting is capped at [`MAX_NESTING`] levels before any deeper value is
//! built, so a token of thousands of nested `act` objects costs a bounded amount of stack.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
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

/// Parses `bytes` as one JSON value, rejecting duplicate member names and deep nesting.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    parse_strict_bounded(bytes, usize::MAX)
}

/// [`parse_strict`], refusing (as malformed) a document of more than `max_values` values
/// before building them: what a document may cost in memory is then bounded by its count.
pub fn parse_strict_bounded(bytes: &[u8], max_values: usize) -> Result<Value, JsonError> {
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
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.count()?;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            // One search of the members: the place the name would take, or its duplicate.
            match members.entry(name) {
                serde_json::map::Entry::Occupied(_) => {
                    return Err(A::Error::custom("duplicate member name"));
                }
                serde_json::map::Entry::Vacant(place) => {
                    place.insert(map.next_value_seed(inner)?);
                }
            }
        }
        Ok(Value::Object(members))
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
