//! What the observe-then-enforce tests (graph, report, policy suggest) share: the demo's audit
//! log from a real run, the actguard binary's commands, and a child's peak memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub fn actguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_actguard"))
}

/// The audit log of a real `actguard demo --audit FILE` run, in `dir`.
pub fn demo_audit(dir: &Path) -> PathBuf {
    let audit = dir.join("demo-audit.jsonl");
    let status = actguard()
        .args(["demo", "--audit"])
        .arg(&audit)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    audit
}

/// Runs `command`, which must succeed (its stderr shown when it does not): its stdout.
pub fn succeed(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `command`, which must fail saying `text` on stderr (shown when it does not).
#[allow(dead_code)] // not every test binary checks refusals
pub fn fail_saying(command: &mut Command, text: &str) {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded: {stderr}");
    assert!(stderr.contains(text), "{stderr}");
}

/// `text` written to `dir/suggested.yaml`, which `actguard check-config` must accept: its path.
pub fn assert_check_config_accepts(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("suggested.yaml");
    std::fs::write(&file, text).unwrap();
    let checked = actguard()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    file
}

/// Peak resident memory of a running process (VmHWM), in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits for `child`, sampling its peak resident memory: how it ended, and the peak in KiB.
pub fn wait_measuring_peak(child: &mut Child) -> (ExitStatus, u64) {
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        if let Some(kib) = peak_kib(pid) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
