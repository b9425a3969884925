//! The decision records `actguard graph`, `report` and `policy suggest` read (issue #18): the
//! audit format is their contract (README, "Audit log"), so they read it in one place.
//!
//! A line is a decision when it is a JSON object with a `decision` and no `event` (admin and
//! fleet events are not decisions); a line whose `v` is newer than this build knows is skipped
//! and counted apart, never guessed at. Files are streamed ([`stream_lines`]), with
//! progress on stderr every 64 MiB: a bar and a percentage when it is a terminal, a line
//! otherwise.

use crate::serve::audit::{FORMAT_VERSION, MAX_CHAIN_ENTRIES, MAX_FIELD_BYTES, MAX_SCOPE_ENTRIES};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Longest audit line read (actguard's own are far shorter: each field is cut at 1 KiB).
const MAX_LINE: usize = 1 << 20;
/// Distinct reasons kept per count (an edge, a row, a time bucket); the rest are summed under
/// [`OTHER_REASONS`].
pub const MAX_REASONS: usize = 32;
/// Where reasons past [`MAX_REASONS`] are counted: no reason code (those are snake_case), so
/// no reason of actguard's is merged into it.
pub const OTHER_REASONS: &str = "(other reasons)";

/// Adds `count` to `reason` in `reasons`, or to [`OTHER_REASONS`] once [`MAX_REASONS`] are kept.
pub fn count_bounded(reasons: &mut BTreeMap<String, u64>, reason: &str, count: u64) {
    let key = if reasons.contains_key(reason) || reasons.len() < MAX_REASONS {
        reason
    } else {
        OTHER_REASONS
    };
    *reasons.entry(key.to_owned()).or_default() += count;
}

/// One decision line.
pub struct Decision {
    record: Value,
}

/// Why a line is not a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Not JSON, too long, not a decision (admin and fleet events), or not as actguard
    /// writes one (a malformed `v`, members past the writer's caps).
    NotDecision,
    /// A decision of an audit format newer than this build reads.
    NewerFormat,
}

impl Decision {
    pub fn parse(line: &[u8]) -> Result<Self, Skipped> {
        let record: Value = serde_json::from_slice(line).map_err(|_| Skipped::NotDecision)?;
        if !record.is_object() || record.get("event").is_some() || record.get("decision").is_none()
        {
            return Err(Skipped::NotDecision);
        }
        // No `v`: version 1 (the same members less `v` and `scopes`); a `v` that is not a
        // version number at all is not actguard's.
        match record.get("v").map(Value::as_u64) {
            None => {}
            Some(Some(v)) if (1..=FORMAT_VERSION).contains(&v) => {}
            Some(Some(v)) if v > FORMAT_VERSION => return Err(Skipped::NewerFormat),
            Some(_) => return Err(Skipped::NotDecision),
        }
        let decision = Self { record };
        // Past the writer's own caps: not a line actguard wrote (a forged or mixed-in one).
        let oversized = |name: &str| {
            decision.record[name]
                .as_str()
                .is_some_and(|text| text.len() > MAX_FIELD_BYTES)
        };
        let long_list = |name: &str, most: usize| {
            decision.record[name].as_array().is_some_and(|items| {
                items.len() > most
                    || items.iter().any(|item| {
                        item.as_str()
                            .is_some_and(|text| text.len() > MAX_FIELD_BYTES)
                    })
            })
        };
        if ["caller", "subject", "route", "reason", "time"]
            .into_iter()
            .any(oversized)
            || long_list("chain", MAX_CHAIN_ENTRIES)
            || long_list("scopes", MAX_SCOPE_ENTRIES)
            || decision
                .tool()
                .is_some_and(|tool| tool.len() > MAX_FIELD_BYTES)
        {
            return Err(Skipped::NotDecision);
        }
        Ok(decision)
    }

    /// Whether the writer cut member `name` (it is named in `truncated`).
    pub fn truncated(&self, name: &str) -> bool {
        self.record["truncated"]
            .as_array()
            .is_some_and(|cut| cut.iter().any(|item| item == name))
    }

