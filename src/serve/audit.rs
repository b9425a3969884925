//! The audit log: one JSON line per decision (every deny; allows sampled), never the token,
//! a signature or a query string.
//!
//! Writing never blocks a check for long: a check serialises its record straight into a
//! per-thread buffer (no intermediate JSON value) and appends the line, whole, to one shared
//! batch under a mutex held for a copy. A dedicated writer thread takes the batch and writes
//! it with one `write` and one flush. The writer is woken once per batch — when a line lands
//! in an empty batch, or when the batch passes [`WAKE_BYTES`] — then gathers for up to
//! [`GATHER`] so a busy sidecar writes a few hundred lines per system call instead of
//! waking the writer for each. Lines queued and not yet written are bounded in lines
//! (`audit.buffer_lines`) and in bytes (`audit.buffer_bytes`); past either bound the line is
//! dropped and `actguard_audit_lines_dropped_total` counts it. Each field is cut at
//! [`MAX_FIELD_BYTES`] (the chain at [`MAX_CHAIN_ENTRIES`] actors) and the record then names
//! the cut fields in `"truncated"`, so a line is small whatever the request carried.
//! [`AuditWriter::finish`] stops the writer after everything already accepted is written.

use crate::config::{AuditConfig, AuditOutput};
use crate::decision::record::{AuditRecord, DecisionLog};
use crate::decision::telemetry;
use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest value of one field in a line (bytes, cut at a character boundary).
pub const MAX_FIELD_BYTES: usize = 1024;
/// Most actors of a chain written in a line.
pub const MAX_CHAIN_ENTRIES: usize = 16;
/// Most scopes written in a line (each cut at [`MAX_FIELD_BYTES`] too).
pub const MAX_SCOPE_ENTRIES: usize = 64;
/// The audit format's version, the `v` member of every line: 2 added `v` and `scopes` (a
/// line without `v` is version 1). Readers (`actguard graph`, `report`, `policy suggest`)
/// skip lines of a version they do not know, and say so.
pub const FORMAT_VERSION: u64 = 2;
/// What follows `time` in every line: the `v` member as literal bytes, not formatted per line
/// (`lines_match_serde_json_member_by_member_in_the_documented_order` holds it to
/// [`FORMAT_VERSION`]).
const VERSION_MEMBER: &[u8] = b"\",\"v\":2,\"request_id\":";
/// Largest line buffer a thread keeps between checks (a normal line is a few hundred bytes).
const LINE_KEEP_BYTES: usize = 32 * 1024;
/// A batch this large wakes the writer at once instead of at the end of its gathering time.
pub const WAKE_BYTES: usize = 64 * 1024;
/// How long the writer lets a batch gather after its first line before writing it.
pub const GATHER: Duration = Duration::from_millis(2);

/// Lines accepted and not yet written: the batch being filled and the one being written.
#[derive(Default)]
struct Queue {
    /// Whole lines, each ending in `\n`.
    pending: Vec<u8>,
    pending_lines: usize,
    /// Taken by the writer and not yet written out.
    writing_bytes: usize,
    writing_lines: usize,
    /// The writer sleeps until a line arrives (nothing is pending).
    writer_idle: bool,
    /// The writer is gathering a batch and wants to hear when it passes [`WAKE_BYTES`].
    writer_gathering: bool,
    stop: bool,
}

struct Sink {
    queue: Mutex<Queue>,
    wake: Condvar,
    max_bytes: usize,
    max_lines: usize,
    /// Lines this log dropped (also counted in the process-wide metric).
    dropped: AtomicU64,
    /// Log every `allow_stride`-th allow; 0 logs none.
    allow_stride: u64,
    allows_seen: AtomicU64,
}

