#!/usr/bin/env bash
# The throughput benchmarks in one call: LLaVA-1.5-7B generation and probabilistic inference, CLIP ViT-L/14-336
# zero-shot, random weights built from the real configs (under 8 minutes on an H100).
#
#   benchmarks/gpu.sh                 # on a GPU machine: the real architectures (--size full)
#   benchmarks/gpu.sh --size tiny     # anywhere: the same script on the tiny models, on the CPU (the test suite)
#
# A machine without open_clip (the lent GPU image has torch and transformers only) takes it from .gpu-carry/,
# which `make gpu-carry` fills here (pip install --no-deps --target: open_clip_torch, ftfy, wcwidth; ~6 MB) and
# which travels with the working tree. Tables go to $OUT/gpu-benchmarks.md (default ./bench-out), one JSON per
# benchmark beside it; paste the tables into benchmarks/RESULTS.md with the date.
set -uo pipefail
cd "$(dirname "$0")/.."
size=full
if [[ "${1:-}" == "--size" ]]; then size=${2:?--size needs tiny or full}; fi
out=${OUT:-bench-out}
work=${BENCH_WORK:-/tmp/vlmrepro-bench-$size}
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:$PWD/.gpu-carry${PYTHONPATH:+:$PYTHONPATH}"
if [[ $size == full ]]; then  # item counts that fit the limits on one H100 (JPEG writing included)
    device=auto limits=(240 150 150)
    generation=() loglik=() clip=(--items 4096)
else  # the CPU: small counts, ratios only
    device=cpu limits=(300 300 300)
    generation=(--items 8) loglik=(--items 3 --classes 60) clip=(--items 8 --batch-size 4)
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$py" - <<'EOF'
import importlib
for name in ("torch", "transformers", "open_clip"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as err:  # a missing package is reported, and its benchmark fails on its own
        print(name, "not importable:", type(err).__name__, err)
EOF
    timeout "${limits[0]}" "$py" benchmarks/generation.py --size "$size" --device "$device" "${generation[@]}" \
        --work "$work" --json "$out/generation.json" || echo "generation benchmark failed ($?)"
    timeout "${limits[1]}" "$py" benchmarks/loglik.py --size "$size" --device "$device" "${loglik[@]}" \
        --work "$work" --json "$out/loglik.json" || echo "loglik benchmark failed ($?)"
    timeout "${limits[2]}" "$py" benchmarks/clip.py --size "$size" --device "$device" "${clip[@]}" \
        --work "$work" --json "$out/clip.json" || echo "clip benchmark failed ($?)"
} 2>&1 | tee "$out/gpu-benchmarks.md"
