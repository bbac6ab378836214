#!/usr/bin/env bash
# Does a stream made on this CPU decode the same on another? Encodes a clip through gvcenc,
# then decodes it through gvcdec with libtorch's back ends at this CPU's instruction set and
# capped at older ones, which is what a machine without them would run: oneDNN at each ISA
# given (ONEDNN_MAX_CPU_ISA), then every back end at once (oneDNN at SSE4.1, ATen's kernels at
# their scalar build, MKL at SSE4.2 in its compatible mode). Prints the frames decoded, a
# checksum of the pictures and the decoder's first warning; never asserts (the test
# `streams_decode_alike_on_other_instruction_sets` does, on the codec's latents). Since the
# codec decodes in `PortableConv` every decode must keep sync; the pictures still differ in
# the last bits, as the latent decoder and the denoiser compute in float.
# Usage: scripts/cross_isa_check.sh [clip (default: carphone_pristine.mp4)] [qp (default 0)] [ISAs (default: AVX SSE41)]
# Needs ./scripts/setup.sh and `cargo build --release` first.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-$repo/target/release}
export GST_REGISTRY=${GST_REGISTRY:-$(mktemp -d)/registry.bin}
clip=${GVC_CLIPS:-$HOME/.cache/gvc/clips}/${1:-carphone_pristine.mp4}
qp=${2:-0}
isas=${3:-AVX SSE41}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gst-launch-1.0 -q filesrc location="$clip" ! decodebin ! videoconvert ! gvcenc qp="$qp" ! filesink location="$work/stream.gvc"
caps=$(gst-launch-1.0 -v filesrc location="$clip" ! decodebin ! video/x-raw ! fakesink num-buffers=1 2>&1)
width=$(grep -m1 -o "width=(int)[0-9]*" <<<"$caps" | grep -o "[0-9]*$")
height=$(grep -m1 -o "height=(int)[0-9]*" <<<"$caps" | grep -o "[0-9]*$")
frame_bytes=$(( width * height + 2 * ((width + 1) / 2) * ((height + 1) / 2) ))
echo "$(basename "$clip") ${width}x${height} qp $qp: $(stat -c %s "$work/stream.gvc") bytes"
decode() { # decode <out.yuv>
    gst-launch-1.0 filesrc location="$work/stream.gvc" ! gvcparse ! gvcdec ! videoconvert \
        ! video/x-raw,format=I420 ! filesink location="$1" 2>&1 || true
}
configs=("")
for isa in $isas; do configs+=("ONEDNN_MAX_CPU_ISA=$isa"); done
configs+=("ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE MKL_ENABLE_INSTRUCTIONS=SSE4_2")
for i in "${!configs[@]}"; do
    config=${configs[$i]}
    out="$work/$i.yuv"
    # A subshell, so the caps apply to this decode only.
    log=$([ -z "$config" ] || export $config; decode "$out")
    damaged=$(grep -c "Dropping a damaged frame" <<<"$log" || true)
    first=$(grep -m1 -o "Dropping a damaged frame: .*" <<<"$log" || echo "none")
    echo "decode with ${config:-no caps}: $(( $(stat -c %s "$out") / frame_bytes )) frames, md5 $(md5sum <"$out" | cut -c1-12), $damaged damaged-frame warnings (first: $first)"
done
