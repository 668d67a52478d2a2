from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsecse.core.errors import ConfigError
from sparsecse.core.runs import differences, flatten


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


BEFORE_THE_MOVE = Path(__file__).parent / "data" / "run_config_before_the_move.json"


def test_a_run_folder_written_before_the_modules_moved_is_still_the_same_run(tmp_path):
    """The record of `python train.py debug=cpu_smoke output_dir=/runs/smoke data_dir=/data/senteval`
    as it was written before sparsecse's modules moved into subpackages: its `_target_`s name the old
    modules. Composed now, the same command is the same run: it resumes, and finished, it is reported."""
    from helpers import compose_train

    from sparsecse.cli import resolved
    from sparsecse.core.runs import check_run_folder

    before = json.loads(BEFORE_THE_MOVE.read_text())
    assert before["data"]["_target_"] == "sparsecse.data.ContrastiveDataModule"
    now = resolved(compose_train(["debug=cpu_smoke", "output_dir=/runs/smoke", "data_dir=/data/senteval"]))
    assert now["data"]["_target_"] == "sparsecse.training.data.ContrastiveDataModule"
    assert differences(before, now) == []
    (tmp_path / "run_config.json").write_text(json.dumps(before))
    (tmp_path / "results.json").write_text(json.dumps({"after": {"sts_avg": 80.0}}))
    assert check_run_folder(tmp_path, now, resume=True, last_checkpoint=None) == {"after": {"sts_avg": 80.0}}
    other = dict(now, data=dict(now["data"], _target_="sparsecse.training.data.Other"))
    assert differences(before, other) == [
        "data._target_: 'sparsecse.training.data.ContrastiveDataModule' -> 'sparsecse.training.data.Other'"
    ]


def test_names_before_and_after_the_move():
    from sparsecse.core.runs import named_before, named_now

    assert named_now("sparsecse.module.SimCSEModule") == "sparsecse.training.module.SimCSEModule"
    assert (
        named_now("sparsecse.data.ContrastiveDataModule") == "sparsecse.training.data.ContrastiveDataModule"
    )
    assert named_now("sparsecse.data.corpora.read") == "sparsecse.data.corpora.read", "a new name stays"
    assert named_now("torch.optim.AdamW") == "torch.optim.AdamW"
    text = "_target_: sparsecse.training.data.ContrastiveDataModule  # see sparsecse/pruning/removal.py"
    assert named_before(text) == "_target_: sparsecse.data.ContrastiveDataModule  # see sparsecse/removal.py"
    assert named_before("sparsecse.data.corpora") == "sparsecse.corpora"
    unmoved = "sparsecse.evaluation.sts and sparsecse.cli.prune"
    assert named_before(unmoved) == unmoved


def test_a_sweep_started_before_the_move_goes_on_after_it(tmp_path):
    """The sweep's first job recorded its config files' digests with the modules named as before; a
    job after the move finds the same digests for files the move only renamed, and not for a setting."""
    from sparsecse.cli.jobs import check_sweep_configs

    conf, sweep = tmp_path / "conf", tmp_path / "sweep"
    (conf / "data").mkdir(parents=True)
    data = conf / "data" / "snli.yaml"
    data.write_text("_target_: sparsecse.data.ContrastiveDataModule\nbatch_size: 64\n")
    check_sweep_configs(sweep, conf)
    data.write_text("_target_: sparsecse.training.data.ContrastiveDataModule\nbatch_size: 64\n")
    check_sweep_configs(sweep, conf)  # the move: no setting changed
    data.write_text("_target_: sparsecse.training.data.ContrastiveDataModule\nbatch_size: 32\n")
    with pytest.raises(ConfigError, match=r"changed since this sweep started \(data/snli.yaml\)"):
        check_sweep_configs(sweep, conf)


def test_a_run_folder_moved_elsewhere_is_the_same_run(tmp_path):
    """A finished run copied from scratch space to project storage and started again with the same
    overrides there is reported finished: paths inside the folder are compared from the folder."""
    from helpers import compose_train

    from sparsecse.cli import resolved
    from sparsecse.core.runs import check_run_folder, in_own_folder

    scratch, project = tmp_path / "scratch" / "run", tmp_path / "project" / "run"
    first = resolved(compose_train(["debug=cpu_smoke", f"output_dir={scratch}", "data_dir=/data"]))
    assert first["callbacks"]["model_checkpoint"]["dirpath"] == f"{scratch}/checkpoints"
    project.mkdir(parents=True)
    (project / "run_config.json").write_text(json.dumps(first))
    (project / "results.json").write_text(json.dumps({"steps": 20}))
    again = resolved(compose_train(["debug=cpu_smoke", f"output_dir={project}", "data_dir=/data"]))
    assert check_run_folder(project, again, resume=True, last_checkpoint=None) == {"steps": 20}
    assert in_own_folder(again)["trainer"]["default_root_dir"] == "<run folder>"
    other = resolved(compose_train(["debug=cpu_smoke", f"output_dir={project}", "data_dir=/data", "seed=7"]))
    with pytest.raises(ConfigError, match=r"holds a run started with another config \(data.seed: 42 -> 7; "):
        check_run_folder(project, other, resume=True, last_checkpoint=None)
