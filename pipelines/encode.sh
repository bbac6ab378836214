#!/usr/bin/env bash
# Encode any clip GStreamer can decode: pipelines/encode.sh <input> <out.gvc> [qp]
set -euo pipefail
export GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
gst-launch-1.0 filesrc location="$1" ! decodebin ! videoconvert ! gvcenc qp="${3:-1}" ! filesink location="$2"
