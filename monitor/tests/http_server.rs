//! The HTTP server's limits, against real sockets on loopback (no root):
//! each test makes a client misbehave and checks the server bounds it.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use monitor::{
    http::{ScrapeSource, router},
    metrics::Scrape,
    server::{self, Limits},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

struct Fixed;

impl ScrapeSource for Fixed {
    fn scrape(&self) -> Scrape {
        Scrape::showing_everything()
    }
}

/// A server on loopback; dropping `stop` (or sending on it) shuts it down.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start_app(app: Router, limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    Server { addr, stop, task }
}

async fn start(limits: Limits) -> Server {
    start_app(router(Arc::new(Fixed)), limits).await
}

/// Sends `request` and reads until the server closes, for at most 5 s.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server neither answered nor closed within 5s")
}

async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&out).into_owned()),
        // A reset still means the server dropped us.
        Ok(Err(_)) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: twmon\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn head_metrics_has_the_headers_and_no_body() {
    let server = start(Limits::default()).await;
    let response = exchange(
        server.addr,
        b"HEAD /metrics HTTP/1.1\r\nHost: twmon\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&response), "HTTP/1.1 200 OK", "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{response}"
    );
    let (_, body) = response.split_once("\r\n\r\n").expect("end of head");
    assert_eq!(body, "");
    let get = exchange(server.addr, &get_request("/metrics")).await;
    assert!(get.contains("twmon_build_info"), "{get}");
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let server = start(Limits::default()).await;
    for request in [
        "POST /metrics HTTP/1.1\r\nHost: twmon\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "DELETE /nowhere HTTP/1.1\r\nHost: twmon\r\nConnection: close\r\n\r\n",
        "OPTIONS / HTTP/1.1\r\nHost: twmon\r\nConnection: close\r\n\r\n",
    ] {
        let response = exchange(server.addr, request.as_bytes()).await;
        assert_eq!(status(&response), "HTTP/1.1 405 Method Not Allowed");
        assert!(response.contains("\r\nallow: GET, HEAD\r\n"), "{response}");
    }
}

#[tokio::test]
async fn request_bodies_are_refused() {
    let server = start(Limits::default()).await;
    let response = exchange(
        server.addr,
        b"GET /metrics HTTP/1.1\r\nHost: twmon\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(status(&response), "HTTP/1.1 413 Payload Too Large");
    let chunked = exchange(
        server.addr,
        b"GET /metrics HTTP/1.1\r\nHost: twmon\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&chunked), "HTTP/1.1 413 Payload Too Large");
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let server = start(Limits::default()).await;
    let big = "x".repeat(20 * 1024);
    let response = exchange(
        server.addr,
        format!("GET /metrics HTTP/1.1\r\nHost: twmon\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        status(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Just under the limit is still served.
    let fits = "x".repeat(12 * 1024);
    let response = exchange(
        server.addr,
        format!(
            "GET /healthz HTTP/1.1\r\nHost: twmon\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&response), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_dropped() {
    let timeout = Duration::from_millis(300);
    let server = start(Limits {
        header_read_timeout: timeout,
        ..Limits::default()
    })
    .await;
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    let started = Instant::now();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: twmon\r\n")
        .await
        .expect("write");
    let got = read_to_close(&mut slow, Duration::from_secs(5))
        .await
        .expect("still open 5s after a 300ms header timeout");
    let waited = started.elapsed();
    assert!(!got.contains("200 OK"), "{got}");
    assert!(
        waited >= timeout,
        "closed after {waited:?}, before the timeout"
    );
    // An idle keep-alive connection is closed on the same clock.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: twmon\r\n\r\n")
        .await
        .expect("write");
    let got = read_to_close(&mut idle, Duration::from_secs(5))
        .await
        .expect("idle connection still open after 5s");
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let server = start(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let first = TcpStream::connect(server.addr).await.expect("connect");
    let _second = TcpStream::connect(server.addr).await.expect("connect");
    let mut third = TcpStream::connect(server.addr).await.expect("connect");
    third
        .write_all(&get_request("/healthz"))
        .await
        .expect("write");
    assert_eq!(
        read_to_close(&mut third, Duration::from_millis(500)).await,
        None,
        "the third connection was served while two held both slots"
    );
    drop(first);
    let got = read_to_close(&mut third, Duration::from_secs(5))
        .await
        .expect("not served after a slot was freed");
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
}

#[tokio::test]
async fn a_slow_handler_gets_503() {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    );
    let server = start_app(
        app,
        Limits {
            request_timeout: Duration::from_millis(200),
            ..Limits::default()
        },
    )
    .await;
    let started = Instant::now();
    let response = exchange(server.addr, &get_request("/slow")).await;
    assert_eq!(status(&response), "HTTP/1.1 503 Service Unavailable");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_client_that_stops_reading_frees_its_slot() {
    // Far more than loopback socket buffers hold, so the write stalls.
    let app = Router::new()
        .route("/big", get(|| async { vec![b'x'; 64 << 20] }))
        .route("/healthz", get(|| async { "ok" }));
    let server = start_app(
        app,
        Limits {
            max_connections: 1,
            write_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled
        .write_all(&get_request("/big"))
        .await
        .expect("write");
    let started = Instant::now();
    // Only served once the stalled connection was dropped by the server.
    let response = exchange(server.addr, &get_request("/healthz")).await;
    assert_eq!(status(&response), "HTTP/1.1 200 OK");
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(stalled);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_or_stalled_clients() {
    let grace = Duration::from_millis(300);
    let server = start(Limits {
        shutdown_grace: grace,
        ..Limits::default()
    })
    .await;
    // One keep-alive connection after a request, one stuck mid-head.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: twmon\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
    stuck.write_all(b"GET /metrics HTT").await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    server.stop.send(()).expect("server running");
    server.task.await.expect("join").expect("serve");
    let took = started.elapsed();
    assert!(
        took < grace + Duration::from_millis(200),
        "shutdown took {took:?}"
    );
    // The idle connection was closed, not left dangling.
    assert_eq!(
        read_to_close(&mut idle, Duration::from_secs(1)).await,
        Some(String::new())
    );
    // And the port no longer accepts.
    assert!(TcpStream::connect(server.addr).await.is_err());
    drop(stuck);
}
