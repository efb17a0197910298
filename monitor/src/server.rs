//! Serving the router to the network: our own accept loop instead of
//! `axum::serve`, so that every connection is bounded (count, header size,
//! time) and every request passes the same checks before any route sees it.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    body::HttpBody as _,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
};
use tokio_io_timeout::TimeoutStream;

/// What one client may cost us. The defaults suit a scrape endpoint: small
/// requests, small fast responses, a handful of scrapers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's accept queue
    /// until one closes.
    pub max_connections: usize,
    /// Longest wait for a request's head (and the TLS handshake). hyper
    /// starts this clock whenever it waits for a head, so it also closes
    /// idle keep-alive connections.
    pub header_read_timeout: Duration,
    /// Longest a request may take from its head to its response.
    pub request_timeout: Duration,
    /// Longest a write to the client may stall (a client that stops
    /// reading its response).
    pub write_timeout: Duration,
    /// Largest request head. hyper refuses anything under 8 KiB, so smaller
    /// values are raised to that.
    pub max_header_bytes: usize,
    /// Largest request body; GET and HEAD need none.
    pub max_body_bytes: u64,
    /// How long requests in flight may finish after shutdown is asked for.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 0,
            shutdown_grace: Duration::from_millis(500),
        }
    }
}

/// hyper panics below this (its minimum read buffer).
const HYPER_MIN_BUF: usize = 8 * 1024;

/// Serves `app` on `listener` until `shutdown` completes, then lets
/// requests in flight finish for up to `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = guarded(app, limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // The permit is taken before accepting: extra clients wait in the
        // kernel's queue, costing us neither a task nor memory.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => {
                permit.context("connection limit semaphore closed")?
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_per_connection(&err) => continue,
                Err(err) => {
                    // Usually out of file descriptors: wait for some to be
                    // freed rather than spin or give up serving.
                    log::error!("accepting a connection: {err}; retrying in 1s");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            limits,
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log::debug!(
            "dropping {} connections still open after the shutdown grace",
            connections.len()
        );
    }
    Ok(())
}

fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// One client connection; the permit frees its slot when this returns.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(limits.write_timeout));
    let stream = Box::pin(stream);
    if let Err(err) = serve_http(stream, app, limits, stop).await {
        // Clients hanging up or timing out are routine, not our failure.
        log::debug!("connection from {peer}: {err}");
    }
}

async fn serve_http<I>(
    io: I,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUF));
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    // The guard wait_for returns is not Send: drop it inside the block.
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            // Idle connections close now, busy ones after their response.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// `app` behind the checks that hold for every route, present and future.
fn guarded(app: Router, limits: Limits) -> Router {
    // The last layer added runs first.
    app.layer(middleware::from_fn_with_state(limits, request_timeout))
        .layer(middleware::from_fn_with_state(limits, method_and_body))
}

/// Everything twmon serves is read-only; refusing other methods and bodies
/// early means no route can be fed one by mistake.
async fn method_and_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "only GET and HEAD are served\n",
        )
            .into_response();
    }
    // A chunked body has no upper bound until read: refused as well.
    let body_fits = req
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= limits.max_body_bytes);
    if !body_fits {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            // The unread body makes the connection unusable for another
            // request; say so rather than let the client find out.
            [(header::CONNECTION, "close")],
            "request bodies are not accepted\n",
        )
            .into_response();
    }
    next.run(req).await
}

async fn request_timeout(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            log::warn!(
                "a request took longer than {:?}; answered 503",
                limits.request_timeout
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the request took too long; try again\n",
            )
                .into_response()
        }
    }
}
