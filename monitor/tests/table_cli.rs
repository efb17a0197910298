//! End to end on this machine's kernel: the user-facing views of the
//! four-tuple table (`twmon snapshot`, `twmon top`, `twmon record` and
//! `twmon replay`, the JSON API under /api/v1), run as a user would run
//! them against a real daemon and real connections in a private network
//! namespace, and checked against `ss`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{Daemon, TestNetns, client_closes_first, require_root, sample};

use crate::util::TWMON;

/// Connections per workload: all of them fit one default `--limit`.
const N: usize = 50;

/// Local and remote endpoint of one socket.
type Tuple = (SocketAddr, SocketAddr);

fn start(ns: &TestNetns) -> Daemon {
    Daemon::start(
        Path::new(TWMON),
        &["--netns", &ns.path(), "--snapshot-interval", "200ms"],
    )
}

/// A namespace where the TIME_WAIT population depends on the workload
/// alone: tcp_tw_reuse=2, the default, lets a loopback connect() take a
/// four-tuple over once its timestamp is a second old; and with
/// tcp_rfc1337=0 a late segment reaching the closed server's listener
/// draws an RST that kills the client's TIME_WAIT socket early (about one
/// run in three loses one of 50 here).
fn quiet_netns(tag: &str) -> TestNetns {
    let ns = TestNetns::new(tag);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    ns.sysctl("net.ipv4.tcp_rfc1337", "1");
    ns
}

/// `n` loopback connections closed client first, made from a thread in
/// the namespace. Returns the server's port and the comm of the thread
/// that closed them (a thread's comm is inherited from the thread that
/// spawned it, here the test harness's thread named after the test).
fn workload(ns: &TestNetns, n: usize) -> (u16, String) {
    workload_on(ns, Ipv4Addr::LOCALHOST.into(), n)
}

fn workload_on(ns: &TestNetns, ip: IpAddr, n: usize) -> (u16, String) {
    ns.run_inside(move || {
        let comm = fs::read_to_string("/proc/thread-self/comm").expect("reading comm");
        let server = client_closes_first(SocketAddr::new(ip, 0), n as u64);
        (server.port(), comm.trim_end_matches('\n').to_string())
    })
}

/// Polls `probe` every 100 ms until it gives a value; fails after 30 s
/// with `what` and the last thing `probe` said.
fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "{what} did not happen: {last}"),
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `ss -Htan [state time-wait]` inside the namespace, as lines.
fn ss(ns: &TestNetns, timewait_only: bool) -> Vec<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "ss", "-Htan"]);
    if timewait_only {
        cmd.args(["state", "time-wait"]);
    }
    let out = cmd.output().expect("running ss");
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The four-tuples `ss` lists in TIME_WAIT, once every socket of the
/// workload has got there (the server's FIN reaches the last clients
/// asynchronously). TIME_WAIT lasts 60 s: the set then holds still.
fn settled_timewait(ns: &TestNetns) -> BTreeSet<Tuple> {
    wait_until("only TIME_WAIT sockets left", || {
        let all = ss(ns, false);
        if all.is_empty() || all.iter().any(|l| !l.starts_with("TIME-WAIT")) {
            return Err(format!("{all:#?}"));
        }
        Ok(())
    });
    // With a state filter ss leaves the state column out:
    // Recv-Q Send-Q Local:Port Peer:Port.
    ss(ns, true)
        .iter()
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let parse = |s: &str| -> SocketAddr {
                s.parse()
                    .unwrap_or_else(|e| panic!("ss address {s:?} in {line:?}: {e}"))
            };
            (parse(cols[2]), parse(cols[3]))
        })
        .collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The four-tuple of a socket in the API's JSON.
fn tuple(s: &Value) -> Tuple {
    let addr = |a: &str, p: &str| {
        let ip: IpAddr = s[a].as_str().expect(a).parse().expect("an IP address");
        SocketAddr::new(ip, s[p].as_u64().expect(p) as u16)
    };
    (
        addr("local_addr", "local_port"),
        addr("remote_addr", "remote_port"),
    )
}

fn sockets(doc: &Value) -> &Vec<Value> {
    doc["sockets"]
        .as_array()
        .unwrap_or_else(|| panic!("no sockets array: {doc:#}"))
}

fn tuples(doc: &Value) -> BTreeSet<Tuple> {
    sockets(doc).iter().map(tuple).collect()
}

