//! twmon with the real Prometheus tooling: promtool on the exposition and on
//! the shipped alert rules, a real Prometheus server scraping a real twmon,
//! and the systemd unit through systemd-analyze.

use std::{
    fs,
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use testkit::{Daemon, TestNetns, client_closes_first, require_root, sample, try_http_get};

use crate::util::{Pki, TWMON, tls_and_auth_yaml};

/// `text` percent-encoded for a URL query.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

#[test]
#[ignore = "needs promtool (cargo xtask setup installs Debian's prometheus)"]
fn alert_and_recording_rules_pass_their_promtool_tests() {
    let dir = deploy().join("prometheus");
    run_ok(Command::new("promtool").current_dir(&dir).args([
        "check",
        "rules",
        "--lint=all",
        "--lint-fatal",
        "twmon-alerts.yml",
        "twmon-rules.yml",
    ]));
    for tests in ["twmon-alerts.test.yml", "twmon-rules.test.yml"] {
        let out = run_ok(
            Command::new("promtool")
                .current_dir(&dir)
                .args(["test", "rules", tests]),
        );
        assert!(out.contains("SUCCESS"), "{tests}: {out}");
    }
}

#[test]
#[ignore = "needs systemd-analyze"]
fn systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: nothing to verify");
        return;
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = fs::read_to_string(deploy().join("systemd/twmon.service")).expect("unit");
    let unit = unit.replace("/usr/local/bin/twmon", TWMON);
    let dir = std::env::temp_dir().join(format!("twmon-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("twmon.service");
    fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let _ = fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// A Prometheus server on loopback, killed on drop.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Scraping `target` plainly as job twmon, with the shipped rules.
    fn start(target: SocketAddr) -> Prometheus {
        Prometheus::start_with(
            "plain",
            &format!("  - job_name: twmon\n    static_configs:\n      - targets: ['{target}']\n"),
        )
    }

    /// `jobs` are entries of scrape_configs; `tag` names the data dir.
    pub fn start_with(tag: &str, jobs: &str) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let dir = std::env::temp_dir().join(format!("twmon-prom-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {alerts}\n  - {rules}\n\
             scrape_configs:\n{jobs}",
            alerts = deploy().join("prometheus/twmon-alerts.yml").display(),
            rules = deploy().join("prometheus/twmon-rules.yml").display()
        );
        fs::write(dir.join("prometheus.yml"), config).expect("config");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).expect("log file"))
            .spawn()
            .expect("starting prometheus");
        Prometheus { child, addr, dir }
    }

    /// Value of an instant query that returns one sample.
    fn query(&self, promql: &str) -> Option<f64> {
        let json = self.api(&format!("/api/v1/query?query={}", encode(promql)))?;
        let result = json["data"]["result"].as_array()?;
        let [one] = result.as_slice() else {
            return None;
        };
        one["value"][1].as_str()?.parse().ok()
    }

    /// A GET of the HTTP API, its JSON if it answered 200.
    pub fn api(&self, path: &str) -> Option<serde_json::Value> {
        let (status, _, body) = try_http_get(self.addr, path).ok()?;
        if !status.contains("200") {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// How many series a range query over the last two minutes returns,
    /// or Prometheus's error.
    pub fn query_range(&self, promql: &str) -> Result<usize, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={now}&step=1",
            encode(promql),
            now - 120
        );
        let (_, _, body) = try_http_get(self.addr, &path).map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if json["status"] != "success" {
            return Err(json["error"].to_string());
        }
        Ok(json["data"]["result"].as_array().map_or(0, Vec::len))
    }

    pub fn wait_for(&self, promql: &str, want: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.query(promql)
                && want(v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} never matched; last {:?}; log:\n{}",
                self.query(promql),
                fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs root and Debian's prometheus: run `cargo xtask test`"]
fn a_real_prometheus_scrapes_real_numbers() {
    require_root();
    let ns = TestNetns::new("prom");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let daemon = Daemon::start(
        Path::new(TWMON),
        &["--netns", &ns.path(), "--snapshot-interval", "200ms"],
    );

    // The exposition passes promtool's lint.
    let text = daemon.metrics();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = lint.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    const N: u64 = 20;
    ns.run_inside(|| {
        client_closes_first(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), N);
    });

    let prom = Prometheus::start(daemon.addr);
    prom.wait_for(r#"up{job="twmon"}"#, |v| v == 1.0);
    // Two scrapes at least, so rates and the alert rules have data.
    prom.wait_for(r#"count_over_time(up{job="twmon"}[1m])"#, |v| v >= 2.0);
    let closes = prom.wait_for(
        r#"twmon_tcp_state_transitions_total{from="FIN_WAIT2",to="CLOSE"}"#,
        |v| v >= N as f64,
    );
    assert_eq!(closes, N as f64);
    let (v4, _) = ns.ss_timewait();
    let population = prom.wait_for(
        r#"twmon_timewait_sockets{family="ipv4",substate="TIME_WAIT"}"#,
        |v| v == v4 as f64,
    );
    assert_eq!(population, v4 as f64);
    assert_eq!(prom.query("twmon_events_lost_total"), Some(0.0));
    // The rules loaded and nothing fires on a healthy twmon.
    assert_eq!(
        prom.query(r#"count(ALERTS{alertname="TwmonLosingEvents"})"#),
        None
    );
    let direct = sample(&daemon.metrics(), "twmon_events_total", "").unwrap_or(0.0);
    let scraped = prom.query("twmon_events_total").unwrap_or(-1.0);
    assert!(
        scraped > 0.0 && scraped <= direct,
        "scraped {scraped}, now {direct}"
    );

    let (status, _) = daemon.terminate();
    assert!(status.success());
}

#[test]
#[ignore = "needs root and Debian's prometheus: run `cargo xtask test`"]
fn a_real_prometheus_scrapes_over_https_with_basic_auth() {
    require_root();
    let pki = Pki::new("prom");
    let config = pki.config(&tls_and_auth_yaml("prometheus", "s3cret", ""));
    let daemon = Daemon::start(
        Path::new(TWMON),
        &[
            "--web.config.file",
            config.to_str().expect("utf-8 path"),
            "--snapshot-interval",
            "200ms",
        ],
    );
    let job = |name: &str, password: &str| {
        [
            format!("  - job_name: {name}"),
            "    scheme: https".into(),
            "    tls_config:".into(),
            format!("      ca_file: {}", pki.path("ca.pem").display()),
            "    basic_auth:".into(),
            "      username: prometheus".into(),
            format!("      password: {password}"),
            "    static_configs:".into(),
            format!("      - targets: ['{}']\n", daemon.addr),
        ]
        .join("\n")
    };
    let prom = Prometheus::start_with(
        "https",
        &format!("{}{}", job("twmon", "s3cret"), job("intruder", "guess")),
    );
    prom.wait_for(r#"up{job="twmon"}"#, |v| v == 1.0);
    prom.wait_for(r#"twmon_build_info{job="twmon"}"#, |v| v == 1.0);
    // The same target with a wrong password is scraped and refused.
    prom.wait_for(r#"up{job="intruder"}"#, |v| v == 0.0);
    assert_eq!(prom.query(r#"twmon_build_info{job="intruder"}"#), None);
    // Plain HTTP gets nothing from the HTTPS port.
    let plain = try_http_get(daemon.addr, "/metrics").map(|(status, _, _)| status);
    assert!(
        plain.as_deref().is_ok_and(|s| s.contains("400")),
        "{plain:?}"
    );

    let (status, _) = daemon.terminate();
    assert!(status.success());
}
