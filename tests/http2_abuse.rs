//! HTTP/2 abuse on the ext_authz listener, spoken frame by frame over a raw TCP connection:
//! rapid reset (CVE-2023-44487), CONTINUATION floods, SETTINGS and PING floods, header lists
//! past the limit, many slow connections. Each attack meets a limit, and a well-behaved client
//! on its own connection keeps getting answers meanwhile.

mod common;

use actguard::config::Config;
use actguard::decision::Authorizer;
use actguard::serve::grpc::{self, HTTP2_MAX_HEADER_LIST_BYTES, Listener, ServeOptions};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// HPACK integer with a 7-bit prefix (string lengths, no Huffman).
fn hpack_length(length: usize, out: &mut Vec<u8>) {
    if length < 127 {
        out.push(length as u8);
        return;
    }
    out.push(127);
    let mut rest = length - 127;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literals without indexing (RFC 7541 §6.2.2), new names.
fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0);
        hpack_length(name.len(), &mut block);
        block.extend(name.as_bytes());
        hpack_length(value.len(), &mut block);
        block.extend(value.as_bytes());
    }
    block
}

fn check_headers() -> Vec<u8> {
    header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/envoy.service.auth.v3.Authorization/Check"),
        (":authority", "actguard"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ])
}

struct Server {
    address: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _scratch: tempfile::TempDir,
}

/// The gRPC listener with the options `actguard serve` uses by default.
async fn server() -> Server {
    server_with(grpc::PREFACE_DEADLINE).await
}

/// The shared test configuration, with its issuer's JWKS file in the returned directory.
fn test_config() -> (tempfile::TempDir, Config) {
    let scratch = tempfile::tempdir().unwrap();
    let issuer =
        actguard::devkit::DevIssuer::generate(ISSUER, "k1", actguard::devkit::DevAlgorithm::Es256)
            .unwrap();
    std::fs::write(scratch.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
    let config = Config::from_yaml(&config_yaml("  leeway: 30s", ""), scratch.path()).unwrap();
    (scratch, config)
}

/// [`server`] with another deadline for the HTTP/2 preface.
async fn server_with(preface_deadline: Duration) -> Server {
    let (scratch, config) = test_config();
    let listener = Listener::bind(&config.listen.grpc).await.unwrap();
    let address = listener.describe();
    let authorizer = Arc::new(Authorizer::new(config.decision));
    let options = ServeOptions {
        max_concurrent_checks: config.limits.max_concurrent_checks,
        check_timeout: Some(config.limits.check_timeout),
        preface_deadline,
        ..ServeOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(grpc::run_with(listener, authorizer, options, async {
        let _ = stopped.await;
    }));
    Server {
        address,
        _stop: stop,
        _scratch: scratch,
    }
}

/// A well-behaved client on its own connection: its checks keep being answered (a deny, no
/// caller identity) within a second each while `attack` runs; returns what the attack returned.
async fn while_well_behaved_client_checks<T: Send + 'static>(
    server: &Server,
    attack: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let mut client = AuthorizationClient::connect(format!("http://{}", server.address))
        .await
        .unwrap();
    let attack = tokio::spawn(attack);
    let mut answered = 0;
    while !attack.is_finished() || answered < 5 {
        let started = Instant::now();
        let request = RequestSpec::get("/calendar/events").build();
        let answer = tokio::time::timeout(Duration::from_secs(1), client.check(request)).await;
        let answer = answer.expect("a check waited more than a second during the attack");
        assert!(
            answer.is_ok(),
            "a check failed during the attack: {answer:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    attack.await.unwrap()
}

/// Opens a raw HTTP/2 connection (preface and empty SETTINGS sent).
async fn raw_connection(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    stream
}

/// The server's first frame on `connection`, which must be its SETTINGS: identifier → value.
async fn settings_of(connection: TcpStream) -> std::collections::HashMap<u16, u32> {
    let (mut reader, _writer) = connection.into_split();
    let mut header = [0u8; 9];
    reader.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], SETTINGS, "the server speaks first with SETTINGS");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await.unwrap();
    payload
        .chunks(6)
        .map(|entry| {
            (
                u16::from_be_bytes([entry[0], entry[1]]),
                u32::from_be_bytes(entry[2..6].try_into().unwrap()),
            )
        })
        .collect()
}

/// How a connection ended: the GOAWAY error code the server sent, if any, once it closed.
#[derive(Debug, PartialEq)]
enum Ending {
    GoAway(u32),
    Closed,
    StillOpen,
}

/// Reads frames until the server closes or `within` passes; the first GOAWAY's code wins.
async fn ending(reader: &mut tokio::net::tcp::OwnedReadHalf, within: Duration) -> Ending {
    let deadline = Instant::now() + within;
    let mut buffer = Vec::new();
    let mut goaway = None;
    loop {
        let mut chunk = [0u8; 16384];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Err(_) => return goaway.map_or(Ending::StillOpen, Ending::GoAway),
            Ok(Ok(0)) | Ok(Err(_)) => return goaway.map_or(Ending::Closed, Ending::GoAway),
            Ok(Ok(read)) => buffer.extend(&chunk[..read]),
        }
        while buffer.len() >= 9 {
            let length = u32::from_be_bytes([0, buffer[0], buffer[1], buffer[2]]) as usize;
            if buffer.len() < 9 + length {
                break;
            }
            if buffer[3] == GOAWAY && goaway.is_none() && length >= 8 {
                goaway = Some(u32::from_be_bytes(buffer[13..17].try_into().unwrap()));
            }
            buffer.drain(..9 + length);
        }
    }
}

