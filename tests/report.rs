//! `actguard report` (issue #18): the page made from the audit log of a real demo run, opened
//! in real headless Chromium (Debian `chromium` and `chromium-driver`, installed by `make test`)
//! through WebDriver: it renders, its graph SVG is displayed with a size, it loaded nothing from
//! anywhere, a screenshot is taken, and its text says what the log held.

mod common;

use base64::Engine;
use common::observe::{actguard, demo_audit, succeed};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn report(audit: &Path, out: &Path) {
    succeed(
        actguard()
            .args(["report", "--audit"])
            .arg(audit)
            .arg("--out")
            .arg(out),
    );
}

/// A chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: `make test` installs it (tests/system-packages.sh chromium=chromium chromedriver=chromium-driver)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while driver.call("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    /// One WebDriver command: its `value`.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::io::Result<serde_json::Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status)?;
        let mut length = None;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let mut text = Vec::new();
        match length {
            Some(length) => {
                text.resize(length, 0);
                reader.read_exact(&mut text)?;
            }
            None => {
                reader.read_to_end(&mut text)?;
            }
        }
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|error| std::io::Error::other(format!("{status}: {error}")))?;
        Ok(value["value"].clone())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Chromium session of `driver`, ended on drop.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl<'a> Session<'a> {
    fn new(driver: &'a Driver) -> Self {
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1800"],
            },
        }}});
        let value = driver.call("POST", "/session", Some(capabilities)).unwrap();
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no Chromium session: {value}"))
            .to_owned();
        Session { driver, id }
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
            .unwrap()
    }

    /// The WebDriver id of the first element matching `css`.
    fn element(&self, css: &str) -> String {
        let value = self.call(
            "POST",
            "/element",
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        value
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(serde_json::Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {value}"))
            .to_owned()
    }

    fn script(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": script, "args": []})),
        )
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .call("DELETE", &format!("/session/{}", self.id), None);
    }
}

#[test]
fn the_demos_report_renders_in_chromium_with_its_graph_tables_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let audit = demo_audit(dir.path());
    let page = dir.path().join("report.html");
    report(&audit, &page);
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: no script, nothing fetched (the only URL is the SVG namespace).
    assert!(!html.contains("<script"), "a script in the page");
    for reference in ["src=", "@import", "<link", "<iframe", "<object"] {
        assert!(!html.contains(reference), "{reference} in the page");
    }
    // The SVG's labels follow its own paths and its edges end in its own marker: in-page
    // fragments only.
    for (reference, fragment) in [("href=", "href=\"#"), ("url(", "url(#")] {
        assert!(
            html.match_indices(reference)
                .all(|(at, _)| html[at..].starts_with(fragment)),
            "a {reference} out of the page"
        );
    }
    assert!(!html.contains("eyJ"), "a token in the page");
    // Deterministic: the same log gives the same page.
    let again = dir.path().join("again.html");
    report(&audit, &again);
    assert_eq!(html, std::fs::read_to_string(&again).unwrap());

    let driver = Driver::start();
    let session = Session::new(&driver);
    session.call(
        "POST",
        "/url",
        Some(serde_json::json!({"url": format!("file://{}", page.display())})),
    );
    assert_eq!(session.call("GET", "/title", None), "actguard report");
    // The graph is displayed, with a size.
    let graph = session.element("#graph svg");
    assert_eq!(
        session.call("GET", &format!("/element/{graph}/displayed"), None),
        true
    );
    let rect = session.call("GET", &format!("/element/{graph}/rect"), None);
    assert!(
        rect["width"].as_f64().unwrap() > 200.0 && rect["height"].as_f64().unwrap() > 100.0,
        "{rect}"
    );
    // It drew nodes: the scheduler's box is text inside the SVG.
    let labels = session.script(
        "return Array.from(document.querySelectorAll('#graph svg text')).map(t => t.textContent).join('\\n')",
    );
    assert!(
        labels
            .as_str()
            .unwrap()
            .contains("spiffe://example.org/agent/scheduler"),
        "{labels}"
    );
    // The deny chart has bars.
    let bars = session.script("return document.querySelectorAll('#denies svg rect').length");
    assert!(bars.as_u64().unwrap() >= 1, "{bars}");
    // Nothing was loaded from anywhere but the page itself.
    let resources = session.script("return performance.getEntriesByType('resource').length");
    assert_eq!(resources, 0);
    // A screenshot of the rendered page.
    let png = session.call("GET", "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 1000 && height >= 1000, "{width}x{height}");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    std::fs::write(&shot, &png).unwrap();
    // The page's text, as the browser rendered it.
    let body = session.element("body");
    let text = session.call("GET", &format!("/element/{body}/text"), None);
    let text = text.as_str().unwrap();
    for expected in [
        "actguard report",
        "Delegation graph",
        "Deny reasons over time",
        "token_expired",
        "actor_mismatch",
        "caller_trust_domain_denied",
        "Agents",
        "spiffe://example.org/agent/scheduler",
        "Routes and tools",
        "calendar-read",
        "calendar:read",
        "Suggested policy",
        "delegation:",
        "allow_callers:",
    ] {
        assert!(
            text.contains(expected),
            "{expected} not on the page:\n{text}"
        );
    }
}

#[test]
fn a_report_of_a_log_without_decisions_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    std::fs::write(
        &log,
        "{\"time\":\"2026-12-04T00:00:00.000Z\",\"event\":\"admin\",\"op\":\"list\"}\nnot json\n",
    )
    .unwrap();
    let page = dir.path().join("report.html");
    report(&log, &page);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Nothing to suggest"), "{html}");
    assert!(html.contains("2 line(s) not decisions"), "{html}");
}
