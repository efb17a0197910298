//! sock_diag (inet_diag) dumps: the kernel's own list of TCP sockets, the
//! same source `ss` reads. Used for the TIME_WAIT population, which no probe
//! on this kind of kernel can count exactly.

use anyhow::{Context as _, Result, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::{
    event::{Family, TcpState},
    netns::{self, Netns},
    stats::Population,
};

/// Counts TIME_WAIT sockets of both families in the calling thread's
/// namespace.
pub fn timewait_population_here() -> Result<Population> {
    let mut population = Population::default();
    let mut socket =
        Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting the netlink socket")?;
    for family in Family::ALL {
        let n = dump(&socket, family, StateFlags::TIME_WAIT, |state| {
            state == TcpState::TimeWait as u8
        })?;
        population.add(family, n);
    }
    Ok(population)
}

/// Sums TIME_WAIT populations over `namespaces`. The own namespace (which
/// discovery always lists) must succeed: a kernel without tcp_diag shows
/// up there. Others come and go at any moment (containers, `ip netns`), so
/// unless `strict`, one that cannot be entered or dumped any more is
/// skipped, not an error.
pub fn timewait_population(
    namespaces: &[Netns],
    own_inode: u32,
    strict: bool,
) -> Result<Population> {
    let mut total = Population::default();
    for ns in namespaces {
        let own = ns.inode == own_inode;
        let result = if own {
            timewait_population_here()
        } else {
            netns::run_in(ns, timewait_population_here)
        };
        match result {
            Ok(p) => {
                total.add(Family::Ipv4, p.ipv4);
                total.add(Family::Ipv6, p.ipv6);
            }
            Err(err) if !own && !strict => {
                log::debug!("skipping namespace {}: {err:#}", ns.path.display());
            }
            Err(err) => {
                return Err(err.context(format!("sock_diag dump in {}", ns.path.display())));
            }
        }
    }
    Ok(total)
}

/// errno ENOENT: what inet_diag answers when no handler for the protocol
/// is registered.
const ENOENT: i32 = 2;

/// Sends one inet_diag dump request and counts the sockets for which
/// `keep(state)` holds.
fn dump(
    socket: &Socket,
    family: Family,
    states: StateFlags,
    keep: impl Fn(u8) -> bool,
) -> Result<u64> {
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

    let mut count = 0u64;
    let mut recv_buf = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut recv_buf[..], 0)
            .context("receiving the inet_diag dump")?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&recv_buf[offset..size])
                .context("malformed inet_diag message from the kernel")?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp))
                    if keep(resp.header.state) =>
                {
                    count += 1;
                }
                NetlinkPayload::Done(_) => return Ok(count),
                NetlinkPayload::Error(err) if err.raw_code() == -ENOENT => bail!(
                    "the kernel has no TCP sock_diag handler (ENOENT): load it with \
                     `modprobe tcp_diag` (kernels built with CONFIG_INET_DIAG=m)"
                ),
                NetlinkPayload::Error(err) => {
                    return Err(err.to_io()).context("inet_diag dump refused by the kernel");
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}
