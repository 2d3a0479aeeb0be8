"""TDR with a Neighbor2Neighbor network instead of Self2Self, under the paper-noise reference protocol.

A settings experiment, not a trainer. Like TDR, it trains on ONE noisy magnetogram of the kind (sample 1's disk-centre crop plus
6.2 G of seeded white noise, from ``tools/hmi_data.py --add-noise 6.2``) and needs no clean data:

* Neighbor2Neighbor (Huang et al. 2021): every 2×2 cell of a training patch gives two neighbouring
  pixels at random, one to each of two half-resolution sub-images ``g1(y)``, ``g2(y)``, whose noise is
  independent. The network learns ``f(g1(y)) ≈ g2(y)`` with the regulariser
  ``γ ||f(g1(y)) - g2(y) - (g1(f(y)) - g2(f(y)))||²`` that closes the half-pixel gap; ``f(y)`` is
  computed without gradient.
* The network is astrotf's ResUNet with ``normalization="fixed"`` (the data divided by 60 G, about 10 ×
  the noise, as Self2Self's scale) and the train step of :mod:`astrotf.train.neighbor2neighbor`,
  trained for a fixed number of steps or wall time.
* One pass denoises a frame (Self2Self averages 16 dropout passes).

It then scores the raw output, the soft restore (1 and 2 px windows) and blends with the input on
sample 1's side crop (the validation crop where settings are chosen) and on samples 2 and 3 with
:func:`bench_tdr.paper_noise_scores`, the measures of ``docs/tdr.md``'s table, and writes them as JSON.

    python tools/hmi_data.py --out datasets/hmi --add-noise 6.2     # once
    python tools/tdr_neighbor2neighbor.py --minutes 8 --out runs/tdr-n2n
    python tools/tdr_neighbor2neighbor.py --summarise docs/bench-tdr/neighbor2neighbor-settings/*.json

``astrotf train neighbor2neighbor`` is the trainer of the package; this tool is where its recipe's
settings (``pipelines/neighbor2neighbor-hmi.toml``) were compared, on the validation crop only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
SCALE_G = 60.0
CROPS = (("sample_1_side1024", "validation"), ("sample_2_crop1024", "test"), ("sample_3_crop1024", "test"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "datasets" / "hmi")
    parser.add_argument("--noise", type=float, default=6.2, help="the added noise of the crops, G")
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall-time budget")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (a budget that does "
                        "not depend on what else the machine runs)")
    parser.add_argument("--filters", type=int, default=24)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gamma", type=float, default=2.0, help="weight of the regulariser")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "tdr-n2n")
    parser.add_argument("--score-only", action="store_true", help="score the model saved in OUT.keras again")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="JSON",
                        help="print a Markdown table of these runs' validation-crop figures and stop")
    return parser.parse_args()


def train(args, image: np.ndarray):
    import keras
    import tensorflow as tf

    from astrotf.models.resunet import ResUNet
    from astrotf.train.neighbor2neighbor import make_train_step
    from astrotf.train.self2self import sample_patches  # random patches, flips and transposes

    keras.utils.set_random_seed(args.seed)
    model = ResUNet(channels=1, depth=args.depth, base_filters=args.filters, normalization="fixed", scale=SCALE_G,
                    dtype=None if args.precision == "float32" else args.precision)
    step = make_train_step(model, keras.optimizers.Adam(args.lr), argparse.Namespace(gamma=args.gamma), 0.0, SCALE_G)
    rng, start, n, losses = np.random.default_rng(args.seed), time.perf_counter(), 0, []
    valid = np.ones_like(image)
    while time.perf_counter() - start < args.minutes * 60 and (args.steps is None or n < args.steps):
        batch, valid_batch = sample_patches(image, valid, args.patch, args.batch_size, rng)
        losses.append(float(step(tf.constant(batch), tf.constant(valid_batch), tf.constant([args.seed, n], tf.int64))))
        n += 1
        if n % 200 == 0:
            print(f"step {n}: loss {np.mean(losses[-200:]):.5f}, {time.perf_counter() - start:.0f} s", flush=True)
    return model, n, time.perf_counter() - start


def score(args, model) -> dict:
    from astrotf import io
    from astrotf.metrics import noise_level
    from astrotf.soft_restore import soft_restore
    from bench_tdr import paper_noise_scores

    crops = {}
    for name, role in CROPS:
        noisy = io.read_image(args.data / f"{name}_plus{args.noise:g}G.fits")[0][..., 0].astype(np.float64)
        reference = io.read_image(args.data / f"{name}.fits")[0][..., 0].astype(np.float64)
        sigma_in = noise_level(noisy, (-20.0, 20.0)).sigma
        start = time.perf_counter()
        out = np.asarray(model(np.nan_to_num(noisy)[None, ..., None].astype(np.float32)))[0, ..., 0]
        out = np.where(np.isfinite(noisy), out, np.nan)
        seconds = time.perf_counter() - start
        rows = {"N2N raw": out}
        for width in (1.0, 2.0):
            rows[f"N2N soft restore ({width:g} px)"] = soft_restore(out, noisy, sigma_in, width).image
        for share in (0.1, 0.2):
            rows[f"N2N + {share:g} x input"] = out + share * (noisy - out)
        crops[name] = {"role": role, "sigma_in": sigma_in, "seconds": seconds,
                       "rows": {k: paper_noise_scores(v, noisy, reference, sigma_in) for k, v in rows.items()}}
        for k, v in crops[name]["rows"].items():
            print(f"{name} {k:28s} σ ratio {v['sigma_ratio']:.3f}  RMSE {v['rmse']:.2f} G  >50 G {v['rmse_strong']:.2f}"
                  f"  slope {v['slope_strong']:.3f}  structure {v['residual_structure']:.2f}", flush=True)
    return crops


def summary_table(paths: list[Path], row: str = "N2N soft restore (1 px)") -> str:
    """Markdown: one line per run, its settings and the ``row`` figures on the validation crop."""
    lines = ["| run | gamma | filters | steps | precision | train s | σ ratio | RMSE G | RMSE >50 G | slope >50 G "
             "| resid. str. |", "|" + "---|" * 11]
    for path in paths:
        report = json.loads(path.read_text())
        s = report["settings"]
        scores = next(c for c in report["crops"].values() if c["role"] == "validation")["rows"][row]
        train_s = f"{report['train_s']:.0f}" if report.get("train_s") else "n/a"
        lines.append(f"| {path.stem} | {s['gamma']:g} | {s['filters']} | {report['steps']} | "
                     f"{s.get('precision', 'float32')} | {train_s} | {scores['sigma_ratio']:.3f} | {scores['rmse']:.2f} | "
                     f"{scores['rmse_strong']:.2f} | {scores['slope_strong']:.3f} | {scores['residual_structure']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.summarise:
        print(summary_table(args.summarise))
        return
    from astrotf import io

    if args.score_only:
        import keras

        import astrotf.models.registered  # noqa: F401  (registers the custom classes)

        report = json.loads(args.out.with_suffix(".json").read_text()) if args.out.with_suffix(".json").is_file() \
            else {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": args.steps}
        report["crops"] = score(args, keras.saving.load_model(args.out.with_suffix(".keras")))
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
        return
    image = io.read_image(args.data / f"sample_1_crop1024_plus{args.noise:g}G.fits")[0][..., :1]
    image = np.nan_to_num(image.astype(np.float32))
    model, steps, seconds = train(args, image)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out.with_suffix(".keras"))
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": steps, "train_s": round(seconds, 1),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "crops": score(args, model)}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"trained {steps} steps in {seconds:.0f} s; wrote {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
