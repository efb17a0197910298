//! Helpers for tests that run the real daemon against the real kernel, on
//! the host (`monitor/tests`) and inside the QEMU guest (`test/vmtest`):
//! start and scrape twmon, make TCP workloads, read the kernel's counters.
//! Everything here panics with a message on failure: it is test code.

mod proc_tcp;
pub mod replay_segments;
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

pub fn require_root() {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test loads eBPF programs and creates network namespaces: run it as root \
         (cargo xtask test)"
    );
}

/// A network namespace created for one test and deleted afterwards.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        let name = format!("twmon-{tag}-{}", std::process::id());
        // Left over from an earlier run with the same pid; usually absent.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        TestNetns { name }
    }

    /// Sets a sysctl inside the namespace (net.* sysctls are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        run(Command::new("ip").args([
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ]));
    }

    /// Non-zero TCP counters of the namespace (TcpExt and Tcp).
    pub fn netstat(&self) -> BTreeMap<String, u64> {
        let read = |file: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.name, "cat", file])
                .output()
                .expect("reading netstat");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        tcp_counters(&[read("/proc/net/netstat"), read("/proc/net/snmp")])
    }

    /// `ss -tan` state column, counted: for failure messages.
    pub fn ss_states(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ss", "-Htan"])
            .output()
            .expect("running ss");
        let mut counts = std::collections::BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(state) = line.split_whitespace().next() {
                *counts.entry(state.to_string()).or_insert(0) += 1;
            }
        }
        format!("{counts:?}")
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_netns(Path::new(&self.path()), f)
    }

    /// `ss -Htan state time-wait` inside the namespace: (ipv4, ipv6) counts.
    pub fn ss_timewait(&self) -> (u64, u64) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "ss",
                "-Htan",
                "state",
                "time-wait",
            ])
            .output()
            .expect("running ss");
        assert!(out.status.success(), "ss failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut v4, mut v6) = (0, 0);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // Local address column: `[::1]:port` for IPv6.
            if line.contains('[') {
                v6 += 1;
            } else {
                v4 += 1;
            }
        }
        (v4, v6)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Already gone when a test deleted it itself.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("spawning a command");
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// A running `twmon run`, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts the twmon binary `bin` with `args` after
    /// `run --listen 127.0.0.1:0` and waits until it serves; the real port
    /// comes from its log.
    pub fn start(bin: &Path, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(bin);
        // Tests count on snapshots every --snapshot-interval: no CPU budget
        // stretching it (on a loaded machine, or under QEMU's emulation, a
        // small dump can cost more than 1 % of a core over 200 ms).
        cmd.args(["run", "--listen", "127.0.0.1:0"])
            .args(["--snapshot-cpu-percent", "100"])
            .args(args);
        Daemon::start_cmd(cmd)
    }

    pub fn start_cmd(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting twmon");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        forward_lines(stderr, tx);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let line = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("twmon exited with {status} before serving: {seen:#?}");
                    }
                    if Instant::now() >= deadline {
                        // Not left running behind a failed test.
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("twmon did not start: {seen:#?}");
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("waiting for twmon");
                    panic!("twmon exited with {status} before serving: {seen:#?}");
                }
            };
            eprintln!("twmon: {line}");
            // "serving metrics on http[s]://ADDR/metrics[ (basic auth required)]"
            if let Some(rest) = line.split("serving metrics on ").nth(1) {
                let (_, url) = rest.split_once("://").expect("a URL");
                let (addr, _) = url.split_once("/metrics").expect("a /metrics URL");
                let addr = addr.parse().expect("address");
                return Daemon {
                    child,
                    addr,
                    log: rx,
                };
            }
            seen.push(line);
        }
    }

    /// GET `path`: (status line, headers, body).
    pub fn get(&self, path: &str) -> (String, String, String) {
        http_get(self.addr, path)
    }

    pub fn metrics(&self) -> String {
        let (status, headers, body) = self.get("/metrics");
        assert!(status.contains("200"), "GET /metrics: {status}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "wrong content type: {headers}"
        );
        body
    }

    /// Scrapes until `done` holds on the exposition, which is returned;
    /// fails after 30 s, showing the last scrape.
    pub fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.metrics();
            if done(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what} did not happen:\n{text}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits; returns the exit status and how long it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let start = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "twmon ignored SIGTERM"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(stderr: ChildStderr, tx: mpsc::Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// A minimal HTTP/1.0 GET, enough to read twmon's own endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`] that returns an error instead of panicking, for servers
/// that may not be up yet.
pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One write: `write!` sends the format's pieces one by one, and a server
    // that answers after the first bytes (plain HTTP on its TLS port) and
    // closes turns the later pieces into EPIPE before any answer is read.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if let Err(err) = stream.write_all(request.as_bytes()) {
        // Its answer may still be waiting to be read.
        if err.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(err);
        }
    }
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_string(), headers.to_string(), body.to_string()))
}

