"""Keras' Adam and SGD with each variable's update as one fused TensorFlow kernel.

Keras 3 writes Adam's update as about 40 small TensorFlow ops per variable: in the training graph
of a 5-task tiny SegNet (392 trainable variables) that is 15,291 ops, more than the network's
forward and backward pass together, each traced in Python and dispatched at every step
(BUILD_NOTES.md, "Fused optimizer updates"). TensorFlow ships the same updates as one kernel per
variable, on CPU, GPU and under XLA:
  Adam (Keras' form, epsilon outside the bias-corrected root)  -> ResourceApplyAdam
  SGD with (Nesterov) momentum, Keras' form                      -> ResourceApplyKerasMomentum
The classes below are Keras' own (same variables, names, config and checkpoints, so runs
written with either load in the other); only the dense update of a TensorFlow variable goes to
the kernel. AMSGrad, sparse gradients (tf.IndexedSlices) and plain SGD keep Keras' update.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _handle(variable):
  """The resource handle of a model variable (a tf.Variable, or inside a tf.distribute update
  the replica's component) or of an optimizer slot (a Keras variable)."""
  return variable.value.handle if isinstance(variable, keras.Variable) else variable.handle


class Adam(keras.optimizers.Adam):
  """keras.optimizers.Adam; its dense update runs ResourceApplyAdam:
  m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)."""

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    index = self._get_variable_index(variable)
    step = tf.cast(self.iterations + 1, dtype)
    # tf.constant, not tf.cast: a cast of a Python float goes through float32
    beta_1, beta_2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=_handle(variable), m=_handle(self._momentums[index]),
        v=_handle(self._velocities[index]), beta1_power=tf.pow(beta_1, step),
        beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype), beta1=beta_1,
        beta2=beta_2, epsilon=tf.constant(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


class SGD(keras.optimizers.SGD):
  """keras.optimizers.SGD; with momentum its dense update runs ResourceApplyKerasMomentum:
  m = momentum m - lr g; w += m (Nesterov: w += momentum m - lr g)."""

  def update_step(self, gradient, variable, learning_rate):
    if self.momentum == 0 or isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    tf.raw_ops.ResourceApplyKerasMomentum(
        var=_handle(variable), accum=_handle(self.momentums[self._get_variable_index(variable)]),
        lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype),
        momentum=tf.constant(self.momentum, dtype), use_nesterov=self.nesterov)
