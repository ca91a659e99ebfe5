//! The agent config loader: defaults, `edgeroll.d` drop-ins merged in name order, relative
//! paths, and every error naming the file the bad value came from.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeroll::config::{self, Config, DesiredSource, ReportsUrl, RuntimeKind};
use expect_test::{expect, Expect};

/// A config directory with `edgeroll.toml` and, optionally, drop-ins.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new(main: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("edgeroll.toml"), main).unwrap();
        ConfigDir { dir }
    }

    fn drop_in(&self, name: &str, text: &str) -> &Self {
        let drop_ins = self.dir.path().join("edgeroll.d");
        fs::create_dir_all(&drop_ins).unwrap();
        fs::write(drop_ins.join(name), text).unwrap();
        self
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("edgeroll.toml")
    }

    fn load(&self) -> Result<Config, Vec<edgeroll::diag::Diagnostic>> {
        config::load(&self.path())
    }

    /// The diagnostics, with the temporary directory shown as `DIR`.
    fn check_errors(&self, expected: Expect) {
        let diagnostics = self.load().unwrap_err();
        let prefix = format!("{}/", self.dir.path().display());
        let text: String = diagnostics
            .iter()
            .map(|diagnostic| format!("{diagnostic}\n").replace(&prefix, "DIR/"))
            .collect();
        expected.assert_eq(&text);
    }
}

#[test]
fn an_empty_config_takes_every_default() {
    let dir = ConfigDir::new("");
    let config = dir.load().unwrap();
    assert_eq!(
        config,
        Config {
            site: config::default_site(),
            labels: Default::default(),
            state_dir: PathBuf::from("/var/lib/edgeroll"),
            socket: PathBuf::from("/run/edgeroll/edgeroll.sock"),
            socket_mode: 0o660,
            worker_threads: 2,
            runtime: RuntimeKind::Process,
            desired: DesiredSource::None,
            poll_interval: Duration::from_secs(30),
            desired_trust: config::DesiredTrust {
                trusted_keys: Vec::new(),
                allow_unsigned: false,
                ca_file: None,
                client_cert: None,
                client_key: None,
                max_document_bytes: 1024 * 1024,
                timeout: Duration::from_secs(30),
            },
            shutdown_grace: Duration::from_secs(10),
            stop_grace: Duration::from_secs(10),
            log_max_bytes: 1024 * 1024,
            metrics_listen: None,
            reports: None,
            files: vec![dir.path()],
        }
    );
    assert!(!config.site.is_empty());
}

#[test]
fn the_contract_example_loads() {
    let dir = ConfigDir::new(
        r#"
[agent]
site = "store-0042"
labels = { cohort = "pilot", region = "eu-west" }
state_dir = "/var/lib/edgeroll"
socket = "/run/edgeroll/edgeroll.sock"
shutdown_grace = "20s"

[runtime]
kind = "process"
stop_grace = 5
log_max_bytes = 4096

[desired]
source = "file:///etc/edgeroll/desired%20doc.toml"
poll_interval = "1m"
"#,
    );
    let config = dir.load().unwrap();
    assert_eq!(config.site, "store-0042");
    assert_eq!(config.labels["region"], "eu-west");
    assert_eq!(config.shutdown_grace, Duration::from_secs(20));
    assert_eq!(config.stop_grace, Duration::from_secs(5));
    assert_eq!(config.log_max_bytes, 4096);
    assert_eq!(
        config.desired,
        DesiredSource::File(PathBuf::from("/etc/edgeroll/desired doc.toml"))
    );
    assert_eq!(config.poll_interval, Duration::from_secs(60));
}

