//! twmon's integration tests: one binary, one module per area, sharing
//! [`util`] and `testkit`. Tests that need root and a BPF-capable kernel are
//! `#[ignore]`d for a plain `cargo test`; `cargo xtask test` runs them all.

mod util;

mod cgroups;
mod container;
mod dashboards;
mod dashboards_live;
mod deploy;
mod doctor;
mod e2e;
mod faults;
mod hazards;
mod http_server;
mod layers;
mod metrics_doc;
mod prometheus;
mod replay;
mod table_cli;
