//! A real redis-server (Debian's `redis-server` 7.x; `make test` installs it when missing) on a
//! free loopback port with its own directory, nothing persisted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The redis-server binary: `$ACTGUARD_REDIS_SERVER`, else the one on `PATH`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ACTGUARD_REDIS_SERVER") {
        return PathBuf::from(path);
    }
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let path = PathBuf::from(dir).join("redis-server");
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "no redis-server: run `make test` (it installs Debian's redis-server via tests/system-packages.sh) or set ACTGUARD_REDIS_SERVER"
    );
}

/// A running redis-server; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self {
            child: None,
            port: super::envoy::free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A server that was started and stopped: its port refuses connections.
    pub fn stopped() -> Self {
        let mut server = Self::start();
        server.stop();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command over RESP, its reply flattened to text (`None` when unreachable).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut buffer = [0; 4096];
        // Replies here are small; read until the reply is complete.
        loop {
            let read = stream.read(&mut buffer).ok()?;
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&buffer[..read]);
            if let Some(text) = complete(&reply) {
                return Some(text);
            }
        }
        complete(&reply)
    }

    /// Stops the server (its data is lost: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

/// The reply in `bytes` as text when it is complete: a simple string, an error (`ERR …`), an
/// integer, a bulk string, or an array of those joined by newlines.
fn complete(bytes: &[u8]) -> Option<String> {
    fn one(bytes: &[u8]) -> Option<(String, usize)> {
        let end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&bytes[1..end]).ok()?;
        match bytes.first()? {
            b'+' | b'-' | b':' => Some((line.to_owned(), end + 2)),
            b'$' => {
                let length: i64 = line.parse().ok()?;
                if length < 0 {
                    return Some(("(nil)".into(), end + 2));
                }
                let start = end + 2;
                let stop = start + length as usize;
                (bytes.len() >= stop + 2).then(|| {
                    (
                        String::from_utf8_lossy(&bytes[start..stop]).into_owned(),
                        stop + 2,
                    )
                })
            }
            b'*' => {
                let count: i64 = line.parse().ok()?;
                let mut at = end + 2;
                let mut parts = Vec::new();
                for _ in 0..count.max(0) {
                    let (part, used) = one(&bytes[at..])?;
                    parts.push(part);
                    at += used;
                }
                Some((parts.join("\n"), at))
            }
            _ => None,
        }
    }
    one(bytes).map(|(text, _)| text)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
