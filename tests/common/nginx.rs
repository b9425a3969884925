//! A real nginx (Debian's package; `make test` installs it when missing) started from the
//! shipped `deploy/nginx/nginx.conf`, moved onto loopback: only its listen port, upstream
//! addresses and certificate directory change. Stopped with SIGTERM when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary: `$ACTGUARD_NGINX`, else the system's.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ACTGUARD_NGINX") {
        return PathBuf::from(path);
    }
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    panic!("no nginx: run `make test` (it installs Debian's nginx) or set ACTGUARD_NGINX")
}

pub struct Nginx {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Nginx {
    /// Starts the shipped configuration with certificates from `files`, actguard's HTTP mode
    /// at `actguard` and the tool at `tool`, and waits until it accepts connections.
    pub async fn start(files: &Path, actguard: std::net::SocketAddr, tool: u16) -> Nginx {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/nginx.conf"),
        )
        .unwrap();
        let port = super::envoy::free_port();
        let prefix = files.join("nginx");
        std::fs::create_dir_all(&prefix).unwrap();
        let temp = |name: &str| prefix.join(name).display().to_string();
        let relocated = shipped
            .replace("/etc/actguard-nginx/", &format!("{}/", files.display()))
            .replace("listen 8443 ssl", &format!("listen 127.0.0.1:{port} ssl"))
            .replace("server 127.0.0.1:9193;", &format!("server {actguard};"))
            .replace("server 127.0.0.1:8080;", &format!("server 127.0.0.1:{tool};"))
            // Where an unprivileged nginx may write (the shipped file keeps the defaults).
            .replacen(
                "http {",
                &format!(
                    "http {{\n    client_body_temp_path {};\n    proxy_temp_path {};\n    fastcgi_temp_path {};\n    uwsgi_temp_path {};\n    scgi_temp_path {};\n    access_log {};",
                    temp("body"),
                    temp("proxy"),
                    temp("fastcgi"),
                    temp("uwsgi"),
                    temp("scgi"),
                    temp("access.log"),
                ),
                1,
            );
        assert_ne!(relocated, shipped);
        let config = prefix.join("nginx.conf");
        std::fs::write(&config, relocated).unwrap();
        let log = prefix.join("error.log");
        let globals = format!(
            "daemon off; master_process on; pid {}; error_log {} info;",
            temp("nginx.pid"),
            log.display()
        );
        let test = Command::new(binary())
            .arg("-t")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .arg("-g")
            .arg(&globals)
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = Command::new(binary())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .arg("-g")
            .arg(&globals)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", nginx.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening:\n{}",
                nginx.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nginx
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        super::envoy::stop(&mut self.child);
    }
}
