//! The HTTP server against real sockets on loopback (no root): each limit
//! test makes a client misbehave and checks the server bounds it; the web
//! config tests serve HTTPS with basic auth to a rustls client, and run the
//! daemon on broken configs.

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use monitor::{
    expose::{Exposed, View},
    model::hooks::{Hooks, Method},
    table::{Config, State},
    web::{
        config::WebConfig,
        routes::router,
        server::{self, Limits},
    },
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    },
};

use crate::util::{Pki, TWMON, read, tls_and_auth_yaml};

/// What the server serves: an empty table, every hook attached.
fn fixed() -> Arc<Exposed> {
    let state = State::new(Config::default());
    let hooks = Hooks::all(Method::Fentry);
    Arc::new(Exposed::replayed(
        state,
        hooks,
        String::new(),
        View::default(),
    ))
}

/// A server on loopback; dropping `stop` (or sending on it) shuts it down.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start_with(app: Router, web: WebConfig, limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::serve(listener, app, web, limits, async {
        let _ = stopped.await;
    }));
    Server { addr, stop, task }
}

async fn start_app(app: Router, limits: Limits) -> Server {
    start_with(app, WebConfig::default(), limits).await
}

async fn start(limits: Limits) -> Server {
    start_app(router(fixed()), limits).await
}

/// Sends `request` and reads until the server closes, for at most 5 s.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server neither answered nor closed within 5s")
}

async fn read_to_close(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<String> {
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

/// A connection to `server` from loopback address 127.0.0.`last`.
async fn connect_from(last: u8, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, last], 0)))
        .expect("bind a loopback address");
    socket.connect(server).await.expect("connect")
}

#[tokio::test]
async fn a_client_over_its_share_crowds_out_only_itself() {
    let server = start(Limits {
        max_per_client: 2,
        max_connections: 4,
        ..Limits::default()
    })
    .await;
    let mut oldest = connect_from(1, server.addr).await;
    let _second = connect_from(1, server.addr).await;
    // Its third takes the place of its oldest, which is closed.
    let mut third = connect_from(1, server.addr).await;
    third
        .write_all(&get_request("/healthz"))
        .await
        .expect("write");
    let got = read_to_close(&mut third, Duration::from_secs(5))
        .await
        .expect("the newest connection served");
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert_eq!(
        read_to_close(&mut oldest, Duration::from_secs(5)).await,
        Some(String::new()),
        "the oldest connection was not closed"
    );
    // Another client is not affected.
    let mut other = connect_from(2, server.addr).await;
    other
        .write_all(&get_request("/healthz"))
        .await
        .expect("write");
    let got = read_to_close(&mut other, Duration::from_secs(5))
        .await
        .expect("another client served");
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
}

#[tokio::test]
async fn when_full_a_new_client_takes_the_place_of_the_greediest() {
    let server = start(Limits {
        max_per_client: 8,
        max_connections: 3,
        ..Limits::default()
    })
    .await;
    let mut oldest = connect_from(1, server.addr).await;
    let _b = connect_from(1, server.addr).await;
    let _c = connect_from(1, server.addr).await;
    // Let the server take all three before the newcomer comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut newcomer = connect_from(2, server.addr).await;
    newcomer
        .write_all(&get_request("/healthz"))
        .await
        .expect("write");
    let got = read_to_close(&mut newcomer, Duration::from_secs(5))
        .await
        .expect("the newcomer served");
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert_eq!(
        read_to_close(&mut oldest, Duration::from_secs(5)).await,
        Some(String::new()),
        "the greediest client's oldest connection was not closed"
    );
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
    // While it holds the only slot, a newcomer holding no more than it
    // does is turned away.
    let response = exchange(server.addr, &get_request("/healthz")).await;
    assert_eq!(
        response, "",
        "served while the stalled client held the slot"
    );
    // Once its write has stalled past the timeout, the server drops it and
    // the slot is free again.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let response = exchange(server.addr, &get_request("/healthz")).await;
    assert_eq!(status(&response), "HTTP/1.1 200 OK");
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

// --- TLS and basic auth from a web config file ---------------------------

/// A rustls client trusting only `pki`'s CA, presenting its client
/// certificate if `with_cert`.
fn tls_client(pki: &Pki, with_cert: bool) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&read(&pki.path("ca.pem"))).expect("ca pem"))
        .expect("root");
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = if with_cert {
        let cert = CertificateDer::from_pem_slice(&read(&pki.path("client.pem"))).expect("cert");
        let key = PrivateKeyDer::from_pem_slice(&read(&pki.path("client.key"))).expect("key");
        builder
            .with_client_auth_cert(vec![cert], key)
            .expect("client cert")
    } else {
        builder.with_no_client_auth()
    };
    TlsConnector::from(Arc::new(config))
}

/// Sends `request` over TLS; `None` if the handshake fails.
async fn tls_exchange(addr: SocketAddr, client: &TlsConnector, request: &[u8]) -> Option<String> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = client.connect(name, tcp).await.ok()?;
    // With TLS 1.3 a refused client certificate only shows on first use.
    tls.write_all(request).await.ok()?;
    read_to_close(&mut tls, Duration::from_secs(5)).await
}

