//! The audit log: one JSON line per decision (every deny; allows sampled), never the token,
//! a signature or a query string.
//!
//! Writing never blocks a check: lines go through a queue bounded in lines
//! (`audit.buffer_lines`) and in bytes (`audit.buffer_bytes`) to a dedicated writer thread; when
//! either bound is reached the line is dropped and `actguard_audit_lines_dropped_total` counts
//! it. Each field is cut at [`MAX_FIELD_BYTES`] (the chain at [`MAX_CHAIN_ENTRIES`] actors) and
//! the record then names the cut fields in `"truncated"`, so a line is small whatever the
//! request carried. [`AuditWriter::finish`] queues a stop marker behind every line already
//! accepted, so shutdown flushes everything that was not dropped.

use crate::config::{AuditConfig, AuditOutput};
use crate::decision::record::{AuditRecord, DecisionLog};
use crate::decision::telemetry;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

enum Message {
    Line(String),
    Stop,
}

/// Longest value of one field in a line (bytes, cut at a character boundary).
pub const MAX_FIELD_BYTES: usize = 1024;
/// Most actors of a chain written in a line.
pub const MAX_CHAIN_ENTRIES: usize = 16;

struct Sink {
    sender: SyncSender<Message>,
    /// Bytes of lines queued and not yet written, shared with the writer thread.
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Lines this log dropped (also counted in the process-wide metric).
    dropped: AtomicU64,
    /// Log every `allow_stride`-th allow; 0 logs none.
    allow_stride: u64,
    allows_seen: AtomicU64,
}

/// A cheap, cloneable handle for recording decisions.
#[derive(Clone, Default)]
pub struct AuditLog {
    sink: Option<Arc<Sink>>,
}

/// Owns the writer thread; [`finish`](Self::finish) flushes and stops it.
pub struct AuditWriter {
    sender: SyncSender<Message>,
    thread: std::thread::JoinHandle<()>,
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
        let (sender, receiver) = sync_channel(config.buffer_lines.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let written = Arc::clone(&queued_bytes);
        let thread = std::thread::Builder::new()
            .name("actguard-audit".into())
            .spawn(move || write_lines(receiver, output, &written))?;
        let allow_stride = if config.sample_allows <= 0.0 {
            0
        } else {
            (1.0 / config.sample_allows).round().max(1.0) as u64
        };
        let log = Self {
            sink: Some(Arc::new(Sink {
                sender: sender.clone(),
                queued_bytes,
                max_bytes: config.buffer_bytes.max(1),
                dropped: AtomicU64::new(0),
                allow_stride,
                allows_seen: AtomicU64::new(0),
            })),
        };
        Ok((log, AuditWriter { sender, thread }))
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
        let line = audit_line(record);
        let size = line.len() + 1;
        // Reserve the bytes first, so concurrent writers cannot overshoot the bound together.
        let reserved = sink
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + size <= sink.max_bytes).then_some(queued + size)
            })
            .is_ok();
        let sent = reserved && sink.sender.try_send(Message::Line(line)).is_ok();
        if !sent {
            if reserved {
                sink.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            }
            sink.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(telemetry::AUDIT_DROPPED).increment(1);
        }
    }
}

impl AuditLog {
    /// Bytes queued for the writer and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.sink
            .as_ref()
            .map_or(0, |sink| sink.queued_bytes.load(Ordering::Acquire))
    }

    /// Lines this log dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.sink
            .as_ref()
            .map_or(0, |sink| sink.dropped.load(Ordering::Relaxed))
    }
}

impl AuditWriter {
    /// Writes every queued line, flushes and stops the writer thread.
    pub fn finish(self) {
        // A blocking send: the marker waits for room behind the queued lines.
        if self.sender.send(Message::Stop).is_ok() {
            let _ = self.thread.join();
        }
    }
}

