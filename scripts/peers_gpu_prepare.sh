#!/usr/bin/env bash
# Prepare the study's originals for a GPU slot (issue 29 item 4, `ONLY=peers bash scripts/gpu_checks.sh`):
# writes .peers_gpu/ (git-ignored; carry it with .fmnist and .whl):
#   .peers_gpu/dd_lnl  the scripts and configs of DATM+ours, DANCE+ours and dataSolu from a DD_LNL checkout
#                      (about 1 MB: the checkout's images, logs and noise files stay behind)
#   .peers_gpu/whl     pure-Python wheels the device lacks: kornia 0.6.12 (DATM's ZCA; later kornia needs a
#                      compiled kornia_rs) and yacs 0.1.8 (DATM_tesla's config). wandb and torchvision are replaced
#                      by the glue's stand-ins there (experiments/peers/glue/shims.py).
# Usage: bash scripts/peers_gpu_prepare.sh /path/to/DD_LNL   (bring it with the search tool's fetch, or git clone)
set -euo pipefail
SRC=$(cd "${1:?usage: $0 DD_LNL_CHECKOUT}" && pwd)
DST=$PWD/.peers_gpu
rm -rf "$DST/dd_lnl"
mkdir -p "$DST/dd_lnl" "$DST/whl"
(cd "$SRC" && find DATM+ours DANCE+ours dataSolu -type f \
    \( -name '*.py' -o -name '*.yaml' -o -name '*.yml' -o -name '*.json' -o -name '*.txt' \) -size -1024k \
    -exec cp --parents {} "$DST/dd_lnl/" \;)
pip download -q --no-deps --only-binary=:all: -d "$DST/whl" kornia==0.6.12 yacs==0.1.8
du -sh "$DST/dd_lnl" "$DST/whl"
