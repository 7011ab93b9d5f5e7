#!/usr/bin/env bash
# Copy between datacenters over loopback with the real binaries: two
# `imgstore serve` daemons (west = source, east = destination).
#
#   tools/bench-transfer.sh [--grouped LEVEL] [--rate RATE] [V1] [V2]
#                                         (default: peer-bench's v1.tar and v2.tar)
#
# --rate RATE (tc's spelling: 1gbit, 10gbit, 500mbit) runs everything in a
# network namespace of its own (`unshare -n`, as root) whose loopback is a
# link of that rate (`tc qdisc add dev lo root tbf rate RATE burst 1mb
# latency 200ms`), and reports the copies against the link: a plain
# download's share of it, the full copy's share, and the update copy's
# time against its wire bytes / the rate + 0.5 s.
#
# --grouped LEVEL recompresses west's store into group records at LEVEL
# (`imgstore store recompress`, west stopped) before the copies: a source
# whose images have gone cold, which sends groups whole (transfer version 2).
#
# Measures (1) a full copy of V1 into an empty east: image MB/s, every chunk
# verified; (2) V2 (an update of V1) into an east holding V1: bytes on the
# wire (through a counting relay) against the compressed bytes of the chunks
# that had to travel; (3) a kill -9 of east at about half of a full copy:
# bytes sent twice.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=""
GROUPED=
if [ "${1:-}" = "--grouped" ]; then GROUPED=${2:?--grouped needs a zstd level, e.g. 3}; shift 2; fi
if [ "${1:-}" = "--rate" ]; then RATE=${2:?--rate needs a rate, e.g. 1gbit}; shift 2; fi
if [ -n "$RATE" ] && [ -z "${BENCH_TRANSFER_NETNS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "--rate needs root (unshare -n, tc)" >&2; exit 1; }
  exec unshare -n env BENCH_TRANSFER_NETNS=1 bash "$0" ${GROUPED:+--grouped "$GROUPED"} --rate "$RATE" "$@"
fi
rate_bps=0
if [ -n "$RATE" ]; then
  ip link set lo up
  tc qdisc add dev lo root tbf rate "$RATE" burst 1mb latency 200ms
  rate_bps=$(python3 -c "import re,sys; m=re.fullmatch(r'([0-9.]+)([kmg]?)bit', sys.argv[1].lower()); print(int(float(m[1]) * {'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]]))" "$RATE")
  echo "link: loopback limited to $RATE ($(tc qdisc show dev lo | head -1))"
fi
: "${CARGO_TARGET_DIR:=$HOME/.cache/imgstore-target}"
BIN=${IMGSTORE_BIN:-$CARGO_TARGET_DIR/debug/imgstore}
V1=${1:-/tmp/peerdata/data/v1.tar}
V2=${2:-/tmp/peerdata/data/v2.tar}
ACCT=aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa
W=18281; E=18282; RELAY=18283
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s%N; }
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# IMGSTORE_TRANSFER='{"batchBytes":16777216,"parallel":3}' tries other settings.
TRANSFER_JSON=${IMGSTORE_TRANSFER:-"{}"}
cfg() { # name port datadir peer_url
  printf '{"datacenterName":"%s","listen":"127.0.0.1:%s","dataDir":"%s","imgapiUrlFromDatacenter":{"%s":"%s"},"transfer":%s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$TRANSFER_JSON" > "$work/$1.json"
}
start() { # config port -> pid
  "$BIN" serve --config "$1" > "$work/$(basename "$1").log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$2/ping" > /dev/null && break; sleep 0.05; done
  echo "$pid"
}
upload() { # port file -> uuid
  local u
  u=$(curl -sf -H 'content-type: application/json' -d '{"name":"img","version":"1","type":"other","os":"other"}' \
    "http://127.0.0.1:$1/images?account=$ACCT" | js 'd["uuid"]')
  curl -sf -T "$2" "http://127.0.0.1:$1/images/$u/file?compression=none" -o /dev/null
  curl -sf -X POST -H 'content-type: application/json' -d '{}' "http://127.0.0.1:$1/images/$u?action=activate" -o /dev/null
  echo "$u"
}
import() { # port uuid -> job uuid
  curl -sf -X POST -H 'content-type: application/json' -d '{}' \
    "http://127.0.0.1:$1/images/$2?action=import-from-datacenter&datacenter=west&account=$ACCT" | js 'd["job_uuid"]'
}
kill9() { kill -9 "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }
wait_job() { # port job -> final job json in $work/job.json
  local tries=0
  while :; do
    tries=$((tries + 1)); [ $tries -gt 12000 ] && { echo "job $2 did not finish" >&2; exit 1; }
    curl -sf "http://127.0.0.1:$1/jobs/$2" > "$work/job.json" || true
    # grep, not python: a poller that starts an interpreter 20 times a
    # second takes a good part of a core from the copy it measures.
    grep -qE '"execution": *"(succeeded|failed)"' "$work/job.json" && return
    sleep 0.05
  done
}
wire() { cut -d' ' -f2 "$work/counts"; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }

cfg west $W "$work/west" east "http://127.0.0.1:$E"
pids+=("$(start "$work/west.json" $W)")
u1=$(upload $W "$V1")
u2=$(upload $W "$V2")
if [ -n "$GROUPED" ]; then
  west=${pids[0]}; kill9 "$west"
  "$BIN" store --data-dir "$work/west" recompress --level "$GROUPED"
  pids=("$(start "$work/west.json" $W)")
fi
size1=$(stat -c %s "$V1"); size2=$(stat -c %s "$V2")

# What the link itself gives a plain download of V1 from west.
if [ -n "$RATE" ]; then
  t0=$(now); curl -sf "http://127.0.0.1:$W/images/$u1/file" -o /dev/null; t1=$(now)
  ms=$(( (t1 - t0) / 1000000 ))
  echo "plain download: $size1 bytes in ${ms} ms = $(awk -v b=$size1 -v ms=$ms -v r=$rate_bps 'BEGIN{printf "%.3f", b*8/(ms/1e3)/r}') of the link"
fi

# (1) Full copy, direct.
cfg east $E "$work/east1" west "http://127.0.0.1:$W"
e=$(start "$work/east.json" $E); pids+=("$e")
c0=$(cpu_s "$e"); t0=$(now); j=$(import $E "$u1"); wait_job $E "$j"; t1=$(now); c1=$(cpu_s "$e")
full_ms=$(( (t1 - t0) / 1000000 ))
full_rec=$(js 'd["progress"]["wire_bytes"]' < "$work/job.json")
echo "full copy: $(js 'd["execution"]' < "$work/job.json"), $size1 bytes in ${full_ms} ms = $(awk -v b=$size1 -v ms=$full_ms 'BEGIN{printf "%.0f", b/1e6/(ms/1e3)}') MB/s; record bytes $(js 'd["progress"]["wire_bytes"]' < "$work/job.json"); destination CPU $(awk -v a=$c0 -v b=$c1 'BEGIN{printf "%.2f", b-a}') s"
if [ -n "$RATE" ]; then
  echo "full copy on the link: $full_rec record bytes in ${full_ms} ms = $(awk -v b=$full_rec -v ms=$full_ms -v r=$rate_bps 'BEGIN{printf "%.3f", b*8/(ms/1e3)/r}') of the link (goal >= 0.9)"
fi
# The update (V2) into the east that now holds V1, direct: its time against
# the full copy's, and the destination's peak RSS over both.
c0=$(cpu_s "$e"); t0=$(now); j=$(import $E "$u2"); wait_job $E "$j"; t1=$(now); c1=$(cpu_s "$e")
upd_ms=$(( (t1 - t0) / 1000000 ))
echo "update copy: $(js 'd["execution"]' < "$work/job.json"), $size2 bytes in ${upd_ms} ms = $(awk -v a=$upd_ms -v b=$full_ms 'BEGIN{printf "%.2f", a/b}') x the full copy's time; destination CPU $(awk -v a=$c0 -v b=$c1 'BEGIN{printf "%.2f", b-a}') s (the floor on 2 cores is half of it); destination peak RSS $(awk '/VmHWM/{printf "%.0f MiB", $2/1024}' /proc/$e/status)"
if [ -n "$RATE" ]; then
  upd_rec=$(js 'd["progress"]["wire_bytes"]' < "$work/job.json")
  echo "update copy on the link: ${upd_ms} ms for $upd_rec record bytes; its floor (bytes / rate) + 0.5 s = $(awk -v b=$upd_rec -v r=$rate_bps 'BEGIN{printf "%.0f", b*8/r*1e3 + 500}') ms; ratio $(awk -v b=$upd_rec -v r=$rate_bps -v ms=$upd_ms 'BEGIN{printf "%.2f", ms/(b*8/r*1e3 + 500)}') (goal <= 1.2)"
fi
kill9 "$e"
[ -n "$RATE" ] && exit 0  # the byte counts below do not depend on the link

# (2) Update onto v1, through the counting relay.
python3 tools/count-proxy.py $RELAY $W "$work/counts" & pids+=("$!")
sleep 0.3
cfg east $E "$work/east2" west "http://127.0.0.1:$RELAY"
e=$(start "$work/east.json" $E); pids+=("$e")
j=$(import $E "$u1"); wait_job $E "$j"
sleep 0.5; before=$(wire)
j=$(import $E "$u2"); wait_job $E "$j"
sleep 0.5; after=$(wire)
rec=$(js 'd["progress"]["wire_bytes"]' < "$work/job.json")
sent=$((after - before))
echo "update: $(js 'd["execution"]' < "$work/job.json"); new chunks' record bytes $rec; bytes on the wire $sent; ratio $(awk -v a=$sent -v b=$rec 'BEGIN{printf "%.4f", a/b}'); overhead $((sent - rec)) bytes = $(awk -v o=$((sent - rec)) -v s=$size2 'BEGIN{printf "%.4f", 100*o/s}')% of the image; budget 1.05 x new + 0.1% = $(awk -v r=$rec -v s=$size2 'BEGIN{printf "%.0f", 1.05*r + 0.001*s}')"
kill9 "$e"

# (3) kill -9 of east at about half of a full copy, through the relay.
cfg east $E "$work/east3" west "http://127.0.0.1:$RELAY"
e=$(start "$work/east.json" $E)
sleep 0.5; base=$(wire)
j=$(import $E "$u1")
while :; do
  f=$(curl -sf "http://127.0.0.1:$E/jobs/$j" | js 'd["progress"]["bytes_fetched"]' 2>/dev/null || echo 0)
  [ "$f" -ge $((size1 / 2)) ] && break
  sleep 0.01
done
kill9 "$e"
e=$(start "$work/east.json" $E); pids+=("$e")
wait_job $E "$j"
sleep 0.5; total=$(( $(wire) - base ))
echo "kill at half: $(js 'd["execution"]' < "$work/job.json"); fetched before the kill $f; bytes on the wire in all $total; one clean copy's record bytes $full_rec; sent more than a clean copy: $((total - full_rec)) (negotiation of two attempts included)"
