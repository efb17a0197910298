//! The machine architectures vm-test boots guests of: how twmon is built
//! for each (a static musl binary, with the eBPF object for that
//! architecture's kprobe register layout, see `monitor`'s build script),
//! which QEMU emulates it, and where its busybox comes from.

use std::process::Command;

/// A guest architecture, named as Debian names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The machine xtask runs on (the container image is built for it).
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }

    /// Debian's name: package suffixes and archive index paths.
    pub fn deb(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The static Rust target of the guest binaries.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The C compiler ring (TLS) builds its C and assembly with, and, for
    /// a cross build, the linker; with the Debian package that has it.
    pub fn c_compiler(self) -> (&'static str, &'static str) {
        match self {
            Arch::Amd64 => ("x86_64-linux-musl-gcc", "musl-tools"),
            // Rust's musl target brings its own C runtime and libc, so a
            // glibc cross compiler only has to compile and link.
            Arch::Arm64 => ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        }
    }

    /// Debian packages of C headers the compiler needs beyond its own: a
    /// cross gcc only recommends its target's libc headers, and ring's C
    /// includes stdint.h, whose gcc copy includes the libc's.
    pub fn c_libraries(self) -> &'static [&'static str] {
        match self {
            Arch::Amd64 => &[],
            Arch::Arm64 => &["libc6-dev-arm64-cross"],
        }
    }

    /// Points a cargo build for this architecture at its C compiler
    /// (and, across architectures, at its linker).
    pub fn cross_env(self, cmd: &mut Command) {
        let target = self.musl_target().replace('-', "_");
        let (cc, _) = self.c_compiler();
        cmd.env(format!("CC_{target}"), cc);
        if self != Arch::Amd64 {
            cmd.env(format!("CARGO_TARGET_{}_LINKER", target.to_uppercase()), cc);
        }
    }

    /// The QEMU system emulator, and the Debian package that has it.
    pub fn qemu(self) -> (&'static str, &'static str) {
        match self {
            Arch::Amd64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Arch::Arm64 => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    /// The machine QEMU emulates, before the common arguments.
    pub fn qemu_machine(self) -> &'static [&'static str] {
        match self {
            Arch::Amd64 => &["-cpu", "max"],
            // A plain ARMv8.0 core: `max` adds pointer authentication,
            // whose emulation costs TCG a lot and twmon nothing.
            Arch::Arm64 => &["-machine", "virt", "-cpu", "cortex-a72"],
        }
    }

    /// The guest kernel's serial console.
    pub fn console(self) -> &'static str {
        match self {
            Arch::Amd64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }
}
