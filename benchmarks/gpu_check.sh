#!/usr/bin/env bash
# GPU check, about 6 minutes on one H100: installs the wheels carried in .whl/ (no network needed),
# trains gpt-small and bert-small for a few hundred steps with nlpssl's speed defaults (bf16, TF32,
# SDPA flash kernels, fused AdamW), then runs benchmarks/pretrain.py on CUDA against the fp32
# plain-HF baseline. Everything it reports lands in $OUT (default: ./gpu_check_out).
#
# Needs: python3 with a CUDA build of torch; .whl/ holding the wheels that a bare torch environment
# lacks (see the list printed into $OUT/env.txt; python3 -m pip install --no-index --no-deps).
# Run:   OUT=/tmp/out bash benchmarks/gpu_check.sh  [STEPS=300] [PEAK_BF16=989]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
STEPS=${STEPS:-300}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1

# 1. Install: one wheel per distribution name (the best match for this Python), then nlpssl itself.
if compgen -G ".whl/*.whl" >/dev/null; then
  names=$(ls .whl/*.whl | xargs -n1 basename | sed -E 's/-[0-9].*//' | sort -u)
  $PY -m pip install -q --upgrade --no-index --no-deps --find-links .whl $names  # --upgrade: replace older preinstalled versions
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e .
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY - <<'EOF'
import importlib.metadata as md, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
for n in ("transformers", "datasets", "tokenizers", "accelerate", "huggingface-hub", "safetensors", "evaluate",
          "dill", "multiprocess", "pyarrow", "pandas", "numpy", "fsspec", "xxhash", "matplotlib", "scikit-learn"):
    try:
        print(f"{n}=={md.version(n)}")
    except md.PackageNotFoundError:
        print(f"{n} MISSING")
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 2. gpt-small and bert-small, a few hundred steps each, through the CLI users run.
run_dir=$(mktemp -d)
for spec in "gpt-tiny gpt-small" "bert-tiny bert-small"; do
  set -- $spec
  start=$(date +%s)
  $PY -m nlpssl pretrain "$1" model.size=small training.max_steps="$STEPS" training.output_dir="$run_dir/$2" \
      data.cache_dir="$run_dir/cache" training.per_device_train_batch_size=64 training.eval_steps=100 \
      training.save_steps=100000 training.logging_steps=50 training.warmup_steps=30 training.disable_tqdm=true \
      > "$OUT/$2.log" 2>&1 || { tail -40 "$OUT/$2.log"; exit 1; }
  cp "$run_dir/$2/metrics.json" "$OUT/$2-metrics.json"
  echo "$2: $(( $(date +%s) - start )) s; $(cat "$OUT/$2-metrics.json" | tr -d '\n ' | cut -c1-400)"
done

# 3. The side-by-side benchmark on CUDA (tiny and small shapes); MFU against the measured bf16 peak
#    (and against PEAK_BF16 TFLOP/s if given, e.g. 989 for an H100 SXM's dense bf16).
peak=${PEAK_BF16:+--peak-bf16 $PEAK_BF16}
for size in tiny small; do
  $PY benchmarks/pretrain.py --device cuda --size "$size" --steps "$STEPS" --eval-every 100 --prep-repeats 1 \
      $peak --json "$OUT/bench-$size.json" 2>&1 | grep -v "^{'" | tee "$OUT/bench-$size.log" | tail -12
done
