#!/usr/bin/env bash
# GPU check for the fast rollout engine (issue #8). Run from the repository root on a CUDA machine:
#
#     OUT=/some/dir bash scripts/gpu_check.sh        # OUT defaults to ./gpu_out
#
# Needs no network: it uses the python that already has torch (CUDA build) + transformers
# (PYTHON=... to choose; else .venv/bin/python if it imports torch with CUDA, else python3) and runs the
# workbench from this checkout (PYTHONPATH), so nothing is installed. Writes:
#   $OUT/bench_gpu.jsonl    one JSON object per line: machine, matmul peak, exactness rows, rollout rows
#                           (fast engine = CUDA graph, its eager path, generic loop vs model.generate) for
#                           the zoo teacher/student (bf16) and a random-weight Qwen2-0.5B-shaped model
#                           (bf16), and training-step rows (generate / teacher / update time)
#   $OUT/pytest_cuda.txt    tests/test_cuda.py (the CUDA-graph engine: exactness, sampling, training steps)
#   $OUT/pytest_gpu.txt     tests/test_ckernels.py + tests/test_fast_rollout.py on this machine's CPU
#   $OUT/gpu_check.log      everything printed
# Tables for docs/benchmarks.md: python -m workbench.bench report $OUT/bench_gpu.jsonl
# Exit status: 0 when every step ran (whatever the numbers), 3 when torch/transformers/CUDA are missing.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
JSONL="$OUT/bench_gpu.jsonl"
: > "$JSONL"
exec > >(tee -a "$LOG") 2>&1

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for p in .venv/bin/python python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      echo "$p"; return
    fi
  done
  echo python3
}
PY=$(pick_python)
echo "== python: $PY ($(command -v "$PY"))"
"$PY" - <<'EOF'
import importlib, sys
need = ["torch", "transformers", "safetensors", "tokenizers"]
optional = ["peft", "pandas", "numpy", "pytest", "widgets"]
missing = []
for name in need + optional:
    try:
        m = importlib.import_module(name)
        print(f"  ok       {name} {getattr(m, '__version__', '')}")
    except Exception as e:
        print(f"  MISSING  {name}: {e!r}")
        if name in need:
            missing.append(name)
import torch
print("  cuda available:", torch.cuda.is_available(), "| torch.version.cuda:", torch.version.cuda)
if torch.cuda.is_available():
    print("  gpu:", torch.cuda.get_device_name(0))
if missing or not torch.cuda.is_available():
    print("cannot run the GPU check: missing", missing or ["a CUDA device"])
    sys.exit(3)
EOF
rc=$?
if [ $rc -ne 0 ]; then exit 3; fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
T=${STEP_TIMEOUT:-900}

echo "== 1/6 tests/test_cuda.py (the CUDA-graph engine that rollout.sample uses on CUDA: exactness, sampling, training steps)"
if "$PY" -c 'import pytest' 2>/dev/null; then
  timeout "$T" "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$OUT/pytest_cuda.txt" 2>&1
  echo "   pytest exit $? (details in pytest_cuda.txt)"; tail -n 3 "$OUT/pytest_cuda.txt"
else
  echo "   pytest not installed: skipped" | tee "$OUT/pytest_cuda.txt"
fi

echo "== 2/6 greedy exactness on the GPU (zoo models in bf16 and fp32; 0.5B-shaped model in bf16)"
timeout "$T" "$PY" - >> "$JSONL" <<'EOF'
import json, sys, torch
from workbench import bench
dev = torch.device("cuda")
print(json.dumps(bench.machine_info(dev)), flush=True)
from workbench import zoo
from workbench.models import load_checkpoint
for name in ("addition-teacher", "addition-student"):
    for dtype in ("bfloat16", "float32"):                               # bf16 is what a GPU run uses
        model, tok = load_checkpoint(zoo.path(name), device="cuda", dtype=dtype, trainable=False)
        for row in bench.exactness_rows(model, tok, "addition", name, dev, batch_size=128):
            print(json.dumps(row), flush=True)
model, tok, task = bench.load_model("qwen2-0.5b-shape", dev)
for row in bench.exactness_rows(model, tok, task, "qwen2-0.5b-shape", dev, batch_size=32, max_new_tokens=32):
    print(json.dumps(row), flush=True)
EOF
echo "   exit $?"

echo "== 3/6 bench rollout: zoo teacher (batch 1, 32, 256) and student (256), bf16"
timeout "$T" "$PY" -m workbench bench rollout --device cuda --repeats 3 --json >> "$JSONL"
echo "   exit $?"

echo "== 4/6 bench step on the GPU (zoo pair; rollout engine auto = CUDA graph, vs the generic loop)"
timeout "$T" "$PY" -m workbench bench step --device cuda --repeats 3 --json >> "$JSONL"
echo "   exit $?"

echo "== 5/6 bench rollout: random-weight Qwen2-0.5B shape, bf16 (batch 256, 32, 1; 64 new tokens)"
for B in 256 32 1; do
  timeout "$T" "$PY" -m workbench bench rollout --device cuda --model qwen2-0.5b-shape --batch-size "$B" \
      --max-new-tokens 64 --repeats 3 --json >> "$JSONL"
  echo "   batch $B exit $?"
done

echo "== 5b/6 the same shape as a LoRA student samples it (rank-16 adapters on every projection, float32 adapters)"
for B in 256 32; do
  timeout "$T" "$PY" -m workbench bench rollout --device cuda --model qwen2-0.5b-shape --lora 16 --batch-size "$B" \
      --max-new-tokens 64 --repeats 3 --json >> "$JSONL"
  echo "   batch $B exit $?"
done

echo "== 6/6 tests/test_ckernels.py and tests/test_fast_rollout.py on this machine's CPU"
if "$PY" -c 'import pytest' 2>/dev/null; then
  timeout "$T" "$PY" -m pytest -q -p no:cacheprovider tests/test_ckernels.py tests/test_fast_rollout.py \
      > "$OUT/pytest_gpu.txt" 2>&1
  echo "   pytest exit $? (details in pytest_gpu.txt)"; tail -n 3 "$OUT/pytest_gpu.txt"
fi

echo "== summary (rollout rows: ours / generate tokens/s, ratio)"
"$PY" - "$JSONL" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("bench") == "rollout":
        print(f"  {r['device']:>6} th={r['threads']:<2} {r['model']:>18} B={r['batch_size']:<4} ours {r['ours_tokens_per_s']:>10.0f}  generate "
              f"{r['generate_tokens_per_s']:>10.0f}  ratio {r['ratio_vs_generate']:.2f} "
              f"[{r['ratio_vs_generate_min']:.2f}-{r['ratio_vs_generate_max']:.2f}]"
              + (f"  eager ratio {r['ours_eager_ratio_vs_generate']:.2f}"
                 if 'ours_eager_ratio_vs_generate' in r else ""))
    elif r.get("bench") == "exactness":
        print(f"  exactness {r['model']:>18} {r['dtype']:>8} {r['variant']:>26}: rows equal "
              f"{r['greedy_rows_equal_generate']:.3f}, tokens equal {r['greedy_tokens_equal_generate']:.4f}")
    elif r.get("bench") == "step":
        print(f"  step {r['method']:>5} engine={r['rollout_engine']:>4}: {r['step_s']:.3f}s, generate share "
              f"{r['generate_share']:.2f}")
EOF
echo "== done: $JSONL"
exit 0
