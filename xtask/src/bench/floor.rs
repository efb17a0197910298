//! Two hand-made programs on `inet_sock_set_state`, where twmon's busiest
//! program runs, to measure against:
//!
//! - [`Program::Empty`] (`r0 = 0; exit`): the floor under any watcher of
//!   TCP state transitions. What a churn loses to it is the price of the
//!   hook itself (the kernel's dispatch into a BPF program on every
//!   transition of both ends), which no watcher of this hook can go below.
//! - [`Program::Counting`]: the least a watcher that counts transitions
//!   does, one increment in a per-CPU array by (old, new) state, as twmon's
//!   own counters and the first of the performance issue's levers; no
//!   protocol check, no namespace, no record.
//!
//! Loaded with bpf(2) rather than from a compiled object: nothing here is
//! worth a toolchain.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result};

/// The tracepoint twmon's state-change programs attach to.
pub const HOOK: &CStr = c"inet_sock_set_state";

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

/// `mov r0, 0` and `exit`, as the kernel encodes them; a static, so the
/// pointer handed to the kernel is to memory that lives.
static EMPTY: [u64; 2] = [0xb7, 0x95];

/// One counter per (old, new) pair of 4-bit states.
const COUNTERS: u32 = 256;

/// An instruction: opcode, destination and source registers, offset,
/// immediate (`struct bpf_insn`).
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64 | (src as u64) << 4) << 8)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

/// The counting program, for the map whose fd is `map_fd`. A raw
/// tracepoint's context is its arguments as u64s: the socket, the old
/// state, the new state.
fn counting(map_fd: i32) -> [u64; 18] {
    [
        insn(0x79, 6, 1, 8, 0),      // r6 = *(u64 *)(r1 + 8): old state
        insn(0x79, 7, 1, 16, 0),     // r7 = *(u64 *)(r1 + 16): new state
        insn(0x57, 6, 0, 0, 15),     // r6 &= 15
        insn(0x67, 6, 0, 0, 4),      // r6 <<= 4
        insn(0x57, 7, 0, 0, 15),     // r7 &= 15
        insn(0x4f, 6, 7, 0, 0),      // r6 |= r7
        insn(0x63, 10, 6, -4, 0),    // *(u32 *)(r10 - 4) = r6: the key
        insn(0x18, 1, 1, 0, map_fd), // r1 = the map (fd, BPF_PSEUDO_MAP_FD) ...
        insn(0, 0, 0, 0, 0),         // ... its upper half
        insn(0xbf, 2, 10, 0, 0),     // r2 = r10
        insn(0x07, 2, 0, 0, -4),     // r2 += -4
        insn(0x85, 0, 0, 0, 1),      // call bpf_map_lookup_elem
        insn(0x15, 0, 0, 3, 0),      // if r0 == 0 goto +3
        insn(0x79, 1, 0, 0, 0),      // r1 = *(u64 *)(r0 + 0)
        insn(0x07, 1, 0, 0, 1),      // r1 += 1
        insn(0x7b, 0, 1, 0, 0),      // *(u64 *)(r0 + 0) = r1
        insn(0xb7, 0, 0, 0, 0),      // r0 = 0
        insn(0x95, 0, 0, 0, 0),      // exit
    ]
}