const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test]
async fn rule_rapid_reset_is_cut_off_and_others_keep_being_answered() {
    let server = server().await;
    let connection = raw_connection(&server.address).await;
    let ended = while_well_behaved_client_checks(&server, async move {
        let (mut reader, mut writer) = connection.into_split();
        let headers = check_headers();
        // Open and cancel streams as fast as the socket takes them.
        let mut sent = 0u32;
        for index in 0..20_000u32 {
            let stream = 1 + 2 * index;
            let mut burst = frame(HEADERS, END_HEADERS, stream, &headers);
            burst.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
            // A server that stops reading without closing would stall this write: that is
            // not the limit we look for, so it ends the flood and the assertion below fails.
            match tokio::time::timeout(Duration::from_secs(2), writer.write_all(&burst)).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        (ending(&mut reader, Duration::from_secs(5)).await, sent)
    })
    .await;
    assert_eq!(
        ended.0,
        Ending::GoAway(ENHANCE_YOUR_CALM),
        "after {} streams",
        ended.1
    );
}

#[tokio::test]
async fn rule_a_continuation_flood_is_cut_at_the_header_list_limit() {
    let server = server().await;
    let connection = raw_connection(&server.address).await;
    let (ended, sent) = while_well_behaved_client_checks(&server, async move {
        let (mut reader, mut writer) = connection.into_split();
        writer
            .write_all(&frame(HEADERS, 0, 1, &check_headers()))
            .await
            .unwrap();
        // An endless header block: CONTINUATION frames that never set END_HEADERS.
        let junk = header_block(&[("x-junk", &"j".repeat(4000))]);
        let mut sent = 0usize;
        while sent < 64 * 1024 * 1024 {
            if writer
                .write_all(&frame(CONTINUATION, 0, 1, &junk))
                .await
                .is_err()
            {
                break;
            }
            sent += junk.len();
        }
        (ending(&mut reader, Duration::from_secs(5)).await, sent)
    })
    .await;
    assert_ne!(ended, Ending::StillOpen);
    assert!(
        sent < 64 * 1024 * 1024,
        "the server read {sent} bytes of one header block"
    );
}

#[tokio::test]
async fn rule_a_header_list_past_the_limit_is_refused() {
    let server = server().await;
    let connection = raw_connection(&server.address).await;
    let (mut reader, mut writer) = connection.into_split();
    let big = "b".repeat(HTTP2_MAX_HEADER_LIST_BYTES as usize);
    let mut headers = vec![(":method", "POST")];
    headers.extend([
        (":scheme", "http"),
        (":path", "/envoy.service.auth.v3.Authorization/Check"),
        (":authority", "actguard"),
        ("content-type", "application/grpc"),
        ("x-big", big.as_str()),
    ]);
    let block = header_block(&headers);
    // Split into frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
    let mut chunks = block.chunks(16_000).peekable();
    let first = chunks.next().unwrap();
    let flags = if chunks.peek().is_none() {
        END_HEADERS | END_STREAM
    } else {
        END_STREAM
    };
    writer
        .write_all(&frame(HEADERS, flags, 1, first))
        .await
        .unwrap();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        writer
            .write_all(&frame(CONTINUATION, flags, 1, chunk))
            .await
            .unwrap();
    }
    // The stream gets a response it cannot mistake for success: 431 headers, a reset, or the
    // connection ends.
    let mut buffer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let mut chunk = [0u8; 16384];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break false,
            Ok(Ok(read)) => buffer.extend(&chunk[..read]),
        }
        let mut offset = 0;
        let mut found = false;
        while buffer.len() >= offset + 9 {
            let length =
                u32::from_be_bytes([0, buffer[offset], buffer[offset + 1], buffer[offset + 2]])
                    as usize;
            let (kind, stream) = (
                buffer[offset + 3],
                u32::from_be_bytes(buffer[offset + 5..offset + 9].try_into().unwrap())
                    & 0x7fff_ffff,
            );
            if buffer.len() < offset + 9 + length {
                break;
            }
            let payload = &buffer[offset + 9..offset + 9 + length];
            // A response HEADERS on stream 1 whose block holds `:status 431`: not in HPACK's
            // static table, so a literal value, plain or Huffman-coded ("431" is 0x69 0x90 0xff).
            let status_431 = payload
                .windows(3)
                .any(|w| w == b"431" || w == [0x69, 0x90, 0xff]);
            if (kind == HEADERS && stream == 1 && status_431) || (kind == RST_STREAM && stream == 1)
            {
                found = true;
            }
            offset += 9 + length;
        }
        if found {
            break true;
        }
    };
    assert!(
        refused,
        "a header list past the limit was neither refused nor reset"
    );
}

