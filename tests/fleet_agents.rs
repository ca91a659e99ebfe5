//! A fleet plan with real agents: five `edgeroll run` agents (process runtime, `edgeroll
//! sample-app` workloads), each with its own state directory, socket and proxy port, pull from
//! one real `edgeroll hub` and report to it, through a plan pilot (2 sites) → fleet (3 sites).
//!
//! One pilot agent is frozen with SIGSTOP for the whole pilot wave (it answers nothing, sends
//! nothing): the wave completes on the other one, once the hub counts the frozen one as unknown
//! (`unknownAfter`); the fleet wave rolls; the plan completes; then the frozen agent is thawed
//! (SIGCONT), takes the newest document that selects it (the fleet wave's: `selector = {}`)
//! and ends on the new version.
//!
//! One machine, five agents, one release document: the document names one proxy address, and
//! five agents cannot all listen on it. So the agents pull through a small HTTPS relay (below)
//! that forwards each poll to the hub with the agent's own headers and `If-None-Match`, passes
//! 304s and errors through, and rewrites in a 200 only what is per machine here: each service's
//! `traffic.http` (the agent's proxy port) and the workloads' test marker. Serial, selector,
//! versions and ETag are the hub's. Reports go straight to the hub (plain HTTP on loopback); the
//! hub serves unsigned documents and the agents allow them (`allow_unsigned`), because the relay
//! changes the bytes.
//!
//! Part of `cargo test`: it needs only our binary.
// Real processes in real time.
#![allow(clippy::disallowed_methods)]

mod common;
mod fleet_support;
mod hub_support;
mod pull_support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Site, SiteOptions};
use edgeroll::hub::plan::view::{PlanPhase, PlanView, WavePhase};
use fleet_support::{plan_view, summary, wait_plan, HubProcess};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pull_support::Pki;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Every rollout: half the traffic for a second, then promoted.
const STEPS: &str = r#"steps = [{ setWeight = 50 }, { pause = { duration = "1s" } }]"#;
/// The pre-plan document's serial.
const BASE_SERIAL: u64 = 10;
/// How long one step of the test may take.
const STEP: Duration = Duration::from_secs(60);

/// What the relay rewrites for one site.
#[derive(Clone)]
struct Local {
    proxy: SocketAddr,
    marker: String,
}

/// The HTTPS relay between the agents' pull and the hub (see the module's doc).
struct Relay {
    address: SocketAddr,
    stop: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Relay {
    fn start(pki: &Pki, hub: SocketAddr, sites: BTreeMap<String, Local>) -> Relay {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
            std::fs::File::open(&pki.cert_file).expect("cert"),
        ))
        .collect::<Result<_, _>>()
        .expect("certs");
        let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
            std::fs::File::open(&pki.key_file).expect("key"),
        ))
        .expect("key PEM")
        .expect("a key");
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the relay");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let client: Client<HttpConnector, Full<Bytes>> = {
            let _guard = runtime.enter();
            Client::builder(TokioExecutor::new()).build_http()
        };
        let sites = Arc::new(sites);
        let token = stop.clone();
        runtime.spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let acceptor = acceptor.clone();
                let client = client.clone();
                let sites = Arc::clone(&sites);
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let client = client.clone();
                        let sites = Arc::clone(&sites);
                        async move {
                            Ok::<_, Infallible>(relay(request, hub, &client, &sites).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Relay {
            address,
            stop,
            runtime: Some(runtime),
        }
    }
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// Forward one poll to the hub; rewrite a document for the polling site.
async fn relay(
    request: Request<Incoming>,
    hub: SocketAddr,
    client: &Client<HttpConnector, Full<Bytes>>,
    sites: &BTreeMap<String, Local>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let Some(local) = path
        .strip_prefix("/v1/sites/")
        .and_then(|rest| rest.strip_suffix("/desired"))
        .and_then(|site| sites.get(site))
    else {
        return answer(
            StatusCode::NOT_FOUND,
            format!("the relay has no route {path}"),
        );
    };
    let mut forward = Request::get(format!("http://{hub}{path}"));
    for name in [
        edgeroll::wire::SITE_HEADER,
        edgeroll::wire::LABELS_HEADER,
        header::IF_NONE_MATCH.as_str(),
    ] {
        if let Some(value) = request.headers().get(name) {
            forward = forward.header(name, value);
        }
    }
    let Ok(forward) = forward.body(Full::new(Bytes::new())) else {
        return answer(StatusCode::BAD_GATEWAY, "cannot build the request");
    };
    let Ok(response) = client.request(forward).await else {
        return answer(StatusCode::BAD_GATEWAY, "the hub did not answer");
    };
    let status = response.status();
    let headers = response.headers().clone();
    let Ok(body) = response.into_body().collect().await else {
        return answer(StatusCode::BAD_GATEWAY, "the hub's answer broke off");
    };
    let body = body.to_bytes();
    let mut reply = if status == StatusCode::OK {
        match rewrite(&body, local) {
            Ok(rewritten) => {
                let mut reply = answer(StatusCode::OK, rewritten);
                reply.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                reply
            }
            Err(error) => answer(StatusCode::BAD_GATEWAY, error),
        }
    } else {
        answer(status, body)
    };
    for name in [header::ETAG, header::CACHE_CONTROL, header::RETRY_AFTER] {
        if let Some(value) = headers.get(&name) {
            reply.headers_mut().insert(name, value.clone());
        }
    }
    reply
}

/// The document (JSON or TOML) as JSON, with this machine's proxy port and marker.
fn rewrite(body: &[u8], local: &Local) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(body).map_err(|error| error.to_string())?;
    let mut document: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|error| error.to_string())?
    } else {
        let table: toml::Table = toml::from_str(text).map_err(|error| error.to_string())?;
        serde_json::to_value(table).map_err(|error| error.to_string())?
    };
    let services = document["services"]
        .as_array_mut()
        .ok_or("a document without services")?;
    for service in services {
        service["traffic"]["http"] = Value::String(local.proxy.to_string());
        service["template"]["env"]["EDGEROLL_TEST_MARKER"] = Value::String(local.marker.clone());
    }
    serde_json::to_vec(&document).map_err(|error| error.to_string())
}

