//! twmon's kernel programs.
//!
//! One module per hook family, like kunai: `set_state` (every TCP state
//! transition, and who closed first), `timewait` (births and the segments
//! timewait sockets absorb), `death` (how they end, namespace purges
//! included), `connect` (EADDRNOTAVAIL), `bind` (EADDRINUSE) and `reset`
//! (RSTs sent from TIME_WAIT). Function hooks come in a fentry/fexit and a
//! kprobe/kretprobe flavour; the daemon attaches the best one the kernel
//! allows. Maps, load-time globals and helpers shared by all hooks live in
//! `common`; the records they send are defined in `monitor-common`.
//! Programs do the least work that keeps the numbers exact: filter, copy
//! fixed-size records into the ring buffer, count every record they lose.
//! No per-event logging.
#![no_std]
#![no_main]

mod bind;
mod closing;
mod common;
mod connect;
mod death;
mod nested;
mod pending;
mod recent;
mod reset;
mod set_state;
mod syscall;
mod timewait;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves programs cannot panic; this is never reached.
    loop {}
}

// GPL-compatible: bpf_probe_read_kernel is a GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
