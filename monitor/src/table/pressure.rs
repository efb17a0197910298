//! Ephemeral port pressure: how many of the ports connect() may pick are
//! taken toward each destination, a pure function of one snapshot.

use std::net::IpAddr;

use foldhash::{HashMap, HashSet};

use crate::model::{snapshot::NetnsSnapshot, tcp::TcpState};

/// Ephemeral ports in use toward one destination from one local address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    pub netns: u32,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// Ports taken toward it: four-tuples in any state (TIME_WAIT
    /// included), plus ports of the range held by listeners, which no
    /// connect() may use.
    pub in_use: u64,
    /// Of which in TIME_WAIT (or its FIN_WAIT2 substate).
    pub in_timewait: u64,
    /// Size of ip_local_port_range in that namespace.
    pub range: u64,
}

impl Pressure {
    pub fn ratio(&self) -> f64 {
        if self.range == 0 {
            return 0.0;
        }
        self.in_use as f64 / self.range as f64
    }
}

/// Ephemeral four-tuples per (local address, destination) in one snapshot.
///
/// A port in the range that a listener holds is lost to every destination:
/// connect()'s port search skips ports bound with bind() (their bind
/// bucket allows no reuse by connect), so those count as in use too.
pub fn pressure_of(snap: &NetnsSnapshot) -> Vec<Pressure> {
    let Some(range) = snap.knobs.port_range_size() else {
        return Vec::new();
    };
    let reserved: HashSet<u16> = snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen && snap.knobs.is_ephemeral(s.tuple.sport))
        .map(|s| s.tuple.sport)
        .collect();
    let mut groups: HashMap<(IpAddr, IpAddr, u16), (u64, u64)> = HashMap::default();
    for sock in &snap.sockets {
        let t = &sock.tuple;
        // Connections accepted on a listener's port are the server side,
        // not ports a connect() picked.
        if sock.state == TcpState::Listen
            || t.daddr.is_unspecified()
            || !snap.knobs.is_ephemeral(t.sport)
            || reserved.contains(&t.sport)
        {
            continue;
        }
        let g = groups.entry((t.saddr, t.daddr, t.dport)).or_default();
        g.0 += 1;
        if sock.timewait {
            g.1 += 1;
        }
    }
    groups
        .into_iter()
        .map(
            |((local, remote, remote_port), (in_use, in_timewait))| Pressure {
                netns: snap.netns,
                local,
                remote,
                remote_port,
                in_use: in_use + reserved.len() as u64,
                in_timewait,
                range,
            },
        )
        .collect()
}
