//! The client side of `/api/v1`: one GET of a JSON document from a daemon,
//! over HTTP or HTTPS with basic auth, for `twmon snapshot` and `twmon top`.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

/// Where `snapshot` and `top` find the daemon by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9877";

/// Why a GET failed: callers fall back when nothing listens.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("nothing answers at {0}: is `twmon run` running there? (--url)")]
    Unreachable(String),
    #[error("{0}")]
    Other(anyhow::Error),
}

/// How to reach the daemon: its URL, and for a daemon started with
/// `--web.config.file`, the CA that signed its certificate and a user.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub url: String,
    /// PEM file of the CA to trust for an `https://` URL.
    pub ca_file: Option<std::path::PathBuf>,
    /// Basic auth user; the password comes from TWMON_PASSWORD, never the
    /// command line (where `ps` would show it).
    pub user: Option<String>,
}

/// The parts of an `http://` or `https://` URL a GET needs.
struct Url {
    tls: bool,
    /// host:port
    authority: String,
    host: String,
    prefix: String,
}

fn split_url(url: &str) -> Result<Url> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        bail!(
            "--url {url}: give an http:// or https:// address such as {}",
            DEFAULT_URL
        );
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("--url {url}: no host");
    }
    let has_port = authority.contains(':') && !authority.ends_with(']');
    let host = if has_port {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    } else {
        authority
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Ok(Url {
        tls,
        authority,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        prefix: path.to_string(),
    })
}

/// A TLS client trusting only `ca_file`: twmon's certificates are usually
/// from a private CA, and a monitoring tool should not fall back to
/// trusting anything.
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, pem::PemObject as _},
    };
    let Some(path) = ca_file else {
        bail!("an https:// --url needs --ca-file with the CA that signed the daemon's certificate");
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca-file {}: cannot read it", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("--ca-file {}: not PEM", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--ca-file {}: not a CA certificate", path.display()))?;
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS client setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// GETs `path` from the daemon and decodes its JSON.
pub async fn get_json<T: DeserializeOwned>(target: &Target, path: &str) -> Result<T, GetError> {
    let body = get(target, path).await?;
    serde_json::from_slice(&body).map_err(|e| {
        GetError::Other(anyhow!(
            "GET {}{path}: not the expected JSON: {e}",
            target.url
        ))
    })
}

/// GETs `path` from the daemon as text (`/metrics`).
pub async fn get_text(target: &Target, path: &str) -> Result<String, GetError> {
    let body = get(target, path).await?;
    String::from_utf8(body.to_vec())
        .map_err(|_| GetError::Other(anyhow!("GET {}{path}: not UTF-8", target.url)))
}

/// GETs `path` from the daemon: the body of a successful answer.
async fn get(target: &Target, path: &str) -> Result<Bytes, GetError> {
    let url = split_url(&target.url).map_err(GetError::Other)?;
    let other = |e: anyhow::Error| GetError::Other(e.context(format!("GET {}{path}", target.url)));
    let connect = tokio::net::TcpStream::connect(&url.authority);
    let stream = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => return Err(GetError::Unreachable(target.url.clone())),
    };
    let mut request = hyper::Request::get(format!("{}{path}", url.prefix))
        .header(hyper::header::HOST, url.authority.as_str());
    if let Some(user) = &target.user {
        use base64::Engine as _;
        let password = std::env::var("TWMON_PASSWORD").map_err(|_| {
            GetError::Other(anyhow!("--user {user}: set the password in TWMON_PASSWORD"))
        })?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header(hyper::header::AUTHORIZATION, format!("Basic {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| other(e.into()))?;
    let response = if url.tls {
        let connector = tls_connector(target.ca_file.as_deref()).map_err(GetError::Other)?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| other(anyhow!("{}: not a host name: {e}", url.host)))?;
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| other(anyhow!("TLS handshake: {e}")))?;
        send(tls, request).await
    } else {
        send(stream, request).await
    }
    .map_err(other)?;
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
    Ok(body)
}

/// One request over a fresh HTTP/1 connection on `io`.
async fn send<IO>(
    io: IO,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| anyhow!("no answer within 10 s"))?
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let parts = |u: &str| {
            let u = split_url(u).unwrap();
            (u.tls, u.authority, u.host, u.prefix)
        };
        assert_eq!(
            parts("http://127.0.0.1:9877"),
            (
                false,
                "127.0.0.1:9877".into(),
                "127.0.0.1".into(),
                "".into()
            )
        );
        assert_eq!(
            parts("http://host/prefix/"),
            (false, "host:80".into(), "host".into(), "/prefix".into())
        );
        assert_eq!(
            parts("https://[::1]:9877"),
            (true, "[::1]:9877".into(), "::1".into(), "".into())
        );
        assert_eq!(
            parts("https://twmon.example"),
            (
                true,
                "twmon.example:443".into(),
                "twmon.example".into(),
                "".into()
            )
        );
        let err = split_url("ftp://x").err().unwrap();
        assert!(err.to_string().contains("https://"), "{err}");
        assert!(split_url("127.0.0.1:9877").is_err());
    }

    #[test]
    fn https_needs_a_ca() {
        let err = tls_connector(None).err().unwrap();
        assert!(err.to_string().contains("--ca-file"), "{err}");
        let err = tls_connector(Some(std::path::Path::new("/nonexistent.pem")))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("/nonexistent.pem"), "{err:#}");
    }
}
