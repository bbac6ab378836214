#!/usr/bin/env bash
# gvc against x264 and x265 on the real clips: pipelines/compare.sh [frames]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --locked --release --bin gvc-eval -- --frames "${1:-32}" --out out/eval
