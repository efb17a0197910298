//! `twmon check`: load everything as `run` would, print how each hook
//! attached and why better methods were refused, then detach and exit.

use anyhow::Result;

use crate::{
    cli::CheckArgs,
    probes::{self, LoadOptions},
};

pub fn run(args: &CheckArgs) -> Result<()> {
    println!("kernel {}", crate::kernel_release());
    let (probes, _ring) = probes::load(&LoadOptions {
        netns_filter: None,
        ring_bytes: 4096,
        btf: args.probes.btf.clone(),
        mode: args.probes.probes,
    })?;
    for status in &probes.hooks {
        println!("{status}");
    }
    if !probes.netns_known {
        println!("network namespaces: unknown (no BTF offsets); --netns unavailable");
    }
    Ok(())
}
