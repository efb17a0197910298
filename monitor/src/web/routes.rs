//! The routes: `/metrics`, `/healthz`, the JSON API under `/api/v1`
//! (docs/api.md) and a landing page.

use std::{future::Future, sync::Arc};

use anyhow::{Context as _, Result};
use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use super::{
    config::WebConfig,
    params::{self, Params},
    server::{self, Limits},
};
use crate::expose::{
    Exposed,
    metrics::{self, CONTENT_TYPE},
};

type Shared = Arc<Exposed>;

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

/// A 400 that says which parameter was wrong and what it takes.
fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
}

async fn timewait_handler(State(source): State<Shared>, Query(q): Query<Params>) -> Response {
    let parsed = params::filter(&q).and_then(|filter| {
        let attribution = params::attribution(&q)?;
        Ok((
            filter,
            attribution,
            params::order(&q)?,
            params::limit(&q, 100)?,
        ))
    });
    let (filter, attribution, order, limit) = match parsed {
        Ok(p) => p,
        Err(msg) => return bad_request(msg),
    };
    // Naming cgroups may walk the cgroup tree and /proc: off the event loop.
    let doc = blocking(move || {
        source
            .timewait(filter, &attribution, order, limit)
            .map(Json)
    })
    .await;
    match doc {
        Ok(Ok(doc)) => doc.into_response(),
        Ok(Err(msg)) => bad_request(msg),
        Err(response) => response,
    }
}

/// Runs `work` on tokio's blocking pool; a 500 if it panicked.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(work).await.map_err(|err| {
        log::error!("API request failed: {err}");
        (StatusCode::INTERNAL_SERVER_ERROR, "the request failed\n").into_response()
    })
}

async fn collisions_handler(State(source): State<Shared>, Query(q): Query<Params>) -> Response {
    let limit = match params::limit(&q, 100) {
        Ok(l) => l,
        Err(msg) => return bad_request(msg),
    };
    Json(source.collisions(limit)).into_response()
}

async fn summary_handler(State(source): State<Shared>, Query(q): Query<Params>) -> Response {
    let top = match params::top(&q, 10) {
        Ok(t) => t,
        Err(msg) => return bad_request(msg),
    };
    match blocking(move || Json(source.summary(top))).await {
        Ok(doc) => doc.into_response(),
        Err(response) => response,
    }
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
        "(?limit=&amp;remote=&amp;port=&amp;process=&amp;cgroup=&amp;pod=&amp;sort=)</li>",
        "<li><a href=\"/api/v1/collisions\">/api/v1/collisions</a>: recent four-tuple ",
        "collisions (?limit=)</li>",
        "<li><a href=\"/api/v1/summary\">/api/v1/summary</a>: what twmon top shows</li>",
        "</ul></body></html>\n"
    ))
}
