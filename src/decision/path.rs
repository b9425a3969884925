//! Request path normalisation for route matching.
//!
//! Guarantees: the normalised path starts with `/`, has no query or fragment, no empty, `.` or
//! `..` segments, no matrix parameters (`;…` is cut from each segment, as Tomcat-style servers
//! do before they route), and no percent-encoding of unreserved characters (decoded, so
//! `/%61dmin` is matched as `/admin`). Anything whose meaning differs between servers is
//! rejected instead of guessed: encoded `/`, `\`, `.`, `%`, `?` or `#`, a raw backslash, control
//! characters, malformed escapes, `..;`-style dot segments with parameters, `..` above the
//! root, and a `..` whose target depends on the server: one that follows an empty segment (`//`)
//! or a segment of parameters only (`;x`) since the last real segment. RFC 3986 resolvers
//! (and nginx without `merge_slashes`) remove that empty segment, servers that merge slashes or
//! strip parameters first remove the real segment before it: `/admin//../calendar` is
//! `/admin/calendar` to one and `/calendar` to the other. An encoded `;` is refused too: some
//! servers read `%3B` as a parameter delimiter, most as a literal character.
//!
//! It does not decide which route applies; [`crate::decision::routes`] does, on segment boundaries.

use std::borrow::Cow;
use std::fmt;

/// Why a path could not be normalised safely (answered with 400 `path_invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    MalformedEscape,
    EncodedSeparator,
    Backslash,
    ControlCharacter,
    NotUtf8,
    DotSegmentWithParameters,
    AboveRoot,
    AmbiguousDotSegment,
}

impl PathError {
    pub fn description(self) -> &'static str {
        match self {
            Self::NotAbsolute => "the path does not start with '/'",
            Self::MalformedEscape => "the path has a malformed percent-escape",
            Self::EncodedSeparator => "the path encodes '/', '\\', '.', ';' or '%'",
            Self::Backslash => "the path contains a backslash",
            Self::ControlCharacter => "the path contains a control character",
            Self::NotUtf8 => "the path does not decode to UTF-8",
            Self::DotSegmentWithParameters => "the path has a dot segment with ';' parameters",
            Self::AboveRoot => "the path climbs above the root with '..'",
            Self::AmbiguousDotSegment => {
                "the path has a '..' after an empty or parameter-only segment (servers disagree on its target)"
            }
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_strict(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let value = if byte == b'%' {
            let high = bytes.get(index + 1).copied().and_then(hex_value);
            let low = bytes.get(index + 2).copied().and_then(hex_value);
            let (Some(high), Some(low)) = (high, low) else {
                return Err(PathError::MalformedEscape);
            };
            index += 3;
            let value = high << 4 | low;
            // `?` and `#` too: decoded they would end the path for the next reader.
            if matches!(value, b'/' | b'\\' | b'.' | b';' | b'%' | b'?' | b'#') {
                return Err(PathError::EncodedSeparator);
            }
            value
        } else {
            index += 1;
            if byte == b'\\' {
                return Err(PathError::Backslash);
            }
            byte
        };
        if value < 0x20 || value == 0x7f {
            return Err(PathError::ControlCharacter);
        }
        decoded.push(value);
    }
    String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)
}

/// Normalises the `:path` of a request (see the module docs). A path already in normal form
/// (the common case) is returned as it is, without decoding or copying.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let raw = &raw[..end];
    if already_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_fully(raw).map(Cow::Owned)
}

/// A path [`normalize_fully`] returns unchanged, recognised conservatively: `/`, or `/`-led
/// segments that are non-empty, made only of ASCII letters, digits, `-`, `_`, `~` and `.`,
/// with no segment starting with `.` (so no `.` or `..`), and no trailing `/`. Anything else
/// (escapes, `;`, other characters) takes the full path; the tests compare both on random paths.
fn already_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes == b"/" {
        return true;
    }
    if bytes.first() != Some(&b'/') || bytes.last() == Some(&b'/') {
        return false;
    }
    let mut previous = b'/';
    for &byte in &bytes[1..] {
        let allowed = match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => true,
            b'.' | b'/' => previous != b'/',
            _ => false,
        };
        if !allowed {
            return false;
        }
        previous = byte;
    }
    true
}

/// The whole normalisation of a path already cut before its query and fragment.
fn normalize_fully(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = percent_decode_strict(raw)?;
    // Each kept segment with whether an empty or parameter-only segment came between it and
    // the one before (what a `..` popping it back would have to agree on).
    let mut segments: Vec<(&str, bool)> = Vec::new();
    // An empty or parameter-only segment since the last kept one.
    let mut gap = false;
    for segment in decoded.split('/').skip(1) {
        let base = segment.split(';').next().unwrap_or_default();
        match base {
            "" => gap = true,
            "." | ".." if base.len() != segment.len() => {
                return Err(PathError::DotSegmentWithParameters);
            }
            "." => {}
            ".." => {
                if gap {
                    return Err(PathError::AmbiguousDotSegment);
                }
                let (_, gap_before) = segments.pop().ok_or(PathError::AboveRoot)?;
                gap = gap_before;
            }
            _ => {
                segments.push((base, gap));
                gap = false;
            }
        }
    }
    let mut normalized = String::with_capacity(decoded.len());
    for (segment, _) in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Ok(normalized)
}

