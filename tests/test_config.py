"""The config module: nested sub-configs behind flat flag names (config.json, flags.txt,
replace), one absl flag per leaf field, enum flags for the choice flags."""

from __future__ import annotations

import dataclasses
import json

import pytest
from absl import flags

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.config import ExperimentConfig
from tests.conftest import run_module

# one changed value in every group, of every kind (str, enum, int, float, bool, int/float/str
# lists), valid together
NON_DEFAULT = dict(
    data_dir="/data/nyuv2", dataset="nyuv2", tasks=("semseg", "depth"), num_classes=5,
    height=64, width=96, data_seed=3, augment=True, eval_batch_size=4,
    width_multiplier=0.5, student_channels=32, student_levels=(5, 4), adaptation="bottleneck",
    method="sd_mtcnn", distill="eq6", full=True, hint_levels=(4, 5), teaching_tasks=("depth",),
    hint_source="deepest", hint_reduction="sum", two_way=True, alpha=0.4,
    optimizer="sgd", task_weights=(1.0, 0.5), learning_rate=1e-3, epochs=3, adam_epsilon=1e-3,
    kernel_initializer="glorot_normal", taskonomy_label_units="converted",
    model_dir="/runs/x", seed=7, deterministic=True, verbose=2, distribution="mirrored")

ENUMS = {"dataset": config_lib.DATASETS, "distill": config_lib.DISTILLS,
         "backbone": config_lib.BACKBONES, "decoder": config_lib.DECODERS,
         "distribution": config_lib.DISTRIBUTIONS, "adaptation": config_lib.ADAPTATIONS,
         "optimizer": config_lib.OPTIMIZERS, "hint_reduction": config_lib.HINT_REDUCTIONS,
         "hint_source": config_lib.HINT_SOURCES,
         "kernel_initializer": config_lib.KERNEL_INITIALIZERS,
         "taskonomy_label_units": config_lib.TASKONOMY_LABEL_UNITS}


def _non_default() -> ExperimentConfig:
  cfg = ExperimentConfig.from_flat(**NON_DEFAULT).validate()
  default = ExperimentConfig()
  assert all(cfg.flag_value(k) != default.flag_value(k) for k in NON_DEFAULT)
  return cfg


def _flag_values() -> flags.FlagValues:
  values = flags.FlagValues()
  config_lib.define_flags(values)
  return values


def test_fields_are_grouped_and_read_nested():
  cfg = _non_default()
  assert [f.name for f in dataclasses.fields(ExperimentConfig)] == [
      "data", "model", "method", "optim", "run"]
  assert (cfg.data.height, cfg.model.adaptation, cfg.method.name, cfg.optim.optimizer,
          cfg.run.seed) == (64, "bottleneck", "sd_mtcnn", "sgd", 7)
  assert config_lib.FLAG_FIELDS["method"] == ("method", "name")
  assert cfg.flag_value("method") == "sd_mtcnn" and cfg.flag_value("height") == 64
  assert cfg.method.resolved_hint_levels == (4, 5) and cfg.resolved_student_levels == (5, 4)
  assert cfg.resolved_teaching_tasks == ("depth",) and cfg.task_weight("depth") == 0.5


def test_flat_json_round_trip_of_a_non_default_config():
  cfg = _non_default()
  raw = cfg.to_json()
  assert set(raw) == set(config_lib.FLAG_FIELDS)  # flat: flag names only, no groups
  assert not any(isinstance(v, dict) for v in raw.values())
  assert raw["method"] == "sd_mtcnn" and raw["tasks"] == ["semseg", "depth"]
  assert ExperimentConfig.from_json(json.loads(json.dumps(raw))) == cfg


def test_flags_text_round_trip(tmp_path):
  cfg = _non_default()
  path = tmp_path / "flags.txt"
  path.write_text(config_lib.to_flags_text(cfg))
  lines = path.read_text().splitlines()
  assert len(lines) == len(config_lib.FLAG_FIELDS)
  assert "--method=sd_mtcnn" in lines and "--full" in lines and "--tasks=semseg,depth" in lines
  assert config_lib.parse_flagfile(str(path)) == cfg


