"""SavedModel export: TF Serving layout, serving_default signature, parity with Keras, metadata."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from astrotf.errors import AstroTFError
from astrotf.export import export_run
from astrotf.backends import load_model
from astrotf.models.resunet import ResUNet


def fake_run(tmp_path, **model_kwargs):
    """A run folder as training leaves it: run.json and model_best.keras."""
    kwargs = dict(channels=3, depth=2, base_filters=4) | model_kwargs
    model = ResUNet(**kwargs, head_initializer="glorot_uniform")  # a random correction, not the identity
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model_best.keras")
    recipe = {"model": {"name": "resunet", **{"activation": "relu", "normalization": "none"}, **kwargs},
              "data": {"tile": 32}, "loss": {}, "train": {}}
    (run / "run.json").write_text(json.dumps({"recipe": recipe, "step": 7, "epoch": 1, "wall_time_s": 3.0,
                                              "hardware": {"cpu": "test"}, "data": {"data_dir": "x"}}))
    return run, model


def two_runs(tmp_path):
    """Two fake runs of different widths (base 4 and 6): ``(first, second, second's model)``."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _ = fake_run(tmp_path / "a")
    second, model2 = fake_run(tmp_path / "b", base_filters=6)
    return first, second, model2


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    run, model = fake_run(tmp)
    out = export_run(run, tmp / "saved_models" / "tiny")
    return out, model


def test_layout_and_metadata(exported):
    out, _ = exported
    assert (out / "1" / "saved_model.pb").is_file() and (out / "model.keras").is_file()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["channels"] == 3 and meta["data_domain"] == "stretched" and meta["tile"] == 32
    assert meta["signature"] == {"name": "serving_default", "input": "image", "output": "denoised",
                                 "shape": [None, None, None, 3], "dtype": "float32"}
    assert meta["training"]["steps"] == 7 and meta["training"]["hardware"] == {"cpu": "test"}


def test_serving_signature_matches_keras_at_two_batch_sizes_and_odd_size(exported):
    out, model = exported
    serve = tf.saved_model.load(str(out / "1")).signatures["serving_default"]
    rng = np.random.default_rng(0)
    for shape in [(1, 32, 32, 3), (3, 37, 29, 3)]:
        x = rng.random(shape, dtype=np.float32)
        got = serve(image=tf.constant(x))["denoised"].numpy()
        np.testing.assert_allclose(got, model(x), atol=1e-5)


def test_saved_model_cli_lists_serving_default(exported):
    out, _ = exported
    cli = shutil.which("saved_model_cli") or str(Path(sys.executable).parent / "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", str(out / "1"), "--all"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "serving_default" in result.stdout and "image" in result.stdout and "denoised" in result.stdout


def test_infer_loads_saved_model_and_keras_file_alike(exported):
    out, model = exported
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    from_saved = load_model(out)
    from_keras = load_model(out / "model.keras")
    np.testing.assert_allclose(from_saved.predict(x), model(x), atol=1e-5)
    np.testing.assert_allclose(from_keras.predict(x), model(x), atol=1e-5)
    assert from_saved.channels == 3 and from_saved.domain == "stretched"


def test_linear_model_exports_its_normalisation(tmp_path):
    run, model = fake_run(tmp_path, channels=1, normalization="background")
    out = export_run(run, tmp_path / "mono")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["data_domain"] == "linear" and meta["normalization"]["kind"] == "background"
    x = (np.random.default_rng(2).normal(1000, 30, (1, 33, 35, 1))).astype(np.float32)
    np.testing.assert_allclose(load_model(out).predict(x), model(x), rtol=1e-5)


def test_export_refuses_to_overwrite(exported, tmp_path):
    out, _ = exported
    run, _ = fake_run(tmp_path)
    with pytest.raises(AstroTFError, match="already exists"):
        export_run(run, out)


def test_a_new_version_goes_beside_the_others_and_force_replaces_only_it(tmp_path):
    from astrotf.export import VERSION_FILES

    first, second, model2 = two_runs(tmp_path)
    out = tmp_path / "models" / "m"
    export_run(first, out, formats=("savedmodel", "onnx"))
    v1 = (out / "1" / "saved_model.pb").read_bytes()
    export_run(second, out, version=2)  # no ONNX this time
    assert (out / "1" / "saved_model.pb").read_bytes() == v1  # version 1 untouched
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["version"] == 2 and sorted(meta["versions"]) == ["1", "2"]
    assert not (out / "model.onnx").exists()  # the top level is version 2's alone ...
    kept = out / "1" / VERSION_FILES  # ... and version 1's own files moved beside its SavedModel
    assert json.loads((kept / "metadata.json").read_text())["version"] == 1
    assert (kept / "model.onnx").is_file() and (kept / "model.keras").is_file()
    x = np.random.default_rng(0).random((1, 20, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(load_model(out).predict(x), model2(x), atol=1e-5)  # infer takes the newest

    with pytest.raises(AstroTFError, match="--force to replace this version"):
        export_run(first, out, version=2)
    export_run(first, out, version=2, force=True)
    assert (out / "1" / "saved_model.pb").read_bytes() == v1 and (kept / "model.onnx").is_file()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "1", "2", "metadata.json", "model.keras"]

    export_run(second, out, version=1, force=True)  # an older version: the top level stays version 2's
    assert json.loads((out / "metadata.json").read_text())["version"] == 2
    assert json.loads((kept / "metadata.json").read_text())["version"] == 1
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


@pytest.fixture(scope="module")
def exported_onnx(tmp_path_factory):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    tmp = tmp_path_factory.mktemp("onnx")
    run, model = fake_run(tmp, channels=1, normalization="background", space_to_depth=2)
    out = export_run(run, tmp / "saved_models" / "tiny-onnx", formats=("savedmodel", "onnx"))
    return out, model


def test_onnx_matches_tensorflow_on_two_tile_sizes_and_odd_frames(exported_onnx):
    out, model = exported_onnx
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["onnx"]["input"] == "image" and meta["onnx"]["output"] == "denoised"
    onnx_model = load_model(out, backend="onnxruntime")
    rng = np.random.default_rng(1)
    for shape in [(4, 32, 32, 1), (2, 64, 64, 1), (1, 37, 53, 1)]:  # odd H x W exercises pad + crop
        x = rng.normal(0.0, 1.0, shape).astype(np.float32)
        np.testing.assert_allclose(onnx_model.predict(x), model(x), atol=1e-4)


def test_onnx_backend_without_onnx_file_is_a_clear_error(exported):
    pytest.importorskip("onnxruntime")
    out, _ = exported
    with pytest.raises(AstroTFError, match="no model.onnx"):
        load_model(out, backend="onnxruntime")


def test_an_export_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    run, _ = fake_run(tmp_path / "a")
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(AstroTFError, match=r"^.*file/m: cannot be written \(.+\)$"):
        export_run(run, tmp_path / "file" / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "file"]


def test_a_model_folder_left_half_switched_by_a_killed_export_is_refused(tmp_path):
    folder = tmp_path / "m"
    (folder / "1").mkdir(parents=True)
    (folder / ".installing").write_text("2")
    with pytest.raises(AstroTFError, match="export into this folder was interrupted; run it again with --force"):
        load_model(folder)


@pytest.mark.parametrize("name", ["../../outside.plan", "/etc/passwd", "link/x.plan"])
def test_a_file_named_by_metadata_cannot_lie_outside_the_model_folder(tmp_path, name):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "link").symlink_to(tmp_path)
    (folder / "metadata.json").write_text(json.dumps({"channels": 3, "tensorrt": {"file": name}}))
    with pytest.raises(AstroTFError, match=r"metadata.json: TensorRT engine .* points outside the model folder"):
        load_model(folder, backend="tensorrt")
