#!/usr/bin/env bash
# Records server-closes-30.twrec again (as root, after `cargo build`): a
# python3 http.server in a namespace of its own answers 30 HTTP/1.0 requests
# and closes first, watched by `twmon record` in tracepoint-only mode. Run it
# whenever the kernel record contract (monitor_common::record::WIRE_VERSION)
# changes; replay.rs says what the recording must replay to.
set -euo pipefail
cd "$(dirname "$0")"
twmon=../../../target/debug/twmon
ns=twmon-rec30
ip netns del "$ns" 2>/dev/null || true
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" python3 -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1 &
server=$!
"$twmon" record server-closes-30.twrec --netns "$ns" --snapshot-interval 1s \
    --probes tracepoint --listen 127.0.0.1:0 &
recorder=$!
sleep 3
for _ in $(seq 30); do
    ip netns exec "$ns" python3 -c '
import socket
s = socket.create_connection(("127.0.0.1", 8080))
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
while s.recv(65536):
    pass
s.close()'
done
sleep 3
kill -TERM "$recorder"
wait "$recorder"
kill "$server"
