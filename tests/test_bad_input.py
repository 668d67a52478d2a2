"""The bad-input catalogue: each mistake is one line naming the culprit, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import BAD_INPUTS
from helpers import compose_train, cpu_overrides

import sparsecse.export.model_io
from sparsecse.cli import REPO_ROOT
from train import train


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(sparsecse.export.model_io.AutoModel, "from_pretrained", refuse)


def write_bad_corpora(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "nli.csv").write_text("sent0,sent1,hard_neg\na,b,c\nd,e\n")


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_reported_before_compute(
    case, tmp_path, toy_senteval_dir, tiny_model_dir, no_model_loading
):
    from sparsecse.core.errors import ConfigError

    write_bad_corpora(tmp_path)
    overrides, message = BAD_INPUTS[case]
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    cfg = compose_train(cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir) + overrides)
    with pytest.raises(ConfigError, match=message) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_2(tmp_path, toy_senteval_dir):
    env = {**os.environ, "SPARSECSE_DATA_DIR": str(toy_senteval_dir), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "train.py", "data.batch_size=0", f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sparsecse-train: error: data.batch_size: must be greater than or equal to 1, got 0"
    ]


# command line -> the one line that names the mistyped key (Hydra's own message has five lines and
# exit status 1, and it came before ours)
COMMAND_LINE_TYPOS = {
    "nested key": (
        ["data.batch_sise=4"],
        "data.batch_sise: unknown key for sparsecse.training.data.ContrastiveDataModule; "
        "did you mean 'batch_size'?",
    ),  # fmt: skip
    "top-level key": (["sede=1"], "sede: unknown key; did you mean 'seed'?"),
    "missing parent": (["dta.batch_size=3"], "dta: unknown key; did you mean 'data'?"),
    "swept key": (
        ["-m", "seed=1,2", "pruning.head_sparsiy=0.1,0.3"],
        "pruning.head_sparsiy: unknown key for callbacks.ScheduledPruning; did you mean 'head_sparsity'?",
    ),  # fmt: skip
    "under a group without keys": (
        ["pruning=none", "pruning.head_sparsity=0.3"],
        "pruning.head_sparsity: unknown key; it takes none (+pruning.head_sparsity=... "
        "adds a key the config does not list)",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", COMMAND_LINE_TYPOS)
def test_command_line_typos_get_one_line_naming_the_key(case):
    from sparsecse.cli import CONFIG_DIR, check_overrides
    from sparsecse.core.errors import ConfigError

    args, message = COMMAND_LINE_TYPOS[case]
    with pytest.raises(ConfigError) as err:
        check_overrides(CONFIG_DIR, "train", args)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "args", [["data.batch_size=4", "hydra.run.dir=x"], ["+data.batch_sise=4"], ["--help"], ["--cfg", "job"],
             ["-m", "seed=1,2", "pruning.head_sparsity=0.1,0.3"], ["experiment=no_such_experiment"]],
)  # fmt: skip
def test_command_lines_without_typos_are_left_to_hydra_and_the_config_checks(args):
    from sparsecse.cli import CONFIG_DIR, check_overrides

    check_overrides(CONFIG_DIR, "train", args)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "line"),
    [
        (["train.py", "data.batch_sise=4"], "sparsecse-train: error: " + COMMAND_LINE_TYPOS["nested key"][1]),
        (["-m", "sparsecse.cli.evaluate", "taks=[sts]"],
         "sparsecse-eval: error: taks: unknown key; did you mean 'tasks'?"),
    ],
    ids=["sparsecse-train", "sparsecse-eval"],
)  # fmt: skip
def test_a_command_line_typo_exits_2_with_one_line(command, line, tmp_path, toy_senteval_dir):
    env = {**os.environ, "SPARSECSE_DATA_DIR": str(toy_senteval_dir), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, *command, f"hydra.run.dir={tmp_path}"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [line]
