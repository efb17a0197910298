//! twmon: a live TIME_WAIT monitor for Linux hosts.
//!
//! The modules are layers; data flows one way, and a module only uses the
//! ones listed before it (docs/architecture.md walks one event through
//! them):
//!
//! - [`model`]: the vocabulary every layer shares (states, four-tuples,
//!   events, sock_diag snapshots, hooks), plain data;
//! - [`kernel`]: loading and attaching the programs of `monitor-ebpf`, with
//!   capabilities, tracefs and BTF;
//! - [`sources`]: the ring buffer and its decoding, sock_diag dumps per
//!   namespace, recordings;
//! - [`table`]: the four-tuple table and the event counters, pure logic;
//! - [`expose`]: what a scrape or an API request shows;
//! - [`web`]: the HTTP server (TLS, auth, limits) and client;
//! - [`commands`]: `run`, `check`, `record`, `replay`, `snapshot`, `top`,
//!   each wiring the layers above;
//! - [`cli`]: flags into command options, the only user of clap.

pub mod model;

pub mod kernel;

pub mod sources;

pub mod table;

pub mod expose;

pub mod web;

pub mod commands;

pub mod cli;