impl Sink {
    /// The queue, also after a thread panicked holding it: it holds only whole lines and
    /// counters, each updated before the lock is released.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A cheap, cloneable handle for recording decisions.
#[derive(Clone, Default)]
pub struct AuditLog {
    sink: Option<Arc<Sink>>,
}

/// Owns the writer thread; [`finish`](Self::finish) flushes and stops it.
pub struct AuditWriter {
    sink: Arc<Sink>,
    thread: std::thread::JoinHandle<()>,
}

thread_local! {
    /// The line being serialised on this thread, reused from check to check.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AuditLog {
    /// A log that records nothing (tests, or `audit.output: off`).
    pub fn disabled() -> Self {
        Self { sink: None }
    }

    /// Opens the output and starts the writer thread.
    pub fn start(config: &AuditConfig) -> std::io::Result<(Self, AuditWriter)> {
        let output: Box<dyn Write + Send> = match &config.output {
            AuditOutput::Stdout => Box::new(std::io::stdout()),
            AuditOutput::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Self::start_with_output(config, output)
    }

    /// [`AuditLog::start`] writing to `output`.
    fn start_with_output(
        config: &AuditConfig,
        output: Box<dyn Write + Send>,
    ) -> std::io::Result<(Self, AuditWriter)> {
        let allow_stride = if config.sample_allows <= 0.0 {
            0
        } else {
            (1.0 / config.sample_allows).round().max(1.0) as u64
        };
        let sink = Arc::new(Sink {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            max_bytes: config.buffer_bytes.max(1),
            max_lines: config.buffer_lines.max(1),
            dropped: AtomicU64::new(0),
            allow_stride,
            allows_seen: AtomicU64::new(0),
        });
        let writer_sink = Arc::clone(&sink);
        let thread = std::thread::Builder::new()
            .name("actguard-audit".into())
            .spawn(move || write_batches(&writer_sink, output))?;
        let log = Self {
            sink: Some(Arc::clone(&sink)),
        };
        Ok((log, AuditWriter { sink, thread }))
    }

    /// Queues the line for a decision, or drops (and counts) it when the queue is full.
    /// `build` runs only when the line is kept, so a disabled or sampled-out log costs the
    /// check nothing.
    pub fn record<'a>(&self, allowed: bool, build: impl FnOnce() -> AuditRecord<'a>) {
        if self.keeps(allowed) {
            self.write(&build());
        }
    }
}

impl DecisionLog for AuditLog {
    fn keeps(&self, allowed: bool) -> bool {
        let Some(sink) = &self.sink else {
            return false;
        };
        if allowed {
            let seen = sink.allows_seen.fetch_add(1, Ordering::Relaxed);
            if sink.allow_stride == 0 || seen % sink.allow_stride != 0 {
                return false;
            }
        }
        true
    }

    fn write(&self, record: &AuditRecord<'_>) {
        let Some(sink) = &self.sink else {
            return;
        };
        LINE.with(|line| {
            // A re-entrant use cannot happen (nothing below records a decision); a fresh
            // buffer keeps even that case correct.
            let mut fresh = Vec::new();
            let mut borrowed = line.try_borrow_mut();
            let line = borrowed.as_deref_mut().unwrap_or(&mut fresh);
            line.clear();
            write_line(line, record, SystemTime::now());
            line.push(b'\n');
            offer(sink, line);
            // A pathological line (every field at its cap) must not pin its size per thread.
            if line.capacity() > LINE_KEEP_BYTES {
                *line = Vec::new();
            }
        });
    }
}

/// Queues one whole line, or counts it dropped (in the log and the process-wide metric).
fn offer(sink: &Sink, line: &[u8]) {
    if !enqueue(sink, line) {
        sink.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(telemetry::AUDIT_DROPPED).increment(1);
    }
}

/// Appends one whole line to the batch unless a bound would be passed; wakes the writer only
/// when it sleeps on an empty batch, or gathers and the batch just grew past [`WAKE_BYTES`].
fn enqueue(sink: &Sink, line: &[u8]) -> bool {
    let mut queue = sink.queue();
    let bytes = queue.pending.len() + queue.writing_bytes + line.len();
    let lines = queue.pending_lines + queue.writing_lines + 1;
    if bytes > sink.max_bytes || lines > sink.max_lines || queue.stop {
        return false;
    }
    let was_small = queue.pending.len() < WAKE_BYTES;
    queue.pending.extend_from_slice(line);
    queue.pending_lines += 1;
    let wake = if queue.writer_idle {
        queue.writer_idle = false;
        true
    } else if queue.writer_gathering && was_small && queue.pending.len() >= WAKE_BYTES {
        queue.writer_gathering = false;
        true
    } else {
        false
    };
    drop(queue);
    if wake {
        sink.wake.notify_one();
    }
    true
}

/// One call of the revocation API, as the audit log records it: who asked, what, and what
/// came of it. Every call is recorded, accepted or not; none is sampled.
#[derive(Debug, Clone, Copy)]
pub struct AdminRecord<'a> {
    /// `admin` (a call of this sidecar's revocation API) or `fleet` (a change of the fleet
    /// bucket this sidecar applied).
    pub event: &'static str,
    /// `revoke`, `unrevoke` or `list`; for `fleet` also `remove` (a removal that names no
    /// writer) and `snapshot` (the bucket's contents applied at start).
    pub op: &'static str,
    /// `accepted`, `refused`, `invalid` or `failed`; `applied` for `fleet`.
    pub outcome: &'static str,
    /// `uid:1000 pid:42`, a TLS peer's SPIFFE ID, or `tcp:IP:PORT (unauthenticated)`; for
    /// `fleet`, the writer the bucket entry names (`nats-user:U (…)`).
    pub by: &'a str,
    /// The revocation kind (`jti`, `sid`, `sub`, `actor`, `branch`, `session_actor`); `None` for a list or an unknown kind.
    pub kind: Option<&'a str>,
    pub value: Option<&'a str>,
    /// Seconds the revocation lasts; `None` until removed (or not a revoke).
    pub ttl_seconds: Option<u64>,
    /// Why it was refused or failed; for an accepted unrevoke, whether one was in force.
    pub detail: Option<&'a str>,
}

