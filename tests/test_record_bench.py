"""tools/record_bench.py: a bench_quality record's RGB figures go into a model's metadata.json."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "record_bench.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("record_bench", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = {"header": {"date": "2026-12-03T10:00:00+00:00", "machine": "test", "command": "bench"},
         "rgb": {"images": ["a.png", "b.png"],
                 "methods": {"noisy input": {"psnr": 27.4, "ssim": 0.68},
                             "astrotf my-rgb": {"psnr": 34.123, "ssim": 0.91234},
                             "BM3D": {"psnr": 32.15, "ssim": 0.8712}, "NLM (fast)": {"psnr": 30.1, "ssim": 0.8}},
                 "identities": {"astrotf my-rgb": {"mean_psnr": 46.0, "min_psnr": 41.5, "pass": True}}}}


def test_figures_name_the_best_peer_and_the_identity_case():
    figures = load_tool().rgb_figures(BENCH, "my-rgb")
    assert figures["rgb_psnr_db"] == 34.12 and figures["best_peer"] == "BM3D" and figures["best_peer_psnr_db"] == 32.15
    assert figures["identity_min_db"] == 41.5 and figures["date"] == "2026-12-03"
    assert load_tool().rgb_figures(BENCH, "other") is None


def test_the_figures_reach_the_metadata_and_astrotf_models(tmp_path, monkeypatch):
    from astrotf.backends import shipped_models

    folder = tmp_path / "my-rgb"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({"data_domain": "stretched", "channels": 3, "keep": 1}))
    (tmp_path / "bench.json").write_text(json.dumps(BENCH))
    subprocess.run([sys.executable, str(TOOL), str(tmp_path / "bench.json"), str(folder)], check=True,
                   capture_output=True)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["keep"] == 1 and metadata["bench"]["rgb_ssim"] == 0.9123
    monkeypatch.setenv("ASTROTF_MODELS", str(tmp_path))
    card = next(c for c in shipped_models() if c.name == "my-rgb")
    assert card.summary() == "RGB 34.12 dB vs BM3D 32.15, identity 46.0 dB (2026-12-03)"


def test_a_linear_models_star_figures_are_taken_at_its_default_strength():
    method = {"dm50": -0.1234, "kept_snr5": 0.97, "precision_own": 0.9, "flux_abs_error_median": 0.017,
              "flux_bias": 0.002, "sky_bias": 0.012}
    bench = {"header": BENCH["header"], "prior_fields": {"held-out, r = 5": {"methods": {
        "noisy input": {"flux_abs_error_median": 0.02},
        "astrotf resunet-linear (σ map)": {**method, "precision_own": 0.6},
        "astrotf resunet-linear (σ map), strength 0.75": method}}}}
    figures = load_tool().star_figures(bench, "resunet-linear")
    row = figures["stars"]["held-out, r = 5"]
    assert row["method"].endswith("strength 0.75") and row["precision_own_1p5sigma"] == 0.9
    assert row["dm50"] == -0.123 and row["input_flux_abs_error_median"] == 0.02
    assert figures["date"] == "2026-12-03" and load_tool().star_figures(bench, "other") is None
