//! Replays of recordings checked into the repository: the table must keep
//! making the same sense of a real kernel's event stream. No root needed.

use std::{path::Path, process::Command};

use crate::util::TWMON;

fn replay_json(file: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let out = Command::new(TWMON)
        .args(["replay", "--json", "--limit", "1000"])
        .arg(&path)
        .output()
        .expect("running twmon replay");
    assert!(
        out.status.success(),
        "twmon replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay --json prints JSON")
}

/// Recorded with `twmon record --probes tracepoint --snapshot-interval 1s`
/// on Linux 6.18, watching a namespace where `python3 -m http.server`
/// answered 30 HTTP/1.0 requests on 127.0.0.1:8080 and closed first. The
/// CLOSE transitions in it carry local port 0 (the kernel has released the
/// port by then), so the four-tuples must come from the close that started
/// them. Recorded again by `data/record-server-closes-30.sh` whenever the
/// kernel record contract changes.
#[test]
fn server_closing_first_is_30_derived_births_blamed_on_python() {
    let doc = replay_json("server-closes-30.twrec");
    let summary = &doc["summary"];
    assert_eq!(summary["entries"], 30, "{summary}");
    assert_eq!(summary["population"]["ipv4 TIME_WAIT"], 30, "{summary}");
    assert_eq!(summary["started"], 30, "{summary}");
    assert_eq!(
        summary["by_process"],
        serde_json::json!([{"label": "python3", "count": 30}])
    );
    let sockets = doc["timewait"]["sockets"].as_array().expect("sockets");
    assert_eq!(sockets.len(), 30);
    for s in sockets {
        assert_eq!(s["local_port"], 8080, "{s}");
        assert_eq!(s["source"], "transition", "{s}");
        assert_eq!(s["confirmed"], true, "{s}");
        assert_eq!(s["closer"]["comm"], "python3", "{s}");
        assert_eq!(s["substate"], "TIME_WAIT", "{s}");
    }
    assert_eq!(doc["collisions"]["collisions"], serde_json::json!([]));
}

/// `twmon snapshot` against a daemon that requires TLS and a password
/// (a replay served with the same web config as `run` takes).
#[test]
fn snapshot_speaks_tls_and_basic_auth() {
    use std::io::{BufRead as _, BufReader};
    let pki = crate::util::Pki::new("snapshot");
    let web = pki.config(&crate::util::tls_and_auth_yaml("ops", "s3cret", ""));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/server-closes-30.twrec");
    let mut server = Command::new(TWMON)
        .args(["replay", "--listen", "127.0.0.1:0", "--web.config.file"])
        .arg(&web)
        .arg(&fixture)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting twmon replay");
    let stderr = server.stderr.take().expect("stderr");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .split("serving metrics on ")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let snapshot = |ca: Option<&Path>, password: &str| {
        let mut cmd = Command::new(TWMON);
        cmd.args(["snapshot", "--json", "--url", &url, "--user", "ops"]);
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.env("TWMON_PASSWORD", password)
            .output()
            .expect("twmon snapshot")
    };
    let ca = pki.path("ca.pem");
    let ok = snapshot(Some(&ca), "s3cret");
    let wrong = snapshot(Some(&ca), "guess");
    let no_ca = snapshot(None, "s3cret");
    let _ = server.kill();
    let _ = server.wait();

    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON");
    assert_eq!(doc["total"], 30, "{doc}");
    assert_eq!(doc["sockets"].as_array().map(Vec::len), Some(30));

    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && stderr.contains("401"),
        "{stderr}"
    );
    let stderr = String::from_utf8_lossy(&no_ca.stderr);
    assert!(
        !no_ca.status.success() && stderr.contains("--ca-file"),
        "{stderr}"
    );
}
