//! The commands: each wires the layers below into one thing a user runs,
//! and holds no logic of its own beyond that wiring.

pub mod check;
pub mod doctor;
pub mod replay;
pub mod run;
pub mod runtime;
pub mod snapshot;
pub mod top;