#[tokio::test]
async fn rule_settings_and_ping_floods_do_not_starve_other_clients() {
    let server = server().await;
    for kind in [SETTINGS, PING] {
        let connection = raw_connection(&server.address).await;
        let ended = while_well_behaved_client_checks(&server, async move {
            let (mut reader, mut writer) = connection.into_split();
            // Never read the ACKs: the server must not queue them without bound.
            let payload = if kind == PING {
                vec![7u8; 8]
            } else {
                [0u8, 3, 0, 0, 0, 100].to_vec()
            };
            let one = frame(kind, 0, 0, &payload);
            let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
            // Write for up to 10 s; the flood is bounded when the server closes the connection
            // or stops reading it (a write stalls: back-pressure), never by us giving up.
            let started = Instant::now();
            let mut bytes = 0usize;
            let outcome = loop {
                if started.elapsed() > Duration::from_secs(10) {
                    break Flood::Unbounded;
                }
                match tokio::time::timeout(Duration::from_millis(500), writer.write_all(&burst))
                    .await
                {
                    Ok(Ok(())) => bytes += burst.len(),
                    Ok(Err(_)) => break Flood::Closed,
                    Err(_) => break Flood::Stalled,
                }
            };
            let ended = ending(&mut reader, Duration::from_millis(200)).await;
            drop(writer);
            (outcome, ended, bytes)
        })
        .await;
        let (outcome, ended, bytes) = ended;
        assert!(
            outcome != Flood::Unbounded || ended != Ending::StillOpen,
            "frame type {kind}: the server read {bytes} bytes of it for 10 s and kept going"
        );
    }
}

