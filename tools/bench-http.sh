#!/usr/bin/env bash
# Upload and download of one file over loopback HTTP (curl against `imgstore
# serve`) versus the engine's own put and read (`imgstore store put|cat`) on
# the same machine in the same run, plus the daemon's peak RSS during each.
#
#   tools/bench-http.sh [FILE]     (default /tmp/peerdata/data/random.bin, 1 GiB)
#
# IMGSTORE_BIN picks the binary (default: the dev build in CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/imgstore-target}"
BIN=${IMGSTORE_BIN:-$CARGO_TARGET_DIR/debug/imgstore}
FILE=${1:-/tmp/peerdata/data/random.bin}
PORT=${IMGSTORE_BENCH_PORT:-18180}
[ -x "$BIN" ] || { echo "no binary at $BIN: run cargo build" >&2; exit 1; }
[ -f "$FILE" ] || { echo "no input $FILE" >&2; exit 1; }
size=$(stat -c %s "$FILE")
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cat "$FILE" > /dev/null # warm the page cache for both sides

now() { date +%s%N; }
mbps() { awk -v b="$size" -v ns="$1" 'BEGIN{printf "%.0f", b/1e6/(ns/1e9)}'; }

t0=$(now); "$BIN" store put --data-dir "$work/engine" --json "$FILE" > "$work/put.json"; t1=$(now)
engine_put=$((t1 - t0))
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["file_id"])' "$work/put.json")
t0=$(now); "$BIN" store cat --data-dir "$work/engine" "$id" > /dev/null; t1=$(now)
engine_get=$((t1 - t0))

"$BIN" serve --data-dir "$work/daemon" --listen "127.0.0.1:$PORT" > "$work/daemon.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$url/ping" > /dev/null && break; sleep 0.1; done
acct=aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa
uuid=$(curl -sf -H 'content-type: application/json' \
  -d '{"name":"bench","version":"1","type":"zvol","os":"linux","nic_driver":"virtio","disk_driver":"virtio","cpu_type":"host","image_size":1024}' \
  "$url/images?account=$acct" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')

peak_rss() { # samples VmRSS of the daemon while "$@" runs; prints the peak in MiB
  local f="$work/rss.$RANDOM"
  ( while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/{print $2}' "/proc/$pid/status"; sleep 0.05; done ) > "$f" &
  local sampler=$!
  "$@"
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  sort -n "$f" | tail -1 | awk '{printf "%.0f", $1/1024}'
}
rss_idle=$(awk '/VmRSS/{printf "%.0f", $2/1024}' "/proc/$pid/status")
t0=$(now)
rss_up=$(peak_rss curl -sf -T "$FILE" -H 'content-type: application/octet-stream' \
  "$url/images/$uuid/file?compression=none&account=$acct" -o /dev/null)
t1=$(now); http_put=$((t1 - t0))
curl -sf -X POST -H 'content-type: application/json' -d '{}' "$url/images/$uuid?action=activate&account=$acct" > /dev/null
t0=$(now)
rss_down=$(peak_rss curl -sf "$url/images/$uuid/file?account=$acct" -o /dev/null)
t1=$(now); http_get=$((t1 - t0))

printf 'file %s (%s bytes)\n' "$FILE" "$size"
printf '%-10s %10s %10s %8s\n' op engine_MB/s http_MB/s http/eng
printf '%-10s %10s %10s %8s\n' upload "$(mbps $engine_put)" "$(mbps $http_put)" "$(awk -v a=$engine_put -v b=$http_put 'BEGIN{printf "%.2f", a/b}')"
printf '%-10s %10s %10s %8s\n' download "$(mbps $engine_get)" "$(mbps $http_get)" "$(awk -v a=$engine_get -v b=$http_get 'BEGIN{printf "%.2f", a/b}')"
printf 'daemon RSS MiB: idle %s, peak during upload %s, during download %s\n' "$rss_idle" "$rss_up" "$rss_down"
