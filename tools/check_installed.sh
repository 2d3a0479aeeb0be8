#!/usr/bin/env bash
# Build the wheel, install it (not editable) into a fresh virtual environment and run the documented
# commands from another folder: recipes, shipped models and samples must come from the installed package.
#
#   bash tools/check_installed.sh        (dependencies come from pip's cache or PyPI)
#
# Exits non-zero at the first command that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -m pip wheel . --no-deps -q -w "$work/dist" 2>/dev/null
python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$work"/dist/astrotf-*.whl
cd "$work"
export PATH="$work/venv/bin:$PATH"
unset PYTHONPATH

where=$(python -c "import astrotf, pathlib; print(pathlib.Path(astrotf.__file__).parent)")
case "$where" in "$work/venv/"*) ;; *) echo "imported astrotf from $where, not the installed copy"; exit 1;; esac

echo "== astrotf models"
astrotf models | tee models.txt
grep -q "^resunet-rgb " models.txt && grep -q "^resunet-mono " models.txt

echo "== quickstart: the bundled Hubble crop"
astrotf infer "$where/samples/hubble_deep_field.tif" -o hdf.tif --overlap 0.25 -q
python -c "from astrotf import io; d, _ = io.read_image('hdf.tif'); assert d.shape == (872, 1000, 3)"

echo "== infer on an XISF file"
python -c "
from astrotf import io
data, info = io.read_image('$where/samples/hubble_deep_field.tif')
io.write_image('hdf.xisf', data[:256, :256], info)"
astrotf infer hdf.xisf -o hdf_denoised.xisf -q
python -c "from astrotf import io; d, i = io.read_image('hdf_denoised.xisf'); assert d.shape == (256, 256, 3), d.shape"

echo "== a tiny training run with a shipped recipe (--config resunet-rgb)"
python -c "
import numpy as np, cv2, pathlib
rng = np.random.default_rng(0)
pathlib.Path('data').mkdir()
for i in range(4):
    cv2.imwrite(f'data/sky{i}.png', (rng.random((64, 64, 3)) * 255).astype(np.uint8))"
astrotf train resunet --config resunet-rgb --data data --out run --tile 32 --batch-size 2 --epochs 1 \
    --steps-per-epoch 2 --precision float32 -q
[ -f run/model_best.keras ]
echo "installed copy: all documented commands work"
