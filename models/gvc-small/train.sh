#!/usr/bin/env bash
# The recipe that trained models/gvc-small on this project's CPU machine (2 cores).
# Each stage resumes from models/gvc-small/checkpoints/ if interrupted.
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/setup.sh
cargo build --locked --release --bin gvc-train
train=./target/release/gvc-train
dir=models/gvc-small
$train autoencoder --model-dir $dir --steps 2800 --batch 8 --crop 128 --lr 3e-4 --minutes 45
$train codec --model-dir $dir --steps 2400 --batch 8 --crop 128 --frames 3 --lr 2e-4 --minutes 42
$train diffusion --model-dir $dir --steps 3600 --batch 8 --crop 128 --lr 2e-4 --minutes 22
$train export --model-dir $dir

# Session 2 (same day): the three stages continued from session 1's checkpoints with higher
# step targets (the step counter and cosine schedule resume where they stopped), then export.
$train autoencoder --model-dir $dir --steps 2800 --batch 8 --crop 128 --lr 3e-4 --minutes 32
$train codec --model-dir $dir --steps 6000 --batch 8 --crop 128 --frames 3 --lr 2e-4 --minutes 45
$train diffusion --model-dir $dir --steps 6000 --batch 8 --crop 128 --lr 2e-4 --minutes 20
$train export --model-dir $dir
