"""Checks before any model loads: missing SentEval files listed at once; the data module's switches."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import hashed_bag_of_words
from omegaconf import OmegaConf

from sparsecse.core.errors import ConfigError
from sparsecse.data.download import SENTEVAL_FILES
from sparsecse.evaluation import ALL_TASKS, check_senteval_files, missing_senteval_files
from sparsecse.evaluation.analysis import stsb_alignment_uniformity
from sparsecse.evaluation.files import SNLI_FILES, STSB_DEV, TASK_FILES
from sparsecse.evaluation.sts import STS_TASKS, read_sts_task
from sparsecse.evaluation.transfer import read_task
from sparsecse.training.data import ContrastiveDataModule

REPO_ROOT = Path(__file__).resolve().parents[1]
HINT = "(fetch it with `sparsecse-data download --data-dir {}`, or set SPARSECSE_DATA_DIR or data_dir)"


def link(data_dir: Path, to: Path, files) -> Path:
    """Symlinks in `to` to these files of `data_dir` (nothing copied)."""
    for name in files:
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        (to / name).symlink_to(data_dir / name)
    return to


def test_every_listed_file_exists_in_the_real_data_dir(real_senteval_dir):
    assert missing_senteval_files(real_senteval_dir, ALL_TASKS) == []
    assert set(TASK_FILES) == set(ALL_TASKS)


def test_the_toy_folder_has_every_file_the_library_lists(toy_senteval_dir):
    listed = (
        {f for files in TASK_FILES.values() for f in files} | set(SENTEVAL_FILES) | {STSB_DEV, *SNLI_FILES}
    )
    assert sorted(f for f in listed if not (toy_senteval_dir / f).is_file()) == []


def as_plain(data):
    """A reader's output as lists, dicts and numbers, to compare with ==."""
    if isinstance(data, tuple | list):
        return [as_plain(d) for d in data]
    if dataclasses.is_dataclass(data):
        return {k: as_plain(v) for k, v in vars(data).items()}
    return data.tolist() if isinstance(data, np.ndarray) else data


def read(task: str, data_dir: Path):
    if task in STS_TASKS:
        return read_sts_task(data_dir, task)
    if task == "alignment_uniformity":
        return stsb_alignment_uniformity(hashed_bag_of_words, data_dir)
    return read_task(data_dir, task)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_the_listed_files_are_all_a_task_reads(task, toy_senteval_dir, tmp_path):
    fake = link(toy_senteval_dir, tmp_path, TASK_FILES[task])
    assert as_plain(read(task, fake)) == as_plain(read(task, toy_senteval_dir)), "the same data from the list"


def test_missing_files_are_listed_at_once(tmp_path):
    (tmp_path / "SICK").mkdir()
    (tmp_path / "SICK" / "SICK_test_annotated.txt").touch()
    assert missing_senteval_files(tmp_path, ["stsb", "sickr", "mr", "alignment_uniformity"]) == [
        "STS/STSBenchmark/sts-test.csv",
        "MR/rt-polarity.pos",
        "MR/rt-polarity.neg",
    ]
    expected = (
        f"data_dir: {tmp_path} lacks 3 files needed by tasks stsb, mr, alignment_uniformity: "
        f"STS/STSBenchmark/sts-test.csv, MR/rt-polarity.pos, MR/rt-polarity.neg {HINT.format(tmp_path)}"
    )
    with pytest.raises(ConfigError) as err:
        check_senteval_files(tmp_path, ["stsb", "sickr", "mr", "alignment_uniformity"])
    assert str(err.value) == expected
    check_senteval_files(tmp_path, ["sickr"])


def test_long_lists_are_cut_after_eight(tmp_path):
    with pytest.raises(ConfigError, match=r"lacks 10 files needed by task sts12: STS/STS12-en-test/") as err:
        check_senteval_files(tmp_path, ["sts12"])
    assert str(err.value).endswith(f"STS.gs.surprise.OnWN.txt, and 2 more {HINT.format(tmp_path)}")
    assert str(err.value).count("STS/STS12-en-test/") == 8
    assert len(missing_senteval_files(tmp_path, ["transfer"])) == 15  # task sets expand


def test_unknown_task_and_missing_dir(tmp_path):
    with pytest.raises(ConfigError, match=r"^tasks: unknown task 'sts99'"):
        missing_senteval_files(tmp_path, ["sts99"])
    with pytest.raises(ConfigError, match=rf"^data_dir: no such directory {tmp_path}/nowhere "):
        check_senteval_files(tmp_path / "nowhere", ["stsb"])


@pytest.mark.parametrize(
    "train_file, message",
    [
        (
            "snli_sentences",
            "lacks 7 files needed by validation (STS-B dev), train_file=snli_sentences: "
            "STS/STSBenchmark/sts-dev.csv, SNLI/s1.dev, SNLI/s2.dev, SNLI/labels.dev, SNLI/s1.test, "
            "SNLI/s2.test, SNLI/labels.test {HINT}",
        ),
        (
            "{tmp}/c.txt",
            "lacks 1 file needed by validation (STS-B dev): STS/STSBenchmark/sts-dev.csv {HINT}",
        ),
    ],
)
def test_data_module_lists_its_missing_files_first(tmp_path, train_file, message):
    with pytest.raises(ConfigError) as err:  # before the corpus is read or the tokenizer loads
        ContrastiveDataModule("no-such-model", str(tmp_path), train_file.replace("{tmp}", str(tmp_path)))
    assert str(err.value) == f"data_dir: {tmp_path} {message}".replace("{HINT}", HINT.format(tmp_path))


@pytest.mark.parametrize(
    "switch, message",
    [
        ({"on_bad_line": "warn"}, r"^on_bad_line: must be 'fail' or 'skip', got 'warn'$"),
        ({"max_line_length": 0}, r"^max_line_length: must be greater than or equal to 1, got 0$"),
        ({"max_line_length": "10k"}, r"^max_line_length: must be a valid integer, got '10k'$"),
    ],
)
def test_data_module_checks_its_switches_up_front(tmp_path, switch, message):
    with pytest.raises(ConfigError, match=message):
        ContrastiveDataModule("no-such-model", str(tmp_path / "nowhere"), **switch)


def test_data_module_skips_bad_lines_with_one_warning(tmp_path, toy_senteval_dir, tiny_model_dir, caplog):
    fake = link(toy_senteval_dir, tmp_path / "senteval", [STSB_DEV])
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"one\n\xff\n\n" + b"x" * 30 + b"\ntwo\n")
    with pytest.raises(ConfigError, match=rf"^train_file: {corpus}:2: not valid UTF-8$"):
        ContrastiveDataModule(str(tiny_model_dir), str(fake), str(corpus))
    caplog.set_level(logging.INFO, logger="sparsecse.training.data")
    data = ContrastiveDataModule(
        str(tiny_model_dir), str(fake), str(corpus), on_bad_line="skip", max_line_length=20
    )
    assert len(data.train_set) == 2
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sparsecse.training.data"] == [
        ("WARNING", f"data.train_file: skipped 2 bad lines of {corpus} (first: {corpus}:2: not valid UTF-8)"),
        ("INFO", f"data.train_file: skipped 1 empty lines of {corpus}"),
    ]


def test_data_config_names_the_switches_with_their_defaults():
    config = OmegaConf.load(REPO_ROOT / "conf" / "data" / "snli_sentences.yaml")
    defaults = inspect.signature(ContrastiveDataModule).parameters
    for key in ("on_bad_line", "max_line_length"):
        assert config[key] == defaults[key].default
