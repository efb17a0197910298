//! What the four-tuple table costs: memory per tracked timewait socket
//! (heap bytes, counted by a wrapping allocator), and time per event and
//! per scrape, printed as ratios against a plain HashMap doing the least
//! the table must do. Run with `cargo bench -p monitor --bench table`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::HashMap,
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use monitor::{
    model::{
        event::{Closed, KernelEvent, Process, Timewait},
        snapshot::{DiagSocket, Knobs, NetnsSnapshot, SnapshotRound},
        tcp::{Family, FourTuple, TcpState},
    },
    table::{Config, Filter, Order, Table},
};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: u32 = 1_000_000;

/// The i-th distinct four-tuple: a proxy's view, many ephemeral ports
/// toward a few hundred backends.
fn tuple(i: u32) -> FourTuple {
    FourTuple {
        saddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        sport: 1024 + (i % 60000) as u16,
        daddr: IpAddr::V4(Ipv4Addr::new(
            10,
            1,
            (i / 60000 / 256) as u8,
            (i / 60000) as u8,
        )),
        dport: 8080,
    }
}

fn birth(i: u32) -> KernelEvent {
    KernelEvent::TimewaitBirth(Timewait {
        ts_ns: u64::from(i) * 1000,
        skaddr: 0xffff_0000_0000 + u64::from(i) * 64,
        netns: Some(4026531840),
        family: Family::Ipv4,
        substate: TcpState::TimeWait,
        timeout_jiffies: 0,
        tuple: tuple(i),
        closer: None,
    })
}

fn main() {
    let events: Vec<KernelEvent> = (0..N).map(birth).collect();

    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut table = Table::new(Config::default());
    for e in &events {
        table.apply(e);
    }
    let table_ns = started.elapsed().as_nanos() as f64 / f64::from(N);
    let table_bytes = (LIVE.load(Ordering::Relaxed) - before) as f64 / f64::from(N);
    assert_eq!(table.len(), N as usize);

    // The least any table must do: one hash map entry per four-tuple with
    // a birth time.
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut plain: HashMap<FourTuple, u64> = HashMap::new();
    for i in 0..N {
        plain.insert(tuple(i), u64::from(i));
    }
    let plain_ns = started.elapsed().as_nanos() as f64 / f64::from(N);
    let plain_bytes = (LIVE.load(Ordering::Relaxed) - before) as f64 / f64::from(N);
    black_box(&plain);

    let started = Instant::now();
    let summary = table.summary(20, false);
    let summary_ms = started.elapsed().as_secs_f64() * 1e3;
    black_box(&summary);
    let started = Instant::now();
    let listed = table.list(&Filter::default(), Order::Age, 50);
    let list_ms = started.elapsed().as_secs_f64() * 1e3;
    black_box(&listed);

    let sweep_ms = sweep();
    let (confirm_ns, steady_ns, lookup_ns) = rounds();

    println!("table with {N} timewait sockets");
    println!(
        "  memory: {table_bytes:.0} bytes/entry (plain HashMap: {plain_bytes:.0}; ratio {:.2})",
        table_bytes / plain_bytes
    );
    println!(
        "  birth:  {table_ns:.0} ns/event (plain insert: {plain_ns:.0} ns; ratio {:.2})",
        table_ns / plain_ns
    );
    println!("  scrape summary (top 20): {summary_ms:.1} ms; oldest 50: {list_ms:.1} ms");
    println!("  expiry sweep (tracepoint-only mode, 1 % due): {sweep_ms:.1} ms");
    println!(
        "  snapshot round: {confirm_ns:.0} ns/socket confirming, {steady_ns:.0} ns/socket after \
         (plain lookup: {lookup_ns:.0} ns; ratio {:.2})",
        steady_ns / lookup_ns
    );
}

const NETNS: u32 = 4026531840;

/// Applying a snapshot round that lists every socket of a tracepoint-only
/// table, in an order unrelated to the table's (a dump walks the kernel's
/// hash): the first round confirms the derived births, later ones only
/// bring timers up to date. Returns ns per socket for both, and for a
/// plain HashMap lookup of each listed four-tuple.
fn rounds() -> (f64, f64, f64) {
    let mut table = Table::new(Config {
        derive_births: true,
        derive_deaths: true,
        ..Config::default()
    });
    let closer = Process {
        pid: 7,
        tid: 7,
        cgroup: 1,
        comm: monitor::model::event::Comm(*b"proxy\0\0\0\0\0\0\0\0\0\0\0"),
    };
    let mut plain: HashMap<FourTuple, u64> = HashMap::new();
    for i in 0..N {
        table.apply(&KernelEvent::Closed(Closed {
            ts_ns: u64::from(i),
            skaddr: 0xffff_0000_0000 + u64::from(i) * 64,
            netns: Some(NETNS),
            family: Family::Ipv4,
            tuple: tuple(i),
            from: TcpState::FinWait2,
            closer: Some(closer),
        }));
        plain.insert(tuple(i), u64::from(i));
    }
    // A fixed odd stride visits every index once, scattered.
    let order: Vec<u32> = (0..N)
        .map(|i| (i as u64 * 700_001 % u64::from(N)) as u32)
        .collect();
    let round = |taken_ns: u64| SnapshotRound {
        namespaces: vec![NetnsSnapshot {
            netns: NETNS,
            taken_ns,
            sockets: order
                .iter()
                .map(|&i| DiagSocket {
                    family: Family::Ipv4,
                    state: TcpState::TimeWait,
                    timewait: true,
                    expires_ms: 50_000,
                    tuple: tuple(i),
                })
                .collect(),
            knobs: Knobs::default(),
        }],
        existing: Some(vec![NETNS]),
    };
    let per_socket = |started: Instant| started.elapsed().as_nanos() as f64 / f64::from(N);
    let (first, second) = (round(2_000_000_000), round(3_000_000_000));
    let started = Instant::now();
    table.reconcile(&first);
    let confirm = per_socket(started);
    let started = Instant::now();
    table.reconcile(&second);
    let steady = per_socket(started);
    assert_eq!(table.len(), N as usize);
    let started = Instant::now();
    for &i in &order {
        if let Some(v) = plain.get_mut(&tuple(i)) {
            *v += 1;
        }
    }
    let lookup = per_socket(started);
    black_box(&plain);
    (confirm, steady, lookup)
}

/// One expiry sweep of a tracepoint-only table (births derived from
/// transitions, deaths from the timer) in which 1 % of entries are due.
fn sweep() -> f64 {
    let mut table = Table::new(Config {
        derive_births: true,
        derive_deaths: true,
        ..Config::default()
    });
    for i in 0..N {
        table.apply(&KernelEvent::Closed(Closed {
            ts_ns: u64::from(i) * 1000,
            skaddr: 0xffff_0000_0000 + u64::from(i) * 64,
            netns: Some(4026531840),
            family: Family::Ipv4,
            tuple: tuple(i),
            from: TcpState::FinWait2,
            closer: None,
        }));
    }
    // Births span 1 s; an entry is ended half a timer-wheel bucket after
    // its due time, 1.028 s at HZ=250: the first 10 ms of births are due.
    let now = 60_000_000_000 + 1_028_000_000 + 10_000_000;
    let started = Instant::now();
    table.expire_due(now);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    // Births at 0 through 10 ms inclusive.
    assert_eq!(table.len(), N as usize - 10_001);
    ms
}
