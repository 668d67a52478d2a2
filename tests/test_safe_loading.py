"""Safe loading: checkpoints only through torch.load(weights_only=True), model weights only from
safetensors, and never a model's own code. Each crafted file would touch a marker if it ran."""

from __future__ import annotations

import json
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_eval, compose_train, cpu_overrides, write_checkpoint
from omegaconf import OmegaConf

from sparsecse.cli import REPO_ROOT
from sparsecse.cli.evaluate import evaluate
from sparsecse.core.errors import ConfigError
from sparsecse.export.model_io import load_encoder, save_sparse_encoder
from sparsecse.model.encoder import CHECKPOINT_KEY, SentenceEncoder
from sparsecse.model.loading import (
    PICKLE_SUFFIXES,
    load_backbone,
    load_checkpoint_file,
    load_config,
    load_tokenizer,
)
from sparsecse.pruning.removal import remove_units

REFUSED = r"is not a plain-tensor checkpoint and was refused \(torch\.load\(weights_only=True\)"
CUSTOM_CODE = "import pathlib\npathlib.Path({marker!r}).touch()\n"


class Payload:
    """Unpickling this touches `marker`: what a hostile checkpoint would do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def write_payload(path: Path, marker: Path, how: str) -> Path:
    data = {"state_dict": {"w": torch.zeros(2)}, "payload": Payload(marker)}
    if how == "pickle":
        path.write_bytes(pickle.dumps(data))
    else:
        torch.save(data, path, _use_new_zipfile_serialization=how == "torch.save")
    return path


def at(path: Path) -> str:
    """`path` as a regular expression."""
    return re.escape(str(path))


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_crafted_payload_runs_when_unpickled(tmp_path):
    """The control: without weights_only the payload does run."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("how", ["torch.save", "torch.save legacy", "pickle"])
def test_checkpoint_helper_refuses_code(tmp_path, how):
    marker = tmp_path / "ran"
    path = write_payload(tmp_path / "evil.ckpt", marker, how)
    with pytest.raises(ConfigError, match=rf"^ckpt_path: {at(path)} {REFUSED}") as err:
        load_checkpoint_file(path, "ckpt_path")
    one_line(err)
    assert not marker.exists()


def test_evaluate_refuses_code_in_a_checkpoint(tmp_path, toy_senteval_dir):
    marker = tmp_path / "ran"
    path = write_payload(tmp_path / "evil.ckpt", marker, "torch.save")
    with pytest.raises(ConfigError, match=rf"^model: {at(path)} {REFUSED}: Unsupported global"):
        evaluate(compose_eval([f"model={path}", f"data_dir={toy_senteval_dir}"]))
    assert not marker.exists()


