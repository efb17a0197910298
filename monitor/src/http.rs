//! The HTTP endpoint: `/metrics`, `/healthz` and a landing page.

use std::{future::Future, sync::Arc};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use crate::{
    metrics::{self, CONTENT_TYPE, Scrape},
    server::{self, Limits},
    web_config::WebConfig,
};

/// Where a scrape gets its numbers from.
pub trait ScrapeSource: Send + Sync + 'static {
    fn scrape(&self) -> Scrape;
}

type Source = Arc<dyn ScrapeSource>;

pub fn router(source: Source) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .with_state(source)
}

/// Serves until `shutdown` completes, as `web` asks and within the
/// default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    source: Source,
    web: WebConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    server::serve(listener, router(source), web, Limits::default(), shutdown)
        .await
        .context("HTTP server failed")
}

async fn metrics_handler(State(source): State<Source>) -> Response {
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
        "</ul></body></html>\n"
    ))
}
