from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import compose_eval, compose_train, cpu_overrides

from sparsecse.cli import REPO_ROOT
from sparsecse.cli import evaluate as eval_cli
from sparsecse.cli import prune as prune_cli
from sparsecse.cli.evaluate import evaluate
from sparsecse.core.errors import ConfigError
from sparsecse.evaluation.sts import evaluate_sts
from sparsecse.export.model_io import load_encoder
from train import train


def test_eval_writes_json_for_a_model_directory(tmp_path, toy_senteval_dir, tiny_model_dir, capsys):
    out = tmp_path / "r.json"
    cfg = compose_eval([f"model={tiny_model_dir}", "pooler=avg", "tasks=[stsb,sickr]",
                        f"output={out}", f"data_dir={toy_senteval_dir}"])  # fmt: skip
    results = evaluate(cfg)
    assert json.loads(out.read_text()) == results and set(results) == {"stsb", "sickr", "sts_avg"}
    encoder = load_encoder(str(tiny_model_dir), "avg")
    expected = evaluate_sts(encoder.encode, toy_senteval_dir, ["stsb", "sickr"])
    assert results == pytest.approx(expected, abs=1e-3), "the scores of that model on those tasks"
    assert "STS-B" in capsys.readouterr().out


def test_eval_compile_encodes_through_the_compiled_forward(monkeypatch, toy_senteval_dir, tiny_model_dir):
    from sparsecse.model.encoder import SentenceEncoder

    compiled = []
    real = SentenceEncoder.compile_for_inference

    def eager_compile(encoder, mode="reduce-overhead", backend="inductor"):
        compiled.append(mode)
        real(encoder, backend="eager")  # the wiring here; inductor is tests/test_encoder.py's slow test

    monkeypatch.setattr(SentenceEncoder, "compile_for_inference", eager_compile)
    settings = [f"model={tiny_model_dir}", "pooler=avg", "tasks=[stsb]", f"data_dir={toy_senteval_dir}"]
    plain = evaluate(compose_eval(settings))
    assert not compiled
    static = evaluate(compose_eval(settings + ["compile=true"]))
    assert compiled == ["reduce-overhead"]
    # Static padding moves embeddings by ~1e-7, which can swap near-tied cosines of the toy data's 36
    # pairs (0.18 Spearman points with transformers 5.25): compare with the same path taken by hand.
    encoder = load_encoder(str(tiny_model_dir), "avg")
    real(encoder, backend="eager")
    assert static == evaluate_sts(encoder.encode, toy_senteval_dir, ["stsb"])
    texts = ["a man plays a guitar .", "the cat sleeps", "two dogs run through a very green park today"]
    eager = load_encoder(str(tiny_model_dir), "avg")
    assert plain == evaluate_sts(eager.encode, toy_senteval_dir, ["stsb"])
    assert torch.allclose(encoder.encode(texts), eager.encode(texts), atol=1e-6), "padding changes nothing"


@pytest.mark.slow
def test_eval_accepts_a_project_checkpoint(tmp_path, toy_senteval_dir, tiny_model_dir):
    overrides = ["pruning=none", "trainer.max_steps=2", "trainer.val_check_interval=2", "data.batch_size=4",
                 "evaluate.before=false", "evaluate.tasks=[stsb]", "save_model=true"]  # fmt: skip
    cfg = compose_train(cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir) + overrides)
    trained = train(cfg)
    from_ckpt = load_encoder(trained["checkpoints"]["best"], "avg").eval()
    from_dir = load_encoder(str(tmp_path / "model"), "avg").eval()
    texts = ["a dog runs .", "the weather is nice today ."]
    torch.testing.assert_close(from_ckpt.encode(texts), from_dir.encode(texts))
    cfg = compose_eval(
        [f"model={trained['checkpoints']['best']}", "tasks=[stsb]", f"data_dir={toy_senteval_dir}"]
    )
    assert evaluate(cfg)["stsb"] == pytest.approx(trained["after"]["stsb"], abs=1e-6)


