#!/usr/bin/env bash
# The suite's two commands.
#   bash run.sh        set up what is missing, train MobileNetV1 x0.25 on Fashion-MNIST with GMP to 75%
#                      sparsity, evaluate the saved model, export it (Paddle inference model, ONNX, compressed
#                      sparse file), evaluate what was exported and print a short report (about 6 min on 2 CPU cores)
#   bash run.sh test   run the test suite three times: Paddle 3.3.1 under PIR, under the legacy IR, and
#                      Paddle 2.6.2 with numpy<2 (what `pip install paddlepaddle-gpu` gives); PaddleSlim 2.6.0 in
#                      a third environment lets the interchange tests run against PaddleSlim itself
# Environment: VENV (default .venv), VENV26 (default .venv-paddle26), OUT (default output/fashion_mnist_gmp75),
#              PADDLESLIM_PYTHON (default .venv-paddleslim/bin/python).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
VENV26=${VENV26:-.venv-paddle26}
export VENV VENV26  # the tests that read files written under the other Paddle look for its venv here
OUT=${OUT:-output/fashion_mnist_gmp75}
FASHION_MNIST=/usr/share/datasets/fashion-mnist
# Paddle's bundled MKL picks a slow code path on AMD CPUs unless told otherwise; harmless elsewhere.
export MKL_DEBUG_CPU_TYPE=${MKL_DEBUG_CPU_TYPE:-5}

say() { printf '== %s\n' "$*"; }

make_venv() {  # make_venv DIR REQUIREMENTS...
    local dir=$1; shift
    if [ ! -x "$dir/bin/python" ]; then
        say "creating $dir"
        python3 -m venv "$dir"
    fi
    if ! "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$dir.pip.log" 2>&1; then
        cat "$dir.pip.log" >&2
        echo "error: could not install $* into $dir (log above)" >&2
        exit 1
    fi
}

need_fashion_mnist() {
    if [ -f "$FASHION_MNIST/train-images-idx3-ubyte.gz" ]; then
        return
    fi
    say "installing Debian's dataset-fashion-mnist package"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1; then
        echo "error: Fashion-MNIST is not in $FASHION_MNIST and apt-get could not install dataset-fashion-mnist;" \
             "install it, or copy the four idx .gz files there" >&2
        exit 1
    fi
}

train_and_evaluate() {
    make_venv "$VENV" -r requirements.txt
    need_fashion_mnist
    say "training MobileNetV1 x0.25 on Fashion-MNIST (the first 40,000 training images x 3 epochs), GMP to 75% sparsity -> $OUT"
    "$VENV/bin/python" train.py \
        --data fashion_mnist --model MobileNet --scale 0.25 \
        --train_subset 40000 --batch_size 128 --num_epochs 3 \
        --lr 0.1 --lr_strategy cosine_decay --l2_decay 4e-5 \
        --pruning_strategy gmp --ratio 0.75 --initial_ratio 0.15 \
        --stable_epochs 1 --pruning_epochs 1 --tunning_epochs 1 --pruning_steps 30 \
        --log_period 50 --model_path "$OUT" --log_dir "$OUT/vdl" --resume
    say "evaluating $OUT/latest on the 10,000 test images"
    "$VENV/bin/python" evaluate.py --pruned_model "$OUT" --json "$OUT/eval.json" --plots "$OUT/plots" >"$OUT/eval.txt"
    head -n 3 "$OUT/eval.txt"
    if [ -e "$OUT/export" ]; then
        say "$OUT/export exists: not exported again (exports never overwrite; remove it to export anew)"
    else
        say "exporting $OUT/latest to $OUT/export: Paddle inference model, ONNX, compressed sparse file"
        "$VENV/bin/python" export.py --pruned_model "$OUT" --output "$OUT/export"
    fi
    say "evaluating the exported Paddle inference model"
    "$VENV/bin/python" evaluate.py --pruned_model "$OUT/export" --json "$OUT/export_eval.json" >"$OUT/export_eval.txt"
    head -n 3 "$OUT/export_eval.txt"
    say "report"
    "$VENV/bin/python" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
state = json.load(open(f"{out}/latest/state.json"))
ev = json.load(open(f"{out}/eval.json"))
print(f"test top-1 {ev['top1']:.2%}, top-5 {ev['top5']:.2%} at {ev['pruned_sparsity']:.2%} sparsity of the pruned set "
      f"({ev['model_sparsity']:.2%} of all parameters)")
print("per epoch (top-1 / pruned-set sparsity): " + ", ".join(f"{h['top1']:.2%} / {h['pruned_sparsity']:.0%}" for h in state["history"]))
exported = json.load(open(f"{out}/export_eval.json"))
print(f"exported Paddle inference model: top-1 {exported['top1']:.2%} (checkpoint: {ev['top1']:.2%}); files in {out}/export")
print(f"per-layer table: {out}/eval.txt; plots: {out}/curves.png, {out}/plots/; VisualDL: visualdl --logdir {out}/vdl")
PY
}

run_tests() {
    make_venv "$VENV" -r requirements.txt
    # made before any test runs: the tests of files written by the other Paddle/NumPy use both environments
    make_venv "$VENV26" paddlepaddle==2.6.2 "numpy<2" pillow pytest pyyaml matplotlib paddle2onnx==1.3.1 onnxruntime "onnx<1.18" ml_dtypes
    need_fashion_mnist
    # PaddleSlim (its last release needs numpy<2 and Paddle's legacy IR) only for tests/test_paddleslim.py,
    # which skip with a reason if this environment could not be made
    if ! ( make_venv .venv-paddleslim paddlepaddle==2.6.2 paddleslim==2.6.0 "numpy<2" decorator six requests pillow ); then
        say "note: could not install PaddleSlim 2.6.0 into .venv-paddleslim; its interchange tests will be skipped"
    fi
    say "tests: Paddle 3.3.1, PIR"
    "$VENV/bin/python" -m pytest -q tests
    say "tests: Paddle 3.3.1, legacy IR (FLAGS_enable_pir_api=0)"
    FLAGS_enable_pir_api=0 "$VENV/bin/python" -m pytest -q tests
    say "tests: Paddle 2.6.2, numpy<2 (legacy IR)"
    "$VENV26/bin/python" -m pytest -q tests
}

case "${1:-train}" in
    train) train_and_evaluate ;;
    test) run_tests ;;
    *) echo "usage: bash run.sh [train|test]" >&2; exit 2 ;;
esac
