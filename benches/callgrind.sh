#!/usr/bin/env bash
# Instructions per hit for each subject, counted by callgrind (repeatable on a
# busy machine, unlike seconds). Each subject runs twice, with N1 and N2 hits;
# the difference cancels startup: per hit = (I(N2) - I(N1)) / (N2 - N1).
#
#   bash benches/callgrind.sh                 # every subject
#   bash benches/callgrind.sh ours floor      # some
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: sudo apt-get install valgrind" >&2; exit 1; }
cargo build --release -q -p cache-benches --bin hit_path
N1=${N1:-2000}
N2=${N2:-12000}
subjects=("$@")
[ ${#subjects[@]} -gt 0 ] || subjects=(floor floor-generation ours cached moka ours-memory cached-memory)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

total() {
  valgrind --tool=callgrind --callgrind-out-file="$out/$1.$2" \
    target/release/hit_path "$1" "$2" >/dev/null 2>"$out/$1.$2.log"
  awk '/^summary:/ { print $2 }' "$out/$1.$2"
}

echo "| subject | instructions per hit |"
echo "| --- | ---: |"
for s in "${subjects[@]}"; do
  a=$(total "$s" "$N1")
  b=$(total "$s" "$N2")
  echo "| $s | $(( (b - a) / (N2 - N1) )) |"
done