/// GET `path` from the daemon: must be 200 with JSON.
fn get_json(daemon: &Daemon, path: &str) -> Value {
    let (status, headers, body) = daemon.get(path);
    assert!(status.contains(" 200 "), "GET {path}: {status}\n{body}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "GET {path}: {headers}"
    );
    json(&body)
}

/// Waits until the daemon's table holds exactly `expected`, every entry
/// confirmed by a snapshot (births are derived from transitions here and
/// confirmed by the next sock_diag round), and returns the table.
fn wait_for_table(daemon: &Daemon, expected: &BTreeSet<Tuple>) -> Value {
    let n = expected.len() as f64;
    daemon.wait_for("every socket in the table", |t| {
        sample(t, "twmon_table_entries", "") == Some(n)
    });
    // Confirmed, and in TIME_WAIT as ss saw them settled: a socket first
    // dumped as an orphaned FIN_WAIT2 (the peer's FIN still in flight) turns
    // TIME_WAIT without an event in tracepoint-only mode, so only a snapshot
    // taken after that shows it. And with its closer: a producer stalled in
    // the ring holds records back, so a snapshot can adopt a socket before
    // its close is drained, which then explains it (seen in CI: 2 of 50
    // still without a closer 0.2 s after their birth).
    wait_until("every entry confirmed in TIME_WAIT with its closer", || {
        let doc = get_json(daemon, "/api/v1/timewait?limit=1000");
        let confirmed = sockets(&doc).iter().all(|s| {
            s["confirmed"] == Value::Bool(true)
                && s["substate"] == "TIME_WAIT"
                && !s["closer"].is_null()
        });
        if confirmed && tuples(&doc) == *expected {
            Ok(doc)
        } else {
            Err(format!("{doc:#}"))
        }
    })
}

fn twmon(args: &[&str]) -> Output {
    Command::new(TWMON)
        .args(args)
        .output()
        .expect("running twmon")
}

/// `twmon ARGS` run inside the namespace, as `ip netns exec` runs it.
fn twmon_in(ns: &TestNetns, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, TWMON])
        .args(args)
        .output()
        .expect("running twmon in the namespace")
}

/// stdout of a run that must have succeeded.
fn success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "twmon failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// [`workload`] of `N` connections, then the TIME_WAIT sockets it left:
/// one per connection (the server's port, the closer's comm, the set).
fn timewait_workload(ns: &TestNetns) -> (u16, String, BTreeSet<Tuple>) {
    let (port, comm) = workload(ns, N);
    let expected = settled_timewait(ns);
    assert_eq!(expected.len(), N, "ss: {expected:#?}");
    (port, comm, expected)
}

