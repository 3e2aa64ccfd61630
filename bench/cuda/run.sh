#!/usr/bin/env bash
# magc on an NVIDIA GPU in one command (issue 12): real-GPU kernel checks,
# compute-sanitizer over train steps, and phase1/scm3b speed beside PyTorch.
#
#   bench/cuda/run.sh OUTDIR [GROUP...]
#
# Run from anywhere; it works from the repository root with the binaries prebuilt
# into bin/ (magc, golden.test, cuda.test; see bench/README.md).
# GROUPs: gpu checks speed torch sanitize train hf half (default: all, in that order).
# Each step runs under a timeout, logs to OUTDIR/<step>.log and appends a line to
# OUTDIR/steps.tsv; a failing step never stops the others. Running some groups
# now and others later into the same OUTDIR adds up (the latest run of a step
# counts). At the end bench/cuda/summarize.py writes OUTDIR/summary.{json,md}.
#
# Environment: STEP_TIMEOUT (s, default 300), MAGC_BIN (default bin), PYTHON
# (default python3), TORCH_STEPS (default 20), RUNTIME_TEST_RUN (default CUDA|Cuda).

set -u

if [ $# -lt 1 ]; then
    echo "usage: bench/cuda/run.sh OUTDIR [gpu|checks|speed|torch|sanitize|train ...]" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
shift
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2

BIN=${MAGC_BIN:-$ROOT/bin}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
PY=${PYTHON:-python3}
TIMEOUT=${STEP_TIMEOUT:-300}
TORCH_STEPS=${TORCH_STEPS:-20}
# SANITIZE picks the sanitized steps (default: tiny_full tiny_qlora phase1).
GROUPS_RUN=${*:-gpu checks speed torch sanitize train hf half}

# nvcc and compute-sanitizer often live outside PATH.
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
    [ -d "$d" ] && PATH=$PATH:$d
done
export PATH

STEPS=$OUT/steps.tsv
[ -f "$STEPS" ] || printf 'step\tstatus\trc\tseconds\tlog\tcommand\n' >"$STEPS"
npass=0
nfail=0

record() { # record NAME STATUS RC SECONDS COMMAND
    local cmd=${5//[$'\t\n']/ }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$1.log" "${cmd//  / }" >>"$STEPS"
    printf '%-28s %-8s rc=%-4s %6ss  %s\n' "$1" "$2" "$3" "$4" "$OUT/$1.log"
}

# step NAME DIR CMD...: run CMD in DIR under the timeout, output to OUTDIR/NAME.log.
step() {
    local name=$1 dir=$2
    shift 2
    local log=$OUT/$name.log t0 t1 rc status
    {
        echo "# $(date -u +%FT%TZ) in $dir"
        echo "# $*"
    } >"$log"
    t0=$(date +%s)
    (cd "$dir" && timeout -k 10 "$TIMEOUT" "$@") >>"$log" 2>&1
    rc=$?
    t1=$(date +%s)
    case $rc in
        0) status=pass npass=$((npass + 1)) ;;
        124 | 137) status=timeout nfail=$((nfail + 1)) ;;
        *) status=fail nfail=$((nfail + 1)) ;;
    esac
    echo "# exit $rc after $((t1 - t0)) s" >>"$log"
    record "$name" "$status" "$rc" "$((t1 - t0))" "$*"
}

skip() { # skip NAME REASON
    echo "# skipped: $2" >"$OUT/$1.log"
    record "$1" skip - 0 "$2"
}

# need FILE STEP: true when the binary is there, else the step is marked skipped.
need() {
    [ -x "$1" ] && return 0
    skip "$2" "missing $1"
    return 1
}

wants() { case " $GROUPS_RUN " in *" $1 "*) return 0 ;; esac; return 1; }

echo "magc CUDA run: $ROOT -> $OUT (groups: $GROUPS_RUN; timeout ${TIMEOUT}s a step)"

if wants gpu; then
    # fails when nvidia-smi or nvcc does (magc's CUDA device compiles with nvcc)
    # shellcheck disable=SC2016 # the inner bash expands $rc
    step gpu "$ROOT" bash -c 'rc=0
        nvidia-smi -L || rc=1
        nvidia-smi
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
        nvcc --version || rc=1
        command -v compute-sanitizer || echo "compute-sanitizer: not found"
        exit $rc'
fi

if wants checks; then
    # Go test binaries expect the package directory as their working directory.
    if need "$BIN/cuda.test" cuda_test; then
        step cuda_test "$ROOT/device/cuda" env MAGC_REQUIRE_CUDA=1 "$BIN/cuda.test" -test.v -test.run "TestGPU$|TestNoDriver|TestDefaultLibrary"
    fi
    if need "$BIN/golden.test" golden_cuda; then
        step golden_cuda "$ROOT/golden" env MAGC_DEVICES=cuda "$BIN/golden.test" -test.v \
            -test.run 'TestFusedPatterns|TestTinyTrainStep|TestPhase1TrainStep'
    fi
fi

if wants speed && need "$BIN/magc" magc_phase1; then
    step magc_phase1 "$ROOT" "$BIN/magc" bench --model phase1 --batch 8 --seq 512 --steps 20 \
        --device cuda --profile --json "$OUT/magc_phase1.json"
    step magc_scm3b "$ROOT" "$BIN/magc" bench --model scm3b --batch max --remat auto --steps 5 \
        --device cuda --profile --json "$OUT/magc_scm3b.json"