/// True when `prefix` (a normalised path) covers `path` on segment boundaries:
/// `/calendar` covers `/calendar` and `/calendar/x`, not `/calendarx`; `/` covers everything.
pub fn has_segment_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_what_servers_agree_on() {
        let cases = [
            (
                "query dropped",
                "/calendar/events?day=mon",
                "/calendar/events",
            ),
            ("fragment dropped", "/a#frag", "/a"),
            ("root", "/", "/"),
            (
                "duplicate slashes merged",
                "//calendar///events/",
                "/calendar/events",
            ),
            ("dot segments resolved", "/a/./b/../calendar", "/a/calendar"),
            ("unreserved escapes decoded", "/%61dmin/x", "/admin/x"),
            (
                "matrix parameters cut",
                "/admin;jsessionid=1/users",
                "/admin/users",
            ),
            ("utf-8 decoded", "/caf%C3%A9", "/café"),
            (
                "dot-dot pops a segment with parameters",
                "/a/x;y/../b",
                "/a/b",
            ),
            ("empty segment after the dot-dot", "/a/b/..//c", "/a/c"),
            ("query with encoded slash ignored", "/a?x=%2F", "/a"),
        ];
        for (name, input, expected) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(expected), "case {name}");
        }
    }

    #[test]
    fn rejects_what_servers_disagree_on() {
        use PathError::*;
        let cases = [
            ("relative", "calendar", NotAbsolute),
            ("asterisk form", "*", NotAbsolute),
            ("empty", "", NotAbsolute),
            ("truncated escape", "/a%2", MalformedEscape),
            ("non-hex escape", "/a%zz", MalformedEscape),
            ("encoded slash", "/admin%2Fusers", EncodedSeparator),
            (
                "encoded slash lowercase",
                "/admin%2fusers",
                EncodedSeparator,
            ),
            ("encoded backslash", "/admin%5Cusers", EncodedSeparator),
            ("encoded dot", "/%2e%2e/admin", EncodedSeparator),
            ("double encoding", "/admin%252F", EncodedSeparator),
            (
                "encoded question mark",
                "/admin%3F/calendar",
                EncodedSeparator,
            ),
            ("encoded hash", "/calendar%23x", EncodedSeparator),
            ("raw backslash", "/public\\..\\admin", Backslash),
            ("encoded nul", "/a%00b", ControlCharacter),
            ("raw newline", "/a\nb", ControlCharacter),
            ("invalid utf-8", "/%C3", NotUtf8),
            (
                "dot-dot with parameters",
                "/public/..;/admin",
                DotSegmentWithParameters,
            ),
            (
                "dot with parameters",
                "/.;x/admin",
                DotSegmentWithParameters,
            ),
            ("above root", "/../admin", AboveRoot),
            (
                "dot-dot after empty segment",
                "/admin//../calendar/events",
                AmbiguousDotSegment,
            ),
            (
                "dot-dot after empty segments",
                "/calendar///../events",
                AmbiguousDotSegment,
            ),
            (
                "dot-dot after empty segment, behind a dot",
                "/admin//./../calendar",
                AmbiguousDotSegment,
            ),
            (
                "dot-dot after empty segment, one pop later",
                "/a//b/../../c",
                AmbiguousDotSegment,
            ),
            (
                "dot-dot after parameter-only segment",
                "/admin/;x/../calendar/events",
                AmbiguousDotSegment,
            ),
            (
                "dot-dot after empty parameter segment",
                "/admin/;/../calendar/events",
                AmbiguousDotSegment,
            ),
            (
                "encoded semicolon",
                "/admin/%3Bx/../calendar/events",
                EncodedSeparator,
            ),
        ];
        for (name, input, expected) in cases {
            assert_eq!(normalize(input), Err(expected), "case {name}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(has_segment_prefix("/calendar", "/calendar"));
        assert!(has_segment_prefix("/calendar/events", "/calendar"));
        assert!(!has_segment_prefix("/calendarx", "/calendar"));
        assert!(!has_segment_prefix("/cal", "/calendar"));
        assert!(has_segment_prefix("/anything", "/"));
    }

    #[test]
    fn paths_taken_as_they_are_are_exactly_those_full_normalisation_leaves_unchanged() {
        // Random paths over an alphabet of everything that matters to normalisation.
        let alphabet: Vec<char> = "/./a.Z9-_~%2e;?#\\ é".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut fast = 0;
        for _ in 0..200_000 {
            let mut path = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = (state % 12) as usize;
            for _ in 0..length {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                path.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let cut = &path[..path.find(['?', '#']).unwrap_or(path.len())];
            if already_normal(cut) {
                fast += 1;
                assert_eq!(normalize_fully(cut).as_deref(), Ok(cut), "{path:?}");
            }
            assert_eq!(
                normalize(&path).map(Cow::into_owned),
                normalize_fully(cut),
                "{path:?}"
            );
        }
        assert!(fast > 1_000, "the fast path was exercised {fast} times");
        for path in [
            "/",
            "/calendar",
            "/calendar/events",
            "/a.b/c~d",
            "/v1/x-y_z",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
        for path in [
            "/calendar/",
            "//calendar",
            "/./a",
            "/a/..",
            "/.well-known",
            "/%61",
        ] {
            assert!(!already_normal(path), "{path}");
        }
    }
}
