//! Helpers for tests that run the real daemon against the real kernel.
//! They need root; `cargo xtask test` runs them (they are #[ignore]d for a
//! plain `cargo test`).

#![allow(dead_code)] // each test binary uses a different subset

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
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
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
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

    /// Non-zero TCP counters of the namespace (TcpExt and Tcp), for
    /// failure messages and for comparing with the kernel's own numbers.
    pub fn netstat(&self) -> std::collections::BTreeMap<String, u64> {
        let mut counters = std::collections::BTreeMap::new();
        for file in ["/proc/net/netstat", "/proc/net/snmp"] {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.name, "cat", file])
                .output()
                .expect("reading netstat");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
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
        let file = File::open(self.path()).expect("opening the namespace file");
        thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("workload thread panicked")
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
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
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
    /// Starts twmon with `args` after `run --listen 127.0.0.1:0` and waits
    /// until it serves; the real port comes from its log.
    pub fn start(args: &[&str]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_twmon"));
        cmd.args(["run", "--listen", "127.0.0.1:0"]).args(args);
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
                    assert!(Instant::now() < deadline, "twmon did not start: {seen:#?}");
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("waiting for twmon");
                    panic!("twmon exited with {status} before serving: {seen:#?}");
                }
            };
            eprintln!("twmon: {line}");
            if let Some(rest) = line.split("serving metrics on http://").nth(1) {
                let addr = rest
                    .trim_end_matches("/metrics")
                    .trim()
                    .parse()
                    .expect("address");
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
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}
