#!/usr/bin/env bash
# One-command set-up: Debian packages, uv, and the project environment in .venv/.
# Idempotent: a second run with nothing changed installs nothing and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: ffmpeg (decoding), SLURM + munge (local cluster for tests), chromium (MLflow UI
# test), opencv-doc / pocketsphinx-testdata / espeak-ng (real media for tests), libsndfile, postgresql (the
# MLflow tracking server's database, run as you by scripts/tracking_server.sh; Debian's own cluster is not used).
APT_PACKAGES=(ffmpeg slurmctld slurmd slurm-client munge chromium chromium-driver
  opencv-doc pocketsphinx-testdata espeak-ng libsndfile1 sox postgresql)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# uv (pinned); its cache in ~/.cache/uv lives outside the clone, so a fresh clone re-links, not re-downloads.
UV_VERSION=0.13.9
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m pip install -q --user "uv==$UV_VERSION" 2>/dev/null || python3 -m pip install -q "uv==$UV_VERSION"
  export PATH="$HOME/.local/bin:$PATH"
fi

uv sync --locked --all-packages --quiet --compile-bytecode
echo "setup: ok ($(.venv/bin/python --version), $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
