//! Kprobe runs the kernel skipped without telling the program: a kprobe
//! that fires while another kprobe handler runs on the CPU is counted only
//! on the kprobe itself (`nmissed`), not in the program's
//! recursion_misses. Since 6.7 (6.6.59) the perf link's info carries that
//! count; twmon reads it from each of its kprobe links and adds it to the
//! hook's skipped runs. aya does not expose links' fds or this field, so
//! the links are found among the process's fds by their fdinfo and asked
//! with BPF_OBJ_GET_INFO_BY_FD directly.

use std::{collections::BTreeMap, fs, os::fd::RawFd};

use super::parse_fdinfo;
use crate::model::hooks::Hook;

const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_PERF_EVENT_KPROBE: u32 = 3;
const BPF_PERF_EVENT_KRETPROBE: u32 = 4;
/// `struct bpf_link_info` on 6.9+; the kernel says how much it filled.
const INFO_LEN: usize = 64;
/// Where `perf_event.kprobe.missed` is, and the length that includes it.
const MISSED_AT: usize = 48;

/// `prog_id` of each program fd, for the hooks they belong to.
pub fn program_ids(program_fds: &[(Hook, RawFd)]) -> BTreeMap<u64, Hook> {
    program_fds
        .iter()
        .filter_map(|&(hook, fd)| Some((fdinfo(fd, "prog_id")?, hook)))
        .collect()
}

fn fdinfo(fd: RawFd, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    parse_fdinfo(&text, key)
}

/// Kprobe misses by hook, for the links of `programs`; empty on kernels
/// that do not report them.
pub fn by_hook(programs: &BTreeMap<u64, Hook>) -> BTreeMap<Hook, u64> {
    let mut out = BTreeMap::new();
    let Ok(fds) = fs::read_dir("/proc/self/fdinfo") else {
        return out;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        if parse_fdinfo(&text, "link_id").is_none() {
            continue;
        }
        let Some(hook) = parse_fdinfo(&text, "prog_id").and_then(|id| programs.get(&id)) else {
            continue;
        };
        if let Some(missed) = kprobe_missed(fd) {
            *out.entry(*hook).or_default() += missed;
        }
    }
    out
}

/// `perf_event.kprobe.missed` of link `fd`, if it is a kprobe perf link on
/// a kernel that fills it.
fn kprobe_missed(fd: RawFd) -> Option<u64> {
    let mut info = [0u8; INFO_LEN];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd).ok()?,
        info_len: INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: bpf(2) reads `attr` and writes at most `info_len` bytes into
    // `info` and the new length into `attr`; both outlive the call.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return None;
    }
    parse_missed(&info, attr.info_len as usize)
}

/// The missed count in a `bpf_link_info` the kernel filled `len` bytes of.
fn parse_missed(info: &[u8; INFO_LEN], len: usize) -> Option<u64> {
    let u32_at =
        |at: usize| u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
    let kprobe = matches!(u32_at(16), BPF_PERF_EVENT_KPROBE | BPF_PERF_EVENT_KRETPROBE);
    if len < MISSED_AT + 8 || u32_at(0) != BPF_LINK_TYPE_PERF_EVENT || !kprobe {
        return None;
    }
    let bytes: [u8; 8] = info[MISSED_AT..MISSED_AT + 8].try_into().ok()?;
    Some(u64::from_ne_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missed_count_is_read_only_where_the_kernel_filled_it() {
        let mut info = [0u8; INFO_LEN];
        info[0..4].copy_from_slice(&BPF_LINK_TYPE_PERF_EVENT.to_ne_bytes());
        info[16..20].copy_from_slice(&BPF_PERF_EVENT_KRETPROBE.to_ne_bytes());
        info[48..56].copy_from_slice(&7u64.to_ne_bytes());
        assert_eq!(parse_missed(&info, 64), Some(7));
        // 6.1 fills 48 bytes and no union.
        assert_eq!(parse_missed(&info, 48), None);
        info[0..4].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(parse_missed(&info, 64), None, "not a perf link");
    }
}
