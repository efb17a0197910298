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
        event::{Closed, KernelEvent, Timewait},
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
    // Births span 1 s; the timer's slack at HZ=250 is 2.052 s.
    let now = 60_000_000_000 + 2_052_000_000 + 10_000_000;
    let started = Instant::now();
    table.expire_due(now);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(table.len() < N as usize);
    ms
}
