//! Every flag, as clap parses it, and its conversion into the options of
//! the command it belongs to.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use super::parse;
use crate::{
    commands::{
        doctor::DoctorOptions, replay::ReplayOptions, run::RunOptions, snapshot::SnapshotOptions,
        top::TopOptions,
    },
    expose::{View, api::Attribution},
    kernel::{LoadOptions, ProbeMode, btf::VMLINUX_BTF},
    sources::snapshots::Pace,
    table::{Filter, Order},
    web::client::{DEFAULT_URL, Target},
};

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
    /// Diagnose TIME_WAIT trouble in words: port exhaustion, a full
    /// tcp_max_tw_buckets, bind() refused by TIME_WAIT, reuse without
    /// timestamps, servers closing first, RST closes, early reuse; each with
    /// its evidence and what to do. From a running daemon, or sock_diag of
    /// this namespace. Exit status 0 healthy, 1 warnings, 2 critical.
    Doctor(DoctorArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

impl DoctorArgs {
    pub fn options(self) -> DoctorOptions {
        DoctorOptions {
            target: self.target.target(),
            json: self.json,
        }
    }
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

impl ReplayArgs {
    pub fn options(self) -> ReplayOptions {
        ReplayOptions {
            file: self.file,
            listen: self.listen,
            web_config: self.web_config_file,
            json: self.json,
            limit: self.limit,
            view: self.view.options(),
        }
    }
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

impl ViewArgs {
    fn options(&self) -> View {
        View {
            top_k: self.top_k as usize,
            netns_label: self.netns_label,
        }
    }
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
    fn target(self) -> Target {
        Target {
            url: self.url,
            ca_file: self.ca_file,
            user: self.user,
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
    pub remote: Option<IpAddr>,
    /// Only sockets with this local or remote port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only sockets closed by a process whose name contains this.
    #[arg(long)]
    pub process: Option<String>,
    /// Only sockets attributed to a cgroup whose path contains this (a
    /// service, a container id, a slice).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub cgroup: Option<String>,
    /// Only sockets attributed to this Kubernetes pod (its uid).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub pod: Option<String>,
    /// Sort order.
    #[arg(long, default_value = "age", value_parser = parse::order())]
    pub sort: Order,
    /// At most this many sockets.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl SnapshotArgs {
    pub fn options(self) -> SnapshotOptions {
        SnapshotOptions {
            target: self.target.target(),
            filter: Filter {
                remote: self.remote,
                port: self.port,
                process: self.process,
                netns: self.netns,
                cgroups: None,
            },
            attribution: Attribution {
                cgroup: self.cgroup,
                pod: self.pod,
            },
            order: self.sort,
            limit: self.limit,
            json: self.json,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Refresh interval.
    #[arg(long, default_value = "1s", value_parser = parse::duration)]
    pub interval: Duration,
}

impl TopArgs {
    pub fn options(self) -> TopOptions {
        TopOptions {
            target: self.target.target(),
            interval: self.interval,
        }
    }
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
    #[arg(long, default_value = "auto", value_parser = parse::probe_mode())]
    pub probes: ProbeMode,

    /// Kernel BTF to read struct offsets and signatures from, for kernels
    /// that do not expose their own (e.g. a file from BTFHub).
    #[arg(long, value_name = "PATH", default_value = VMLINUX_BTF)]
    pub btf: PathBuf,
}

impl ProbeArgs {
    /// Load options for `check`, which watches no namespace and reads no
    /// records (so the smallest ring the kernel takes).
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            netns_filter: None,
            ring_bytes: 4096,
            btf: self.btf.clone(),
            mode: self.probes,
        }
    }
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
    #[arg(long, default_value = "5s", value_parser = parse::duration)]
    pub snapshot_interval: Duration,

    /// Most CPU the snapshots may take, in percent of one core: a round
    /// that cost more pushes the next one further out than
    /// --snapshot-interval (a dump of a million timewait sockets costs
    /// about a second).
    #[arg(long, default_value_t = 1.0, value_parser = parse::percent)]
    pub snapshot_cpu_percent: f64,

    /// Most timewait sockets tracked one by one; beyond, the oldest are
    /// dropped and counted (about 330 bytes each, measured: see docs/metrics.md).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub table_capacity: u64,

    /// How long after a TIME_WAIT cut short a returning four-tuple still
    /// counts as a reincarnation (default 2*MSL).
    #[arg(long, default_value = "60s", value_parser = parse::duration)]
    pub guard_window: Duration,

    #[command(flatten)]
    pub view: ViewArgs,

    /// Ring buffer size in bytes (a power of two, at least 4096). The
    /// default holds about a third of a second of records at 50,000
    /// connections a second, so the daemon may be kept off a busy CPU that
    /// long without losing any (see bench/results.md).
    #[arg(long, default_value_t = 4 << 20, value_parser = parse::ring_bytes)]
    pub ring_buffer_bytes: u32,

    #[command(flatten)]
    pub probes: ProbeArgs,
}

impl RunArgs {
    pub fn options(self, record: Option<PathBuf>) -> RunOptions {
        RunOptions {
            listen: self.listen,
            web_config: self.web_config_file,
            netns: self.netns,
            snapshot_pace: Pace {
                every: self.snapshot_interval,
                budget: self.snapshot_cpu_percent / 100.0,
            },
            // At most 100 million (checked by clap): fits any usize twmon
            // runs on.
            table_capacity: usize::try_from(self.table_capacity).unwrap_or(usize::MAX),
            guard_window: self.guard_window,
            view: self.view.options(),
            ring_bytes: self.ring_buffer_bytes,
            mode: self.probes.probes,
            btf: self.probes.btf,
            record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(args).map(|cli| cli.command)
    }

    #[test]
    fn run_defaults() {
        let Ok(Command::Run(args)) = parse(&["twmon", "run"]) else {
            panic!("not run")
        };
        let opts = args.options(None);
        assert_eq!(opts.listen.port(), 9877);
        assert_eq!(opts.mode, ProbeMode::Auto);
        assert_eq!(opts.snapshot_pace.every, Duration::from_secs(5));
        assert_eq!(opts.snapshot_pace.budget, 0.01);
        assert_eq!(opts.web_config, None);
        assert_eq!(opts.view, View::default());
        assert_eq!(opts.table_capacity, 1_000_000);
        assert_eq!(opts.btf, PathBuf::from(VMLINUX_BTF));
    }

    #[test]
    fn web_config_flag_has_the_exporter_name_and_an_alias() {
        for flag in ["--web.config.file", "--web-config-file"] {
            let Ok(Command::Run(args)) = parse(&["twmon", "run", flag, "/etc/twmon/web.yml"])
            else {
                panic!("not run")
            };
            assert_eq!(
                args.options(None).web_config.as_deref(),
                Some(std::path::Path::new("/etc/twmon/web.yml"))
            );
        }
    }

    #[test]
    fn probe_modes_parse_into_the_kernel_type() {
        let Ok(Command::Check(args)) = parse(&["twmon", "check", "--probes", "kprobe"]) else {
            panic!("not check")
        };
        assert_eq!(args.probes.options().mode, ProbeMode::Kprobe);
        let err = parse(&["twmon", "run", "--probes", "uprobe"]).unwrap_err();
        assert!(err.to_string().contains("tracepoint"), "{err}");
    }

    #[test]
    fn sort_orders_parse_into_the_table_type() {
        let Ok(Command::Snapshot(args)) = parse(&["twmon", "snapshot", "--sort", "left"]) else {
            panic!("not snapshot")
        };
        assert_eq!(args.options().order, Order::Left);
        let Ok(Command::Snapshot(args)) = parse(&["twmon", "snapshot"]) else {
            panic!("not snapshot")
        };
        assert_eq!(args.options().order, Order::Age);
        let err = parse(&["twmon", "snapshot", "--sort", "newest"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("newest") && text.contains("process"),
            "{text}"
        );
    }

    #[test]
    fn snapshot_filters_become_a_table_filter() {
        let args = [
            "twmon",
            "snapshot",
            "--remote",
            "10.0.0.2",
            "--port",
            "443",
            "--process",
            "curl",
            "--netns",
            "7",
            "--limit",
            "5",
            "--pod",
            "4f1c",
        ];
        let Ok(Command::Snapshot(args)) = parse(&args) else {
            panic!("not snapshot")
        };
        let opts = args.options();
        assert_eq!(
            opts.filter,
            Filter {
                remote: Some("10.0.0.2".parse().unwrap()),
                port: Some(443),
                process: Some("curl".into()),
                netns: Some(7),
                cgroups: None,
            }
        );
        assert_eq!(opts.attribution.pod.as_deref(), Some("4f1c"));
        assert_eq!((opts.limit, opts.json), (5, false));
        assert_eq!(opts.target.url, DEFAULT_URL);
    }

    #[test]
    fn out_of_range_values_name_what_is_allowed() {
        let err = parse(&["twmon", "run", "--top-k", "0"]).unwrap_err();
        assert!(err.to_string().contains("1..=10000"), "{err}");
        let err = parse(&["twmon", "run", "--table-capacity", "0"]).unwrap_err();
        assert!(err.to_string().contains("100000000"), "{err}");
    }
}