def test_eval_rejects_unknown_model_and_task(tmp_path, toy_senteval_dir):
    with pytest.raises(ConfigError, match="^model: cannot load model"):
        evaluate(compose_eval([f"model={tmp_path / 'none'}", f"data_dir={toy_senteval_dir}"]))
    with pytest.raises(ConfigError, match="^tasks: unknown task 'sst5'"):
        evaluate(compose_eval(["tasks=[sst5]", f"data_dir={toy_senteval_dir}"]))
    with pytest.raises(ConfigError, match="^model: no such checkpoint"):
        evaluate(compose_eval([f"model={tmp_path / 'x.ckpt'}", f"data_dir={toy_senteval_dir}"]))


def test_eval_lists_the_missing_senteval_files_before_loading_the_model(tmp_path):
    (tmp_path / "STS" / "STSBenchmark").mkdir(parents=True)
    (tmp_path / "STS" / "STSBenchmark" / "sts-test.csv").write_text("")
    message = r"^data_dir: \S+ lacks 1 file needed by task sickr: SICK/SICK_test_annotated.txt \(fetch it"
    with pytest.raises(ConfigError, match=message):  # a model that cannot load: not reached
        evaluate(compose_eval([f"model={tmp_path / 'none'}", "tasks=[stsb,sickr]", f"data_dir={tmp_path}"]))


@pytest.mark.slow
def test_sparsecse_eval_console_script_prints_reference(tmp_path, real_senteval_dir):
    out = tmp_path / "results.json"
    env = {**os.environ, "SPARSECSE_DATA_DIR": str(real_senteval_dir)}
    proc = subprocess.run(
        ["sparsecse-eval", "model=minilm", "pooler=avg", "tasks=[sts]", f"output={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "|  72.37 |  80.60 |  75.59 |  85.39 |  78.99 |  82.03 |  77.15 |   78.87" in proc.stdout
    assert round(json.loads(out.read_text())["sts_avg"], 2) == 78.87


@pytest.mark.slow
def test_train_py_fast_dev_run_from_the_command_line(tmp_path, toy_senteval_dir):
    env = {**os.environ, "SPARSECSE_DATA_DIR": str(toy_senteval_dir)}
    proc = subprocess.run(
        [sys.executable, "train.py", "debug=fast_dev_run", f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "results.json").is_file()


# the folder names the project writes: a run (override_dirname), a sweep's job, a study's point
PROJECT_FOLDERS = ["seed=1", "lr=0.1,seed=2", "sparsity=0.1,seed=1"]


@pytest.mark.parametrize("folder", PROJECT_FOLDERS)
def test_every_path_the_project_writes_is_accepted_as_written(
    folder, tmp_path, toy_senteval_dir, tiny_model_dir, monkeypatch
):
    """`sparsecse-eval model=<run>/...` and `sparsecse-prune model=... output_dir=...` with the path
    pasted unquoted, as the README shows them; Hydra's grammar alone rejects `=` in a value."""
    model = tmp_path / folder / "model"
    shutil.copytree(tiny_model_dir, model)
    out = tmp_path / folder / "eval.json"
    monkeypatch.setattr(sys, "argv", ["sparsecse-eval", f"model={model}", "pooler=avg", "tasks=[stsb]",
                                      f"output={out}", f"data_dir={toy_senteval_dir}"])  # fmt: skip
    eval_cli.main()
    assert set(json.loads(out.read_text())) == {"stsb", "sts_avg"}
    pruned = tmp_path / folder / "pruned=0.5"
    monkeypatch.setattr(sys, "argv", ["sparsecse-prune", f"model={model}", "pooler=avg", "tasks=[]",
                                      "pruning.head_sparsity=0.5", "pruning.num_batches=1", "batch_size=8",
                                      f"output_dir={pruned}", f"data_dir={toy_senteval_dir}"])  # fmt: skip
    prune_cli.main()
    assert (pruned / "results.json").is_file()
