"""Pieces of the ResUNet training loop (astrotf.train.resunet) on their own; the whole loop runs
end to end in test_train_cli.py."""

import numpy as np
import pytest

from astrotf.config import TrainConfig
from astrotf.train import resunet


def test_cosine_schedule_warms_up_from_a_tenth_then_decays_to_five_percent():
    tcfg = TrainConfig(epochs=10, steps_per_epoch=100, lr=1e-3, warmup_steps=50)
    schedule = resunet.learning_rate(tcfg)
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(schedule(50)) == pytest.approx(1e-3)
    assert float(schedule(1000)) == pytest.approx(5e-5)
    assert float(schedule(500)) < float(schedule(100))


def test_warmup_is_at_most_a_tenth_of_the_run():
    schedule = resunet.learning_rate(TrainConfig(epochs=1, steps_per_epoch=100, lr=1e-3, warmup_steps=200))
    assert float(schedule(10)) == pytest.approx(1e-3)


def test_constant_schedule_is_the_learning_rate():
    assert resunet.learning_rate(TrainConfig(lr=3e-4, schedule="constant")) == 3e-4


@pytest.mark.parametrize("precision,scaled", [("float32", False), ("mixed_bfloat16", False),
                                              ("mixed_float16", True)])
def test_optimizer_is_loss_scaled_only_in_float16(precision, scaled):
    import keras

    variables = [keras.Variable(np.zeros(3, np.float32))]
    optimizer = resunet.build_optimizer(TrainConfig(clip_norm=1.0), precision, variables)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == scaled
    assert optimizer.built


def test_history_row_averages_the_epoch_steps_and_keeps_validation():
    row = resunet.history_row(3, 12, {"loss": 2.0, "ssim": 1.0}, 4, {"loss": 0.4}, 1e-4)
    assert row == {"epoch": 3, "step": 12, "train_loss": 0.5, "train_ssim": 0.25, "val_loss": 0.4, "lr": 1e-4}
    assert list(row) == ["epoch", "step", "train_loss", "train_ssim", "val_loss", "lr"]  # the csv header order
    assert resunet.history_row(1, 0, {}, 0, {"loss": 1.0}, 1e-4)["val_loss"] == 1.0  # a resumed, finished epoch


def test_weight_average_follows_the_ramped_decay_and_swaps_weights_in_and_out():
    import keras

    from astrotf.train.ema import WeightAverage

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    start = [w.copy() for w in model.get_weights()]
    ema = WeightAverage(model, decay=0.9)
    expected = [w.astype(np.float64) for w in start]
    rng = np.random.default_rng(0)
    for t in range(30):
        model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in start])
        ema.update(model.trainable_variables)
        d = min(0.9, (1 + t) / (10 + t))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, model.get_weights())]
    trained = [w.copy() for w in model.get_weights()]
    with ema.applied(model):
        for got, want in zip(model.get_weights(), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(model.get_weights(), trained):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)
