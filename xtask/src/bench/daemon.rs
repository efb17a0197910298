//! The twmon under test, and node_exporter beside it: started, asked, and
//! stopped.

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
        unsafe { libc_kill(self.child.id() as i32, 15) };
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

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
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
