//! `sock:inet_sock_set_state`: every TCP state transition, both ends, both
//! families, in two flavours.
//!
//! Every transition is counted here, in a per-CPU array; records go to
//! userspace only for what the four-tuple table needs: a new connection
//! (SYN_SENT/SYN_RECV -> ESTABLISHED, for collisions) and, where no birth
//! hook runs, an active close reaching CLOSE (a timewait socket was born),
//! with its closer joined from `closing`.
//!
//! The raw tracepoint is preferred: the classic one runs under the global
//! per-CPU `bpf_prog_active` guard, so while any kprobe or classic
//! tracepoint program runs on a CPU, a transition made by a softirq that
//! interrupts it is dropped, and kernels before 6.7 do not even count the
//! drop. Raw tracepoints only guard against their own program's recursion
//! (and count it). The classic tracepoint remains for kernels where the
//! socket fields cannot be resolved from BTF; it works on every kernel
//! since 4.16.

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use monitor_common::{
    SockOffsets,
    counters::reason,
    hooks::Hook,
    recent::hash,
    record::{Closed, StateChange, Tuple},
    tcp::{IPPROTO_TCP, family, state},
    tracepoints::set_state_tp as off,
};

use crate::{
    closing::{self, Ended},
    common::{
        Direct, Kmem, Outcome, Probe, count, count_transition, emit, filtering, finish,
        netns_wanted, netns_with, offsets, read, sk_protocol, stamp, tuple_with,
    },
    nested, recent,
};

const HOOK: Hook = Hook::SetState;

/// The cheapest flavour: BTF types the socket pointer, so its fields are
/// read with direct loads (see `Kmem`).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> u32 {
    let args = btf_args(&ctx);
    if let Ok(addr) = args.addr {
        nested::started(addr, nested::run_id(addr, args.old, args.new));
    }
    btf_set_state(args);
    0
}

/// The same, for the runs the kernel skips in the first (see `nested`).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf_nested(ctx: BtfTracePointContext) -> u32 {
    let args = btf_args(&ctx);
    if let Ok(addr) = args.addr
        && nested::skipped(addr, nested::run_id(addr, args.old, args.new))
    {
        count(HOOK, reason::RECOVERED);
        btf_set_state(args);
    }
    0
}

struct BtfArgs {
    /// The socket, typed: fields are read through it.
    sk: u64,
    /// The socket's address as a plain number. The verifier allows only
    /// loads through a typed pointer, no hashing or storing it, so this
    /// comes from a copy of the argument.
    addr: Result<u64, u32>,
    old: u8,
    new: u8,
}

#[inline(always)]
fn btf_args(ctx: &BtfTracePointContext) -> BtfArgs {
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    BtfArgs {
        sk: ctx.arg(0),
        addr: Probe::load::<u64>(ctx.as_ptr() as u64),
        old: old as u8,
        new: new as u8,
    }
}

#[inline(always)]
fn btf_set_state(a: BtfArgs) {
    let outcome = match a.addr {
        Ok(addr) => raw_set_state::<Direct>(a.sk, addr, a.old, a.new),
        Err(why) => Err(why),
    };
    finish(HOOK, outcome);
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let old_state: i32 = ctx.arg(1);
    let new_state: i32 = ctx.arg(2);
    finish(
        HOOK,
        raw_set_state::<Probe>(sk, sk, old_state as u8, new_state as u8),
    );
    0
}

/// What a transition means to the table, beyond being counted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interest {
    /// Counted only.
    None,
    /// An active close begins: remember who closes.
    Begin,
    /// An active close reached CLOSE: a timewait socket was born.
    Closed,
    /// Aborted (RST, timeout) before the peer acknowledged our FIN: no
    /// timewait socket will follow.
    Aborted,
    /// A new connection, for collisions.
    Established,
}

#[inline(always)]
fn interest(old: u8, new: u8) -> Interest {
    match (old, new) {
        (state::ESTABLISHED, state::FIN_WAIT1) => Interest::Begin,
        (state::FIN_WAIT2 | state::CLOSING, state::CLOSE) => Interest::Closed,
        (state::FIN_WAIT1, state::CLOSE) => Interest::Aborted,
        (state::SYN_SENT | state::SYN_RECV, state::ESTABLISHED) => Interest::Established,
        _ => Interest::None,
    }
}

/// The namespace of a socket, as far as a transition needs it: its inode
/// number is read up front only under a namespace filter, otherwise only
/// for a record (see `netns_with` for why).
struct Namespace {
    /// 0 when not read yet.
    inum: u32,
}

impl Namespace {
    #[inline(always)]
    fn of<M: Kmem>(o: &SockOffsets, sk: u64) -> Namespace {
        let inum = if filtering() {
            netns_with::<M>(HOOK, o, sk)
        } else {
            0
        };
        Namespace { inum }
    }

    /// The inode number, for a record.
    #[inline(always)]
    fn inum<M: Kmem>(&self, o: &SockOffsets, sk: u64) -> u32 {
        match self.inum {
            0 => netns_with::<M>(HOOK, o, sk),
            inum => inum,
        }
    }
}

