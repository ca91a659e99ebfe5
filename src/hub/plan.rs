//! Fleet plans: the hub moves a release from wave to wave (pilot, region, fleet) on the health
//! of the sites it can reach.
//!
//! Owns the plan files (`*.plan.toml` next to the documents), the rule that advances a plan
//! (`engine`), and the shapes the page, the CLI and the API show (`view`).

pub mod engine;
pub mod spec;
pub mod task;
pub mod view;
