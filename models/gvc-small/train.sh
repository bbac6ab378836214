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
$train codec --model-dir $dir --steps 2400 --batch 8 --crop 128 --frames 3 --lr 2e-4 --minutes 42 --lambdas 128,32,8,2
$train diffusion --model-dir $dir --steps 3600 --batch 8 --crop 128 --lr 2e-4 --minutes 22
$train export --model-dir $dir

# Session 2 (same day): the three stages continued from session 1's checkpoints with higher
# step targets (the step counter and cosine schedule resume where they stopped), then export.
$train autoencoder --model-dir $dir --steps 2800 --batch 8 --crop 128 --lr 3e-4 --minutes 32
$train codec --model-dir $dir --steps 6000 --batch 8 --crop 128 --frames 3 --lr 2e-4 --minutes 45 --lambdas 128,32,8,2
$train diffusion --model-dir $dir --steps 6000 --batch 8 --crop 128 --lr 2e-4 --minutes 20
$train export --model-dir $dir

# Session 3: the rate ladder moved down (λ per QP 128/32/8/2 → 64/8/1/0.125, now also in
# config.json) so the lowest rate points reach x264/x265's bpp range; the codec continues from
# session 2's checkpoint under the new λ, then the denoiser on the new decoded latents.
$train codec --model-dir $dir --steps 8000 --batch 8 --crop 128 --frames 3 --lr 2e-4 --minutes 45 --lambdas 64,8,1,0.125
$train diffusion --model-dir $dir --steps 9000 --batch 8 --crop 128 --lr 2e-4 --minutes 25
$train export --model-dir $dir

# Session 4: the decoded motion had drifted away from real motion after the warm-up faded
# (codec-check: it aligned frames 3.5x worse than no motion), so the codec continues with the
# alignment term kept at 0.25 x λ (--align-floor, the default since), then the denoiser on the
# new decoded latents. TDIR's agreement scale τ (config.json tdir_agreement) was chosen after
# export with `gvc-bench-diffusion --tdir-agreements …`.
$train codec --model-dir $dir --steps 9000 --batch 8 --crop 128 --frames 3 --lr 2e-4 --minutes 32 --lambdas 64,8,1,0.125 --align-floor 0.25
$train diffusion --model-dir $dir --steps 9600 --batch 8 --crop 128 --lr 2e-4 --minutes 18
$train export --model-dir $dir
