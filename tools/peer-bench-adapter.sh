# Slots imgstore into ../shared/peer-bench.sh beside restic, borg and casync:
#
#   cargo build && OURS_BIN=$CARGO_TARGET_DIR/debug/imgstore \
#     ../shared/peer-bench.sh -a tools/peer-bench-adapter.sh -s stores -t ours,borg_zstd3 /tmp/peerdata
#
# Sourced by peer-bench.sh; every st_ours_* runs under `bash -c`, so it uses
# only exported variables. A tag maps to the file id the put returned.

export OURS_BIN=${OURS_BIN:-imgstore}

st_ours_check()   { command -v "$OURS_BIN" > /dev/null; }
st_ours_version() { "$OURS_BIN" --version; }
st_ours_init()    { mkdir -p "$1/tags"; }
st_ours_put()     {
  "$OURS_BIN" store put --data-dir "$1/store" --json "$2" \
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["file_id"])' > "$1/tags/$3"
}
st_ours_get()     { "$OURS_BIN" store cat --data-dir "$1/store" "$(cat "$1/tags/$2")" > "$3"; }
st_ours_size()    { du -sb "$1/store" | cut -f1; }
st_ours_logical() {
  "$OURS_BIN" store stats --data-dir "$1/store" --json \
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["unique_uncompressed_bytes"])'
}
st_ours_clone()   {
  local id; id=$(cat "$1/tags/$2")
  "$OURS_BIN" store link --data-dir "$1/store" "$id" > /dev/null && echo "$id" > "$1/tags/$3"
}
# A copy between stores is the engine's copy between datacenters without
# the HTTP in between: only the chunks the destination lacks move, each one
# and the whole file verified on arrival.
st_ours_copy_init() { st_ours_init "$2"; }
st_ours_copy()    {
  "$OURS_BIN" store copy --data-dir "$2/store" --from "$1/store" "$(cat "$1/tags/$3")" > /dev/null \
    && cp "$1/tags/$3" "$2/tags/$3"
}
export -f st_ours_check st_ours_version st_ours_init st_ours_put st_ours_get st_ours_size st_ours_logical st_ours_clone st_ours_copy_init st_ours_copy

register_store ours "imgstore (BLAKE3 ids, FastCDC 64 KiB, zstd-1 records in append-only segments + RocksDB)"
