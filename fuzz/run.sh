#!/usr/bin/env bash
# Runs every fuzz target in fuzz/fuzz_targets/, one after another, on stable
# Rust (no sanitizer: `-s none`; ASan, cargo-fuzz's default, needs nightly).
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [LIBFUZZER_ARGS...]
#
# SECONDS_PER_TARGET defaults to 60. Extra arguments go to libFuzzer (e.g.
# `-jobs=2`, `-max_len=8192`). Installs cargo-fuzz if it is missing.
#
# Each target reads its committed seeds in fuzz/corpus/<target>/ (never
# written to) and keeps what it discovers in fuzz/target/corpus/<target>/
# (git-ignored; reused by later runs). Crashes go to fuzz/artifacts/<target>/
# (git-ignored) — minimise one with
#   cargo fuzz tmin -s none <target> fuzz/artifacts/<target>/crash-...
# and commit the result to fuzz/corpus/<target>/ (tests/fuzz_corpus.rs runs
# it on every `cargo test`). Logs: fuzz/target/logs/<target>.log.
#
# Exits non-zero if any target crashed (the others still run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${1:-60}
shift || true
case $secs in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET] [LIBFUZZER_ARGS...]" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi
cargo fuzz --version

mkdir -p fuzz/target/logs
targets=()
for f in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
done

failed=()
summary=()
for t in "${targets[@]}"; do
    echo
    echo "== $t: ${secs}s"
    mkdir -p "fuzz/target/corpus/$t" "fuzz/corpus/$t"
    log="fuzz/target/logs/$t.log"
    rc=0
    # The first corpus directory receives new inputs; the seeds are only read.
    cargo fuzz run -s none "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 "$@" 2>&1 | tee "$log" || rc=$?
    runs=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        summary+=("$t: FAILED (exit $rc), see $log and fuzz/artifacts/$t/")
    else
        summary+=("$t: ok; ${runs:-? runs}s; ${rate:-?} execs/s")
    fi
done

echo
echo "== summary (${secs}s per target)"
printf '   %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "== crashed: ${failed[*]}"
    exit 1
fi
