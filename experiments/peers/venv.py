"""Create the originals' virtual environments with exact pins (outside the repository).

  python experiments/peers/venv.py torch  [--root ~/.cache/jaxdistill_peers]   # DATM and DANCE (PyTorch)
  python experiments/peers/venv.py rcig   [--root ...]                         # RCIG (JAX 0.4.33 stack), ~3 min
  python experiments/peers/venv.py show                                        # print the pins

Each venv is `<root>/<name>`; its interpreter `<root>/<name>/bin/python` is what `run_peers.py --python`
defaults to. Packages come from the configured package index with pip's ordinary client. torchvision is
installed with --no-deps (its wheel pins a torch build other than the CPU wheel here; it imports beside it
once the glue stubs `torchvision._meta_registrations`), efficientnet_pytorch too (DANCE's common.py imports
it; the ConvNet runs never build an EfficientNet).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

PINS = {
    "torch": {
        "python": "3.11",
        "deps": ["torch==2.14.1", "numpy==2.4.6", "kornia==0.9.0", "yacs==0.1.8", "wandb==0.31.0",
                 "matplotlib==3.11.2", "tqdm==4.70.1", "pyyaml", "pillow", "scipy"],
        "nodeps": ["torchvision==0.29.1", "efficientnet_pytorch==0.7.1"],
    },
    # RCIG+ours (JAX; the study pinned nothing, distillers.md 3.8): the stack, every top-level package
    # exact. tensorflow-metadata 1.21 (what tfds 4.9.3 would pull) imports google.protobuf.runtime_version, which
    # protobuf < 5 lacks; 1.16.1 is the newest that imports beside protobuf 4.25.
    "rcig": {
        "python": "3.11",
        "deps": ["jax==0.4.33", "jaxlib==0.4.33", "flax==0.8.3", "optax==0.2.2", "chex==0.1.90", "clu==0.0.12",
                 "tensorflow-cpu==2.16.2", "tensorflow-datasets==4.9.3", "tensorflow-metadata==1.16.1",
                 "orbax-checkpoint==0.6.4", "einops==0.8.2", "ml-collections==1.1.0", "protobuf==4.25.9",
                 "fire==0.7.1", "numpy==1.26.4"],
        "nodeps": [],
    },
}

DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "jaxdistill_peers")


def venv_python(name: str, root: str = DEFAULT_ROOT) -> str:
    return os.path.join(root, name, "bin", "python")


def create(name: str, root: str = DEFAULT_ROOT, python: str = sys.executable) -> str:
    pins = PINS[name]
    path = os.path.join(root, name)
    py = venv_python(name, root)
    if not os.path.exists(py):
        os.makedirs(root, exist_ok=True)
        subprocess.run([python, "-m", "venv", path], check=True)
    pip = [py, "-m", "pip", "install", "-q"]
    subprocess.run(pip + pins["deps"], check=True)
    if pins["nodeps"]:
        subprocess.run(pip + ["--no-deps"] + pins["nodeps"], check=True)
    frozen = subprocess.run([py, "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
    with open(os.path.join(path, "peers-freeze.txt"), "w") as f:
        f.write(frozen)
    return py


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(PINS) + ["show"])
    p.add_argument("--root", default=DEFAULT_ROOT)
    a = p.parse_args(argv)
    if a.name == "show":
        for k, v in PINS.items():
            print(f"{k}: {' '.join(v['deps'])} | --no-deps {' '.join(v['nodeps'])}")
        return 0
    print(create(a.name, a.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
