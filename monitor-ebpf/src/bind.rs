//! `bind()` failing with EADDRINUSE: the address and port asked for are
//! held. The daemon's table tells whether a timewait socket holds them
//! (the oldest TIME_WAIT symptom: a restarted server, or a client binding
//! its old source port) or a live socket does. Seen through the syscall
//! tracepoints, in every probe mode; the caller's sockaddr is kept and read
//! as `syscall` says.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use monitor_common::{hooks::Hook, record::BindRefused, tracepoints::bind_tp};

use crate::{
    common::{Outcome, emit, finish},
    syscall,
};

const HOOK: Hook = Hook::BindEaddrinuse;
const EADDRINUSE: i64 = 98;

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    finish(HOOK, syscall::enter(&ctx, bind_tp::UMYADDR));
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    finish(HOOK, exit(&ctx));
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> Outcome {
    match syscall::failed(ctx, bind_tp::RET, EADDRINUSE)? {
        Some(f) => emit(BindRefused::new(f.at, f.process, f.addr, f.port)),
        None => Ok(()),
    }
}
