//! The single-agent lock on the state directory.
//!
//! Owns the `agent.lock` file: an exclusive `flock` on it says "an agent is using this state
//! directory", and its content is that agent's pid, so a refused second agent can say who holds
//! it. It must never block: a held lock is an immediate, explained refusal.
//!
//! `flock` belongs to the open file description, so the kernel releases it when the holder closes
//! the file or dies (even by SIGKILL). Rust opens files with `O_CLOEXEC`, so workloads the agent
//! spawns never inherit the descriptor and can never keep the lock alive after the agent is gone.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::Error;

/// Name of the lock file inside the state directory.
pub const LOCK_FILE_NAME: &str = "agent.lock";

/// Mode of a newly created lock file (owner read/write, group read).
const LOCK_FILE_MODE: u32 = 0o640;

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct AgentLock {
    /// The locked file. Its `Drop` unlocks, and closing the descriptor would unlock anyway.
    _file: Flock<File>,
}

/// Take the exclusive lock on `state_dir`, or explain who holds it.
pub(crate) fn acquire(state_dir: &Path) -> Result<AgentLock, Error> {
    let path = state_dir.join(LOCK_FILE_NAME);
    let io_error = |action: &'static str| {
        let path = path.clone();
        move |cause: std::io::Error| Error::Io {
            action,
            path,
            cause,
        }
    };
    // The file is opened without truncation: truncating before holding the lock would erase the
    // holder's pid that a refused agent wants to report.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(LOCK_FILE_MODE)
        .open(&path)
        .map_err(io_error("open lock file"))?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            return Err(Error::Locked {
                state_dir: state_dir.to_path_buf(),
                pid: read_pid(&mut file),
            });
        }
        Err((_, errno)) => {
            return Err(Error::Io {
                action: "lock",
                path,
                cause: std::io::Error::from(errno),
            });
        }
    };
    let pid = std::process::id();
    locked
        .set_len(0)
        .and_then(|()| locked.seek(SeekFrom::Start(0)))
        .and_then(|_| locked.write_all(format!("{pid}\n").as_bytes()))
        .map_err(io_error("write pid to lock file"))?;
    Ok(AgentLock { _file: locked })
}

/// The pid written by the holder, if it has written one yet.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
