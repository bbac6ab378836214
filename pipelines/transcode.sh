#!/usr/bin/env bash
# Transcode a .gvc file to H.264 in MP4: pipelines/transcode.sh <in.gvc> <out.mp4>
set -euo pipefail
export GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
gst-launch-1.0 filesrc location="$1" ! gvcparse ! gvcdec ! videoconvert ! x264enc ! mp4mux ! filesink location="$2"
