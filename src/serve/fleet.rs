//! Fleet-wide revocation on a NATS JetStream key-value bucket.
//!
//! Every sidecar mirrors the bucket into its [`RevocationList`]: at start it reads the snapshot
//! (the last value of every key) and then follows each change in order, resuming after a
//! disconnect from the last revision it applied, so nothing revoked during the gap is missed.
//! Operators write (`actguard admin --nats …`); a sidecar writes only when
//! `revocation.nats.write_through` grants it.
//!
//! Being current is proved, not assumed: every probe interval the sidecar asks the server for
//! the newest message of the bucket; when everything up to it has been applied, the list is
//! confirmed current until the time of asking plus `max_staleness`. Past that — the server
//! unreachable, the watch stuck, the bucket gone — the list reports itself stale: checks
//! answer UNAVAILABLE (`revocations_unavailable`; Envoy denies) and readiness fails, until a
//! probe confirms it again. Nothing is ever cleared because a connection came back; the
//! revocation file is a warm start, never proof of being current.
//!
//! Keys are `<kind>.<value, base64url without padding>` (a KV key allows only
//! `[-/_=.a-zA-Z0-9]`); the value is the revocation as JSON with `by`, the writer (its NATS
//! user and where it ran). Each put carries a per-message TTL (`Nats-TTL`) when the revocation
//! has one, so the bucket forgets what expired. An unrevoke is a purge whose body names its
//! writer too. Every change a sidecar applies is an audit line (`"event":"fleet"`) naming it.
//!
//! `by` is written by the writer: NATS authenticated the connection as a user with publish
//! rights on the bucket, and the user name is the writer's own account of itself. A writer
//! with those rights could name someone else; publish rights are for operators only.

use crate::config::NatsSettings;
use crate::decision::revocation::{Revocation, RevocationKind, RevocationList};
use crate::decision::telemetry;
use crate::decision::token::{unix_now as now_seconds, unix_now_millis as now_millis};
use crate::serve::audit::{AdminRecord, AuditLog};
use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a delete marker left by an expired per-key TTL stays in the bucket.
const EXPIRY_MARKER_TTL: Duration = Duration::from_secs(3600);
/// How long the purge marker of an unrevoke stays: a sidecar that was away longer than this
/// and missed it keeps the revocation until it expires (the strict side).
const UNREVOKE_MARKER_TTL: Duration = Duration::from_secs(24 * 3600);
/// `by` of a change whose bucket entry names no writer.
const UNNAMED_WRITER: &str = "unnamed (a per-key TTL expiry, or a writer other than actguard)";
/// Largest value accepted in the bucket (a revocation is a few hundred bytes).
const MAX_VALUE_BYTES: i32 = 8192;

/// The bucket key of a revocation.
pub fn key_of(kind: RevocationKind, value: &str) -> String {
    format!("{}.{}", kind.name(), URL_SAFE_NO_PAD.encode(value))
}

/// Kind and value from a bucket key; `None` for a key actguard did not write.
pub fn parse_key(key: &str) -> Option<(RevocationKind, String)> {
    let (kind, encoded) = key.split_once('.')?;
    let kind = RevocationKind::ALL
        .into_iter()
        .find(|candidate| candidate.name() == kind)?;
    let value = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?;
    (!value.is_empty()).then_some((kind, value))
}

/// A bucket value: the revocation and who wrote it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(flatten)]
    revocation: Revocation,
    #[serde(default)]
    by: Option<String>,
}

/// The body of an unrevoke's purge marker.
#[derive(serde::Serialize, serde::Deserialize)]
struct Removal {
    by: String,
}

/// `nats-user:U (WHAT, uid N on HOST)`: the writer as a bucket value names it.
pub fn writer(user: Option<&str>, what: &str) -> String {
    use std::os::unix::fs::MetadataExt as _;
    // The process's own uid, without unsafe code: /proc/self belongs to it.
    let uid = std::fs::metadata("/proc/self").map_or_else(|_| "?".into(), |m| m.uid().to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|host| host.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    format!(
        "nats-user:{} ({what}, uid {uid} on {host})",
        user.unwrap_or("(none)")
    )
}

/// Who a bucket value says wrote it; `None` when it names no one.
fn writer_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct By {
        by: Option<String>,
    }
    serde_json::from_slice::<By>(body).ok()?.by
}