impl AuditLog {
    /// Queues the line of one admin call (never sampled), or counts it dropped.
    pub fn write_admin(&self, record: &AdminRecord<'_>) {
        let Some(sink) = &self.sink else {
            return;
        };
        let mut line = Vec::with_capacity(256);
        write_admin_line(&mut line, record, SystemTime::now());
        line.push(b'\n');
        offer(sink, &line);
    }
}

/// `{"time":…,"event":"admin","op":…,"outcome":…,"by":…,"kind":…,"value":…,"ttl_seconds":…,
/// "detail":…}`, each string cut at [`MAX_FIELD_BYTES`] (named in `"truncated"` when cut).
fn write_admin_line(out: &mut Vec<u8>, record: &AdminRecord<'_>, now: SystemTime) {
    let mut truncated = Vec::new();
    let by = capped(record.by, "by", &mut truncated);
    let kind = record.kind.map(|v| capped(v, "kind", &mut truncated));
    let value = record.value.map(|v| capped(v, "value", &mut truncated));
    let detail = record.detail.map(|v| capped(v, "detail", &mut truncated));
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, now);
    out.extend_from_slice(b"\",\"event\":");
    json_string(out, record.event);
    out.extend_from_slice(b",\"op\":");
    json_string(out, record.op);
    out.extend_from_slice(b",\"outcome\":");
    json_string(out, record.outcome);
    out.extend_from_slice(b",\"by\":");
    json_string(out, by);
    out.extend_from_slice(b",\"kind\":");
    json_optional(out, kind);
    out.extend_from_slice(b",\"value\":");
    json_optional(out, value);
    out.extend_from_slice(b",\"ttl_seconds\":");
    match record.ttl_seconds {
        Some(seconds) => {
            let _ = write!(out, "{seconds}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"detail\":");
    json_optional(out, detail);
    write_truncated(out, &truncated);
    out.push(b'}');
}

impl AuditLog {
    /// Bytes queued for the writer and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.sink.as_ref().map_or(0, |sink| {
            let queue = sink.queue();
            queue.pending.len() + queue.writing_bytes
        })
    }

    /// Lines this log dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.sink
            .as_ref()
            .map_or(0, |sink| sink.dropped.load(Ordering::Relaxed))
    }
}

impl AuditWriter {
    /// Writes every line accepted so far, flushes and stops the writer thread; lines offered
    /// afterwards are dropped and counted.
    pub fn finish(self) {
        let mut queue = self.sink.queue();
        queue.stop = true;
        drop(queue);
        self.sink.wake.notify_one();
        let _ = self.thread.join();
    }
}