#[derive(Debug, PartialEq)]
enum Flood {
    /// The server closed the connection.
    Closed,
    /// The server stopped reading while its answers went unread.
    Stalled,
    /// Neither, for 10 s.
    Unbounded,
}

#[tokio::test]
async fn rule_many_slow_connections_do_not_shut_out_a_client() {
    // A short preface deadline, so the test sees the silent ones cut.
    let server = server_with(Duration::from_secs(2)).await;
    let address = server.address.clone();
    let held = while_well_behaved_client_checks(&server, async move {
        let mut held = Vec::new();
        for index in 0..600 {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            // A third send nothing, a third half a preface, a third a preface and then silence.
            match index % 3 {
                0 => {}
                1 => stream.write_all(&PREFACE[..10]).await.unwrap(),
                _ => {
                    stream.write_all(PREFACE).await.unwrap();
                    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
                }
            }
            held.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        held
    })
    .await;
    // Those that never sent a whole preface are closed by the server once its deadline
    // passes; those that did stay open (keep-alive governs them).
    let started = Instant::now();
    for (index, mut stream) in held.into_iter().enumerate() {
        let preface_sent = index % 3 == 2;
        // Silent ones share one 5 s budget; a preface-sent one is only looked at.
        let patience = if preface_sent {
            Duration::from_millis(20)
        } else {
            Duration::from_secs(5).saturating_sub(started.elapsed())
        };
        let mut byte = [0u8; 64];
        let closed = loop {
            match tokio::time::timeout(patience, stream.read(&mut byte)).await {
                Err(_) => break false,
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                // The server's SETTINGS (or GOAWAY) before it closes.
                Ok(Ok(_)) => continue,
            }
        };
        if preface_sent {
            assert!(
                !closed,
                "connection {index} sent its preface and was closed"
            );
        } else {
            assert!(
                closed,
                "connection {index} never sent a preface and is still open"
            );
        }
    }
    // And a new client is still accepted and answered while they are held.
    let mut late = AuthorizationClient::connect(format!("http://{}", server.address))
        .await
        .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(1),
        late.check(RequestSpec::get("/calendar/events").build()),
    )
    .await
    .expect("a new client was answered within a second");
    assert!(answer.is_ok());
}

#[tokio::test]
async fn rule_the_listener_advertises_its_stream_and_header_limits() {
    // tonic on its own advertises no stream limit (unlimited streams per connection).
    let server = server().await;
    let settings = settings_of(raw_connection(&server.address).await).await;
    let default_checks = actguard::config::Limits::default().max_concurrent_checks;
    assert_eq!(grpc::http2_max_streams(default_checks), 2048);
    assert_eq!(
        settings.get(&0x3),
        Some(&grpc::http2_max_streams(default_checks)),
        "MAX_CONCURRENT_STREAMS"
    );
    assert_eq!(
        settings.get(&0x6),
        Some(&HTTP2_MAX_HEADER_LIST_BYTES),
        "MAX_HEADER_LIST_SIZE"
    );
}

/// Reads until the server closes the connection or `patience` passes: whether it closed, and
/// what it sent before.
async fn closed_within(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    patience: Duration,
) -> (bool, Vec<u8>) {
    let mut received = Vec::new();
    let started = Instant::now();
    loop {
        let mut chunk = [0u8; 1024];
        let left = patience.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return (false, received),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, received),
            Ok(Ok(read)) => received.extend_from_slice(&chunk[..read]),
        }
    }
}

/// What `stream` received before the server closed it (within 5 s), as text.
async fn closing_answer(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let (closed, received) = closed_within(stream, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&received).into_owned();
    assert!(closed, "the connection stayed open after {answer:?}");
    answer
}

/// The HTTP ext_authz listener (`listen.http`) with room for 16 checks and this head deadline.
struct HttpListener {
    address: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
    _scratch: tempfile::TempDir,
}