#[test]
fn drop_ins_merge_in_name_order_and_deeply() {
    let dir = ConfigDir::new(
        r#"
[agent]
site = "main"
labels = { cohort = "pilot", region = "eu-west" }
[desired]
poll_interval = "10s"
"#,
    );
    // Written out of order: loading must sort by name, not by creation.
    dir.drop_in(
        "20-late.toml",
        "[agent]\nsite = \"late\"\nlabels = { region = \"us-east\" }\n",
    )
    .drop_in(
        "10-early.toml",
        "[agent]\nsite = \"early\"\nlabels = { rack = \"7\" }\n",
    )
    .drop_in("30-ignored.toml.dpkg-old", "this is not toml")
    .drop_in(
        "15-paths.toml",
        "[agent]\nstate_dir = \"state\"\n[desired]\nsource = \"desired.toml\"\n",
    );
    let config = dir.load().unwrap();
    assert_eq!(config.site, "late");
    // Tables merge key by key: the cohort from the main file survives.
    assert_eq!(
        config.labels.into_iter().collect::<Vec<_>>(),
        [("cohort", "pilot"), ("rack", "7"), ("region", "us-east")]
            .map(|(key, value)| (key.to_string(), value.to_string()))
    );
    assert_eq!(config.poll_interval, Duration::from_secs(10));
    // Relative paths are resolved against the directory of the file that set them.
    let drop_in_dir = std::path::absolute(dir.dir.path().join("edgeroll.d")).unwrap();
    assert_eq!(config.state_dir, drop_in_dir.join("state"));
    assert_eq!(
        config.desired,
        DesiredSource::File(drop_in_dir.join("desired.toml"))
    );
    let names: Vec<String> = config
        .files
        .iter()
        .map(|file| file.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "edgeroll.toml",
            "10-early.toml",
            "15-paths.toml",
            "20-late.toml"
        ]
    );
}

