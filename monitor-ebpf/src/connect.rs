//! `connect()` failing with EADDRNOTAVAIL: the kernel found no free local
//! port, i.e. no unused four-tuple toward that destination. Seen through
//! the syscall tracepoints, which exist even on kernels without kprobes;
//! the caller's sockaddr is kept and read as `syscall` says.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use monitor_common::{hooks::Hook, record::ConnectFailure, tracepoints::connect_tp};

use crate::{
    common::{Outcome, emit, finish},
    syscall,
};

const HOOK: Hook = Hook::ConnectEaddrnotavail;
const EADDRNOTAVAIL: i64 = 99;

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    finish(HOOK, syscall::enter(&ctx, connect_tp::USERVADDR));
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    finish(HOOK, exit(&ctx));
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> Outcome {
    match syscall::failed(ctx, connect_tp::RET, EADDRNOTAVAIL)? {
        Some(f) => emit(ConnectFailure::new(f.at, f.process, f.addr, f.port)),
        None => Ok(()),
    }
}
