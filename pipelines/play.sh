#!/usr/bin/env bash
# Play a .gvc file: the typefinder lets playbin find gvcparse ! gvcdec. pipelines/play.sh <in.gvc>
set -euo pipefail
export GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
gst-play-1.0 "$1"
