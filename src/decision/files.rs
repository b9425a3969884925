//! Reading the files a configuration names (the configuration itself, JWKS, PEM bundles, the
//! revocation list): regular files only, and no larger than a limit. A path to `/dev/zero`, a
//! FIFO nobody writes or a multi-gigabyte file is a clear error naming the file, never a hang
//! or an allocation without bound — at start and on every reload.

use std::io::Read as _;
use std::path::Path;

/// The largest configuration file, JWKS file or PEM bundle read.
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// The largest persisted revocation list read.
pub const MAX_REVOCATION_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The bytes of the regular file at `path`, if it holds at most `limit` bytes. The error names
/// the file. Symbolic links are followed (Kubernetes mounts secrets through them).
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let refused = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    // Opened without blocking (a FIFO nobody writes would block `open` itself) and checked on
    // the descriptor, so a path swapped between a check and the open cannot slip through; a
    // "regular" file that blocks its reader (`/proc/kmsg`) fails the read instead of hanging.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(refused("not a regular file".to_owned()));
    }
    if metadata.len() > limit {
        return Err(refused(format!("larger than {limit} bytes")));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // The file may grow between the check and the read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(refused(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files_named_by_configuration_are_regular_and_bounded() {
        let scratch = tempfile::tempdir().unwrap();
        let small = scratch.path().join("small");
        std::fs::write(&small, b"{}").unwrap();
        assert_eq!(read_limited(&small, 2).unwrap(), b"{}");
        let large = scratch.path().join("large");
        std::fs::write(&large, [b' '; 3]).unwrap();
        let error = read_limited(&large, 2).unwrap_err();
        assert!(error.to_string().contains("larger than 2 bytes"), "{error}");
        for special in [Path::new("/dev/zero"), scratch.path()] {
            let error = read_limited(special, 1 << 20).unwrap_err();
            assert!(error.to_string().contains("not a regular file"), "{error}");
        }
        let fifo = scratch.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Would block forever if it were opened for reading the usual way.
        let error = read_limited(&fifo, 1 << 20).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }
}
