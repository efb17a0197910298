//! HTTP, both ways: the server that serves the exposition and the API
//! ([`routes`], [`params`], [`server`], each client held to its share of
//! connections by [`clients`]) with TLS and basic auth from an
//! exporter-toolkit web config ([`config`], [`auth`]), and the client that
//! `twmon snapshot` and `twmon top` read a daemon with ([`client`]).

pub mod auth;
pub mod client;
pub mod clients;
pub mod config;
pub mod params;
pub mod routes;
pub mod server;
