//! Where the daemon's knowledge comes from: the kernel's ring buffer
//! ([`ring`]) decoded into events ([`decode`]), and the kernel's own socket
//! lists, sock_diag dumps per network namespace ([`diag`], [`netns`]) taken
//! on a schedule ([`snapshots`], [`vanished`]); the closers those dumps
//! adopt without ([`closers`]); and recordings of both ([`recording`]) for
//! `twmon replay`.

pub mod cgroups;
pub mod closers;
pub mod decode;
pub mod diag;
pub mod kernel_log;
pub mod netns;
pub mod recording;
pub mod ring;
pub mod snapshots;
pub mod vanished;