@pytest.mark.slow
def test_eval_script_refuses_code_in_a_checkpoint(tmp_path, toy_senteval_dir):
    marker = tmp_path / "ran"
    path = write_payload(tmp_path / "evil.ckpt", marker, "torch.save")
    proc = subprocess.run(
        [sys.executable, "-m", "sparsecse.cli.evaluate", f"model={path}", f"data_dir={toy_senteval_dir}",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith(f"sparsecse-eval: error: model: {path} is not a")
    assert "was refused" in lines[-1] and not marker.exists()


def zip_truncated(path: Path) -> Path:
    torch.save({"w": torch.zeros(2)}, path)
    path.write_bytes(path.read_bytes()[:100])
    return path


# bad checkpoint -> (how to write it, the one-line message after "model: {path} ")
BAD_CHECKPOINTS = {
    "text file": (lambda p: p.write_text("hello"), r"is not a readable PyTorch checkpoint \(KeyError: 101\)"),
    "empty file": (lambda p: p.write_bytes(b""), r"is not a readable PyTorch checkpoint \(EOFError\)$"),
    "truncated zip": (
        zip_truncated,
        r"is not a readable PyTorch checkpoint \(RuntimeError: PytorchStreamReader failed reading zip "
        r"archive: failed finding central directory\)$",
    ),
    "a tensor": (lambda p: torch.save(torch.zeros(2), p), "holds a Tensor, not a checkpoint dict"),
    "no encoder entry": (
        lambda p: torch.save({"state_dict": {}}, p),
        f"is not a SparseCSE checkpoint \\(no '{CHECKPOINT_KEY}' entry\\)",
    ),
    "unsupported model": (
        lambda p: torch.save({"state_dict": {}, CHECKPOINT_KEY: {"config": {"model_type": "gpt2"}}}, p),
        "holds a 'gpt2' model",
    ),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_bad_checkpoints_are_one_line(tmp_path, case):
    write, message = BAD_CHECKPOINTS[case]
    path = tmp_path / "bad.ckpt"
    write(path)
    with pytest.raises(ConfigError, match=f"^model: {at(path)} {message}") as err:
        load_encoder(str(path), "avg")
    one_line(err)


def copy_model_dir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_pickle_weights_in_a_model_directory_are_refused(tmp_path, toy_senteval_dir, tiny_model_dir):
    marker = tmp_path / "ran"
    model = copy_model_dir(tiny_model_dir, tmp_path / "model")
    (model / "model.safetensors").unlink()
    write_payload(model / "pytorch_model.bin", marker, "torch.save")
    message = rf"^name_or_path: {at(model)} holds pickle weights \(pytorch_model.bin\); SparseCSE loads"
    message += " safetensors only - if you trust the file, convert it with"
    with pytest.raises(ConfigError, match=message) as err:
        load_encoder(str(model), pooler="avg")
    one_line(err)
    with pytest.raises(ConfigError, match=f"^model: {at(model)} holds pickle weights"):
        evaluate(compose_eval([f"model={model}", f"data_dir={toy_senteval_dir}"]))
    with pytest.raises(ConfigError, match=f"^name_or_path: model '{at(model)}' has no safetensors weights$"):
        load_backbone(str(model), load_config(str(tiny_model_dir)), False, "eager")  # past the check
    assert not marker.exists()


def test_config_naming_pickle_weights_is_refused(tmp_path, tiny_model_dir):
    model = copy_model_dir(tiny_model_dir, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    with pytest.raises(ConfigError, match="names non-safetensors weights 'adapter_model.bin'"):
        load_config(str(model))


def test_model_directory_without_weights(tmp_path, tiny_model_dir):
    model = copy_model_dir(tiny_model_dir, tmp_path / "model")
    (model / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=f"^name_or_path: {at(model)} has no model.safetensors$"):
        load_config(str(model))


def with_custom_code(model: Path, marker: Path, model_type: str) -> Path:
    """config.json points AutoConfig/AutoModel at custom_modeling.py, which touches `marker` on import."""
    (model / "custom_modeling.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    config = json.loads((model / "config.json").read_text())
    auto_map = {"AutoConfig": "custom_modeling.EvilConfig", "AutoModel": "custom_modeling.EvilModel"}
    (model / "config.json").write_text(json.dumps({**config, "model_type": model_type, "auto_map": auto_map}))
    return model


@pytest.mark.parametrize(
    ("model_type", "message"),
    [
        (
            "bert",
            r"\(custom_modeling.EvilModel in config.json auto_map\); delete auto_map to load it as a plain",
        ),
        ("evil", r"\(config.json auto_map\)$"),
    ],
    ids=["bert", "unknown type"],
)
def test_model_code_in_a_directory_is_never_run(tmp_path, tiny_model_dir, model_type, message):
    marker = tmp_path / "ran"
    model = with_custom_code(copy_model_dir(tiny_model_dir, tmp_path / "model"), marker, model_type)
    expected = f"^name_or_path: model '{at(model)}' needs its own Python code to load; SparseCSE never runs"
    with pytest.raises(ConfigError, match=f"{expected}.*{message}") as err:
        load_encoder(str(model), pooler="avg")
    one_line(err)
    assert not marker.exists() and not any(name.endswith("custom_modeling") for name in sys.modules)


def test_model_code_named_in_a_checkpoint_is_never_run(tmp_path, tiny_model_dir, make_encoder):
    """A checkpoint whose encoder config carries an auto_map loads with transformers' own BertModel."""
    marker = tmp_path / "ran"
    code_dir = with_custom_code(copy_model_dir(tiny_model_dir, tmp_path / "model"), marker, "bert")
    encoder = make_encoder("avg")
    config = encoder.describe()["config"]
    config.update(auto_map={"AutoModel": "custom_modeling.EvilModel"}, _name_or_path=str(code_dir))
    checkpoint = write_checkpoint(encoder, tmp_path / "run.ckpt", name_or_path="minilm", config=config)
    loaded = load_encoder(str(checkpoint), "avg")
    assert type(loaded.backbone).__module__.startswith("transformers.") and not marker.exists()
    torch.testing.assert_close(loaded.encode(["a dog runs ."]), encoder.encode(["a dog runs ."]))


def test_tokenizer_code_is_never_run(tmp_path, tiny_model_dir):
    """A tokenizer auto_map next to a known tokenizer class: the known class loads, the code does not run."""
    marker = tmp_path / "ran"
    model = copy_model_dir(tiny_model_dir, tmp_path / "model")
    (model / "custom_tokenizer.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["custom_tokenizer.EvilTokenizer", None]}
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    expected = load_tokenizer(str(tiny_model_dir))("a dog runs")["input_ids"]
    assert load_tokenizer(str(model))("a dog runs")["input_ids"] == expected == [101, 1037, 3899, 3216, 102]
    assert not marker.exists()


def sparse(encoder: SentenceEncoder) -> SentenceEncoder:
    layers = encoder.backbone.encoder.layer
    heads = [torch.tensor([1.0, 0.0, 1.0, 1.0]) for _ in layers]
    neurons = [torch.ones(layer.intermediate.dense.out_features) for layer in layers]
    remove_units(encoder.backbone, heads, neurons)
    return encoder


def test_export_is_safetensors_only_and_loads_without_its_code(tmp_path, make_encoder):
    encoder = sparse(make_encoder("cls"))
    out = save_sparse_encoder(encoder, tmp_path / "export")
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(PICKLE_SUFFIXES)]
    assert {p.suffix for p in files} <= {".json", ".txt", ".safetensors", ".py", ".md"}
    assert {p.relative_to(out).as_posix() for p in files if p.suffix == ".safetensors"} == {
        "model.safetensors",
        "2_Dense/model.safetensors",
    }
    marker = tmp_path / "ran"  # the shipped model code is for users without sparsecse; we never run it
    (out / "surgery.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    loaded = load_encoder(str(out), "cls")
    assert not marker.exists()
    assert loaded.backbone.config.model_type == "sparsecse_bert"
    torch.testing.assert_close(loaded.encode(["a dog runs ."]), encoder.encode(["a dog runs ."]))


def test_export_refuses_a_directory_with_pickles(tmp_path, make_encoder):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "pytorch_model.bin").write_bytes(b"")
    message = r"^output_dir: .*export holds files that are not an export of this project \(pytorch_model.bin"
    with pytest.raises(ConfigError, match=message):
        save_sparse_encoder(make_encoder("avg"), tmp_path / "export")
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["pytorch_model.bin"], "left as it was"


# the planted last.ckpt is refused by the checkpoint restore inside Trainer.fit: a fit, so slow
@pytest.mark.parametrize("where", ["ckpt_path", pytest.param("planted last.ckpt", marks=pytest.mark.slow)])
def test_training_refuses_code_in_a_resume_checkpoint(tmp_path, toy_senteval_dir, tiny_model_dir, where):
    """Given as `ckpt_path`, or left in the run folder where a restarted job looks for last.ckpt."""
    from sparsecse.core.runs import record_config
    from train import train

    marker = tmp_path / "ran"
    evil = write_payload(tmp_path / "evil.ckpt", marker, "torch.save")
    overrides = cpu_overrides(tmp_path / "run", toy_senteval_dir, tiny_model_dir) + ["evaluate.before=false"]
    if where == "ckpt_path":
        overrides.append(f"ckpt_path={evil}")
    else:
        (tmp_path / "run" / "checkpoints").mkdir(parents=True)
        shutil.copy(evil, tmp_path / "run" / "checkpoints" / "last.ckpt")
        # with the record of this very config, as the run it pretends to be would have left it
        record_config(tmp_path / "run", OmegaConf.to_container(compose_train(overrides), resolve=True))
    with pytest.raises(ConfigError, match=f"^ckpt_path: .*{REFUSED}") as err:
        train(compose_train(overrides))
    one_line(err)
    assert not marker.exists()


def test_training_refuses_to_resume_from_weights_only(tmp_path, toy_senteval_dir, tiny_model_dir):
    """best.ckpt keeps weights only: resuming from it would fail inside the fit with a KeyError."""
    from train import train

    weights = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "global_step": 4}, weights)
    overrides = cpu_overrides(tmp_path / "run", toy_senteval_dir, tiny_model_dir)
    with pytest.raises(ConfigError, match=rf"^ckpt_path: {weights} holds weights only, .*last\.ckpt$") as err:
        train(compose_train([*overrides, f"ckpt_path={weights}"]))
    one_line(err)
