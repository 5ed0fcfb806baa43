#!/usr/bin/env bash
# Issue 15's figures on the smoke space: a warm start against a cold start (best val MSE after the
# same number of trials, same seed), and a time-budget sweep's planned against used wall time.
#
#   bash scripts/warm_vs_cold.sh [STORAGE]     (default STORAGE: experiments/issue15; about 10 minutes on 2 cores)
#
# source: a cold smoke sweep at seed 1, the earlier sweep the warm start reads;
# cold:   the smoke sweep at seed 0; warm: the same at seed 0, --warm-start source (its top 3 first);
# budget: the smoke space, 20 trials offered, --time-budget 2m.
set -euo pipefail
cd "$(dirname "$0")/.."
storage=${1:-experiments/issue15}
for n in source cold warm budget; do
  if [ -e "$storage/$n" ]; then
    echo "warm_vs_cold.sh: $storage/$n exists; pass another STORAGE (results are never overwritten)" >&2
    exit 2
  fi
done
run=(.venv/bin/python run_search.py --space search_spaces/smoke.yaml --storage "$storage" --no-report --verbose 0)
echo "[1/4] source: smoke, seed 1" >&2; "${run[@]}" --name source --seed 1 >/dev/null
echo "[2/4] cold: smoke, seed 0" >&2;   "${run[@]}" --name cold --seed 0 >/dev/null
echo "[3/4] warm: smoke, seed 0, --warm-start source" >&2
"${run[@]}" --name warm --seed 0 --warm-start "$storage/source" >/dev/null
echo "[4/4] budget: smoke, 20 trials offered, --time-budget 2m" >&2
"${run[@]}" --name budget --samples 20 --time-budget 2m >/dev/null
.venv/bin/python - "$storage" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
root = Path(sys.argv[1])
for name in ("source", "cold", "warm"):
    df = pd.read_parquet(root / name / "results.parquet")
    best = df.loc[~df["diverged"], "val_mse"].min()
    n = df["trial_id"].nunique()
    print(f"{name:6s}: {n} trials, best val mse_frame {best:.2f} (per-frame), mse_pixel255 {best * 65025 / 4096:.1f}")
b = json.loads((root / "budget" / "sweep.json").read_text())
bud = b["budget"]
print(f"budget: {bud['budget']} planned ({bud['budget_s']:.0f} s); the trials used {bud['used_s']:.0f} s, the whole "
      f"sweep {bud['sweep_s']:.0f} s; {b['num_trials']} of 20 trials started; ended by the budget: {bud['ended_by_budget']}")
PY
