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
        ServingClient("127.0.0.1:1", "tiny", protocol, timeout=5, backoff=0.01)


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


# ----------------------------------------------------------------------------- failures, over loopback only
class _Stub:
    """A REST server on 127.0.0.1 that fails its first ``failures`` requests with ``code`` (or, with
    ``hang``, never answers), then serves a 3-channel identity model."""

    def __init__(self, failures=0, code=503, hang=0.0):
        import json
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stub = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body):
                stub.requests += 1
                if hang:
                    time.sleep(hang)
                code_now = code if stub.requests <= failures else 200
                data = json.dumps(body if code_now == 200 else {"error": "loading"}).encode()
                self.send_response(code_now)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                spec = {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}] * 3 + [{"size": "3"}]}}
                self._answer({"metadata": {"signature_def": {"signature_def": {"serving_default": {
                    "inputs": {"image": spec}, "outputs": {"denoised": spec}}}}}})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._answer({"outputs": body["inputs"]["image"]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_server_answering_503_is_retried_with_backoff(caplog):
    from astrotf.backends.serving import ServingClient

    stub = _Stub(failures=2)
    try:
        client = ServingClient(stub.address, "tiny", "rest", retries=3, backoff=0.01)
        x = np.ones((1, 4, 4, 3), np.float32)
        np.testing.assert_array_equal(client.predict(x), x)
    finally:
        stub.stop()
    assert client.channels == 3 and stub.requests == 4
    assert "HTTP 503; retrying in 0.0 s (1 of 3)" in caplog.text and "(2 of 3)" in caplog.text


def test_a_server_that_never_answers_times_out_and_a_missing_model_is_not_retried():
    from astrotf.backends.serving import ServingClient

    stub = _Stub(hang=1.0)
    try:
        with pytest.raises(AstroTFError, match=r"down or not answering \(timed out\) after 2 tries"):
            ServingClient(stub.address, "tiny", "rest", timeout=0.2, retries=1, backoff=0.01)
    finally:
        stub.stop()
    stub = _Stub(failures=5, code=404)
    try:
        with pytest.raises(AstroTFError, match="answered 404"):
            ServingClient(stub.address, "tiny", "rest", retries=3, backoff=0.01)
        assert stub.requests == 1
    finally:
        stub.stop()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_a_server_that_is_down_says_so_after_the_retries(protocol):
    import socket

    from astrotf.backends.serving import ServingClient

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AstroTFError, match=rf"127.0.0.1:{port}: TF Serving is down or not answering .* after 3 tries; "
                                           rf"is tensorflow_model_server running on this {protocol} port\?"):
        ServingClient(f"127.0.0.1:{port}", "tiny", protocol, timeout=5, retries=2, backoff=0.01)
