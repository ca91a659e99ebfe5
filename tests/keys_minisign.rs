//! `edgeroll keygen` and `edgeroll sign` against the real `minisign` tool (Debian package
//! `minisign`), in both directions: what minisign signs, edgeroll verifies; what edgeroll signs
//! and the keys it makes, minisign verifies and uses. These tests fail, never skip, when
//! minisign is missing.
// The tests compare the signing time with the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeroll::wire::signature::{self, SignatureError, TrustedKey};

/// A valid desired document, as a publisher would sign it.
const DOCUMENT: &str = r#"apiVersion = "edgeroll/v1"
serial = 17
selector = { cohort = "pilot" }

[[services]]
name = "web"
traffic = { http = "127.0.0.1:8080" }

[services.template]
version = "2.5.0"
command = ["/usr/bin/edgeroll", "sample-app", "--port", "{port}", "--version", "2.5.0"]

[services.strategy.canary]
steps = [{ setWeight = 20 }, { pause = {} }]
"#;

/// How long any one command may take (a minisign key's KDF asks for 1 GiB of scrypt).
const DEADLINE: Duration = Duration::from_secs(120);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Run `command` with `stdin` fed to it, within the deadline.
fn run(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    finished
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{command:?} did not finish in {DEADLINE:?}"))
        .expect("wait")
}

/// The real minisign; the test fails when it is not installed.
fn minisign(args: &[&str], stdin: &str) -> Output {
    let found = Command::new("minisign")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok(),
        "minisign is not installed: `apt-get install -y minisign` (.ci/run does)"
    );
    let mut command = Command::new("minisign");
    command.args(args);
    run(command, stdin)
}

fn succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// The edgeroll binary in `dir`, isolated from the caller's keys and passwords.
fn edgeroll(dir: &Path, args: &[&str], password: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeroll"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("EDGEROLL_KEY")
        .env_remove("EDGEROLL_KEY_PASSWORD")
        .env("EDGEROLL_CONFIG", "/nonexistent/edgeroll.toml");
    if let Some(password) = password {
        command.env("EDGEROLL_KEY_PASSWORD", password);
    }
    run(command, "")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A temporary directory holding `desired.toml`.
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let document = dir.path().join("desired.toml");
    std::fs::write(&document, DOCUMENT).expect("write document");
    (dir, document)
}

/// The key id minisign wrote in a `.pub` file's comment, as edgeroll writes key ids: 16 hex
/// digits. minisign leaves out leading zeros (`%X`), so an id starting with 0 is padded here.
fn key_id_in(public_file: &str) -> String {
    let written = public_file
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("untrusted comment: minisign public key "))
        .expect("a minisign public key comment")
        .trim()
        .to_uppercase();
    format!("{written:0>16}")
}

/// Check a minisign signature with edgeroll's verifier, and that a changed byte in the document
/// or in the signature is refused.
fn verify_in_edgeroll(public_file: &str, document: &[u8], signature_file: &str) -> String {
    let key = TrustedKey::parse(public_file).expect("edgeroll reads minisign's public key");
    assert_eq!(key.key_id, key_id_in(public_file));
    let verified = signature::verify(document, signature_file, std::slice::from_ref(&key))
        .expect("edgeroll verifies minisign's signature");
    assert_eq!(verified.key_id, key.key_id);

    let mut flipped = document.to_vec();
    flipped[10] ^= 0x20;
    assert!(matches!(
        signature::verify(&flipped, signature_file, std::slice::from_ref(&key)),
        Err(SignatureError::Invalid { .. })
    ));
    let lines: Vec<&str> = signature_file.lines().collect();
    let mut tampered_comment = lines.clone();
    let comment = lines[2].replace("serial:17", "serial:99");
    tampered_comment[2] = &comment;
    assert!(
        signature::verify(document, &tampered_comment.join("\n"), &[key]).is_err(),
        "a changed trusted comment must not verify"
    );
    verified.trusted_comment
}

