"""Does validating on 64 clips pick the trial 128 clips pick? Every search trial's checkpoint of the
given sweeps of the default space, validated clip by clip on the 128 clips the space had validated
on; each half's ordering of the trials set against all 128's.

    .venv/bin/python scripts/val_halves.py /tmp/mmtune-efficacy/effic-default-s0-* ...   # ~20 s a sweep

It measured the default space's val_size 64 (was 128): docs/search-efficacy.md.
"""
import dataclasses
import glob
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(2)
from mmtune.search.spaces import load_space  # noqa: E402
from mmtune.training.loop import Trainer, _autocast  # noqa: E402

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "default.yaml"
VAL_CLIPS = 128  # the clips the sweeps measured here had validated on


def per_clip_mse(trial_dir: str, space) -> list[float] | None:
    """The per-frame MSE of each of the first VAL_CLIPS val clips, by the trial's last checkpoint."""
    ckpts = sorted(glob.glob(trial_dir + "/checkpoint_*/state.pt"))
    if not ckpts:
        return None
    params = {k: v for k, v in json.loads(Path(trial_dir, "params.json").read_text()).items() if k != "optuna_trial"}
    trial = space.trial_config(params, {"seed": 0})
    trial = dataclasses.replace(trial, data=dataclasses.replace(trial.data, val_size=VAL_CLIPS))
    trainer = Trainer(trial, progress=False)
    trainer.load_weights(ckpts[-1])
    trainer.model.eval()
    val, per = trainer.val_batches(), []
    with torch.no_grad():
        for x, y in val.iterate(8):
            with _autocast(val.device, True):
                pred = trainer.model(x).float().clamp(0, 1)
            per += ((pred - y) ** 2).sum(dim=(2, 3, 4)).mean(dim=1).tolist()
    return per


def main() -> None:
    torch.set_num_threads(2)
    space = load_space(SPACE)
    for exp in sys.argv[1:]:
        found = {d.rsplit("_", 1)[1]: per_clip_mse(d, space) for d in sorted(glob.glob(exp + "/trial_*"))
                 if not d.endswith("_final")}
        found = {t: p for t, p in found.items() if p is not None}
        full = {t: sum(p) / len(p) for t, p in found.items()}
        name = Path(exp).name
        for lo, hi in ((0, VAL_CLIPS // 2), (VAL_CLIPS // 2, VAL_CLIPS)):
            half = {t: sum(p[lo:hi]) / (hi - lo) for t, p in found.items()}
            pairs = list(itertools.combinations(full, 2))
            alike = sum((full[a] < full[b]) == (half[a] < half[b]) for a, b in pairs)
            print(f"{name} clips {lo}-{hi - 1}: best {min(half, key=half.__getitem__)} "
                  f"(all {VAL_CLIPS}: {min(full, key=full.__getitem__)}), pairs ordered alike {alike}/{len(pairs)}")


if __name__ == "__main__":
    main()
