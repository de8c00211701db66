#!/usr/bin/env bash
# Device check (issue 4): on a machine with an NVIDIA GPU, run the demo on the CPU and on every
# GPU provider the available ONNX Runtime has, compare the aggregated logits, and print wall
# time and passes per second per provider. The noise is drawn on the host from the seed, so every
# provider sees the same noisy inputs and the maps are directly comparable. With CUDA it also
# runs the ensemble with the noise drawn on the GPU (`ensemble.noise_on: device`): a different
# random stream, so that map is compared with the host-noise one only statistically (printed,
# not judged; the distribution is tested on the CPU by tests/python/test_device_noise.py).
#
# Usage: tests/gpu/device_check.sh [BINARY]
#   env: PASSES=10 (comparison runs), TIMING_PASSES (adds 3 x N-pass timing runs on CUDA, host
#   and device noise), CASE=demo/..., OUT=out/gpu-check
# Needs a Python with an onnxruntime GPU build (found automatically, or PYTHON=...), numpy, and
# the CUDA/cuDNN libraries of the NVIDIA wheels in that Python's site-packages (or
# STOCHSEG_GPU_LIB_PATH). Tolerances: 1e-3 (CUDA, fp32, TF32 off), 5e-2 (TensorRT fp16).
set -u
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/stochseg}
PASSES=${PASSES:-10}
CASE=${CASE:-demo/BraTS-DEMO-00000-000}
OUT=${OUT:-out/gpu-check}
PIPELINE=pipelines/brats-goat-stochastic.yaml
rm -rf "$OUT"; mkdir -p "$OUT"

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
nproc

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in /opt/torch/.venv/bin/python .venv-gpu/bin/python .venv/bin/python python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import numpy" 2>/dev/null; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "no Python with numpy found"; exit 2; }
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  # the onnxruntime package of that Python
  CAPI=$("$PY" -c "import onnxruntime as o, os; print(os.path.join(os.path.dirname(o.__file__), 'capi'))" 2>/dev/null) \
    || { echo "no onnxruntime: set ORT_DYLIB_PATH"; exit 2; }
  ORT_DYLIB_PATH=$(ls "$CAPI"/libonnxruntime.so.* | sort -V | tail -1)
fi
export ORT_DYLIB_PATH
CAPI=$(dirname "$ORT_DYLIB_PATH")
PROVIDERS=CPU
[ -f "$CAPI/libonnxruntime_providers_cuda.so" ] && PROVIDERS="$PROVIDERS,CUDA"
[ -f "$CAPI/libonnxruntime_providers_tensorrt.so" ] && PROVIDERS="$PROVIDERS,TensorRT"
echo "== onnxruntime $ORT_DYLIB_PATH; provider libraries: $PROVIDERS"
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -z "${STOCHSEG_GPU_LIB_PATH:-}" ]; then
  STOCHSEG_GPU_LIB_PATH=$(ls -d "$SITE"/nvidia/*/lib "$SITE"/tensorrt_libs 2>/dev/null | sort -u | paste -sd:)
  export STOCHSEG_GPU_LIB_PATH
fi
echo "== GPU library folders: ${STOCHSEG_GPU_LIB_PATH:-none}"
for so in "$CAPI"/libonnxruntime_providers_cuda.so; do
  [ -f "$so" ] && LD_LIBRARY_PATH=$STOCHSEG_GPU_LIB_PATH ldd "$so" | grep -E "not found" | head -12
done

# the same pipeline with the noise drawn on the device
DEVICE_NOISE=$OUT/device-noise.yaml
sed -e "s|\.\./onnx/|$PWD/onnx/|" -e 's/^  noise_region: volume$/  noise_region: volume\n  noise_on: device/' \
  "$PIPELINE" >"$DEVICE_NOISE"
grep -q "noise_on: device" "$DEVICE_NOISE" || { echo "could not write $DEVICE_NOISE"; exit 2; }

run() { # name device [extra args]
  local name=$1 device=$2; shift 2
  local t0=$(date +%s%N)
  "$BIN" -q run --pipeline "${RUN_PIPELINE:-$PIPELINE}" --case "$CASE" --out "$OUT/$name" --passes "$PASSES" --device "$device" "$@" >/dev/null 2>"$OUT/$name.err"
  local rc=$?
  local t1=$(date +%s%N)
  if [ $rc -ne 0 ]; then echo "$name: FAILED (exit $rc): $(tail -1 "$OUT/$name.err")"; return $rc; fi
  "$PY" - "$OUT/$name/report.json" "$t0" "$t1" "$name" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1])); wall = (int(sys.argv[3]) - int(sys.argv[2])) / 1e9; t = r["timings_s"]
passes = r["ensemble"]["total_passes"]
provs = sorted({m["execution_provider"] for m in r["models"]})
print(f"{sys.argv[4]:<14} wall {wall:6.1f} s  ensemble {t['ensemble']:6.1f} s  in ORT {t.get('ensemble_onnxruntime', 0):6.1f} s  "
      f"window {t.get('ensemble_window', 0):5.1f} s  noise {t.get('ensemble_noise', 0):5.1f} s  load_models {t['load_models']:5.1f} s  "
      f"{passes / t['ensemble']:6.2f} passes/s  blobs {len(r['blobs'])}  noise on {r['ensemble'].get('noise_on', 'host')}  providers {','.join(provs)}")
PYEOF
}

echo "== runs ($PASSES passes per model, 3 models, $CASE)"
run cpu cpu || exit 1
status=0
if [[ $PROVIDERS == *CUDA* ]]; then
  if run cuda cuda:0; then
    echo -n "cuda vs cpu: "; "$PY" tests/gpu/compare_maps.py "$OUT/cpu" "$OUT/cuda" 1e-3 || status=1
    run cuda-b16 cuda:0 --batch-size 16 && { echo -n "cuda batch 16 vs cpu: "; "$PY" tests/gpu/compare_maps.py "$OUT/cpu" "$OUT/cuda-b16" 1e-3 || status=1; }
    if RUN_PIPELINE=$DEVICE_NOISE run cuda-devnoise cuda:0 --batch-size 16; then
      echo -n "cuda device noise vs host noise (different streams; statistical only): "
      "$PY" tests/gpu/compare_maps.py "$OUT/cuda-b16" "$OUT/cuda-devnoise" 1e9
    else
      status=1
    fi
    if [ -n "${TIMING_PASSES:-}" ]; then
      PASSES=$TIMING_PASSES run cuda-timing cuda:0 --batch-size 16
      PASSES=$TIMING_PASSES RUN_PIPELINE=$DEVICE_NOISE run cuda-devnoise-t cuda:0 --batch-size 16 || status=1
    fi
  else
    status=1
  fi
else
  echo "cuda: no CUDA provider library beside $ORT_DYLIB_PATH"
fi
if [[ $PROVIDERS == *TensorRT* ]]; then
  if run tensorrt tensorrt:0; then
    echo -n "tensorrt vs cpu: "; "$PY" tests/gpu/compare_maps.py "$OUT/cpu" "$OUT/tensorrt" 1e-3 || status=1
  else
    echo "tensorrt: unavailable here (see the line above); not counted as a failure"
  fi
fi
exit $status