/// Whether `key` is in actguard's form (`<kind>.<base64url value>`) with a kind this version
/// does not know: a revocation written by a newer actguard.
fn of_unknown_kind(key: &str) -> bool {
    let Some((kind, encoded)) = key.split_once('.') else {
        return false;
    };
    !kind.is_empty()
        && kind
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
        && RevocationKind::ALL
            .into_iter()
            .all(|known| known.name() != kind)
        && URL_SAFE_NO_PAD
            .decode(encoded)
            .is_ok_and(|value| !value.is_empty())
}

/// The revocation a put of the key `kind.value` carries, and the writer it names. The key
/// decides kind and value; the body adds times. A body that does not parse still revokes
/// (until removed): the strict reading.
fn revocation_of(kind: RevocationKind, value: String, body: &[u8]) -> (Revocation, Option<String>) {
    match serde_json::from_slice::<Stored>(body) {
        Ok(Stored { revocation, by }) if revocation.kind == kind && revocation.value == value => {
            (revocation, by)
        }
        _ => {
            tracing::warn!(
                kind = kind.name(),
                value,
                "fleet revocation: unreadable value; revoked until removed"
            );
            let revocation = Revocation {
                kind,
                value,
                created_at: now_seconds(),
                expires_at: None,
            };
            (revocation, None)
        }
    }
}

/// The bucket's revocations by kind and value, as a snapshot gathers them.
type Snapshot = HashMap<(RevocationKind, String), Revocation>;

/// One entry folded into a snapshot: a put adds (or replaces) its revocation, a delete or
/// purge removes it; a key actguard did not write changes nothing.
fn gather(snapshot: &mut Snapshot, entry: &kv::Entry) {
    let Some(key) = parse_key(&entry.key) else {
        return;
    };
    match entry.operation {
        kv::Operation::Put => {
            let (revocation, _) = revocation_of(key.0, key.1.clone(), &entry.value);
            snapshot.insert(key, revocation);
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            snapshot.remove(&key);
        }
    }
}

