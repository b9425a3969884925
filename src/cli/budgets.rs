//! `actguard admin budgets`: what a session's branches have spent on the fleet's Redis, and
//! `--reset` to clear a session or one branch (issue #17). Talks to Redis directly, as the
//! sidecars do; the key layout is `serve::budgets`'.

use crate::config::{BudgetSettings, RedisTls};
use crate::serve::budgets::{BRANCH_FIELD, BRANCH_LIMIT_FIELD, SESSION_LIMIT_FIELD, branch_field};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Which budgets to show or reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every session hash whose session id (`sid`, else `jti`) is this.
    Session(String),
    /// The branch with this id, in whichever session holds it.
    Branch(String),
}

/// Where the counters are: `--redis URL` with its prefix and TLS files.
pub struct Target {
    pub url: String,
    pub key_prefix: String,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `text` with Redis glob characters escaped, so a session id matches only itself.
fn glob_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(character);
    }
    out
}

/// The SCAN pattern of the session hashes `selection` may be in: a session's hash is
/// `{prefix}{24-character session root}:{sid}`.
fn pattern(prefix: &str, selection: &Selection) -> String {
    let prefix = glob_escaped(prefix);
    match selection {
        Selection::Session(sid) => format!("{prefix}b-{}:{}", "?".repeat(22), glob_escaped(sid)),
        Selection::Branch(_) => format!("{prefix}b-{}:*", "?".repeat(22)),
    }
}

/// One session hash as read.
struct SessionBudget {
    key: String,
    fields: BTreeMap<String, String>,
    ttl: i64,
}

fn units(fields: &BTreeMap<String, String>, name: &str) -> Option<i64> {
    fields.get(name).and_then(|value| value.parse().ok())
}

fn spent(used: i64, limit: Option<i64>) -> String {
    match limit {
        Some(limit) if limit >= 0 => {
            format!(
                "{used} of {limit} used, {} remaining",
                (limit - used).max(0)
            )
        }
        _ => format!("{used} used, no limit"),
    }
}

fn render(prefix: &str, sessions: &[SessionBudget], only_branch: Option<&str>) -> String {
    let mut out = String::new();
    for session in sessions {
        let rest = session.key.strip_prefix(prefix).unwrap_or(&session.key);
        // The session root is 24 ASCII characters; a foreign key under the prefix may not be.
        let cut = (0..=rest.len().min(24))
            .rev()
            .find(|&at| rest.is_char_boundary(at))
            .unwrap_or(0);
        let (root, sid) = rest.split_at(cut);
        let sid = sid.strip_prefix(':').unwrap_or(sid);
        out.push_str(&format!(
            "session {root} (sid or jti {sid:?}): {}; expires in {}s\n",
            spent(
                units(&session.fields, "s").unwrap_or(0),
                units(&session.fields, SESSION_LIMIT_FIELD)
            ),
            session.ttl
        ));
        for (field, value) in &session.fields {
            let Some(branch) = field.strip_prefix(BRANCH_FIELD) else {
                continue;
            };
            if only_branch.is_some_and(|only| only != branch) {
                continue;
            }
            let used = value.parse().unwrap_or(0);
            let limit = units(&session.fields, &format!("{BRANCH_LIMIT_FIELD}{branch}"));
            out.push_str(&format!("  branch {branch}: {}\n", spent(used, limit)));
        }
    }
    if out.is_empty() {
        out.push_str("no budget has been charged for that\n");
    }
    out
}

/// Clears one branch: its counter goes, and what it spent is given back to its session.
const RESET_BRANCH: &str = r"
local used = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
redis.call('HDEL', KEYS[1], ARGV[1], ARGV[2])
if used > 0 then
  redis.call('HINCRBY', KEYS[1], 's', -used)
end
return used
";

async fn sessions(
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    selection: &Selection,
) -> Result<Vec<SessionBudget>, String> {
    let pattern = pattern(prefix, selection);
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await
            .map_err(|error| error.to_string())?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let mut found = Vec::new();
    for key in keys {
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(connection)
            .await
            .map_err(|error| error.to_string())?;
        if let Selection::Branch(branch) = selection
            && !fields.contains_key(&branch_field(branch))
        {
            continue;
        }
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(connection)
            .await
            .map_err(|error| error.to_string())?;
        found.push(SessionBudget { key, fields, ttl });
    }
    Ok(found)
}

async fn show_or_reset(
    target: Target,
    selection: Selection,
    reset: bool,
) -> Result<String, String> {
    let settings = BudgetSettings {
        url: target.url.clone(),
        key_prefix: target.key_prefix.clone(),
        tls: target.tls_ca.map(|ca| RedisTls {
            ca,
            cert: target.tls_cert,
            key: target.tls_key,
        }),
        timeout: std::time::Duration::from_secs(5),
        allow_on_error: false,
        max_window: crate::config::DEFAULT_MAX_WINDOW,
    };
    let client = crate::serve::budgets::client(&settings)?;
    let mut connection = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| format!("cannot reach Redis at {}: no answer within 10s", target.url))?
    .map_err(|error| format!("cannot reach Redis at {}: {error}", target.url))?;
    let found = sessions(&mut connection, &target.key_prefix, &selection).await?;
    if !reset {
        let only = match &selection {
            Selection::Branch(branch) => Some(branch.as_str()),
            Selection::Session(_) => None,
        };
        return Ok(render(&target.key_prefix, &found, only)
            .trim_end()
            .to_owned());
    }
    let mut cleared = 0;
    for session in &found {
        match &selection {
            Selection::Session(_) => {
                let _: i64 = redis::cmd("DEL")
                    .arg(&session.key)
                    .query_async(&mut connection)
                    .await
                    .map_err(|error| error.to_string())?;
            }
            Selection::Branch(branch) => {
                let _: i64 = redis::Script::new(RESET_BRANCH)
                    .key(&session.key)
                    .arg(branch_field(branch))
                    .arg(format!("{BRANCH_LIMIT_FIELD}{branch}"))
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|error| error.to_string())?;
            }
        }
        cleared += 1;
    }
    Ok(match selection {
        Selection::Session(sid) => format!("reset {cleared} session budget(s) of {sid:?}"),
        Selection::Branch(branch) => {
            format!("reset branch {branch:?} in {cleared} session(s)")
        }
    })
}

/// How long the whole command may take (a SCAN of a large keyspace included).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// `actguard admin budgets`.
pub fn run(target: Target, selection: Selection, reset: bool) -> ExitCode {
    let url = target.url.clone();
    super::report(super::runtime().block_on(async move {
        tokio::time::timeout(COMMAND_TIMEOUT, show_or_reset(target, selection, reset))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "Redis at {url} did not finish within {}s",
                    COMMAND_TIMEOUT.as_secs()
                ))
            })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_pattern_matches_only_that_session_id() {
        assert_eq!(
            pattern("actguard:budget:", &Selection::Session("wf*1".into())),
            format!("actguard:budget:b-{}:wf\\*1", "?".repeat(22))
        );
        assert_eq!(glob_escaped("a?[b]\\"), "a\\?\\[b\\]\\\\");
    }

    #[test]
    fn a_foreign_key_under_the_prefix_is_shown_not_a_panic() {
        let foreign = SessionBudget {
            key: format!("actguard:budget:b-{}é:x", "a".repeat(21)),
            fields: BTreeMap::from([("s".to_owned(), "3".to_owned())]),
            ttl: 5,
        };
        let shown = render("actguard:budget:", &[foreign], None);
        assert!(shown.contains("3 used"), "{shown}");
    }
}
