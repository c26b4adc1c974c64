#!/usr/bin/env bash
# The full-size benchmarks in one call on a lent GPU (under 8 minutes on an H100): LLaVA-1.5-7B generation and
# probabilistic inference, CLIP ViT-L/14-336 zero-shot, random weights built from the real configs.
# Tables go to $OUT/gpu-benchmarks.md (default ./bench-out); paste them into benchmarks/RESULTS.md with the date.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-out}
work=${BENCH_WORK:-/tmp/vlmrepro-bench}
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$py" -c "import torch, transformers, open_clip; print('torch', torch.__version__, 'transformers', transformers.__version__, 'open_clip', open_clip.__version__)"
    timeout 240 "$py" benchmarks/generation.py --size full --work "$work" || echo "generation benchmark failed ($?)"
    timeout 120 "$py" benchmarks/loglik.py --size full --work "$work" || echo "loglik benchmark failed ($?)"
    timeout 120 "$py" benchmarks/clip.py --size full --work "$work" || echo "clip benchmark failed ($?)"
} 2>&1 | tee "$out/gpu-benchmarks.md"
