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
}

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
