//! The floor under any watcher of TCP state transitions: a program that
//! does nothing (`r0 = 0; exit`), attached as a raw tracepoint to
//! `inet_sock_set_state`, where twmon's busiest program runs. What a churn
//! loses to it is the price of the hook itself (the kernel's dispatch into
//! a BPF program on every transition of both ends), which no watcher of
//! this hook can go below. Loaded with two bpf(2) calls rather than a
//! compiled object: nothing here is worth a toolchain.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result};

/// The tracepoint twmon's state-change programs attach to.
pub const HOOK: &CStr = c"inet_sock_set_state";

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `mov r0, 0` and `exit`, as the kernel encodes them; a static, so the
/// pointer handed to the kernel is to memory that lives.
static PROGRAM: [u64; 2] = [0xb7, 0x95];

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
const _: () = assert!(std::mem::size_of::<RawTracepointOpen>() == 128);

/// The empty program, attached until dropped.
pub struct Floor {
    // Closing the link detaches the program; the program's own fd goes
    // after it.
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl Floor {
    pub fn attach() -> Result<Floor> {
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"twmon_floor");
        let mut load = ProgLoad {
            prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
            insn_cnt: PROGRAM.len() as u32,
            insns: PROGRAM.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            ..ProgLoad::default()
        };
        let prog = bpf(BPF_PROG_LOAD, &mut load).context("loading an empty BPF program")?;
        let mut open = RawTracepointOpen {
            name: HOOK.as_ptr() as u64,
            prog_fd: prog.as_raw_fd() as u32,
            ..RawTracepointOpen::default()
        };
        let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut open)
            .with_context(|| format!("attaching an empty BPF program to {HOOK:?}"))?;
        Ok(Floor {
            _link: link,
            _prog: prog,
        })
    }
}

/// bpf(2) for a command that returns a new fd.
fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-filled bpf_attr of the size passed, and
    // the pointers in it point at statics or locals that outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
