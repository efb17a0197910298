//! sock_diag (inet_diag) dumps: the kernel's own list of TCP sockets, the
//! same source `ss` reads. They seed the four-tuple table at start,
//! reconcile it after, give every socket for port pressure, and are how
//! births and deaths are confirmed where no probe can see them.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, Timer},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::netns::{self, Netns};
use crate::model::{
    snapshot::{DiagSocket, Knobs, NetnsSnapshot, SnapshotRound},
    tcp::{Family, FourTuple, TcpState},
};

/// Every TCP socket of the calling thread's namespace, with the knobs read
/// there. `netns` is only a label for the result.
pub fn snapshot_here(netns: u32) -> Result<NetnsSnapshot> {
    let taken_ns = monotonic_ns();
    let mut socket =
        Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting the netlink socket")?;
    let mut sockets = Vec::new();
    for family in Family::ALL {
        dump(&socket, family, StateFlags::all(), &mut sockets)?;
    }
    Ok(NetnsSnapshot {
        netns,
        taken_ns,
        sockets,
        knobs: knobs_here(),
    })
}

/// Snapshots `namespaces`. The own namespace (which discovery always
/// lists) must succeed: a kernel without tcp_diag shows up there. Others
/// come and go at any moment (containers, `ip netns`), so unless `strict`,
/// one that cannot be entered or dumped any more is skipped, not an error.
/// Which namespaces exist is the caller's to say (`SnapshotRound::existing`).
///
/// Also returns the CPU time the dumps took in the threads that entered
/// other namespaces (the caller's own it can measure itself).
pub fn snapshot_round(
    namespaces: &[Netns],
    own_inode: u32,
    strict: bool,
) -> Result<(SnapshotRound, Duration)> {
    let mut elsewhere = Duration::ZERO;
    let mut round = SnapshotRound {
        namespaces: Vec::with_capacity(namespaces.len()),
        existing: None,
    };
    for ns in namespaces {
        let own = ns.inode == own_inode;
        let inode = ns.inode;
        let result = if own {
            snapshot_here(inode)
        } else {
            netns::run_in(ns, move || {
                let start = thread_cpu();
                snapshot_here(inode).map(|snap| (snap, thread_cpu().saturating_sub(start)))
            })
            .map(|(snap, cpu)| {
                elsewhere += cpu;
                snap
            })
        };
        match result {
            Ok(snap) => round.namespaces.push(snap),
            Err(err) if !own && !strict => {
                log::debug!("skipping namespace {}: {err:#}", ns.path.display());
            }
            Err(err) => {
                return Err(err.context(format!("sock_diag dump in {}", ns.path.display())));
            }
        }
    }
    Ok((round, elsewhere))
}

