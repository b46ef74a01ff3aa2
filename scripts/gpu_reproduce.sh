#!/usr/bin/env bash
# DANCE on Fashion-MNIST IPC 10 at the paper preset (clean, then symmetric 0.4 with the paper baseline and the
# controls) on one H100/H200, resumable across device slots (experiments/gpu_reproduce.py says what it runs).
#
# Prepare on the CPU machine (git-ignored paths that travel with `carry`):
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .fmnist/
# First slot (carry .fmnist):          BUDGET_S=480 bash scripts/gpu_reproduce.sh
# Later slots: copy the returned $OUT/state.tgz.part-* into .repro_state/ here, carry .fmnist and .repro_state,
# and run the same command; it unpacks the state and continues where the last slot stopped.
#
# BUDGET_S: seconds of work before the run is stopped with SIGTERM (the distillation checkpoints; a stage that
# is cut mid-way is recomputed next time). TINY=1: digits at tiny shapes (the CPU test). Logs, the summary and
# the packed state (parts of at most 15 MiB, so they come back through $OUT) go to $OUT.
set -u
OUT=${OUT:-/tmp/gpu_reproduce}
STATE=${STATE:-/tmp/gpu_reproduce_state}
RESTORE=${RESTORE:-.repro_state}
BUDGET_S=${BUDGET_S:-480}
mkdir -p "$OUT" "$STATE"
export JAXDISTILL_DATA_DIR=${JAXDISTILL_DATA_DIR:-$PWD/.fmnist}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

if compgen -G "$RESTORE/state.tgz.part-*" > /dev/null; then
    cat "$RESTORE"/state.tgz.part-* | tar xzf - -C "$STATE" && echo "restored state from $RESTORE" | tee -a "$OUT/repro.log"
fi
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/repro.log"
fi
extra=()
[ "${TINY:-0}" = "1" ] && extra+=(--tiny)
t0=$SECONDS
timeout -s TERM "$BUDGET_S" python experiments/gpu_reproduce.py --state "$STATE" "${extra[@]}" 2>&1 | tee -a "$OUT/repro.log"
rc=${PIPESTATUS[0]}
echo "gpu_reproduce: exit $rc after $((SECONDS - t0)) s ($([ "$rc" = 0 ] && echo finished || echo 'stopped; run again to continue'))" | tee -a "$OUT/repro.log"
rm -f "$OUT"/state.tgz.part-*
tar czf - -C "$STATE" . | split -b 15m - "$OUT/state.tgz.part-"
[ -f "$STATE/summary.json" ] && cp "$STATE/summary.json" "$OUT/summary.json"
exit 0
