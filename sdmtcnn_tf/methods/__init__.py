"""Methods: one class per training method (see base.Method), and their registry.

    method = methods.get(cfg.method.name)
    method.validate(cfg); method.loss_terms(cfg)

vanilla (Baseline-1), sd_vanilla (Baseline-2, BYOT exits), traditional_kd (Baseline-3) and
sd_mtcnn (⋆ eq5, ⋆⋆ eq6, --full). A new method is a Method subclass passed to `register`.
"""

from sdmtcnn_tf.methods.base import Method
from sdmtcnn_tf.methods.sd_mtcnn import SDMTCNN
from sdmtcnn_tf.methods.sd_vanilla import SDVanilla
from sdmtcnn_tf.methods.traditional_kd import TraditionalKD
from sdmtcnn_tf.methods.vanilla import Vanilla

_METHODS: dict = {}


def register(cls: type) -> type:
  """Class decorator: adds a Method subclass under `cls.name`."""
  if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
    raise TypeError(f"register expects a Method subclass with a name, got {cls!r}")
  _METHODS[cls.name] = cls
  return cls


for _cls in (Vanilla, SDVanilla, TraditionalKD, SDMTCNN):
  register(_cls)


def names() -> tuple:
  return tuple(_METHODS)


def get(name: str) -> Method:
  """The Method registered as `name`; ValueError naming the known methods otherwise."""
  if name not in _METHODS:
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(_METHODS)}")
  return _METHODS[name]()