/// Creates a network namespace kept alive by a bind mount at `path` (as
/// `ip netns add` does, but without iproute2: the QEMU guest only has
/// busybox) and brings its loopback up.
pub fn create_netns_at(path: &Path) {
    use nix::{
        mount::{MsFlags, mount},
        sched::{CloneFlags, unshare},
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("creating the netns directory");
    }
    File::create(path).expect("creating the netns mount point");
    let path = path.to_path_buf();
    thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind-mounting the namespace");
        // A child forked from this thread starts in its namespace.
        let status = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("running ip");
        assert!(status.success(), "ip link set lo up: {status}");
    })
    .join()
    .expect("netns thread panicked");
}

/// Runs `f` on a thread inside the namespace bound at `path`.
pub fn run_in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(path).expect("opening the namespace file");
    thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

/// Non-zero `Tcp` and `TcpExt` counters from the texts of /proc/net/netstat
/// and /proc/net/snmp (pairs of lines: names, then values).
pub fn tcp_counters(texts: &[String]) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    for text in texts {
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let mut names = names.split_whitespace();
            let mut values = values.split_whitespace();
            let prefix = names.next().unwrap_or("").trim_end_matches(':').to_string();
            values.next();
            for (name, value) in names.zip(values) {
                if let Ok(v) = value.parse::<u64>()
                    && v != 0
                    && (prefix == "TcpExt" || prefix == "Tcp")
                {
                    counters.insert(format!("{prefix}.{name}"), v);
                }
            }
        }
    }
    counters
}

/// [`tcp_counters`] of the calling thread's namespace.
pub fn tcp_counters_here() -> BTreeMap<String, u64> {
    let read = |f: &str| fs::read_to_string(f).unwrap_or_default();
    tcp_counters(&[
        read("/proc/thread-self/net/netstat"),
        read("/proc/thread-self/net/snmp"),
    ])
}

/// TIME_WAIT sockets per family in the calling thread's namespace, read
/// from the same source as `ss` (state 06 in /proc/net/tcp and tcp6).
pub fn timewait_sockets_here() -> (u64, u64) {
    (
        sockets_in_state("tcp", "06"),
        sockets_in_state("tcp6", "06"),
    )
}

/// Makes `n` timewait sockets answer with an RST: each client closes while
/// its server keeps the connection open, so the client becomes an
/// orphaned FIN_WAIT2 timewait socket; data the server writes after that
/// is new data after a half-duplex close, which it refuses with an RST.
/// Run inside the namespace under test (IPv4 loopback).
///
/// A client whose peer's ACK the kernel takes from the socket's backlog
/// (the close still owns the socket) stays a full FIN_WAIT2 socket on its
/// keepalive timer instead (tcp_rcv_state_process, "Bad case"); its RST
/// would come from a full socket, so it gets no data and another
/// connection is made in its place. Rare, but seen under QEMU.
pub fn late_data_into_fin_wait2(n: u64) {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (mut targets, mut full) = (Vec::new(), Vec::new());
    while (targets.len() as u64) < n {
        assert!(
            full.len() as u64 <= n,
            "{} clients stayed full sockets",
            full.len()
        );
        let client = TcpStream::connect(addr).expect("connect");
        let port = client.local_addr().expect("client address").port();
        let (conn, _) = listener.accept().expect("accept");
        drop(client);
        if fin_wait2_as_timewait(port) {
            targets.push(conn);
        } else {
            full.push(conn);
        }
    }
    for conn in &mut targets {
        conn.write_all(b"late")
            .expect("writing after the peer's close");
    }
}

