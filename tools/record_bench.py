"""Write a model's figures from a `tools/bench_quality.py` run into its metadata.json (``"bench"``).

    python tools/record_bench.py docs/bench-quality/bench.json saved_models/resunet-rgb-v2 [...]

For each model folder, the bench's RGB section (PSNR / SSIM of the model and of the best classical peer
on the reserved crops, the identity case), or for a linear model its star-field figures per group (Δm50
at matched contamination, S/N >= 5 stars kept, precision at 1.5 σ of its own background, flux error and
bias, sky bias), and the run's date and machine go into ``metadata["bench"]``,
which ``astrotf models`` prints. The file is replaced atomically; nothing else in it changes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

PEERS = ("BM3D", "NLM", "wavelet", "TV", "Gaussian")


def rgb_figures(bench: dict, name: str) -> dict | None:
    """The RGB figures of model ``name`` (its folder name) in a bench_quality record, or None."""
    section = bench.get("rgb")
    if not section:
        return None
    label = next((m for m in section["methods"] if m.startswith("astrotf ") and m.split()[-1] == name), None)
    if label is None:
        return None
    peers = {m: r for m, r in section["methods"].items() if m.startswith(PEERS)}
    best = max(peers, key=lambda m: peers[m]["psnr"]) if peers else None
    ident = section.get("identities", {}).get(label, {})
    figures = {"rgb_psnr_db": round(section["methods"][label]["psnr"], 2),
               "rgb_ssim": round(section["methods"][label]["ssim"], 4),
               "rgb_crops": len(section["images"])}
    if best:
        figures.update(best_peer=best.split(" (")[0], best_peer_psnr_db=round(peers[best]["psnr"], 2),
                       best_peer_ssim=round(peers[best]["ssim"], 4))
    if ident:
        figures.update(identity_mean_db=round(ident["mean_psnr"], 2), identity_min_db=round(ident["min_psnr"], 2))
    header = bench.get("header", {})
    return {**figures, "date": str(header.get("date", ""))[:10], "machine": header.get("machine"),
            "command": header.get("command")}


def star_figures(bench: dict, name: str) -> dict | None:
    """The linear star-field figures of model ``name`` (a method label holding the name; with a
    ``strength`` in the label, the row at the model's default strength) per field group, or None."""
    section = bench.get("prior_fields")
    if not section:
        return None
    groups = {}
    for group, report in section.items():
        labels = [m for m in report["methods"] if m.startswith("astrotf ") and name in m]
        label = next((m for m in labels if "strength" in m), labels[0] if labels else None)
        if label is None:
            continue
        m = report["methods"][label]
        groups[group] = {"method": label, "dm50": _round(m.get("dm50")), "kept_snr5": _round(m.get("kept_snr5")),
                         "kept_snr5_real": _round(m.get("kept_snr5_real")),
                         "precision_own_1p5sigma": _round(m.get("precision_own")),
                         "flux_abs_error_median": _round(m.get("flux_abs_error_median"), 4),
                         "input_flux_abs_error_median": _round(report["methods"].get("noisy input", {})
                                                               .get("flux_abs_error_median"), 4),
                         "flux_bias": _round(m.get("flux_bias"), 4), "sky_bias_sigma": _round(m.get("sky_bias"))}
    if not groups:
        return None
    header = bench.get("header", {})
    return {"stars": groups, "date": str(header.get("date", ""))[:10], "machine": header.get("machine"),
            "command": header.get("command")}


def _round(value, digits: int = 3):
    return None if value is None else round(float(value), digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()
    bench = json.loads(args.bench.read_text())
    for folder in args.models:
        figures = rgb_figures(bench, folder.name) or star_figures(bench, folder.name)
        if figures is None:
            print(f"{folder.name}: not in {args.bench}'s RGB or star-field sections; left as it is")
            continue
        path = folder / "metadata.json"
        metadata = json.loads(path.read_text())
        metadata["bench"] = figures
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".metadata.")
        with os.fdopen(fd, "w") as fh:
            json.dump(metadata, fh, indent=2, default=str)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        print(f"{folder.name}: {figures}")


if __name__ == "__main__":
    main()
