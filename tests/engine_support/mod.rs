//! Real engines for tests, each started here with a temporary config on a free loopback port and
//! stopped by its pid when dropped: nginx (Debian `nginx-light`) serving static files over TLS,
//! and the mosquitto MQTT broker (Debian `mosquitto`). A test that needs one fails, never skips,
//! when it is not installed.
// These tests drive real processes in real time.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs nginx.
pub const NGINX: &str = "/usr/sbin/nginx";
/// Where Debian installs the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

fn wait_listening(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx serving the files under `www()` over TLS on 127.0.0.1:`port`, with its own ETags.
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Start nginx in `dir` (its config, logs and `www/` root go there) with the PEM `cert`
    /// and `key`.
    pub fn start(dir: &Path, cert: &Path, key: &Path, port: u16) -> Nginx {
        Nginx::start_with(dir, cert, key, port, "")
    }

    /// [`Nginx::start`] with `server` added to the server block (e.g. `location`s).
    pub fn start_with(dir: &Path, cert: &Path, key: &Path, port: u16, server: &str) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: apt-get install -y nginx-light (this test never skips)"
        );
        for sub in ["www", "tmp", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).expect("nginx dirs");
        }
        let d = dir.display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/logs/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/logs/access.log;\n  client_body_temp_path {d}/tmp;\n\
             proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n\
             scgi_temp_path {d}/tmp;\n  default_type application/octet-stream;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n\
             ssl_certificate_key {key};\n    root {d}/www;\n{server}\n  }}\n}}\n",
            cert = cert.display(),
            key = key.display(),
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).expect("nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_listening(port, "nginx", &dir.join("logs/error.log"));
        Nginx {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// The document root.
    pub fn www(&self) -> PathBuf {
        self.dir.join("www")
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto on 127.0.0.1:`port`, with no persistence and no limit on what it queues for a
/// session that is away.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: apt-get install -y mosquitto (this test never skips)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n\
                 max_queued_messages 0\nlog_dest file {}\n",
                log.display()
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        wait_listening(port, "mosquitto", &log);
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
