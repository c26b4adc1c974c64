#!/usr/bin/env bash
# The throughput benchmarks in one call: LLaVA-1.5-7B generation and probabilistic inference, CLIP ViT-L/14-336
# zero-shot, random weights built from the real configs. On an H100 the limits below end it within 7 minutes
# (give the device call timeout_s=480).
#
#   benchmarks/gpu.sh                 # on a GPU machine: the real architectures (--size full)
#   benchmarks/gpu.sh --size tiny     # anywhere: the same script on the tiny models, on the CPU (the test suite)
#
# A machine without open_clip (the lent GPU image has torch and transformers only) takes it from .gpu-carry/,
# which `make gpu-carry` fills here with any Python's pip (--no-deps --target: open_clip_torch, ftfy, wcwidth;
# ~6 MB, seconds) and which travels with the working tree. Each benchmark prints its rows as they are timed and
# rewrites its JSON after each, so one its time limit stops keeps what it finished. Tables go to
# $OUT/gpu-benchmarks.md (default ./bench-out), one JSON per benchmark beside it; paste the tables into
# benchmarks/RESULTS.md with the date.
set -uo pipefail
cd "$(dirname "$0")/.."
size=full
if [[ "${1:-}" == "--size" ]]; then size=${2:?--size needs tiny or full}; fi
out=${OUT:-bench-out}
work=${BENCH_WORK:-/tmp/vlmrepro-bench-$size}
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:$PWD/.gpu-carry${PYTHONPATH:+:$PYTHONPATH}"
if [[ $size == full ]]; then  # item counts that fit the limits on one H100 (model building, JPEG writing included)
    device=auto limits=(210 90 120)
    generation=() loglik=() clip=(--items 4096)
else  # the CPU: small counts, ratios only; two generation batches, so that the static cache is reused
    device=cpu limits=(300 300 300)
    generation=(--items 8 --batch-size 4) loglik=(--items 3 --classes 60) clip=(--items 8 --batch-size 4)
fi
bench() {  # name, limit, script arguments...: the elapsed time and exit status of each benchmark
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$py" "$@" || echo "$name benchmark failed ($?; 124: stopped by its $limit s limit)"
    echo "$name: $((SECONDS - start)) s of $limit s"
}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$py" - <<'EOF'
import importlib
# open_clip and what it imports: a version printed here is the one the run used
for name in ("torch", "torchvision", "transformers", "huggingface_hub", "open_clip", "timm", "PIL", "ftfy", "regex"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "(no version attribute)"), module.__file__)
    except Exception as err:  # a missing package is reported, and its benchmark fails on its own
        print(name, "not importable:", type(err).__name__, err)
EOF
    bench generation "${limits[0]}" benchmarks/generation.py --size "$size" --device "$device" "${generation[@]}" \
        --work "$work" --json "$out/generation.json"
    bench loglik "${limits[1]}" benchmarks/loglik.py --size "$size" --device "$device" "${loglik[@]}" \
        --work "$work" --json "$out/loglik.json"
    bench clip "${limits[2]}" benchmarks/clip.py --size "$size" --device "$device" "${clip[@]}" \
        --work "$work" --json "$out/clip.json"
    echo "all: $SECONDS s"
} 2>&1 | tee "$out/gpu-benchmarks.md"
