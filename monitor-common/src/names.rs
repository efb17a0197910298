//! Names the daemon looks up in the eBPF object. The kernel side defines
//! programs by function name and maps and globals by static name, which a
//! macro cannot take from a constant; a test of the daemon parses the built
//! object and checks that every name here is in it.

/// Maps the daemon opens.
pub mod maps {
    /// The ring buffer every record travels in.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU lost records (see [`counters`](crate::counters)).
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU TCP state transitions (see [`counters`](crate::counters)).
    pub const TRANSITIONS: &str = "TRANSITIONS";
    /// Four-tuples recently closed (see [`recent`](crate::recent)).
    pub const RECENT: &str = "RECENT";
    /// The current generation of [`RECENT`].
    pub const RECENT_GEN: &str = "RECENT_GEN";
    /// Active closes in progress (see [`closing`](crate::closing)).
    pub const CLOSING: &str = "CLOSING";
    pub const ALL: &[&str] = &[EVENTS, COUNTERS, TRANSITIONS, RECENT, RECENT_GEN, CLOSING];
}

/// Load-time globals the daemon sets.
pub mod globals {
    /// `u32`: only report sockets of this network namespace inode (0 = all).
    pub const NETNS_FILTER: &str = "NETNS_FILTER";
    /// [`SockOffsets`](crate::SockOffsets): where to read socket fields.
    pub const SOCK_OFFSETS: &str = "SOCK_OFFSETS";
    /// `u64`: bytes waiting in the ring buffer before the reader is woken.
    pub const RING_WAKE_BYTES: &str = "RING_WAKE_BYTES";
    pub const ALL: &[&str] = &[NETNS_FILTER, SOCK_OFFSETS, RING_WAKE_BYTES];
}

/// Programs, by hook family (the `monitor-ebpf` module that defines them).
pub mod programs {
    // set_state
    pub const SET_STATE_BTF: &str = "inet_sock_set_state_btf";
    pub const SET_STATE_BTF_NESTED: &str = "inet_sock_set_state_btf_nested";
    pub const SET_STATE_RAW: &str = "inet_sock_set_state_raw";
    pub const SET_STATE_TP: &str = "inet_sock_set_state";
    // connect
    pub const SYS_ENTER_CONNECT: &str = "sys_enter_connect";
    pub const SYS_EXIT_CONNECT: &str = "sys_exit_connect";
    // bind
    pub const SYS_ENTER_BIND: &str = "sys_enter_bind";
    pub const SYS_EXIT_BIND: &str = "sys_exit_bind";
    // reset
    pub const TCP_SEND_RESET: &str = "tcp_send_reset";
    pub const TCP_SEND_RESET_RAW: &str = "tcp_send_reset_raw";
    // timewait: births
    pub const TCP_TIME_WAIT_FENTRY: &str = "tcp_time_wait_fentry";
    pub const TCP_TIME_WAIT_KPROBE: &str = "tcp_time_wait_kprobe";
    pub const TWSK_ALLOC_FEXIT: &str = "inet_twsk_alloc_fexit";
    pub const TWSK_ALLOC_KRETPROBE: &str = "inet_twsk_alloc_kretprobe";
    // timewait: segments
    pub const TW_PROCESS_FENTRY: &str = "tcp_timewait_state_process_fentry";
    pub const TW_PROCESS_KPROBE: &str = "tcp_timewait_state_process_kprobe";
    pub const TW_PROCESS_FEXIT3: &str = "tcp_timewait_state_process_fexit3";
    pub const TW_PROCESS_FEXIT5: &str = "tcp_timewait_state_process_fexit5";
    pub const TW_PROCESS_KRETPROBE: &str = "tcp_timewait_state_process_kretprobe";
    // death
    pub const DESCHEDULE_PUT_FENTRY: &str = "inet_twsk_deschedule_put_fentry";
    pub const DESCHEDULE_PUT_KPROBE: &str = "inet_twsk_deschedule_put_kprobe";
    pub const TW_TIMER_FENTRY: &str = "tw_timer_handler_fentry";
    pub const TW_TIMER_KPROBE: &str = "tw_timer_handler_kprobe";
    pub const HASH_CONNECT_FENTRY: &str = "inet_hash_connect_fentry";
    pub const HASH_CONNECT_FEXIT: &str = "inet_hash_connect_fexit";
    pub const HASH_CONNECT_KPROBE: &str = "inet_hash_connect_kprobe";
    pub const HASH_CONNECT_KRETPROBE: &str = "inet_hash_connect_kretprobe";
    // death: namespace purges
    pub const TWSK_PURGE_FENTRY: &str = "inet_twsk_purge_fentry";
    pub const TWSK_PURGE_FEXIT: &str = "inet_twsk_purge_fexit";
    pub const TWSK_PURGE_KPROBE: &str = "inet_twsk_purge_kprobe";
    pub const TWSK_PURGE_KRETPROBE: &str = "inet_twsk_purge_kretprobe";
    pub const TWSK_DESTRUCTOR_FENTRY: &str = "tcp_twsk_destructor_fentry";
    pub const TWSK_DESTRUCTOR_KPROBE: &str = "tcp_twsk_destructor_kprobe";

    pub const ALL: &[&str] = &[
        SET_STATE_BTF,
        SET_STATE_BTF_NESTED,
        SET_STATE_RAW,
        SET_STATE_TP,
        SYS_ENTER_CONNECT,
        SYS_EXIT_CONNECT,
        SYS_ENTER_BIND,
        SYS_EXIT_BIND,
        TCP_SEND_RESET,
        TCP_SEND_RESET_RAW,
        TCP_TIME_WAIT_FENTRY,
        TCP_TIME_WAIT_KPROBE,
        TWSK_ALLOC_FEXIT,
        TWSK_ALLOC_KRETPROBE,
        TW_PROCESS_FENTRY,
        TW_PROCESS_KPROBE,
        TW_PROCESS_FEXIT3,
        TW_PROCESS_FEXIT5,
        TW_PROCESS_KRETPROBE,
        DESCHEDULE_PUT_FENTRY,
        DESCHEDULE_PUT_KPROBE,
        TW_TIMER_FENTRY,
        TW_TIMER_KPROBE,
        HASH_CONNECT_FENTRY,
        HASH_CONNECT_FEXIT,
        HASH_CONNECT_KPROBE,
        HASH_CONNECT_KRETPROBE,
        TWSK_PURGE_FENTRY,
        TWSK_PURGE_FEXIT,
        TWSK_PURGE_KPROBE,
        TWSK_PURGE_KRETPROBE,
        TWSK_DESTRUCTOR_FENTRY,
        TWSK_DESTRUCTOR_KPROBE,
    ];
}