/// SIGTERM: the daemon must exit cleanly.
fn stop(daemon: Daemon) {
    let (status, _) = daemon.terminate();
    assert!(status.success(), "twmon exited with {status} after SIGTERM");
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn unused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn snapshot_lists_what_ss_lists_with_the_closing_process() {
    require_root();
    let ns = quiet_netns("snap");
    let daemon = start(&ns);
    let (server_port, comm) = workload(&ns, N);
    let (server6_port, _) = workload_on(&ns, Ipv6Addr::LOCALHOST.into(), N);
    let expected = settled_timewait(&ns);
    assert_eq!(expected.len(), 2 * N, "ss: {expected:#?}");
    wait_for_table(&daemon, &expected);
    let url = format!("http://{}", daemon.addr);

    let out = twmon(&["snapshot", "--json", "--limit", "1000", "--url", &url]);
    let doc = json(&success(&out));
    assert_eq!(doc["total"], 2 * N, "{doc:#}");
    assert_eq!(tuples(&doc), expected, "{doc:#}");
    for s in sockets(&doc) {
        assert_eq!(s["substate"], "TIME_WAIT", "{s:#}");
        let (local, _) = tuple(s);
        let (family, server) = match local {
            SocketAddr::V4(_) => ("ipv4", server_port),
            SocketAddr::V6(_) => ("ipv6", server6_port),
        };
        assert_eq!(s["family"], family, "{s:#}");
        assert_eq!(s["confirmed"], true, "{s:#}");
        let age = s["age_seconds"].as_f64().expect("age");
        let left = s["left_seconds"].as_f64().expect("left");
        assert!(age >= 0.0, "{s:#}");
        assert!((0.0..=60.0).contains(&left), "{s:#}");
        // The client side closed, so the server is the remote end.
        assert_eq!(s["remote_port"], server, "{s:#}");
        assert_eq!(s["closer"]["comm"], comm.as_str(), "{s:#}");
    }
    // Oldest first by default.
    let ages: Vec<f64> = sockets(&doc)
        .iter()
        .map(|s| s["age_seconds"].as_f64().expect("age"))
        .collect();
    assert!(ages.windows(2).all(|w| w[0] >= w[1]), "{ages:?}");

    // Filters, passed on to the daemon.
    let count = |extra: &[&str]| {
        let mut args = vec!["snapshot", "--json", "--url", &url];
        args.extend_from_slice(extra);
        let doc = json(&success(&twmon(&args)));
        sockets(&doc).len()
    };
    let port = server_port.to_string();
    // The default limit (50) shows all N.
    assert_eq!(count(&["--port", &port]), N);
    assert_eq!(count(&["--port", "1"]), 0);
    assert_eq!(count(&["--remote", "127.0.0.1"]), N);
    assert_eq!(count(&["--remote", "::1"]), N);
    assert_eq!(count(&["--remote", "192.0.2.1"]), 0);
    assert_eq!(count(&["--process", &comm, "--limit", "1000"]), 2 * N);
    assert_eq!(count(&["--process", "no-such-comm"]), 0);
    assert_eq!(count(&["--limit", "7"]), 7);
    // Lowest local ports first, and which ones: the 5 smallest ss has.
    let doc = json(&success(&twmon(&[
        "snapshot", "--json", "--sort", "port", "--limit", "5", "--url", &url,
    ])));
    let ports: Vec<u16> = sockets(&doc).iter().map(|s| tuple(s).0.port()).collect();
    let mut smallest: Vec<u16> = expected.iter().map(|t| t.0.port()).collect();
    smallest.sort_unstable();
    assert_eq!(ports, smallest[..5], "{doc:#}");

    // The text table: a header, one line per socket, a count.
    let text = success(&twmon(&["snapshot", "--limit", "1000", "--url", &url]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("LOCAL")
            && lines[0].contains("REMOTE")
            && lines[0].contains("PROCESS"),
        "{text}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("{0} shown of {0} timewait sockets", 2 * N).as_str()),
        "{text}"
    );
    assert_eq!(lines.len(), 2 * N + 2, "{text}");
    for (local, remote) in &expected {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{local} ")))
            .unwrap_or_else(|| panic!("{local} missing:\n{text}"));
        assert!(line.contains(&remote.to_string()), "{line}");
        assert!(line.contains("TIME_WAIT"), "{line}");
        assert!(line.contains(&format!(" {comm}[")), "{line}");
    }
    stop(daemon);
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn snapshot_without_a_daemon_reads_sock_diag_of_its_namespace() {
    require_root();
    let ns = quiet_netns("snapfb");
    let (server_port, _, expected) = timewait_workload(&ns);
    // Nothing listens in a fresh namespace: any port is unanswered.
    let url = format!("http://127.0.0.1:{}", unused_port());

    let out = twmon_in(
        &ns,
        &["snapshot", "--json", "--limit", "1000", "--url", &url],
    );
    let doc = json(&success(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("no daemon at {url}")), "{err}");
    assert!(err.contains("sock_diag"), "{err}");
    assert_eq!(doc["total"], N, "{doc:#}");
    assert_eq!(tuples(&doc), expected, "{doc:#}");
    for s in sockets(&doc) {
        assert_eq!(s["substate"], "TIME_WAIT", "{s:#}");
        assert_eq!(s["confirmed"], true, "{s:#}");
        assert_eq!(s["source"], "snapshot", "{s:#}");
        // Only a running daemon saw who closed.
        assert_eq!(s["closer"], Value::Null, "{s:#}");
        let left = s["left_seconds"].as_f64().expect("left");
        assert!(left > 0.0 && left <= 60.0, "{s:#}");
    }

    // Filters apply to the fallback too.
    let port = server_port.to_string();
    let args = ["snapshot", "--json", "--url", &url, "--port", &port];
    assert_eq!(sockets(&json(&success(&twmon_in(&ns, &args)))).len(), N);
    let args = ["snapshot", "--json", "--url", &url, "--remote", "192.0.2.1"];
    assert_eq!(sockets(&json(&success(&twmon_in(&ns, &args)))).len(), 0);

    // The host namespace does not hold the namespace's sockets.
    let out = twmon(&["snapshot", "--json", "--limit", "100000", "--url", &url]);
    let host = json(&success(&out));
    assert!(tuples(&host).is_disjoint(&expected), "{host:#}");
}

/// A tmux server of its own (socket `-S` in the temporary directory),
/// killed on drop so that a failed test leaves no session behind.
struct Tmux {
    socket: PathBuf,
    session: String,
}

impl Tmux {
    fn start(tag: &str, command: &str) -> Tmux {
        let session = format!("twmon-test-{tag}-{}", std::process::id());
        let tmux = Tmux {
            socket: std::env::temp_dir().join(&session),
            session,
        };
        let status = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                &tmux.session,
                "-x",
                "200",
                "-y",
                "50",
            ])
            .arg(command)
            .status()
            .expect("running tmux");
        assert!(status.success(), "tmux new-session: {status}");
        tmux
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("/usr/bin/tmux");
        cmd.arg("-S").arg(&self.socket);
        cmd
    }

    /// The visible screen; fails when the session (so the command) ended.
    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .expect("running tmux capture-pane");
        assert!(
            out.status.success(),
            "the tmux session ended (did the command exit?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for_screen(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        wait_until(what, || {
            let screen = self.screen();
            if done(&screen) {
                Ok(screen)
            } else {
                Err(screen)
            }
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
        // tmux leaves its socket file behind.
        let _ = fs::remove_file(&self.socket);
    }
}

/// The rows under "TOP CLOSING PROCESSES": (name, count) pairs from the
/// right-hand column.
fn top_processes(screen: &str) -> Vec<(String, u64)> {
    let mut lines = screen.lines();
    let Some(header) = lines.by_ref().find(|l| l.contains("TOP CLOSING PROCESSES")) else {
        return Vec::new();
    };
    let column = header.find("TOP CLOSING PROCESSES").expect("column");
    lines
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let right = l.get(column..)?.trim();
            let (name, count) = right.rsplit_once(char::is_whitespace)?;
            Some((name.trim().to_string(), count.parse().ok()?))
        })
        .collect()
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn top_shows_the_population_and_closers_and_survives_the_daemon() {
    require_root();
    let ns = quiet_netns("top");
    let daemon = start(&ns);
    let daemon_addr = daemon.addr;
    let url = format!("http://{daemon_addr}");
    let tmux = Tmux::start("top", &format!("{TWMON} top --url {url} --interval 200ms"));
    tmux.wait_for_screen("the first frame", |s| s.contains("timewait sockets: 0"));

    let (_, comm, expected) = timewait_workload(&ns);
    let population = format!("timewait sockets: {N} ");
    let screen = tmux.wait_for_screen("the workload on screen", |s| {
        s.contains(&population) && top_processes(s).contains(&(comm.clone(), N as u64))
    });
    assert!(screen.contains(&format!("ipv4 TIME_WAIT: {N}")), "{screen}");
    // Only the workload's process closed anything in the namespace.
    assert_eq!(top_processes(&screen), vec![(comm, N as u64)], "{screen}");
    let (_, server) = expected.first().expect("a socket");
    assert!(screen.contains(&format!("  {server} ")), "{screen}");

    stop(daemon);
    let screen = tmux.wait_for_screen("the retry line", |s| s.contains("nothing answers at"));
    assert!(screen.contains(&url), "{screen}");
    assert!(screen.contains("retrying every 200ms"), "{screen}");
    // It keeps retrying: a daemon started again on the same address is
    // picked up (it adopts the sockets from its first snapshot).
    let mut cmd = Command::new(TWMON);
    cmd.args(["run", "--listen", &daemon_addr.to_string()])
        .args(["--netns", &ns.path(), "--snapshot-interval", "200ms"])
        .args(["--snapshot-cpu-percent", "100"]);
    let again = Daemon::start_cmd(cmd);
    tmux.wait_for_screen("the new daemon on screen", |s| s.contains(&population));
    stop(again);
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("twmon-{name}-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Each socket's four-tuple with its closing process (comm and pid).
fn closers(doc: &Value) -> BTreeMap<Tuple, Value> {
    sockets(doc)
        .iter()
        .map(|s| (tuple(s), s["closer"].clone()))
        .collect()
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn replay_rebuilds_the_recorded_table() {
    require_root();
    let ns = quiet_netns("rec");
    let file = TempFile::new("recording");
    let mut cmd = Command::new(TWMON);
    cmd.args(["record", file.path(), "--listen", "127.0.0.1:0"])
        .args(["--netns", &ns.path(), "--snapshot-interval", "200ms"])
        .args(["--snapshot-cpu-percent", "100"]);
    let daemon = Daemon::start_cmd(cmd);
    let (_, comm, expected) = timewait_workload(&ns);
    let live = wait_for_table(&daemon, &expected);
    let summary = get_json(&daemon, "/api/v1/summary");
    let recovered = |t: &str| sample(t, "twmon_closers_recovered_total", "");
    let live_recovered = recovered(&daemon.metrics());
    stop(daemon);
    assert!(
        closers(&live)
            .values()
            .all(|c| c["comm"] == comm.as_str() && c["pid"].as_u64() > Some(0)),
        "{live:#}"
    );

    let out = twmon(&["replay", file.path(), "--json", "--limit", "1000"]);
    let replayed = json(&success(&out));
    assert_eq!(stderr(&out), "", "a whole recording replays silently");
    let timewait = &replayed["timewait"];
    assert_eq!(timewait["total"], live["total"], "{replayed:#}");
    assert_eq!(closers(timewait), closers(&live), "{replayed:#}");
    for s in sockets(timewait) {
        assert_eq!(s["substate"], "TIME_WAIT", "{s:#}");
        assert_eq!(s["confirmed"], true, "{s:#}");
    }
    let replayed_summary = &replayed["summary"];
    for field in [
        "entries",
        "population",
        "started",
        "exited",
        "collisions",
        "evictions",
        "events",
        "by_process",
        "by_remote",
        "pressure",
    ] {
        assert_eq!(
            replayed_summary[field], summary[field],
            "{field}: replayed {replayed_summary:#}\nlive {summary:#}"
        );
    }
    assert_eq!(summary["started"], N, "{summary:#}");
    assert!(replayed["collisions"]["totals"].is_object(), "{replayed:#}");

    // Served, the replay answers with the same documents (its clock stops
    // at the recording's end, so even the ages agree).
    let mut cmd = Command::new(TWMON);
    cmd.args(["replay", file.path(), "--listen", "127.0.0.1:0"]);
    let served = Daemon::start_cmd(cmd);
    assert_eq!(
        &get_json(&served, "/api/v1/timewait?limit=1000"),
        timewait,
        "served replay differs from printed replay"
    );
    let text = served.metrics();
    assert_eq!(
        sample(&text, "twmon_table_entries", ""),
        Some(N as f64),
        "{text}"
    );
    // Closers the live daemon found after a round are in the file too.
    assert_eq!(recovered(&text), live_recovered, "{text}");
    drop(served);

    // A recording cut while being written replays up to the cut.
    let bytes = fs::read(&file.0).expect("reading the recording");
    let cut = TempFile::new("recording-cut");
    fs::write(&cut.0, &bytes[..bytes.len() - 3]).expect("writing the cut copy");
    let out = twmon(&["replay", cut.path(), "--json", "--limit", "1000"]);
    let replayed = json(&success(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains("cut short"),
        "{err}"
    );
    assert!(replayed["timewait"]["sockets"].is_array(), "{replayed:#}");
    // The same in text.
    let out = twmon(&["replay", cut.path()]);
    let text = success(&out);
    assert!(text.contains("timewait sockets: "), "{text}");
    assert!(text.contains(" timewait sockets\n"), "{text}");
    assert!(stderr(&out).contains("cut short"), "{}", stderr(&out));

    // Anything else is refused in one line.
    for other in ["/etc/hostname", "/dev/null"] {
        let out = twmon(&["replay", other, "--json"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{other}: {err}");
        assert_eq!(err.lines().count(), 1, "{other}: {err}");
        assert!(err.starts_with("twmon: error: "), "{other}: {err}");
        assert!(err.contains("not a twmon recording"), "{other}: {err}");
        assert!(out.stdout.is_empty(), "{other}");
    }
    let out = twmon(&["replay", "/nonexistent/recording"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/recording"));
}

#[test]
#[ignore = "needs root and a kernel with BPF: run `cargo xtask test`"]
fn api_rejects_bad_parameters_by_name() {
    require_root();
    let ns = quiet_netns("api");
    let daemon = start(&ns);
    // One text line naming the parameter and what it takes (docs/api.md).
    for (path, message) in [
        (
            "/api/v1/timewait?limit=abc",
            r#"limit="abc" is not a count (e.g. limit=50)"#,
        ),
        (
            "/api/v1/timewait?sort=bogus",
            r#"sort="bogus": use age, left, remote, port or process"#,
        ),
        (
            "/api/v1/timewait?remote=not-an-ip",
            r#"remote="not-an-ip" is not an IP address (e.g. remote=10.0.0.2)"#,
        ),
        (
            "/api/v1/timewait?port=70000",
            r#"port="70000" is not a port number (e.g. port=443)"#,
        ),
        (
            "/api/v1/timewait?netns=x",
            r#"netns="x" is not a namespace inode"#,
        ),
        (
            "/api/v1/collisions?limit=-1",
            r#"limit="-1" is not a count (e.g. limit=50)"#,
        ),
        (
            "/api/v1/summary?top=many",
            r#"top="many" is not a count (e.g. top=10)"#,
        ),
    ] {
        let (status, headers, body) = daemon.get(path);
        assert!(status.contains(" 400 "), "{path}: {status}\n{body}");
        assert_eq!(body, format!("{message}\n"), "{path}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{path}: {headers}"
        );
    }
    let doc = get_json(&daemon, "/api/v1/collisions?limit=3");
    assert!(doc["totals"].is_object(), "{doc:#}");
    assert_eq!(doc["collisions"], serde_json::json!([]), "{doc:#}");

    let (_, comm, expected) = timewait_workload(&ns);
    wait_for_table(&daemon, &expected);
    let doc = get_json(&daemon, "/api/v1/timewait?limit=3&sort=left");
    assert_eq!(doc["total"], expected.len(), "{doc:#}");
    let left: Vec<f64> = sockets(&doc)
        .iter()
        .map(|s| s["left_seconds"].as_f64().expect("left"))
        .collect();
    assert_eq!(left.len(), 3, "{doc:#}");
    assert!(left.windows(2).all(|w| w[0] <= w[1]), "{left:?}");
    // 0 is allowed, unknown parameters are ignored, a process matches by
    // substring.
    let doc = get_json(&daemon, "/api/v1/timewait?limit=0&colour=blue");
    assert_eq!(doc["total"], expected.len(), "{doc:#}");
    assert_eq!(doc["sockets"], serde_json::json!([]), "{doc:#}");
    let part = &comm[1..comm.len() - 1];
    // Seen once in CI: 49 of 50 matched right after every entry had a
    // closer. Until that is understood, a socket the filter leaves out is
    // shown with its closer.
    let doc = get_json(&daemon, &format!("/api/v1/timewait?process={part}"));
    if tuples(&doc) != expected {
        let all = get_json(&daemon, "/api/v1/timewait?limit=1000");
        let odd: Vec<&Value> = sockets(&all)
            .iter()
            .filter(|s| !tuples(&doc).contains(&tuple(s)))
            .collect();
        panic!("process={part} left out {odd:#?}");
    }
    let summary = get_json(&daemon, "/api/v1/summary?top=1");
    assert_eq!(summary["entries"], expected.len(), "{summary:#}");
    assert_eq!(
        summary["by_process"],
        serde_json::json!([{ "label": comm, "count": expected.len() }]),
        "{summary:#}"
    );

    // Collisions: connect() failing with EADDRNOTAVAIL once the two ports
    // of the range are in TIME_WAIT toward the destination.
    const FAILURES: u64 = 5;
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40001");
    let (made, failed) = ns.run_inside(|| {
        testkit::exhaust_ports(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), FAILURES)
    });
    assert!(
        made >= 1 && failed == FAILURES,
        "made {made}, failed {failed}"
    );
    let doc = wait_until("every failure reported", || {
        let doc = get_json(&daemon, "/api/v1/collisions?limit=3");
        if doc["totals"]["eaddrnotavail"] == FAILURES {
            Ok(doc)
        } else {
            Err(format!("{doc:#}"))
        }
    });
    let recent = doc["collisions"].as_array().expect("collisions array");
    assert_eq!(recent.len(), 3, "{doc:#}");
    let mut ago = Vec::new();
    for c in recent {
        assert_eq!(c["kind"], "eaddrnotavail", "{c:#}");
        assert_eq!(c["remote_addr"], "127.0.0.1", "{c:#}");
        // No local port was had.
        assert_eq!(c["local_port"], Value::Null, "{c:#}");
        ago.push(c["ago_seconds"].as_f64().expect("ago"));
    }
    assert!(
        ago.windows(2).all(|w| w[0] <= w[1]),
        "newest first: {ago:?}"
    );
    let all = get_json(&daemon, "/api/v1/collisions");
    assert_eq!(
        all["collisions"].as_array().map(Vec::len),
        Some(FAILURES as usize),
        "{all:#}"
    );
    stop(daemon);
}