async fn http_listener(deadline: Duration) -> HttpListener {
    let (scratch, config) = test_config();
    let live = Arc::new(actguard::serve::reload::LiveAuthorizer::new(
        Authorizer::new(config.decision),
        actguard::decision::Shared::default(),
    ));
    let router = actguard::serve::http_authz::router(
        live,
        16,
        actguard::config::HttpRequestSource::AsReceived,
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    use actguard::serve::http_server::{self, ConnectionLimits};
    let served = tokio::spawn(http_server::serve_tcp(
        listener,
        move |_| router.clone(),
        ConnectionLimits {
            header_deadline: deadline,
            ..actguard::serve::http_authz::connection_limits(16)
        },
        async {
            let _ = stopped.await;
        },
    ));
    HttpListener {
        address,
        stop,
        served,
        _scratch: scratch,
    }
}

#[tokio::test]
async fn rule_http_mode_advertises_the_grpc_listeners_http2_limits() {
    // hyper's own defaults would be 200 streams and 1 MiB windows; the listener sets the
    // gRPC listener's stream limit for its checks, its header-list limit, and small windows.
    let server = http_listener(Duration::from_secs(10)).await;
    let settings = settings_of(raw_connection(&server.address.to_string()).await).await;
    assert_eq!(
        settings.get(&0x3),
        Some(&grpc::http2_max_streams(16)),
        "MAX_CONCURRENT_STREAMS"
    );
    assert_eq!(settings.get(&0x4), Some(&65_536), "INITIAL_WINDOW_SIZE");
    assert_eq!(
        settings.get(&0x6),
        Some(&HTTP2_MAX_HEADER_LIST_BYTES),
        "MAX_HEADER_LIST_SIZE"
    );
}

#[tokio::test]
async fn rule_http_mode_closes_connections_that_send_no_request_head_in_time() {
    let deadline = Duration::from_millis(400);
    let HttpListener {
        address,
        stop,
        served,
        _scratch,
    } = http_listener(deadline).await;
    let patience = deadline * 5;
    // Silent from the start.
    let mut silent = TcpStream::connect(address).await.unwrap();
    // Past the first bytes, then the head never ends (a slow-headers client).
    let mut slow = TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /calendar HTTP/1.1\r\nHost: calendar.example.org\r\n")
        .await
        .unwrap();
    // A whole request, answered, then idle on a kept-alive connection.
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"GET /calendar HTTP/1.1\r\nHost: calendar.example.org\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (closed, received) = closed_within(&mut idle, patience).await;
    let answer = String::from_utf8_lossy(&received);
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("caller_identity_missing"),
        "{answer}"
    );
    assert!(closed, "an idle kept-alive connection stayed open");
    for (name, stream) in [("silent", &mut silent), ("slow headers", &mut slow)] {
        let (closed, _) = closed_within(stream, patience).await;
        assert!(closed, "the {name} connection stayed open");
    }
    assert!(started.elapsed() < patience * 2);
    // A well-behaved client still gets its answer on a fresh connection.
    let mut client = TcpStream::connect(address).await.unwrap();
    client
        .write_all(
            b"GET /calendar HTTP/1.1\r\nHost: calendar.example.org\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let (closed, received) = closed_within(&mut client, patience).await;
    assert!(closed && received.starts_with(b"HTTP/1.1 403"));
    // Shutdown: the listener stops and the serve loop ends.
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .unwrap()
        .unwrap();
}

/// The real runtime's other HTTP listeners — admin over TCP, admin over a Unix socket, and the
/// probes — close a connection that sends nothing within the head deadline
/// (`http_server::HEADER_DEADLINE`), and one that sends half a head; a client that asks still
/// gets its answer. Under `axum::serve` each was held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_admin_and_probe_listeners_close_connections_that_send_no_request_head_in_time() {
    use actguard::serve::http_server::HEADER_DEADLINE;
    let (scratch, _) = test_config();
    let socket = scratch.path().join("admin.sock");
    let start = |listen: String| {
        let yaml = config_yaml("  leeway: 30s", "").replace(
            "listen:\n  grpc: 127.0.0.1:0",
            &format!("listen:\n  grpc: 127.0.0.1:0\n{listen}"),
        );
        let config = Config::from_yaml(&yaml, scratch.path()).unwrap();
        actguard::serve::runtime::start(config)
    };
    let over_tcp = start("  admin: 127.0.0.1:0\n  probes: 127.0.0.1:0".into())
        .await
        .unwrap();
    let over_socket = start(format!("  admin: unix:{}", socket.display()))
        .await
        .unwrap();
    let (admin, probes) = (
        over_tcp.admin_address.unwrap(),
        over_tcp.probes_address.unwrap(),
    );
    let half_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
    let mut tcp = Vec::new();
    for address in [admin, probes] {
        tcp.push(TcpStream::connect(address).await.unwrap());
        let mut slow = TcpStream::connect(address).await.unwrap();
        slow.write_all(half_head).await.unwrap();
        tcp.push(slow);
    }
    let mut unix = vec![tokio::net::UnixStream::connect(&socket).await.unwrap()];
    let mut slow = tokio::net::UnixStream::connect(&socket).await.unwrap();
    slow.write_all(half_head).await.unwrap();
    unix.push(slow);
    let started = Instant::now();
    let patience = HEADER_DEADLINE + Duration::from_secs(5);
    for stream in &mut tcp {
        let left = patience.saturating_sub(started.elapsed());
        assert!(
            closed_within(stream, left).await.0,
            "a TCP admin or probe connection stayed open"
        );
    }
    for stream in &mut unix {
        let left = patience.saturating_sub(started.elapsed());
        assert!(
            closed_within(stream, left).await.0,
            "an admin socket connection stayed open"
        );
    }
    assert!(
        started.elapsed() >= HEADER_DEADLINE - Duration::from_secs(1),
        "closed before the deadline: {:?}",
        started.elapsed()
    );
    // A head past the admin listeners' bound is refused, not buffered (hyper's own bound is
    // ~400 KiB per connection).
    let oversized = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nx-padding: {}\r\n\r\n",
        "a".repeat(actguard::serve::http_server::ADMIN_MAX_HEAD_BYTES)
    );
    for address in [admin, probes] {
        let mut client = TcpStream::connect(address).await.unwrap();
        let _ = client.write_all(oversized.as_bytes()).await;
        let answer = closing_answer(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{address}: {answer}");
    }
    // Clients that ask are answered, on every listener.
    let ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for address in [admin, probes] {
        let mut client = TcpStream::connect(address).await.unwrap();
        client.write_all(ask).await.unwrap();
        let answer = closing_answer(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{address}: {answer}");
    }
    let mut client = tokio::net::UnixStream::connect(&socket).await.unwrap();
    client.write_all(ask).await.unwrap();
    let answer = closing_answer(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    over_tcp.shutdown().await.unwrap();
    over_socket.shutdown().await.unwrap();
}

/// The HTTP ext_authz listener reads a head carrying a token of the largest `tokens.max_bytes`
/// (64 KiB) and decides on it; a head past its bound (`http_authz::MAX_HEAD_BYTES`) is refused
/// with 431 instead of being buffered.
#[tokio::test]
async fn rule_http_mode_reads_heads_with_the_largest_token_and_refuses_larger_ones() {
    let HttpListener {
        address,
        stop,
        served: _,
        _scratch,
    } = http_listener(Duration::from_secs(10)).await;
    let head = |token_bytes: usize| {
        format!(
            "GET /calendar HTTP/1.1\r\nHost: calendar.example.org\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
            "a".repeat(token_bytes)
        )
    };
    let mut client = TcpStream::connect(address).await.unwrap();
    client.write_all(head(65_536).as_bytes()).await.unwrap();
    let (closed, received) = closed_within(&mut client, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&received);
    assert!(closed && answer.starts_with("HTTP/1.1 40"), "{answer}");
    assert!(!answer.starts_with("HTTP/1.1 431"), "{answer}");
    let mut client = TcpStream::connect(address).await.unwrap();
    let _ = client
        .write_all(head(actguard::serve::http_authz::MAX_HEAD_BYTES).as_bytes())
        .await;
    let answer = closing_answer(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    drop(stop);
}

/// Sends `request` on `client` and reads the start of a `200` answer; the connection stays open.
async fn answered_ok(client: &mut TcpStream, request: &[u8]) {
    client.write_all(request).await.unwrap();
    let mut answer = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
}

/// A plain `GET /` → `ok` router served by `http_server::serve` on `bind` with these limits (a
/// 30 s head deadline), until the returned sender is dropped.
async fn plain_listener(
    bind: &str,
    limits: actguard::serve::http_server::ConnectionLimits,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    use actguard::serve::http_server::{self, ConnectionLimits};
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(http_server::serve_tcp(
        listener,
        move |_| router.clone(),
        ConnectionLimits {
            header_deadline: Duration::from_secs(30),
            ..limits
        },
        async {
            let _ = stopped.await;
        },
    ));
    (address, stop, served)
}

/// At its connection cap a listener stops accepting: the next client waits in the backlog and is
/// answered as soon as a held connection closes; the listener never holds more than its cap.
#[tokio::test]
async fn rule_an_http_listener_holds_at_most_its_connection_cap() {
    use actguard::serve::http_server::ConnectionLimits;
    let limits = ConnectionLimits {
        max_connections: 4,
        ..ConnectionLimits::new(64)
    };
    let (address, stop, served) = plain_listener("127.0.0.1:0", limits).await;
    let kept_alive = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut client = TcpStream::connect(address).await.unwrap();
        answered_ok(&mut client, kept_alive).await;
        held.push(client);
    }
    // A fifth: connected by the kernel, not accepted, so not answered.
    let mut waiting = TcpStream::connect(address).await.unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (closed, received) = closed_within(&mut waiting, Duration::from_millis(700)).await;
    assert!(
        !closed && received.is_empty(),
        "a fifth connection was served"
    );
    // One held connection closes: the waiting client is accepted and answered.
    drop(held.pop());
    let answer = closing_answer(&mut waiting).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(stop);
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .unwrap()
        .unwrap();
}

/// On the admin, probe and webhook listeners one peer address holds at most its share of the
/// connections: past it a connection is closed at once, while another address is still served
/// (a host that keeps HTTP/2 connections alive cannot take what kubelet needs).
#[tokio::test]
async fn rule_one_peer_address_holds_at_most_its_share_of_an_admin_listener() {
    use actguard::serve::http_server::ConnectionLimits;
    let limits = ConnectionLimits {
        max_connections_per_peer: Some(2),
        ..ConnectionLimits::new(64)
    };
    let (address, stop, _served) = plain_listener("0.0.0.0:0", limits).await;
    let port = address.port();
    let connect_from = |source: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind((std::net::Ipv4Addr::from(source), 0).into())
            .unwrap();
        socket
            .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
            .await
            .unwrap()
    };
    let ask = |close: bool| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
    };
    // Two kept-alive connections from 127.0.0.1, each answered.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = connect_from([127, 0, 0, 1]).await;
        answered_ok(&mut client, ask(false).as_bytes()).await;
        held.push(client);
    }
    // A third from the same address is closed unanswered.
    let mut third = connect_from([127, 0, 0, 1]).await;
    let _ = third.write_all(ask(true).as_bytes()).await;
    let (closed, received) = closed_within(&mut third, Duration::from_secs(5)).await;
    assert!(
        closed && received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    // Another address is served.
    let mut other = connect_from([127, 0, 0, 2]).await;
    other.write_all(ask(true).as_bytes()).await.unwrap();
    let answer = closing_answer(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A held connection that closes gives its share back.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from([127, 0, 0, 1]).await;
    again.write_all(ask(true).as_bytes()).await.unwrap();
    let answer = closing_answer(&mut again).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(stop);
}
