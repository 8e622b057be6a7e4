#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 600 s each) from the
# committed seeds. Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable
# toolchain it runs with RUSTC_BOOTSTRAP=1 and without a sanitizer (the code
# under test forbids `unsafe`, so a sanitizer would add little).
# Usage: fuzz/run.sh [seconds per target]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
for target in subscribe_request event_roundtrip ws_control; do
    mkdir -p "corpus/$target" artifacts
    # Fresh inputs go to a scratch copy, so the committed seeds stay small.
    work="$(mktemp -d)"
    cp "corpus/$target"/* "$work"/
    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" "$work" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>&1 | tail -n 25
    rm -rf "$work"
done
