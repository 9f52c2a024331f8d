#!/usr/bin/env bash
# The prepared GPU check (issue 20): one call of a GPU machine, within a budget of 560 s for all its
# steps (one device command may run 600 s), results under $OUT.
#
#   python benchmarks/pack_gpu_data.py          # here, once: writes gpu_pack/ (git-ignored, ~30 MB)
#   bash benchmarks/gpu_check.sh                # there, carrying gpu_pack (see benchmarks/README.md)
#   GPU_CHECK_TINY=1 OUT=/tmp/gc bash benchmarks/gpu_check.sh   # CPU rehearsal with tiny settings
#
# In order, each step under its own time limit, every step run even if an earlier one failed:
#   (a) the CUDA tests of the fast path (graphs vs. eager, bf16/fp16, patches, fallbacks, the
#       pre-capture checks), plus the CPU tests of the same modules, on this machine's torch;
#   (b) the bench at 256² for dncnn, ridnet, mirnet in all four GPU modes, with the measured limits
#       (conv rates, copy bandwidth), then one whole adapt-and-export per model (20 updates, ONNX);
#   (c) with the time left, the packaged DnCNN gray and colour weights trained on the GPU (data on
#       the device, bf16, σ ∈ [0, 50], L1, Adam 1e-4 → 1e-6, flips/rotations), half the time each.
# What comes back ($OUT, four files): gpu_check.log, results.tar (rfr-deploy env, tests, bench tables,
# training summaries; rewritten after every step, so a cut-short run still returns what was done),
# dncnn_gray_blind.safetensors, dncnn_color_blind.safetensors (rewritten every minute of training).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TINY=${GPU_CHECK_TINY:-0}
OUT=${OUT:-$ROOT/out/gpu_check}
BUDGET=${GPU_CHECK_SECONDS:-560}   # seconds for everything: one device command may run 600 s at most
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
START=$(date +%s)
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: >"$LOG"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export RFR_SHARED=$ROOT/gpu_pack/no-shared   # no ../shared there: tests that need it skip
PY=${PYTHON:-python3}

left() { echo $((BUDGET - ($(date +%s) - START))); }
say() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$LOG"; }
pack_results() { tar -cf "$OUT/results.tar.part" -C "$STAGE" . && mv "$OUT/results.tar.part" "$OUT/results.tar"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log its output, keep going
    local name=$1 limit=$2
    shift 2
    if [ "$limit" -gt "$(($(left) - 5))" ]; then limit=$(($(left) - 5)); fi
    if [ "$limit" -lt 10 ]; then
        say "$name: skipped, $(left) s left"
        return
    fi
    say "$name: start (limit $limit s)"
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "$name: rc=$rc$([ $rc -eq 124 ] && echo ' (time limit)')"
    pack_results
}

if [ "$TINY" = 1 ]; then
    DEVICE=cpu
    BENCH=(--device cpu --size 32 --steps 1 --repeats 1 --warmup 0 --budget 60 --threads 1)
    JOB=(--device cpu --size 32 --steps 1 --repeats 1 --warmup 0 --job-steps 1 --budget 600 --threads 1 --no-limits)
    TRAIN=(--device cpu --batch 4 --patch 16 --save-every 5 --test-limit 1 --warmup-steps 2)
    TRAIN_SECONDS_MAX=8
else
    DEVICE=cuda
    BENCH=(--device cuda --size 256 --steps 50 --repeats 7 --warmup 5 --budget 120)
    JOB=(--device cuda --size 256 --steps 1 --repeats 1 --warmup 1 --job-steps 20 --budget 600 --no-limits)
    TRAIN=(--device cuda --batch 128 --patch 50 --save-every 60)
    TRAIN_SECONDS_MAX=300
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >>"$LOG" 2>&1; then
        say "error: no CUDA device visible to PyTorch"
        exit 3
    fi
fi
[ -f gpu_pack/train_gray.npz ] || say "warning: gpu_pack/ missing (run benchmarks/pack_gpu_data.py and carry it): no training"
say "device $DEVICE, tiny=$TINY, budget $BUDGET s, output $OUT"
{ nvidia-smi 2>/dev/null || true; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } >>"$LOG" 2>&1

# What rfr-deploy sees there (versions, the device, the default update it runs, ONNX Runtime's providers)
timeout 60 "$PY" -c "from rfr_deploy.cli import main; main()" env --json >"$STAGE/env.json" 2>>"$LOG"
say "env: rc=$?"

# (a) the fast path's tests: CUDA ones run where a GPU is, the CPU ones everywhere
step tests 150 "$PY" -m pytest tests/test_cuda_graphs.py tests/test_fastpath.py tests/test_capture_checks.py tests/test_cpu_runners.py \
    -q -rs -p no:cacheprovider --junitxml="$STAGE/tests.xml"

# (b) the bench, one model per call (each writes its own tables; a slow one cannot cost the others),
# then one whole adapt-and-export per model in calls of their own (the ONNX export and its ONNX Runtime
# check run on the host and can be slow for MIRNet: they must not take the timings down with them)
for model in dncnn ridnet mirnet; do
    limit=$([ "$model" = mirnet ] && echo 150 || echo 90)
    step "bench $model" "$limit" "$PY" benchmarks/speed.py --models "$model" "${BENCH[@]}" --no-job \
        --out-dir "$STAGE" --name "speed_${DEVICE}_${model}"
done
for model in dncnn ridnet mirnet; do
    limit=$([ "$model" = mirnet ] && echo 150 || echo 80)
    step "adapt-and-export $model" "$limit" "$PY" benchmarks/speed.py --models "$model" "${JOB[@]}" \
        --out-dir "$STAGE" --name "job_${DEVICE}_${model}"
done

# (c) training with the time left, half each (the JSON summary includes test PSNR vs the packaged weights)
if [ -f gpu_pack/train_gray.npz ]; then
    for kind in gray color; do
        share=$((($(left) - 60) / $([ "$kind" = gray ] && echo 2 || echo 1)))
        [ "$share" -gt "$TRAIN_SECONDS_MAX" ] && share=$TRAIN_SECONDS_MAX
        if [ "$share" -lt 5 ]; then
            say "train $kind: skipped, $(left) s left"
            continue
        fi
        step "train $kind" $((share + 50)) "$PY" benchmarks/train_gpu.py "$kind" --seconds "$share" \
            --out "$OUT" --json "$STAGE/train_${kind}.json" "${TRAIN[@]}"
    done
fi

pack_results
rm -rf "$STAGE"
say "done: $(ls "$OUT" | tr '\n' ' ')"
grep -h "^| " "$OUT/gpu_check.log" | tail -n 40 || true
