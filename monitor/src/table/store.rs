//! The entries, stored compactly: a table of a million timewait sockets is
//! the daemon's whole memory, so each is kept in as few bytes as its facts
//! need.
//!
//! - IPv4 and IPv6 four-tuples live in maps of their own, so an IPv4 key is
//!   16 bytes, not the 44 a key of `IpAddr`s takes;
//! - an entry's fields pack into 32 bytes ([`Slot`]): its substate, origin,
//!   confirmation and snapshot mark share a byte, and who closed it is an
//!   index into an [`Interner`] of processes (a busy host has thousands of
//!   timewait sockets per closing process, not one each);
//! - no insertion-order queue: at capacity the oldest entries are found by
//!   their birth time, a batch at a time.
//!
//! Callers see [`Key`]s and [`Entry`]s as ever; this module alone knows the
//! packing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use foldhash::HashMap;

use super::entry::{Entry, Key, Origin};
use crate::model::{
    event::Process,
    tcp::{Family, FourTuple, TcpState},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct K4 {
    netns: u32,
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: u16,
    dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct K6 {
    netns: u32,
    sport: u16,
    dport: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// An entry as stored.
#[derive(Clone, Copy, Debug)]
struct Slot {
    born_ns: u64,
    expires_ns: u64,
    skaddr: u64,
    /// [`Interner`] id of the closing process; 0 for none.
    closer: u32,
    segments: u16,
    /// Bits 0-3 the substate, 4-5 the origin, 6 confirmed, 7 the mark of
    /// the snapshot round that last listed it.
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);
const _: () = assert!(std::mem::size_of::<K4>() == 16);

const CONFIRMED: u8 = 1 << 6;
const SEEN: u8 = 1 << 7;

fn origin_bits(o: Origin) -> u8 {
    match o {
        Origin::Probe => 0,
        Origin::Transition => 1,
        Origin::Snapshot => 2,
    }
}

fn origin_of(bits: u8) -> Origin {
    match (bits >> 4) & 3 {
        0 => Origin::Probe,
        1 => Origin::Transition,
        _ => Origin::Snapshot,
    }
}

/// Processes that closed entries, each kept once with a count of the
/// entries naming it.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<Process, u32>,
    /// Index id - 1: the process and how many entries name it.
    slots: Vec<(Process, u32)>,
    free: Vec<u32>,
}

impl Interner {
    fn acquire(&mut self, p: Option<Process>) -> u32 {
        let Some(p) = p else { return 0 };
        if let Some(&id) = self.ids.get(&p) {
            self.slots[id as usize - 1].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize - 1] = (p, 1);
                id
            }
            None => {
                self.slots.push((p, 1));
                self.slots.len() as u32
            }
        };
        self.ids.insert(p, id);
        id
    }

    fn release(&mut self, id: u32) {
        let Some(slot) = id
            .checked_sub(1)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            return;
        };
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 == 0 {
            self.ids.remove(&slot.0);
            self.free.push(id);
        }
    }

    fn get(&self, id: u32) -> Option<Process> {
        let i = id.checked_sub(1)?;
        self.slots.get(i as usize).map(|(p, _)| *p)
    }
}