fn get_as(path: &str, user: &str, password: &str) -> Vec<u8> {
    let credentials = STANDARD.encode(format!("{user}:{password}"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Relative file names, resolved against the config's directory.
fn tls_and_auth(extra_tls: &str) -> String {
    tls_and_auth_yaml("prometheus", "s3cret", extra_tls)
}

async fn start_from_file(path: &Path) -> Server {
    let web = WebConfig::load(path).expect("valid web config");
    start_with(router(fixed()), web, Limits::default()).await
}

#[tokio::test]
async fn https_with_basic_auth_serves_only_the_right_credentials() {
    let pki = Pki::new("auth");
    let server = start_from_file(&pki.config(&tls_and_auth(""))).await;
    let client = tls_client(&pki, false);

    // The second time is answered from the remembered verification.
    for _ in 0..2 {
        let ok = tls_exchange(
            server.addr,
            &client,
            &get_as("/metrics", "prometheus", "s3cret"),
        )
        .await
        .expect("handshake");
        assert_eq!(status(&ok), "HTTP/1.1 200 OK", "{ok}");
        let lower = ok.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{ok}"
        );
        assert!(lower.contains("x-content-type-options: nosniff"), "{ok}");
        assert!(ok.contains("twmon_build_info"), "{ok}");
    }

    for request in [
        get_as("/metrics", "prometheus", "wrong"),
        get_as("/metrics", "nobody", "s3cret"),
        get_as("/healthz", "prometheus", ""),
        get_request("/metrics"),
    ] {
        let refused = tls_exchange(server.addr, &client, &request)
            .await
            .expect("handshake");
        assert_eq!(status(&refused), "HTTP/1.1 401 Unauthorized", "{refused}");
        assert!(
            refused.contains("\r\nwww-authenticate: Basic realm=\"twmon\"\r\n"),
            "{refused}"
        );
        assert!(!refused.contains("twmon_build_info"));
        // The configured headers go on refusals too.
        assert!(refused.contains("x-content-type-options: nosniff"));
    }
}

#[tokio::test]
async fn plain_http_on_the_https_port_is_refused_in_words() {
    let pki = Pki::new("plain");
    let server = start_from_file(&pki.config(&tls_and_auth(""))).await;
    let response = exchange(server.addr, &get_as("/metrics", "prometheus", "s3cret")).await;
    assert!(
        response.starts_with("HTTP/1.0 400 Bad Request"),
        "{response}"
    );
    assert!(response.contains("use https://"), "{response}");
    assert!(!response.contains("twmon_build_info"));
}

#[tokio::test]
async fn client_certificates_are_required_when_configured() {
    let pki = Pki::new("mtls");
    let extra = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n";
    let server = start_from_file(&pki.config(&tls_and_auth(extra))).await;
    let request = get_as("/metrics", "prometheus", "s3cret");
    let with_cert = tls_exchange(server.addr, &tls_client(&pki, true), &request).await;
    assert!(
        with_cert
            .as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200 OK")),
        "{with_cert:?}"
    );
    let without = tls_exchange(server.addr, &tls_client(&pki, false), &request).await;
    assert!(
        without.as_deref().is_none_or(|r| !r.contains("200 OK")),
        "served without a client certificate: {without:?}"
    );
}

// --- Broken web configs stop the daemon before it listens ----------------

/// Runs `twmon run` with `config` on a port this test holds. The config is
/// read before binding, so a config error must win over "port in use".
fn daemon_refuses(config: &Path) -> String {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let out = Command::new(TWMON)
        .args(["run", "--listen"])
        .arg(held.local_addr().expect("addr").to_string())
        .arg("--web.config.file")
        .arg(config)
        .env("RUST_LOG", "info")
        .output()
        .expect("running twmon");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("twmon: error: "), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "bound first: {stderr}");
    stderr
}

#[test]
fn broken_web_configs_are_one_line_errors_at_start() {
    let pki = Pki::new("broken");
    fs::write(pki.path("junk.pem"), "not a certificate\n").expect("write");
    let tls = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";
    let cases: &[(&str, &str)] = &[
        (
            "tls_server_config:\n  cert_file: a\n   key_file: b\n",
            "mapping values are not allowed in this context at line 3",
        ),
        (
            "tls_server_config:\n  cert_fil: server.pem\n",
            "unknown field `cert_fil`",
        ),
        ("tls_fonfig:\n  x: 1\n", "unknown field `tls_fonfig`"),
        (
            "tls_server_config:\n  cert_file: server.pem\n",
            "no key: set key_file",
        ),
        (
            "tls_server_config:\n  key_file: server.key\n",
            "no certificate: set cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: server.key\n",
            "cannot read cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: junk.pem\n  key_file: server.key\n",
            "holds no PEM certificate",
        ),
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: junk.pem\n",
            "no usable PEM private key",
        ),
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: ca.pem\n",
            "no usable PEM private key",
        ),
        ("tls_server_config:\n", "tls_server_config is empty"),
        ("basic_auth_users:\n  alice: hunter2\n", "not a bcrypt hash"),
        ("basic_auth_users: {}\n", "basic_auth_users is empty"),
        ("", "it sets nothing"),
        (
            &format!("{tls}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            "cipher_suites is not supported",
        ),
        (
            &format!("{tls}  min_version: TLS10\n"),
            "TLS 1.2 and 1.3 only",
        ),
        (
            &format!("{tls}  client_ca_file: ca.pem\n"),
            "set client_auth_type: RequireAndVerifyClientCert",
        ),
        (
            &format!("{tls}  client_auth_type: RequireAnyClientCert\n"),
            "without checking",
        ),
        (
            &format!("{tls}http_server_config:\n  http2: true\n"),
            "HTTP/1.1 only",
        ),
        (
            &format!("{tls}http_server_config:\n  headers:\n    Server: twmon\n"),
            "header \"Server\" cannot be set",
        ),
        (
            &format!("{tls}rate_limit:\n  burst: 1\n"),
            "rate_limit is not supported",
        ),
    ];
    for (yaml, want) in cases {
        let stderr = daemon_refuses(&pki.config(yaml));
        assert!(stderr.contains(want), "{yaml:?}: want {want:?} in {stderr}");
    }
    let stderr = daemon_refuses(&pki.path("absent.yml"));
    assert!(
        stderr.contains("cannot read the web config file") && stderr.contains("--web.config.file"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_example_web_config_loads_once_filled_in() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/web-config.example.yml");
    let text = fs::read_to_string(&example).expect("example");
    let pki = Pki::new("example");
    fs::copy(pki.path("server.pem"), pki.path("twmon.crt")).expect("copy");
    fs::copy(pki.path("server.key"), pki.path("twmon.key")).expect("copy");
    // As shipped, the placeholder refuses to start rather than lock no one out.
    let stderr = daemon_refuses(&pki.config(&text));
    assert!(stderr.contains("not a bcrypt hash"), "{stderr}");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let filled = text.replace("REPLACE_WITH_A_BCRYPT_HASH", &format!("'{hash}'"));
    let web = WebConfig::load(&pki.config(&filled)).expect("example with a hash");
    assert!(web.tls.is_some() && web.auth.is_some());
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One scrape from `from` (a loopback address), and how long it took.
fn timed_scrape(from: [u8; 4], server: SocketAddr) -> (String, Duration) {
    use std::io::{Read as _, Write as _};
    let start = Instant::now();
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind");
    socket.connect(&server.into()).expect("connect");
    let mut stream = std::net::TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: twmon\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    (out, start.elapsed())
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_thousand_hostile_connections_do_not_keep_a_scrape_out() {
    use std::io::Write as _;
    testkit::require_root();
    // Room for the flood's sockets in this process.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 8192, 8192)
        .expect("raising RLIMIT_NOFILE");
    let ns = testkit::TestNetns::new("hostile");
    let daemon = testkit::Daemon::start(Path::new(TWMON), &["--netns", &ns.path()]);
    let before = rss(daemon.child.id());
    // A thousand connections from one address: idle, stalled mid-head, and
    // sending a request without ever reading the answer.
    let mut flood = Vec::new();
    for i in 0..1000 {
        let mut s = std::net::TcpStream::connect(daemon.addr).expect("connect");
        match i % 3 {
            0 => {}
            1 => s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: tw")
                .expect("write"),
            _ => s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: twmon\r\n\r\n")
                .expect("write"),
        }
        flood.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss(daemon.child.id());
    // Another address, and the flood's own: both are answered promptly
    // (before per-client shares, this took the 10 s head timeout).
    for from in [[127, 0, 0, 2], [127, 0, 0, 1]] {
        let (answer, took) = timed_scrape(from, daemon.addr);
        assert!(
            answer.starts_with("HTTP/1.1 200 OK"),
            "from {from:?}: {answer:.200}"
        );
        assert!(took < Duration::from_secs(1), "from {from:?}: {took:?}");
    }
    // A connection holds a task and hyper's buffers: 16 of them (the
    // share of one address) stay well under 8 MiB.
    assert!(
        during.saturating_sub(before) < 8 << 20,
        "resident memory grew from {before} to {during} bytes"
    );
    drop(flood);
}

#[tokio::test]
async fn container_filters_say_what_they_need() {
    let server = start(Limits::default()).await;
    let empty = exchange(server.addr, &get_request("/api/v1/timewait?pod=")).await;
    assert_eq!(status(&empty), "HTTP/1.1 400 Bad Request", "{empty}");
    assert!(empty.contains("pod= is empty: give a pod uid"), "{empty}");
    // A replay has no host whose cgroups it could name.
    let replayed = exchange(server.addr, &get_request("/api/v1/timewait?cgroup=nginx")).await;
    assert_eq!(status(&replayed), "HTTP/1.1 400 Bad Request", "{replayed}");
    assert!(replayed.contains("need a live daemon"), "{replayed}");
    let summary = exchange(server.addr, &get_request("/api/v1/summary")).await;
    assert!(summary.contains(r#""by_cgroup":[]"#), "{summary}");
}
