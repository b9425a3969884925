//! A small reader over a parsed YAML document that records every problem with its key path
//! instead of stopping at the first, so `check-config` can report them all at once.

use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// One configuration problem: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `issuers[0].jwks_file`; `(document)` for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All the problems of one configuration, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn document_error(message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        path: "(document)".into(),
        message,
    }])
}

/// A configuration file's text; an unreadable file is a `(document)` error naming it.
pub fn read_text(path: &std::path::Path) -> Result<String, ConfigErrors> {
    let cannot = |error: String| document_error(format!("cannot read {}: {error}", path.display()));
    let bytes =
        crate::decision::files::read_limited(path, crate::decision::files::MAX_CONFIG_FILE_BYTES)
            .map_err(|error| cannot(error.to_string()))?;
    String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".to_owned()))
}

/// YAML text as a JSON value (strict keys are checked by [`Reader::mapping`] afterwards).
pub fn parse_yaml(text: &str) -> Result<Value, ConfigErrors> {
    serde_saphyr::from_str(text).map_err(|error| document_error(format!("not valid YAML: {error}")))
}

/// Collects errors while values are read.
#[derive(Debug, Default)]
pub struct Reader {
    errors: Vec<ConfigError>,
}

pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub fn item(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

impl Reader {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// A mapping whose keys must all be in `allowed`; each unknown key is an error.
    pub fn mapping<'v>(
        &mut self,
        path: &str,
        value: &'v Value,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(map) = value.as_object() else {
            self.error(display_path(path), "must be a mapping");
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.error(
                    child(path, key),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(map)
    }

    pub fn required<'v>(
        &mut self,
        path: &str,
        map: &'v Map<String, Value>,
        key: &str,
    ) -> Option<&'v Value> {
        let value = map.get(key);
        if value.is_none() {
            self.error(child(path, key), "is required");
        }
        value
    }

    pub fn string<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v str> {
        match value.as_str() {
            Some(text) if !text.is_empty() => Some(text),
            Some(_) => {
                self.error(path, "must not be empty");
                None
            }
            None => {
                self.error(path, "must be a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, path: &str, value: &Value) -> Option<bool> {
        let parsed = value.as_bool();
        if parsed.is_none() {
            self.error(path, "must be true or false");
        }
        parsed
    }

    pub fn integer(&mut self, path: &str, value: &Value, min: u64, max: u64) -> Option<u64> {
        match value.as_u64() {
            Some(number) if (min..=max).contains(&number) => Some(number),
            _ => {
                self.error(path, format!("must be a whole number from {min} to {max}"));
                None
            }
        }
    }

    /// A list; each element is read by `each` with its own path.
    pub fn list<'v, T>(
        &mut self,
        path: &str,
        value: &'v Value,
        mut each: impl FnMut(&mut Self, &str, &'v Value) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some(items) = value.as_array() else {
            self.error(path, "must be a list");
            return None;
        };
        let mut parsed = Vec::with_capacity(items.len());
        let mut complete = true;
        for (index, element) in items.iter().enumerate() {
            match each(self, &item(path, index), element) {
                Some(value) => parsed.push(value),
                None => complete = false,
            }
        }
        complete.then_some(parsed)
    }

    /// A duration written like `30s`, `5m`, `1h` or `250ms`, at most `max`.
    pub fn duration(&mut self, path: &str, value: &Value, max: Duration) -> Option<Duration> {
        let parsed = value.as_str().and_then(parse_duration);
        match parsed {
            Some(duration) if duration <= max => Some(duration),
            Some(_) => {
                self.error(path, format!("must be at most {}s", max.as_secs()));
                None
            }
            None => {
                self.error(path, "must be a duration such as 30s, 5m, 1h or 250ms");
                None
            }
        }
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "(document)" } else { path }
}

/// Parses `30s`, `5m`, `1h`, `250ms`, `0s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    if digits_end == 0 {
        return None;
    }
    let amount: u64 = text[..digits_end].parse().ok()?;
    let unit_seconds = match &text[digits_end..] {
        "ms" => return Some(Duration::from_millis(amount)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    amount.checked_mul(unit_seconds).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["30", "s", "-1s", "1.5s", "1d", "", "30 s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
