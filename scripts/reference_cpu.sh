#!/usr/bin/env bash
# One CPU run at the reference protocol (issue 12): `mmtune train --protocol reference` with the
# given flags, then its train.json, test_metrics.json, baselines.json, history.json and strip.png, with the exact command, wall
# time and hardware (run.json), copied to reports/reference-cpu/NAME/. The checkpoints stay in
# runs/reference/NAME (not committed).
#
#   bash scripts/reference_cpu.sh simple_lstm --model simple_lstm
#   bash scripts/reference_cpu.sh conv_tau --model conv_tau --set hid_S=16 ...
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: scripts/reference_cpu.sh NAME FLAGS... (the flags of mmtune train, e.g. --model simple_lstm)" >&2
  exit 2
fi
name=$1; shift
out=runs/reference/$name
dest=reports/reference-cpu/$name
if [ -e "$dest" ]; then
  echo "reference_cpu.sh: $dest exists; remove it or pick another NAME (results are never overwritten)" >&2
  exit 2
fi
cmd=(.venv/bin/mmtune train --protocol reference --device cpu --out "$out" --quiet "$@")
echo "running: ${cmd[*]}" >&2
start=$(date +%s)
"${cmd[@]}"
wall=$(( $(date +%s) - start ))
tmp=$(mktemp -d "reports/reference-cpu/.tmp-$name-XXXX")
cp "$out"/train.json "$out"/test_metrics.json "$out"/baselines.json "$out"/history.json "$out"/strip.png "$tmp"/
CMD="${cmd[*]}" WALL="$wall" .venv/bin/python - "$tmp/run.json" <<'PY'
import json, os, platform, sys
import torch
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
json.dump({"command": os.environ["CMD"], "wall_seconds": int(os.environ["WALL"]), "cpu": cpu,
           "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
          open(sys.argv[1], "w"), indent=2)
PY
mv "$tmp" "$dest"
echo "wrote $dest (${wall} s)" >&2
