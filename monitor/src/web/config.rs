//! `--web.config.file`: TLS and basic auth in the format Prometheus
//! exporters share (exporter-toolkit's web-config.yml), so the files and
//! the knowledge people have carry over.
//!
//! Everything is checked once, at start: a config twmon cannot honour fully
//! is an error, never a silently weaker (plain or open) server.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, anyhow, bail};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};
use tokio_rustls::rustls::{
    self, RootCertStore, ServerConfig, SupportedProtocolVersion,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use super::auth::BasicAuth;

/// What the web config file asks of the server. The default is plain HTTP
/// without authentication, as without the flag.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub auth: Option<Arc<BasicAuth>>,
    /// Added to every response.
    pub headers: HeaderMap,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .field("headers", &self.headers)
            .finish()
    }
}

impl WebConfig {
    /// Reads and checks `path`; relative file names in it are relative to
    /// its directory, as in exporter-toolkit.
    pub fn load(path: &Path) -> Result<WebConfig> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the web config file {}: fix the path given to --web.config.file",
                path.display()
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        WebConfig::parse(&text, dir).with_context(|| format!("web config file {}", path.display()))
    }

    /// `text` as a web config file in `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig> {
        let file: File = serde_norway::from_str(text).map_err(|e| anyhow!("{e}"))?;
        if file.tls_server_config.is_none()
            && file.basic_auth_users.is_none()
            && file.http_server_config.is_none()
        {
            bail!(
                "it sets nothing: add tls_server_config and/or basic_auth_users, or drop \
                 --web.config.file to serve plain HTTP"
            );
        }
        if file.rate_limit.is_some() {
            bail!(
                "rate_limit is not supported by twmon (it caps concurrent connections \
                 instead): remove it"
            );
        }
        let tls = match file.tls_server_config {
            None => None,
            Some(None) => bail!(
                "tls_server_config is empty: set cert_file and key_file, or remove it to \
                 serve plain HTTP"
            ),
            Some(Some(tls)) => Some(Arc::new(
                tls.server_config(dir).context("tls_server_config")?,
            )),
        };
        let auth = match file.basic_auth_users {
            None => None,
            Some(users) if users.as_ref().is_none_or(BTreeMap::is_empty) => bail!(
                "basic_auth_users is empty: add a user, or remove it to serve without \
                 authentication"
            ),
            Some(users) => Some(Arc::new(
                BasicAuth::new(users.unwrap_or_default()).context("basic_auth_users")?,
            )),
        };
        let headers = match file.http_server_config {
            Some(Some(http)) => http.headers().context("http_server_config")?,
            _ => HeaderMap::new(),
        };
        if tls.is_none() && auth.is_none() {
            log::warn!(
                "the web config sets neither tls_server_config nor basic_auth_users: serving \
                 plain HTTP to anyone who can connect"
            );
        }
        Ok(WebConfig { tls, auth, headers })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Tells a key that is present but empty (`key:`) from an absent one:
/// an empty section is a mistake to report, not "off".
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, deserialize_with = "present")]
    tls_server_config: Option<Option<TlsFile>>,
    #[serde(default, deserialize_with = "present")]
    basic_auth_users: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "present")]
    http_server_config: Option<Option<HttpFile>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<serde_norway::Value>>,
}

/// Keys typed as `Value` are known to exporter-toolkit but refused here,
/// each with its own reason.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_ca: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

/// PEM text from a file or inline in the config.
enum Pem<'a> {
    File(&'static str, PathBuf),
    Inline(&'static str, &'a str),
}

impl Pem<'_> {
    /// The one of `file_key`/`inline_key` that is set, if any.
    fn pick<'a>(
        dir: &Path,
        (file_key, file): (&'static str, &Option<PathBuf>),
        (inline_key, inline): (&'static str, &'a Option<String>),
    ) -> Result<Option<Pem<'a>>> {
        match (file, inline) {
            (Some(_), Some(_)) => bail!("set {file_key} or {inline_key}, not both"),
            (Some(path), None) => Ok(Some(Pem::File(file_key, dir.join(path)))),
            (None, Some(text)) => Ok(Some(Pem::Inline(inline_key, text))),
            (None, None) => Ok(None),
        }
    }

    fn bytes(&self) -> Result<Vec<u8>> {
        match self {
            Pem::File(_, path) => {
                std::fs::read(path).with_context(|| format!("cannot read {self}"))
            }
            Pem::Inline(_, text) => Ok(text.as_bytes().to_vec()),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes()?)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{self} is not valid PEM"))?;
        if certs.is_empty() {
            bail!("{self} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(&self.bytes()?).map_err(|e| {
            anyhow!("{self} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
        })
    }
}

impl fmt::Display for Pem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(key, path) => write!(f, "{key} {}", path.display()),
            Pem::Inline(key, _) => write!(f, "the inline {key}"),
        }
    }
}

