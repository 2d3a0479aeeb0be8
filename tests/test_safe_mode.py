"""Models load in Keras' safe mode (no Python code runs on load) unless --unsafe-model is passed."""

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from astrotf.backends import shipped_model_dirs
from astrotf.cli import main
from astrotf.errors import AstroTFError
from astrotf.models import registry


@pytest.fixture
def lambda_model(tmp_path, monkeypatch):
    """A .keras file whose Lambda layer holds Python bytecode; the --unsafe-model switch reset after."""
    import keras

    monkeypatch.setattr(registry, "_UNSAFE", [])
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Lambda(lambda x: x * 0.5)])
    model.save(tmp_path / "lambda.keras")
    return tmp_path / "lambda.keras"


def test_every_shipped_model_loads_in_safe_mode():
    files = sorted(p / "model.keras" for d in shipped_model_dirs() for p in d.iterdir() if (p / "model.keras").is_file())
    assert files
    for path in files:
        registry.load_model(path, dtype="float32", safe_mode=True)


def test_python_code_in_a_model_is_refused_unless_unsafe_is_asked_for(lambda_model):
    with pytest.raises(AstroTFError, match=r"lambda.keras: holds Python code .* pass --unsafe-model only if you trust"):
        registry.load_model(lambda_model)
    assert registry.load_model(lambda_model, safe_mode=False) is not None


def test_the_unsafe_model_option_of_infer(lambda_model, tmp_path):
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.full((32, 32, 3), 200, np.uint8), photometric="rgb")
    args = ["infer", str(src), "--model", str(lambda_model), "--tile", "32", "-q"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code != 0 and "holds Python code" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "a_denoised.tif").exists()
    allowed = CliRunner().invoke(main, [*args, "--unsafe-model"])
    assert allowed.exit_code == 0, allowed.output
    assert tifffile.imread(tmp_path / "a_denoised.tif").max() == 100


def test_a_model_of_an_architecture_this_version_does_not_know_is_refused_naming_it(tmp_path):
    import json
    import zipfile

    from astrotf.models.resunet import ResUNet

    ResUNet(channels=3, depth=2, base_filters=4).save(tmp_path / "known.keras")
    with zipfile.ZipFile(tmp_path / "known.keras") as source, zipfile.ZipFile(tmp_path / "newer.keras", "w") as out:
        for item in source.infolist():  # the same file, as a newer astrotf's "FancyNet" would save it
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config.update(class_name="FancyNet", registered_name="astrotf>FancyNet")
                data = json.dumps(config).encode()
            out.writestr(item, data)
    with pytest.raises(AstroTFError, match=r"newer.keras: its architecture FancyNet is not known to astrotf .* "
                                           r"\(known: NAFNet, .*ResUNet, Self2Self\); a newer astrotf may read it$"):
        registry.load_model(tmp_path / "newer.keras")
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.full((32, 32, 3), 200, np.uint8), photometric="rgb")
    result = CliRunner().invoke(main, ["infer", str(src), "--model", str(tmp_path / "newer.keras"), "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "architecture FancyNet" in result.output
    assert registry.load_model(tmp_path / "known.keras") is not None
