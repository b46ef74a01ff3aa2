"""Run one script as N local CPU processes joined by `jax.distributed.initialize` (coordinator on a free
localhost port) and read back the JSON line each prints. The script reads its rank from JAXDISTILL_PROCESS_ID
and the coordinator from JAXDISTILL_COORDINATOR (see `PRELUDE`)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from helpers.multidevice import ROOT

PRELUDE = r'''
import os, jax
if os.environ.get("JAXDISTILL_COORDINATOR"):
    jax.distributed.initialize(coordinator_address=os.environ["JAXDISTILL_COORDINATOR"],
                               num_processes=int(os.environ["JAXDISTILL_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAXDISTILL_PROCESS_ID"]))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _line(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("JSON")][-1][4:])


def run_processes(script: str, num_processes: int = 2, timeout: int = 600, env: dict | None = None) -> list[dict]:
    """Start `num_processes` copies of PRELUDE + script (one CPU device each); returns their JSON reports,
    in rank order. num_processes=1 runs the script alone, without jax.distributed (the oracle). env: extra
    environment variables."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    env.pop("XLA_FLAGS", None)
    if num_processes > 1:
        env.update(JAXDISTILL_COORDINATOR=f"localhost:{free_port()}", JAXDISTILL_NUM_PROCESSES=str(num_processes))
    procs = [subprocess.Popen([sys.executable, "-c", PRELUDE + script], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=dict(env, JAXDISTILL_PROCESS_ID=str(i)))
             for i in range(num_processes)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:  # a process left waiting on a collective of a crashed peer
            if p.poll() is None:
                p.kill()
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-4000:]
    return [_line(so) for so, _ in outs]