def test_an_old_config_json_keeps_defaults_for_missing_flags_and_rejects_unknown_ones():
  cfg = ExperimentConfig.from_json({"height": 64, "method": "sd_vanilla", "distill": "eq5"})
  # (the flags whose paper-faithful default changed behaviour keep the value the run had:
  # config.values_before_flags, tests/test_fidelity.py)
  assert cfg == ExperimentConfig.from_flat(height=64, method="sd_vanilla", distill="eq5",
                                           adam_epsilon=1e-7, kernel_initializer="glorot_normal")
  with pytest.raises(ValueError, match="unknown field.*no_such_flag"):
    ExperimentConfig.from_json({"height": 64, "no_such_flag": 1})


def test_every_leaf_field_is_exactly_one_flag_with_its_help():
  values = _flag_values()
  leaves = [(group.name, field) for group in dataclasses.fields(ExperimentConfig)
            for field in dataclasses.fields(group.default_factory)]
  assert len(leaves) == len(config_lib.FLAG_FIELDS)  # no two leaves share a flag name
  defined = {name for name in values if name != "dry_run"}
  assert defined == set(config_lib.FLAG_FIELDS)
  for group, field in leaves:
    name = field.metadata.get("flag", field.name)
    assert config_lib.FLAG_FIELDS[name] == (group, field.name)
    assert field.metadata["help"].strip(), name
    assert values[name].help.endswith(field.metadata["help"]), name  # enums: "<a|b>: " first
    assert values[name].default == (list(map(str, field.default))
                                    if isinstance(field.default, tuple) else field.default)
  assert config_lib.from_flags(_parsed(values)) == ExperimentConfig()


def _parsed(values: flags.FlagValues, *argv: str) -> flags.FlagValues:
  values(["prog", *argv])
  return values


def test_choice_flags_are_enums_but_method_and_tasks_are_not():
  values = _flag_values()
  for name, choices in ENUMS.items():
    assert isinstance(values[name], flags.EnumFlag), name
    assert tuple(values[name].parser.enum_values) == choices, name
  assert not isinstance(values["method"], flags.EnumFlag)  # methods.register may add methods
  assert not isinstance(values["tasks"], flags.EnumFlag)


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_a_bad_enum_value_is_an_error_naming_the_flag(name, tmp_path):
  with pytest.raises(flags.IllegalFlagValueError, match=f"flag --{name}=nope: value should be "
                                                        "one of <"):
    _parsed(_flag_values(), f"--{name}=nope")
  flagfile = tmp_path / "bad.flags"
  flagfile.write_text(f"--{name}=nope\n")
  with pytest.raises(ValueError, match=f"bad.flags: flag --{name}=nope: value should be one of"):
    config_lib.parse_flagfile(str(flagfile))
  # a config built in code (no flags) is checked by validate, one line naming the flag
  with pytest.raises(ValueError, match=f"^--{name}: expected one of .*got 'nope'$"):
    ExperimentConfig.from_flat(**{name: "nope"}).validate()


def test_a_bad_enum_value_on_the_command_line_is_one_error_line():
  proc = run_module("sdmtcnn_tf.train", "--backbone=resnet", check=False)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
  assert len(lines) == 1, proc.stderr[-2000:]
  assert "--backbone=resnet" in lines[0] and "<segnet|unet>" in lines[0], lines[0]


def test_replace_routes_flat_names_and_validates():
  cfg = ExperimentConfig().replace(height=64, method="sd_mtcnn", distill="eq5", seed=3)
  assert (cfg.data.height, cfg.method.name, cfg.method.distill, cfg.run.seed) == (
      64, "sd_mtcnn", "eq5", 3)
  assert cfg.model == ExperimentConfig().model  # untouched groups stay as they were
  with pytest.raises(ValueError, match="--height"):
    cfg.replace(height=30)


@pytest.mark.parametrize("build", [lambda **kw: ExperimentConfig().replace(**kw),
                                   lambda **kw: ExperimentConfig.from_flat(**kw)])
def test_an_unknown_name_is_a_value_error_naming_it(build):
  with pytest.raises(ValueError, match="no_such_flag"):
    build(height=64, no_such_flag=1)
  with pytest.raises(ValueError, match="'name'"):  # field names are not flag names
    build(name="sd_mtcnn")
  with pytest.raises(ValueError, match="unknown config field 'bogus'"):
    ExperimentConfig().flag_value("bogus")