/// Connects with the settings' servers, TLS and user; the client reconnects on its own.
pub async fn connect(settings: &NatsSettings, name: &str) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        // Keep trying for ever after a disconnect; staleness, not the client, decides when
        // the sidecar fails closed.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts.min(10) as u64).max(100))
        });
    if let Some(tls) = &settings.tls {
        options = options.require_tls(true);
        options = options.add_root_certificates(tls.ca.clone());
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    if let Some(user) = &settings.user {
        let password = match &settings.password_file {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|error| format!("{}: {error}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            None => String::new(),
        };
        options = options.user_and_password(user.clone(), password);
    }
    options
        .connect(settings.servers.as_slice())
        .await
        .map_err(|error| format!("cannot connect to NATS {:?}: {error}", settings.servers))
}

/// The revocation bucket.
#[derive(Clone)]
pub struct Bucket {
    context: jetstream::Context,
    store: kv::Store,
}

impl Bucket {
    /// Opens an existing bucket.
    pub async fn open(client: async_nats::Client, bucket: &str) -> Result<Self, String> {
        let context = jetstream::new(client);
        let store = context
            .get_key_value(bucket)
            .await
            .map_err(|error| format!("bucket {bucket}: {error}"))?;
        Ok(Self { context, store })
    }

    /// Creates the bucket (or checks it exists): history 1, per-key TTL on, `replicas` copies.
    pub async fn create(
        client: async_nats::Client,
        bucket: &str,
        replicas: usize,
    ) -> Result<Self, String> {
        let context = jetstream::new(client);
        let store = context
            .create_key_value(kv::Config {
                bucket: bucket.to_owned(),
                description: "actguard fleet revocations".into(),
                history: 1,
                max_value_size: MAX_VALUE_BYTES,
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                limit_markers: Some(EXPIRY_MARKER_TTL),
                ..Default::default()
            })
            .await
            .map_err(|error| format!("cannot create bucket {bucket}: {error}"))?;
        Ok(Self { context, store })
    }

    /// Stores `revocation`, written `by`, and returns its revision once the server
    /// acknowledged it.
    pub async fn revoke(&self, revocation: &Revocation, by: &str) -> Result<u64, String> {
        let subject = format!(
            "{}{}",
            self.store.prefix,
            key_of(revocation.kind, &revocation.value)
        );
        let body = serde_json::to_vec(&Stored {
            revocation: revocation.clone(),
            by: Some(by.to_owned()),
        })
        .map_err(|error| error.to_string())?;
        let mut headers = async_nats::HeaderMap::new();
        // The bucket forgets an expired revocation by itself (the list does too, by time); a
        // TTL beyond ten years is kept as "until removed".
        if let Some(expires_at) = revocation.expires_at {
            let ttl = expires_at.saturating_sub(now_seconds()).max(1);
            if ttl < 10 * 365 * 24 * 3600 {
                headers.insert("Nats-TTL", format!("{ttl}s").as_str());
            }
        }
        let ack = self
            .context
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|error| format!("revoke not sent: {error}"))?;
        let ack = ack
            .await
            .map_err(|error| format!("revoke not acknowledged: {error}"))?;
        Ok(ack.sequence)
    }

    /// Removes a revocation (a purge marker whose body names `by`); `Ok(true)` when one was
    /// in the bucket.
    pub async fn unrevoke(
        &self,
        kind: RevocationKind,
        value: &str,
        by: &str,
    ) -> Result<bool, String> {
        let key = key_of(kind, value);
        let existed = matches!(
            self.store.entry(key.as_str()).await,
            Ok(Some(kv::Entry {
                operation: kv::Operation::Put,
                ..
            }))
        );
        // What `purge_with_ttl` sends, with a body: the KV API's purge has none to name the
        // writer in.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("KV-Operation", "PURGE");
        headers.insert("Nats-Rollup", "sub");
        headers.insert(
            "Nats-TTL",
            format!("{}s", UNREVOKE_MARKER_TTL.as_secs()).as_str(),
        );
        let body = serde_json::to_vec(&Removal { by: by.to_owned() })
            .map_err(|error| error.to_string())?;
        self.context
            .publish_with_headers(format!("{}{key}", self.store.prefix), headers, body.into())
            .await
            .map_err(|error| format!("unrevoke not sent: {error}"))?
            .await
            .map_err(|error| format!("unrevoke not acknowledged: {error}"))?;
        Ok(existed)
    }

    /// Every revocation in the bucket (in force or not yet expired by the server).
    pub async fn list(&self) -> Result<Vec<Revocation>, String> {
        let mut watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|error| format!("cannot read the bucket: {error}"))?;
        let mut found = Snapshot::new();
        if self.newest_revision().await?.is_none() {
            return Ok(Vec::new());
        }
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|error| format!("cannot read the bucket: {error}"))?;
            gather(&mut found, &entry);
            if entry.delta == 0 {
                break;
            }
        }
        let mut listed: Vec<Revocation> = found.into_values().collect();
        listed.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
        Ok(listed)
    }

    /// The revision of the newest message in the bucket; `None` when it holds none.
    ///
    /// Asked of the stream leader (the message-get API), not of any replica through direct
    /// get: the leader is where a revocation is committed. (nats-server 2.15 also stops a
    /// replica that lost touch from answering direct gets, after several seconds — measured
    /// about 12 s with quorum lost, against about 2 s for the leader's get; the leader is the
    /// stricter source.) Without a leader the question goes unanswered and the sidecar fails
    /// closed once `max_staleness` has passed.
    async fn newest_revision(&self) -> Result<Option<u64>, String> {
        let subject = format!("{}>", self.store.prefix);
        match self
            .store
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => Ok(Some(message.sequence)),
            Err(error)
                if error.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(error) => Err(format!("cannot ask for the newest revision: {error}")),
        }
    }

    /// When the bucket's stream was created: a bucket deleted and created again is another
    /// bucket, whose revisions start again at 1.
    async fn created(&self) -> Result<i128, String> {
        let info = self
            .store
            .stream
            .get_info()
            .await
            .map_err(|error| format!("cannot read the bucket's stream: {error}"))?;
        Ok(info.created.unix_timestamp_nanos())
    }
}