#[test]
fn errors_name_the_file_the_bad_value_came_from() {
    let dir = ConfigDir::new(
        r#"[agent]
site = "store 1"
sokcet = "/tmp/x.sock"
[runtime]
kind = "containerd"
namespace = "k8s.io"
log_max_bytes = 0
[desired]
source = "ftp://hub.example.com/desired"
"#,
    );
    dir.drop_in(
        "10-a.toml",
        "[runtime]\nstop_grace = \"-1s\"\n[extra]\nx = 1\n",
    )
    .drop_in(
        "20-b.toml",
        "[desired]\npoll_interval = true\n[agent]\nlabels = { a = 1 }\n",
    );
    dir.check_errors(expect![[r#"
        DIR/edgeroll.toml:2:8: agent.site: "store 1" must not contain spaces or control characters
        DIR/edgeroll.toml:3:1: agent.sokcet: unknown field, did you mean `socket`?
        DIR/edgeroll.toml:6:13: runtime.namespace: k8s.io belongs to Kubernetes (kubelet stops containers and deletes images there that it did not create): keep the default `edgeroll`
        DIR/edgeroll.toml:7:17: runtime.log_max_bytes: 0 is less than 1
        DIR/edgeroll.toml:9:10: desired.source: unsupported source `ftp://`, expected https://…, file:///path or an absolute path
        DIR/edgeroll.d/10-a.toml:2:14: runtime.stop_grace: duration `-1s` must be positive
        DIR/edgeroll.d/10-a.toml:3:2: extra: unknown field, expected one of `agent`, `runtime`, `desired`, `metrics`, `reports`
        DIR/edgeroll.d/20-b.toml:2:17: desired.poll_interval: expected a duration (seconds or a string such as "30s"), found a boolean
        DIR/edgeroll.d/20-b.toml:4:16: agent.labels.a: expected a string, found an integer
    "#]]);
}

#[test]
fn an_overridden_bad_value_is_not_an_error() {
    let dir = ConfigDir::new("[runtime]\nkind = \"docker\"\n");
    dir.drop_in("10-fix.toml", "[runtime]\nkind = \"process\"\n");
    assert_eq!(dir.load().unwrap().runtime, RuntimeKind::Process);
}

#[test]
fn syntax_errors_in_several_files_are_all_reported() {
    let dir = ConfigDir::new("[agent\nsite = \"x\"\n");
    dir.drop_in("10-a.toml", "[runtime]\nkind = \n");
    dir.check_errors(expect![[r#"
        DIR/edgeroll.toml:1:7: invalid toml: unclosed table, expected `]`
        DIR/edgeroll.d/10-a.toml:2:8: invalid toml: string values must be quoted, expected literal string
    "#]]);
}

#[test]
fn other_desired_sources_and_section_types() {
    let dir = ConfigDir::new("agent = 3\n[desired]\nsource = \"file://relative/x\"\n");
    dir.check_errors(expect![[r#"
        DIR/edgeroll.toml:1:9: agent: expected a table, found an integer
        DIR/edgeroll.toml:3:10: desired.source: "file://relative/x" must be an absolute file url such as file:///etc/edgeroll/desired.toml
    "#]]);
    let dir =
        ConfigDir::new("[desired]\nsource = \"s3://bucket/x\"\n[runtime]\nkind = \"podman\"\n");
    dir.check_errors(expect![[r#"
        DIR/edgeroll.toml:2:10: desired.source: unsupported source `s3://`, expected https://…, file:///path or an absolute path
        DIR/edgeroll.toml:4:8: runtime.kind: unknown runtime `podman`, expected process, docker or containerd
    "#]]);
}

#[test]
fn a_missing_main_file_is_one_diagnostic() {
    let errors = config::load(Path::new("/nonexistent/edgeroll.toml")).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("/nonexistent/edgeroll.toml:1:1: cannot read config:"),
        "{}",
        errors[0]
    );
}

#[test]
fn the_socket_mode_is_one_of_the_supported_ones() {
    let dir = ConfigDir::new("[agent]\nsocket_mode = \"0666\"\n");
    assert_eq!(dir.load().unwrap().socket_mode, 0o666);
    let dir = ConfigDir::new("[agent]\nsocket_mode = \"0777\"\n");
    let errors = dir.load().unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("agent.socket_mode"),
        "{}",
        errors[0]
    );
    assert!(errors[0].message.contains("\"0666\""), "{}", errors[0]);
}

#[test]
fn metrics_listen_is_an_address_with_a_port() {
    let dir = ConfigDir::new("[metrics]\nlisten = \"127.0.0.1:9469\"\n");
    assert_eq!(
        dir.load().unwrap().metrics_listen,
        Some("127.0.0.1:9469".parse().unwrap())
    );
    let dir = ConfigDir::new("[metrics]\nlisten = \"localhost\"\nrule_files = []\n");
    dir.check_errors(expect![[r#"
        DIR/edgeroll.toml:2:10: metrics.listen: "localhost" is not an address with a port, such as "127.0.0.1:9469"
        DIR/edgeroll.toml:3:1: metrics.rule_files: unknown field, expected one of `listen`
    "#]]);
}

#[test]
fn the_desired_trust_settings_take_keys_inline_or_from_pub_files() {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let other = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let dir = ConfigDir::new(&format!(
        r#"[agent]
site = "store-0042"
[desired]
source = "https://hub.example.com/v1/sites/{{site}}/desired"
poll_interval = "10s"
trusted_keys = ["{inline}", "keys/next.pub"]
allow_unsigned = false
ca_file = "ca.pem"
client_cert = "/etc/edgeroll/site.crt"
client_key = "/etc/edgeroll/site.key"
max_document_bytes = 65536
timeout = "5s"
"#,
        inline = pair.pk.to_base64()
    ));
    std::fs::create_dir_all(dir.dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.dir.path().join("keys/next.pub"),
        format!(
            "untrusted comment: minisign public key\n{}\n",
            other.pk.to_base64()
        ),
    )
    .unwrap();
    let config = dir.load().unwrap();
    assert_eq!(
        config.desired,
        DesiredSource::Https("https://hub.example.com/v1/sites/{site}/desired".to_owned())
    );
    let trust = &config.desired_trust;
    assert_eq!(
        trust.trusted_keys,
        vec![pair.pk.to_base64(), other.pk.to_base64()]
    );
    assert_eq!(trust.ca_file, Some(dir.dir.path().join("ca.pem")));
    assert_eq!(
        trust.client_key,
        Some(PathBuf::from("/etc/edgeroll/site.key"))
    );
    assert_eq!(trust.max_document_bytes, 65536);
    assert_eq!(trust.timeout, Duration::from_secs(5));
}

#[test]
fn bad_desired_trust_settings_are_reported_at_their_position() {
    let dir = ConfigDir::new(
        r#"[desired]
source = "https://"
trusted_keys = ["RWQnot-a-key", 3]
client_cert = "site.crt"
allow_unsigned = "yes"
"#,
    );
    dir.check_errors(expect![[r#"
        DIR/edgeroll.toml:2:10: desired.source: "https://" is not a valid https:// URL
        DIR/edgeroll.toml:3:17: desired.trusted_keys[0]: "RWQnot-a-key" is neither a minisign public key nor a readable .pub file (DIR/RWQnot-a-key: No such file or directory (os error 2))
        DIR/edgeroll.toml:3:33: desired.trusted_keys[1]: expected a string, found an integer
        DIR/edgeroll.toml:4:15: desired.client_cert: mutual TLS needs both: set desired.client_key too
        DIR/edgeroll.toml:5:18: desired.allow_unsigned: expected a boolean, found a string
    "#]]);
}

#[test]
fn reports_take_an_https_or_mqtt_url_and_defaults() {
    let dir = ConfigDir::new(
        "[reports]\nurl = \"https://hub.example.com/v1/reports\"\noutbox_max_bytes = 67108864\n",
    );
    let reports = dir.load().unwrap().reports.unwrap();
    assert_eq!(
        reports.url,
        ReportsUrl::Http("https://hub.example.com/v1/reports".to_owned())
    );
    assert_eq!(reports.outbox_max_bytes, 64 * 1024 * 1024);
    assert_eq!(reports.batch_max_reports, 500);
    assert_eq!(reports.retry_max, Duration::from_secs(300));
    let dir = ConfigDir::new(
        "[reports]\nurl = \"mqtt://broker.example.com\"\nbatch_max_reports = 50\nca_file = \"ca.pem\"\n",
    );
    let reports = dir.load().unwrap().reports.unwrap();
    assert_eq!(
        reports.url,
        ReportsUrl::Mqtt {
            host: "broker.example.com".to_owned(),
            port: 1883,
            tls: false
        }
    );
    assert_eq!(reports.url.to_string(), "mqtt://broker.example.com:1883");
    assert_eq!(reports.ca_file, Some(dir.dir.path().join("ca.pem")));
    assert_eq!(ConfigDir::new("").load().unwrap().reports, None);
}

#[test]
fn bad_report_settings_name_their_field() {
    let dir = ConfigDir::new(
        r#"[reports]
url = "http://hub.example.com/v1/reports"
outbox_max_bytes = 10
batch_max_reports = 0
timeout = "0s"
client_cert = "site.crt"
"#,
    );
    dir.check_errors(expect![[r#"
        DIR/edgeroll.toml:1:1: reports: client_cert and client_key go together: set both or neither
        DIR/edgeroll.toml:2:7: reports.url: "http://hub.example.com/v1/reports": reports leave the site only over https:// (http:// is for a loopback receiver)
        DIR/edgeroll.toml:3:20: reports.outbox_max_bytes: 10 is less than 4096
        DIR/edgeroll.toml:4:21: reports.batch_max_reports: 0 is outside 1–100000
        DIR/edgeroll.toml:5:11: reports.timeout: duration `0s` must be positive
    "#]]);
    ConfigDir::new("[reports]\nurl = \"ftp://x/y\"\n").check_errors(expect![[r#"
        DIR/edgeroll.toml:2:7: reports.url: unsupported scheme `ftp://`, expected https://, mqtt:// or mqtts://
    "#]]);
    ConfigDir::new("[reports]\noutbox_max_bytes = 5000\n").check_errors(expect![[r#"
        DIR/edgeroll.toml:1:1: reports.url: required field is missing
    "#]]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Any `reports.url` either loads as a url the sender can use or is one error naming the
    /// field; nothing panics, and an accepted mqtt url shows as `mqtt[s]://host:port`.
    #[test]
    fn any_reports_url_loads_or_names_the_field(
        url in proptest::prop_oneof![
            "(https|http|mqtt|mqtts|ftp)://[a-z0-9.\\[\\]:]{0,20}(:[0-9]{1,6})?(/[a-z]{0,8})?",
            ".{0,30}",
        ]
    ) {
        let text = format!("[reports]\nurl = {}\n", toml::Value::String(url.clone()));
        let dir = ConfigDir::new(&text);
        match dir.load() {
            Ok(config) => {
                let reports = config.reports.expect("a [reports] section");
                match &reports.url {
                    ReportsUrl::Http(accepted) => proptest::prop_assert_eq!(accepted, &url),
                    ReportsUrl::Mqtt { tls, .. } => {
                        let shown = reports.url.to_string();
                        let scheme = if *tls { "mqtts://" } else { "mqtt://" };
                        proptest::prop_assert!(shown.starts_with(scheme), "{}", shown);
                    }
                }
            }
            Err(diagnostics) => {
                proptest::prop_assert_eq!(diagnostics.len(), 1);
                proptest::prop_assert!(diagnostics[0].message.starts_with("reports.url: "), "{}", diagnostics[0].message);
            }
        }
    }
}