/// CPU time the calling thread has used (zero where the clock is missing,
/// which only makes the snapshot schedule keep its configured interval).
pub fn thread_cpu() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or(Duration::ZERO)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`, so
/// snapshots and kernel events can be ordered against each other.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(ts.tv_nsec()).unwrap_or(0)
        }
        // Cannot fail for CLOCK_MONOTONIC on Linux.
        Err(_) => 0,
    }
}

/// The TIME_WAIT sysctls of the calling thread's namespace: /proc/sys/net
/// shows the namespace of the task that opens the file.
pub fn knobs_here() -> Knobs {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok();
    let number = |name: &str| read(name).and_then(|s| s.trim().parse::<u64>().ok());
    Knobs {
        max_tw_buckets: number("tcp_max_tw_buckets"),
        tw_reuse: number("tcp_tw_reuse"),
        port_range: read("ip_local_port_range").and_then(|s| parse_port_range(&s)),
        fin_timeout_s: number("tcp_fin_timeout"),
        timestamps: number("tcp_timestamps"),
    }
}

/// Parses ip_local_port_range ("32768\t60999").
fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// errno ENOENT: what inet_diag answers when no handler for the protocol
/// is registered.
const ENOENT: i32 = 2;

/// Where `expires` sits in a sock_diag reply: after the 16-byte netlink
/// header, in `struct inet_diag_msg` (uapi, stable) after family, state,
/// timer, retrans (1 byte each) and the 48-byte socket id. The crate's
/// parser drops it for timewait sockets, and it is their time left.
const EXPIRES_AT: usize = 16 + 4 + 48;

/// Sends one inet_diag dump request and appends the sockets it lists.
fn dump(
    socket: &Socket,
    family: Family,
    states: StateFlags,
    out: &mut Vec<DiagSocket>,
) -> Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let (af, socket_id) = match family {
        Family::Ipv4 => (AF_INET, SocketId::new_v4()),
        Family::Ipv6 => (AF_INET6, SocketId::new_v6()),
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: af,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .context("sending the inet_diag request")?;

    let mut recv_buf = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut recv_buf[..], 0)
            .context("receiving the inet_diag dump")?;
        if parse_replies(&recv_buf[..size], family, out)? {
            return Ok(());
        }
    }
}

/// Reads the netlink messages of one received buffer, appending the
/// sockets they describe; true once the dump is over. What the kernel sent
/// is read here and nowhere else, so this is what the fuzzer feeds.
pub fn parse_replies(buf: &[u8], family: Family, out: &mut Vec<DiagSocket>) -> Result<bool> {
    let mut offset = 0;
    while let Some(bytes) = buf.get(offset..).filter(|b| !b.is_empty()) {
        let (len, done) = reply(bytes, family, out)?;
        if done {
            return Ok(true);
        }
        if len == 0 {
            break;
        }
        offset += len;
    }
    Ok(false)
}

/// Reads the netlink message at the start of `bytes`, appending the socket
/// it describes; returns its length and whether the dump is over.
fn reply(bytes: &[u8], family: Family, out: &mut Vec<DiagSocket>) -> Result<(usize, bool)> {
    let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(bytes)
        .context("malformed inet_diag message from the kernel")?;
    let len = msg.header.length as usize;
    match msg.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) => {
            let h = &resp.header;
            // A state number this build does not know is a newer kernel's
            // business, not a socket twmon can place.
            if let Some(state) = TcpState::from_kernel(h.state) {
                out.push(DiagSocket {
                    family,
                    state,
                    timewait: h.timer == Some(Timer::TimeWait),
                    expires_ms: expires_ms(bytes),
                    tuple: FourTuple {
                        saddr: h.socket_id.source_address,
                        sport: h.socket_id.source_port,
                        daddr: h.socket_id.destination_address,
                        dport: h.socket_id.destination_port,
                    },
                });
            }
        }
        NetlinkPayload::Done(_) => return Ok((len, true)),
        NetlinkPayload::Error(err) if err.raw_code() == -ENOENT => bail!(
            "the kernel has no TCP sock_diag handler (ENOENT): load it with \
             `modprobe tcp_diag` (kernels built with CONFIG_INET_DIAG=m)"
        ),
        NetlinkPayload::Error(err) => {
            // Not the crate's to_io(): it negates the code, which
            // overflows on i32::MIN (found by the diag_reply fuzzer).
            let errno = i32::try_from(err.raw_code().unsigned_abs()).unwrap_or(i32::MAX);
            return Err(std::io::Error::from_raw_os_error(errno))
                .context("inet_diag dump refused by the kernel");
        }
        _ => {}
    }
    Ok((len, false))
}

/// `expires` of the reply at the start of `bytes`, read raw: the crate's
/// parser drops it for timewait sockets, and it is their time left.
fn expires_ms(bytes: &[u8]) -> u32 {
    bytes
        .get(EXPIRES_AT..EXPIRES_AT + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_message_with_any_code_is_an_error_not_a_panic() {
        // Found by the diag_reply fuzzer: NLMSG_ERROR with code i32::MIN.
        let crash: [u8; 34] = [
            0x16, 0, 0, 0, 0x02, 0, 0x7e, 0x01, 0, 0x01, 0x80, 0xff, 0x3d, 0x04, 0x10, 0x01, 0, 0,
            0, 0x80, 0xff, 0x3d, 0x04, 0x10, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x04,
        ];
        let mut out = Vec::new();
        let err = parse_replies(&crash, Family::Ipv4, &mut out).unwrap_err();
        assert!(
            format!("{err:#}").contains("refused by the kernel"),
            "{err:#}"
        );
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 1024"), Some((1024, 1024)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("1 2 3"), None);
        assert_eq!(parse_port_range("x"), None);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
