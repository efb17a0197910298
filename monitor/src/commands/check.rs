//! `twmon check`: load everything as `run` would, print how each hook
//! attached and why better methods were refused, then detach and exit.

use anyhow::Result;

use crate::kernel::{self, LoadOptions, host};

pub fn run(opts: &LoadOptions) -> Result<()> {
    println!("kernel {}", host::kernel_release());
    let (probes, _ring) = kernel::load(opts)?;
    for status in probes.hooks.iter() {
        println!("{status}");
    }
    if !probes.netns_known {
        println!("network namespaces: unknown (no BTF offsets); --netns unavailable");
    }
    Ok(())
}
