"""`astrotf train resunet` end to end on a tiny generated dataset: train, stop, resume, bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from astrotf.cli import main

TINY = ["--tile", "32", "--batch-size", "2", "--steps-per-epoch", "2", "--precision", "float32", "-q"]


def tiny_recipe(tmp_path, channels=3):
    path = tmp_path / "tiny.toml"
    path.write_text(
        f"[model]\nchannels = {channels}\ndepth = 2\nbase_filters = 4\n"
        f"[data]\nchannels = {channels}\ncrops_per_image = 2\nshuffle_buffer = 4\n"
        "[train]\ncheckpoint_every = 1\nwarmup_steps = 0\n"
    )
    return str(path)


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_train_writes_checkpoint_and_resume_continues_step_counter(rgb_folder, tmp_path):
    out = tmp_path / "runs" / "tiny"
    recipe = tiny_recipe(tmp_path)
    first = run(["train", "resunet", "--data", str(rgb_folder), "--out", str(out), "--config", recipe,
                 "--epochs", "1", *TINY])
    assert first.exit_code == 0, first.output
    state = json.loads((out / "run.json").read_text())
    assert state["step"] == 2 and state["epoch"] == 1
    assert (out / "checkpoints" / "checkpoint").exists()
    assert (out / "model_best.keras").exists()
    assert (out / "previews" / "epoch-0001.png").exists()
    assert sorted(state["data"]["train"] + state["data"]["validation"]) == [f"sky{i}" for i in range(4)]
    assert len(state["data"]["validation"]) == 1  # 80/20 split by file

    # starting again in the same folder without --resume is refused
    again = run(["train", "resunet", "--data", str(rgb_folder), "--out", str(out), "--config", recipe, *TINY])
    assert again.exit_code == 2 and "--resume" in again.output

    # no --config, no --steps-per-epoch: the run's own settings are used
    resumed = run(["train", "resunet", "--out", str(out), "--resume", "--epochs", "2", "-q"])
    assert resumed.exit_code == 0, resumed.output
    state = json.loads((out / "run.json").read_text())
    assert state["step"] == 4 and state["epoch"] == 2 and state["status"] == "finished"
    # the settings of the earlier steps are kept (here: the run was extended from 1 to 2 epochs)
    assert [p["until_step"] for p in state["phases"]] == [2] and state["phases"][0]["recipe"]["train"]["epochs"] == 1
    assert (out / "previews" / "epoch-0002.png").exists()
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[2].startswith("2,4,")



def test_space_to_depth_option_builds_the_half_resolution_network_and_resume_keeps_it(rgb_folder, tmp_path):
    import keras

    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path)
    first = run(["train", "resunet", "--data", str(rgb_folder), "--out", str(out), "--config", recipe,
                 "--space-to-depth", "2", "--epochs", "1", *TINY])
    assert first.exit_code == 0, first.output
    assert json.loads((out / "run.json").read_text())["recipe"]["model"]["space_to_depth"] == 2
    model = keras.saving.load_model(out / "model_last.keras")
    assert model.get_layer("unshuffle").output.shape[-1] == 12  # 2 x 2 blocks of 3 channels
    # the run's architecture cannot change under a resume
    changed = CliRunner().invoke(main, ["train", "resunet", "--out", str(out), "--config", recipe, "--resume",
                                        "--space-to-depth", "1", "--epochs", "2", *TINY])
    assert changed.exit_code != 0 and "the run's model is" in changed.output


def test_checkpoint_holds_the_trained_weights(rgb_folder, tmp_path):
    import keras
    import tensorflow as tf

    from astrotf.models.resunet import ResUNet

    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path)
    assert run(["train", "resunet", "--data", str(rgb_folder), "--out", str(out), "--config", recipe,
                "--epochs", "1", *TINY]).exit_code == 0
    model = ResUNet(channels=3, depth=2, base_filters=4)
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    untrained = np.asarray(model(x))
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(out / "checkpoints")).expect_partial()
    saved = keras.saving.load_model(out / "model_last.keras")
    np.testing.assert_allclose(model(x), saved(x), atol=1e-6)
    assert np.abs(untrained - np.asarray(model(x))).max() > 1e-6


def test_ema_saves_the_averaged_weights_and_checkpoints_both(rgb_folder, tmp_path):
    import keras
    import tensorflow as tf

    from astrotf.models.resunet import ResUNet
    from astrotf.train.ema import WeightAverage

    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path)
    assert run(["train", "resunet", "--data", str(rgb_folder), "--out", str(out), "--config", recipe,
                "--epochs", "1", "--ema", "0.9", *TINY]).exit_code == 0
    assert json.loads((out / "run.json").read_text())["recipe"]["train"]["ema"] == 0.9
    model = ResUNet(channels=3, depth=2, base_filters=4)
    ema = WeightAverage(model, 0.9)
    tf.train.Checkpoint(model=model, ema=ema).restore(tf.train.latest_checkpoint(out / "checkpoints")).expect_partial()
    assert int(ema.updates) == 2
    saved = keras.saving.load_model(out / "model_last.keras")
    averaged = [np.asarray(a) for a in ema.averages]
    for got, want in zip(saved.trainable_weights, averaged):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-7)
    trained = [np.asarray(v) for v in model.trainable_variables]
    assert max(np.abs(t - a).max() for t, a in zip(trained, averaged)) > 1e-6  # the checkpoint keeps the trained ones
    resumed = run(["train", "resunet", "--out", str(out), "--resume", "--epochs", "2", "-q"])
    assert resumed.exit_code == 0, resumed.output
    tf.train.Checkpoint(ema=ema).restore(tf.train.latest_checkpoint(out / "checkpoints")).expect_partial()
    assert int(ema.updates) == 4


def test_a_nafnet_recipe_trains_and_seeds_a_new_run(rgb_folder, tmp_path):
    """The recipe's [model] picks the architecture; --init takes a run of the same one."""
    recipe = tmp_path / "naf.toml"
    recipe.write_text("[model]\nname = 'nafnet'\nchannels = 3\nwidth = 4\nenc_blocks = [1, 1]\n"
                      "dec_blocks = [1, 1]\n[data]\ncrops_per_image = 2\nshuffle_buffer = 4\n"
                      "[train]\nwarmup_steps = 0\n")
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(["train", "resunet", "--data", str(rgb_folder), "--out", str(first), "--config", str(recipe),
                "--epochs", "1", *TINY]).exit_code == 0
    state = json.loads((first / "run.json").read_text())
    assert state["recipe"]["model"]["name"] == "nafnet" and state["recipe"]["model"]["enc_blocks"] == [1, 1]
    seeded = run(["train", "resunet", "--data", str(rgb_folder), "--out", str(second), "--config", str(recipe),
                  "--init", str(first), "--epochs", "1", *TINY])
    assert seeded.exit_code == 0, seeded.output
    assert json.loads((second / "run.json").read_text())["init"]["model"].endswith("model_best.keras")


