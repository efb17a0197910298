//! Serving the router to the network: our own accept loop instead of
//! `axum::serve`, so that every connection is bounded (count, header size,
//! time) and every request passes the same checks before any route sees it.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{Arc, PoisonError},
    time::Duration,
};

use anyhow::Result;
use axum::{
    Router,
    body::HttpBody as _,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;

use super::{
    auth::BasicAuth,
    clients::{Clients, Full, Place},
    config::WebConfig,
};

/// What one client may cost us. The defaults suit a scrape endpoint: small
/// requests, small fast responses, a handful of scrapers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once (at least 1). When full, a new client
    /// takes the oldest connection of the client holding the most (see
    /// `clients`); when no client holds more than one, it is refused.
    pub max_connections: usize,
    /// Connections one client address may hold; another one takes the
    /// place of its oldest.
    pub max_per_client: usize,
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
            max_connections: 512,
            max_per_client: 16,
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

/// Serves `app` on `listener` as `web` asks (TLS, auth, headers) until
/// `shutdown` completes, then lets requests in flight finish for up to
/// `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    web: WebConfig,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = guarded(app, &web, limits);
    let tls = web.tls.map(TlsAcceptor::from);
    let clients = Clients::shared();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Always accepting: waiting for a free slot before accept() would
        // let whoever holds the slots keep everyone else out.
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
        // Held while spawning, so the task cannot end (and release its
        // place) before its abort handle is attached.
        let mut held = clients.lock().unwrap_or_else(PoisonError::into_inner);
        let id = match held.admit(peer.ip(), limits.max_per_client, limits.max_connections) {
            Ok(id) => id,
            Err(Full) => {
                drop(held);
                log::warn!("{peer}: every connection is taken, one per client; closed");
                continue;
            }
        };
        let place = Place {
            clients: clients.clone(),
            ip: peer.ip(),
            id,
        };
        let handle = connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            tls.clone(),
            limits,
            stop_rx.clone(),
            place,
        ));
        held.attach(peer.ip(), id, handle);
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

/// One client connection; its place is freed when this returns or is
/// aborted.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    _place: Place,
) {
    let result = match tls {
        None => serve_http(with_write_timeout(stream, limits), app, limits, stop).await,
        Some(tls) => {
            // The handshake counts against the head's time: a client that
            // opens a connection and stalls holds its slot no longer.
            let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
            let handshake = async {
                if !starts_with_tls(&stream).await {
                    refuse_plain_http(stream, limits).await;
                    return Err(anyhow::anyhow!("plain HTTP on the HTTPS port"));
                }
                Ok(tls.accept(with_write_timeout(stream, limits)).await?)
            };
            match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Ok(stream)) => serve_http(stream, app, limits, stop).await,
                Ok(Err(err)) => {
                    log::debug!("TLS handshake with {peer}: {err:#}");
                    return;
                }
                Err(_) => {
                    log::debug!("TLS handshake with {peer} timed out");
                    return;
                }
            }
        }
    };
    if let Err(err) = result {
        // Clients hanging up or timing out are routine, not our failure.
        log::debug!("connection from {peer}: {err}");
    }
}

fn with_write_timeout(
    stream: TcpStream,
    limits: Limits,
) -> std::pin::Pin<Box<TimeoutStream<TcpStream>>> {
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(limits.write_timeout));
    Box::pin(stream)
}

/// Whether the client's first byte opens a TLS handshake record.
async fn starts_with_tls(stream: &TcpStream) -> bool {
    const HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0] == HANDSHAKE_RECORD)
}

/// Answers a plain HTTP client on the HTTPS port in words it can show, as
/// Go's servers do, instead of a TLS alert it would print as garbage.
async fn refuse_plain_http(mut stream: TcpStream, limits: Limits) {
    const REFUSAL: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\
        Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server: use https://\n";
    let _ = tokio::time::timeout(limits.write_timeout, async {
        let _ = stream.write_all(REFUSAL).await;
        let _ = stream.shutdown().await;
    })
    .await;
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
fn guarded(app: Router, web: &WebConfig, limits: Limits) -> Router {
    // The last layer added runs first: headers go on every answer, cheap
    // refusals come before bcrypt, and the time limit covers waiting for it.
    let app = match &web.auth {
        Some(auth) => app.layer(middleware::from_fn_with_state(auth.clone(), require_auth)),
        None => app,
    };
    app.layer(middleware::from_fn_with_state(limits, request_timeout))
        .layer(middleware::from_fn_with_state(limits, method_and_body))
        .layer(middleware::from_fn_with_state(
            web.headers.clone(),
            extra_headers,
        ))
}

async fn require_auth(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    if auth.allows(req.headers().get(header::AUTHORIZATION)).await {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"twmon\"")],
        "authentication required\n",
    )
        .into_response()
}

async fn extra_headers(State(headers): State<HeaderMap>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    for (name, value) in &headers {
        response.headers_mut().insert(name, value.clone());
    }
    response
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
