#!/usr/bin/env bash
# Loom model checks of manta's concurrency protocols (tests/loom_*.rs):
# slot, countdown, mailbox, notify, refcount, export, dispatch, decide, parked, claim,
# eventlog, lazy, watchers, group counts. The whole crate is built with
# `--cfg loom`, so the `sync` shim resolves to loom's types.
#
# Separate target dir: RUSTFLAGS differ from the normal build, and sharing
# `target/` would make the two builds invalidate each other's artifacts.
# LOOM_MAX_PREEMPTIONS defaults to 2 (every model runs in well under a
# second at that bound); override it from the environment to search deeper.
# Exits non-zero if any model fails (a failed assertion, a loom deadlock,
# causality violation or leak; a loom deadlock may abort the test binary).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export RUSTFLAGS="--cfg loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"

# `--test 'loom_*'` is a glob over test targets: every tests/loom_*.rs;
# `--no-fail-fast` runs every model even after one fails (exit status is
# still non-zero).
exec cargo test --release -p manta --test 'loom_*' --target-dir target/loom --no-fail-fast
