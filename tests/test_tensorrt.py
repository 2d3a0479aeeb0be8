"""TensorRT path: the mixed-FP16 ONNX graph (runs anywhere, checked with ONNX Runtime), clear errors without
a GPU, and (marked gpu, skipped without CUDA + TensorRT) engine parity and `astrotf infer --backend tensorrt`."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from astrotf.cli import main
from astrotf.backends import shipped_model_dirs
from astrotf.backends.tensorrt import BODY_SCOPE, EngineProfile, cuda_available, mixed_fp16_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto element types


def shipped(name):
    return next(d / name for d in shipped_model_dirs() if (d / name / "model.onnx").is_file())


def frame(name, rng, shape):
    if name == "resunet-rgb":
        return np.clip(rng.normal(0.2, 0.05, shape + (3,)), 0, 1).astype(np.float32)
    # linear data: a 20000 e- sky would overflow nothing in FP32 but lose 16 e- steps in FP16
    return rng.poisson(20000.0, shape + (1,)).astype(np.float32)


@pytest.mark.parametrize("name", ["resunet-rgb", "resunet-mono"])
def test_fp16_graph_keeps_the_data_path_in_float32(name, tmp_path):
    converted = mixed_fp16_onnx(shipped(name) / "model.onnx", tmp_path / "fp16.onnx")
    graph = converted.graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [FLOAT]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [FLOAT]
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.output, *graph.input)}
    types.update({t.name: t.data_type for t in graph.initializer})
    body = [n for n in graph.node if n.op_type == "Conv" and BODY_SCOPE.search(n.name)]
    assert body and all(types.get(n.input[1]) == FLOAT16 for n in body)  # body weights in FP16
    # everything of the normalisation, the head, the global residual and the denormalisation in FP32
    outer = [n for n in graph.node if any(s in n.name for s in ("/normalize", "/head", "/residual", "/denormalize"))
             and n.op_type not in ("Cast", "Shape")]
    assert outer
    for node in outer:
        for tensor in (*node.input, *node.output):
            assert types.get(tensor, FLOAT) != FLOAT16, (node.name, tensor)


@pytest.mark.parametrize("name,tolerance", [("resunet-rgb", 2e-3), ("resunet-mono", 0.1)])
def test_fp16_graph_matches_float32_within_a_fraction_of_the_noise(name, tolerance, tmp_path):
    """ONNX Runtime runs the FP16 graph on the CPU: a stand-in for the engine's rounding."""
    mixed_fp16_onnx(shipped(name) / "model.onnx", tmp_path / "fp16.onnx")
    fp32 = ort.InferenceSession(str(shipped(name) / "model.onnx"), providers=["CPUExecutionProvider"])
    fp16 = ort.InferenceSession(str(tmp_path / "fp16.onnx"), providers=["CPUExecutionProvider"])
    x = frame(name, np.random.default_rng(0), (2, 96, 80))
    a = fp32.run(None, {"image": x})[0]
    b = fp16.run(None, {"image": x})[0]
    noise = x.std()
    rms = float(np.sqrt(np.mean((a - b) ** 2)))
    assert rms <= tolerance * noise, (rms, noise)
    # the sky level is untouched: no FP16 overflow or offset on linear data
    assert abs(float(np.median(b) - np.median(a))) <= 0.02 * noise