/// What to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Empty,
    Counting,
}

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`, zero beyond it.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    rest: [u64; 8],
}

/// The head of `union bpf_attr` for `BPF_MAP_CREATE`.
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    rest: [u32; 28],
}

/// `union bpf_attr` for `BPF_MAP_LOOKUP_ELEM`.
#[repr(C)]
#[derive(Default)]
struct MapLookup {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
    rest: [u64; 12],
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
#[derive(Default)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    pad: u32,
    rest: [u64; 14],
}

const _: () = assert!(std::mem::size_of::<ProgLoad>() == 128);
const _: () = assert!(std::mem::size_of::<MapCreate>() == 128);
const _: () = assert!(std::mem::size_of::<MapLookup>() == 128);
const _: () = assert!(std::mem::size_of::<RawTracepointOpen>() == 128);

/// A program, attached until dropped.
pub struct Attached {
    // Closing the link detaches the program; the program's own fd and its
    // map go after it.
    _link: OwnedFd,
    _prog: OwnedFd,
    counters: Option<OwnedFd>,
}

impl Attached {
    pub fn attach(program: Program) -> Result<Attached> {
        let (counters, insns) = match program {
            Program::Empty => (None, EMPTY.to_vec()),
            Program::Counting => {
                let map = per_cpu_array(COUNTERS)?;
                let insns = counting(map.as_raw_fd()).to_vec();
                (Some(map), insns)
            }
        };
        let license = c"GPL";
        let mut name = [0u8; 16];
        let short: &[u8] = match program {
            Program::Empty => b"twmon_floor",
            Program::Counting => b"twmon_count",
        };
        name[..short.len()].copy_from_slice(short);
        let mut load = ProgLoad {
            prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            ..ProgLoad::default()
        };
        let prog = bpf(BPF_PROG_LOAD, &mut load)
            .with_context(|| format!("loading the {program:?} BPF program"))?;
        let mut open = RawTracepointOpen {
            name: HOOK.as_ptr() as u64,
            prog_fd: prog.as_raw_fd() as u32,
            ..RawTracepointOpen::default()
        };
        let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut open)
            .with_context(|| format!("attaching the {program:?} BPF program to {HOOK:?}"))?;
        Ok(Attached {
            _link: link,
            _prog: prog,
            counters,
        })
    }

    /// The transitions the counting program counted so far, over all
    /// CPUs; 0 for the empty one.
    pub fn counted(&self) -> Result<u64> {
        let Some(map) = &self.counters else {
            return Ok(0);
        };
        let cpus = possible_cpus()?;
        let mut total = 0;
        for key in 0..COUNTERS {
            let mut values = vec![0u64; cpus];
            let mut lookup = MapLookup {
                map_fd: map.as_raw_fd() as u32,
                key: &key as *const u32 as u64,
                value: values.as_mut_ptr() as u64,
                ..MapLookup::default()
            };
            bpf_call(BPF_MAP_LOOKUP_ELEM, &mut lookup).context("reading the counters")?;
            total += values.iter().sum::<u64>();
        }
        Ok(total)
    }
}

/// A per-CPU array of `entries` u64s.
fn per_cpu_array(entries: u32) -> Result<OwnedFd> {
    let mut create = MapCreate {
        map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: entries,
        ..MapCreate::default()
    };
    bpf(BPF_MAP_CREATE, &mut create).context("creating a per-CPU array")
}

/// How many CPUs a per-CPU value has a slot for: the kernel's possible
/// CPUs, as ranges ("0-1,4").
fn possible_cpus() -> Result<usize> {
    let path = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut n = 0;
    for range in text.trim().split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let parse = |s: &str| {
            s.parse::<usize>()
                .with_context(|| format!("{path}: {text:?}"))
        };
        n += parse(hi)? + 1 - parse(lo)?;
    }
    Ok(n)
}

/// bpf(2) for a command that returns a new fd.
fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<OwnedFd> {
    let fd = bpf_call(cmd, attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// bpf(2), its result.
fn bpf_call<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-filled bpf_attr of the size passed, and
    // the pointers in it point at memory that outlives the call (sized
    // as the command needs, for what the kernel writes back).
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        assert_eq!([insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)], EMPTY);
        // *(u32 *)(r10 - 4) = r6: src in the high nibble, offset two's
        // complement.
        assert_eq!(insn(0x63, 10, 6, -4, 0), 0x0000_0000_fffc_6a63);
        assert_eq!(insn(0x07, 2, 0, 0, -4), 0xffff_fffc_0000_0207);
    }
}
