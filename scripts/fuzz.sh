#!/usr/bin/env bash
# Fuzzes the stream parsers and the packet decoder for a bounded time (not part of CI: the
# instrumented build alone takes ~10 min on 2 cores).
# Usage: scripts/fuzz.sh [seconds per target (default 600)] [targets (default: bitstream decoder)]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs without a sanitizer (-s none) so
# libtorch need not be instrumented; RUSTC_BOOTSTRAP lets the stable toolchain build it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
./scripts/setup.sh
seconds=${1:-600}
shift || true
if [ $# -gt 0 ]; then targets=("$@"); else targets=(bitstream decoder); fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
# The fuzz binaries are not linked with the plugin's rpath to libtorch.
export LD_LIBRARY_PATH="$repo/.venv/lib/python3.11/site-packages/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cd fuzz
cargo fuzz build -s none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${seconds}s"
    # -print_final_stats prints stat::number_of_executed_units; a crash, or an input running
    # longer than 10 s (a hang), exits non-zero and leaves the input under fuzz/artifacts/$t/.
    cargo fuzz run -s none "$t" -- -max_total_time="$seconds" -timeout=10 -print_final_stats=1 -rss_limit_mb=4096 2>&1 |
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb|ERROR|panicked|SUMMARY|Done [0-9]+ runs"
done
