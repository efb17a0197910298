//! The HTTP endpoint: `/metrics`, `/healthz`, the JSON API under
//! `/api/v1` (docs/api.md) and a landing page.

use std::{collections::HashMap, future::Future, sync::Arc};

use anyhow::{Context as _, Result};
use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use crate::{
    api,
    metrics::{self, CONTENT_TYPE, Scrape},
    server::{self, Limits},
    table::{Filter, Order},
    web_config::WebConfig,
};

/// What requests read: a live daemon, or a replayed recording.
pub trait Source: Send + Sync + 'static {
    /// A consistent snapshot for one scrape.
    fn scrape(&self) -> Scrape;
    /// The table and counters, locked: hold it briefly, it stops events.
    fn state(&self) -> std::sync::MutexGuard<'_, crate::state::State>;
    /// Now on the clock of event timestamps (CLOCK_MONOTONIC).
    fn now_ns(&self) -> u64;
}

type Shared = Arc<dyn Source>;

pub fn router(source: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/api/v1/timewait", get(timewait_handler))
        .route("/api/v1/collisions", get(collisions_handler))
        .route("/api/v1/summary", get(summary_handler))
        .with_state(source)
}

type Params = Query<HashMap<String, String>>;

/// A 400 that says which parameter was wrong and what it takes.
fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
}

/// A query parameter, `Err` with what is wrong for a 400.
fn param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, String> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={v:?} is not {what}")),
    }
}

fn limit(params: &HashMap<String, String>, default: usize) -> Result<usize, String> {
    Ok(param::<usize>(params, "limit", "a count (e.g. limit=50)")?.unwrap_or(default))
}

fn order(params: &HashMap<String, String>) -> Result<Order, String> {
    Ok(match params.get("sort").map(String::as_str) {
        None | Some("age") => Order::Age,
        Some("left") => Order::Left,
        Some("remote") => Order::Remote,
        Some("port") => Order::Port,
        Some("process") => Order::Process,
        Some(other) => {
            return Err(format!(
                "sort={other:?}: use age, left, remote, port or process"
            ));
        }
    })
}

async fn timewait_handler(State(source): State<Shared>, Query(params): Params) -> Response {
    let parsed = (|| {
        let filter = Filter {
            remote: param(&params, "remote", "an IP address (e.g. remote=10.0.0.2)")?,
            port: param(&params, "port", "a port number (e.g. port=443)")?,
            process: params.get("process").cloned(),
            netns: param(&params, "netns", "a namespace inode")?,
        };
        Ok::<_, String>((filter, order(&params)?, limit(&params, 100)?))
    })();
    let (filter, order, limit) = match parsed {
        Ok(p) => p,
        Err(msg) => return bad_request(msg),
    };
    let now = source.now_ns();
    let doc = api::timewait(&source.state(), now, &filter, order, limit);
    Json(doc).into_response()
}

async fn collisions_handler(State(source): State<Shared>, Query(params): Params) -> Response {
    let limit = match limit(&params, 100) {
        Ok(l) => l,
        Err(msg) => return bad_request(msg),
    };
    let now = source.now_ns();
    let doc = api::collisions(&source.state(), now, limit);
    Json(doc).into_response()
}

async fn summary_handler(State(source): State<Shared>, Query(params): Params) -> Response {
    let top = match param::<usize>(&params, "top", "a count (e.g. top=10)") {
        Ok(t) => t.unwrap_or(10).min(api::MAX_LIMIT),
        Err(msg) => return bad_request(msg),
    };
    let now = source.now_ns();
    let doc = api::summary(&source.state(), now, top);
    Json(doc).into_response()
}

/// Serves until `shutdown` completes, as `web` asks and within the
/// default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    source: Shared,
    web: WebConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    server::serve(listener, router(source), web, Limits::default(), shutdown)
        .await
        .context("HTTP server failed")
}

async fn metrics_handler(State(source): State<Shared>) -> Response {
    match metrics::encode(&source.scrape()) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(err) => {
            log::error!("rendering metrics: {err:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering metrics failed: {err:#}\n"),
            )
                .into_response()
        }
    }
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><title>twmon</title></head><body>",
        "<h1>twmon ",
        env!("CARGO_PKG_VERSION"),
        "</h1><p>A live TIME_WAIT monitor.</p><ul>",
        "<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>",
        "<li><a href=\"/healthz\">/healthz</a>: liveness</li>",
        "<li><a href=\"/api/v1/timewait\">/api/v1/timewait</a>: the TIME_WAIT table ",
        "(?limit=&amp;remote=&amp;port=&amp;process=&amp;sort=)</li>",
        "<li><a href=\"/api/v1/collisions\">/api/v1/collisions</a>: recent four-tuple ",
        "collisions (?limit=)</li>",
        "<li><a href=\"/api/v1/summary\">/api/v1/summary</a>: what twmon top shows</li>",
        "</ul></body></html>\n"
    ))
}
