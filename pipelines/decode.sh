#!/usr/bin/env bash
# Decode a .gvc file to a y4m file: pipelines/decode.sh <in.gvc> <out.y4m>
set -euo pipefail
export GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
gst-launch-1.0 filesrc location="$1" ! gvcparse ! gvcdec ! videoconvert ! video/x-raw,format=I420 ! y4menc ! filesink location="$2"