    /// A string member, `None` when absent, not a string or empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.record[name].as_str().filter(|value| !value.is_empty())
    }

    /// The audit format version of the line (1 when it has no `v`).
    pub fn version(&self) -> u64 {
        self.record["v"].as_u64().unwrap_or(1)
    }

    pub fn allowed(&self) -> bool {
        self.record["decision"] == "allow"
    }

    /// The deny reason (`unknown` when a deny names none); `None` for an allow.
    pub fn reason(&self) -> Option<&str> {
        (!self.allowed()).then(|| self.text("reason").unwrap_or("unknown"))
    }

    /// First delegate → current actor.
    pub fn chain(&self) -> Vec<&str> {
        self.strings("chain")
    }

    /// The token's scopes (empty in version 1 lines, which did not record them).
    pub fn scopes(&self) -> Vec<&str> {
        self.strings("scopes")
    }

    fn strings(&self, name: &str) -> Vec<&str> {
        self.record[name]
            .as_array()
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// Unix seconds of `time`, when it reads as the audit log writes it.
    /// (Never before 1970: actguard did not write that.)
    pub fn time(&self) -> Option<i64> {
        self.text("time")
            .and_then(unix_seconds_of)
            .filter(|time| *time >= 0)
    }

    /// The MCP tool a `tools/call` named.
    pub fn tool(&self) -> Option<&str> {
        self.record["mcp"]["tool"].as_str()
    }

    /// Whether this was a shadow route's decision (`"enforced": false`).
    pub fn shadowed(&self) -> bool {
        self.record["enforced"] == false
    }
}

/// What a pass over the files read besides decisions.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Decisions handed on (at most `--since` old).
    pub decisions: u64,
    /// Decisions older than `--since`.
    pub older: u64,
    /// Lines that were not decisions (counted by [`Skipped::NotDecision`]) or too long.
    pub skipped: u64,
    /// Decisions of a newer audit format.
    pub newer: u64,
}

/// `--since 24h` as the oldest Unix second kept.
pub fn since_of(since: Option<&str>) -> Result<Option<i64>, String> {
    let Some(text) = since else {
        return Ok(None);
    };
    let age = crate::config::parse_duration(text)
        .ok_or_else(|| format!("--since {text}: not a duration such as 24h or 30m"))?;
    i64::try_from(age.as_secs())
        .ok()
        .and_then(|age| crate::decision::token::unix_now().checked_sub(age))
        .map(Some)
        .ok_or_else(|| format!("--since {text}: too long"))
}

/// Streams every decision of `files` at most `since` (Unix seconds) old into `each`, with
/// progress on stderr; reports what was skipped on stderr and returns the totals.
pub fn read(
    files: &[PathBuf],
    since: Option<i64>,
    each: &mut dyn FnMut(&Decision),
) -> Result<Totals, String> {
    let sizes: Vec<u64> = files
        .iter()
        .map(|file| std::fs::metadata(file).map_or(0, |metadata| metadata.len()))
        .collect();
    let total: u64 = sizes.iter().sum();
    let terminal = std::io::stderr().is_terminal();
    let mut totals = Totals::default();
    let mut before = 0;
    for (file, size) in files.iter().zip(&sizes) {
        let mut progress = |read: u64| {
            let done = before + read;
            if terminal {
                let percent = (done * 100).checked_div(total).unwrap_or(100).min(100);
                let filled = (percent / 5) as usize;
                eprint!(
                    "\r[{}{}] {percent:>3}% of {} MiB",
                    "#".repeat(filled),
                    "-".repeat(20 - filled),
                    total >> 20
                );
            } else {
                eprintln!("read {} of {} MiB", done >> 20, total >> 20);
            }
        };
        let mut too_long = 0;
        let mut line = |line: &[u8]| match Decision::parse(line) {
            Ok(decision) => {
                if since.is_some_and(|since| decision.time().is_none_or(|time| time < since)) {
                    totals.older += 1;
                } else {
                    totals.decisions += 1;
                    each(&decision);
                }
            }
            Err(Skipped::NotDecision) => totals.skipped += 1,
            Err(Skipped::NewerFormat) => totals.newer += 1,
        };
        stream_lines(file, &mut line, &mut too_long, &mut progress)
            .map_err(|error| format!("{}: {error}", file.display()))?;
        totals.skipped += too_long;
        before += size;
    }
    if terminal && total >= 1 << 26 {
        eprintln!();
    }
    if totals.skipped > 0 {
        eprintln!(
            "{} line(s) were not decision records (admin or fleet events, or not actguard audit JSON) and were skipped",
            totals.skipped
        );
    }
    if totals.newer > 0 {
        eprintln!(
            "{} decision(s) of an audit format newer than version {FORMAT_VERSION} were skipped: read them with a newer actguard",
            totals.newer
        );
    }
    Ok(totals)
}

/// Characters no output may show as themselves: control characters (C0, DEL, C1), U+FFFE and
/// U+FFFF, line and paragraph separators, and bidirectional marks and overrides (which would
/// show an ID reversed). Log text is attacker-influenced.
pub fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{fffe}'
                | '\u{ffff}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// The `n` largest counts, largest first (ties by name).