/// The writer thread: takes whole batches and writes each with one call, then flushes.
fn write_batches(sink: &Sink, output: Box<dyn Write + Send>) {
    let mut output = output;
    let mut batch = Vec::new();
    // A failed write may have left part of a line in the output: the next write ends it
    // first, so the lines after it stay whole instead of gluing onto the half line.
    let mut torn = false;
    loop {
        let mut queue = sink.queue();
        while queue.pending.is_empty() && !queue.stop {
            queue.writer_idle = true;
            queue = sink.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        queue.writer_idle = false;
        // Let the batch gather, unless it is already large or the log is stopping.
        let deadline = Instant::now() + GATHER;
        while !queue.stop && queue.pending.len() < WAKE_BYTES {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            queue.writer_gathering = true;
            queue = sink
                .wake
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        queue.writer_gathering = false;
        let stop = queue.stop;
        std::mem::swap(&mut queue.pending, &mut batch);
        queue.writing_bytes = batch.len();
        queue.writing_lines = std::mem::take(&mut queue.pending_lines);
        drop(queue);
        if !batch.is_empty() {
            let ended = if torn {
                output.write_all(b"\n")
            } else {
                Ok(())
            };
            let written = ended
                .and_then(|()| output.write_all(&batch))
                .and_then(|()| output.flush());
            torn = written.is_err();
            if written.is_err() {
                // The output refused the batch (disk full, a closed pipe): its lines are lost,
                // so they are counted as dropped, never lost uncounted.
                let lost = sink.queue().writing_lines as u64;
                sink.dropped.fetch_add(lost, Ordering::Relaxed);
                metrics::counter!(telemetry::AUDIT_DROPPED).increment(lost);
            }
        }
        let mut queue = sink.queue();
        queue.writing_bytes = 0;
        queue.writing_lines = 0;
        drop(queue);
        // Both buffers trade places each batch; neither keeps more than a burst's size.
        if batch.capacity() > 4 * WAKE_BYTES {
            batch = Vec::with_capacity(WAKE_BYTES);
        } else {
            batch.clear();
        }
        if stop {
            return;
        }
    }
}

/// The members of a line, in the order they are written (README, "Audit log").
pub const FIELDS: [&str; 21] = [
    "time",
    "v",
    "request_id",
    "caller",
    "subject",
    "chain",
    "scopes",
    "route",
    "method",
    "path",
    "decision",
    "reason",
    "jti",
    "sid",
    "branch",
    "latency_us",
    "revoked",
    "mcp",
    "budget",
    "enforced",
    "truncated",
];

/// `value` cut at [`MAX_FIELD_BYTES`] on a character boundary.
fn cut(value: &str) -> &str {
    cut_at(value, MAX_FIELD_BYTES)
}

/// `value` cut at `max` bytes on a character boundary.
pub fn cut_at(value: &str, max: usize) -> &str {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// `value` [`cut`]; records `name` when it was cut.
fn capped<'a>(value: &'a str, name: &'static str, truncated: &mut Vec<&'static str>) -> &'a str {
    if value.len() > MAX_FIELD_BYTES && !truncated.contains(&name) {
        truncated.push(name);
    }
    cut(value)
}

/// A record's fields as a line carries them: the query cut from the path, every field cut at
/// [`MAX_FIELD_BYTES`], the chain at [`MAX_CHAIN_ENTRIES`] actors (each actor still to be
/// [`cut`] when written), and the names of what was cut.
struct Capped<'a> {
    request_id: &'a str,
    caller: Option<&'a str>,
    subject: Option<&'a str>,
    chain: &'a [&'a str],
    scopes: &'a [Box<str>],
    route: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    jti: Option<&'a str>,
    sid: Option<&'a str>,
    branch: Option<&'a str>,
    revoked: Option<(&'static str, &'a str)>,
    mcp: Option<(&'a str, Option<&'a str>)>,
    truncated: Vec<&'static str>,
}

fn cap<'a>(record: &'a AuditRecord<'a>) -> Capped<'a> {
    let mut truncated = Vec::new();
    let path = record.path.split(['?', '#']).next().unwrap_or_default();
    let path = capped(path, "path", &mut truncated);
    let request_id = capped(record.request_id, "request_id", &mut truncated);
    let method = capped(record.method, "method", &mut truncated);
    let caller = record.caller.map(|v| capped(v, "caller", &mut truncated));
    let subject = record.subject.map(|v| capped(v, "subject", &mut truncated));
    let jti = record.jti.map(|v| capped(v, "jti", &mut truncated));
    let sid = record.sid.map(|v| capped(v, "sid", &mut truncated));
    let branch = record.branch.map(|v| capped(v, "branch", &mut truncated));
    let revoked = record
        .revoked
        .map(|(kind, value)| (kind, capped(value, "revoked", &mut truncated)));
    let route = record.route.map(|v| capped(v, "route", &mut truncated));
    let mcp = record.mcp.map(|(method, tool)| {
        (
            capped(method, "mcp", &mut truncated),
            tool.map(|tool| capped(tool, "mcp", &mut truncated)),
        )
    });
    let chain = &record.chain[..record.chain.len().min(MAX_CHAIN_ENTRIES)];
    if record.chain.len() > MAX_CHAIN_ENTRIES
        || chain.iter().any(|actor| actor.len() > MAX_FIELD_BYTES)
    {
        truncated.push("chain");
    }
    let scopes = &record.scopes[..record.scopes.len().min(MAX_SCOPE_ENTRIES)];
    if record.scopes.len() > MAX_SCOPE_ENTRIES
        || scopes.iter().any(|scope| scope.len() > MAX_FIELD_BYTES)
    {
        truncated.push("scopes");
    }
    Capped {
        request_id,
        caller,
        subject,
        chain,
        scopes,
        route,
        method,
        path,
        jti,
        sid,
        branch,
        revoked,
        mcp,
        truncated,
    }
}

