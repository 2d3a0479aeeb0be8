"""The README's Python API example runs as written."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    code = code.replace('"astrotf/samples/', f'"{ROOT}/astrotf/samples/')
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert (tmp_path / "starfield_denoised.fits").is_file()
    assert "background noise" in capsys.readouterr().out
    assert scope["sky_out"] < 0.5 * scope["sky_in"]
    assert np.nanmax(np.abs(scope["kept"].image - scope["data"])) <= 3 * scope["sky_in"] + 1e-3
    lo, hi = np.minimum(scope["raw"], scope["field"]), np.maximum(scope["raw"], scope["field"])
    assert np.all((scope["soft"].image >= lo) & (scope["soft"].image <= hi))
