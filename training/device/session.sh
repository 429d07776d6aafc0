#!/usr/bin/env bash
# One training session on a lent GPU machine (the device tool's `run`); training/README.md says how
# to prepare .device/ and what comes back. Usage there: HOURS=0.125 bash training/device/session.sh [--set k=v ...]
# It writes under $OUT: best.pt, last.pt, lineguard-run.json, args.yaml, results.csv, train.log, machine.txt.
set -uo pipefail
HOURS=${HOURS:-0.125}
LIMIT=${LIMIT:-560}          # seconds for import + training; collect runs even when this kills the session
# A machine kept warm between calls keeps /tmp: each session starts from a fresh work folder.
rm -rf /tmp/work
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .device/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, cv2, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cv2', cv2.__version__, 'numpy', numpy.__version__)"
  python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
  python3 -c "import tensorrt as t; print('tensorrt', t.__version__)" 2>&1 | tail -1
  echo "libnvinfer: $(ldconfig -p | grep -c nvinfer)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
mkdir -p /tmp/deeppcb && tar xJf .device/deeppcb.tar.xz -C /tmp/deeppcb || exit 1
timeout "$LIMIT" python3 training/device/train.py train --deeppcb /tmp/deeppcb --work /tmp/work --hours "$HOURS" "$@" \
  2>&1 | tee "$OUT/train.log"
python3 training/device/train.py collect --work /tmp/work --out "$OUT"
