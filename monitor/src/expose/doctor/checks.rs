//! The checks, one function each: a finding, or `None` when all is well.
//! Advice states its trade-off in the terms of why TIME_WAIT exists:
//! delayed segments of an old connection must not reach a new one on the
//! same four-tuple, and a lost last ACK must still be answered.

use super::{Finding, Inputs, Severity};

pub const ALL: &[fn(&Inputs) -> Option<Finding>] = &[
    port_exhaustion,
    tw_buckets,
    bind_refused,
    reuse_without_timestamps,
    server_closes_first,
    fin_timeout_misread,
    closed_by_rst,
    early_reuse,
];

/// Pressure at which a destination is reported, and called critical.
const PRESSURE_WARN: f64 = 0.7;
const PRESSURE_CRITICAL: f64 = 0.9;
/// Seconds to exhaustion called critical (as the alert).
const SOON: f64 = 600.0;

fn top_processes(i: &Inputs) -> String {
    let names: Vec<String> = i
        .by_process
        .iter()
        .take(3)
        .map(|(p, n)| format!("{p} ({n:.0})"))
        .collect();
    names.join(", ")
}

fn port_exhaustion(i: &Inputs) -> Option<Finding> {
    let failed = i.eaddrnotavail.unwrap_or(0.0);
    let pressed: Vec<_> = i
        .destinations
        .iter()
        .filter(|d| d.ratio >= PRESSURE_WARN || d.seconds_left.is_some_and(|s| s < SOON))
        .collect();
    if pressed.is_empty() && failed == 0.0 {
        return None;
    }
    let critical = failed > 0.0
        || pressed
            .iter()
            .any(|d| d.ratio >= PRESSURE_CRITICAL || d.seconds_left.is_some_and(|s| s < SOON));
    let mut evidence: Vec<String> = pressed
        .iter()
        .take(5)
        .map(|d| {
            let eta = d
                .seconds_left
                .map_or(String::new(), |s| format!("; full in {s:.0} s at this pace"));
            format!(
                "{} -> {}:{}: {:.0} % of the port range in use ({:.0} ports, {:.0} of them in TIME_WAIT){eta}",
                d.local,
                d.remote,
                d.port,
                100.0 * d.ratio,
                d.in_use,
                d.in_timewait
            )
        })
        .collect();
    if failed > 0.0 {
        evidence.push(format!(
            "{failed:.0} connect() calls failed with EADDRNOTAVAIL"
        ));
    }
    evidence.push(format!("closing first most: {}", top_processes(i)));
    Some(Finding {
        id: "port-exhaustion",
        severity: if critical {
            Severity::Critical
        } else {
            Severity::Warning
        },
        title: "Ephemeral ports toward a destination are running out".into(),
        evidence,
        advice: "Each connection a client closes first holds its four-tuple for 60 s; toward one \
                 destination only as many can be open or in TIME_WAIT as the port range has \
                 ports. Reuse connections (HTTP keep-alive, connection pools) so fewer are opened. \
                 Widen net.ipv4.ip_local_port_range, or spread over more source addresses (set \
                 IP_BIND_ADDRESS_NO_PORT before bind-then-connect so bind does not pin a port). \
                 net.ipv4.tcp_tw_reuse=1 lets outgoing connections take over a TIME_WAIT \
                 four-tuple older than a second: safe only with TCP timestamps on, which let the \
                 new connection reject the old one's delayed segments."
            .into(),
    })
}

fn tw_buckets(i: &Inputs) -> Option<Finding> {
    let max = i.max_tw_buckets.filter(|&m| m > 0.0)?;
    let overflows = i.overflows.unwrap_or(0.0);
    let share = i.population / max;
    if share < 0.8 && overflows == 0.0 {
        return None;
    }
    let mut evidence = vec![format!(
        "{:.0} timewait sockets, {:.0} % of net.ipv4.tcp_max_tw_buckets ({max:.0})",
        i.population,
        100.0 * share
    )];
    if overflows > 0.0 {
        evidence.push(format!(
            "{overflows:.0} connections closed without TIME_WAIT because the table was full"
        ));
    }
    Some(Finding {
        id: "tw-buckets",
        severity: if overflows > 0.0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        title: "TIME_WAIT is near or over tcp_max_tw_buckets".into(),
        evidence,
        advice: "Beyond tcp_max_tw_buckets the kernel closes connections without TIME_WAIT: their \
                 four-tuples are free at once, so a delayed segment of the old connection can \
                 reach a new one, and a lost last ACK is answered with an RST. Raise \
                 net.ipv4.tcp_max_tw_buckets (a timewait socket costs a few hundred bytes of \
                 kernel memory), and open fewer short connections (keep-alive, pooling)."
            .into(),
    })
}

