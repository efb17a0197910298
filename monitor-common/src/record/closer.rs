//! Who closed a connection first: sent right after its ESTABLISHED ->
//! FIN_WAIT1 transition, from the closing task's context (close() or
//! shutdown()). That side is the one that will hold TIME_WAIT.

use super::{Header, Stamp, kind, wire};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closer {
    pub header: Header,
    /// The socket, as in the transition just before.
    pub skaddr: u64,
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id (its directory's
    /// inode number).
    pub cgroup: u64,
    /// Thread group id (what userspace calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The task's comm, NUL padded; whatever the process set, not UTF-8
    /// necessarily.
    pub comm: [u8; 16],
    /// The socket's ports (its addresses are in the transition).
    pub sport: u16,
    pub dport: u16,
    pub _pad: [u8; 4],
}
wire!(Closer, kind::CLOSER, 16 + 8 + 8 + 4 + 4 + 16 + 2 + 2 + 4);

impl Closer {
    pub const fn new(
        at: Stamp,
        skaddr: u64,
        pid_tgid: u64,
        cgroup: u64,
        comm: [u8; 16],
        sport: u16,
        dport: u16,
    ) -> Closer {
        Closer {
            header: Header::new(kind::CLOSER, at),
            skaddr,
            cgroup,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            comm,
            sport,
            dport,
            _pad: [0; 4],
        }
    }
}
