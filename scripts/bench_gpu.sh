#!/usr/bin/env bash
# `make bench-gpu`: the GPU benchmarks, on a machine with an NVIDIA GPU, in under 8 minutes.
#
#   scripts/bench_gpu.sh            create $GPU_VENV (default bench-output/gpu-venv) with the
#                                   `gpu` extra (tensorflow[and-cuda], faiss-gpu), then print
#                                   encoder clips/s by batch size (stand-in and HeAR-sized ViT)
#                                   and faiss-gpu vs faiss-cpu search at 1M vectors.
#   scripts/bench_gpu.sh --dry-run  no GPU, no new virtualenv: the same steps at small sizes on
#                                   the CPU with the current python (what the tests run).
#
# Without --dry-run, a machine without a usable NVIDIA GPU stops here with exit status 2,
# before anything is installed.
set -euo pipefail

cd "$(dirname "$0")/.."
started=$SECONDS

if [[ "${1:-}" == "--dry-run" ]]; then
    python=${PYTHON:-python}
    device=cpu
    encoder_args=(--models "${DRY_RUN_MODELS:-standin}" --batch-sizes 1,4 --min-seconds 0.5)
    index_args=(--dry-run --n 20000 --queries 100)
else
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
        echo "bench-gpu: no NVIDIA GPU here (nvidia-smi missing or lists no GPU)." >&2
        echo "Run it on a machine with an NVIDIA GPU, or use scripts/bench_gpu.sh --dry-run." >&2
        exit 2
    fi
    nvidia-smi -L
    venv=${GPU_VENV:-bench-output/gpu-venv}
    base_python=${PYTHON:-$(command -v python3.11 || command -v python3)}
    if [[ ! -x "$venv/bin/python" ]]; then
        "$base_python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
    fi
    # The gpu extra only: faiss-cpu/tensorflow-cpu must not share the environment (same import
    # folders).
    "$venv/bin/python" -m pip install --quiet -e ".[gpu]"
    echo "bench-gpu: virtualenv ready after $((SECONDS - started)) s"
    python=$venv/bin/python
    device=gpu
    encoder_args=(--models standin,hear-sized --batch-sizes 1,8,32,128,256 --min-seconds 8)
    index_args=(--n 1000000 --queries 1000)
fi

"$python" bench/encoder.py --device "$device" "${encoder_args[@]}"
echo "bench-gpu: encoders done after $((SECONDS - started)) s"
"$python" bench/gpu.py "${index_args[@]}"
echo "bench-gpu: finished in $((SECONDS - started)) s"