@pytest.mark.parametrize("kwargs", [dict(channels=3), dict(channels=1, normalization="fixed", offset=2.0, scale=60.0)])
def test_exported_graph_uses_only_operators_tensorrt_imports(kwargs, tmp_path):
    """ONNX operators without a TensorRT importer (onnx-tensorrt's support matrix) must not appear."""
    import keras

    from astrotf.export import export_onnx
    from astrotf.models.resunet import ResUNet

    keras.utils.set_random_seed(0)
    export_onnx(ResUNet(**kwargs, depth=2, base_filters=4, head_initializer="glorot_uniform"), tmp_path / "m.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert not ops & {"Compress", "ReverseSequence", "NonZero", "Unique", "Mod"}, ops


def test_profile_shapes_and_bad_profiles():
    assert EngineProfile(3).shapes() == ((1, 16, 16, 3), (8, 256, 256, 3), (16, 512, 512, 3))
    from astrotf.errors import AstroTFError

    with pytest.raises(AstroTFError, match="min_tile"):
        EngineProfile(1, min_tile=64, opt_tile=32)
    with pytest.raises(AstroTFError, match="opt_batch"):
        EngineProfile(1, opt_batch=32, max_batch=16)


@pytest.mark.skipif(cuda_available(), reason="checks the message shown where TensorRT or a GPU is missing")
def test_without_a_gpu_export_and_infer_say_what_is_missing(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(shipped("resunet-rgb")), "--out", str(tmp_path / "trt"),
                                  "--format", "tensorrt"])
    assert result.exit_code == 2
    assert "TensorRT" in result.output or "tensorrt" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "trt").exists()
    image = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(image), np.full((40, 40, 3), 80, np.uint8))
    result = runner.invoke(main, ["infer", str(image), "--backend", "tensorrt", "-q"])
    assert result.exit_code != 0 and "TensorRT engine" in result.output


def test_a_model_folder_is_re_exported_with_the_same_weights(tmp_path):
    result = CliRunner().invoke(main, ["export", str(shipped("resunet-rgb")), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--format" in result.output
    result = CliRunner().invoke(main, ["export", str(shipped("resunet-rgb")), "--out", str(tmp_path / "x"),
                                       "--format", "onnx"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "x" / "metadata.json").read_text())
    assert meta["re_exports"][-1]["formats"] == ["onnx"] and meta["training"]["steps"] > 0
    x = frame("resunet-rgb", np.random.default_rng(2), (2, 40, 52))  # odd sizes: the padding is exercised
    old = ort.InferenceSession(str(shipped("resunet-rgb") / "model.onnx"), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(str(tmp_path / "x" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(new.run(None, {"image": x})[0], old.run(None, {"image": x})[0], atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs an NVIDIA GPU with tensorrt and cuda-python")
@pytest.mark.parametrize("name,tolerance", [("resunet-rgb", 2e-3), ("resunet-mono", 0.1)])
def test_engine_matches_onnx_runtime_at_two_tile_sizes(name, tolerance, tmp_path):
    out = tmp_path / name
    result = CliRunner().invoke(main, ["export", str(shipped(name)), "--out", str(out), "--format", "tensorrt",
                                       "--trt-tile", "128", "--trt-max-batch", "8"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["tensorrt"]["profile"]["max_tile"] == 256 and (out / meta["tensorrt"]["file"]).is_file()
    from astrotf.backends import load_model

    engine = load_model(out, backend="tensorrt")
    reference = load_model(out, backend="onnxruntime")
    rng = np.random.default_rng(1)
    for shape in ((8, 128, 128), (3, 200, 176)):
        x = frame(name, rng, shape)
        a, b = reference.predict(x), engine.predict(x)
        assert b.shape == x.shape and np.sqrt(np.mean((a - b) ** 2)) <= tolerance * x.std()


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs an NVIDIA GPU with tensorrt and cuda-python")
def test_infer_cli_runs_the_engine(tmp_path):
    import cv2

    out = tmp_path / "trt"
    assert CliRunner().invoke(main, ["export", str(shipped("resunet-rgb")), "--out", str(out),
                                     "--format", "tensorrt"]).exit_code == 0
    image = tmp_path / "sky.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(image), np.clip(rng.normal(60, 12, (300, 310, 3)), 0, 255).astype(np.uint8))
    result = CliRunner().invoke(main, ["infer", str(image), "--model", str(out), "--backend", "tensorrt", "-q"])
    assert result.exit_code == 0, result.output
    denoised = cv2.imread(str(tmp_path / "sky_denoised.png"))
    assert denoised.shape == (300, 310, 3) and denoised.std() < cv2.imread(str(image)).std()
    shutil.rmtree(out)
