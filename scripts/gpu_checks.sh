#!/usr/bin/env bash
# The GPU must-shows of issues #3, #5, #7, #8 and #18 in one short script, for a 15-minute device slot.
#
# Prepare on the CPU machine (both paths are git-ignored and travel with `carry`):
#   mkdir -p .whl .fmnist
#   pip download --no-deps --python-version 3.12 --only-binary=:all: -d .whl neural-tangents==0.6.5 frozendict
#   cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .fmnist/
# Run on the device (carry .whl and .fmnist), about 13-16 minutes (split it over two slots with ONLY if needed):
#   bash scripts/gpu_checks.sh
# Every step has its own timeout, so one slow step cannot eat the others; logs and JSON go to $OUT.
# ONLY=datm,dance_mem: only the steps whose names start so (to split the script over two slots).
# ONLY=peers: the originals beside jaxdistill (needs .peers_gpu, below); never part of the default run.
# TINY=1: every step at CPU-sized shapes, with 5x its time limit and no installs, so a broken step shows up on
# the CPU before a device slot is spent on it (all steps: about 12 min on 2 cores; tests/test_gpu_checks.py runs
# a cheap ONLY subset).
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}
export JAXDISTILL_DATA_DIR=$PWD/.fmnist
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }
tiny() { [ "${TINY:-0}" = "1" ]; }
sz() {  # sz TINY_ARGS FULL_ARGS: the arguments for this mode (unquoted by the caller: no argument holds a space)
    if tiny; then echo "$1"; else echo "$2"; fi
}
selected() {  # ONLY=a,b: run only the steps whose names start with a or b (e.g. a second slot's share)
    [ -z "${ONLY:-}" ] && return 0
    local p
    for p in ${ONLY//,/ }; do [[ $1 == "$p"* ]] && return 0; done
    return 1
}
step() {  # step NAME SECONDS CMD...
    local name=$1 secs=$2; shift 2
    if ! selected "$name"; then log "$name: skipped (ONLY=$ONLY)"; return; fi
    tiny && secs=$((secs * 5))  # the limits are sized for the GPU; a loaded 2-core CPU compiles far slower
    log "$name (timeout ${secs}s): $*"
    local t0=$SECONDS
    timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
    log "$name: exit $? after $((SECONDS - t0)) s"
    tail -n 15 "$OUT/$name.log"
}

if ! tiny; then
    pip install --no-deps -q .whl/*.whl 2>&1 | tail -2
    pip install --no-deps -q -e . 2>&1 | tail -2
fi
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
python -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"

# #3 / #7: DATM at CIFAR-10 IPC 10 shapes against the PyTorch-eager reference, same run (>= 8x, lower memory).
step datm 200 python benchmarks/bench_datm.py $(sz "--small --iters 2" "--iters 5") --variants nodsa,autodiff,dsa --json "$OUT/datm.json"
# #7: DANCE against its reference (>= 5x; measured 12.3x in session 1, repeated for the FLOP/s fraction).
step run_datm_dance 150 python benchmarks/run.py --only datm,dance $(sz "--small --settings c10_ipc1 --repeats 1" "--settings c10_ipc10 --repeats 3") --out "$OUT/run_dd"
# #18: DANCE memory at CIFAR-10 IPC 10: XLA's own accounting of the iteration (temp = its working set) and the
# allocator's figures before compile / after compile (autotuning) / after one run, one process per variant so the
# process-wide peak is that variant's; then the time cost of class_chunk=1 (one class's activations at a time).
for v in scan batched; do
    for cc in 0 1; do
        step "dance_mem_${v}_cc$cc" 60 python benchmarks/dance_memory.py $(sz --small "") --variants "$v" --class-chunks "$cc" --run
    done
done
step dance_chunk1 90 python benchmarks/bench_dance.py $(sz "--small --iters 2" "--ipcs 10") --no-torch --class-chunk 1
# #18: whole runs at the study's shapes (CIFAR-10 IPC 10, width 128): distill() end to end per iteration against the
# compiled chunks, same run (target overhead <= 5%); then the per-iteration loop (chunk 1) for the before figure.
step whole_run 300 python benchmarks/whole_run.py $(sz "--small --n1 2 --n2 4" "--n1 50 --n2 250") --json "$OUT/whole_run.json"
step whole_run_chunk1 150 python benchmarks/whole_run.py --only dance,rcig $(sz "--small --n1 2 --n2 4" "--n1 25 --n2 75") --chunk 1 \
    --json "$OUT/whole_run_chunk1.json"
# #5: RCIG iteration time and memory at IPC 10.
step rcig 120 python benchmarks/bench_rcig.py $(sz "--small --iters 2" "--iters 3") --ipc 10
# #19: RCIG through neural-tangents vs the hand-written jvp at the study's shapes (time and XLA FLOP ratios).
step rcig_nt 150 python benchmarks/bench_rcig_nt.py $(sz "--shapes small --reps 2" "--shapes study --reps 5")
# #7: expert training, 1 model vs 8 vmapped models (throughput ratio >= 0.8 x 8).
step train1 60 python benchmarks/run.py --only train $(sz "--small --settings c10_ipc1 --repeats 1" "--settings c10_ipc10 --repeats 3") \
    --train-models 1 --out "$OUT/train1"
step train8 60 python benchmarks/run.py --only train $(sz "--small --settings c10_ipc1 --repeats 1" "--settings c10_ipc10 --repeats 3") \
    --train-models 8 --out "$OUT/train8"
# #8: GPU non-determinism: the same DANCE command twice with the same seed; spread of images and accuracy.
for r in 1 2; do
    step "det$r" 70 python -m jaxdistill.cli distill --method dance $(sz "--dataset digits --ipc 2 --subset 200" \
        "--dataset fashion_mnist --ipc 10") --noise symmetric:0.4 --preset quick --seed 0 --out "$OUT/det$r"
done
selected det && python - "$OUT" <<'EOF' | tee "$OUT/determinism.txt"
import json, sys, numpy as np
out = sys.argv[1]
try:
    a, b = (np.load(f"{out}/det{r}/distilled.npz") for r in (1, 2))
    ra, rb = (json.load(open(f"{out}/det{r}/results.json")) for r in (1, 2))
    d = float(np.abs(a["images"] - b["images"]).max())
    print(f"max |images1 - images2| = {d:.3e}; identical: {d == 0.0}")
    for r, doc in ((1, ra), (2, rb)):
        print(f"run {r}:", json.dumps(doc["results"], default=str)[:600])
except Exception as e:  # noqa: BLE001
    print("determinism comparison failed:", type(e).__name__, e)
EOF
# #29 item 4: the study's own DATM_tesla.py and DANCE.py beside jaxdistill on the GPU, same work (quick budget,
# Fashion-MNIST, symmetric 0.4, seed 0), each side's time per iteration. Only on request (ONLY=peers: a slot of
# its own, about 8 minutes) and with .peers_gpu carried (bash scripts/peers_gpu_prepare.sh DD_LNL_CHECKOUT).
# TINY=1: on the CPU with the torch venv (experiments/peers/venv.py) and the glue's wandb / torchvision stand-ins.
if [ -n "${ONLY:-}" ] && selected peers; then
    if [ ! -d .peers_gpu/dd_lnl ]; then
        log "peers: skipped (.peers_gpu missing: bash scripts/peers_gpu_prepare.sh DD_LNL_CHECKOUT, then carry it)"
    else
        if tiny; then
            PEERS_PY=$(python -c "from experiments.peers.venv import venv_python; print(venv_python('torch'))")
            export PEERS_STUB=wandb,torchvision
        else
            pip install --no-deps -q .peers_gpu/whl/*.whl 2>&1 | tail -2
            PEERS_PY=python
        fi
        IDX=$([ -d .fmnist ] && echo "$PWD/.fmnist" || echo /usr/share/datasets/fashion-mnist)
        for m in datm dance; do
            small=$([ $m = datm ] && echo "--cfg num_experts=1" || echo "--cfg pretrain_epochs=1")
            step "peers_$m" 300 python experiments/peers/run_peers.py run --peer-dir .peers_gpu/dd_lnl \
                --python "$PEERS_PY" --device $(sz cpu cuda) --idx-dir "$IDX" --method $m \
                --noise symmetric:0.4 --budget quick --seeds 0 --k 1 --tag gpu --work "$OUT/peers" \
                --out "$OUT/peers_gpu.json" $(sz "--iterations 4 --chunk-iters 2 $small" "--iterations 40 --chunk-iters 10")
        done
        selected peers && python experiments/peers/run_peers.py aggregate --out "$OUT/peers_gpu.json" | tail -1
    fi
fi
log done