/// One agent of the fleet.
struct Agent {
    name: &'static str,
    site: Site,
}

impl Agent {
    /// The pid of this agent's `edgeroll run` (found by its config path).
    fn pid(&self) -> nix::unistd::Pid {
        let config = self.site.config.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
            if args.contains(&b"run".as_slice()) && args.contains(&config.as_bytes()) {
                return nix::unistd::Pid::from_raw(pid);
            }
        }
        panic!("{}: no edgeroll run process", self.name);
    }

    /// Wait until the agent runs `version` as its stable, with nothing in progress, following
    /// `serial`, and the hub's summary says the same.
    fn wait_settled(&self, hub: &HubProcess, version: &str, serial: u64) {
        self.site
            .wait_for(&format!("{} on {version}", self.name), |s| {
                s["stable"]["version"] == version
                    && s["phase"] == "Healthy"
                    && s["canary"].is_null()
            });
        let deadline = Instant::now() + STEP;
        loop {
            let status: Value =
                serde_json::from_str(&self.site.cli_ok(&["get", "-o", "json"])).expect("status");
            let answer = hub.get(&format!("/v1/sites/{}", self.name));
            let summary = if answer.status == 200 {
                answer.json()
            } else {
                Value::Null
            };
            let web = &summary["services"]["web"];
            if status["source"]["serial"] == serial
                && web["stable"]["version"] == version
                && web["phase"] == "Healthy"
                && web["serial"] == serial
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the hub does not show {version} (serial {serial}) settled:\n{summary:#}\nsource: {:#}",
                self.name,
                status["source"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Thaws a frozen agent whatever happens, so that it can be stopped at the end.
struct Thaw(Option<nix::unistd::Pid>);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        }
    }
}

fn configure(
    site: &Site,
    name: &str,
    cohort: &str,
    relay: SocketAddr,
    hub: SocketAddr,
    ca: &std::path::Path,
) {
    let config = format!(
        "[agent]\nsite = \"{name}\"\nlabels = {{ cohort = \"{cohort}\" }}\n\
         state_dir = \"{state}\"\nsocket = \"{socket}\"\nshutdown_grace = \"2s\"\n\n\
         [runtime]\nkind = \"process\"\nstop_grace = \"2s\"\n\n\
         [desired]\nsource = \"https://{relay}/v1/sites/{{site}}/desired\"\npoll_interval = \"1s\"\n\
         allow_unsigned = true\nca_file = \"{ca}\"\ntimeout = \"5s\"\n\n\
         [reports]\nurl = \"http://{hub}/v1/reports\"\ntimeout = \"5s\"\n\
         retry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
        state = site.dir.path().join("state").display(),
        socket = site.socket.display(),
        ca = ca.display(),
    );
    std::fs::write(&site.config, config).expect("write the agent config");
}

fn wave<'a>(view: &'a PlanView, name: &str) -> &'a edgeroll::hub::plan::view::WaveView {
    view.waves
        .iter()
        .find(|wave| wave.name == name)
        .unwrap_or_else(|| panic!("no wave {name}:\n{}", summary(view)))
}

