//! Listing the table: which entries ([`Filter`]), in which [`Order`].

use std::{fmt, net::IpAddr, str::FromStr};

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
}

impl Filter {
    pub fn matches(&self, key: &Key, entry: &Entry) -> bool {
        self.remote.is_none_or(|r| key.tuple.daddr == r)
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
    /// Entries matching `filter`, in `order`, at most `limit`.
    pub fn list(&self, filter: &Filter, order: Order, limit: usize) -> Vec<(Key, Entry)> {
        // References, not copies: a 1M-entry table is 16 MB of these
        // rather than 130 MB, and only `limit` of them get sorted.
        let mut found: Vec<(&Key, &Entry)> = self
            .entries
            .iter()
            .filter(|(k, e)| filter.matches(k, e))
            .collect();
        let cmp = |a: &(&Key, &Entry), b: &(&Key, &Entry)| {
            let by = match order {
                Order::Age => a.1.born_ns.cmp(&b.1.born_ns),
                Order::Left => a.1.expires_ns.cmp(&b.1.expires_ns),
                Order::Remote => {
                    (a.0.tuple.daddr, a.0.tuple.dport).cmp(&(b.0.tuple.daddr, b.0.tuple.dport))
                }
                Order::Port => a.0.tuple.sport.cmp(&b.0.tuple.sport),
                Order::Process => {
                    let comm = |e: &Entry| e.closer.map(|p| p.comm);
                    comm(a.1).cmp(&comm(b.1))
                }
            };
            by.then_with(|| (a.1.born_ns, a.0).cmp(&(b.1.born_ns, b.0)))
        };
        if limit > 0 && found.len() > limit {
            found.select_nth_unstable_by(limit - 1, cmp);
        }
        found.truncate(limit);
        found.sort_unstable_by(cmp);
        found.into_iter().map(|(k, e)| (*k, *e)).collect()
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
