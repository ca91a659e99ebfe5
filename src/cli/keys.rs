//! `edgeroll keygen` and `edgeroll sign`: the publisher's side of signed desired documents.
//!
//! Owns the key files (where they are written, that an existing key is never overwritten without
//! `--force`, that the secret key is mode 0600), how a password is obtained
//! (`EDGEROLL_KEY_PASSWORD`, else the terminal with echo off), and writing `DOCUMENT.minisig`.
//! The minisign format itself is `wire::signature`'s; the document is checked with the very
//! parser `edgeroll validate` and the agent run (`spec::parse`), so an invalid document is never
//! signed.
//!
//! It must never sign a document it could not parse, print or log a password or a secret key,
//! or leave a half-written key or signature behind (files are written to a temporary name and
//! renamed).

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::validate::diagnostic_lines;
use super::{EXIT_FAILED, EXIT_INVALID_CONFIG, EXIT_OK};
use crate::diag::Diagnostic;
use crate::wire::signature::{self, SignedFields, SigningKey};

/// The environment variable a password is taken from, for automation and tests.
pub const PASSWORD_ENV: &str = "EDGEROLL_KEY_PASSWORD";
/// The public key file `keygen` writes.
pub const PUBLIC_KEY_FILE: &str = "edgeroll.pub";
/// The secret key file `keygen` writes (and `sign` uses by default).
pub const SECRET_KEY_FILE: &str = "edgeroll.key";
/// The longest password minisign accepts.
const MAX_PASSWORD_BYTES: usize = 1024;

/// A failure of `keygen` or `sign`, with the message for the user.
struct Failed(String);

/// `edgeroll keygen`: write `edgeroll.pub` and `edgeroll.key` into `out`. Returns the exit code.
pub(crate) fn keygen(out: &Path, unencrypted: bool, force: bool) -> u8 {
    match write_key_pair(out, unencrypted, force) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            EXIT_OK
        }
        Err(Failed(message)) => {
            eprintln!("{message}");
            EXIT_FAILED
        }
    }
}

/// Generate the pair and write both files; returns what to print.
fn write_key_pair(out: &Path, unencrypted: bool, force: bool) -> Result<Vec<String>, Failed> {
    let public_path = out.join(PUBLIC_KEY_FILE);
    let secret_path = out.join(SECRET_KEY_FILE);
    if !force {
        for path in [&secret_path, &public_path] {
            if path.exists() {
                return Err(Failed(format!(
                    "{} already exists; refusing to overwrite a key (use --force to replace it, \
                     and pin the new public key on every site first)",
                    path.display()
                )));
            }
        }
    }
    let password = if unencrypted {
        None
    } else {
        Some(new_password()?)
    };
    let encrypted = password.is_some();
    let generated = signature::generate(password)
        .map_err(|error| Failed(format!("cannot generate a key pair: {error}")))?;
    std::fs::create_dir_all(out)
        .map_err(|error| Failed(format!("cannot create {}: {error}", out.display())))?;
    write_atomically(&secret_path, generated.secret_file.as_bytes(), 0o600)?;
    write_atomically(&public_path, generated.public_file.as_bytes(), 0o644)?;
    let protection = if encrypted {
        "encrypted with the password"
    } else {
        "UNENCRYPTED"
    };
    Ok(vec![
        format!(
            "secret key: {} (mode 0600, {protection}; keep it secret)",
            secret_path.display()
        ),
        format!("public key: {}", public_path.display()),
        format!("key id:     {}", generated.key_id),
        format!("            {}", generated.public_base64),
        "Pin it in the [desired] section of every site's config:".to_owned(),
        format!("trusted_keys = [\"{}\"]", generated.public_base64),
    ])
}

/// `edgeroll sign`: validate `document`, then write `DOCUMENT.minisig` with `key`. `now_secs` is
/// the signing time (unix seconds) for the trusted comment. Returns the exit code.
pub(crate) fn sign(document: &Path, key: &Path, now_secs: u64) -> u8 {
    match sign_document(document, key, now_secs) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            EXIT_OK
        }
        Err(Refusal::Invalid(lines)) => {
            for line in lines {
                println!("{line}");
            }
            eprintln!(
                "{}: not signed: the document is invalid",
                document.display()
            );
            EXIT_INVALID_CONFIG
        }
        Err(Refusal::Failed(Failed(message))) => {
            eprintln!("{message}");
            EXIT_FAILED
        }
    }
}

/// Why `sign` did not sign.
enum Refusal {
    /// The document does not parse: its diagnostics, one `FILE:LINE:COLUMN: message` each.
    Invalid(Vec<String>),
    /// The key could not be used, or the signature not written.
    Failed(Failed),
}

impl From<Failed> for Refusal {
    fn from(failed: Failed) -> Self {
        Refusal::Failed(failed)
    }
}

