"""`python -m tests.float64_train <train flags>`: sdmtcnn_tf.train with Keras' floatx set to
float64 (the equivalence tests: in float32, synchronised BatchNorm's round-off swamps the
comparison, see tests/test_distillation.py::test_two_replicas_give_the_same_step_as_one)."""

import runpy

import keras

if __name__ == "__main__":
  keras.backend.set_floatx("float64")  # before anything reads the global dtype policy
  runpy.run_module("sdmtcnn_tf.train", run_name="__main__", alter_sys=True)