fn bind_refused(i: &Inputs) -> Option<Finding> {
    let n = i.bind_refused_by_timewait.filter(|&n| n > 0.0)?;
    let mut evidence = vec![format!(
        "{n:.0} bind() calls refused with EADDRINUSE because a timewait socket held the port"
    )];
    for c in i
        .recent
        .iter()
        .filter(|c| c.kind == "bind_in_timewait")
        .take(5)
    {
        let who = c
            .binder
            .as_ref()
            .map_or("?".into(), |p| format!("{} (pid {})", p.comm, p.pid));
        evidence.push(format!(
            "port {} bound by {who}: {} timewait socket(s) hold it, the oldest toward {}:{}, free in {:.0} s",
            c.local_port.map_or("?".into(), |p| p.to_string()),
            c.holders.unwrap_or(0),
            c.remote_addr,
            c.remote_port,
            c.time_left_seconds.unwrap_or(0.0)
        ));
    }
    Some(Finding {
        id: "bind-refused",
        severity: Severity::Warning,
        title: "bind() refused: address already in use, held by TIME_WAIT".into(),
        evidence,
        advice: "A port whose earlier connections are in TIME_WAIT cannot be bound again by a \
                 socket without SO_REUSEADDR. Servers: set SO_REUSEADDR on the listener before \
                 bind; TIME_WAIT still protects each old four-tuple, it only lets the listener \
                 bind. Clients: do not bind a fixed source port; let connect() pick one (or set \
                 IP_BIND_ADDRESS_NO_PORT), since a fixed port's four-tuple stays in TIME_WAIT \
                 for 60 s after each close."
            .into(),
    })
}

fn reuse_without_timestamps(i: &Inputs) -> Option<Finding> {
    let reuse = i.tw_reuse.filter(|&r| r > 0.0)?;
    (i.timestamps? == 0.0).then(|| Finding {
        id: "reuse-without-timestamps",
        severity: Severity::Warning,
        title: "tcp_tw_reuse is on but TCP timestamps are off".into(),
        evidence: vec![format!(
            "net.ipv4.tcp_tw_reuse={reuse:.0}, net.ipv4.tcp_timestamps=0"
        )],
        advice:
            "The kernel lets a connect() take over a TIME_WAIT four-tuple only when timestamps \
                 show the new connection's segments are newer than the old one's, so with \
                 timestamps off tcp_tw_reuse does nothing. Turn net.ipv4.tcp_timestamps on, or \
                 do not count on reuse and reuse connections instead."
                .into(),
    })
}

/// A share of the population on one local port large enough to mean a
/// server's port (clients' TIME_WAIT spreads over ephemeral ports).
fn server_closes_first(i: &Inputs) -> Option<Finding> {
    let (port, n) = i.by_local_port.first()?;
    if *n < 100.0 || *n < 0.5 * i.population {
        return None;
    }
    Some(Finding {
        id: "server-closes-first",
        severity: Severity::Info,
        title: format!("The server on port {port} closes its connections first"),
        evidence: vec![format!(
            "{n:.0} of {:.0} timewait sockets have local port {port}",
            i.population
        )],
        advice: "The side that closes first keeps TIME_WAIT. A server closing first holds a \
                 timewait socket per client connection; that costs memory and tcp_max_tw_buckets \
                 room, not ports (its port is shared). Letting clients close first (HTTP \
                 keep-alive, the client sending the last request) moves TIME_WAIT to them. A \
                 restarting server needs SO_REUSEADDR on its listener."
            .into(),
    })
}

fn fin_timeout_misread(i: &Inputs) -> Option<Finding> {
    let t = i.fin_timeout_s?;
    (t != 60.0 && i.population > 0.0).then(|| Finding {
        id: "fin-timeout-misread",
        severity: Severity::Info,
        title: "tcp_fin_timeout does not shorten TIME_WAIT".into(),
        evidence: vec![format!("net.ipv4.tcp_fin_timeout={t:.0}")],
        advice: "TIME_WAIT lasts 60 s on Linux whatever tcp_fin_timeout says; that setting only \
                 bounds how long an orphaned FIN_WAIT2 socket waits for the peer's FIN. If it was \
                 lowered to fight TIME_WAIT, it did not; see the other findings for what does."
            .into(),
    })
}

fn closed_by_rst(i: &Inputs) -> Option<Finding> {
    let aborts = i.aborts?;
    let closes = i.active_closes.unwrap_or(0.0);
    let share = aborts / (aborts + closes).max(1.0);
    (aborts >= 100.0 && share > 0.1).then(|| Finding {
        id: "closed-by-rst",
        severity: Severity::Warning,
        title: "Many connections end with an RST instead of a FIN".into(),
        evidence: vec![format!(
            "{aborts:.0} connections went ESTABLISHED -> CLOSE (an RST sent or received), \
             against {closes:.0} closed with a FIN first"
        )],
        advice: "Closing with an RST (SO_LINGER with a zero timeout) skips TIME_WAIT: the \
                 four-tuple is free at once, so a delayed segment of the old connection can reach \
                 a new one, and a lost RST leaves the peer half-open. If it is done to avoid \
                 TIME_WAIT, reuse connections instead, or widen the port range."
            .into(),
    })
}