impl TlsFile {
    fn server_config(&self, dir: &Path) -> Result<ServerConfig> {
        self.refuse_unsupported()?;
        let cert = Pem::pick(dir, ("cert_file", &self.cert_file), ("cert", &self.cert))?;
        let key = Pem::pick(dir, ("key_file", &self.key_file), ("key", &self.key))?;
        let (cert, key) = match (cert, key) {
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => bail!("a certificate is set but no key: set key_file too"),
            (None, Some(_)) => bail!("a key is set but no certificate: set cert_file too"),
            (None, None) => bail!("set cert_file and key_file to serve HTTPS"),
        };
        let client_ca = Pem::pick(
            dir,
            ("client_ca_file", &self.client_ca_file),
            ("client_ca", &self.client_ca),
        )?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = versions(self.min_version.as_deref(), self.max_version.as_deref())?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .context("TLS versions")?;
        let auth_type = self.client_auth_type.as_deref().unwrap_or("NoClientCert");
        let builder = match client_verifier(auth_type, client_ca, provider)? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let certs = cert.certificates()?;
        let key_der = key.private_key()?;
        let mut config = builder
            .with_single_cert(certs, key_der)
            .with_context(|| format!("{cert} with {key}"))?;
        // twmon speaks HTTP/1.1 only; saying so lets clients skip h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // exporter-toolkit's default is the server's preference.
        config.ignore_client_order = self.prefer_server_cipher_suites.unwrap_or(true);
        Ok(config)
    }

    /// Keys of exporter-toolkit's format twmon cannot honour: an error, not
    /// a silently different server.
    fn refuse_unsupported(&self) -> Result<()> {
        for (key, set, why) in [
            (
                "cipher_suites",
                self.cipher_suites.is_some(),
                "rustls offers only modern suites",
            ),
            (
                "curve_preferences",
                self.curve_preferences.is_some(),
                "rustls offers only modern curves",
            ),
            (
                "client_allowed_sans",
                self.client_allowed_sans.is_some(),
                "use a client CA that only signs allowed clients",
            ),
        ] {
            if set {
                bail!("{key} is not supported by twmon ({why}): remove it");
            }
        }
        Ok(())
    }
}

/// How client certificates are checked, as `client_auth_type` asks; None
/// when they are not asked for.
fn client_verifier(
    auth_type: &str,
    client_ca: Option<Pem>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>> {
    match (auth_type, client_ca) {
        ("NoClientCert", None) => Ok(None),
        ("NoClientCert", Some(ca)) => bail!(
            "{ca} is set but client_auth_type is NoClientCert: set client_auth_type: \
             RequireAndVerifyClientCert"
        ),
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            bail!("client_auth_type {auth_type} needs client_ca_file")
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in ca.certificates()? {
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate in {ca}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .with_context(|| format!("client certificates from {ca}"))?;
            Ok(Some(verifier))
        }
        ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert", _) => bail!(
            "client_auth_type {auth_type} accepts client certificates without checking \
             them, which twmon does not do: use RequireAndVerifyClientCert with \
             client_ca_file"
        ),
        (other, _) => bail!(
            "unknown client_auth_type {other:?}: use NoClientCert, \
             VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        ),
    }
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>> {
    fn rank(key: &str, name: &str) -> Result<u8> {
        match name {
            "TLS12" => Ok(12),
            "TLS13" => Ok(13),
            "TLS10" | "TLS11" => bail!(
                "{key} {name}: twmon speaks TLS 1.2 and 1.3 only (rustls); use TLS12 or TLS13"
            ),
            _ => bail!("{key} {name:?} is not a TLS version: use TLS12 or TLS13"),
        }
    }
    let min = rank("min_version", min.unwrap_or("TLS12"))?;
    let max = rank("max_version", max.unwrap_or("TLS13"))?;
    if min > max {
        bail!("min_version is above max_version");
    }
    let all = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)];
    Ok(all
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, version)| version)
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The headers exporter-toolkit lets a config set, with the values it
/// accepts (empty: any).
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl HttpFile {
    fn headers(&self) -> Result<HeaderMap> {
        if self.http2 == Some(true) {
            bail!("http2: true is not supported, twmon serves HTTP/1.1 only: remove it");
        }
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(known, _)| known == name) else {
                let known: Vec<_> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
                bail!(
                    "header {name:?} cannot be set: use one of {}",
                    known.join(", ")
                );
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                bail!("header {name}: {value:?} is not one of {allowed:?}");
            }
            let value = HeaderValue::from_str(value)
                .with_context(|| format!("header {name}: {value:?} is not a valid value"))?;
            map.insert(HeaderName::from_bytes(name.as_bytes())?, value);
        }
        Ok(map)
    }
}
