"""TF Serving: the client against gRPC and REST test doubles that run the exported SavedModel, and
`saved_model_cli run`. Served inference must equal local inference of the same SavedModel."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from astrotf.cli import main
from astrotf.errors import AstroTFError
from astrotf.export import export_run
from tests.test_export import fake_run

pytest.importorskip("tensorflow_serving.apis")
pytest.importorskip("grpc")

from tests.serving_double import start_grpc, start_rest  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    run, model = fake_run(tmp, space_to_depth=2)
    return export_run(run, tmp / "models" / "tiny"), model


@pytest.fixture(scope="module", params=["grpc", "rest"])
def server(request, exported):
    out, _ = exported
    start = start_grpc if request.param == "grpc" else start_rest
    handle, address = start(out / "1", "tiny")
    yield request.param, address
    handle.stop(None) if request.param == "grpc" else handle.shutdown()


def test_client_reads_the_signature_and_predicts_like_keras(server, exported):
    from astrotf.backends.serving import ServingClient

    protocol, address = server
    _, model = exported
    client = ServingClient(address, "tiny", protocol)
    assert (client.input_name, client.output_name, client.channels) == ("image", "denoised", 3)
    x = np.random.default_rng(0).random((3, 40, 24, 3), dtype=np.float32)
    np.testing.assert_allclose(client.predict(x), model(x), atol=1e-5)


def test_served_infer_equals_local_infer(server, exported, tmp_path):
    protocol, address = server
    out, _ = exported
    src = tmp_path / "frame.tif"
    tifffile.imwrite(src, np.random.default_rng(1).random((70, 90, 3)).astype(np.float32) * 0.5 + 0.2,
                     photometric="rgb")
    common = ["infer", "-q", str(src), "--tile", "32", "--batch-size", "5"]
    # the served SavedModel computes in float32: so does the local run it is compared with
    local = CliRunner().invoke(main, [*common, "--model", str(out), "--precision", "float32",
                                      "-o", str(tmp_path / "local.tif")])
    served = CliRunner().invoke(main, [*common, "--model", "tiny", "--server", address, "--protocol", protocol,
                                       "-o", str(tmp_path / "served.tif")])
    assert local.exit_code == 0 and served.exit_code == 0, local.output + served.output
    np.testing.assert_allclose(tifffile.imread(tmp_path / "served.tif"), tifffile.imread(tmp_path / "local.tif"),
                               atol=1e-6)


def test_unknown_model_and_dead_server_are_one_line_errors(server):
    from astrotf.backends.serving import ServingClient

    protocol, address = server
    with pytest.raises(AstroTFError, match="tiny2|NOT_FOUND|404"):
        ServingClient(address, "tiny2", protocol)
    with pytest.raises(AstroTFError, match="127.0.0.1:1"):
        ServingClient("127.0.0.1:1", "tiny", protocol, timeout=5)


def test_bad_server_address_is_named():
    from astrotf.backends.serving import ServingClient

    with pytest.raises(AstroTFError, match="HOST:PORT"):
        ServingClient("localhost", "tiny")


def test_saved_model_cli_run_gives_the_keras_output(exported, tmp_path):
    out, model = exported
    cli = shutil.which("saved_model_cli") or str(Path(sys.executable).parent / "saved_model_cli")
    x = np.random.default_rng(2).random((2, 33, 47, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([cli, "run", "--dir", str(out / "1"), "--tag_set", "serve", "--signature_def",
                             "serving_default", "--inputs", f"image={tmp_path / 'x.npy'}",
                             "--outdir", str(tmp_path / "o")], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "o" / "denoised.npy"), model(x), atol=1e-5)
