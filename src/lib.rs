//! edgeroll: progressive delivery (canary, analysis gates, automatic abort) for one edge site.
//!
//! The binary in `main.rs` is a thin shell over this library, so integration tests drive the same
//! code as `edgeroll run`. `ARCHITECTURE.md` at the repository root has the code map.

#![warn(missing_docs)]

pub mod analysis;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod demo;
pub mod diag;
pub mod hub;
pub mod listen;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod pull;
pub mod report;
pub mod rollout;
pub mod runtime;
pub mod sample_app;
pub mod shell;
pub mod spec;
pub mod store;
pub mod systemd;
pub mod time;
pub mod tls;
pub mod trust;
pub mod wire;
