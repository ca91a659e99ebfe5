//! Command-line parsing: the verbs and flags of the contract, and exit code 2 on bad usage.

use super::*;
use clap::error::ErrorKind;

fn parse(args: &[&str]) -> Cli {
    match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => panic!("{args:?} should parse: {error}"),
    }
}

fn usage_error(args: &[&str]) -> clap::Error {
    match Cli::try_parse_from(args) {
        Ok(cli) => panic!("{args:?} should be refused, parsed as {cli:?}"),
        Err(error) => error,
    }
}

#[test]
fn the_command_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn get_takes_a_service_watch_and_output() {
    let cli = parse(&["edgeroll", "get", "web", "-w", "-o", "json"]);
    assert!(matches!(
        cli.command,
        Command::Get { service: Some(ref s), watch: true, output: Output::Json } if s == "web"
    ));
    let cli = parse(&["edgeroll", "get", "--watch", "--output", "text"]);
    assert!(matches!(
        cli.command,
        Command::Get {
            service: None,
            watch: true,
            output: Output::Text
        }
    ));
}

#[test]
fn globals_go_before_or_after_the_verb() {
    let cli = parse(&["edgeroll", "--socket", "/tmp/a.sock", "get"]);
    assert_eq!(cli.socket, Some(PathBuf::from("/tmp/a.sock")));
    let cli = parse(&[
        "edgeroll",
        "promote",
        "web",
        "--socket",
        "/tmp/b.sock",
        "--full",
    ]);
    assert_eq!(cli.socket, Some(PathBuf::from("/tmp/b.sock")));
    assert!(
        matches!(cli.command, Command::Promote { ref service, full: true } if service == "web")
    );
    let cli = parse(&[
        "edgeroll",
        "validate",
        "--config",
        "/etc/x.toml",
        "a.toml",
        "b.toml",
    ]);
    assert_eq!(cli.config, Some(PathBuf::from("/etc/x.toml")));
    assert!(matches!(cli.command, Command::Validate { ref documents } if documents.len() == 2));
}

#[test]
fn every_operator_verb_parses() {
    assert!(matches!(
        parse(&["edgeroll", "undo", "web", "--to-revision", "3"]).command,
        Command::Undo {
            to_revision: Some(3),
            ..
        }
    ));
    assert!(matches!(
        parse(&["edgeroll", "undo", "web"]).command,
        Command::Undo {
            to_revision: None,
            ..
        }
    ));
    assert!(matches!(
        parse(&["edgeroll", "abort", "web"]).command,
        Command::Abort { .. }
    ));
    assert!(matches!(
        parse(&["edgeroll", "retry", "web"]).command,
        Command::Retry { .. }
    ));
    assert!(matches!(
        parse(&["edgeroll", "pause", "web"]).command,
        Command::Pause { .. }
    ));
    assert!(matches!(
        parse(&["edgeroll", "resume", "web"]).command,
        Command::Resume { .. }
    ));
    assert!(matches!(parse(&["edgeroll", "run"]).command, Command::Run));
    assert!(matches!(
        parse(&["edgeroll", "demo", "-o", "json"]).command,
        Command::Demo {
            output: Output::Json
        }
    ));
}

#[test]
fn sample_app_has_defaults_and_checks_the_error_rate() {
    let cli = parse(&["edgeroll", "sample-app", "--port", "8080"]);
    assert!(matches!(
        cli.command,
        Command::SampleApp { port: 8080, ref version, error_rate, latency_ms: 0 }
            if version == "1.0.0" && error_rate == 0.0
    ));
    let cli = parse(&[
        "edgeroll",
        "sample-app",
        "--port",
        "0",
        "--version",
        "2.0.0",
        "--error-rate",
        "0.25",
        "--latency-ms",
        "40",
    ]);
    assert!(matches!(
        cli.command,
        Command::SampleApp { port: 0, ref version, error_rate, latency_ms: 40 }
            if version == "2.0.0" && error_rate == 0.25
    ));
    let error = usage_error(&[
        "edgeroll",
        "sample-app",
        "--port",
        "1",
        "--error-rate",
        "1.5",
    ]);
    assert_eq!(error.kind(), ErrorKind::ValueValidation);
    assert_eq!(error.exit_code(), i32::from(EXIT_USAGE));
}

#[test]
fn bad_usage_exits_with_2() {
    for args in [
        &["edgeroll"][..],
        &["edgeroll", "promote"],
        &["edgeroll", "frobnicate"],
        &["edgeroll", "get", "-o", "yaml"],
        &["edgeroll", "undo", "web", "--to-revision", "three"],
        &["edgeroll", "sample-app"],
        &["edgeroll", "sign"],
        &["edgeroll", "keygen", "--out"],
    ] {
        let error = usage_error(args);
        assert_eq!(
            error.exit_code(),
            i32::from(EXIT_USAGE),
            "{args:?}: {error}"
        );
    }
}
