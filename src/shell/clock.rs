//! The agent's one clock.
//!
//! Wall-clock time is read once, when the agent starts; after that, time advances with tokio's
//! monotonic clock. So a `Timestamp` persisted as a deadline survives a restart, an NTP step while
//! running does not stretch or cut a pause, and tests with a paused tokio clock control it fully.
//! This is the only place in edgeroll that reads the system clock.

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
    #[allow(clippy::disallowed_methods)] // The single place that reads the system clock.
    pub fn system() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock::starting_at(Timestamp::from_millis(millis))
    }

    /// A clock starting at `base` now (tests use a fixed base).
    pub fn starting_at(base: Timestamp) -> Self {
        Clock {
            base,
            started: Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.base.plus(self.started.elapsed())
    }

    /// The tokio instant at which `at` will be reached.
    pub fn instant_at(&self, at: Timestamp) -> Instant {
        Instant::now() + at.since(self.now())
    }
}