fn write_lines(
    receiver: Receiver<Message>,
    output: Box<dyn Write + Send>,
    queued_bytes: &AtomicUsize,
) {
    let mut output = std::io::BufWriter::new(output);
    while let Ok(message) = receiver.recv() {
        let mut next = Some(message);
        // Write what is queued, then flush once: one syscall per burst, not per line.
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    let _ = output.write_all(line.as_bytes());
                    let _ = output.write_all(b"\n");
                    queued_bytes.fetch_sub(line.len() + 1, Ordering::AcqRel);
                }
                Message::Stop => {
                    let _ = output.flush();
                    return;
                }
            }
            next = receiver.try_recv().ok();
        }
        let _ = output.flush();
    }
    let _ = output.flush();
}

/// `value` cut at [`MAX_FIELD_BYTES`] on a character boundary; records `name` when cut.
fn capped<'a>(value: &'a str, name: &'static str, truncated: &mut Vec<&'static str>) -> &'a str {
    if value.len() <= MAX_FIELD_BYTES {
        return value;
    }
    if !truncated.contains(&name) {
        truncated.push(name);
    }
    let mut end = MAX_FIELD_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn audit_line(record: &AuditRecord<'_>) -> String {
    let mut truncated = Vec::new();
    let path = record.path.split(['?', '#']).next().unwrap_or_default();
    let path = capped(path, "path", &mut truncated);
    let request_id = capped(record.request_id, "request_id", &mut truncated);
    let method = capped(record.method, "method", &mut truncated);
    let caller = record.caller.map(|v| capped(v, "caller", &mut truncated));
    let subject = record.subject.map(|v| capped(v, "subject", &mut truncated));
    let jti = record.jti.map(|v| capped(v, "jti", &mut truncated));
    let sid = record.sid.map(|v| capped(v, "sid", &mut truncated));
    let route = record.route.map(|v| capped(v, "route", &mut truncated));
    if record.chain.len() > MAX_CHAIN_ENTRIES {
        truncated.push("chain");
    }
    let chain: Vec<&str> = record
        .chain
        .iter()
        .take(MAX_CHAIN_ENTRIES)
        .map(|actor| capped(actor, "chain", &mut truncated))
        .collect();
    let mut line = json!({
        "time": rfc3339(SystemTime::now()),
        "request_id": request_id,
        "caller": caller,
        "subject": subject,
        "chain": chain,
        "route": route,
        "method": method,
        "path": path,
        "decision": if record.reason.is_none() { "allow" } else { "deny" },
        "reason": record.reason,
        "jti": jti,
        "sid": sid,
        "latency_us": record.latency.as_micros() as u64,
    });
    if !truncated.is_empty() {
        line["truncated"] = json!(truncated);
    }
    line.to_string()
}

/// `2026-11-22T14:43:40.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
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
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
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
            route: Some("r"),
            method: "GET",
            path: "/calendar?access_token=secret",
            reason,
            jti: None,
            sid: None,
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

    fn record_with(path: &str) -> AuditRecord<'_> {
        AuditRecord {
            request_id: "r",
            caller: Some("spiffe://example.org/a"),
            subject: Some("user:alice"),
            chain: vec!["spiffe://example.org/a"],
            route: None,
            method: "GET",
            path,
            reason: Some("no_route"),
            jti: None,
            sid: None,
            latency: Duration::from_micros(1),
        }
    }

    #[test]
    fn rule_audit_fields_are_capped_and_say_so() {
        let huge = format!("/{}", "é".repeat(40_000));
        let line: serde_json::Value =
            serde_json::from_str(&audit_line(&record_with(&huge))).unwrap();
        let path = line["path"].as_str().unwrap();
        assert!(path.len() <= MAX_FIELD_BYTES && huge.starts_with(path));
        assert_eq!(line["truncated"], serde_json::json!(["path"]));
        let short: serde_json::Value =
            serde_json::from_str(&audit_line(&record_with("/calendar"))).unwrap();
        assert!(short.get("truncated").is_none());
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