@pytest.mark.parametrize("model,message", [
    ("name = 'nafnet'\nchannels = 3\nwidth = -3", "[model]: `width` must be an even integer >= 2. Received: width=-3"),
    ("name = 'nafnet'\nchannels = 3\nenc_blocks = [1, 1]\ndec_blocks = [1]", "[model]: "),
])
def test_an_out_of_range_architecture_setting_fails_before_a_run_folder_or_cache_is_written(rgb_folder, tmp_path,
                                                                                            model, message):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f"[model]\n{model}\n")
    result = run(["train", "resunet", "--data", str(rgb_folder), "--out", str(tmp_path / "run"), "--config",
                  str(recipe), *TINY])
    assert result.exit_code == 2 and f"Error: {message}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # no run.json, no cache


def test_a_noise_conditioned_recipe_trains_on_electron_fields_with_the_science_loss(electron_folder, tmp_path):
    """The shipped resunet-linear recipe on tiny tiles: (image, sigma) in, loss in units of sigma."""
    out = tmp_path / "run"
    result = run(["train", "resunet", "--data", str(electron_folder), "--out", str(out), "--config",
                  "resunet-linear", "--epochs", "1", *TINY])
    assert result.exit_code == 0, result.output
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].split(",")[2:5] == ["train_sigma_huber", "train_flux", "train_compact"]
    assert np.isfinite(float(history[1].split(",")[5]))
    import keras

    model = keras.saving.load_model(out / "model_best.keras")
    assert [t.name for t in model.inputs] == ["image", "noise_sigma"]


