#!/usr/bin/env bash
# Bytes over the air and update time, full image vs delta patch, side by side in one run:
# `ota serve` on 127.0.0.1 (ephemeral port) with two versions of an app, emulated devices
# updating through the catalogue over `--stack embassy --link rate=56kB/s,rtt=60ms`, once with
# the patch (`ota serve --delta-bases 3`) and once without (`--delta-bases 0`).
# Usage: scripts/delta-figures.sh [path/to/ota]   (default: target/release/ota)
set -euo pipefail
OTA=${1:-target/release/ota}
LINK=${LINK:-rate=56kB/s,rtt=60ms}
work=$(mktemp -d)
trap 'kill "$srv" 2>/dev/null || true; rm -rf "$work"' EXIT

# pair NAME OLD-ARGS NEW-ARGS: two `ota image make` builds of project "app".
pair() {
    local name=$1 old=$2 new=$3
    mkdir -p "$work/$name/www"
    # shellcheck disable=SC2086
    "$OTA" image make --project app $old -o "$work/$name/www/old.bin" >/dev/null
    # shellcheck disable=SC2086
    "$OTA" image make --project app $new -o "$work/$name/www/new.bin" >/dev/null
}

run() { # run NAME BASES
    local name=$1 bases=$2 dir=$work/$1
    rm -rf "$dir/www/.ota-delta" "$dir/flash.bin"*
    "$OTA" device create --flash "$dir/flash.bin" --app "$dir/www/old.bin" >/dev/null 2>&1
    "$OTA" device boot --flash "$dir/flash.bin" >/dev/null
    "$OTA" serve "$dir/www" --bind 127.0.0.1:0 --delta-bases "$bases" >"$dir/serve.out" 2>"$dir/serve.log" &
    srv=$!
    for _ in $(seq 100); do grep -q '^catalogue:' "$dir/serve.out" 2>/dev/null && break; sleep 0.1; done
    local base
    base=$(sed -n 's/^Serving.*(\(http:[^)]*\)\/).*/\1/p' "$dir/serve.out")
    printf '[[upgrade]]\ntype = "app"\nuri = "%s/manifest.json"\nproject = "app"\nversion_check = "semver"\n' "$base" >"$dir/ota.toml"
    local t0 t1
    t0=$(date +%s%N)
    "$OTA" device run --flash "$dir/flash.bin" --config "$dir/ota.toml" --stack embassy --link "$LINK" >"$dir/run.log" 2>&1
    t1=$(date +%s%N)
    kill "$srv"; wait "$srv" 2>/dev/null || true
    local bytes
    # Access-log lines: `... "GET /path HTTP/1.1" 200 - BYTES 1.2ms`.
    bytes=$(awk -F'"' '/"GET / && !/manifest.json/ { split($3, a, " "); n += a[3] } END { print n + 0 }' "$dir/serve.log")
    local what=image
    grep -q 'esp_delta_ota: patch from' "$dir/run.log" && what=patch
    printf '%-28s %-6s %10s bytes %8.2f s  (new image %s bytes)\n' "$name" "$what" "$bytes" \
        "$(echo "($t1 - $t0) / 1000000000" | bc -l)" "$(stat -c %s "$dir/www/new.bin")"
}

pair "small change (version)" "--version v1.0.0 --size 768K" "--version v1.0.1 --size 768K"
pair "bigger change (layout)" "--version v1.0.0 --size 768K" "--version v1.1.0 --size 800K --segments 6"
for p in "small change (version)" "bigger change (layout)"; do
    run "$p" 3
    run "$p" 0
done
