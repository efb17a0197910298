//! The twmon under test, and node_exporter and bpftrace beside it:
//! started, asked, and stopped.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::host::{http_get, sample};

/// A free loopback port (bound and released: a race the bench accepts).
pub fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// A process serving `/metrics` on `addr` (in namespace `netns`, when
/// given), killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    netns: Option<String>,
    what: String,
}

impl Server {
    /// Runs `cmd` (whose output goes to `log`) and waits until `ready_path`
    /// answers.
    pub fn start(
        mut cmd: Command,
        addr: SocketAddr,
        netns: Option<&str>,
        log: &Path,
    ) -> Result<Server> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let what = crate::util::display(&cmd);
        let child = cmd
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let mut server = Server {
            child,
            addr,
            netns: netns.map(str::to_string),
            what,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.get("/metrics").is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{} exited with {status}: see {}",
                    server.what,
                    log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer within 30 s: see {}",
                    server.what,
                    log.display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One scrape and how long it took.
    pub fn scrape(&self) -> Result<(String, Duration)> {
        self.get("/metrics")
    }

    fn get(&self, path: &str) -> Result<(String, Duration)> {
        http_get(
            self.netns.as_deref(),
            &format!("http://{}{path}", self.addr),
        )
    }

    /// SIGTERM, then waits; a twmon that does not exit 0 is a failure.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("{} exited with {status} on SIGTERM", self.what);
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lightest thing one would attach to watch TCP state transitions: a
/// bpftrace one-liner counting them, for scale beside twmon's overhead.
pub const BPFTRACE_COUNTER: &str = "tracepoint:sock:inet_sock_set_state { @n = count(); }";

/// bpftrace running [`BPFTRACE_COUNTER`], killed on drop.
pub struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    /// Starts it (output to `log`) and waits until its probe is attached.
    pub fn start(log: &Path) -> Result<Bpftrace> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("bpftrace")
            .args(["-e", BPFTRACE_COUNTER])
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .context("starting bpftrace")?;
        let mut b = Bpftrace { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(log)?.contains("Attaching") {
            if let Some(status) = b.child.try_wait()? {
                bail!("bpftrace exited with {status}: see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!("bpftrace did not attach within 30 s: see {}", log.display());
            }
            thread::sleep(Duration::from_millis(50));
        }
        // "Attaching" is printed before the attach itself.
        thread::sleep(Duration::from_millis(500));
        Ok(b)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT (bpftrace prints its map and exits), then waits.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// twmon watching every namespace, as deployed.
pub fn twmon(bin: &Path, log: &Path, extra: &[&str]) -> Result<Server> {
    let addr = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--listen", &addr.to_string()]).args(extra);
    Server::start(cmd, addr, None, log)
}

/// node_exporter with only its tcpstat collector, in namespace `netns`.
pub fn node_exporter(netns: &str, log: &Path) -> Result<Server> {
    let addr = free_port()?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "prometheus-node-exporter"])
        .args(["--collector.disable-defaults", "--collector.tcpstat"])
        .arg(format!("--web.listen-address={addr}"));
    Server::start(cmd, addr, Some(netns), log)
}

/// The population twmon reports (TIME_WAIT and FIN_WAIT2 timewait sockets).
pub fn population(metrics: &str) -> f64 {
    sample(metrics, "twmon_timewait_sockets", "")
}
