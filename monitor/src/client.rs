//! `twmon snapshot`: the TIME_WAIT table of a running daemon, from its
//! `/api/v1/timewait`, or straight from sock_diag when no daemon answers.
//! Also the small HTTP GET that `twmon top` shares.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::{
    api::{self, TimewaitDoc},
    cli::{SnapshotArgs, SortBy},
    diag, netns,
    state::State,
    table::{Config, Filter, Order, SnapshotRound},
};

/// Why a GET failed: callers fall back when nothing listens.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("nothing answers at {0}: is `twmon run` running there? (--url)")]
    Unreachable(String),
    #[error("{0}")]
    Other(anyhow::Error),
}

/// `host:port` and path prefix of an `http://` URL.
fn split_url(url: &str) -> Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!(
            "--url {url}: give an http:// address such as {}",
            crate::cli::DEFAULT_URL
        );
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("--url {url}: no host");
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// GETs `path` from the daemon at `url` and decodes its JSON.
pub async fn get_json<T: DeserializeOwned>(url: &str, path: &str) -> Result<T, GetError> {
    let (authority, prefix) = split_url(url).map_err(GetError::Other)?;
    let connect = tokio::net::TcpStream::connect(&authority);
    let stream = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => return Err(GetError::Unreachable(url.to_string())),
    };
    let other = |e: anyhow::Error| GetError::Other(e.context(format!("GET {url}{path}")));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| other(e.into()))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(format!("{prefix}{path}"))
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| other(e.into()))?;
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| other(anyhow!("no answer within 10 s")))?
        .map_err(|e| other(e.into()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| other(e.into()))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(other(anyhow!("{status}: {}", text.trim())));
    }
    serde_json::from_slice(&body).map_err(|e| other(anyhow!("not the expected JSON: {e}")))
}

fn order(sort: SortBy) -> Order {
    match sort {
        SortBy::Age => Order::Age,
        SortBy::Left => Order::Left,
        SortBy::Remote => Order::Remote,
        SortBy::Port => Order::Port,
        SortBy::Process => Order::Process,
    }
}

fn query(args: &SnapshotArgs) -> String {
    let sort = match args.sort {
        SortBy::Age => "age",
        SortBy::Left => "left",
        SortBy::Remote => "remote",
        SortBy::Port => "port",
        SortBy::Process => "process",
    };
    let mut q = format!("/api/v1/timewait?limit={}&sort={sort}", args.limit);
    if let Some(r) = args.remote {
        q.push_str(&format!("&remote={r}"));
    }
    if let Some(p) = args.port {
        q.push_str(&format!("&port={p}"));
    }
    if let Some(name) = &args.process {
        // A comm is at most 15 bytes of anything; percent-encode all of it.
        let encoded: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
        q.push_str(&format!("&process={encoded}"));
    }
    q
}

pub fn snapshot(args: &SnapshotArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let doc = match runtime.block_on(get_json::<TimewaitDoc>(&args.url, &query(args))) {
        Ok(doc) => doc,
        Err(GetError::Unreachable(url)) => {
            eprintln!(
                "twmon: no daemon at {url}; showing sock_diag of this network namespace \
                 (closing process and segments are only known to a running daemon)"
            );
            from_sock_diag(args)?
        }
        Err(GetError::Other(err)) => return Err(err),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&doc));
    }
    Ok(())
}

/// The table as a one-off dump of this namespace builds it.
fn from_sock_diag(args: &SnapshotArgs) -> Result<TimewaitDoc> {
    let own = netns::current()?;
    let snap = diag::snapshot_here(own.inode)?;
    let now = snap.taken_ns;
    let mut state = State::new(Config::default());
    state.reconcile(&SnapshotRound {
        namespaces: vec![snap],
        existing: None,
    });
    let filter = Filter {
        remote: args.remote,
        port: args.port,
        process: args.process.clone(),
        netns: None,
    };
    Ok(api::timewait(
        &state,
        now,
        &filter,
        order(args.sort),
        args.limit,
    ))
}

/// A fixed-width table, one socket per line.
pub fn render(doc: &TimewaitDoc) -> String {
    let mut out = format!(
        "{:<45} {:<45} {:<9} {:>7} {:>7} {:>5} PROCESS\n",
        "LOCAL", "REMOTE", "STATE", "AGE", "LEFT", "SEGS"
    );
    for s in &doc.sockets {
        out.push_str(&format!(
            "{:<45} {:<45} {:<9} {:>6.1}s {:>6.1}s {:>5} {}\n",
            api::endpoint(s.local_addr, s.local_port),
            api::endpoint(s.remote_addr, s.remote_port),
            s.substate,
            s.age_seconds,
            s.left_seconds,
            s.segments,
            api::closer_label(s.closer.as_ref()),
        ));
    }
    out.push_str(&format!(
        "{} shown of {} timewait sockets\n",
        doc.sockets.len(),
        doc.total
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9877").unwrap(),
            ("127.0.0.1:9877".into(), "".into())
        );
        assert_eq!(
            split_url("http://host/prefix/").unwrap(),
            ("host:80".into(), "/prefix".into())
        );
        assert_eq!(
            split_url("http://[::1]:9877").unwrap(),
            ("[::1]:9877".into(), "".into())
        );
        assert!(
            split_url("https://x")
                .unwrap_err()
                .to_string()
                .contains("http://")
        );
        assert!(split_url("127.0.0.1:9877").is_err());
    }

    #[test]
    fn queries_encode_filters() {
        let args = SnapshotArgs {
            url: crate::cli::DEFAULT_URL.into(),
            remote: Some("10.0.0.2".parse().unwrap()),
            port: Some(443),
            process: Some("a b".into()),
            sort: SortBy::Left,
            limit: 5,
            json: false,
        };
        assert_eq!(
            query(&args),
            "/api/v1/timewait?limit=5&sort=left&remote=10.0.0.2&port=443&process=%61%20%62"
        );
    }
}
