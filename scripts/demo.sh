#!/usr/bin/env bash
# The main job (README): setup if needed, build, then encode and decode a real clip through
# GStreamer with the default model and print bytes, bpp and quality.
# Usage: scripts/demo.sh [clip (default: carphone_pristine.mp4)] [frames (default 32)] [qp (default 1)]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
./scripts/setup.sh
cargo build --locked --release --bin gvc-demo
export GST_REGISTRY=${GST_REGISTRY:-$(mktemp -d)/registry.bin}
exec ./target/release/gvc-demo "${1:-carphone_pristine.mp4}" "${2:-32}" "${3:-1}"
