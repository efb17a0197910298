//! Project automation, in Rust so it runs wherever cargo does.
//!
//! `cargo xtask setup` makes a fresh machine ready; `run` and `test` call it
//! first, so each is a single command on a machine that has only rustup.

mod arch;
mod bench;
mod fuzz;
mod image;
mod kernels;
mod setup;
mod soak;
mod tasks;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "twmon's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (rust-src, musl target,
    /// bpf-linker in .tools/, Debian packages). Idempotent.
    Setup,
    /// Build twmon in release mode and run `twmon run` as root.
    Run {
        /// Arguments passed to `twmon run` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Lint (fmt, clippy for userspace and eBPF) and run every test,
    /// including the ones that need root and a real kernel, and vm-test.
    Test,
    /// Boot Debian's 5.10, 6.1 and 6.18 x86_64 kernels and its 6.1 and 6.18
    /// arm64 kernels under QEMU and run the in-guest scenarios on each.
    VmTest {
        /// Run only the scenarios whose name contains this (for working on
        /// one; `test` always runs them all).
        #[arg(long, value_name = "SCENARIO")]
        only: Option<String>,
        /// Boot only this kernel (5.10, 6.1, 6.18, 6.1-arm64 or 6.18-arm64).
        #[arg(long, value_name = "NAME")]
        kernel: Option<String>,
        /// Measure instead of test: what twmon costs a churn in the guest in
        /// each probe mode (emulated CPU), written to bench/guest.md.
        #[arg(long, conflicts_with = "only")]
        bench: bool,
    },
    /// Run every cargo-fuzz target (fuzz/) for a bounded time; a crash
    /// fails it and names the input saved under fuzz/artifacts/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Only this target (decode, diag_reply, recording, web_config,
        /// query).
        #[arg(long)]
        target: Option<String>,
    },
    /// Run twmon under a long churn with collisions, refused binds and
    /// port pressure; fail if memory grows once the table is full or the
    /// population drifts from ss (target/soak/).
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u32,
    },
    /// Build the container image (static musl twmon, FROM scratch) with
    /// Podman, as localhost/twmon:VERSION.
    Image,
    /// Measure what twmon costs the host (throughput with and without it,
    /// lost events, idle CPU and memory at 100k and 1M timewait sockets,
    /// scrape time against node_exporter and ss); writes bench/results.md.
    Bench {
        /// A short run (about a minute) that writes to target/bench/: what
        /// CI runs so the bench cannot rot.
        #[arg(long)]
        quick: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Run { args } => tasks::run(&args),
        Command::Test => tasks::test(),
        Command::Fuzz { seconds, target } => setup::run().and_then(|()| {
            let targets: Vec<&str> = match &target {
                Some(t) => vec![t.as_str()],
                None => fuzz::TARGETS.to_vec(),
            };
            fuzz::run(&targets, seconds)
        }),
        Command::Soak { minutes } => setup::run().and_then(|()| soak::soak(minutes)),
        Command::Image => setup::run().and_then(|()| image::build()).map(|_| ()),
        Command::Bench { quick } => bench::bench(quick),
        Command::VmTest {
            bench: true,
            kernel,
            ..
        } => setup::run().and_then(|()| vm::vm_bench(kernel.as_deref())),
        Command::VmTest { only, kernel, .. } => setup::run()
            .and_then(|()| vm::vm_test(only.as_deref(), kernel.as_deref()))
            .map(|v| {
                println!("vm-test: {} passed, {} failed", v.passed, v.failed);
            }),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
