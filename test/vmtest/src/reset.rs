//! Scenarios of `reset`: RSTs sent from TIME_WAIT.

use testkit::{sample, tcp_counters_here};

use crate::util::*;

/// RSTs sent from TIME_WAIT (late data into orphaned FIN_WAIT2 timewait
/// sockets, one RST each). Since 6.10 `tcp:tcp_send_reset` sees them and
/// the count must be exact, within the kernel's Tcp.OutRsts. Before, the
/// tracepoint is not reached for timewait sockets (its record has no
/// reason field yet), so the hook must say so instead of exporting a zero
/// that reads as "none sent".
pub fn resets_sent(ctx: &Ctx) {
    const SENT: u64 = 10;
    let daemon = ctx.start(&[]);
    let text = daemon.metrics();
    let attached = |method: &str| {
        let labels = format!(r#"hook="timewait_reset_sent",method="{method}""#);
        sample(&text, "twmon_probe_attached", &labels)
    };
    if kernel_at_least(6, 10) {
        assert_eq!(attached("raw_tracepoint"), Some(1.0), "{text}");
        let before = ctx.inside(tcp_counters_here);
        ctx.inside(|| testkit::late_data_into_fin_wait2(SENT));
        let count = |t: &str| sample(t, "twmon_timewait_resets_sent_total", "").unwrap_or(0.0);
        let text = daemon.wait_for("every RST counted", |t| count(t) >= SENT as f64);
        assert_eq!(count(&text), SENT as f64, "{text}");
        let after = ctx.inside(tcp_counters_here);
        let out_rsts = counter_delta(&before, &after, "Tcp.OutRsts");
        assert!(out_rsts >= SENT, "Tcp.OutRsts +{out_rsts}");
        println!("vmtest: info {SENT} RSTs sent from TIME_WAIT counted, Tcp.OutRsts +{out_rsts}");
    } else {
        assert_eq!(attached("none"), Some(0.0), "{text}");
        ctx.inside(|| testkit::late_data_into_fin_wait2(SENT));
        let text = daemon.metrics();
        assert!(!text.contains("twmon_timewait_resets_sent_total"), "{text}");
    }
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status}");
}
