//! End to end with containers: the real `edgeroll` binary with `[runtime] kind = "docker"` against
//! a real Docker Engine, as a user runs it.
//!
//! The first release comes from an `imageArchive` (a site without a registry); the second is
//! pulled from a real registry (Debian's `docker-registry`) through a slow loopback link, and the
//! test checks that nothing moves while it downloads: the stable keeps all traffic, no canary
//! exists, `edgeroll get` shows the pull with its bytes, and the progress deadline (2 s, far
//! shorter than the download) never fires. Then the canary splits traffic through the proxy, the
//! agent is killed with SIGKILL and its containers are adopted (same container, not restarted), a
//! release whose image does not exist is shown as `ImagePullFailed` while the stable keeps
//! serving, and the image of the revision kept for `undo` is still on the site.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;
mod container_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Site, SiteOptions};

/// Bytes of incompressible filler in the second release's image, so its download through the
/// slow link takes several seconds.
const FILLER_BYTES: usize = 6 * 1024 * 1024;
/// The slow link's rate.
const LINK_BYTES_PER_SECOND: usize = 1024 * 1024;

fn engine_socket() -> String {
    std::env::var("EDGEROLL_TEST_DOCKER").unwrap_or_else(|_| {
        panic!("EDGEROLL_TEST_DOCKER is not set: run `eval \"$(tests/engines/docker.sh start)\"`")
    })
}

fn registry() -> String {
    std::env::var("EDGEROLL_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!("EDGEROLL_TEST_REGISTRY is not set: run `eval \"$(tests/engines/docker.sh start)\"`")
    })
}

