//! Helpers every area of the integration tests shares: the binary under
//! test, and a throwaway PKI for the ones that serve HTTPS.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The twmon binary cargo built for these tests.
pub const TWMON: &str = env!("CARGO_BIN_EXE_twmon");

/// `twmon doctor --json` against `daemon`: its exit status and the ids of
/// its findings, worst first.
pub fn doctor(daemon: &testkit::Daemon) -> (Option<i32>, Vec<String>) {
    let out = std::process::Command::new(TWMON)
        .args(["doctor", "--json", "--url"])
        .arg(format!("http://{}", daemon.addr))
        .output()
        .expect("running twmon doctor");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}): {out:?}"));
    let ids = doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["id"].as_str().map(str::to_string))
        .collect();
    (out.status.code(), ids)
}

/// A throwaway CA that signed a server certificate for localhost and
/// 127.0.0.1 and a client certificate, as PEM files in a fresh directory
/// that is removed on drop: ca.pem, server.pem, server.key, client.pem,
/// client.key.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("twmon-pki-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ),
            ("client", vec!["scraper".to_string()]),
        ] {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(sans)
                .expect("params")
                .signed_by(&key, &ca)
                .expect("sign");
            fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
            fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
        }
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Writes `yaml` as web.yml next to the PEM files; returns its path.
    pub fn config(&self, yaml: &str) -> PathBuf {
        let path = self.path("web.yml");
        fs::write(&path, yaml).expect("write config");
        path
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A web config serving `server.pem` with basic auth for `user`, whose
/// password is `password` (hashed at bcrypt's lowest cost, for speed).
pub fn tls_and_auth_yaml(user: &str, password: &str, extra_tls: &str) -> String {
    let hash = bcrypt::hash(password, 4).expect("bcrypt");
    format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra_tls}\
         basic_auth_users:\n  {user}: '{hash}'\n\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
}

pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
