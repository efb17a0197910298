//! The query parameters of `/api/v1`, checked before any handler runs: a
//! bad one is a 400 that names it and says what it takes.

use std::collections::HashMap;

use crate::{
    expose::api::{Attribution, MAX_LIMIT},
    table::{Filter, Order},
};

pub type Params = HashMap<String, String>;

/// A query parameter, `Err` with what is wrong for a 400.
fn param<T: std::str::FromStr>(
    params: &Params,
    name: &str,
    what: &str,
) -> Result<Option<T>, String> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={v:?} is not {what}")),
    }
}

/// `limit=`, at most [`MAX_LIMIT`].
pub fn limit(params: &Params, default: usize) -> Result<usize, String> {
    let limit = param::<usize>(params, "limit", "a count (e.g. limit=50)")?;
    Ok(limit.unwrap_or(default).min(MAX_LIMIT))
}

/// `top=` of the summary, at most [`MAX_LIMIT`].
pub fn top(params: &Params, default: usize) -> Result<usize, String> {
    let top = param::<usize>(params, "top", "a count (e.g. top=10)")?;
    Ok(top.unwrap_or(default).min(MAX_LIMIT))
}

/// `sort=`; oldest first by default.
pub fn order(params: &Params) -> Result<Order, String> {
    match params.get("sort") {
        None => Ok(Order::default()),
        Some(name) => name.parse().map_err(|e| format!("sort={e}")),
    }
}

/// What `/api/v1/timewait` lists: `remote=`, `port=`, `process=`, `netns=`.
pub fn filter(params: &Params) -> Result<Filter, String> {
    Ok(Filter {
        remote: param(params, "remote", "an IP address (e.g. remote=10.0.0.2)")?,
        port: param(params, "port", "a port number (e.g. port=443)")?,
        process: params.get("process").cloned(),
        netns: param(params, "netns", "a namespace inode")?,
        cgroups: None,
    })
}

/// `cgroup=` (part of a cgroup path) and `pod=` (a pod uid).
pub fn attribution(params: &Params) -> Result<Attribution, String> {
    let text = |name: &str, example: &str| match params.get(name) {
        Some(v) if v.is_empty() => Err(format!("{name}= is empty: give {example}")),
        v => Ok(v.cloned()),
    };
    Ok(Attribution {
        cgroup: text(
            "cgroup",
            "part of a cgroup path (e.g. cgroup=nginx.service)",
        )?,
        pod: text(
            "pod",
            "a pod uid (e.g. pod=4f1c2d3e-5a6b-4c7d-8e9f-0123456789ab)",
        )?,
    })
}

/// Percent-encodes all of `value` for a query string.
fn encode(value: &str) -> String {
    value.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The query string `twmon snapshot` sends for `filter`, `attribution`,
/// `order` and `limit`: what [`filter`], [`attribution`], [`order`] and
/// [`limit`] read back.
pub fn timewait_query(
    filter: &Filter,
    attribution: &Attribution,
    order: Order,
    limit: usize,
) -> String {
    let mut q = format!("/api/v1/timewait?limit={limit}&sort={order}");
    if let Some(r) = filter.remote {
        q.push_str(&format!("&remote={r}"));
    }
    if let Some(p) = filter.port {
        q.push_str(&format!("&port={p}"));
    }
    if let Some(n) = filter.netns {
        q.push_str(&format!("&netns={n}"));
    }
    if let Some(name) = &filter.process {
        // A comm is at most 15 bytes of anything.
        q.push_str(&format!("&process={}", encode(name)));
    }
    if let Some(cgroup) = &attribution.cgroup {
        q.push_str(&format!("&cgroup={}", encode(cgroup)));
    }
    if let Some(pod) = &attribution.pod {
        q.push_str(&format!("&pod={}", encode(pod)));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_parameters_are_named_with_what_they_take() {
        let err = limit(&params(&[("limit", "many")]), 100).unwrap_err();
        assert_eq!(err, r#"limit="many" is not a count (e.g. limit=50)"#);
        let err = order(&params(&[("sort", "newest")])).unwrap_err();
        assert!(
            err.starts_with(r#"sort="newest""#) && err.contains("age"),
            "{err}"
        );
        let err = filter(&params(&[("remote", "10.0.0")])).unwrap_err();
        assert!(
            err.contains("remote=") && err.contains("IP address"),
            "{err}"
        );
        let err = filter(&params(&[("port", "65536")])).unwrap_err();
        assert!(err.contains("port number"), "{err}");
        let err = filter(&params(&[("netns", "-1")])).unwrap_err();
        assert!(err.contains("namespace inode"), "{err}");
        let err = attribution(&params(&[("pod", "")])).unwrap_err();
        assert!(
            err.contains("pod= is empty") && err.contains("pod uid"),
            "{err}"
        );
        let err = top(&params(&[("top", "")]), 10).unwrap_err();
        assert!(err.contains("top="), "{err}");
    }

    #[test]
    fn defaults_and_caps() {
        let none = params(&[]);
        assert_eq!(limit(&none, 100), Ok(100));
        assert_eq!(order(&none), Ok(Order::Age));
        assert_eq!(filter(&none), Ok(Filter::default()));
        let huge = params(&[("limit", "999999999"), ("top", "999999999")]);
        assert_eq!(limit(&huge, 1), Ok(MAX_LIMIT));
        assert_eq!(top(&huge, 1), Ok(MAX_LIMIT));
    }

    #[test]
    fn the_client_query_reads_back_as_sent() {
        let sent = Filter {
            remote: Some("10.0.0.2".parse().unwrap()),
            port: Some(443),
            process: Some("a b&c".into()),
            netns: Some(7),
            cgroups: None,
        };
        let who = Attribution {
            cgroup: Some("/a.slice".into()),
            pod: Some("4f1c".into()),
        };
        let q = timewait_query(&sent, &who, Order::Left, 5);
        assert_eq!(
            q,
            "/api/v1/timewait?limit=5&sort=left&remote=10.0.0.2&port=443&netns=7\
             &process=%61%20%62%26%63&cgroup=%2F%61%2E%73%6C%69%63%65&pod=%34%66%31%63"
        );
        // What the server's query extractor makes of it.
        let query = q.split_once('?').unwrap().1;
        let back: Params = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), percent_decode(v))
            })
            .collect();
        assert_eq!(filter(&back), Ok(sent));
        assert_eq!(attribution(&back), Ok(who));
        assert_eq!(order(&back), Ok(Order::Left));
        assert_eq!(limit(&back, 100), Ok(5));
    }

    fn percent_decode(v: &str) -> String {
        let bytes = v.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
}
