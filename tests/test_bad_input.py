"""The bad-input catalogue: each mistake is one line naming the culprit, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compose_train, cpu_overrides

import sparsecse.encoder
from sparsecse.cli import REPO_ROOT
from train import train


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(sparsecse.encoder.AutoModel, "from_pretrained", refuse)


def write_bad_corpora(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "nli.csv").write_text("sent0,sent1,hard_neg\na,b,c\nd,e\n")


# case -> (overrides, with {tmp} for the test's folder; the expected one-line message)
BAD_INPUTS = {
    "unknown stop signal": (
        ["callbacks.last_checkpoint.signals=[SIGHUP]"],
        "^callbacks.last_checkpoint.signals.0.: unknown signal 'SIGHUP'; expected one of SIGUSR1",
    ),
    "unknown key": (
        ["+data.batch_sise=4"],
        r"^data.batch_sise: unknown key for \S+ContrastiveDataModule; did you mean 'batch_size'\?$",
    ),
    "unknown top-level key": (["+sede=1"], r"^sede: unknown key; did you mean 'seed'\?$"),
    "wrong type": (
        ["trainer.max_epochs=1.5"],
        r"^trainer.max_epochs: expected an integer, got 1.5 \(float\)$",
    ),
    "out of range": (["model.temperature=0"], r"^model.temperature: must be a number > 0, got 0$"),
    "unknown transfer preset": (
        ["evaluate.transfer_preset=slow"],
        "^evaluate.transfer_preset: unknown preset 'slow'",
    ),
    "missing data dir": (["data_dir={tmp}/nowhere"], "^data_dir: no such directory"),
    "senteval files missing": (
        ["data_dir={tmp}"],
        r"^data_dir: \S+ lacks 50 files needed by tasks sts12, sts13",
    ),
    "unknown bad-line policy": (["data.on_bad_line=warn"], "data.on_bad_line: expected one of fail, skip"),
    "zero line length": (["data.max_line_length=0"], "data.max_line_length: must be a positive integer"),
    "missing corpus": (["data.train_file={tmp}/none.txt"], "data.train_file: no such file"),
    "empty corpus": (["data.train_file={tmp}/empty.txt"], "data.train_file: .*empty.txt has no sentences"),
    "malformed csv": (["data.train_file={tmp}/nli.csv"], r"data.train_file: .*nli.csv:3: expected 3"),
    "unknown pooler": (["model.encoder.pooler=mean"], "model.encoder.pooler: unknown pooler 'mean'"),
    "unknown model": (
        ["model.encoder.name_or_path={tmp}/no-model"],
        "model.encoder.name_or_path: cannot load",
    ),
    "zero batch size": (["data.batch_size=0"], "data.batch_size: must be a positive integer, got 0"),
    "negative batch size": (["data.batch_size=-4"], "data.batch_size: must be a positive integer"),
    "unknown task": (["evaluate.tasks=[sts99]"], "evaluate.tasks: unknown task 'sts99'"),
    "sparsity of 1": (
        ["pruning.head_sparsity=1.0"],
        r"pruning.head_sparsity: must be a fraction in \[0, 1\)",
    ),
    "negative sparsity": (["pruning.ffn_sparsity=-0.2"], "pruning.ffn_sparsity: must be a fraction"),
    "decreasing targets": (
        ["pruning.schedule=[{step:10,head_sparsity:0.5},{step:20,head_sparsity:0.25}]"],
        r"pruning.schedule\[1\].head_sparsity: decreases \(0.5 -> 0.25\)",
    ),
    "event after the last epoch": (
        ["pruning.schedule=[{epoch:2}]", "trainer.max_steps=-1", "trainer.max_epochs=1"],
        r"pruning.schedule\[0\].epoch: 2 is after the last epoch of training \(1\)",
    ),
    "event after the last step": (
        ["pruning.schedule=[{step:500}]"],
        r"pruning.schedule\[0\].step: 500 is after",
    ),
    "too many heads kept": (["pruning.min_heads_per_layer=5"], "pruning.min_heads_per_layer: 5 is more than"),
    "unreachable head sparsity": (
        ["pruning.head_sparsity=0.9"],
        "pruning.head_sparsity: 0.9 is out of reach",
    ),
    "unknown score mode": (["pruning.score=taylor"], "pruning.score: unknown score mode 'taylor'"),
    "unknown granularity": (
        ["pruning.granularity=blocks"],
        "pruning.granularity: unknown granularity 'blocks'",
    ),
    "target of the other granularity": (
        ["pruning.weight_sparsity=0.5"],
        "pruning.weight_sparsity: applies to unstructured pruning, not to granularity=structured",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_reported_before_compute(
    case, tmp_path, toy_senteval_dir, tiny_model_dir, no_model_loading
):
    from sparsecse.errors import ConfigError

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
        "sparsecse-train: error: data.batch_size: must be a positive integer, got 0"
    ]


# command line -> the one line that names the mistyped key (Hydra's own message has five lines and
# exit status 1, and it came before ours)
COMMAND_LINE_TYPOS = {
    "nested key": (
        ["data.batch_sise=4"],
        "data.batch_sise: unknown key for sparsecse.data.ContrastiveDataModule; did you mean 'batch_size'?",
    ),  # fmt: skip
    "top-level key": (["sede=1"], "sede: unknown key; did you mean 'seed'?"),
    "missing parent": (["dta.batch_size=3"], "dta: unknown key; did you mean 'data'?"),
    "swept key": (
        ["-m", "seed=1,2", "pruning.head_sparsiy=0.1,0.3"],
        "pruning.head_sparsiy: unknown key for callbacks.StructuredPruning; did you mean 'head_sparsity'?",
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
    from sparsecse.errors import ConfigError

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
