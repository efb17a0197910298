//! Replays of recordings checked into the repository: the table must keep
//! making the same sense of a real kernel's event stream. No root needed.

use std::{path::Path, process::Command};

const TWMON: &str = env!("CARGO_BIN_EXE_twmon");

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

/// Recorded with `twmon record` on Linux 6.18 in tracepoint-only mode: a
/// python3 server on 127.0.0.1:8080 answering 30 connections and closing
/// first, snapshots every second. The CLOSE transitions in it carry local
/// port 0 (the kernel has released the port by then), so the four-tuples
/// must come from the close that started them.
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