#[test]
fn five_agents_roll_a_plan_pilot_then_fleet_and_a_frozen_pilot_catches_up() {
    let started = Instant::now();
    let mut laps = Vec::new();
    let mut lap = |what: String| {
        let line = format!("{:>5.1} s {what}", started.elapsed().as_secs_f64());
        eprintln!("{line}");
        laps.push(line);
    };
    let hub = HubProcess::start("plan_interval = \"200ms\"\n");
    let pki = Pki::new();
    let mut agents: Vec<Agent> = [
        ("pilot-1", "pilot"),
        ("pilot-2", "pilot"),
        ("fleet-1", "fleet"),
        ("fleet-2", "fleet"),
        ("fleet-3", "fleet"),
    ]
    .into_iter()
    .map(|(name, _)| Agent {
        name,
        site: Site::create(SiteOptions::default()),
    })
    .collect();
    let locals = agents
        .iter()
        .map(|agent| {
            (
                agent.name.to_owned(),
                Local {
                    proxy: agent.site.proxy,
                    marker: agent.site.marker().to_owned(),
                },
            )
        })
        .collect();
    let relay = Relay::start(&pki, hub.address, locals);
    for agent in &agents {
        let cohort = agent.name.split('-').next().expect("cohort");
        configure(
            &agent.site,
            agent.name,
            cohort,
            relay.address,
            hub.address,
            &pki.ca_file,
        );
    }
    // One text for everyone (the relay makes each site's proxy port its own).
    let text = |version: &str, serial: u64| {
        agents[0]
            .site
            .desired_text(version, &[], STEPS, "", 1)
            .replacen("serial = 1\n", &format!("serial = {serial}\n"), 1)
    };
    let docs = hub.dir.docs();
    fleet_support::write_atomic(&docs, "base.toml", &text("1.0.0", BASE_SERIAL));
    fleet_support::write_atomic(
        &docs,
        "releases/web-2.0.toml",
        &text("2.0.0", BASE_SERIAL + 1),
    );
    for agent in &mut agents {
        agent.site.start_agent();
    }
    for agent in &agents {
        agent.wait_settled(&hub, "1.0.0", BASE_SERIAL);
    }
    lap("five agents on 1.0.0 (serial 10), the hub knows".to_owned());

    // pilot-2 freezes; the plan appears.
    let frozen = agents[1].pid();
    nix::sys::signal::kill(frozen, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let mut thaw = Thaw(Some(frozen));
    fleet_support::write_atomic(
        &docs,
        "web-2.0.plan.toml",
        r#"document = "releases/web-2.0.toml"
unknownAfter = "4s"

[[waves]]
name = "pilot"
selector = { cohort = "pilot" }
minHealthy = "100%"
bake = "1s"

[[waves]]
name = "fleet"
selector = {}
minHealthy = "100%"
"#,
    );
    let get = |path: &str| hub.get(path);
    let view = wait_plan(get, "web-2.0", "the pilot wave completed", STEP, |view| {
        wave(view, "pilot").phase == WavePhase::Completed
    });
    lap(format!(
        "pilot completed without pilot-2:\n{}",
        summary(&view)
    ));
    let pilot = wave(&view, "pilot");
    let pilot_serial = pilot.serial.expect("the pilot's serial");
    assert!(pilot_serial > BASE_SERIAL);
    assert_eq!(
        (pilot.members, pilot.reachable),
        (2, 1),
        "{}",
        summary(&view)
    );
    assert_eq!(pilot.counts.healthy, 1, "{}", summary(&view));
    assert_eq!(
        pilot.counts.unknown,
        1,
        "pilot-2 is frozen:\n{}",
        summary(&view)
    );
    agents[0].wait_settled(&hub, "2.0.0", pilot_serial);

    let view = wait_plan(get, "web-2.0", "the plan completed", STEP, |view| {
        view.phase == PlanPhase::Completed
    });
    lap(format!(
        "the fleet wave rolled, plan completed:\n{}",
        summary(&view)
    ));
    let fleet = wave(&view, "fleet");
    let fleet_serial = fleet.serial.expect("the fleet's serial");
    assert!(fleet_serial > pilot_serial, "{}", summary(&view));
    assert_eq!(
        (fleet.members, fleet.counts.healthy),
        (3, 3),
        "{}",
        summary(&view)
    );
    for agent in &agents[2..] {
        agent.wait_settled(&hub, "2.0.0", fleet_serial);
    }

    // pilot-2 thaws: it takes the pilot's document and rolls it.
    if let Some(pid) = thaw.0.take() {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    }
    let thawed = Instant::now();
    // It is served the highest serial whose selector selects it (docs/protocol.md): the fleet
    // wave's document (`selector = {}`), the same release.
    agents[1].wait_settled(&hub, "2.0.0", fleet_serial);
    lap(format!(
        "pilot-2 thawed, on 2.0.0 (serial {fleet_serial}) {:.1} s later",
        thawed.elapsed().as_secs_f64()
    ));
    let view = plan_view(get, "web-2.0").expect("the plan");
    assert_eq!(view.phase, PlanPhase::Completed, "{}", summary(&view));
    // Every agent ends on the release and the newest serial that selects it, and its own proxy
    // serves the new version.
    for agent in &agents {
        agent.wait_settled(&hub, "2.0.0", fleet_serial);
        assert_eq!(
            agent.site.canary_share("2.0.0", 20),
            100.0,
            "{}: its proxy on {} answers with 2.0.0",
            agent.name,
            agent.site.proxy
        );
    }
    eprintln!(
        "fleet agents: 5 agents through pilot → fleet in {:.1} s\n{}",
        started.elapsed().as_secs_f64(),
        laps.join("\n")
    );
    drop(relay);
}
