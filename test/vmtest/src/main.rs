//! Scenarios that run inside the QEMU guest booted by `cargo xtask vm-test`
//! (PID 1 is a busybox script; this binary is static, built for musl).
//!
//! Each scenario runs the real daemon against the guest's real kernel, in a
//! network namespace of its own, once per probe mode, and checks exact
//! numbers against the kernel's own view (/proc/net/tcp*, /proc/net/netstat).
//! Output is one line per scenario and mode,
//! `vmtest: PASS|FAIL <scenario> [<mode>]`, then `vmtest: N passed, M failed`,
//! which the host parses.

mod bench;
mod check;
mod connect;
mod death;
mod reset;
mod set_state;
mod timewait;
mod util;

use std::{panic, path::PathBuf, time::Instant};

use testkit::create_netns_at;
use util::Ctx;

type Scenario = fn(&Ctx);

const SCENARIOS: &[(&str, Scenario, &[&str])] = &[
    (
        "client_close_transitions",
        set_state::client_close_transitions,
        &["tracepoint", "fentry", "kprobe"],
    ),
    (
        "timewait_births",
        timewait::timewait_births,
        &["fentry", "kprobe"],
    ),
    (
        "timewait_overflow",
        timewait::timewait_overflow,
        &["fentry", "kprobe"],
    ),
    (
        "syn_in_timewait",
        death::syn_in_timewait,
        &["fentry", "kprobe"],
    ),
    (
        "timewait_expiry",
        death::timewait_expiry,
        &["fentry", "kprobe"],
    ),
    ("connect_reuse", death::connect_reuse, &["fentry", "kprobe"]),
    (
        "bound_port_reuse",
        death::bound_port_reuse,
        &["fentry", "kprobe"],
    ),
    (
        "segments_replayed",
        timewait::segments_replayed,
        &["fentry", "kprobe"],
    ),
    ("netns_deleted", death::netns_deleted, &["fentry", "kprobe"]),
    // A tracepoint hook whatever the mode; once is enough, in the mode
    // every kernel has.
    ("resets_sent", reset::resets_sent, &["tracepoint"]),
    (
        "port_exhaustion",
        connect::port_exhaustion,
        &["tracepoint", "fentry", "kprobe"],
    ),
    (
        "check_prefers_fentry",
        check::check_prefers_fentry,
        &["auto"],
    ),
];

fn main() {
    let twmon = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/twmon"));
    println!("vmtest: kernel {}", monitor::kernel::host::kernel_release());
    // Set by `cargo xtask vm-test --bench`: measure instead of test.
    if std::env::var_os("TWMON_VMTEST_BENCH").is_some() {
        let churn = twmon.with_file_name("twmon-churn");
        bench::run(&twmon, &churn);
        println!("vmtest: bench done");
        return;
    }

    // Set by `cargo xtask vm-test --only` through the kernel command line.
    let only = std::env::var("TWMON_VMTEST_ONLY").ok();
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario, modes) in SCENARIOS {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        for mode in *modes {
            let netns = PathBuf::from(format!("/run/netns/{name}-{mode}"));
            create_netns_at(&netns);
            let ctx = Ctx {
                twmon: twmon.clone(),
                mode,
                netns,
            };
            // Where fentry cannot attach, each fentry run checks the refusal
            // instead, so that mode is neither skipped nor passed vacuously.
            let (scenario, label) = if *mode == "fentry" && !util::fentry_attaches() {
                (check::fentry_refused as Scenario, "fentry refused")
            } else {
                (*scenario, *mode)
            };
            let started = Instant::now();
            match panic::catch_unwind(panic::AssertUnwindSafe(|| scenario(&ctx))) {
                Ok(()) => {
                    passed += 1;
                    println!("vmtest: PASS {name} [{label}] {:.1?}", started.elapsed());
                }
                Err(err) => {
                    failed += 1;
                    let msg = err
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    println!(
                        "vmtest: FAIL {name} [{label}]: {}",
                        msg.replace('\n', " | ")
                    );
                }
            }
        }
    }
    println!("vmtest: {passed} passed, {failed} failed");
}