/// `sk` is what the fields are read through, `addr` the socket's address
/// as a plain number (the same value; see `inet_sock_set_state_btf`).
#[inline(always)]
fn raw_set_state<M: Kmem>(sk: u64, addr: u64, old: u8, new: u8) -> Outcome {
    let o = offsets();
    if sk_protocol::<M>(&o, sk)? != IPPROTO_TCP {
        return Ok(());
    }
    let interest = interest(old, new);
    let ns = Namespace::of::<M>(&o, sk);
    if !netns_wanted(ns.inum) {
        return Ok(());
    }
    count_transition(old, new);
    match interest {
        Interest::None => Ok(()),
        Interest::Begin => {
            begin(addr, &tuple_with::<M>(&o, sk)?.1);
            Ok(())
        }
        Interest::Aborted => {
            closing::end(addr);
            Ok(())
        }
        Interest::Closed => match closing::end(addr) {
            Ended::Claimed => Ok(()),
            Ended::Open(process) => {
                let (fam, tuple) = closing_tuple(&o, addr, tuple_with::<M>(&o, sk)?);
                let at = stamp(ns.inum::<M>(&o, sk), fam);
                emit(Closed::new(at, addr, process, tuple, old))
            }
        },
        Interest::Established => {
            let (fam, tuple) = tuple_with::<M>(&o, sk)?;
            established::<M>(&o, &ns, (sk, addr), fam, tuple, (old, new))
        }
    }
}

/// An active close begins: who closes, and that its four-tuple may soon
/// collide.
#[inline(always)]
fn begin(sk: u64, tuple: &Tuple) {
    let h = hash(tuple);
    closing::begin(sk, h);
    recent::remember(h);
}

/// A new connection: reported only when its four-tuple began a close lately
/// (see `recent`), since only then can it collide with a timewait socket.
/// `(sk, addr)` as for [`raw_set_state`].
#[inline(always)]
fn established<M: Kmem>(
    o: &SockOffsets,
    ns: &Namespace,
    (sk, addr): (u64, u64),
    fam: u8,
    tuple: Tuple,
    (old, new): (u8, u8),
) -> Outcome {
    if !recent::recalls(&tuple) {
        return Ok(());
    }
    let at = stamp(ns.inum::<M>(o, sk), fam);
    emit(StateChange::new(at, addr, tuple, old, new))
}

/// The four-tuple of a closing socket as it reports CLOSE: the kernel has
/// released the port from `skc_num` by then, but `inet_sport` keeps it (a
/// field beyond `struct sock`, so read with the helper, at address `sk`).
/// Left 0 where BTF lacks that field (the daemon then waits for a
/// snapshot to learn of the timewait socket).
#[inline(always)]
fn closing_tuple(o: &SockOffsets, sk: u64, (fam, mut tuple): (u8, Tuple)) -> (u8, Tuple) {
    if let Ok(port_be) = read::<u16>(sk, o.inet_sport) {
        tuple.sport = u16::from_be(port_be);
    }
    (fam, tuple)
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    finish(HOOK, classic_set_state(&ctx));
    0
}

/// Reads a field of the tracepoint record.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: usize) -> Result<T, u32> {
    unsafe { ctx.read_at(offset) }.map_err(|_| reason::READ_FAILED)
}

#[inline(always)]
fn classic_set_state(ctx: &TracePointContext) -> Outcome {
    let protocol: u16 = field(ctx, off::PROTOCOL)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = field(ctx, off::SKADDR)?;
    let old = field::<i32>(ctx, off::OLDSTATE)? as u8;
    let new = field::<i32>(ctx, off::NEWSTATE)? as u8;
    let o = offsets();
    let interest = interest(old, new);
    let ns = Namespace::of::<Probe>(&o, skaddr);
    if !netns_wanted(ns.inum) {
        return Ok(());
    }
    count_transition(old, new);
    match interest {
        Interest::None => Ok(()),
        Interest::Begin => {
            begin(skaddr, &record_tuple(ctx)?.1);
            Ok(())
        }
        Interest::Aborted => {
            closing::end(skaddr);
            Ok(())
        }
        Interest::Closed => match closing::end(skaddr) {
            Ended::Claimed => Ok(()),
            Ended::Open(process) => {
                let (fam, tuple) = closing_tuple(&o, skaddr, record_tuple(ctx)?);
                let at = stamp(ns.inum::<Probe>(&o, skaddr), fam);
                emit(Closed::new(at, skaddr, process, tuple, old))
            }
        },
        Interest::Established => {
            let (fam, tuple) = record_tuple(ctx)?;
            established::<Probe>(&o, &ns, (skaddr, skaddr), fam, tuple, (old, new))
        }
    }
}

/// The family and four-tuple the tracepoint record carries.
#[inline(always)]
fn record_tuple(ctx: &TracePointContext) -> Result<(u8, Tuple), u32> {
    let fam: u16 = field(ctx, off::FAMILY)?;
    let mut tuple = Tuple {
        sport: field(ctx, off::SPORT)?,
        dport: field(ctx, off::DPORT)?,
        ..Tuple::default()
    };
    if fam == family::INET6 as u16 {
        tuple.saddr = field(ctx, off::SADDR_V6)?;
        tuple.daddr = field(ctx, off::DADDR_V6)?;
    } else {
        let s: [u8; 4] = field(ctx, off::SADDR)?;
        let d: [u8; 4] = field(ctx, off::DADDR)?;
        tuple.saddr[..4].copy_from_slice(&s);
        tuple.daddr[..4].copy_from_slice(&d);
    }
    Ok((fam as u8, tuple))
}
