"""Architectures for stretched RGB compared on one training budget: same steps, data, seed and loss.

Every candidate is trained from scratch on the training split of a clean RGB folder (AstroPics
noise, the composite loss and the data settings of ``pipelines/resunet-rgb.toml``), then scored on
that folder's validation split, which the recipe's ``val_fraction`` and ``seed`` fix. The reserved
evaluation images (``datasets/stellarium-reserved``) are not read: the choice of architecture is
made on the validation split alone.

For each candidate, in one run:
  * PSNR of the output and of the noisy input on the validation tiles (fixed noise), and the gain;
  * identity: PSNR of the output for the clean validation tiles given as input;
  * tiled throughput of ``denoise_tiled`` (overlap 0.25, the training tile) on a 1024² frame, in
    bfloat16 where the CPU has it natively and in float32;
  * gain per second: dB gained × Mpix/s, the quality bought per unit of compute.

    python tools/bench_arch.py --data datasets/stellarium-rgb --steps 600 --out docs/bench-arch
    python tools/bench_arch.py --score saved_models/resunet-rgb-v2 runs/NEXT/model_best.keras --out runs/val

``--score`` trains nothing: it scores trained models on the same validation split, side by side, which
is how a new phase of a shipped model is judged against the version it continues.

The weights of each candidate are kept in ``--runs`` (default ``runs/bench-arch/NAME/model.keras``)
with its result, so an interrupted bench continues where it stopped and the winner can seed a longer
run (``astrotf train ... --init runs/bench-arch/NAME``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CANDIDATES = {
    "resunet-16": ("resunet", {"channels": 3, "depth": 3, "base_filters": 16}),
    "resunet-24": ("resunet", {"channels": 3, "depth": 3, "base_filters": 24}),
    "nafnet-16": ("nafnet", {"channels": 3, "width": 16, "enc_blocks": [1, 1, 1, 4], "middle_blocks": 1,
                             "dec_blocks": [1, 1, 1, 1]}),
    "nafnet-24": ("nafnet", {"channels": 3, "width": 24, "enc_blocks": [1, 1, 1, 4], "middle_blocks": 1,
                             "dec_blocks": [1, 1, 1, 1]}),
}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def psnr_of(mse: float) -> float:
    return float(10 * np.log10(1.0 / max(mse, 1e-20)))


def train_candidate(arch: str, kwargs: dict, recipe, train_samples, steps: int, lr: float, seed: int,
                    precision: str):
    import keras
    import tensorflow as tf

    from astrotf.data import pipeline
    from astrotf.losses import AstroPicsLoss
    from astrotf.models.registry import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(arch, dtype=precision, **kwargs)
    warmup = max(steps // 10, 1)
    schedule = keras.optimizers.schedules.CosineDecay(lr / 10, max(steps - warmup, 1), alpha=0.05,
                                                      warmup_target=lr, warmup_steps=warmup)
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    loss_fn = AstroPicsLoss(recipe.loss)

    @tf.function
    def step(x, y, mask):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True), mask)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    data = pipeline.make_dataset(train_samples, recipe.data, training=True, epoch=0).take(steps)
    start, losses = time.perf_counter(), []
    for i, (x, y, mask) in enumerate(data, 1):
        losses.append(float(step(x, y, mask)))
        if i % 50 == 0 or i == steps:
            print(f"    step {i}/{steps}  loss {np.mean(losses[-50:]):.5f}  {time.perf_counter() - start:.0f} s",
                  flush=True)
    return model, time.perf_counter() - start


def validate(model, val_ds) -> dict:
    sums = {"out": 0.0, "in": 0.0, "identity": 0.0}
    count = 0
    for x, y, _ in val_ds:
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        out = np.asarray(model(x, training=False), np.float32)
        same = np.asarray(model(y, training=False), np.float32)
        sums["out"] += float(np.sum((out - y) ** 2))
        sums["in"] += float(np.sum((x - y) ** 2))
        sums["identity"] += float(np.sum((same - y) ** 2))
        count += y.size
    return {f"psnr_{k}": psnr_of(v / count) for k, v in sums.items()}


def throughput(arch: str, kwargs: dict, weights, tile: int, precision: str, size: int = 1024) -> float:
    import tensorflow as tf

    from astrotf.infer import TileOptions, denoise_tiled
    from astrotf.models.registry import build_model

    model = build_model(arch, dtype=precision, **kwargs)
    model.set_weights(weights)
    call = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    def predict(batch):
        return np.asarray(call(tf.constant(batch)), np.float32)

    image = np.clip(np.random.default_rng(0).normal(0.2, 0.05, (size, size, 3)), 0, 1).astype(np.float32)
    options = TileOptions(tile=tile, overlap=0.25, batch_size=8)
    denoise_tiled(image, predict, options)  # tracing
    best = np.inf
    for _ in range(2):
        start = time.perf_counter()
        denoise_tiled(image, predict, options)
        best = min(best, time.perf_counter() - start)
    return size * size / best / 1e6


def speeds_of(arch: str, kwargs: dict, weights, tile: int, fast: str) -> dict:
    speeds = {"float32": throughput(arch, kwargs, weights, tile, "float32")}
    if fast == "bfloat16":
        speeds["bfloat16"] = throughput(arch, kwargs, weights, tile, "mixed_bfloat16")
    return speeds


def remeasure(row: dict, folder: Path, tile: int, fast: str) -> dict:
    """``row`` with its throughput measured again from the saved weights."""
    from astrotf.models.registry import load_model

    weights = load_model(folder / "model.keras", dtype="float32").get_weights()
    speeds = speeds_of(row["architecture"], row["arguments"], weights, tile, fast)
    print(f"{row['name']}: {speeds} Mpix/s", flush=True)
    return {**row, "mpix_s": speeds, "gain_db_x_mpix_s": row["gain_db"] * speeds.get(fast, speeds["float32"])}


def score_models(paths: list[Path], val_ds, n_images: int, args) -> None:
    """PSNR, gain and identity of trained models on the validation split, in one run (``--score``)."""
    from astrotf.models.registry import load_model

    rows = []
    for path in paths:
        model = load_model(path / "model.keras" if path.is_dir() else path, dtype="float32")
        scores = validate(model, val_ds)
        rows.append({"model": str(path), **scores, "gain_db": scores["psnr_out"] - scores["psnr_in"]})
        print(f"{path}: PSNR {scores['psnr_out']:.3f} dB (gain {rows[-1]['gain_db']:+.3f}), identity "
              f"{scores['psnr_identity']:.2f} dB", flush=True)
    header = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": __import__("os").cpu_count(),
              "tile": args.tile, "data": str(args.data.name), "recipe": str(args.recipe.name),
              "validation_images": n_images, "precision": "float32", "note": args.note}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"setup": header, "models": rows}, indent=2))
    lines = [f"Measured {header['date']} on {header['cpu']} ({header['cores']} cores), float32; validation split of "
             f"{header['data']} ({n_images} images, {args.tile}² tiles, the noise of {header['recipe']}, fixed).", "",
             "| model | PSNR (dB) | gain (dB) | identity (dB) |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['psnr_out']:.3f} | {r['gain_db']:+.3f} | {r['psnr_identity']:.2f} |" for r in rows]
    lines += ["", f"Noisy input: {rows[0]['psnr_in']:.3f} dB. {args.note}".strip()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "datasets" / "stellarium-rgb")
    parser.add_argument("--recipe", type=Path, default=ROOT / "pipelines" / "resunet-rgb.toml")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-arch")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-arch")
    parser.add_argument("--note", default="", help="A sentence for the table (e.g. what shared the machine).")
    parser.add_argument("--score", nargs="+", type=Path, metavar="MODEL",
                        help="Train nothing: score these trained models (.keras files or model folders, e.g. "
                             "two versions of a shipped model) on the validation split side by side, in float32, and "
                             "write the table to --out.")
    parser.add_argument("--remeasure-speed", action="store_true",
                        help="Measure the throughput of every finished candidate again, side by side in this "
                             "run (on a quiet machine), and rewrite the table.")
    args = parser.parse_args()

    import dataclasses

    import tensorflow as tf

    from astrotf.data import pipeline
    from astrotf.models.registry import build_model
    from astrotf.config import load_recipe, resolve_precision

    recipe = load_recipe(args.recipe)
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, tile=args.tile,
                                                                  batch_size=args.batch_size))
    samples = pipeline.prepare_samples(args.data, recipe.data, args.runs / "cache")
    train_samples, val_samples = pipeline.split_samples(samples, recipe.data.val_fraction, recipe.data.split_seed)
    val_ds = pipeline.make_dataset(val_samples, recipe.data, training=False)
    if args.score:
        score_models(args.score, val_ds, len(val_samples), args)
        return
    precision = resolve_precision("auto", bool(tf.config.list_physical_devices("GPU")))
    fast = "bfloat16" if precision == "mixed_bfloat16" else "float32"
    print(f"{len(train_samples)} training / {len(val_samples)} validation images, {args.steps} steps of "
          f"{args.batch_size} x {args.tile}² tiles, lr {args.lr}, seed {args.seed}, training in {precision}")

    rows = []
    for name in args.candidates:
        arch, kwargs = CANDIDATES[name]
        folder = args.runs / name
        result_file = folder / "result.json"
        if result_file.is_file():
            saved = json.loads(result_file.read_text())
            if saved.get("steps") == args.steps and saved.get("seed") == args.seed:
                print(f"{name}: done earlier ({result_file})")
                if args.remeasure_speed:
                    saved = remeasure(saved, folder, args.tile, fast)
                    result_file.write_text(json.dumps(saved, indent=2))
                rows.append(saved)
                continue
        print(f"{name}: {arch} {kwargs}", flush=True)
        model, train_s = train_candidate(arch, kwargs, recipe, train_samples, args.steps, args.lr, args.seed,
                                         precision)
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.keras")
        scores = validate(model, val_ds)
        speeds = speeds_of(arch, kwargs, model.get_weights(), args.tile, fast)
        gain = scores["psnr_out"] - scores["psnr_in"]
        row = {"name": name, "architecture": arch, "arguments": kwargs,
               "parameters": int(build_model(arch, **kwargs).count_params()),
               "steps": args.steps, "seed": args.seed, "train_seconds": round(train_s, 1), **scores,
               "gain_db": gain, "mpix_s": speeds, "gain_db_x_mpix_s": gain * speeds.get(fast, speeds["float32"])}
        result_file.write_text(json.dumps(row, indent=2))
        rows.append(row)
        print(f"  PSNR {scores['psnr_out']:.2f} dB (input {scores['psnr_in']:.2f}, gain {gain:+.2f}), identity "
              f"{scores['psnr_identity']:.2f} dB, {speeds} Mpix/s", flush=True)

    header = {"date": datetime.date.today().isoformat(), "note": args.note, "cpu": cpu_name(), "cores": __import__("os").cpu_count(),
              "tensorflow": tf.__version__, "precision": precision, "steps": args.steps, "tile": args.tile,
              "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "data": str(args.data.name),
              "train_images": len(train_samples), "validation_images": len(val_samples)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"setup": header, "candidates": rows}, indent=2))
    lines = [f"Measured {header['date']} on {header['cpu']} ({header['cores']} cores), TensorFlow "
             f"{header['tensorflow']}; {args.steps} steps of {args.batch_size} × {args.tile}² tiles from scratch, "
             f"lr {args.lr}, seed {args.seed}, training in {precision}; validation split of "
             f"{header['data']} ({len(val_samples)} images).", "",
             "| candidate | parameters | PSNR (dB) | gain (dB) | identity (dB) | Mpix/s float32 | "
             "Mpix/s bfloat16 | dB × Mpix/s | training (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['parameters']:,} | {r['psnr_out']:.2f} | {r['gain_db']:+.2f} | "
                     f"{r['psnr_identity']:.2f} | {r['mpix_s']['float32']:.2f} | "
                     f"{r['mpix_s'].get('bfloat16', float('nan')):.2f} | {r['gain_db_x_mpix_s']:.2f} | "
                     f"{r['train_seconds']:.0f} |")
    lines.append("")
    lines.append(f"Noisy input: {rows[0]['psnr_in']:.2f} dB. {args.note}".strip() if rows else args.note)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
