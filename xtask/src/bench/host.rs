//! What the bench needs from the host: network namespaces to churn in,
//! process CPU and memory from /proc, and plain HTTP GETs.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{output, run as sh};

/// A network namespace made for one series, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace with loopback up and the sysctls a churn needs: a
    /// wide port range, and room for a million timewait sockets.
    pub fn new(name: &str) -> Result<Netns> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        for (key, value) in [
            ("net.ipv4.ip_local_port_range", "1024 65535"),
            ("net.ipv4.tcp_max_tw_buckets", "4000000"),
            // A deep accept queue: an overflow drops a SYN, and the client
            // then waits a second to resend it.
            ("net.core.somaxconn", "65535"),
            // Reuse would take TIME_WAIT four-tuples over and change what
            // twmon sees between runs; the bench measures plain churn.
            ("net.ipv4.tcp_tw_reuse", "0"),
        ] {
            ns.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])?;
        }
        Ok(ns)
    }

    /// `ip netns exec NAME args...`, quietly; fails with its stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{args:?} in {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// TIME_WAIT sockets now, as `ss` counts them, and how long `ss` took.
    pub fn ss_timewait(&self) -> Result<(u64, Duration)> {
        let started = Instant::now();
        let text = self.exec(&["ss", "-tanH", "state", "time-wait"])?;
        Ok((text.lines().count() as u64, started.elapsed()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Timewait sockets allocated on the host, in all namespaces: the active
/// objects of the `tw_sock_TCP` slab cache. None where the kernel does not
/// list it (no /proc/slabinfo, or the cache merged into another).
pub fn timewait_objects() -> Option<u64> {
    let slabs = std::fs::read_to_string("/proc/slabinfo").ok()?;
    slabs
        .lines()
        .find_map(|l| l.strip_prefix("tw_sock_TCP "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Waits until a deleted namespace's timewait sockets are freed (a kernel
/// worker does it after `ip netns del`), so that work does not land in the
/// next run: until the host holds no more than `baseline` plus a slab's
/// worth of them. Measured here: about 200 ms for 290,000 sockets.
/// Without the slab count, a fixed 2 s, which always sufficed.
pub fn await_timewait_freed(baseline: Option<u64>) {
    const SLACK: u64 = 1024;
    let Some(baseline) = baseline else {
        std::thread::sleep(Duration::from_secs(2));
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while timewait_objects().is_some_and(|n| n > baseline + SLACK) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The last frees go through RCU.
    std::thread::sleep(Duration::from_millis(200));
}

/// CPU time a process has used (user + system), from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces: fields count from after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed /proc/PID/stat")
    };
    let hz = clock_ticks();
    Ok(Duration::from_secs_f64(
        (ticks(11)? + ticks(12)?) as f64 / hz,
    ))
}

fn clock_ticks() -> f64 {
    output(Command::new("getconf").arg("CLK_TCK"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no VmRSS in /proc/PID/status")
}

/// GETs `url` with curl, from namespace `netns` when given (a server
/// inside a namespace is reachable only from there); returns the body and
/// the request's own time as curl measures it, without curl's start-up.
pub fn http_get(netns: Option<&str>, url: &str) -> Result<(String, Duration)> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "curl"]);
            cmd
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args([
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code} %{time_total}",
            url,
        ])
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, tail) = text.rsplit_once('\n').context("curl printed nothing")?;
    let (code, secs) = tail.split_once(' ').context("curl's -w output")?;
    if code != "200" {
        bail!(
            "GET {url}: HTTP {code} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let secs: f64 = secs.parse().context("curl's time_total")?;
    Ok((body.to_string(), Duration::from_secs_f64(secs)))
}

/// The value of sample `name{labels}` in a Prometheus exposition (0 when
/// absent), summed over series when `labels` is empty and the metric has
/// labels.
pub fn sample(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name && (labels.is_empty() || rest == labels))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}
