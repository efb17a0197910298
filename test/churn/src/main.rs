//! `twmon-churn`: opens and closes loopback TCP connections as fast as its
//! threads can, in the network namespace it runs in, and prints one line:
//! `connections=N seconds=S rate=R errors=E`.
//!
//! Each client thread connects from source address 127.1.X.Y (one of
//! `--sources`) to 127.0.0.D (one of `--destinations`), so the four-tuples
//! spread over many source addresses, as on a proxy with several, and no
//! one destination runs out of ports. `--closer client` (the default)
//! closes from the client first, leaving TIME_WAIT on the client side;
//! `--closer server` closes from the server first. Each client thread has a
//! server thread of its own accepting on a shared listener.
//!
//! `cargo xtask bench` builds this in release mode and runs it with and
//! without twmon, alternating, to measure what twmon costs a busy host.

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

/// The destinations' port unless --port says otherwise.
const PORT: u16 = 7000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closer {
    Client,
    Server,
}

#[derive(Clone, Debug)]
struct Options {
    threads: usize,
    destinations: u16,
    sources: u16,
    duration: Duration,
    /// Stop after this many connections instead (across threads).
    connections: Option<u64>,
    /// At most this many connections a second (across threads), evenly
    /// spaced; as fast as possible without.
    rate: Option<u64>,
    /// The destinations' port (one churn per port in a namespace).
    port: u16,
    closer: Closer,
}

fn usage() -> String {
    "usage: twmon-churn [--threads N] [--destinations N] [--sources N] \
     [--seconds S | --connections N] [--rate PER_SECOND] [--port N] [--closer client|server]"
        .to_string()
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        threads: 1,
        destinations: 8,
        sources: 250,
        duration: Duration::from_secs(3),
        connections: None,
        rate: None,
        port: PORT,
        closer: Closer::Client,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value; {}", usage()))
        };
        let number = |v: &String| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} {v}: give a whole number above 0"))
        };
        match flag.as_str() {
            "--threads" => opts.threads = number(value()?)?.min(64) as usize,
            "--destinations" => opts.destinations = number(value()?)?.min(250) as u16,
            "--sources" => opts.sources = number(value()?)?.min(60000) as u16,
            "--seconds" => opts.duration = Duration::from_secs_f64(number(value()?)? as f64),
            "--connections" => opts.connections = Some(number(value()?)?),
            "--rate" => opts.rate = Some(number(value()?)?),
            "--port" => opts.port = number(value()?)?.min(65535) as u16,
            "--closer" => {
                opts.closer = match value()?.as_str() {
                    "client" => Closer::Client,
                    "server" => Closer::Server,
                    other => return Err(format!("--closer {other}: use client or server")),
                }
            }
            other => return Err(format!("unknown argument {other}; {}", usage())),
        }
    }
    Ok(opts)
}

/// 127.1.X.Y for source number `i`.
fn source(i: u16) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1)
}

/// 127.0.0.D:port for destination number `i`.
fn destination(i: u16, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, 0, 0, i as u8 + 1),
        port,
    ))
}

/// A client socket bound to `src` with the port left to connect(), which
/// then picks it per four-tuple rather than per source address.
fn client(src: Ipv4Addr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    Ok(socket)
}

struct Shared {
    opts: Options,
    stop: AtomicBool,
    made: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    /// Claims the next connection; false once the run is over.
    fn next(&self, started: Instant) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let over = match self.opts.connections {
            Some(max) => n >= max,
            None => started.elapsed() >= self.opts.duration,
        };
        if over {
            self.made.fetch_sub(1, Ordering::Relaxed);
            self.stop.store(true, Ordering::Relaxed);
            return None;
        }
        if let Some(rate) = self.opts.rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        Some(n)
    }
}

fn run_client(shared: &Shared, thread: usize, started: Instant) {
    let opts = &shared.opts;
    let mut i = thread as u64;
    while shared.next(started).is_some() {
        let src = source((i % u64::from(opts.sources)) as u16);
        let dst = destination(
            ((i / u64::from(opts.sources)) % u64::from(opts.destinations)) as u16,
            opts.port,
        );
        i += opts.threads as u64;
        let connected = client(src).and_then(|s| s.connect(&dst.into()).map(|()| s));
        match connected {
            Ok(socket) => {
                if opts.closer == Closer::Server {
                    let mut stream: TcpStream = socket.into();
                    let mut buf = [0u8; 16];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                }
                // Dropped: closed.
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Accepts until the run is over; `main` wakes it at the end with a
/// connection of its own.
fn run_server(listener: &TcpListener, closer: Closer, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok((mut conn, _)) = listener.accept()
            && closer == Closer::Client
        {
            let mut buf = [0u8; 16];
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// A listener on every address, with the deepest accept queue the
/// namespace allows (net.core.somaxconn): a queue that overflows drops a
/// SYN, and the client waits a second to send it again, which would
/// measure the retransmission timer instead of the churn.
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    socket.listen(65535)?;
    Ok(socket.into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("twmon-churn: {msg}");
            return ExitCode::from(2);
        }
    };
    let listener = match listen(opts.port) {
        Ok(l) => Arc::new(l),
        Err(err) => {
            eprintln!("twmon-churn: cannot listen on port {}: {err}", opts.port);
            return ExitCode::FAILURE;
        }
    };
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        stop: AtomicBool::new(false),
        made: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let servers: Vec<_> = (0..opts.threads)
        .map(|_| {
            let (listener, shared) = (listener.clone(), shared.clone());
            thread::spawn(move || run_server(&listener, shared.opts.closer, &shared.stop))
        })
        .collect();
    let started = Instant::now();
    let clients: Vec<_> = (0..opts.threads)
        .map(|t| {
            let shared = shared.clone();
            thread::spawn(move || run_client(&shared, t, started))
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let seconds = started.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    for _ in &servers {
        // Wakes one server blocked in accept(); it sees the stop flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, opts.port));
    }
    for s in servers {
        let _ = s.join();
    }
    let made = shared.made.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    println!(
        "connections={made} seconds={seconds:.3} rate={:.0} errors={errors}",
        made as f64 / seconds
    );
    ExitCode::SUCCESS
}
