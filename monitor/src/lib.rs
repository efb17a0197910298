//! twmon: a live TIME_WAIT monitor for Linux hosts.
//!
//! Data flows one way: kernel programs -> ring buffer -> [`event`] decoding
//! -> [`stats`] -> [`metrics`] on scrape. [`diag`] adds the kernel's own
//! socket list (sock_diag) for what probes cannot count on every kernel.

pub mod auth;
pub mod caps;
pub mod check;
pub mod cli;
pub mod daemon;
pub mod diag;
pub mod event;
pub mod http;
pub mod kernel_btf;
pub mod metrics;
pub mod netns;
pub mod probes;
pub mod server;
pub mod stats;
pub mod tracefs;
pub mod web_config;

/// Release of the running kernel (`uname -r`), empty if unreadable.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