fn v4(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

impl K4 {
    fn of(k: &Key) -> K4 {
        K4 {
            netns: k.netns,
            saddr: v4(k.tuple.saddr),
            daddr: v4(k.tuple.daddr),
            sport: k.tuple.sport,
            dport: k.tuple.dport,
        }
    }

    fn key(&self) -> Key {
        Key {
            netns: self.netns,
            family: Family::Ipv4,
            tuple: FourTuple {
                saddr: IpAddr::V4(Ipv4Addr::from(self.saddr)),
                sport: self.sport,
                daddr: IpAddr::V4(Ipv4Addr::from(self.daddr)),
                dport: self.dport,
            },
        }
    }
}

impl K6 {
    fn of(k: &Key) -> K6 {
        K6 {
            netns: k.netns,
            sport: k.tuple.sport,
            dport: k.tuple.dport,
            saddr: v6(k.tuple.saddr),
            daddr: v6(k.tuple.daddr),
        }
    }

    fn key(&self) -> Key {
        Key {
            netns: self.netns,
            family: Family::Ipv6,
            tuple: FourTuple {
                saddr: IpAddr::V6(Ipv6Addr::from(self.saddr)),
                sport: self.sport,
                daddr: IpAddr::V6(Ipv6Addr::from(self.daddr)),
                dport: self.dport,
            },
        }
    }
}

fn unpacked(s: &Slot, closers: &Interner) -> Entry {
    Entry {
        substate: TcpState::from_kernel(s.flags & 0xf).unwrap_or(TcpState::TimeWait),
        origin: origin_of(s.flags),
        confirmed: s.flags & CONFIRMED != 0,
        born_ns: s.born_ns,
        expires_ns: s.expires_ns,
        skaddr: s.skaddr,
        segments: u32::from(s.segments),
        closer: closers.get(s.closer),
    }
}

/// `e` as stored, its closer interned as `closer`.
fn packed(e: &Entry, closer: u32, seen: bool) -> Slot {
    let mut flags = (e.substate as u8 & 0xf) | (origin_bits(e.origin) << 4);
    if e.confirmed {
        flags |= CONFIRMED;
    }
    if seen {
        flags |= SEEN;
    }
    Slot {
        born_ns: e.born_ns,
        expires_ns: e.expires_ns,
        skaddr: e.skaddr,
        closer,
        segments: u16::try_from(e.segments).unwrap_or(u16::MAX),
        flags,
    }
}

/// Every timewait socket the table tracks.
#[derive(Debug, Default)]
pub(super) struct Store {
    v4: HashMap<K4, Slot>,
    v6: HashMap<K6, Slot>,
    closers: Interner,
}

impl Store {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn slot(&self, k: &Key) -> Option<&Slot> {
        match k.family {
            Family::Ipv4 => self.v4.get(&K4::of(k)),
            Family::Ipv6 => self.v6.get(&K6::of(k)),
        }
    }

    fn entry(&self, s: &Slot) -> Entry {
        unpacked(s, &self.closers)
    }

    fn pack(&mut self, e: &Entry, seen: bool) -> Slot {
        packed(e, self.closers.acquire(e.closer), seen)
    }

    fn unpack(&mut self, s: Slot) -> Entry {
        let e = self.entry(&s);
        self.closers.release(s.closer);
        e
    }

    pub fn get(&self, k: &Key) -> Option<Entry> {
        self.slot(k).map(|s| self.entry(s))
    }

    pub fn contains(&self, k: &Key) -> bool {
        self.slot(k).is_some()
    }

    /// Inserts or replaces the entry at `k` with the given mark; returns
    /// the one replaced.
    pub fn insert(&mut self, k: Key, e: &Entry, mark: bool) -> Option<Entry> {
        let slot = self.pack(e, mark);
        let old = match k.family {
            Family::Ipv4 => self.v4.insert(K4::of(&k), slot),
            Family::Ipv6 => self.v6.insert(K6::of(&k), slot),
        };
        old.map(|s| self.unpack(s))
    }

    pub fn remove(&mut self, k: &Key) -> Option<Entry> {
        let old = match k.family {
            Family::Ipv4 => self.v4.remove(&K4::of(k)),
            Family::Ipv6 => self.v6.remove(&K6::of(k)),
        };
        old.map(|s| self.unpack(s))
    }

    /// Changes the entry at `k` with `f`, keeping its mark; false when
    /// there is none.
    pub fn update(&mut self, k: &Key, f: impl FnOnce(&mut Entry)) -> bool {
        self.modify(k, None, f)
    }

    /// Changes the entry at `k` with `f` and marks it as listed by the
    /// round whose mark is `mark`; false when there is none. What a
    /// snapshot does to each socket it lists, in one lookup: at a million
    /// sockets each lookup is a cache miss, and a round did three.
    pub fn update_marked(&mut self, k: &Key, mark: bool, f: impl FnOnce(&mut Entry)) -> bool {
        self.modify(k, Some(mark), f)
    }

    fn modify(&mut self, k: &Key, mark: Option<bool>, f: impl FnOnce(&mut Entry)) -> bool {
        let slot = match k.family {
            Family::Ipv4 => self.v4.get_mut(&K4::of(k)),
            Family::Ipv6 => self.v6.get_mut(&K6::of(k)),
        };
        let Some(slot) = slot else {
            return false;
        };
        let mut e = unpacked(slot, &self.closers);
        let closer = e.closer;
        f(&mut e);
        let id = if e.closer == closer {
            slot.closer
        } else {
            self.closers.release(slot.closer);
            self.closers.acquire(e.closer)
        };
        *slot = packed(&e, id, mark.unwrap_or(slot.flags & SEEN != 0));
        true
    }

    /// Every entry, with whether it carries `mark`.
    pub fn iter(&self, mark: bool) -> impl Iterator<Item = (Key, Entry, bool)> + '_ {
        let marked = move |s: &Slot| (s.flags & SEEN != 0) == mark;
        let v4 = self
            .v4
            .iter()
            .map(move |(k, s)| (k.key(), self.entry(s), marked(s)));
        let v6 = self
            .v6
            .iter()
            .map(move |(k, s)| (k.key(), self.entry(s), marked(s)));
        v4.chain(v6)
    }

    /// The entries of namespace `netns` whose local port is `port`. A scan:
    /// only for what is rare (a refused bind on a port the table holds).
    pub fn with_local_port(&self, netns: u32, port: u16) -> Vec<(Key, Entry)> {
        let v4 = self
            .v4
            .iter()
            .filter(|(k, _)| k.netns == netns && k.sport == port)
            .map(|(k, s)| (k.key(), self.entry(s)));
        let v6 = self
            .v6
            .iter()
            .filter(|(k, _)| k.netns == netns && k.sport == port)
            .map(|(k, s)| (k.key(), self.entry(s)));
        v4.chain(v6).collect()
    }

    /// The keys of the entries due by `cutoff`, and the earliest due time
    /// of the rest (`u64::MAX` for none).
    pub fn due(&self, cutoff: u64) -> (Vec<Key>, u64) {
        let mut due = Vec::new();
        let mut next = u64::MAX;
        let mut look = |expires_ns: u64, key: &dyn Fn() -> Key| {
            if expires_ns <= cutoff {
                due.push(key());
            } else {
                next = next.min(expires_ns);
            }
        };
        for (k, s) in &self.v4 {
            look(s.expires_ns, &|| k.key());
        }
        for (k, s) in &self.v6 {
            look(s.expires_ns, &|| k.key());
        }
        (due, next)
    }

    /// The `n` oldest entries' keys (by birth).
    pub fn oldest(&self, n: usize) -> Vec<Key> {
        let mut all: Vec<(u64, Key)> = self
            .v4
            .iter()
            .map(|(k, s)| (s.born_ns, k.key()))
            .chain(self.v6.iter().map(|(k, s)| (s.born_ns, k.key())))
            .collect();
        if n < all.len() {
            all.select_nth_unstable_by_key(n, |(born, _)| *born);
            all.truncate(n);
        }
        all.into_iter().map(|(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Comm;

    fn key(family: Family, sport: u16) -> Key {
        let (s, d): (IpAddr, IpAddr) = match family {
            Family::Ipv4 => ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()),
            Family::Ipv6 => ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()),
        };
        Key {
            netns: 7,
            family,
            tuple: FourTuple {
                saddr: s,
                sport,
                daddr: d,
                dport: 80,
            },
        }
    }

    fn entry(comm: Option<&str>) -> Entry {
        Entry {
            substate: TcpState::FinWait2,
            origin: Origin::Snapshot,
            confirmed: true,
            born_ns: 1,
            expires_ns: 60_000_000_001,
            skaddr: 0xffff_8880_0000_1000,
            segments: 3,
            closer: comm.map(|c| Process {
                pid: 42,
                tid: 43,
                cgroup: 7,
                comm: Comm::new(c),
            }),
        }
    }

    #[test]
    fn entries_come_back_as_they_went_in() {
        let mut s = Store::default();
        for family in [Family::Ipv4, Family::Ipv6] {
            let k = key(family, 40000);
            assert_eq!(s.insert(k, &entry(Some("curl")), false), None);
            assert_eq!(s.get(&k), Some(entry(Some("curl"))));
            assert!(s.update(&k, |e| e.segments = 70_000));
            assert_eq!(s.get(&k).map(|e| e.segments), Some(u32::from(u16::MAX)));
            let (got, e, _) = s.iter(false).find(|(g, _, _)| *g == k).unwrap();
            assert_eq!((got, e.closer), (k, entry(Some("curl")).closer));
        }
        assert_eq!(s.len(), 2);
        assert!(s.remove(&key(Family::Ipv4, 40000)).is_some());
        assert!(!s.contains(&key(Family::Ipv4, 40000)));
    }

    #[test]
    fn closers_are_kept_once_and_freed_with_their_last_entry() {
        let mut s = Store::default();
        for port in 0..100 {
            s.insert(key(Family::Ipv4, port), &entry(Some("nginx")), false);
        }
        s.insert(key(Family::Ipv4, 100), &entry(None), false);
        assert_eq!(s.closers.ids.len(), 1);
        for port in 0..100 {
            s.remove(&key(Family::Ipv4, port));
        }
        assert!(s.closers.ids.is_empty());
        // A freed id is reused.
        s.insert(key(Family::Ipv4, 1), &entry(Some("curl")), false);
        assert_eq!(s.closers.slots.len(), 1);
        assert_eq!(
            s.get(&key(Family::Ipv4, 1)).unwrap().closer,
            entry(Some("curl")).closer
        );
    }

    #[test]
    fn marks_survive_updates_and_the_oldest_are_found() {
        let mut s = Store::default();
        for port in 0..10u16 {
            let e = Entry {
                born_ns: u64::from(10 - port),
                ..entry(None)
            };
            s.insert(key(Family::Ipv6, port), &e, false);
        }
        s.update_marked(&key(Family::Ipv6, 3), true, |_| {});
        s.update(&key(Family::Ipv6, 3), |e| e.segments += 1);
        let marked: Vec<Key> = s
            .iter(true)
            .filter(|(_, _, m)| *m)
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(marked, vec![key(Family::Ipv6, 3)]);
        let mut oldest = s.oldest(2);
        oldest.sort();
        assert_eq!(oldest, vec![key(Family::Ipv6, 8), key(Family::Ipv6, 9)]);
    }
}