/// The Docker CLI against the test's engine.
fn docker(args: &[&str]) -> (bool, String) {
    let socket = engine_socket();
    let host = if socket.starts_with("unix://") {
        socket
    } else {
        format!("unix://{socket}")
    };
    let output = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("the docker CLI (apt-get install docker.io)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

/// A loopback relay to `upstream` that carries at most `LINK_BYTES_PER_SECOND` towards the
/// client: a cellular link, for the registry.
fn slow_link(upstream: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let address = listener.local_addr().expect("relay address");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut client_reader, mut server_writer) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_reader, &mut server_writer);
                let _ = server_writer.shutdown(std::net::Shutdown::Write);
            });
            let (mut server_reader, mut client_writer) = (server, client);
            std::thread::spawn(move || {
                let chunk = LINK_BYTES_PER_SECOND / 20;
                let mut buffer = vec![0u8; chunk];
                loop {
                    let started = Instant::now();
                    let Ok(read) = server_reader.read(&mut buffer) else {
                        break;
                    };
                    if read == 0 || client_writer.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                    let pace = Duration::from_secs_f64(read as f64 / LINK_BYTES_PER_SECOND as f64);
                    if let Some(rest) = pace.checked_sub(started.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                let _ = client_writer.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    address
}

/// The desired document: one service running `image` (from `archive` when given), a canary of
/// `setWeight 50` then a manual pause, and a progress deadline of 2 s.
fn desired(site: &Site, serial: u64, version: &str, image: &str, archive: Option<&str>) -> String {
    let archive = archive
        .map(|path| format!("imageArchive = \"{path}\"\n"))
        .unwrap_or_default();
    let script = container_support::script(container_support::StopBehaviour::ExitOnTerm);
    format!(
        r#"apiVersion = "edgeroll/v1"
serial = {serial}

[[services]]
name = "{service}"
replicas = 1
revisionHistoryLimit = 2
progressDeadlineSeconds = 2
traffic = {{ http = "{proxy}" }}

[services.template]
version = "{version}"
image = "{image}"
{archive}command = ["/bin/sh", "-c", {script:?}]
env = {{ VERSION = "{version}" }}
readiness = {{ httpGet = "/healthz" }}
resources = {{ memory = "64Mi", cpus = 0.5 }}

[services.strategy.canary]
steps = [{{ setWeight = 50 }}, {{ pause = {{}} }}]
"#,
        service = site.service,
        proxy = site.proxy,
    )
}

fn write(site: &Site, text: &str) {
    let partial = site.desired.with_extension("partial");
    std::fs::write(&partial, text).expect("write desired");
    std::fs::rename(&partial, &site.desired).expect("rename desired");
    site.reload();
}

/// The share of `requests` answered by `version` through the proxy (`/version` says which).
fn share(site: &Site, version: &str, requests: usize) -> f64 {
    let mut hits = 0;
    for _ in 0..requests {
        let (status, body) =
            container_support::http_get(site.proxy, "/version").expect("the proxy answers");
        assert_eq!(status, 200, "{body}");
        if body.trim() == version {
            hits += 1;
        }
    }
    hits as f64 * 100.0 / requests as f64
}

/// The ids of the containers of this site's service, with their start times.
fn containers(service: &str) -> Vec<(String, String)> {
    let (_, ids) = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.edgeroll.service={service}"),
    ]);
    let mut found: Vec<(String, String)> = ids
        .lines()
        .map(|id| {
            let (_, started) = docker(&["inspect", "-f", "{{.State.StartedAt}}", id]);
            (id.to_owned(), started)
        })
        .collect();
    found.sort();
    found
}

#[test]
#[ignore = "needs dockerd and docker-registry; .ci/run starts them (tests/engines/docker.sh) and runs --ignored"]
fn a_container_rollout_waits_for_its_image_survives_kill9_and_keeps_what_undo_needs() {
    let mut site = Site::create(SiteOptions {
        // Unique per run: the engine is shared with other tests.
        service: format!("e2e-{:06x}", fastrand::u32(..0x100_0000)),
        ..SiteOptions::default()
    });
    let config = std::fs::read_to_string(&site.config).expect("read config");
    let config = config.replace(
        "kind = \"process\"",
        &format!("kind = \"docker\"\nsocket = \"{}\"", engine_socket()),
    );
    std::fs::write(&site.config, config).expect("write config");
    site.start_agent();

    // --- release 1 from an archive: no registry involved ---
    let name = format!("localhost/edgeroll-e2e/{}", site.service);
    let first = format!("{name}:1");
    let archive = container_support::build_image(site.dir.path(), &first, &[]);
    write(&site, &desired(&site, 1, "1.0.0", &first, archive.to_str()));
    let healthy = site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0" && common::all_ready(s)
    });
    let logs = healthy["instances"][0]["logs"].as_str().unwrap_or_default();
    assert!(logs.starts_with("docker logs edgeroll-"), "{healthy}");
    assert_eq!(share(&site, "1.0.0", 20), 100.0);

    // --- release 2 from a registry over a slow link: nothing moves until it is present ---
    let link = slow_link(registry());
    let second = format!("{link}/edgeroll-e2e/{}:2", site.service);
    let filler: Vec<u8> = (0..FILLER_BYTES).map(|_| fastrand::u8(..)).collect();
    let pushed_archive =
        container_support::build_image(site.dir.path(), &second, &[("filler", &filler)]);
    let pushed = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", pushed_archive.display()))
        .arg(format!(
            "docker://{}/edgeroll-e2e/{}:2",
            registry(),
            site.service
        ))
        .status()
        .expect("skopeo (apt-get install skopeo)");
    assert!(pushed.success(), "skopeo copy");
    let pull_started = Instant::now();
    write(&site, &desired(&site, 2, "2.0.0", &second, None));
    let mut saw_bytes = 0u64;
    let mut polls = 0;
    loop {
        let status = site.status();
        if status["canary"]["version"] == "2.0.0" {
            break;
        }
        // While the image downloads the stable keeps every request and no deadline runs.
        assert_eq!(status["stable"]["version"], "1.0.0", "{status}");
        assert_eq!(status["weights"]["canary"], 0, "{status}");
        assert_eq!(status["phase"], "Healthy", "{status}");
        if status["image"]["image"] == second.as_str() {
            polls += 1;
            saw_bytes = saw_bytes.max(status["image"]["doneBytes"].as_u64().unwrap_or(0));
            if polls == 8 {
                // What a user sees mid-download (the README shows it).
                eprintln!("{}", site.cli_ok(&["get", &site.service]));
            }
        }
        assert!(
            pull_started.elapsed() < Duration::from_secs(120),
            "the pull never finished: {status}\n{}",
            site.agent_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let pull_took = pull_started.elapsed();
    assert!(
        pull_took > Duration::from_secs(3),
        "the slow link should take seconds, took {pull_took:?}"
    );
    assert!(polls > 4, "the pull was shown in status {polls} times");
    assert!(saw_bytes > 0, "status showed no bytes of the pull");
    let paused = site.wait_for("canary at 50 %", |s| {
        s["phase"] == "Paused" && s["weights"]["canary"] == 50 && common::all_ready(s)
    });
    // A 2 s progress deadline and a download of several seconds: the deadline measured the
    // rollout, not the download.
    assert_eq!(paused["message"], "CanaryPauseStep", "{paused}");
    let events = paused["events"].to_string();
    assert!(events.contains("ImageReady"), "{events}");
    assert!(!events.contains("ProgressDeadlineExceeded"), "{events}");
    let canary_share = share(&site, "2.0.0", 400);
    assert!(
        (canary_share - 50.0).abs() < 10.0,
        "setWeight 50: {canary_share:.1} % of 400 requests"
    );
    eprintln!(
        "pull over the slow link took {:.1} s ({} MB at {} MB/s); {polls} status polls showed up to {saw_bytes} bytes; canary share {canary_share:.1} %",
        pull_took.as_secs_f64(),
        FILLER_BYTES >> 20,
        LINK_BYTES_PER_SECOND >> 20
    );
    let (_, memory) = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.NetworkMode}} {{.HostConfig.RestartPolicy.Name}}",
        &containers(&site.service)[0].0,
    ]);
    assert_eq!(memory, format!("{} 500000000 host no", 64 << 20));

    // --- kill -9: the containers are adopted, not restarted ---
    let before = containers(&site.service);
    assert_eq!(before.len(), 2, "one stable, one canary: {before:?}");
    site.kill9_agent();
    site.start_agent();
    let after_restart = site.wait_for("adopted", |s| {
        s["phase"] == "Paused" && s["weights"]["canary"] == 50 && common::all_ready(s)
    });
    assert_eq!(
        containers(&site.service),
        before,
        "same containers, same start times"
    );
    for instance in after_restart["instances"].as_array().expect("instances") {
        assert_eq!(instance["restarts"], 0, "{after_restart}");
    }

    // --- promote; the kept revision's image stays on the site ---
    site.cli_ok(&["promote", &site.service]);
    site.wait_for("2.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "2.0.0" && s["canary"].is_null()
    });
    site.wait_for("one container", |_| containers(&site.service).len() == 1);
    assert!(
        docker(&["image", "inspect", &first]).0,
        "the undo image {first} was removed"
    );
    // … also across a restart of the agent: nothing runs 1.0.0 now, so only the agent's own
    // record of what it keeps protects it.
    site.kill9_agent();
    site.start_agent();
    site.wait_for("2.0.0 healthy again", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "2.0.0" && common::all_ready(s)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        docker(&["image", "inspect", &first]).0,
        "the undo image {first} was removed after a restart"
    );

    // --- an image that does not exist: shown, retried, and the stable keeps serving ---
    let missing = format!("{}/edgeroll-e2e/{}:absent", registry(), site.service);
    write(&site, &desired(&site, 3, "3.0.0", &missing, None));
    let failed = site.wait_for("ImagePullFailed", |s| {
        s["events"].to_string().contains("ImagePullFailed")
            && s["image"]["failures"].as_u64() >= Some(1)
    });
    assert_eq!(failed["stable"]["version"], "2.0.0", "{failed}");
    assert!(failed["canary"].is_null(), "{failed}");
    assert_eq!(share(&site, "2.0.0", 20), 100.0);
    let text = site.cli_ok(&["get", &site.service]);
    assert!(text.contains("Image:") && text.contains(&missing), "{text}");
    eprintln!("{text}");

    // --- the end: the service leaves the document, its containers go ---
    std::fs::write(&site.desired, "apiVersion = \"edgeroll/v1\"\nserial = 4\n")
        .expect("write desired");
    site.reload();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !containers(&site.service).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the containers of a removed service still run:\n{}",
            site.agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