/// A JSON string, escaped by serde_json straight into `out` (no intermediate value). Most
/// values (SPIFFE IDs, reason codes, routes, ids) hold nothing serde_json would escape (a quote,
/// a backslash, a control character below U+0020): those are copied as they are, the same bytes.
fn json_string(out: &mut Vec<u8>, value: &str) {
    if value
        .bytes()
        .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
    {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing into a Vec cannot fail, and a &str always serialises.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// `,"truncated":[…]` when a field was cut, else nothing.
fn write_truncated(out: &mut Vec<u8>, truncated: &[&'static str]) {
    if truncated.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"truncated\":[");
    for (index, name) in truncated.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        json_string(out, name);
    }
    out.push(b']');
}

fn json_optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => json_string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// Serialises one record as a JSON object, members in the order of [`FIELDS`] (`truncated`
/// only when a field was cut), written straight into `out`.
fn write_line(out: &mut Vec<u8>, record: &AuditRecord<'_>, now: SystemTime) {
    let Capped {
        request_id,
        caller,
        subject,
        chain,
        scopes,
        route,
        method,
        path,
        jti,
        sid,
        branch,
        revoked,
        mcp,
        truncated,
    } = cap(record);
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, now);
    out.extend_from_slice(VERSION_MEMBER);
    json_string(out, request_id);
    out.extend_from_slice(b",\"caller\":");
    json_optional(out, caller);
    out.extend_from_slice(b",\"subject\":");
    json_optional(out, subject);
    out.extend_from_slice(b",\"chain\":[");
    for (index, actor) in chain.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        json_string(out, cut(actor));
    }
    out.extend_from_slice(b"],\"scopes\":[");
    for (index, scope) in scopes.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        json_string(out, cut(scope));
    }
    out.extend_from_slice(b"],\"route\":");
    json_optional(out, route);
    out.extend_from_slice(b",\"method\":");
    json_string(out, method);
    out.extend_from_slice(b",\"path\":");
    json_string(out, path);
    out.extend_from_slice(match record.reason {
        None => b",\"decision\":\"allow\"",
        Some(_) => b",\"decision\":\"deny\"",
    });
    out.extend_from_slice(b",\"reason\":");
    json_optional(out, record.reason);
    out.extend_from_slice(b",\"jti\":");
    json_optional(out, jti);
    out.extend_from_slice(b",\"sid\":");
    json_optional(out, sid);
    out.extend_from_slice(b",\"branch\":");
    json_optional(out, branch);
    out.extend_from_slice(b",\"latency_us\":");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(record.latency.as_micros() as u64)
            .as_bytes(),
    );
    if let Some((kind, value)) = revoked {
        out.extend_from_slice(b",\"revoked\":{\"kind\":");
        json_string(out, kind);
        out.extend_from_slice(b",\"value\":");
        json_string(out, value);
        out.push(b'}');
    }
    if let Some((method, tool)) = mcp {
        out.extend_from_slice(b",\"mcp\":{\"method\":");
        json_string(out, method);
        out.extend_from_slice(b",\"tool\":");
        json_optional(out, tool);
        out.push(b'}');
    }
    if let Some(budget) = record.budget {
        out.extend_from_slice(b",\"budget\":");
        json_string(out, budget);
    }
    if !record.enforced {
        out.extend_from_slice(b",\"enforced\":false");
    }
    write_truncated(out, &truncated);
    out.push(b'}');
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`: a busy
    /// sidecar formats the date once a second per thread, not once a line.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// `2026-11-22T14:43:40.123Z` into `out`.
fn write_time(out: &mut Vec<u8>, time: SystemTime) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            let text = civil_second(seconds);
            cached.1.copy_from_slice(text.as_bytes());
            cached.0 = seconds;
        }
        out.extend_from_slice(&cached.1);
    });
    let millis = since_epoch.subsec_millis();
    let digit = |value: u32| b'0' + (value % 10) as u8;
    out.extend_from_slice(&[
        b'.',
        digit(millis / 100),
        digit(millis / 10),
        digit(millis),
        b'Z',
    ]);
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a second since the epoch; years past 9999 are clamped so
/// the text keeps its width.
pub fn civil_second(seconds: u64) -> String {
    let seconds = seconds.min(253_402_300_799); // 9999-12-31T23:59:59
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
    )
}

/// `2026-11-22T14:43:40.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    write_time(&mut out, time);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339_utc() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_358_620_123), "2026-11-22T14:43:40.123Z");
        // The date is cached per second: the next milliseconds and the next second still right.
        assert_eq!(at(1_795_358_620_999), "2026-11-22T14:43:40.999Z");
        assert_eq!(at(1_795_358_621_000), "2026-11-22T14:43:41.000Z");
        assert_eq!(at(1_795_358_620_001), "2026-11-22T14:43:40.001Z");
        // Past year 9999 the text keeps its width (clamped), it does not panic.
        assert_eq!(at(u64::MAX / 4), "9999-12-31T23:59:59.903Z");
    }

    #[test]
    fn lines_are_json_without_query_and_flushed_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let config = AuditConfig {
            output: AuditOutput::File(path.clone()),
            sample_allows: 0.5,
            buffer_lines: 16,
            buffer_bytes: 1 << 20,
        };
        let (log, writer) = AuditLog::start(&config).unwrap();
        let record = |reason| AuditRecord {
            request_id: "r1",
            caller: Some("spiffe://example.org/a"),
            subject: Some("user:alice"),
            chain: vec!["spiffe://example.org/a"],
            scopes: &[],
            route: Some("r"),
            method: "GET",
            path: "/calendar?access_token=secret",
            reason,
            jti: None,
            sid: None,
            branch: None,
            revoked: None,
            mcp: None,
            budget: None,
            enforced: true,
            latency: Duration::from_micros(7),
        };
        for _ in 0..4 {
            log.record(true, || record(None));
        }
        log.record(false, || record(Some("actor_mismatch")));
        writer.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            3,
            "2 of 4 allows sampled, plus the deny: {text}"
        );
        assert_eq!(lines[2]["reason"], "actor_mismatch");
        assert_eq!(lines[2]["path"], "/calendar");
        assert!(!text.contains("secret"));
    }

    fn line_of(record: &AuditRecord<'_>) -> String {
        let mut out = Vec::new();
        write_line(&mut out, record, SystemTime::now());
        String::from_utf8(out).unwrap()
    }

    /// The line as the log wrote it before it serialised records itself — a `serde_json::Value`
    /// built with `json!` — printed member by member by serde_json in the order of [`FIELDS`].
    fn reference_line(record: &AuditRecord<'_>, now: SystemTime) -> String {
        let Capped {
            request_id,
            caller,
            subject,
            chain,
            scopes,
            route,
            method,
            path,
            jti,
            sid,
            branch,
            revoked,
            mcp,
            truncated,
        } = cap(record);
        let chain: Vec<&str> = chain.iter().map(|actor| cut(actor)).collect();
        let scopes: Vec<&str> = scopes.iter().map(|scope| cut(scope)).collect();
        let mut line = serde_json::json!({
            "time": rfc3339(now),
            "v": FORMAT_VERSION,
            "request_id": request_id,
            "caller": caller,
            "subject": subject,
            "chain": chain,
            "scopes": scopes,
            "route": route,
            "method": method,
            "path": path,
            "decision": if record.reason.is_none() { "allow" } else { "deny" },
            "reason": record.reason,
            "jti": jti,
            "sid": sid,
            "branch": branch,
            "latency_us": record.latency.as_micros() as u64,
        });
        if let Some((kind, value)) = revoked {
            line["revoked"] = serde_json::json!({"kind": kind, "value": value});
        }
        if let Some((method, tool)) = mcp {
            line["mcp"] = serde_json::json!({"method": method, "tool": tool});
        }
        if let Some(budget) = record.budget {
            line["budget"] = serde_json::json!(budget);
        }
        if !record.enforced {
            line["enforced"] = serde_json::json!(false);
        }
        if !truncated.is_empty() {
            line["truncated"] = serde_json::json!(truncated);
        }
        let members: Vec<String> = FIELDS
            .iter()
            .filter_map(|name| Some(format!("\"{name}\":{}", line.get(name)?)))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    #[test]
    fn milliseconds_are_written_as_the_formatter_writes_them() {
        for millis in [0, 5, 42, 999] {
            let time = UNIX_EPOCH + Duration::from_millis(1_795_358_620_000 + millis);
            assert!(rfc3339(time).ends_with(&format!(".{millis:03}Z")));
        }
    }

    #[test]
    fn lines_match_serde_json_member_by_member_in_the_documented_order() {
        // Every control character, quotes, backslashes, non-ASCII, DEL, caps and nulls.
        let controls: String = (0u8..0x20).map(char::from).collect();
        let awkward = format!("a\"b\\c/d\u{7f}é€😀{controls}");
        let long_actor = "x".repeat(MAX_FIELD_BYTES + 10);
        let many: Vec<String> = (0..MAX_CHAIN_ENTRIES + 3)
            .map(|i| format!("spiffe://e.org/{i}"))
            .collect();
        let now = UNIX_EPOCH + Duration::from_millis(1_795_358_620_123);
        let scopes: Vec<Box<str>> = vec![awkward.clone().into(), long_actor.clone().into()];
        let mut records = vec![record_with("/calendar?q=1#frag")];
        let mut full = record_with(&awkward);
        full.request_id = &awkward;
        full.method = "PÖST";
        full.subject = Some(&awkward);
        full.jti = Some("j\u{2028}");
        full.sid = Some("");
        full.branch = Some(&awkward);
        full.revoked = Some(("session_actor", &awkward));
        full.mcp = Some(("tools/call", Some(&awkward)));
        full.budget = Some("session");
        full.enforced = false;
        full.route = Some("route\t1");
        full.chain = vec![awkward.as_str(), long_actor.as_str()];
        full.scopes = &scopes;
        full.latency = Duration::from_micros(123_456_789);
        records.push(full);
        let mut allow = record_with("/");
        allow.reason = None;
        allow.caller = None;
        allow.subject = None;
        allow.chain = many.iter().map(String::as_str).collect();
        records.push(allow);
        for record in &records {
            let mut ours = Vec::new();
            write_line(&mut ours, record, now);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                reference_line(record, now)
            );
        }
    }

    #[test]
    fn rule_lines_the_output_refuses_are_counted_as_dropped() {
        // /dev/full accepts the open and fails every write (ENOSPC).
        let config = AuditConfig {
            output: AuditOutput::File("/dev/full".into()),
            sample_allows: 1.0,
            buffer_lines: 1000,
            buffer_bytes: 1 << 20,
        };
        let (log, writer) = AuditLog::start(&config).unwrap();
        for _ in 0..10 {
            log.write(&record_with("/calendar"));
        }
        writer.finish();
        assert_eq!(log.dropped(), 10);
    }

    /// An output that accepts `accept` bytes, then fails one write, then works (a disk that
    /// filled and was cleared).
    struct FailsOnce {
        accept: usize,
        failed: bool,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for FailsOnce {
        fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
            let mut written = self.written.lock().unwrap();
            if !self.failed {
                let room = self.accept.saturating_sub(written.len());
                if room == 0 {
                    self.failed = true;
                    return Err(std::io::Error::other("disk full"));
                }
                let taken = room.min(buffer.len());
                written.extend_from_slice(&buffer[..taken]);
                return Ok(taken);
            }
            written.extend_from_slice(buffer);
            Ok(buffer.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rule_lines_after_a_torn_write_stay_whole() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let config = AuditConfig {
            output: AuditOutput::Stdout,
            sample_allows: 1.0,
            buffer_lines: 1000,
            buffer_bytes: 1 << 20,
        };
        let output = FailsOnce {
            accept: 100,
            failed: false,
            written: Arc::clone(&written),
        };
        let (log, writer) = AuditLog::start_with_output(&config, Box::new(output)).unwrap();
        // The first batch is cut after 100 bytes, mid-line.
        log.write(&record_with("/first"));
        while log.queued_bytes() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(log.dropped(), 1);
        for _ in 0..3 {
            log.write(&record_with("/after"));
        }
        writer.finish();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            serde_json::from_str::<serde_json::Value>(lines[0]).is_err(),
            "the torn line"
        );
        for line in &lines[1..] {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(line["path"], "/after");
        }
    }

    #[test]
    fn lines_from_many_threads_stay_whole_and_all_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let config = AuditConfig {
            output: AuditOutput::File(path.clone()),
            sample_allows: 1.0,
            buffer_lines: 1_000_000,
            buffer_bytes: 1 << 30,
        };
        let (log, writer) = AuditLog::start(&config).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for index in 0..5000 {
                        let id = format!("{thread}-{index}");
                        let mut record = record_with("/calendar");
                        record.request_id = &id;
                        log.write(&record);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        writer.finish();
        assert_eq!(log.dropped(), 0);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = value["request_id"].as_str().unwrap();
            let (thread, index) = id.split_once('-').unwrap();
            let thread: usize = thread.parse().unwrap();
            // Each thread's lines come out in the order it wrote them.
            assert_eq!(index.parse::<usize>().unwrap(), next[thread], "{id}");
            next[thread] += 1;
        }
        assert_eq!(next, [5000; 4]);
        // Accepted after finish: dropped and counted, never written.
        log.write(&record_with("/late"));
        assert_eq!(log.dropped(), 1);
    }

    fn record_with(path: &str) -> AuditRecord<'_> {
        AuditRecord {
            request_id: "r",
            caller: Some("spiffe://example.org/a"),
            subject: Some("user:alice"),
            chain: vec!["spiffe://example.org/a"],
            scopes: &[],
            route: None,
            method: "GET",
            path,
            reason: Some("no_route"),
            jti: None,
            sid: None,
            branch: Some("b-AAAAAAAAAAAAAAAAAAAAAA"),
            revoked: None,
            mcp: None,
            budget: None,
            enforced: true,
            latency: Duration::from_micros(1),
        }
    }

    #[test]
    fn rule_audit_fields_are_capped_and_say_so() {
        let huge = format!("/{}", "é".repeat(40_000));
        let line: serde_json::Value = serde_json::from_str(&line_of(&record_with(&huge))).unwrap();
        let path = line["path"].as_str().unwrap();
        assert!(path.len() <= MAX_FIELD_BYTES && huge.starts_with(path));
        assert_eq!(line["truncated"], serde_json::json!(["path"]));
        let short: serde_json::Value =
            serde_json::from_str(&line_of(&record_with("/calendar"))).unwrap();
        assert!(short.get("truncated").is_none());
        // A chain of 20 actors keeps its first 16; a 2 KiB subject keeps its first 1 KiB.
        let actors: Vec<String> = (0..20).map(|i| format!("spiffe://e.org/a{i}")).collect();
        let subject = "s".repeat(2 * MAX_FIELD_BYTES);
        let mut long = record_with("/calendar");
        long.chain = actors.iter().map(String::as_str).collect();
        long.subject = Some(&subject);
        let line: serde_json::Value = serde_json::from_str(&line_of(&long)).unwrap();
        let chain: Vec<&str> = line["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|actor| actor.as_str().unwrap())
            .collect();
        assert_eq!(
            chain,
            actors[..MAX_CHAIN_ENTRIES]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            line["subject"].as_str().unwrap(),
            &subject[..MAX_FIELD_BYTES]
        );
        assert_eq!(line["truncated"], serde_json::json!(["subject", "chain"]));
        // 70 scopes keep their first 64.
        let scopes: Vec<Box<str>> = (0..70).map(|i| format!("s{i}").into()).collect();
        let mut many = record_with("/calendar");
        many.scopes = &scopes;
        let line: serde_json::Value = serde_json::from_str(&line_of(&many)).unwrap();
        assert_eq!(line["scopes"].as_array().unwrap().len(), MAX_SCOPE_ENTRIES);
        assert_eq!(line["scopes"][63], "s63");
        assert_eq!(line["truncated"], serde_json::json!(["scopes"]));
        assert_eq!(line["v"], FORMAT_VERSION);
    }

    /// An audit configuration writing every record to a new FIFO, with these queue bounds.
    fn fifo_config(buffer_lines: usize, buffer_bytes: usize) -> (tempfile::TempDir, AuditConfig) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let config = AuditConfig {
            output: AuditOutput::File(fifo),
            sample_allows: 1.0,
            buffer_lines,
            buffer_bytes,
        };
        (dir, config)
    }

    /// Starts the log on `config`'s FIFO with its read end opened (and not read) by the test.
    fn start_with_reader(config: &AuditConfig) -> (AuditLog, AuditWriter, std::fs::File) {
        let AuditOutput::File(fifo) = &config.output else {
            unreachable!("a FIFO configuration")
        };
        let fifo = fifo.clone();
        let reader = std::thread::spawn(move || std::fs::File::open(fifo).unwrap());
        let (log, writer) = AuditLog::start(config).unwrap();
        (log, writer, reader.join().unwrap())
    }

    #[test]
    fn rule_the_audit_queue_is_bounded_in_bytes_when_nobody_reads() {
        // A FIFO whose reader never reads: the pipe fills, the writer blocks, the queue grows
        // until its byte bound, then lines are dropped and counted.
        let (_dir, config) = fifo_config(1_000_000, 256 * 1024);
        let (log, _writer, _held_open) = start_with_reader(&config);
        let path = format!("/{}", "x".repeat(64 * 1024));
        for _ in 0..1000 {
            log.write(&record_with(&path));
            assert!(
                log.queued_bytes() <= config.buffer_bytes,
                "{}",
                log.queued_bytes()
            );
        }
        assert!(log.dropped() > 0, "nothing was dropped with nobody reading");
        // The writer is blocked for good; the test ends without finishing it.
    }

    #[test]
    fn rule_every_decision_is_written_or_counted_as_dropped() {
        // A reader that falls behind, then catches up: each record is either a line of the
        // output or one count of `dropped` (the metric's source) — never lost uncounted, never
        // counted and written both.
        let (_dir, config) = fifo_config(8, 64 * 1024);
        let (log, writer, mut held_open) = start_with_reader(&config);
        let path = format!("/{}", "y".repeat(900));
        let records = 2000;
        for _ in 0..records {
            log.write(&record_with(&path));
        }
        let dropped = log.dropped();
        assert!(
            dropped > 0,
            "the reader never fell behind: nothing was tested"
        );
        // Catch up: read everything while the writer finishes.
        let drain = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut held_open, &mut text).unwrap();
            text
        });
        writer.finish();
        drop(log);
        let written = drain.join().unwrap().lines().count() as u64;
        assert_eq!(
            written + dropped,
            records,
            "{written} written, {dropped} dropped"
        );
    }
}