@pytest.mark.parametrize(
    "setup,args,message",
    [
        ("none", ["--data", "{tmp}/missing"], "does not exist"),
        ("empty", ["--data", "{tmp}/empty"], "no supported images"),
        ("unpaired", ["--data", "{tmp}/pairs", "--paired"], "without a partner"),
        ("small", ["--data", "{tmp}/small", "--tile", "64"], "smaller than the 64 px tile"),
        ("mono", ["--data", "{tmp}/mono", "--tile", "32"], "expects 3"),
        ("nan", ["--data", "{tmp}/nan", "--tile", "32"], "non-finite"),
        ("none", ["--data", "{tmp}", "--lr", "5"], "--lr"),
        ("none", ["--data", "{tmp}", "--config", "{tmp}/nope.toml"], "recipe not found"),
        ("badtoml", ["--data", "{tmp}", "--config", "{tmp}/bad.toml"], "unknown option"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, setup, args, message):
    import tifffile

    from tests.conftest import synthetic_sky, write_png

    rng = np.random.default_rng(0)
    (tmp_path / "empty").mkdir()
    if setup == "unpaired":
        for side, names in (("noisy", ["a", "b"]), ("clean", ["a"])):
            (tmp_path / "pairs" / side).mkdir(parents=True)
            for n in names:
                write_png(tmp_path / "pairs" / side / f"{n}.png", synthetic_sky(rng, 32))
    elif setup == "small":
        (tmp_path / "small").mkdir()
        write_png(tmp_path / "small" / "s.png", synthetic_sky(rng, 32))
    elif setup == "mono":
        (tmp_path / "mono").mkdir()
        write_png(tmp_path / "mono" / "m.png", synthetic_sky(rng, 48, channels=1))
    elif setup == "nan":
        (tmp_path / "nan").mkdir()
        img = synthetic_sky(rng, 48)
        img[3, 3, 0] = np.nan
        tifffile.imwrite(tmp_path / "nan" / "n.tif", img, photometric="rgb")
    elif setup == "badtoml":
        (tmp_path / "bad.toml").write_text("[data]\nnoize = 'astropics'\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, ["train", "resunet", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(rgb_folder, tmp_path):
    """SIGINT (Ctrl-C) to a real training process: clean stop with a checkpoint, then --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path)
    cmd = [sys.executable, "-m", "astrotf.cli", "train", "resunet", "--data", str(rgb_folder), "--out", str(out),
           "--config", recipe, "--epochs", "50", *TINY]
    # SIG_DFL in the child: a shell's background job inherits SIGINT ignored, and then Python never
    # turns Ctrl-C into KeyboardInterrupt
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    first_checkpoint = out / "checkpoints" / "checkpoint"  # run.json is written before the data are ready
    while time.time() < deadline and not first_checkpoint.exists() and proc.poll() is None:
        time.sleep(0.2)
    if not first_checkpoint.exists():
        proc.kill()
        pytest.fail(f"training never wrote its first checkpoint:\n{proc.communicate()[0]}")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "--resume" in output and "Traceback" not in output
    state = json.loads((out / "run.json").read_text())
    assert state["status"] == "interrupted" and state["step"] >= 1
    stopped_at = state["step"]

    target = stopped_at // 2 + 2  # epochs of 2 steps: finish the epoch in progress and one more
    resumed = run(["train", "resunet", "--out", str(out), "--config", recipe, "--resume", "--epochs", str(target),
                   *TINY])
    assert resumed.exit_code == 0, resumed.output
    state = json.loads((out / "run.json").read_text())
    assert state["step"] == 2 * target and state["status"] == "finished"


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_localhost_end_with_identical_weights(rgb_folder, tmp_path):
    """MultiWorkerMirroredStrategy from the CLI: 2 processes on 127.0.0.1, synchronous all-reduce."""
    import os
    import subprocess
    import sys

    import keras

    import astrotf.models.registered  # noqa: F401  (registers the custom classes)

    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    cmd = [sys.executable, "-m", "astrotf.cli", "train", "resunet", "--data", str(rgb_folder), "--out", str(out),
           "--config", recipe, "--epochs", "1", "--strategy", "multiworker", *TINY]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("multi-worker training did not finish within 240 s")
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    chief = json.loads((out / "run.json").read_text())
    assert chief["strategy"] == {"name": "multiworker", "replicas": 2, "chief": True, "task": 0}
    assert chief["step"] == 2
    worker_dir = out / "workers" / "worker-1"
    chief_weights = keras.saving.load_model(out / "model_last.keras").get_weights()
    worker_weights = keras.saving.load_model(worker_dir / "model_last.keras").get_weights()
    for a, b in zip(chief_weights, worker_weights):
        np.testing.assert_array_equal(a, b)

    # the multi-worker checkpoint resumes under the default strategy
    resumed = run(["train", "resunet", "--out", str(out), "--config", recipe, "--resume", "--epochs", "2", *TINY])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "run.json").read_text())["step"] == 4


def test_multiworker_without_tf_config_is_a_clear_error(rgb_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["train", "resunet", "--data", str(rgb_folder), "--out", str(tmp_path / "r"),
                                       "--config", tiny_recipe(tmp_path), "--epochs", "1",
                                       "--strategy", "multiworker", *TINY])
    assert result.exit_code == 2 and "TF_CONFIG" in result.output


def test_init_starts_a_new_run_from_the_weights_of_a_trained_model(rgb_folder, tmp_path):
    import keras

    recipe = tiny_recipe(tmp_path)
    base = tmp_path / "base"
    assert run(["train", "resunet", "--data", str(rgb_folder), "--out", str(base), "--config", recipe,
                "--epochs", "1", *TINY]).exit_code == 0
    tuned = tmp_path / "tuned"
    result = run(["train", "resunet", "--data", str(rgb_folder), "--out", str(tuned), "--config", recipe,
                  "--init", str(base), "--epochs", "1", "--lr", "1e-9", "--seed", "7", *TINY])
    assert result.exit_code == 0, result.output
    state = json.loads((tuned / "run.json").read_text())
    assert state["init"]["model"] == str(base / "model_best.keras") and state["init"]["training"]["steps"] == 2
    assert state["step"] == 2  # a new run: its own step counter
    # another --seed draws other tiles and noise but validates on the same files (data.split_seed)
    assert state["recipe"]["data"]["seed"] == 7
    assert state["data"]["validation"] == json.loads((base / "run.json").read_text())["data"]["validation"]
    samples = [f"sky{i}" for i in range(4)]
    assert [samples[i] for i in np.random.default_rng(7).permutation(4)[:1]] != state["data"]["validation"]
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    before = keras.saving.load_model(base / "model_best.keras")(x)
    after = keras.saving.load_model(tuned / "model_last.keras")(x)
    np.testing.assert_allclose(after, before, atol=1e-5)  # lr 1e-9: the weights are the base model's

    other = tmp_path / "other.toml"
    other.write_text(open(recipe).read().replace("base_filters = 4", "base_filters = 8"))
    result = CliRunner().invoke(main, ["train", "resunet", "--data", str(rgb_folder), "--out", str(tmp_path / "x"),
                                       "--config", str(other), "--init", str(base), "--epochs", "1", *TINY])
    assert result.exit_code == 2 and "--init needs the same model" in result.output
    result = CliRunner().invoke(main, ["train", "resunet", "--out", str(tuned), "--resume", "--init", str(base)])
    assert result.exit_code == 2 and "cannot be combined with --resume" in result.output


def test_bad_recipe_fails_before_tensorflow_is_imported(tmp_path):
    """`astrotf train resunet --config bad.toml` answers in well under a second (no TensorFlow import)."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "data").mkdir()
    env = {**os.environ, "PYTHONPATH": str(root)}
    for text, message in [("[model]\nbase_filter = 8\n", "unknown argument(s) base_filter"),
                          ("[train]\nlr = 5.0\n", "`lr` must be in (0, 1)"),
                          ("[data\n", "invalid TOML")]:
        (tmp_path / "bad.toml").write_text(text)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "astrotf.cli", "train", "resunet", "--config",
                                 str(tmp_path / "bad.toml"), "--data", str(tmp_path / "data"), "--out",
                                 str(tmp_path / "run")], capture_output=True, text=True, env=env, cwd=tmp_path)
        elapsed = time.perf_counter() - start
        print(f"{text.splitlines()[0]!r}: {elapsed:.2f} s")
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert elapsed < 3.0  # about 0.3 s on a 2-core CPU; TensorFlow's import alone takes several


# ----------------------------------------------------------------------------- astrotf train pix2pix
def tiny_pix2pix_recipe(tmp_path):
    path = tmp_path / "tiny-gan.toml"
    path.write_text(
        "[model]\nname = 'pix2pix'\nchannels = 3\ndepth = 2\nbase_filters = 4\nmax_filters = 8\n"
        "[discriminator]\nfilters = 4\nn_layers = 1\n"
        "[data]\nchannels = 3\ncrops_per_image = 2\nshuffle_buffer = 4\n"
        "[train]\ncheckpoint_every = 1\nwarmup_steps = 0\n"
    )
    return str(path)


def test_pix2pix_trains_checkpoints_both_networks_and_resumes(rgb_folder, tmp_path):
    import tensorflow as tf

    out = tmp_path / "gan"
    recipe = tiny_pix2pix_recipe(tmp_path)
    first = run(["train", "pix2pix", "--data", str(rgb_folder), "--out", str(out), "--config", recipe,
                 "--epochs", "1", *TINY])
    assert first.exit_code == 0, first.output
    state = json.loads((out / "run.json").read_text())
    assert state["step"] == 2 and state["recipe"]["discriminator"] == {"name": "patchgan", "channels": 3,
                                                                      "filters": 4, "n_layers": 1}
    assert (out / "model_best.keras").exists() and (out / "previews" / "epoch-0001.png").exists()
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "train_adversarial", "train_discriminator", "val_loss", "val_d_fake"} <= set(header)
    names = [name for name, _ in tf.train.list_variables(str(out / "checkpoints"))]
    for key in ("optimizer/_trainable_variables", "discriminator_optimizer/_trainable_variables"):
        assert any(n.startswith(key) for n in names), key  # each network's weights and its Adam moments

    resumed = run(["train", "pix2pix", "--out", str(out), "--resume", "--epochs", "2", "-q"])
    assert resumed.exit_code == 0, resumed.output
    state = json.loads((out / "run.json").read_text())
    assert state["step"] == 4 and state["epoch"] == 2 and state["status"] == "finished"
    iterations = {n: tf.train.load_variable(str(out / "checkpoints"), n) for n in names if "iteration" in n}
    assert sorted(int(v) for v in iterations.values()) == [4, 4]  # both optimisers continued