/// Validate, sign and write; returns what to print.
fn sign_document(document: &Path, key: &Path, now_secs: u64) -> Result<Vec<String>, Refusal> {
    // The bytes checked are the bytes signed: the file is read once.
    let unreadable = |message: String| {
        Refusal::Invalid(diagnostic_lines(
            document,
            &[Diagnostic {
                file: document.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("cannot read desired document: {message}"),
            }],
        ))
    };
    let bytes = std::fs::read(document).map_err(|error| unreadable(error.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|error| unreadable(error.to_string()))?;
    let parsed = crate::spec::parse::parse_document(document, text)
        .map_err(|diagnostics| Refusal::Invalid(diagnostic_lines(document, &diagnostics)))?;

    let signing_key = load_signing_key(key).map_err(Failed)?;
    let expires = parsed.expires.map(|expires| expires.rfc3339());
    let comment = signature::trusted_comment(&SignedFields {
        timestamp: now_secs,
        serial: parsed.serial,
        expires: expires.as_deref(),
        selector: &parsed.selector,
    });
    let signed = signing_key
        .sign(&bytes, &comment)
        .map_err(|error| Failed(format!("cannot sign {}: {error}", document.display())))?;
    let mut signature_path = document.as_os_str().to_owned();
    signature_path.push(crate::wire::SIGNATURE_SUFFIX);
    let signature_path = PathBuf::from(signature_path);
    write_atomically(&signature_path, signed.as_bytes(), 0o644)?;
    Ok(vec![
        format!(
            "signed {} (serial {}) with key {}: wrote {}",
            document.display(),
            parsed.serial,
            signing_key.key_id,
            signature_path.display()
        ),
        format!("trusted comment: {comment}"),
    ])
}

/// Read the secret key file at `key`; an encrypted one is decrypted with the password from
/// `EDGEROLL_KEY_PASSWORD`, else asked on the terminal. The error is the message for the user.
pub(crate) fn load_signing_key(key: &Path) -> Result<SigningKey, String> {
    let key_text = std::fs::read_to_string(key).map_err(|error| {
        format!(
            "cannot read the secret key {}: {error} (make one with `edgeroll keygen`, or name it \
             with --key or EDGEROLL_KEY)",
            key.display()
        )
    })?;
    let password = if SigningKey::is_encrypted(&key_text) {
        Some(existing_password(key).map_err(|Failed(message)| message)?)
    } else {
        None
    };
    SigningKey::parse(&key_text, password)
        .map_err(|error| format!("cannot use the secret key {}: {error}", key.display()))
}

/// Write `bytes` to `path` with `mode`, through a temporary file in the same directory and a
/// rename, so that `path` is either the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failed> {
    let failed =
        |error: std::io::Error| Failed(format!("cannot write {}: {error}", path.display()));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        // The umask may have narrowed the mode; a secret key must not be wider than asked.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(error));
    }
    Ok(())
}