/// Waits (10 s at most) for the loopback client on `port` to reach
/// FIN_WAIT2 and says whether it is a timewait socket (timer 3 in
/// /proc/net/tcp) rather than a full socket.
fn fin_wait2_as_timewait(port: u16) -> bool {
    let local = format!(":{port:04X}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = proc_tcp::read("tcp");
        let found = proc_tcp::sockets(&table)
            .find(|s| s.local.ends_with(&local) && s.state == "05")
            .map(|s| s.timer.starts_with("03:"));
        if let Some(timewait) = found {
            return timewait;
        }
        assert!(
            Instant::now() < deadline,
            "client :{port} never reached FIN_WAIT2"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `done` every 10 ms; fails after 10 s naming `what`.
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sockets of /proc/thread-self/net/`file` (tcp or tcp6) in `state`.
fn sockets_in_state(file: &str, state: &str) -> u64 {
    proc_tcp::sockets(&proc_tcp::read(file))
        .filter(|s| s.state == state)
        .count() as u64
}

/// The value of the sample `name{labels}` in a text exposition. `labels`
/// is the exact label string, e.g. `family="ipv4"`, or empty.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `twmon_tcp_state_transitions_total{from,to}`, 0 when absent.
pub fn transitions(text: &str, from: &str, to: &str) -> f64 {
    sample(
        text,
        "twmon_tcp_state_transitions_total",
        &format!(r#"from="{from}",to="{to}""#),
    )
    .unwrap_or(0.0)
}

/// Opens and closes `n` connections to a fresh listener on `addr`, the
/// client closing first. The server closes only after reading EOF, so the
/// client always takes the FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT path (never
/// a simultaneous close). Returns the listener's address.
pub fn client_closes_first(addr: SocketAddr, n: u64) -> SocketAddr {
    let listener = TcpListener::bind(addr).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = thread::spawn(move || {
        for _ in 0..n {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 64];
            while conn.read(&mut buf).expect("read") > 0 {}
        }
    });
    for _ in 0..n {
        let client = TcpStream::connect(addr).expect("connect");
        // The FIN goes now, from this thread. A drop alone closes only the
        // last reference: a child another test thread forks at that moment
        // holds the fd until its exec, and the close is then its (seen in
        // CI as a closer named `ip`).
        client.shutdown(Shutdown::Write).expect("shutdown");
        drop(client);
    }
    server.join().expect("server thread");
    addr
}

/// Opens `n` connections to a fresh listener on `addr` and closes the
/// client side only: the server keeps its sockets (returned) open and
/// never sends its FIN, so each client ends as an orphaned FIN_WAIT2
/// socket, which lives only tcp_fin_timeout.
pub fn client_closes_server_holds(addr: SocketAddr, n: u64) -> Vec<TcpStream> {
    let listener = TcpListener::bind(addr).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let mut held = Vec::new();
    for _ in 0..n {
        let client = TcpStream::connect(addr).expect("connect");
        let (conn, _) = listener.accept().expect("accept");
        drop(client);
        held.push(conn);
    }
    held
}

/// Port exhaustion toward one destination: connects to a fresh listener
/// on `listen` and closes client-first, so each used local port stays in
/// TIME_WAIT, until connect() fails with EADDRNOTAVAIL (the caller makes
/// the port range tiny and tcp_tw_reuse 0). Returns (connections made,
/// EADDRNOTAVAIL failures seen); stops after `failures` failures.
pub fn exhaust_ports(listen: SocketAddr, failures: u64) -> (u64, u64) {
    const EADDRNOTAVAIL: i32 = 99;
    let listener = TcpListener::bind(listen).expect("bind listener");
    let server = listener.local_addr().expect("listener address");
    let (mut made, mut failed) = (0, 0);
    for _ in 0..1000 {
        match TcpStream::connect(server) {
            Ok(client) => {
                let (mut conn, _) = listener.accept().expect("accept");
                drop(client);
                let mut buf = [0u8; 16];
                while conn.read(&mut buf).expect("read EOF") > 0 {}
                made += 1;
            }
            Err(err) if err.raw_os_error() == Some(EADDRNOTAVAIL) => {
                failed += 1;
                if failed == failures {
                    break;
                }
            }
            Err(err) => panic!("connect failed otherwise: {err}"),
        }
    }
    (made, failed)
}

/// The hazard TIME_WAIT guards against, on purpose: the server closes
/// first (so the server side holds the four-tuple in TIME_WAIT), then a
/// client connects again from the same source port. Its SYN reaches the
/// server's timewait socket, which hands the four-tuple to the new
/// connection. Returns true when the second connection was established.
pub fn syn_into_server_timewait(listen: SocketAddr) -> bool {
    let listener = TcpListener::bind(listen).expect("bind listener");
    let server = listener.local_addr().expect("listener address");
    let any = SocketAddr::new(listen.ip(), 0);
    let first = reusable_client(any);
    first.connect(&server.into()).expect("first connect");
    let client_addr = first
        .local_addr()
        .expect("client address")
        .as_socket()
        .expect("inet address");
    let mut first = TcpStream::from(first);
    let (conn, _) = listener.accept().expect("accept first");
    drop(conn); // the server closes first
    let mut buf = [0u8; 16];
    while first.read(&mut buf).expect("read EOF") > 0 {}
    drop(first);
    // Let the final ACK land (server side now in TIME_WAIT) and the TCP
    // timestamp clock (milliseconds) move on, so the new SYN is newer.
    thread::sleep(Duration::from_millis(20));

    let second = reusable_client(client_addr);
    let connected = second.connect(&server.into()).is_ok();
    if connected {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if listener.accept().is_ok() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    false
}

/// A socket bound to `local` without SO_REUSEADDR (std's listeners set it
/// on Unix): the errno of the bind, if it failed, and the socket.
fn bind_plain(local: SocketAddr) -> (Option<i32>, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(local), Type::STREAM, None).expect("socket");
    let err = s.bind(&local.into()).err().and_then(|e| e.raw_os_error());
    (err, s)
}

/// The oldest TIME_WAIT symptom, client side: a client binds a port,
/// connects, closes first (its four-tuple stays in TIME_WAIT), then binds
/// the same address and port again. Returns the second bind's errno
/// (EADDRINUSE, with or without SO_REUSEADDR on the new socket, since the
/// old one did not set it) and the port.
pub fn rebind_a_port_in_timewait(listen: SocketAddr) -> (Option<i32>, u16) {
    let listener = TcpListener::bind(listen).expect("bind listener");
    let server = listener.local_addr().expect("listener address");
    let (err, client) = bind_plain(SocketAddr::new(listen.ip(), 0));
    assert_eq!(err, None, "binding the first client");
    let local = client
        .local_addr()
        .expect("local")
        .as_socket()
        .expect("inet");
    client.connect(&server.into()).expect("connect");
    let (mut conn, _) = listener.accept().expect("accept");
    drop(client); // the client closes first and keeps the TIME_WAIT
    let mut buf = [0u8; 16];
    while conn.read(&mut buf).expect("read EOF") > 0 {}
    drop(conn);
    thread::sleep(Duration::from_millis(50));
    let (err, _again) = bind_plain(local);
    (err, local.port())
}

/// The same, server side: a server without SO_REUSEADDR closes a
/// connection first (the server's port stays in TIME_WAIT), stops, and is
/// started again on its port. Returns the restart's bind errno and the
/// port.
pub fn restart_a_server_without_reuseaddr(listen: SocketAddr) -> (Option<i32>, u16) {
    let (err, server) = bind_plain(listen);
    assert_eq!(err, None, "binding the first server");
    server.listen(16).expect("listen");
    let addr = server
        .local_addr()
        .expect("local")
        .as_socket()
        .expect("inet");
    let mut client = TcpStream::connect(addr).expect("connect");
    let (conn, _) = server.accept().expect("accept");
    drop(conn); // the server closes first
    let mut buf = [0u8; 16];
    while client.read(&mut buf).expect("read EOF") > 0 {}
    drop(client);
    drop(server);
    thread::sleep(Duration::from_millis(50));
    let (err, _again) = bind_plain(addr);
    (err, addr.port())
}

/// A bind refused because a live listener holds the port: its errno and
/// the port.
pub fn bind_a_port_a_listener_holds(listen: SocketAddr) -> (Option<i32>, u16) {
    let listener = TcpListener::bind(listen).expect("bind listener");
    let addr = listener.local_addr().expect("address");
    let (err, _again) = bind_plain(addr);
    (err, addr.port())
}

/// A client socket bound to `local` with SO_REUSEADDR, so a port whose
/// four-tuple is in TIME_WAIT can be bound again (std cannot do this).
fn reusable_client(local: SocketAddr) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(local), Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.bind(&local.into()).expect("bind client");
    s
}

/// The textbook hazard from the client side: a client bound to a fixed
/// local port (SO_REUSEADDR) closes first, so that port's four-tuple to
/// the server sits in TIME_WAIT on the client, and connects again from the
/// same port to the same server. With TCP timestamps the kernel lets the
/// new connection take the four-tuple over (TcpExt.TWRecycled); without,
/// connect() fails with EADDRNOTAVAIL. Returns the second connect's result
/// and the client address used.
pub fn reconnect_from_same_port(listen: SocketAddr) -> (std::io::Result<()>, SocketAddr) {
    let listener = TcpListener::bind(listen).expect("bind listener");
    let server = listener.local_addr().expect("listener address");
    let first = reusable_client(SocketAddr::new(listen.ip(), 0));
    first.connect(&server.into()).expect("first connect");
    let client_addr = first
        .local_addr()
        .expect("client address")
        .as_socket()
        .expect("inet address");
    let (mut conn, _) = listener.accept().expect("accept first");
    drop(first); // the client closes first and keeps the TIME_WAIT
    let mut buf = [0u8; 16];
    while conn.read(&mut buf).expect("read EOF") > 0 {}
    drop(conn);
    // Let the server's FIN reach the client (FIN_WAIT2 -> TIME_WAIT) and
    // the millisecond timestamp clock move on.
    thread::sleep(Duration::from_millis(50));
    let second = reusable_client(client_addr);
    let result = second.connect(&server.into());
    if result.is_ok() {
        let (_conn, _) = listener.accept().expect("accept second");
    }
    (result, client_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_counters() {
        let netstat =
            "TcpExt: SyncookiesSent TW TWRecycled\nTcpExt: 0 200 3\nIpExt: InNoRoutes\nIpExt: 5\n";
        let counters = tcp_counters(&[netstat.to_string()]);
        assert_eq!(counters.get("TcpExt.TW"), Some(&200));
        assert_eq!(counters.get("TcpExt.TWRecycled"), Some(&3));
        assert_eq!(counters.get("TcpExt.SyncookiesSent"), None);
        assert_eq!(counters.get("IpExt.InNoRoutes"), None);
    }

    #[test]
    fn sample_does_not_match_prefixes() {
        let text = "# TYPE x counter\ntwmon_events_total_x 5\ntwmon_events_total 6\na{b=\"c\"} 7\n";
        assert_eq!(sample(text, "twmon_events_total", ""), Some(6.0));
        assert_eq!(sample(text, "a", r#"b="c""#), Some(7.0));
        assert_eq!(sample(text, "missing", ""), None);
    }
}
