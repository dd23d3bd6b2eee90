#!/usr/bin/env bash
# `keyward scan` throughput against ripgrep on the same generated tree, in
# the same run: `rg -c "$(keyward regex)"` (a regex match, no checksum) and
# `keyward scan` (prefix search + CRC32 checksum of every candidate).
#
#   scripts/bench-scan.sh                 # 500 MB tree, 3 runs each
#   SIZE_MB=100 RUNS=5 scripts/bench-scan.sh
#   GENERATE_ONLY=1 scripts/bench-scan.sh   # only make the tree
#
# Needs: a release build (cargo build --release -p keyward), python3,
# ripgrep and hyperfine (apt-get install -y ripgrep hyperfine). The tree is
# kept in $BENCH_DIR between runs (delete it to regenerate). Both tools read
# from the page cache (a warm-up run each), so this measures search, not the
# disk. Run it on a quiet machine: it uses every core.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB="${SIZE_MB:-500}"
RUNS="${RUNS:-3}"
KEYS="${KEYS:-25}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/keyward-bench-scan}"
TARGET="${CARGO_TARGET_DIR:-target}"
KEYWARD="${KEYWARD:-$TARGET/release/keyward}"

for tool in rg hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y ripgrep hyperfine python3)" >&2; exit 2; }
done
[ -x "$KEYWARD" ] || { echo "no release binary at $KEYWARD: cargo build --release -p keyward" >&2; exit 2; }

tree="$BENCH_DIR/tree-$SIZE_MB"
if [ ! -f "$tree/.complete" ]; then
  rm -rf "$tree"
  mkdir -p "$tree"
  # Valid keys of the default format: `keyward regex --format github` prints
  # a freshly generated one as its test string (issued by no deployment).
  for _ in $(seq "$KEYS"); do
    "$KEYWARD" regex --format github | sed -n 's/^Test string: //p'
  done > "$BENCH_DIR/keys.txt"
  python3 - "$tree" "$SIZE_MB" "$BENCH_DIR/keys.txt" <<'PY'
import os, random, sys
root, size_mb, keys_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
keys = open(keys_file).read().split()
rng = random.Random(15)
words = ("fn let mut return self config value match Some None impl struct pub "
         "use crate async await Result Ok Err String Vec map filter collect "
         "kw_live token key secret api request response error").split()
def line():
    r = rng.random()
    if r < 0.002:  # prefix noise and checksum-broken look-alikes
        k = rng.choice(keys)
        return f'let t = "{k[:-1]}{"0" if k[-1] != "0" else "1"}"; // kw_live_ kw_test_short'
    indent = " " * (4 * rng.randrange(4))
    return indent + " ".join(rng.choice(words) for _ in range(rng.randrange(3, 14))) + ";"
# A pool of chunks, reused across files: generation stays fast, the text
# stays varied enough for a searcher.
chunks = ["\n".join(line() for _ in range(400)) + "\n" for _ in range(64)]
target = size_mb * 1_000_000
written, n = 0, 0
step = max(1, target // 150_000 // max(1, len(keys)))  # files of ~135 KB on average
key_files = {i * step + 1: k for i, k in enumerate(keys)}
while written < target:
    d = os.path.join(root, f"pkg{n % 97:02d}", f"mod{n % 13}")
    os.makedirs(d, exist_ok=True)
    parts = [rng.choice(chunks) for _ in range(rng.randrange(2, 12))]
    if n in key_files:
        parts.insert(1, f'const API_KEY: &str = "{key_files[n]}";\n')
    body = "".join(parts)
    with open(os.path.join(d, f"file{n:06d}.rs"), "w") as f:
        f.write(body)
    written += len(body)
    n += 1
print(f"generated {n} files, {written / 1e6:.0f} MB", file=sys.stderr)
PY
  touch "$tree/.complete"
fi
[ "${GENERATE_ONLY:-0}" = 1 ] && exit 0

bytes=$(find "$tree" -type f -name '*.rs' -printf '%s\n' | awk '{s+=$1} END {print s}')
files=$(find "$tree" -type f -name '*.rs' | wc -l)
regex=$("$KEYWARD" regex)
# The prefixes alone, as fixed strings: the floor of any prefix search
# (no key shape, no checksum), for context.
literals=$(printf -- "-e %s " $(echo "$regex" | sed -E 's/^\\b\(([^)]*)\).*/\1/' | tr '|' ' '))
found=$("$KEYWARD" scan --quiet --format json "$tree" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["findings"]))' || true)
rg_found=$(rg -c "$regex" "$tree" | awk -F: '{s+=$NF} END {print s+0}')
echo "tree: $files files, $((bytes / 1000000)) MB; keys planted: $(wc -l < "$BENCH_DIR/keys.txt"); keyward scan found $found (checksum valid), rg matched $rg_found lines (regex only)"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

json="$BENCH_DIR/hyperfine.json"
hyperfine --style basic --warmup 1 --runs "$RUNS" -i --export-json "$json" \
  -n "rg -c (keyward regex)" "rg -c '$regex' '$tree'" \
  -n "keyward scan" "'$KEYWARD' scan --quiet '$tree'" \
  -n "rg -c -F (prefixes)" "rg -c -F $literals '$tree'"
python3 - "$json" "$bytes" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["results"]
mb = int(sys.argv[2]) / 1e6
med = {r["command"]: r["median"] for r in runs}
rg, kw = med["rg -c (keyward regex)"], med["keyward scan"]
print(f"rg:           median {rg:.3f} s  {mb / rg:8.0f} MB/s")
print(f"keyward scan: median {kw:.3f} s  {mb / kw:8.0f} MB/s")
fixed = med["rg -c -F (prefixes)"]
print(f"rg -F prefixes: median {fixed:.3f} s  {mb / fixed:8.0f} MB/s  (literal search only, for context)")
print(f"keyward scan / rg throughput: {rg / kw:.2f}x (target >= 0.5x)")
PY
