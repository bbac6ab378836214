#!/usr/bin/env bash
# The test command (README, .ci/run): setup if needed, then fmt, clippy and the tests.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
./scripts/setup.sh
export GST_REGISTRY=${GST_REGISTRY:-$(mktemp -d)/registry.bin}
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked
cargo test --locked
