//! What the daemon shows: the state requests read ([`scrape`]), the
//! Prometheus exposition built from it at each scrape ([`metrics`]), the
//! JSON documents of `/api/v1` ([`api`]) and their plain-text views
//! ([`text`]).

pub mod api;
pub mod doctor;
pub mod metrics;
mod queries;
pub mod scrape;
pub mod text;

pub use scrape::{Exposed, KernelReader, Scrape, View};
