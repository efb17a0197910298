//! Segments of a finished connection sent again into its TIME_WAIT: what
//! TIME_WAIT exists for, made to happen on purpose. A packet socket on
//! `lo` records the connection's frames and later injects copies, which
//! loopback delivers as received:
//! - the server's FIN again, as when our last ACK was lost and the peer
//!   retransmits it (TIME_WAIT re-ACKs it and re-arms its timer);
//! - the server's earlier data segment again, a delayed duplicate of the
//!   old connection (TIME_WAIT absorbs it; its timestamp is older than the
//!   FIN's, so PAWS rejects it and the kernel counts TcpExt.PAWSTimewait, or
//!   PAWSEstab before Linux 6.14).

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    thread,
    time::Duration,
};

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const ETH_HLEN: usize = 14;
const PACKET_OUTGOING: u8 = 4;
const FIN: u8 = 0x01;

/// What was sent again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub fins: u32,
    pub duplicates: u32,
}

/// Runs the connection and the replays; call inside the namespace under
/// test, as root. Panics if a frame it needs was not seen.
pub fn segments_into_timewait() -> Replayed {
    // A frame injected on lo has no route attached as locally sent ones
    // do, so routing sees 127.0.0.1 arriving from outside: allow that
    // (route_localnet, accept_local). The server is gone when the copies
    // arrive and answers TIME_WAIT's ACKs with RSTs; rfc1337 keeps those
    // from killing the TIME_WAIT socket before the second copy.
    for (knob, value) in [
        ("conf/all/route_localnet", "1"),
        ("conf/lo/route_localnet", "1"),
        ("conf/all/accept_local", "1"),
        ("conf/lo/accept_local", "1"),
        ("tcp_rfc1337", "1"),
    ] {
        std::fs::write(format!("/proc/sys/net/ipv4/{knob}"), value)
            .unwrap_or_else(|e| panic!("setting net.ipv4.{knob}: {e}"));
    }
    let packets = PacketSocket::on_lo();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect(("127.0.0.1", server_port)).expect("connect");
    let client_port = client.local_addr().expect("addr").port();
    let (mut server, _) = listener.accept().expect("accept");
    let mut buf = [0u8; 16];
    server.write_all(b"y").expect("server data");
    assert_eq!(client.read(&mut buf).expect("client read"), 1);
    // Timestamps tick in milliseconds: the data must be older than the FIN
    // for PAWS to call its copy old.
    thread::sleep(Duration::from_millis(20));
    drop(client); // the client closes first and will hold TIME_WAIT
    while server.read(&mut buf).expect("server read") > 0 {}
    drop(server);
    crate::wait_until("the client in TIME_WAIT", || {
        client_in_timewait(client_port, server_port)
    });

    let frames = packets.drain();
    let from_server = |f: &&Vec<u8>| tcp_ports(f) == Some((server_port, client_port));
    let fin = frames
        .iter()
        .filter(from_server)
        .find(|f| tcp_flags(f).is_some_and(|fl| fl & FIN != 0))
        .expect("the server's FIN was captured");
    let data = frames
        .iter()
        .filter(from_server)
        .find(|f| tcp_payload(f) == Some(b"y".as_slice()))
        .expect("the server's data segment was captured");
    let mut replayed = Replayed::default();
    packets.inject(fin);
    replayed.fins += 1;
    packets.inject(data);
    replayed.duplicates += 1;
    crate::wait_until("the copies processed", || {
        client_in_timewait(client_port, server_port)
    });
    replayed
}

/// True when /proc/net/tcp lists 127.0.0.1:client -> :server in TIME_WAIT.
fn client_in_timewait(client: u16, server: u16) -> bool {
    let want = (
        format!("0100007F:{client:04X}"),
        format!("0100007F:{server:04X}"),
    );
    crate::proc_tcp::sockets(&crate::proc_tcp::read("tcp"))
        .any(|s| s.local == want.0 && s.remote == want.1 && s.state == "06")
}

