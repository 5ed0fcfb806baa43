#!/usr/bin/env bash
# The Python packages mmtune needs beyond the GPU machine's image (ray, optuna, plotly, tensorboardX
# and their needs; its image already has torch, numpy, pandas, pyarrow, opencv), fetched here into
# .whl/ (git-ignored) for scripts/gpu_check.sh to install there without a network. Ray's wheel
# (79 MB) is over the device tool's 64 MiB transfer limit, so it is unpacked, stripped of what Tune
# never imports (Java jars, RLlib, Serve, LLM) and repacked as .whl/ray-slim.tar.xz (about 31 MB).
#
#   bash scripts/gpu_bundle.sh          # for the GPU machine's Python 3.12 (default)
#   bash scripts/gpu_bundle.sh 3.11     # for this machine's Python, to dry-run the install
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${1:-3.12}
case $pyver in 3.1[0-9]) ;; *) echo "gpu_bundle.sh: Python version '$pyver' is not 3.10-3.19; pass e.g. 3.12" >&2; exit 2;; esac
PIN=(ray==2.60.0 optuna==5.0.0 alembic==1.20.1 Mako==1.4.3 SQLAlchemy==2.1.9 colorlog==6.12.0
     plotly==7.1.0 tensorboardX==2.6.5 cmaes==0.13.1 jsonschema==4.26.0
     jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 pydantic==2.14.4
     pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)
rm -rf .whl && mkdir -p .whl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading ${#PIN[@]} wheels for CPython $pyver (manylinux x86_64)" >&2
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp" "${PIN[@]}"
echo "repacking ray without jars, rllib, serve, llm" >&2
mkdir "$tmp/ray"
(cd "$tmp/ray" && unzip -q "$tmp"/ray-*.whl && rm -rf ray/jars ray/rllib ray/serve ray/llm)
(cd "$tmp/ray" && tar cf - .) | xz -T0 -6 > .whl/ray-slim.tar.xz
rm "$tmp"/ray-*.whl
mv "$tmp"/*.whl .whl/
du -ch .whl/* | tail -1 | sed 's/total/in .whl\//' >&2