/// Follows the bucket into `list` until the process ends.
pub struct FleetSync {
    settings: NatsSettings,
    list: Arc<RevocationList>,
    audit: AuditLog,
}

/// Where following stands between connections.
#[derive(Default)]
struct Position {
    /// The last revision applied to the list.
    applied: u64,
    /// The bucket incarnation `applied` belongs to.
    created: Option<i128>,
    /// The first snapshot was applied (the list mirrors the bucket, no longer the file).
    mirrored: bool,
    /// Keys in actguard's form whose kind this version does not know (written by a newer
    /// one): while any is in the bucket the list cannot be shown to hold every revocation.
    unknown: std::collections::BTreeSet<String>,
}

impl FleetSync {
    /// Mirrors the bucket of `settings` into `list`; each change applied is written to `audit`.
    pub fn new(settings: NatsSettings, list: Arc<RevocationList>, audit: AuditLog) -> Self {
        Self {
            settings,
            list,
            audit,
        }
    }

    /// How often being current is confirmed: a fifth of `max_staleness`, 100 ms to 1 s.
    fn probe_interval(&self) -> Duration {
        (self.settings.max_staleness / 5).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Runs for ever: connects, follows, and on any failure reconnects and resumes.
    pub async fn run(self) {
        let mut position = Position::default();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.follow(&mut position).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, applied = position.applied, "fleet revocation: following the bucket stopped; resuming");
                    metrics::counter!(telemetry::REVOCATION_RECONNECTS).increment(1);
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn follow(&self, position: &mut Position) -> Result<(), String> {
        let client = connect(&self.settings, "actguard-sidecar").await?;
        let bucket = Bucket::open(client, &self.settings.bucket).await?;
        let created = bucket.created().await?;
        // Another incarnation of the bucket: its revisions mean nothing to the old position.
        // Its contents are applied over what the list holds (nothing is dropped for being
        // absent from it; only its own deletes remove).
        let resumed = position.created == Some(created);
        if !resumed && position.created.is_some() {
            tracing::warn!(
                "fleet revocation: the bucket was created again; keeping every revocation already applied"
            );
            position.applied = 0;
            position.unknown.clear();
        }
        position.created = Some(created);
        let mut watch = if resumed {
            bucket
                .store
                .watch_all_from_revision(position.applied + 1)
                .await
        } else {
            bucket.store.watch_with_history(">").await
        }
        .map_err(|error| format!("cannot watch the bucket: {error}"))?;
        // Until the first snapshot is whole, changes gather here; then it replaces the list.
        let mut snapshot: Option<Snapshot> = (!position.mirrored).then(Snapshot::new);
        let mut probe = tokio::time::interval(self.probe_interval());
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Since when the bucket has had revisions the watch has not delivered.
        let mut behind_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                entry = watch.next() => {
                    let entry = entry
                        .ok_or("the watch ended")?
                        .map_err(|error| format!("the watch failed: {error}"))?;
                    self.apply(&entry, &mut snapshot, &mut position.unknown)?;
                    position.applied = position.applied.max(entry.revision);
                    metrics::gauge!(telemetry::REVOCATION_REVISION).set(position.applied as f64);
                    if entry.delta == 0 {
                        self.finish_snapshot(&mut snapshot, position)?;
                    }
                }
                _ = probe.tick() => {
                    let asked_at = now_millis();
                    let newest = tokio::time::timeout(
                        self.settings.max_staleness.min(Duration::from_secs(2)),
                        bucket.newest_revision(),
                    )
                    .await
                    .map_err(|_| "the server did not answer in time".to_owned())
                    .and_then(|answer| answer);
                    let newest = match newest {
                        Ok(newest) => newest,
                        // Not confirmed this time; staleness runs on. The client reconnects
                        // by itself, and the watch resumes with it.
                        Err(error) => {
                            tracing::debug!(%error, "fleet revocation: probe failed");
                            continue;
                        }
                    };
                    let caught_up = newest.is_none_or(|newest| position.applied >= newest);
                    if let Some(key) = position.unknown.iter().next() {
                        // Not current: a revocation this version cannot enforce is in force.
                        tracing::error!(
                            key,
                            unknown = position.unknown.len(),
                            "fleet revocation: the bucket holds a revocation of a kind this actguard does not know (written by a newer version): failing closed until it is removed or this sidecar is upgraded"
                        );
                        continue;
                    }
                    if caught_up {
                        behind_since = None;
                        self.finish_snapshot(&mut snapshot, position)?;
                        self.list.confirm_current_until(asked_at + self.settings.max_staleness.as_millis() as i64);
                    } else {
                        let since = *behind_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() > self.settings.max_staleness {
                            return Err(format!(
                                "the watch is behind (applied {}, the bucket is at {:?})",
                                position.applied, newest
                            ));
                        }
                    }
                }
            }
        }
    }

    fn apply(
        &self,
        entry: &kv::Entry,
        snapshot: &mut Option<Snapshot>,
        unknown: &mut std::collections::BTreeSet<String>,
    ) -> Result<(), String> {
        if of_unknown_kind(&entry.key) {
            match entry.operation {
                kv::Operation::Put => unknown.insert(entry.key.clone()),
                kv::Operation::Delete | kv::Operation::Purge => unknown.remove(&entry.key),
            };
            return Ok(());
        }
        let Some((kind, value)) = parse_key(&entry.key) else {
            tracing::warn!(
                key = entry.key,
                "fleet revocation: a key actguard did not write; ignored"
            );
            return Ok(());
        };
        if let Some(gathering) = snapshot.as_mut() {
            gather(gathering, entry);
            return Ok(());
        }
        let lag = entry.created.unix_timestamp_nanos() as f64 / 1e9;
        let lag = (now_millis() as f64 / 1e3 - lag).max(0.0);
        let (put, by) = match entry.operation {
            kv::Operation::Put => {
                let (revocation, by) = revocation_of(kind, value.clone(), &entry.value);
                (Some(revocation), by)
            }
            kv::Operation::Delete | kv::Operation::Purge => (None, writer_of(&entry.value)),
        };
        let revision = format!("revision {}", entry.revision);
        let mut record = AdminRecord {
            event: "fleet",
            op: "unrevoke",
            outcome: "applied",
            by: by.as_deref().unwrap_or(UNNAMED_WRITER),
            kind: Some(kind.name()),
            value: Some(&value),
            ttl_seconds: None,
            detail: Some(&revision),
        };
        match put {
            Some(revocation) => {
                let ttl = revocation
                    .expires_at
                    .map(|at| at.saturating_sub(now_seconds()).max(0) as u64);
                self.list.revoke(revocation)?;
                metrics::histogram!(telemetry::REVOCATION_LAG).record(lag);
                record.op = "revoke";
                record.ttl_seconds = ttl;
                self.audit.write_admin(&record);
            }
            None => {
                self.list.unrevoke(kind, &value)?;
                metrics::histogram!(telemetry::REVOCATION_LAG).record(lag);
                if by.is_none() {
                    // The server's marker for an expired per-key TTL, or a writer that is not
                    // actguard (`nats kv del`).
                    record.op = "remove";
                }
                self.audit.write_admin(&record);
            }
        }
        Ok(())
    }

    /// The first whole snapshot replaces the list (the file was only a warm start).
    fn finish_snapshot(
        &self,
        snapshot: &mut Option<Snapshot>,
        position: &mut Position,
    ) -> Result<(), String> {
        let Some(gathered) = snapshot.take() else {
            return Ok(());
        };
        let detail = format!(
            "{} revocations up to revision {}",
            gathered.len(),
            position.applied
        );
        self.list.replace_all(gathered.into_values().collect())?;
        position.mirrored = true;
        self.audit.write_admin(&AdminRecord {
            event: "fleet",
            op: "snapshot",
            outcome: "applied",
            by: "nats",
            kind: None,
            value: None,
            ttl_seconds: None,
            detail: Some(&detail),
        });
        tracing::info!(
            applied = position.applied,
            "fleet revocation: snapshot applied"
        );
        Ok(())
    }
}

