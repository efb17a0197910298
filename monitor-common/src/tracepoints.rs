//! Record layouts of the classic tracepoints the programs read. The
//! programs read at these constant offsets (a fixed offset keeps them
//! simple for the verifier); the daemon checks each against the running
//! kernel's `format` file before attaching, and refuses with a clear error
//! if they ever differ.

/// `sock:inet_sock_set_state`, stable since Linux 4.16.
pub mod set_state_tp {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 36;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;

    /// (field name, offset, size) as the format file must list them.
    pub const FIELDS: &[(&str, usize, usize)] = &[
        ("skaddr", SKADDR, 8),
        ("oldstate", OLDSTATE, 4),
        ("newstate", NEWSTATE, 4),
        ("sport", SPORT, 2),
        ("dport", DPORT, 2),
        ("family", FAMILY, 2),
        ("protocol", PROTOCOL, 2),
        ("saddr", SADDR, 4),
        ("daddr", DADDR, 4),
        ("saddr_v6", SADDR_V6, 16),
        ("daddr_v6", DADDR_V6, 16),
    ];
}

/// `syscalls:sys_enter_connect` and `syscalls:sys_exit_connect`.
/// `syscalls:sys_enter_bind` / `sys_exit_bind`, the same layout on 5.10
/// to 6.18.
pub mod bind_tp {
    pub const UMYADDR: usize = 24;
    pub const RET: usize = 16;
    pub const ENTER_FIELDS: &[(&str, usize, usize)] =
        &[("fd", 16, 8), ("umyaddr", UMYADDR, 8), ("addrlen", 32, 8)];
    pub const EXIT_FIELDS: &[(&str, usize, usize)] = &[("ret", RET, 8)];
}

pub mod connect_tp {
    pub const USERVADDR: usize = 24;
    pub const RET: usize = 16;
    pub const ENTER_FIELDS: &[(&str, usize, usize)] = &[
        ("fd", 16, 8),
        ("uservaddr", USERVADDR, 8),
        ("addrlen", 32, 8),
    ];
    pub const EXIT_FIELDS: &[(&str, usize, usize)] = &[("ret", RET, 8)];
}

/// Fields of the `tcp:tcp_send_reset` record twmon reads: skaddr and state,
/// at the same place since 4.15 (6.10 added a reason and reshaped the
/// addresses); the four-tuple is read from the socket at BTF offsets.
pub mod reset_tp {
    pub const SKADDR: usize = 16;
    pub const STATE: usize = 24;
    pub const FIELDS: &[(&str, usize, usize)] = &[("skaddr", SKADDR, 8), ("state", STATE, 4)];
}