/// An AF_PACKET socket bound to `lo`.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn on_lo() -> PacketSocket {
        // SAFETY: plain syscalls with valid arguments; the fd is owned
        // right away, and sockaddr_ll is fully initialised before use.
        unsafe {
            let raw = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_ALL.to_be()),
            );
            assert!(
                raw >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(raw);
            let ifindex = libc::if_nametoindex(c"lo".as_ptr()) as i32;
            assert!(ifindex > 0, "no lo");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_ALL.to_be();
            addr.sll_ifindex = ifindex;
            let rc = libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            PacketSocket { fd, ifindex }
        }
    }

    /// Every frame `lo` sent so far (each is seen once sent and once
    /// received; the sent copy is kept).
    fn drain(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        loop {
            let mut buf = vec![0u8; 65536];
            // SAFETY: as above; recvfrom writes at most buf.len() bytes
            // and at most `len` bytes of address.
            let (n, pkttype) = unsafe {
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut addr as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                );
                (n, addr.sll_pkttype)
            };
            if n < 0 {
                return frames;
            }
            if pkttype == PACKET_OUTGOING {
                buf.truncate(n as usize);
                frames.push(buf);
            }
        }
    }

    /// Sends `frame` (Ethernet, IPv4, TCP) out on `lo`, which hands it
    /// back to the stack as received. The captured checksum may be the
    /// partial one of checksum offload, so it is computed afresh.
    fn inject(&self, frame: &[u8]) {
        let mut frame = frame.to_vec();
        fix_tcp_checksum(&mut frame);
        // SAFETY: as above.
        let sent = unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_IP.to_be();
            addr.sll_ifindex = self.ifindex;
            addr.sll_halen = 6;
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            sent,
            frame.len() as isize,
            "injecting: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// (IP header offset, TCP header offset) of an Ethernet/IPv4/TCP frame.
fn offsets(frame: &[u8]) -> Option<(usize, usize)> {
    if frame.len() < ETH_HLEN + 20 || frame[12..14] != ETH_P_IP.to_be_bytes() {
        return None;
    }
    let ip = ETH_HLEN;
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    (frame[ip + 9] == 6 && frame.len() >= ip + ihl + 20).then_some((ip, ip + ihl))
}

fn tcp_ports(frame: &[u8]) -> Option<(u16, u16)> {
    let (_, tcp) = offsets(frame)?;
    Some((
        u16::from_be_bytes([frame[tcp], frame[tcp + 1]]),
        u16::from_be_bytes([frame[tcp + 2], frame[tcp + 3]]),
    ))
}

fn tcp_flags(frame: &[u8]) -> Option<u8> {
    let (_, tcp) = offsets(frame)?;
    Some(frame[tcp + 13])
}

fn tcp_payload(frame: &[u8]) -> Option<&[u8]> {
    let (ip, tcp) = offsets(frame)?;
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    let data = tcp + usize::from(frame[tcp + 12] >> 4) * 4;
    frame.get(data..ip + total)
}

/// Recomputes the TCP checksum over the pseudo-header and segment.
fn fix_tcp_checksum(frame: &mut [u8]) {
    let Some((ip, tcp)) = offsets(frame) else {
        return;
    };
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    let end = ip + total;
    frame[tcp + 16] = 0;
    frame[tcp + 17] = 0;
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
        }
    };
    add(&frame[ip + 12..ip + 20]); // source and destination addresses
    add(&[0, 6]);
    add(&((end - tcp) as u16).to_be_bytes());
    add(&frame[tcp..end]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let check = !(sum as u16);
    frame[tcp + 16..tcp + 18].copy_from_slice(&check.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel takes the copies as TIME_WAIT's business: the duplicate
    /// is rejected by PAWS in TIME_WAIT, exactly once (counted as
    /// PAWSTimewait since 6.14; this host is newer).
    #[test]
    #[ignore = "needs root: run `cargo xtask test`"]
    fn copies_reach_the_timewait_socket() {
        crate::require_root();
        let ns = crate::TestNetns::new("replay");
        let before = ns.netstat();
        let replayed = ns.run_inside(segments_into_timewait);
        assert_eq!(
            replayed,
            Replayed {
                fins: 1,
                duplicates: 1
            }
        );
        crate::wait_until("PAWSTimewait counted", || {
            let after = ns.netstat();
            let paws = |m: &std::collections::BTreeMap<String, u64>| {
                m.get("TcpExt.PAWSTimewait").copied().unwrap_or(0)
            };
            paws(&after) == paws(&before) + 1
        });
    }

    #[test]
    fn checksum_of_a_known_segment() {
        // 127.0.0.1:1 -> 127.0.0.1:2, SYN, no options; checksum worked out
        // by hand: pseudo-header + header words, folded, inverted.
        let mut frame = vec![0u8; ETH_HLEN];
        frame[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let ip = [
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        let tcp = [
            0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0xaa, 0xaa, 0, 0,
        ];
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        fix_tcp_checksum(&mut frame);
        let at = ETH_HLEN + 20 + 16;
        // words: 7f00 0001 7f00 0001 | 0006 0014 | 0001 0002 0000 0000 0000
        //        0000 5002 ffff (0000) 0000 -> sum 0x24e20 -> 0x4e22 -> !0x4e22
        assert_eq!(u16::from_be_bytes([frame[at], frame[at + 1]]), !0x4e22u16);
        assert_eq!(tcp_ports(&frame), Some((1, 2)));
        assert_eq!(tcp_flags(&frame), Some(0x02));
        assert_eq!(tcp_payload(&frame), Some(&[][..]));
    }
}