fi

if wants torch; then
    step torch_check "$ROOT" "$PY" bench/phase1_torch.py --check
    for mode in eager compile; do
        step "torch_$mode" "$ROOT" "$PY" bench/phase1_torch.py --mode "$mode" --batch 8 --seq 512 \
            --steps "$TORCH_STEPS" --warmup 3 --json "$OUT/torch_$mode.json"
    done
fi

if wants sanitize; then
    if command -v compute-sanitizer >/dev/null 2>&1; then
        if need "$BIN/magc" san_memcheck_tiny_full; then
            for tool in memcheck racecheck synccheck; do
                extra=()
                [ "$tool" = racecheck ] && extra=(--racecheck-report all)
                san=(compute-sanitizer --tool "$tool" ${extra[@]+"${extra[@]}"} --error-exitcode 1)
                for target in ${SANITIZE:-tiny_full tiny_qlora phase1}; do
                    case $target in
                        tiny_full) args=(--model tiny --mode full) ;;
                        tiny_qlora) args=(--model tiny --mode qlora) ;;
                        phase1) args=(--model phase1 --batch 1 --seq 64) ;;
                        *) continue ;;
                    esac
                    step "san_${tool}_$target" "$ROOT" "${san[@]}" "$BIN/magc" bench "${args[@]}" \
                        --steps 1 --device cuda
                done
            done
        fi
    else
        skip san_memcheck_tiny_full "compute-sanitizer not found"
    fi
fi

if wants train && need "$BIN/magc" train_tiny; then
    # The tiny model on selective copying, to the accuracy the sim reaches.
    step train_tiny "$ROOT" "$BIN/magc" run --train --device cuda --quiet --out "$OUT/train_tiny"
fi

if wants hf && need "$BIN/magc" hf_export; then
    # Issue 15 on the GPU machine: transformers loads what magc export writes (a
    # QLoRA fine-tune of the imported fixture, hf/testdata/hf-mamba-tiny-tuned) and
    # its logits are kept for cmd/magc's TestExportLoadsInTransformers; then
    # magc's compiled decoding on CUDA, greedy on the same model and scm3b's speed.
    hf=$OUT/hf
    step hf_export "$ROOT" bash -c "set -e; rm -rf '$hf'
        '$BIN/magc' import hf/testdata/hf-mamba-tiny -o '$hf/imported'
        '$BIN/magc' export --model '$hf/imported/hf_mamba_tiny.graph' --base '$hf/imported/weights.safetensors' \\
            --checkpoint hf/testdata/hf-mamba-tiny-tuned/checkpoint.safetensors -o '$hf/exported'"
    step hf_transformers "$ROOT" "$PY" bench/hf_check.py "$hf/exported" "$OUT/transformers.safetensors"
    step hf_generate_cuda "$ROOT" "$BIN/magc" generate --model "$hf/imported/hf_mamba_tiny.graph" \
        --checkpoint hf/testdata/hf-mamba-tiny-tuned/checkpoint.safetensors --base "$hf/imported/weights.safetensors" \
        --prompt "def forward(self, hidden_states):" --max-tokens 16 --device cuda
    for mode in full qlora; do
        step "decode_scm3b_$mode" "$ROOT" "$BIN/magc" generate --model scm3b --mode "$mode" --tokens "1 2 3 4 5 6 7 8" \
            --max-tokens 256 --ignore-eos --device cuda
    done
fi

if wants half && need "$BIN/magc" magc_phase1_bf16; then
    # Issue 16: the phase1 step with activations stored in bf16 and f16 beside
    # f32 (same run, same GPU), every kernel checked in both half types on the
    # GPU, the sanitizer over a bf16 step, and tiny trained in bf16.
    for p in f32 bf16 f16; do
        step "magc_phase1_$p" "$ROOT" "$BIN/magc" bench --model phase1 --batch 8 --seq 512 --steps 20 \
            --precision "$p" --device cuda --profile --json "$OUT/magc_phase1_$p.json"
    done
    if need "$BIN/golden.test" golden_half_cuda; then
        step golden_half_cuda "$ROOT/golden" env MAGC_DEVICES=cuda "$BIN/golden.test" -test.v -test.run 'TestHalfPrecision'
    fi
    if command -v compute-sanitizer >/dev/null 2>&1; then
        for tool in memcheck racecheck synccheck; do
            extra=()
            [ "$tool" = racecheck ] && extra=(--racecheck-report all)
            step "san_${tool}_tiny_bf16" "$ROOT" compute-sanitizer --tool "$tool" ${extra[@]+"${extra[@]}"} --error-exitcode 1 \
                "$BIN/magc" bench --model tiny --precision bf16 --steps 1 --device cuda
        done
    fi
    step train_tiny_bf16 "$ROOT" "$BIN/magc" run --train --device cuda --precision bf16 --quiet --out "$OUT/train_tiny_bf16"
fi

echo "steps: $npass passed, $nfail failed or timed out"
"$PY" "$ROOT/bench/cuda/summarize.py" "$OUT" || echo "summarize.py failed" >&2
[ "$nfail" -eq 0 ]
