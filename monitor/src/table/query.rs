//! Listing the table: which entries ([`Filter`]), in which [`Order`].

use std::{
    cmp::Ordering,
    collections::{BTreeSet, BinaryHeap},
    fmt,
    net::IpAddr,
    str::FromStr,
};

use super::{
    Table,
    entry::{Entry, Key},
};

/// How to order a listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    #[default]
    Age,
    /// Least time left first.
    Left,
    Remote,
    /// Local port.
    Port,
    /// Closing process's name.
    Process,
}

impl Order {
    pub const ALL: [Order; 5] = [
        Order::Age,
        Order::Left,
        Order::Remote,
        Order::Port,
        Order::Process,
    ];

    /// The name the CLI (`--sort`), the API (`sort=`) and the client use.
    pub fn name(self) -> &'static str {
        match self {
            Order::Age => "age",
            Order::Left => "left",
            Order::Remote => "remote",
            Order::Port => "port",
            Order::Process => "process",
        }
    }

    /// What the order means, for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Order::Age => "oldest first",
            Order::Left => "least time left first",
            Order::Remote => "by remote address and port",
            Order::Port => "by local port",
            Order::Process => "by the name of the process that closed first",
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> Result<Order, String> {
        Order::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| format!("{s:?}: use age, left, remote, port or process"))
    }
}

/// What to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Remote address.
    pub remote: Option<IpAddr>,
    /// Local or remote port.
    pub port: Option<u16>,
    /// Substring of the closing process's name.
    pub process: Option<String>,
    pub netns: Option<u32>,
    /// Only entries attributed to one of these (netns, cgroup id) pairs, as
    /// [`Table::cgroup_keys`] lists them: what a container or pod filter
    /// resolves to once the exposition has named the cgroups.
    pub cgroups: Option<BTreeSet<(u32, u64)>>,
}

impl Filter {
    pub fn matches(&self, key: &Key, entry: &Entry) -> bool {
        self.cgroups
            .as_ref()
            .is_none_or(|keys| keys.contains(&(key.netns, entry.cgroup())))
            && self.remote.is_none_or(|r| key.tuple.daddr == r)
            && self
                .port
                .is_none_or(|p| key.tuple.sport == p || key.tuple.dport == p)
            && self.netns.is_none_or(|n| key.netns == n)
            && self.process.as_ref().is_none_or(|name| {
                entry
                    .closer
                    .is_some_and(|p| p.comm.as_string().contains(name.as_str()))
            })
    }
}

impl Table {
    /// The (netns, cgroup id) pairs the timewait sockets are attributed to
    /// (cgroup 0 for a close no process was seen making).
    pub fn cgroup_keys(&self) -> Vec<(u32, u64)> {
        self.breakdowns
            .by_cgroup
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Entries matching `filter`, in `order`, at most `limit`.
    pub fn list(&self, filter: &Filter, order: Order, limit: usize) -> Vec<(Key, Entry)> {
        // Only the best `limit` are ever held: a 1M-entry table is not
        // copied out for a listing of 50.
        let room = limit.min(self.entries.len()).saturating_add(1);
        let mut best: BinaryHeap<Ranked> = BinaryHeap::with_capacity(room);
        for (key, entry, _) in self.entries.iter(false) {
            if limit == 0 || !filter.matches(&key, &entry) {
                continue;
            }
            best.push(Ranked { order, key, entry });
            if best.len() > limit {
                best.pop();
            }
        }
        let mut found = best.into_vec();
        found.sort_unstable();
        found.into_iter().map(|r| (r.key, r.entry)).collect()
    }
}

/// An entry ranked by an order; the heap keeps the smallest `limit`.
struct Ranked {
    order: Order,
    key: Key,
    entry: Entry,
}

impl Ranked {
    fn cmp_by(&self, other: &Ranked) -> Ordering {
        let (a, b) = (self, other);
        let by = match self.order {
            Order::Age => a.entry.born_ns.cmp(&b.entry.born_ns),
            Order::Left => a.entry.expires_ns.cmp(&b.entry.expires_ns),
            Order::Remote => {
                (a.key.tuple.daddr, a.key.tuple.dport).cmp(&(b.key.tuple.daddr, b.key.tuple.dport))
            }
            Order::Port => a.key.tuple.sport.cmp(&b.key.tuple.sport),
            Order::Process => {
                let comm = |e: &Entry| e.closer.map(|p| p.comm);
                comm(&a.entry).cmp(&comm(&b.entry))
            }
        };
        by.then_with(|| (a.entry.born_ns, a.key).cmp(&(b.entry.born_ns, b.key)))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.cmp_by(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> Ordering {
        self.cmp_by(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_parse_by_their_names() {
        for order in Order::ALL {
            assert_eq!(order.name().parse(), Ok(order));
            assert_eq!(order.to_string(), order.name());
        }
        assert_eq!(Order::default(), Order::Age);
        let err = "newest".parse::<Order>().unwrap_err();
        assert!(
            err.contains("\"newest\"") && err.contains("process"),
            "{err}"
        );
    }
}