/// The password for a new key: `EDGEROLL_KEY_PASSWORD`, else asked twice on the terminal.
fn new_password() -> Result<String, Failed> {
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(password) => password,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Failed(format!("{PASSWORD_ENV} is not valid UTF-8")))
        }
        Err(std::env::VarError::NotPresent) => {
            let mut terminal = Terminal::open().map_err(|error| no_terminal(&error))?;
            let first = terminal.ask("Password for the new secret key: ")?;
            let second = terminal.ask("The same password again: ")?;
            if first != second {
                return Err(Failed(
                    "the two passwords differ; no key written".to_owned(),
                ));
            }
            first
        }
    };
    if password.is_empty() {
        return Err(Failed(
            "an empty password protects nothing; use --unencrypted for a key without one"
                .to_owned(),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Failed(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(password)
}

/// The password of an existing encrypted key: `EDGEROLL_KEY_PASSWORD`, else asked once.
fn existing_password(key: &Path) -> Result<String, Failed> {
    match std::env::var(PASSWORD_ENV) {
        Ok(password) => Ok(password),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Failed(format!("{PASSWORD_ENV} is not valid UTF-8")))
        }
        Err(std::env::VarError::NotPresent) => {
            let mut terminal = Terminal::open().map_err(|error| no_terminal(&error))?;
            terminal.ask(&format!("Password for {}: ", key.display()))
        }
    }
}

/// The error when there is neither a terminal to ask nor the environment variable.
fn no_terminal(error: &std::io::Error) -> Failed {
    Failed(format!(
        "the secret key is password-protected, but there is no terminal to ask for the password \
         ({error}): set {PASSWORD_ENV}, or use `edgeroll keygen --unencrypted` for automation"
    ))
}

/// The controlling terminal, for asking a password with echo off.
struct Terminal {
    file: File,
}

impl Terminal {
    /// Open `/dev/tty` (fails without a controlling terminal).
    fn open() -> std::io::Result<Terminal> {
        let file = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
        Ok(Terminal { file })
    }

    /// Print `prompt`, read one line with echo off, and restore the terminal.
    ///
    /// The terminal is put in non-canonical mode without signals while the password is typed, so
    /// Ctrl-C arrives as a byte and ends the prompt here, with the terminal restored, instead of
    /// killing edgeroll and leaving the terminal without echo. Backspace, Ctrl-U (erase the line)
    /// and Ctrl-D (end of input, on an empty line) work as in a normal prompt.
    fn ask(&mut self, prompt: &str) -> Result<String, Failed> {
        use nix::sys::termios::{
            tcgetattr, tcsetattr, LocalFlags, SetArg, SpecialCharacterIndices,
        };
        let failed = |error: String| Failed(format!("cannot read the password: {error}"));
        let saved = tcgetattr(&self.file).map_err(|error| failed(error.to_string()))?;
        let mut quiet = saved.clone();
        quiet
            .local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG);
        quiet.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        quiet.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        // Echo goes off before the prompt shows, so an answer typed at once is not echoed.
        tcsetattr(&self.file, SetArg::TCSADRAIN, &quiet)
            .map_err(|error| failed(error.to_string()))?;
        let answer = self
            .file
            .write_all(prompt.as_bytes())
            .and_then(|()| self.file.flush())
            .and_then(|()| read_answer(&mut self.file));
        let restored = tcsetattr(&self.file, SetArg::TCSADRAIN, &saved);
        let _ = self.file.write_all(b"\n");
        restored.map_err(|error| failed(error.to_string()))?;
        match answer.map_err(|error| failed(error.to_string()))? {
            Answer::Line(bytes) => String::from_utf8(bytes)
                .map_err(|_| failed("the password is not valid UTF-8".to_owned())),
            Answer::Interrupted => Err(Failed("interrupted; nothing written".to_owned())),
            Answer::End => Err(failed("end of input".to_owned())),
        }
    }
}

/// How a password prompt ended.
enum Answer {
    /// Enter, after these bytes.
    Line(Vec<u8>),
    /// Ctrl-C.
    Interrupted,
    /// Ctrl-D on an empty line, or the terminal went away.
    End,
}

/// Read a line byte by byte from a terminal in non-canonical mode, editing it as a canonical
/// terminal would.
fn read_answer(terminal: &mut impl std::io::Read) -> std::io::Result<Answer> {
    const INTERRUPT: u8 = 0x03;
    const END: u8 = 0x04;
    const BACKSPACE: u8 = 0x08;
    const KILL_LINE: u8 = 0x15;
    const DELETE: u8 = 0x7f;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if terminal.read(&mut byte)? == 0 {
            return Ok(Answer::End);
        }
        match byte[0] {
            b'\r' | b'\n' => return Ok(Answer::Line(line)),
            INTERRUPT => return Ok(Answer::Interrupted),
            END if line.is_empty() => return Ok(Answer::End),
            END => {}
            BACKSPACE | DELETE => {
                // Drop one character: its continuation bytes, then its first byte.
                while line.last().is_some_and(|last| last & 0xC0 == 0x80) {
                    line.pop();
                }
                line.pop();
            }
            KILL_LINE => line.clear(),
            other => line.push(other),
        }
        if line.len() > MAX_PASSWORD_BYTES {
            return Err(std::io::Error::other(format!(
                "longer than {MAX_PASSWORD_BYTES} bytes"
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(bytes: &[u8]) -> Answer {
        read_answer(&mut std::io::Cursor::new(bytes.to_vec())).expect("read")
    }

    #[test]
    fn a_typed_password_is_edited_as_on_a_normal_terminal() {
        assert!(matches!(typed(b"secret\n"), Answer::Line(line) if line == b"secret"));
        assert!(matches!(typed(b"secret\r"), Answer::Line(line) if line == b"secret"));
        assert!(matches!(typed(b"secrex\x7ft\n"), Answer::Line(line) if line == b"secret"));
        assert!(
            matches!(typed("sé\x08\x08secret\n".as_bytes()), Answer::Line(line) if line == b"secret")
        );
        assert!(matches!(typed(b"wrong\x15secret\n"), Answer::Line(line) if line == b"secret"));
        assert!(matches!(typed(b"\x7f\n"), Answer::Line(line) if line.is_empty()));
        assert!(matches!(typed(b"sec\x03ret\n"), Answer::Interrupted));
        assert!(matches!(typed(b"\x04"), Answer::End));
        assert!(matches!(typed(b"se\x04cret\n"), Answer::Line(line) if line == b"secret"));
        assert!(matches!(typed(b"no end"), Answer::End));
        let long = vec![b'a'; MAX_PASSWORD_BYTES + 1];
        assert!(read_answer(&mut std::io::Cursor::new(long)).is_err());
    }
}
