"""Recipes and stage configs (astrotf.config): every shipped recipe validates, typos and bad values
are one-line errors, model arguments come from the model's constructor, and no TensorFlow is imported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from astrotf import config
from astrotf.errors import AstroTFError
from astrotf.models import registry

ROOT = Path(__file__).resolve().parent.parent


def test_importing_config_imports_neither_tensorflow_nor_keras():
    code = ("import sys, astrotf.config, astrotf.models.registry; "
            "print([m for m in ('tensorflow', 'keras') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    one_image = path.name.startswith(("self2self", "neighbor2neighbor"))
    if one_image:
        recipe = config.load_self2self_recipe(path)
        assert recipe.train.method == path.name.split("-")[0]
    elif path.name.startswith("pix2pix"):
        recipe = config.load_pix2pix_recipe(path)
        assert recipe.discriminator.receptive_field() <= recipe.data.tile
    else:
        recipe = config.load_recipe(path)
        assert recipe.model.name in registry.MODELS
    assert config.resolve_recipe_path(path.stem).resolve() == path.resolve()
    expected = {"name": recipe.model.name, **config.read_toml(path)["model"]}
    if one_image:
        expected.setdefault("scale_sigmas", 10.0)
    assert recipe.to_dict()["model"] == expected


def test_default_recipe_is_resunet_rgb():
    path = config.resolve_recipe_path(config.DEFAULT_RESUNET_RECIPE)
    assert path.is_file() and config.load_recipe(path).model.kwargs()["base_filters"] == 16


@pytest.mark.parametrize(
    "text,message",
    [
        ("[model]\nbase_filter = 3\n", "unknown argument(s) base_filter of model 'resunet'"),
        ("[model]\nname = 'resnet'\n", "must be one of ['nafnet', 'pix2pix', 'resunet', 'self2self']. Received: name='resnet'"),
        ("[model]\ndepth = '3'\n", "`depth` must be an integer"),
        ("[model]\ndepth = 9\n", "`depth` must be an integer in [1, 6]"),
        ("[model]\nhead_initializer = 3\n", "`head_initializer` must be of the type of its default"),
        ("[data]\nnoize = 'astropics'\n", "unknown option(s) noize"),
        ("[data.astropics]\nchroma_prob = 2\n", "chroma_prob"),
        ("[train]\nprecision = 'fp8'\n", "precision"),
        ("[train\n", "invalid TOML"),
    ],
)
def test_bad_recipe_is_a_one_line_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(AstroTFError) as err:
        config.load_recipe(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_model_arguments_are_any_registered_constructors(monkeypatch):
    """A model added to the registry is accepted with its own constructor arguments, config.py unchanged."""
    monkeypatch.setitem(registry.MODELS, "selftest", "astrotf.models.self2self:Self2Self")
    model = config.ModelConfig("selftest", {"dropout": 0.1, "negative_slope": 0.2})
    assert model.to_dict() == {"name": "selftest", "dropout": 0.1, "negative_slope": 0.2}
    with pytest.raises(ValueError, match="unknown argument"):
        config.ModelConfig("selftest", {"normalization": "none"})


def test_constructor_arguments_are_read_from_the_source_without_importing():
    args = registry.constructor_arguments("resunet")
    assert args["base_filters"] == 32 and args["head_initializer"] == "zeros"
    assert "dtype" not in args and "name" not in args


def test_resolved_model_spells_out_the_constructor_defaults():
    model = config.ModelConfig("resunet", {"base_filters": 16}).resolved()
    assert model.kwargs() == {"channels": 3, "depth": 3, "base_filters": 16, "activation": "relu",
                              "normalization": "none", "space_to_depth": 1, "head_initializer": "zeros",
                              "noise_map": False, "offset": 0.0, "scale": 1.0}


def test_recorded_recipes_of_shipped_models_still_load():
    """metadata.json of the shipped models holds the recipes they were trained with (old spelling)."""
    for folder in sorted((ROOT / "saved_models").iterdir()):
        recipe = json.loads((folder / "metadata.json").read_text())["recipe"]
        if recipe["model"].get("name") == "self2self":
            loaded = config.self2self_recipe_from_dict(recipe, folder.name)
            assert loaded.model.kwargs()["scale"] == recipe["model"]["scale"]
        else:
            loaded = config.recipe_from_dict(recipe, folder.name)
            assert loaded.model.kwargs()["base_filters"] == recipe["model"]["base_filters"]


def test_self2self_model_config_leaves_the_normalisation_to_the_trainer():
    model = config.Self2SelfModelConfig(arguments={"offset": None, "scale": None})
    assert model.to_dict() == {"name": "self2self", "offset": None, "scale": None, "scale_sigmas": 10.0}
    with pytest.raises(ValueError, match="scale"):
        config.Self2SelfModelConfig(arguments={"scale": -1.0})
    with pytest.raises(ValueError, match="one of self2self, resunet"):
        config.Self2SelfModelConfig(name="nafnet")


def test_override_changes_model_arguments_and_ignores_none():
    recipe = config.override(config.Recipe(), model__space_to_depth=2, train__epochs=None, data__tile=64)
    assert recipe.model.kwargs() == {"space_to_depth": 2} and recipe.data.tile == 64
    assert recipe.train == config.TrainConfig()
    with pytest.raises(AstroTFError, match="bad option value"):
        config.override(recipe, train__lr=5.0)


def test_auto_precision_is_float32_without_native_bfloat16(monkeypatch):
    monkeypatch.setattr(config.training, "_cpu_flags", lambda: set())
    assert config.resolve_precision("auto", has_gpu=False) == "float32"
    assert config.resolve_precision("auto", has_gpu=True) == "mixed_bfloat16"
    assert config.resolve_precision("mixed_float16", has_gpu=False) == "mixed_float16"


# --------------------------------------------------------------------------- stage configs


def test_data_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mode"):
        config.DataConfig(mode="pairs")
    with pytest.raises(ValueError, match="tile"):
        config.DataConfig(tile=4)


@pytest.mark.parametrize("field,value", [("beta", 1.5), ("gamma", -1), ("delta", -0.1),
                                         ("star_weight", 2), ("ssim_data_range", 0)])
def test_loss_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        config.LossConfig(**{field: value})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold_sigma": 0.0}, "threshold_sigma"),
        ({"dilation": -1}, "dilation"),
        ({"dilation": 1.5}, "dilation"),
        ({"blur_sigma": -1.0}, "blur_sigma"),
    ],
)
def test_star_mask_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        config.StarMaskConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gaussian_sigma": (0.1, 0.01)}, "gaussian_sigma"),
        ({"chroma_sigma": (-0.01, 0.01)}, "chroma_sigma"),
        ({"chroma_block": (0, 8)}, "chroma_block"),
        ({"chroma_block": (4.5, 8)}, "chroma_block"),
        ({"banding_prob": 1.5}, "banding_prob"),
        ({"identity_prob": 0.6, "low_noise_prob": 0.6}, "identity_prob"),
    ],
)
def test_astropics_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        config.AstroPicsNoiseConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"exposure_ratio": (0.5, 2.0)}, "exposure_ratio"),
        ({"exposure_time": 0.0}, "exposure_time"),
        ({"dark_current": -1.0}, "dark_current"),
        ({"read_noise": -3.0}, "read_noise"),
        ({"gain": 0.0}, "gain"),
    ],
)
def test_physical_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        config.PhysicalNoiseConfig(**kwargs)


@pytest.mark.parametrize(
    "text,message",
    [
        ("[data]\ntile = 64\n", "[discriminator] n_layers = 3 judges 70 px patches, larger than the 64 px tile"),
        ("[discriminator]\nname = 'resunet'\n", "must be one of ['patchgan']"),
        ("[discriminator]\nchannels = 1\n", "[discriminator] channels = 1"),
        ("[model]\nname = 'self2self'\n", "single-input denoisers"),
        ("[model]\nname = 'resunet'\nnoise_map = true\n", "noise_map = true"),
        ("[gan]\nreconstruction = 'l2'\n", "`reconstruction` must be one of"),
        ("[gan]\nl1_weight = 0\n", "`l1_weight` must be > 0"),
    ],
)
def test_bad_pix2pix_recipe_is_a_one_line_error(tmp_path, text, message):
    path = tmp_path / "gan.toml"
    path.write_text(text)
    with pytest.raises(AstroTFError) as err:
        config.load_pix2pix_recipe(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_pix2pix_discriminator_takes_the_generator_channels_and_overrides_recheck_the_tile():
    recipe = config.pix2pix_recipe_from_dict({"model": {"channels": 1}, "data": {"channels": 1}})
    assert recipe.discriminator.kwargs()["channels"] == 1
    assert [config.gan.patch_receptive_field(n) for n in range(1, 7)] == [16, 34, 70, 142, 286, 574]
    with pytest.raises(AstroTFError, match="larger than the 32 px tile"):
        config.override(recipe, data__tile=32)


@pytest.mark.parametrize("tables, message", [
    ({"model": {"noise_map": True, "channels": 1}, "data": {"channels": 1}}, "noise_map = true and .data. noise = 'astropics'"),
    ({"model": {"channels": 1}, "data": {"channels": 1, "noise": "detector"}}, "noise_map = false and .data. noise = 'detector'"),
    ({"loss": {"kind": "science"}}, "needs .model. noise_map = true"),
    ({"loss": {"kind": "l2"}}, "kind"),
    ({"loss": {"kind": "science", "huber_delta": 0.0}}, "huber_delta"),
])
def test_noise_conditioned_settings_must_go_together(tables, message):
    with pytest.raises(AstroTFError, match=message):
        config.recipe_from_dict(tables)


def test_the_noise_conditioned_recipe_pairs_its_model_data_and_loss():
    recipe = config.load_recipe(config.resolve_recipe_path("resunet-linear"))
    assert recipe.model.kwargs()["noise_map"] and recipe.data.noise == "detector" and recipe.loss.kind == "science"
    with pytest.raises(AstroTFError, match="GAN trainer"):
        config.pix2pix_recipe_from_dict({"model": {"channels": 1}, "discriminator": {"channels": 1},
                                  "data": {"channels": 1, "noise": "detector"}})