/// How a sidecar's own admin API changes fleet revocations: through the bucket, when
/// `write_through` grants it (its NATS user then needs publish rights on the bucket).
pub struct FleetWrites {
    settings: NatsSettings,
    bucket: tokio::sync::Mutex<Option<Bucket>>,
}

impl FleetWrites {
    pub fn new(settings: NatsSettings) -> Self {
        Self {
            settings,
            bucket: tokio::sync::Mutex::new(None),
        }
    }

    /// `Err` with what to do instead when this sidecar may not write to the bucket.
    pub fn writable(&self) -> Result<(), String> {
        if self.settings.write_through {
            Ok(())
        } else {
            Err(format!(
                "revocations are fleet-wide (bucket {}) and this sidecar only reads them (revocation.nats.write_through is false): use actguard admin --nats",
                self.settings.bucket
            ))
        }
    }

    /// The bucket, connected on first use and kept.
    async fn bucket(&self) -> Result<Bucket, String> {
        let mut bucket = self.bucket.lock().await;
        if let Some(bucket) = bucket.as_ref() {
            return Ok(bucket.clone());
        }
        let client = connect(&self.settings, "actguard-sidecar-writer").await?;
        let opened = Bucket::open(client, &self.settings.bucket).await?;
        *bucket = Some(opened.clone());
        Ok(opened)
    }