#[test]
#[ignore = "needs minisign (apt-get install minisign); .ci/run installs it and runs --ignored"]
fn a_document_signed_by_minisign_with_an_unencrypted_key_verifies_in_edgeroll() {
    let (dir, document) = workspace();
    let public = dir.path().join("ms.pub");
    let secret = dir.path().join("ms.key");
    let output = minisign(
        &[
            "-G",
            "-W",
            "-p",
            public.to_str().expect("utf-8"),
            "-s",
            secret.to_str().expect("utf-8"),
        ],
        "",
    );
    succeeded("minisign -G -W", &output);
    let output = minisign(
        &[
            "-S",
            "-s",
            secret.to_str().expect("utf-8"),
            "-m",
            document.to_str().expect("utf-8"),
            "-t",
            "timestamp:1764600000 serial:17 selector:cohort=pilot",
        ],
        "",
    );
    succeeded("minisign -S", &output);
    let signature_file = read(&dir.path().join("desired.toml.minisig"));
    let comment = verify_in_edgeroll(&read(&public), DOCUMENT.as_bytes(), &signature_file);
    assert_eq!(
        comment,
        "timestamp:1764600000 serial:17 selector:cohort=pilot"
    );

    // minisign's default trusted comment separates its fields with tabs; the time is still read.
    let output = minisign(
        &[
            "-S",
            "-s",
            secret.to_str().expect("utf-8"),
            "-m",
            document.to_str().expect("utf-8"),
        ],
        "",
    );
    succeeded("minisign -S", &output);
    let key = TrustedKey::parse(&read(&public)).expect("key");
    let verified = signature::verify(
        DOCUMENT.as_bytes(),
        &read(&dir.path().join("desired.toml.minisig")),
        &[key],
    )
    .expect("verifies");
    let signed_at = verified.signed_at().expect("a timestamp");
    assert!(signed_at.abs_diff(now_secs()) < 600, "{verified:?}");

    // minisign's unencrypted key (written without a checksum) signs in edgeroll too.
    let output = edgeroll(
        dir.path(),
        &["sign", "desired.toml", "--key", "ms.key"],
        None,
    );
    succeeded("edgeroll sign with minisign's -W key", &output);
    let output = minisign(
        &[
            "-V",
            "-p",
            public.to_str().expect("utf-8"),
            "-m",
            document.to_str().expect("utf-8"),
        ],
        "",
    );
    succeeded("minisign -V", &output);
    assert!(
        text(&output.stdout).contains("serial:17 selector:cohort=pilot"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
#[ignore = "needs minisign (apt-get install minisign); .ci/run installs it and runs --ignored"]
fn a_document_signed_by_minisign_with_a_password_verifies_in_edgeroll_and_its_key_signs_in_edgeroll(
) {
    let (dir, document) = workspace();
    let public = dir.path().join("ms.pub");
    let secret = dir.path().join("ms.key");
    // minisign reads the password (twice for -G) from stdin when stdin is not a terminal.
    let output = minisign(
        &[
            "-G",
            "-p",
            public.to_str().expect("utf-8"),
            "-s",
            secret.to_str().expect("utf-8"),
        ],
        "correct horse\ncorrect horse\n",
    );
    succeeded("minisign -G", &output);
    let output = minisign(
        &[
            "-S",
            "-s",
            secret.to_str().expect("utf-8"),
            "-m",
            document.to_str().expect("utf-8"),
            "-t",
            "timestamp:1764600000 serial:17 selector:cohort=pilot",
        ],
        "correct horse\n",
    );
    succeeded("minisign -S with a password", &output);
    let signature_file = read(&dir.path().join("desired.toml.minisig"));
    verify_in_edgeroll(&read(&public), DOCUMENT.as_bytes(), &signature_file);

    // The other way round: minisign's encrypted secret key signs in edgeroll.
    let output = edgeroll(
        dir.path(),
        &["sign", "desired.toml", "--key", "ms.key"],
        Some("correct horse"),
    );
    succeeded("edgeroll sign with minisign's key", &output);
    let output = minisign(
        &[
            "-V",
            "-p",
            public.to_str().expect("utf-8"),
            "-m",
            document.to_str().expect("utf-8"),
        ],
        "",
    );
    succeeded("minisign -V", &output);
    let output = edgeroll(
        dir.path(),
        &["sign", "desired.toml", "--key", "ms.key"],
        Some("wrong horse"),
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("wrong password"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
#[ignore = "needs minisign (apt-get install minisign); .ci/run installs it and runs --ignored"]
fn a_document_signed_by_edgeroll_verifies_with_minisign_and_shows_its_serial_and_selector() {
    let (dir, document) = workspace();
    let output = edgeroll(dir.path(), &["keygen", "--unencrypted"], None);
    succeeded("edgeroll keygen --unencrypted", &output);
    let before = now_secs();
    let output = edgeroll(dir.path(), &["sign", "desired.toml"], None);
    succeeded("edgeroll sign", &output);
    let after = now_secs();
    let public_file = read(&dir.path().join("edgeroll.pub"));
    let key_id = key_id_in(&public_file);
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with(&format!(
            "signed desired.toml (serial 17) with key {key_id}: wrote desired.toml.minisig\n"
        )),
        "{stdout}"
    );

    let output = minisign(
        &[
            "-V",
            "-p",
            dir.path().join("edgeroll.pub").to_str().expect("utf-8"),
            "-m",
            document.to_str().expect("utf-8"),
        ],
        "",
    );
    succeeded("minisign -V", &output);
    let shown = text(&output.stdout);
    let comment = shown
        .lines()
        .find_map(|line| line.strip_prefix("Trusted comment: "))
        .unwrap_or_else(|| panic!("minisign shows the trusted comment: {shown}"));
    let timestamp: u64 = signature::comment_field(comment, "timestamp")
        .and_then(|value| value.parse().ok())
        .expect("a timestamp");
    assert!((before..=after).contains(&timestamp), "{comment}");
    assert_eq!(
        comment,
        format!("timestamp:{timestamp} serial:17 selector:cohort=pilot")
    );
    assert!(
        stdout.contains(&format!("trusted comment: {comment}\n")),
        "{stdout}"
    );

    // The pinned base64 line works as well as the file (`minisign -P`), and edgeroll agrees.
    let base64 = public_file.lines().nth(1).expect("key line");
    let output = minisign(
        &["-V", "-P", base64, "-m", document.to_str().expect("utf-8")],
        "",
    );
    succeeded("minisign -V -P", &output);
    let signature_file = read(&dir.path().join("desired.toml.minisig"));
    verify_in_edgeroll(&public_file, DOCUMENT.as_bytes(), &signature_file);

    // A changed document no longer verifies with minisign either.
    std::fs::write(&document, DOCUMENT.replace("2.5.0", "6.6.6")).expect("write");
    let output = minisign(
        &[
            "-V",
            "-p",
            dir.path().join("edgeroll.pub").to_str().expect("utf-8"),
            "-m",
            document.to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(!output.status.success(), "a changed document verified");
}

#[test]
#[ignore = "needs minisign (apt-get install minisign); .ci/run installs it and runs --ignored"]
fn keys_from_edgeroll_keygen_sign_with_minisign() {
    let (dir, document) = workspace();
    let plain = dir.path().join("plain");
    let locked = dir.path().join("locked");
    succeeded(
        "keygen --unencrypted",
        &edgeroll(
            dir.path(),
            &["keygen", "--unencrypted", "--out", "plain"],
            None,
        ),
    );
    succeeded(
        "keygen with a password",
        &edgeroll(
            dir.path(),
            &["keygen", "--out", "locked"],
            Some("s3cret pass"),
        ),
    );
    for (keys, password) in [(&plain, ""), (&locked, "s3cret pass\n")] {
        let secret = keys.join("edgeroll.key");
        let output = minisign(
            &[
                "-S",
                "-s",
                secret.to_str().expect("utf-8"),
                "-m",
                document.to_str().expect("utf-8"),
                "-t",
                "timestamp:1764600000 serial:17",
            ],
            password,
        );
        succeeded(&format!("minisign -S with {}", secret.display()), &output);
        let output = minisign(
            &[
                "-V",
                "-p",
                keys.join("edgeroll.pub").to_str().expect("utf-8"),
                "-m",
                document.to_str().expect("utf-8"),
            ],
            "",
        );
        succeeded("minisign -V with edgeroll's .pub", &output);
        let signature_file = read(&dir.path().join("desired.toml.minisig"));
        verify_in_edgeroll(
            &read(&keys.join("edgeroll.pub")),
            DOCUMENT.as_bytes(),
            &signature_file,
        );
    }
    // The encrypted key really is encrypted: minisign refuses it with another password.
    let output = minisign(
        &[
            "-S",
            "-s",
            locked.join("edgeroll.key").to_str().expect("utf-8"),
            "-m",
            document.to_str().expect("utf-8"),
        ],
        "not it\n",
    );
    assert!(!output.status.success(), "a wrong password signed");
}

#[test]
fn keygen_never_overwrites_a_key_and_keeps_the_secret_key_private() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = edgeroll(dir.path(), &["keygen", "--out", "keys"], Some("pw"));
    succeeded("keygen", &output);
    let stdout = text(&output.stdout);
    let secret = dir.path().join("keys/edgeroll.key");
    let public_file = read(&dir.path().join("keys/edgeroll.pub"));
    let base64 = public_file.lines().nth(1).expect("key line");
    let key_id = key_id_in(&public_file);
    assert_eq!(
        stdout,
        format!(
            "secret key: keys/edgeroll.key (mode 0600, encrypted with the password; keep it \
             secret)\npublic key: keys/edgeroll.pub\nkey id:     {key_id}\n            \
             {base64}\nPin it in the [desired] section of every site's config:\n\
             trusted_keys = [\"{base64}\"]\n"
        )
    );
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&secret), 0o600);
    assert!(
        !read(&secret).contains(base64),
        "the secret key file is the secret key"
    );

    let before = read(&secret);
    let output = edgeroll(dir.path(), &["keygen", "--out", "keys"], Some("pw"));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "keys/edgeroll.key already exists; refusing to overwrite a key (use --force to replace \
         it, and pin the new public key on every site first)\n"
    );
    assert_eq!(read(&secret), before, "the key was changed");
    // Only the public key left over is refused as well: the pair must stay a pair.
    std::fs::remove_file(&secret).expect("remove");
    let output = edgeroll(dir.path(), &["keygen", "--out", "keys"], Some("pw"));
    assert_eq!(output.status.code(), Some(1));
    assert!(!secret.exists());

    let output = edgeroll(
        dir.path(),
        &["keygen", "--out", "keys", "--force", "--unencrypted"],
        None,
    );
    succeeded("keygen --force", &output);
    assert_ne!(
        key_id_in(&read(&dir.path().join("keys/edgeroll.pub"))),
        key_id
    );
    assert_eq!(mode(&secret), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn without_a_terminal_or_a_password_variable_keygen_and_sign_say_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    // `setsid` starts edgeroll in a new session, so it has no controlling terminal.
    let mut command = Command::new("setsid");
    command
        .args(["-w", env!("CARGO_BIN_EXE_edgeroll"), "keygen"])
        .current_dir(dir.path())
        .env_remove("EDGEROLL_KEY_PASSWORD");
    let output = run(command, "");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("no terminal to ask for the password")
            && stderr.contains("set EDGEROLL_KEY_PASSWORD")
            && stderr.contains("--unencrypted"),
        "{stderr}"
    );
    assert!(!dir.path().join("edgeroll.key").exists());

    let output = edgeroll(dir.path(), &["keygen"], Some(""));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("empty password"));

    succeeded("keygen", &edgeroll(dir.path(), &["keygen"], Some("pw")));
    std::fs::write(dir.path().join("desired.toml"), DOCUMENT).expect("write");
    let mut command = Command::new("setsid");
    command
        .args(["-w", env!("CARGO_BIN_EXE_edgeroll"), "sign", "desired.toml"])
        .current_dir(dir.path())
        .env_remove("EDGEROLL_KEY_PASSWORD")
        .env_remove("EDGEROLL_KEY");
    let output = run(command, "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("set EDGEROLL_KEY_PASSWORD"),
        "{}",
        text(&output.stderr)
    );
    assert!(!dir.path().join("desired.toml.minisig").exists());
}

/// Run `command` on a pseudo-terminal (`script`), answering each prompt with its password as
/// soon as it appears; returns everything the terminal showed.
fn on_a_terminal(dir: &Path, command: &str, answers: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .current_dir(dir)
        .env_remove("EDGEROLL_KEY_PASSWORD")
        .env_remove("EDGEROLL_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run script (bsdutils)");
    let mut stdout = child.stdout.take().expect("stdout");
    let (chunks, received) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(count) = stdout.read(&mut buffer) {
            if count == 0 || chunks.send(buffer[..count].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut input = child.stdin.take().expect("stdin");
    let mut shown = String::new();
    for (prompt, answer) in answers {
        while !shown.contains(prompt) {
            let chunk = received
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no prompt {prompt:?}; the terminal showed {shown:?}"));
            shown.push_str(&text(&chunk));
        }
        // What was shown so far is done with: the next prompt may repeat the same words.
        shown = shown.replacen(prompt, "<asked>", 1);
        input
            .write_all(format!("{answer}\n").as_bytes())
            .expect("type the password");
    }
    while let Ok(chunk) = received.recv_timeout(DEADLINE) {
        shown.push_str(&text(&chunk));
    }
    drop(input);
    let status = child.wait().expect("wait");
    (status.code(), shown)
}

#[test]
#[ignore = "needs minisign (apt-get install minisign); .ci/run installs it and runs --ignored"]
fn a_password_is_asked_on_the_terminal_without_echo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = env!("CARGO_BIN_EXE_edgeroll");
    let (code, shown) = on_a_terminal(
        dir.path(),
        &format!("{binary} keygen"),
        &[
            ("Password for the new secret key: ", "typed-on-a-tty"),
            ("The same password again: ", "typed-on-a-tty"),
        ],
    );
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("encrypted with the password"), "{shown}");
    assert!(
        !shown.contains("typed-on-a-tty"),
        "the password was echoed: {shown}"
    );

    std::fs::write(dir.path().join("desired.toml"), DOCUMENT).expect("write");
    let (code, shown) = on_a_terminal(
        dir.path(),
        &format!("{binary} sign desired.toml"),
        &[("Password for edgeroll.key: ", "typed-on-a-tty")],
    );
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        !shown.contains("typed-on-a-tty"),
        "the password was echoed: {shown}"
    );
    let output = minisign(
        &[
            "-V",
            "-p",
            dir.path().join("edgeroll.pub").to_str().expect("utf-8"),
            "-m",
            dir.path().join("desired.toml").to_str().expect("utf-8"),
        ],
        "",
    );
    succeeded("minisign -V", &output);

    // Ctrl-C ends the prompt (the terminal is not left without echo) and writes nothing.
    let interrupted = dir.path().join("interrupted");
    std::fs::create_dir(&interrupted).expect("mkdir");
    let (code, shown) = on_a_terminal(
        &interrupted,
        &format!("{binary} keygen"),
        &[("Password for the new secret key: ", "half\u{3}")],
    );
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("interrupted; nothing written"), "{shown}");
    assert!(!interrupted.join("edgeroll.key").exists());

    // Backspace edits the password as on any prompt.
    let edited = dir.path().join("edited");
    std::fs::create_dir(&edited).expect("mkdir");
    let (code, shown) = on_a_terminal(
        &edited,
        &format!("{binary} keygen"),
        &[
            ("Password for the new secret key: ", "pass-wordX\u{7f}"),
            ("The same password again: ", "pass-word"),
        ],
    );
    assert_eq!(code, Some(0), "{shown}");
    std::fs::write(edited.join("desired.toml"), DOCUMENT).expect("write");
    succeeded(
        "sign with the edited password",
        &edgeroll(&edited, &["sign", "desired.toml"], Some("pass-word")),
    );

    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let (code, shown) = on_a_terminal(
        &other,
        &format!("{binary} keygen"),
        &[
            ("Password for the new secret key: ", "one"),
            ("The same password again: ", "two"),
        ],
    );
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains("the two passwords differ; no key written"),
        "{shown}"
    );
    assert!(!other.join("edgeroll.key").exists());
}

