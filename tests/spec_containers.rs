//! Container templates in a desired document, as `edgeroll validate` and the agent read them: the
//! fields and their defaults, every mistake at its line and column, a template that mixes process
//! and container fields, and a document checked against the runtime of the agent's config (the
//! trust rule `runtime`, also run by `edgeroll validate -c CONFIG DOCUMENT`).

use std::path::Path;
use std::process::Command;

use edgeroll::spec::parse::{parse_document, runtime_fit};
use edgeroll::spec::{ContainerSpec, Provider, PullPolicy, StopSignal};
use expect_test::{expect, Expect};

fn document(template: &str) -> String {
    format!(
        r#"apiVersion = "edgeroll/v1"
[[services]]
name = "web"
replicas = 1
traffic = {{ http = "127.0.0.1:8080" }}
strategy = {{ canary = {{ steps = [{{ setWeight = 50 }}] }} }}
[services.template]
version = "2.0.0"
{template}
"#
    )
}

fn errors(text: &str) -> String {
    match parse_document(Path::new("doc.toml"), text) {
        Ok(document) => panic!("expected errors, got {document:#?}"),
        Err(diagnostics) => diagnostics
            .iter()
            .map(|diagnostic| format!("{diagnostic}\n"))
            .collect(),
    }
}

fn check(text: &str, expected: Expect) {
    expected.assert_eq(&errors(text));
}

#[test]
fn a_container_template_reads_every_field() {
    let text = document(
        r#"image = "registry.example.com/ingest:2.0.0"
imageArchive = "/var/lib/edgeroll/images/ingest-2.0.0.tar"
pullPolicy = "Never"
command = ["/ingest"]
args = ["--listen", "0.0.0.0:{port}"]
env = { LOG = "info" }
stopSignal = "SIGUSR1"
resources = { cpus = 0.5, memory = "256Mi" }
readiness = { httpGet = "/healthz" }"#,
    );
    let document = parse_document(Path::new("doc.toml"), &text).unwrap();
    let template = &document.services[0].template;
    assert_eq!(template.command, ["/ingest"]);
    assert_eq!(template.args, ["--listen", "0.0.0.0:{port}"]);
    assert_eq!(template.stop_signal, Some(StopSignal::Usr1));
    assert_eq!(
        template.container,
        Some(ContainerSpec {
            image: "registry.example.com/ingest:2.0.0".into(),
            image_archive: Some("/var/lib/edgeroll/images/ingest-2.0.0.tar".into()),
            pull_policy: PullPolicy::Never,
            cpu_millis: Some(500),
            memory_bytes: Some(256 << 20),
        })
    );
}