    /// Writes a revocation and returns once the server acknowledged it (the caller checked
    /// [`writable`](Self::writable)).
    pub async fn revoke(&self, revocation: &Revocation, peer: &str) -> Result<(), String> {
        let by = self.writer(peer);
        self.bucket()
            .await?
            .revoke(revocation, &by)
            .await
            .map(|_| ())
    }

    /// This sidecar, writing for the admin `peer` it authorized.
    fn writer(&self, peer: &str) -> String {
        writer(
            self.settings.user.as_deref(),
            &format!("sidecar admin API for {peer}"),
        )
    }

    /// Removes a revocation from the bucket; `Ok(true)` when one was there (the caller
    /// checked [`writable`](Self::writable)).
    pub async fn unrevoke(
        &self,
        kind: RevocationKind,
        value: &str,
        peer: &str,
    ) -> Result<bool, String> {
        let by = self.writer(peer);
        self.bucket().await?.unrevoke(kind, value, &by).await
    }
}

/// What must hold for any bucket entry (the `fleet_entries` fuzz target): the key alone
/// decides whether and what it revokes, whatever the value; a revocation has one key; a key of
/// an unknown kind is never read as a known one.
#[cfg(feature = "fuzzing")]
pub fn check_entry_for_fuzzing(key: &str, body: &[u8]) {
    let parsed = parse_key(key);
    if let Some((kind, value)) = &parsed {
        assert_eq!(key_of(*kind, value), key, "one key per revocation");
        assert!(!of_unknown_kind(key));
    }
    if let Some((kind, value)) = parsed {
        let (revocation, _) = revocation_of(kind, value.clone(), body);
        assert_eq!((revocation.kind, revocation.value), (kind, value));
    }
    let _ = writer_of(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_an_unreadable_bucket_value_still_revokes_what_its_key_names() {
        let key = key_of(RevocationKind::Actor, "spiffe://example.org/agent/x");
        assert_eq!(
            parse_key(&key),
            Some((RevocationKind::Actor, "spiffe://example.org/agent/x".into()))
        );
        for body in [
            &b"not json"[..],
            b"{}",
            br#"{"kind":"jti","value":"other","created_at":1,"expires_at":2}"#,
        ] {
            let (kind, value) = parse_key(&key).expect("actguard's key");
            let (revocation, _) = revocation_of(kind, value, body);
            assert_eq!(revocation.kind, RevocationKind::Actor);
            assert_eq!(revocation.value, "spiffe://example.org/agent/x");
            assert_eq!(revocation.expires_at, None, "until removed");
        }
        // A newer version's kind is recognised as such (the sidecar then fails closed).
        assert!(of_unknown_kind("tenant.dGVzdA"));
        for known_or_foreign in [key.as_str(), "jti.dGVzdA", "Tenant.dGVzdA", "tenant.", "x"] {
            assert!(!of_unknown_kind(known_or_foreign), "{known_or_foreign}");
        }
        // Keys actguard did not write name nothing.
        for key in ["jti", "nope.dGVzdA", "jti.!!", "jti."] {
            assert_eq!(parse_key(key), None, "{key}");
        }
    }
}
