//! `cargo xtask vm-test --bench`: what twmon costs the guest's connection
//! churn in fentry and kprobe modes, which this host cannot attach, measured
//! as `cargo xtask bench` measures tracepoint-only mode on the host: the
//! same churn (`twmon-churn`, one client thread, client closing first) in a
//! fresh namespace per run, with and without `twmon run` watching every
//! namespace, in pairs whose order alternates; the figure is the median of
//! the per-pair ratios. The CPU is emulated (QEMU TCG): the ratios compare
//! modes with each other, not with a real host.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use testkit::{Daemon, create_netns_at, run_in_netns};

use crate::util::fentry_attaches;

/// Alternating pairs per mode: as many as the host bench and issue 11's
/// goal ask for.
const PAIRS: usize = 9;
/// Seconds per churn run.
const SECONDS: &str = "3";

pub fn run(twmon: &Path, churn: &Path) {
    for mode in ["tracepoint", "fentry", "kprobe"] {
        if mode == "fentry" && !fentry_attaches() {
            println!("vmtest: bench {mode}: not measured, this kernel cannot attach fentry");
            continue;
        }
        let mut ratios = Vec::new();
        for pair in 0..PAIRS {
            let (mut with, mut without) = (0.0, 0.0);
            // Alternating order, so a drift over the series weighs on both.
            for twmon_on in [pair % 2 == 1, pair % 2 == 0] {
                let ns = PathBuf::from(format!("/run/netns/bench-{mode}-{pair}-{twmon_on}"));
                create_netns_at(&ns);
                if twmon_on {
                    let daemon = Daemon::start(twmon, &["--probes", mode]);
                    with = rate(churn, &ns);
                    daemon.terminate();
                } else {
                    without = rate(churn, &ns);
                }
                // Frees the namespace's timewait sockets (in a kernel
                // worker) before the next run.
                let _ = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(&ns);
                thread::sleep(Duration::from_secs(1));
            }
            let ratio = with / without;
            println!(
                "vmtest: bench {mode} pair {} without {without:.0} with {with:.0} ratio {ratio:.3}",
                pair + 1
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "vmtest: bench {mode} median ratio {:.3} over {PAIRS} pairs (min {:.3}, max {:.3})",
            ratios[PAIRS / 2],
            ratios[0],
            ratios[PAIRS - 1]
        );
    }
}

/// Connections per second of one churn run in namespace `ns`.
fn rate(churn: &Path, ns: &Path) -> f64 {
    let churn = churn.to_path_buf();
    // A process forked from a thread inside the namespace starts in it.
    let out = run_in_netns(ns, move || {
        Command::new(&churn)
            .args(["--threads", "1", "--seconds", SECONDS])
            .output()
            .expect("running twmon-churn")
    });
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "twmon-churn: {out:?}");
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("rate=")?.parse().ok())
        .unwrap_or_else(|| panic!("twmon-churn printed no rate: {line}"))
}
