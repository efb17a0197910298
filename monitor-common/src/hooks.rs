//! The hooks twmon attaches, each a family of kernel programs that report
//! one thing. Named here once: the kernel side counts its failures by hook,
//! the daemon attaches, reports and labels metrics by it.

/// One hook. The numbers index the per-CPU error counters (see
/// [`counters`](crate::counters)), so they are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Hook {
    /// Every TCP state transition (`sock:inet_sock_set_state`).
    SetState = 0,
    /// `connect()` failing with EADDRNOTAVAIL (syscall tracepoints).
    ConnectEaddrnotavail = 1,
    /// RSTs sent by timewait sockets (`tcp:tcp_send_reset`).
    TimewaitResetSent = 2,
    /// Timewait sockets born or refused (`tcp_time_wait`, `inet_twsk_alloc`).
    TimewaitBirth = 3,
    /// Segments reaching timewait sockets (`tcp_timewait_state_process`).
    TimewaitSegments = 4,
    /// Timewait sockets dying, and why (timer, early kills).
    TimewaitDeath = 5,
    /// Timewait sockets freed by a namespace's teardown.
    TimewaitPurge = 6,
    /// `bind()` failing with EADDRINUSE (syscall tracepoints).
    BindEaddrinuse = 7,
}

impl Hook {
    /// Every hook, in the order `twmon check` lists them.
    pub const ALL: [Hook; 8] = [
        Hook::SetState,
        Hook::ConnectEaddrnotavail,
        Hook::BindEaddrinuse,
        Hook::TimewaitResetSent,
        Hook::TimewaitBirth,
        Hook::TimewaitSegments,
        Hook::TimewaitDeath,
        Hook::TimewaitPurge,
    ];
    pub const COUNT: u32 = Hook::ALL.len() as u32;

    /// The stable name: the `hook` label of every metric and the name
    /// `twmon check` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::SetState => "inet_sock_set_state",
            Hook::ConnectEaddrnotavail => "connect_eaddrnotavail",
            Hook::TimewaitResetSent => "timewait_reset_sent",
            Hook::TimewaitBirth => "timewait_birth",
            Hook::TimewaitSegments => "timewait_segments",
            Hook::TimewaitDeath => "timewait_death",
            Hook::TimewaitPurge => "timewait_purge",
            Hook::BindEaddrinuse => "bind_eaddrinuse",
        }
    }

    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }
}
