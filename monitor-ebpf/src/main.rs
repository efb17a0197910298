//! twmon's kernel programs.
//!
//! One module per hook family, like kunai: `set_state` for the
//! `sock:inet_sock_set_state` tracepoint, `timewait` for the birth of
//! timewait sockets (each hook in a fentry/fexit and a kprobe/kretprobe
//! flavour; the daemon attaches the best one the kernel allows). Maps, load-time globals and helpers
//! shared by all hooks live in `common`. Programs do the least work that
//! keeps the numbers exact: filter, copy fixed-size records into the ring
//! buffer, count what userspace cannot see. No per-event logging.
#![no_std]
#![no_main]

mod common;
mod connect;
mod death;
mod pending;
mod reset;
mod set_state;
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
