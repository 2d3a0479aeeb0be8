"""Exponential moving average of a model's weights, kept beside the trained weights.

After every optimisation step each average moves towards its weight,
``a ← d·a + (1 − d)·w``, with the decay ramped up as ``d_t = min(d, (1 + t) / (10 + t))``
so that the first steps are not dominated by the initial weights. The averages are
checkpointed with the run; :meth:`WeightAverage.applied` swaps them into the model for
validation and saving, then puts the trained weights back.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


class WeightAverage(tf.Module):
    """Moving averages of ``model.trainable_variables``, one float32 variable each.

    Parameters
    ----------
    model : keras.Model
        The model being trained; the averages start at its current weights.
    decay : float
        Target decay ``d`` in (0, 1).
    """

    def __init__(self, model, decay: float):
        super().__init__(name="weight_average")
        if not 0 < decay < 1:
            msg = f"`decay` must be in (0, 1). Received: decay={decay!r}"
            raise ValueError(msg)
        self.decay = float(decay)
        # identical on every replica (the weights are), so the first replica's value is the value
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.averages = [tf.Variable(tf.cast(v, tf.float32), trainable=False, aggregation=first,
                                     name=f"average_{i}") for i, v in enumerate(model.trainable_variables)]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first, name="updates")

    def update(self, variables) -> None:
        """Move every average one step towards its variable (call after ``apply_gradients``)."""
        t = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for average, variable in zip(self.averages, variables):
            average.assign(decay * average + (1.0 - decay) * tf.cast(variable, tf.float32))
        self.updates.assign_add(1)

    @contextlib.contextmanager
    def applied(self, model):
        """Within the block, ``model`` holds the averaged weights; the trained ones come back after."""
        trained = [v.numpy() for v in model.trainable_variables]
        for variable, average in zip(model.trainable_variables, self.averages):
            variable.assign(tf.cast(average, variable.dtype))
        try:
            yield model
        finally:
            for variable, value in zip(model.trainable_variables, trained):
                variable.assign(value)
