from __future__ import annotations

import json

import pytest

from sparsecse.errors import ConfigError
from sparsecse.runs import differences, flatten


def test_differences_name_dotted_keys_and_leave_out_how_a_run_is_watched():
    old = {"model": {"lr": 3e-5, "pooler": "cls"}, "logger": {"wandb": {"offline": True}}, "resume": True,
           "data": {"num_workers": 1, "batch_size": 64}, "pruning": {"schedule": [{"step": 5}]}}  # fmt: skip
    new = {"model": {"lr": 1e-5, "pooler": "cls"}, "logger": {"csv": {}}, "resume": False, "seed": 1,
           "data": {"num_workers": 4, "batch_size": 64}, "pruning": {"schedule": [{"step": 6}]}}  # fmt: skip
    assert differences(old, new) == [
        "model.lr: 3e-05 -> 1e-05",
        "pruning.schedule: [{'step': 5}] -> [{'step': 6}]",
        "seed: '(absent)' -> 1",
    ]
    assert differences(old, old) == []


def test_an_option_added_off_leaves_an_earlier_run_the_same():
    """A run recorded before an option existed holds no key for it; the option at a default that turns
    it off (null, 0, false) computes what that run computed. At any other value it is a difference."""
    old = {"pruning": {"head_sparsity": 0.3}}
    for off in (None, 0, 0.0, False):
        assert differences(old, {"pruning": {"head_sparsity": 0.3, "target_speedup": off}}) == []
        assert differences({"pruning": {"head_sparsity": 0.3, "target_speedup": off}}, old) == []
    for on, shown in ((2.0, "2.0"), ("", "''"), ([], "[]"), (True, "True")):
        assert differences(old, {"pruning": {"head_sparsity": 0.3, "target_speedup": on}}) == [
            f"pruning.target_speedup: '(absent)' -> {shown}"
        ]


def test_flatten_keeps_lists_and_empty_nodes_as_values():
    assert flatten({"a": {"b": [1, 2], "c": {}}, "d": None}) == {"a.b": [1, 2], "a.c": {}, "d": None}


def test_a_sweep_refuses_a_job_whose_config_files_changed_after_the_sweep_started(tmp_path):
    """Hydra composes each job when it starts: an edited conf/ would silently change the later jobs."""
    from sparsecse.cli.jobs import CONF_DIGEST, check_sweep_configs

    conf, sweep = tmp_path / "conf", tmp_path / "sweep"
    (conf / "model").mkdir(parents=True)
    (conf / "train.yaml").write_text("seed: 1\n")
    (conf / "model" / "minilm.yaml").write_text("temperature: 0.05\n")
    check_sweep_configs(sweep, conf)  # the first job records the files
    assert set(json.loads((sweep / CONF_DIGEST).read_text())) == {"train.yaml", "model/minilm.yaml"}
    check_sweep_configs(sweep, conf)  # the next, unchanged
    (conf / "model" / "minilm.yaml").write_text("temperature: 0.1\n")
    (conf / "extra.yaml").write_text("x: 1\n")
    changed = r"^hydra.sweep.dir: \S+/conf changed since this sweep started \(extra.yaml, model/minilm.yaml\)"
    with pytest.raises(ConfigError, match=changed):
        check_sweep_configs(sweep, conf)
    (sweep / CONF_DIGEST).unlink()  # the way out the message names
    check_sweep_configs(sweep, conf)