pub fn top_counts(counts: &BTreeMap<String, u64>, n: usize) -> Vec<(&str, u64)> {
    let mut sorted: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    sorted.truncate(n);
    sorted
}

/// Ends a command: its output written to `out` (default: stdout), or its error said on stderr.
pub fn respond(out: Option<&Path>, output: Result<String, String>) -> ExitCode {
    let written = output.and_then(|text| match out {
        Some(path) => std::fs::write(path, text.as_bytes())
            .map_err(|error| format!("{}: {error}", path.display())),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|error| error.to_string()),
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Calls `each` with every non-blank line of `path` (without its newline), read as a stream:
/// a line longer than [`MAX_LINE`] is skipped without being held, and counted in `too_long`;
/// `progress` is told the bytes read every 64 MiB.
pub fn stream_lines(
    path: &Path,
    each: &mut dyn FnMut(&[u8]),
    too_long: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::with_capacity(4096);
    let mut read: u64 = 0;
    loop {
        line.clear();
        let got = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if got == 0 {
            return Ok(());
        }
        read += got as u64;
        if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let more = (&mut reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut sink)?;
                read += more as u64;
                if more == 0 || sink.last() == Some(&b'\n') {
                    break;
                }
            }
            *too_long += 1;
            continue;
        }
        let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
        if !trimmed.iter().all(u8::is_ascii_whitespace) {
            each(trimmed);
        }
        if read & ((1 << 26) - 1) < got as u64 {
            progress(read);
        }
    }
}

/// Unix seconds of an RFC 3339 UTC time as the audit log writes it
/// (`2026-12-04T03:46:05.910Z`); `None` otherwise.
pub fn unix_seconds_of(time: &str) -> Option<i64> {
    let bytes = time.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> { time.get(range)?.parse().ok() };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_times_are_read_as_unix_seconds() {
        assert_eq!(unix_seconds_of("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            unix_seconds_of("2026-12-04T03:46:05.910Z"),
            Some(1_796_355_965)
        );
        assert_eq!(unix_seconds_of("2026-13-04T03:46:05.910Z"), None);
        assert_eq!(unix_seconds_of("yesterday"), None);
    }

    #[test]
    fn decisions_of_a_newer_format_are_skipped_not_guessed_at() {
        let v1 = br#"{"time":"2026-12-04T00:00:00.000Z","decision":"allow","chain":["a"]}"#;
        let v2 = br#"{"time":"2026-12-04T00:00:00.000Z","v":2,"decision":"deny","reason":"x","scopes":["s"]}"#;
        let v3 = br#"{"time":"2026-12-04T00:00:00.000Z","v":3,"decision":"allow"}"#;
        let decision = Decision::parse(v1).unwrap();
        assert!(decision.allowed() && decision.scopes().is_empty());
        assert_eq!(decision.chain(), ["a"]);
        let decision = Decision::parse(v2).unwrap();
        assert_eq!(decision.reason(), Some("x"));
        assert_eq!(decision.scopes(), ["s"]);
        assert_eq!(Decision::parse(v3).err(), Some(Skipped::NewerFormat));
        assert_eq!(
            Decision::parse(br#"{"event":"admin","decision":"allow"}"#).err(),
            Some(Skipped::NotDecision)
        );
        assert_eq!(Decision::parse(b"[1]").err(), Some(Skipped::NotDecision));
        for v in ["2.0", "\"2\"", "0", "-1", "null", "1e30"] {
            let line = format!(r#"{{"v":{v},"decision":"allow"}}"#);
            assert_eq!(
                Decision::parse(line.as_bytes()).err(),
                Some(Skipped::NotDecision),
                "{v}"
            );
        }
        // Past the writer's caps: 17 actors, 65 scopes, a 2 KiB route.
        let chain: Vec<String> = (0..17).map(|i| format!("a{i}")).collect();
        let scopes: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        for line in [
            serde_json::json!({"decision": "allow", "chain": chain}),
            serde_json::json!({"decision": "allow", "scopes": scopes}),
            serde_json::json!({"decision": "allow", "route": "r".repeat(2048)}),
        ] {
            assert_eq!(
                Decision::parse(line.to_string().as_bytes()).err(),
                Some(Skipped::NotDecision)
            );
        }
        let before_1970 = br#"{"time":"1969-12-31T23:59:59.000Z","decision":"allow"}"#;
        assert_eq!(Decision::parse(before_1970).unwrap().time(), None);
    }
}