fn early_reuse(i: &Inputs) -> Option<Finding> {
    let reused: f64 = i
        .collisions
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "syn_in_timewait" | "connect_reuse" | "reincarnation"
            )
        })
        .map(|(_, n)| n)
        .sum();
    if reused == 0.0 {
        return None;
    }
    let mut evidence: Vec<String> = i
        .collisions
        .iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(k, n)| format!("{k}: {n:.0}"))
        .collect();
    for c in i
        .recent
        .iter()
        .filter(|c| {
            matches!(
                c.kind.as_str(),
                "syn_in_timewait" | "connect_reuse" | "reincarnation"
            )
        })
        .take(3)
    {
        evidence.push(format!(
            "{} on {}:{} -> {}:{}, {:.1} s after the previous connection",
            c.kind,
            c.local_addr.map_or("?".into(), |a| a.to_string()),
            c.local_port.map_or("?".into(), |p| p.to_string()),
            c.remote_addr,
            c.remote_port,
            c.previous_age_seconds.unwrap_or(0.0)
        ));
    }
    Some(Finding {
        id: "early-reuse",
        severity: Severity::Info,
        title: "Four-tuples were reused while (or just after) TIME_WAIT held them".into(),
        evidence,
        advice: "A new connection took a four-tuple whose previous connection was still in \
                 TIME_WAIT (a SYN into TIME_WAIT, or tcp_tw_reuse) or had it cut short. With TCP \
                 timestamps the kernel rejects the old connection's delayed segments; without, \
                 they could be taken as the new one's data. Keep timestamps on; reuse connections \
                 rather than four-tuples."
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::doctor::{diagnose, inputs::Destination};

    fn ids(i: &Inputs) -> Vec<&'static str> {
        diagnose(i).findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn a_quiet_host_has_no_findings() {
        let i = Inputs {
            population: 10.0,
            max_tw_buckets: Some(262144.0),
            tw_reuse: Some(2.0),
            timestamps: Some(1.0),
            fin_timeout_s: Some(60.0),
            overflows: Some(0.0),
            by_local_port: vec![("41000".into(), 1.0)],
            ..Inputs::default()
        };
        assert!(ids(&i).is_empty(), "{:?}", diagnose(&i));
        assert_eq!(diagnose(&i).exit_code(), 0);
    }

    #[test]
    fn each_hazard_has_its_finding_worst_first() {
        let i = Inputs {
            population: 900.0,
            max_tw_buckets: Some(1000.0),
            overflows: Some(3.0),
            tw_reuse: Some(1.0),
            timestamps: Some(0.0),
            fin_timeout_s: Some(10.0),
            eaddrnotavail: Some(0.0),
            bind_refused_by_timewait: Some(2.0),
            aborts: Some(500.0),
            active_closes: Some(100.0),
            destinations: vec![Destination {
                local: "10.0.0.1".into(),
                remote: "10.0.0.2".into(),
                port: "80".into(),
                in_use: 750.0,
                in_timewait: 700.0,
                ratio: 0.75,
                seconds_left: Some(1200.0),
            }],
            by_local_port: vec![("443".into(), 800.0)],
            collisions: vec![("syn_in_timewait".into(), 1.0)],
            ..Inputs::default()
        };
        let d = diagnose(&i);
        let found: Vec<_> = d.findings.iter().map(|f| (f.id, f.severity)).collect();
        assert_eq!(found[0], ("tw-buckets", Severity::Critical), "{found:?}");
        for id in [
            "port-exhaustion",
            "bind-refused",
            "reuse-without-timestamps",
            "server-closes-first",
            "fin-timeout-misread",
            "closed-by-rst",
            "early-reuse",
        ] {
            assert!(found.iter().any(|(f, _)| *f == id), "{id}: {found:?}");
        }
        assert_eq!(d.exit_code(), 2);
    }

    #[test]
    fn pressure_is_critical_when_full_soon_or_failing() {
        let mut d = Destination {
            local: "a".into(),
            remote: "b".into(),
            port: "1".into(),
            in_use: 10.0,
            in_timewait: 10.0,
            ratio: 0.1,
            seconds_left: Some(300.0),
        };
        let mut i = Inputs {
            destinations: vec![d.clone()],
            ..Inputs::default()
        };
        assert_eq!(
            port_exhaustion(&i).map(|f| f.severity),
            Some(Severity::Critical)
        );
        d.seconds_left = None;
        d.ratio = 0.75;
        i.destinations = vec![d];
        assert_eq!(
            port_exhaustion(&i).map(|f| f.severity),
            Some(Severity::Warning)
        );
        i.eaddrnotavail = Some(1.0);
        assert_eq!(
            port_exhaustion(&i).map(|f| f.severity),
            Some(Severity::Critical)
        );
    }
}