#[test]
fn an_image_alone_keeps_the_images_entrypoint_and_pulls_if_not_present() {
    let text = document(r#"image = "busybox:1.36""#);
    let document = parse_document(Path::new("doc.toml"), &text).unwrap();
    let template = &document.services[0].template;
    assert!(template.command.is_empty());
    assert!(template.args.is_empty());
    assert_eq!(template.stop_signal(), StopSignal::Term);
    let container = template.container.as_ref().unwrap();
    assert_eq!(container.pull_policy, PullPolicy::IfNotPresent);
    assert_eq!((container.cpu_millis, container.memory_bytes), (None, None));
}

#[test]
fn a_process_template_stays_as_it_was() {
    // No container field, no change to what earlier documents meant (and to their revisions).
    let text = document(r#"command = ["/bin/web", "--port", "{port}"]"#);
    let document = parse_document(Path::new("doc.toml"), &text).unwrap();
    let template = &document.services[0].template;
    assert_eq!(template.container, None);
    let json = serde_json::to_string(template).unwrap();
    assert!(
        !json.contains("container") && !json.contains("args"),
        "{json}"
    );
}

#[test]
fn container_fields_without_an_image_are_each_named() {
    check(
        &document(
            r#"command = ["/bin/web"]
pullPolicy = "Always"
imageArchive = "/tmp/app.tar"
resources = { cpus = 1 }
args = ["-v"]"#,
        ),
        expect![[r#"
            doc.toml:10:14: services[0].template.pullPolicy: is a container field, but the template has no `image`: add `image` to run a container, or remove it for the process runtime
            doc.toml:11:16: services[0].template.imageArchive: is a container field, but the template has no `image`: add `image` to run a container, or remove it for the process runtime
            doc.toml:12:13: services[0].template.resources: is a container field, but the template has no `image`: add `image` to run a container, or remove it for the process runtime
            doc.toml:13:8: services[0].template.args: is a container field, but the template has no `image`: add `image` to run a container, or remove it for the process runtime
        "#]],
    );
}

#[test]
fn every_bad_container_value_is_reported_at_once() {
    check(
        &document(
            r#"image = "bad image"
imageArchive = "images/app.tar"
pullPolicy = "Sometimes"
stopSignal = "SIGFOO"
resources = { cpus = 0, memory = "lots", gpus = 1 }"#,
        ),
        expect![[r#"
            doc.toml:9:9: services[0].template.image: "bad image" is not an image reference such as "registry.example.com/app:1.2"
            doc.toml:10:16: services[0].template.imageArchive: "images/app.tar" must be an absolute path (the agent's working directory is not yours)
            doc.toml:11:14: services[0].template.pullPolicy: unknown pullPolicy `Sometimes`, expected IfNotPresent, Always or Never
            doc.toml:12:14: services[0].template.stopSignal: unknown stopSignal `SIGFOO`, expected one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL
            doc.toml:13:22: services[0].template.resources.cpus: must be a number of CPUs from 0.001 to 1024, e.g. 0.5
            doc.toml:13:34: services[0].template.resources.memory: "lots" is not a memory size of at least 6Mi such as "256Mi" or "1G"
            doc.toml:13:42: services[0].template.resources.gpus: unknown field, did you mean `cpus`?
        "#]],
    );
}

#[test]
fn memory_takes_binary_and_decimal_units() {
    for (written, bytes) in [
        ("\"64Mi\"", 64u64 << 20),
        ("\"1Gi\"", 1 << 30),
        ("\"512M\"", 512_000_000),
        ("\"2G\"", 2_000_000_000),
        ("16777216", 16 << 20),
    ] {
        let text = document(&format!(
            "image = \"app:1\"\nresources = {{ memory = {written} }}"
        ));
        let document = parse_document(Path::new("doc.toml"), &text).unwrap();
        let container = document.services[0].template.container.clone().unwrap();
        assert_eq!(container.memory_bytes, Some(bytes), "{written}");
    }
    check(
        &document("image = \"app:1\"\nresources = { memory = \"1Mi\" }"),
        expect![[r#"
            doc.toml:10:24: services[0].template.resources.memory: "1Mi" is not a memory size of at least 6Mi such as "256Mi" or "1G"
        "#]],
    );
}

#[test]
fn a_job_metric_may_run_in_a_container_without_a_command() {
    let text = format!(
        "{}\n{}",
        document(r#"image = "app:2""#),
        r#"[[analysisTemplates]]
name = "smoke"
[[analysisTemplates.metrics]]
name = "smoke"
provider = { job = { image = "registry.example.com/smoke:1", deadline = "2m" } }"#
    );
    let document = parse_document(Path::new("doc.toml"), &text).unwrap();
    let Provider::Job(job) = &document.analysis_templates["smoke"].metrics[0].provider else {
        panic!("not a job");
    };
    assert_eq!(job.image.as_deref(), Some("registry.example.com/smoke:1"));
    assert!(job.command.is_empty());
}

#[test]
fn a_document_is_checked_against_the_sites_runtime() {
    let containers = document(r#"image = "app:2""#);
    let processes = document(r#"command = ["/bin/web"]"#);
    let render = |text: &str, runtime: &str| -> String {
        runtime_fit(Path::new("doc.toml"), text, runtime)
            .iter()
            .map(|diagnostic| format!("{diagnostic}\n"))
            .collect()
    };
    assert_eq!(render(&containers, "docker"), "");
    assert_eq!(render(&containers, "containerd"), "");
    assert_eq!(render(&processes, "process"), "");
    expect![[r#"
        doc.toml:9:1: services[0].template.image: service web runs a container image, but this site runs the process runtime: set [runtime] kind = "docker" or "containerd" in the agent config, or give the template a `command` instead
    "#]]
    .assert_eq(&render(&containers, "process"));
    expect![[r#"
        doc.toml:7:11: services[0].template: service web has no `image`, but this site runs the containerd runtime, which runs only containers
    "#]]
    .assert_eq(&render(&processes, "containerd"));
}

#[test]
fn validate_with_a_config_names_the_runtime_the_document_needs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edgeroll.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nsite = \"s1\"\nstate_dir = \"{}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let desired = dir.path().join("desired.toml");
    std::fs::write(&desired, document(r#"image = "app:2""#)).unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_edgeroll"))
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).replace(&*dir.path().to_string_lossy(), "DIR"),
        )
    };
    let config_arg = config.to_str().unwrap();
    let desired_arg = desired.to_str().unwrap();
    // Alone, the document is valid: it is the site's runtime that cannot run it.
    let (code, _) = run(&["validate", desired_arg]);
    assert_eq!(code, Some(0));
    let (code, stdout) = run(&["--config", config_arg, "validate", desired_arg]);
    assert_eq!(code, Some(78), "{stdout}");
    expect![[r#"
        DIR/desired.toml:9:1: services[0].template.image: service web runs a container image, but this site runs the process runtime: set [runtime] kind = "docker" or "containerd" in the agent config, or give the template a `command` instead
    "#]]
    .assert_eq(&stdout);
    std::fs::write(
        &config,
        format!(
            "[agent]\nsite = \"s1\"\nstate_dir = \"{}\"\n[runtime]\nkind = \"docker\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, stdout) = run(&["--config", config_arg, "validate", desired_arg]);
    assert_eq!(code, Some(0), "{stdout}");
}