def test_pix2pix_generator_exports_to_onnx_and_denoises_from_the_cli(rgb_folder, tmp_path):
    pytest.importorskip("tf2onnx")
    out = tmp_path / "gan"
    assert run(["train", "pix2pix", "--data", str(rgb_folder), "--out", str(out), "--config",
                tiny_pix2pix_recipe(tmp_path), "--epochs", "1", *TINY]).exit_code == 0
    exported = run(["export", str(out), "--out", str(tmp_path / "model"), "--format", "onnx"])
    assert exported.exit_code == 0, exported.output
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["architecture"]["name"] == "pix2pix" and meta["data_domain"] == "stretched"
    image = tmp_path / "sky.png"
    image.write_bytes((rgb_folder / "clean" / "sky0.png").read_bytes())
    for backend in ("tensorflow", "onnxruntime"):
        result = run(["infer", "-q", str(image), "--model", str(tmp_path / "model"), "--backend", backend,
                      "--tile", "32", "--out-dir", str(tmp_path / backend)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / backend / "sky_denoised.png").exists()


def test_pix2pix_refuses_init_from_another_architecture_naming_both(rgb_folder, tmp_path):
    base = tmp_path / "base"
    assert run(["train", "resunet", "--data", str(rgb_folder), "--out", str(base), "--config", tiny_recipe(tmp_path),
                "--epochs", "1", *TINY]).exit_code == 0
    result = CliRunner().invoke(main, ["train", "pix2pix", "--data", str(rgb_folder), "--out", str(tmp_path / "g"),
                                       "--config", tiny_pix2pix_recipe(tmp_path), "--init", str(base), *TINY])
    assert result.exit_code == 2
    assert "is a ResUNet, the recipe's model is pix2pix (Pix2PixGenerator)" in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1


def test_pix2pix_discriminator_too_large_for_the_tile_fails_before_tensorflow(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "data").mkdir()
    code = "import atexit, sys; atexit.register(lambda: print('tensorflow' in sys.modules)); " \
           "from astrotf.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "train", "pix2pix", "--config", "pix2pix-rgb", "--tile", "64",
                             "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("Error: [discriminator] n_layers = 3 judges 70 px patches, larger than the "
                                     "64 px tile ([data] tile / --tile); lower n_layers or raise the tile")
    assert not (tmp_path / "run").exists() and result.stdout.strip() == "False"  # TensorFlow never imported

