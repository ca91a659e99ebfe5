//! The hub's one clock.
//!
//! The hub is a separate program that must not reach into the agent's shell, so it has its own
//! clock, built like `shell::clock`: wall-clock time is read once at start, then advances with
//! tokio's monotonic clock. This is the only place in the hub that reads the system clock;
//! everything else is handed `now`.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::time::Timestamp;

/// Wall-clock time that advances with tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Timestamp,
    started: Instant,
}

impl Clock {
    /// A clock starting at the system's current time.
    #[allow(clippy::disallowed_methods)] // The hub's single place that reads the system clock.
    pub fn system() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            base: Timestamp::from_millis(millis),
            started: Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.base.plus(self.started.elapsed())
    }
}
