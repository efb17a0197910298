//! Command line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::probes::ProbeMode;

/// Default listen address. 9877 is not in Prometheus's list of exporter
/// default ports taken by a well-known exporter (9100 node, 9090
/// Prometheus, 9435 ebpf_exporter).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9877";

#[derive(Parser, Debug)]
#[command(
    name = "twmon",
    version,
    about = "A live TIME_WAIT monitor for Linux hosts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the kernel probes and serve Prometheus metrics (needs root).
    Run(RunArgs),
    /// Show, for this kernel, how each hook would attach and why better
    /// methods were refused; exits non-zero if twmon cannot run at all.
    Check(CheckArgs),
    /// Run as `run` does and also write every event and snapshot to FILE,
    /// for `twmon replay` (bug reports, tests).
    Record(RecordArgs),
    /// Feed a recording through the four-tuple table and print the result,
    /// or serve it (/metrics and /api/v1) with --listen.
    Replay(ReplayArgs),
    /// Print the TIME_WAIT table of a running daemon (or, when none
    /// answers, what sock_diag shows in this namespace).
    Snapshot(SnapshotArgs),
    /// A live terminal view of a running daemon, refreshed every second.
    Top(TopArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// Where to write the recording (created or truncated).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// A file written by `twmon record`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Serve the replayed table on this address instead of printing it.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// TLS and basic auth for --listen, as for `run`.
    #[arg(
        long = "web.config.file",
        visible_alias = "web-config-file",
        value_name = "PATH"
    )]
    pub web_config_file: Option<PathBuf>,
    /// Print JSON (the /api/v1 documents) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Entries and collisions to print.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub view: ViewArgs,
}

/// How the table is shown; shared by `run` and `replay`.
#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    /// Series kept per breakdown (remote, local port, process, destination
    /// pressure): the top K by count, rebuilt at every scrape.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub top_k: u32,
    /// Keep network namespaces apart with a `netns` label (namespace
    /// inode) instead of summing them.
    #[arg(long)]
    pub netns_label: bool,
}

/// Where `snapshot` and `top` find the daemon.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// The daemon's address (http:// or https://).
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// For https://: PEM file of the CA that signed the daemon's
    /// certificate (only that CA is trusted).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Basic auth user of the daemon's web config; the password is read
    /// from the TWMON_PASSWORD environment variable.
    #[arg(long)]
    pub user: Option<String>,
}

impl TargetArgs {
    pub fn target(&self) -> crate::client::Target {
        crate::client::Target {
            url: self.url.clone(),
            ca_file: self.ca_file.clone(),
            user: self.user.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Only sockets of this network namespace (its inode, as in
    /// `ls -i /run/netns/NAME` or the `netns` label).
    #[arg(long)]
    pub netns: Option<u32>,
    /// Only sockets toward this remote address.
    #[arg(long)]
    pub remote: Option<std::net::IpAddr>,
    /// Only sockets with this local or remote port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only sockets closed by a process whose name contains this.
    #[arg(long)]
    pub process: Option<String>,
    /// Sort order.
    #[arg(long, value_enum, default_value_t = SortBy::Age)]
    pub sort: SortBy,
    /// At most this many sockets.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// Oldest first.
    Age,
    /// Least time left first.
    Left,
    Remote,
    Port,
    Process,
}

#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Refresh interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
}

/// Where `snapshot` and `top` find the daemon by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9877";

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// How to load the kernel programs; shared by `run` and `check`.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Which attach methods to use: auto picks fentry/fexit, then
    /// kprobe/kretprobe, per hook; the others force one (for tests and for
    /// kernels where one misbehaves).
    #[arg(long, value_enum, default_value_t = ProbeMode::Auto)]
    pub probes: ProbeMode,

    /// Kernel BTF to read struct offsets and signatures from, for kernels
    /// that do not expose their own (e.g. a file from BTFHub).
    #[arg(long, value_name = "PATH", default_value = crate::kernel_btf::VMLINUX_BTF)]
    pub btf: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address and port for /metrics, /healthz and /.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// TLS and basic auth for the HTTP endpoint, in the web config format
    /// Prometheus exporters share (see deploy/prometheus/web-config.example.yml).
    #[arg(
        long = "web.config.file",
        visible_alias = "web-config-file",
        value_name = "PATH"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Watch only this network namespace: a name under /run/netns, or a
    /// namespace file such as /run/netns/NAME or /proc/PID/ns/net.
    /// Default: every namespace on the host.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,

    /// How often to take the TIME_WAIT population from sock_diag
    /// (e.g. 5s, 500ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub snapshot_interval: Duration,

    /// Most timewait sockets tracked one by one; beyond, the oldest are
    /// dropped and counted (about 330 bytes each, measured: see docs/metrics.md).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub table_capacity: u64,

    /// How long after a TIME_WAIT cut short a returning four-tuple still
    /// counts as a reincarnation (default 2*MSL).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub guard_window: Duration,

    #[command(flatten)]
    pub view: ViewArgs,

    /// Ring buffer size in bytes (a power of two, at least 4096): 64 bytes
    /// per event in flight.
    #[arg(long, default_value_t = 256 * 1024, value_parser = parse_ring_bytes)]
    pub ring_buffer_bytes: u32,

    #[command(flatten)]
    pub probes: ProbeArgs,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use e.g. 5s, 500ms or 1m"))?;
    if n == 0 {
        return Err("the interval must be greater than zero".into());
    }
    Ok(Duration::from_millis(n * scale_ms))
}

pub fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!(
            "{n} is not a power of two of at least 4096 (the kernel requires a power-of-two \
             number of pages); try 262144"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").unwrap_err().contains("5s"));
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_bytes("262144"), Ok(262144));
        assert!(parse_ring_bytes("1000").is_err());
        assert!(parse_ring_bytes("2048").is_err());
        assert!(parse_ring_bytes("x").is_err());
    }

    #[test]
    fn default_listen_parses() {
        let cli = Cli::try_parse_from(["twmon", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.listen.port(), 9877);
        assert_eq!(args.probes.probes, ProbeMode::Auto);
        assert_eq!(args.snapshot_interval, Duration::from_secs(5));
        assert_eq!(args.web_config_file, None);
    }

    #[test]
    fn web_config_flag_has_the_exporter_name_and_an_alias() {
        for flag in ["--web.config.file", "--web-config-file"] {
            let cli = Cli::try_parse_from(["twmon", "run", flag, "/etc/twmon/web.yml"]).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("not run")
            };
            assert_eq!(
                args.web_config_file.as_deref(),
                Some(std::path::Path::new("/etc/twmon/web.yml"))
            );
        }
    }
}

#[cfg(test)]
mod probe_mode_tests {
    use super::*;

    #[test]
    fn probe_modes_parse() {
        let cli = Cli::try_parse_from(["twmon", "check", "--probes", "kprobe"]).unwrap();
        let Command::Check(args) = cli.command else {
            panic!("not check")
        };
        assert_eq!(args.probes.probes, ProbeMode::Kprobe);
        assert!(Cli::try_parse_from(["twmon", "run", "--probes", "uprobe"]).is_err());
    }
}