#[test]
fn an_invalid_document_is_never_signed() {
    let dir = tempfile::tempdir().expect("temp dir");
    succeeded(
        "keygen",
        &edgeroll(dir.path(), &["keygen", "--unencrypted"], None),
    );
    let invalid = DOCUMENT
        .replace("serial = 17", "serial = -1")
        .replace("setWeight = 20", "setWieght = 20");
    std::fs::write(dir.path().join("desired.toml"), invalid).expect("write");
    let output = edgeroll(dir.path(), &["sign", "desired.toml"], None);
    assert_eq!(output.status.code(), Some(78));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("desired.toml:2:10: serial:"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("desired.toml:14:"), "{stdout}");
    assert!(lines[1].contains("setWieght"), "{stdout}");
    assert_eq!(
        text(&output.stderr),
        "desired.toml: not signed: the document is invalid\n"
    );
    assert!(!dir.path().join("desired.toml.minisig").exists());

    let output = edgeroll(dir.path(), &["sign", "missing.toml"], None);
    assert_eq!(output.status.code(), Some(78));
    assert!(
        text(&output.stdout).starts_with("missing.toml:1:1: cannot read desired document: "),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn the_key_comes_from_the_flag_or_the_environment() {
    let (dir, _) = workspace();
    succeeded(
        "keygen",
        &edgeroll(dir.path(), &["keygen", "--unencrypted", "--out", "k"], None),
    );
    let output = edgeroll(dir.path(), &["sign", "desired.toml"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).starts_with("cannot read the secret key edgeroll.key: "),
        "{}",
        text(&output.stderr)
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeroll"));
    command
        .args(["sign", "desired.toml"])
        .current_dir(dir.path())
        .env_remove("EDGEROLL_KEY_PASSWORD")
        .env("EDGEROLL_KEY", "k/edgeroll.key");
    succeeded("sign with EDGEROLL_KEY", &run(command, ""));
    let output = edgeroll(
        dir.path(),
        &["sign", "desired.toml", "--key", "k/edgeroll.key"],
        None,
    );
    succeeded("sign --key", &output);
    let key = TrustedKey::parse(&read(&dir.path().join("k/edgeroll.pub"))).expect("key");
    signature::verify(
        DOCUMENT.as_bytes(),
        &read(&dir.path().join("desired.toml.minisig")),
        &[key],
    )
    .expect("verifies");
}
