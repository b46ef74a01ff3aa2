#!/usr/bin/env bash
# Set up jaxdistill on a fresh machine: the embedded Fashion-MNIST data (Debian package) and the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "setup: could not install dataset-fashion-mnist with apt; set JAXDISTILL_DATA_DIR to a folder with the IDX files" >&2
  else
    echo "setup: Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist' or set JAXDISTILL_DATA_DIR" >&2
  fi
fi
python -m pip install -q -e ".[dev]"
