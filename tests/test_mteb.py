"""`sparsecse-eval tasks=[mteb:<Task>]`: MTEB tasks through the `mteb` package, tested offline on a
custom STS task whose data the test writes (MTEB's own tasks download theirs from the Hub)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import compose_eval
from scipy.stats import spearmanr

from sparsecse.core.errors import ConfigError
from sparsecse.evaluation import check_evaluation

PAIRS = [
    ("A man is playing a guitar.", "A man is playing a guitar.", 5.0),
    ("A man is playing a guitar.", "A person plays the guitar.", 4.2),
    ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.4),
    ("A woman is slicing an onion.", "A woman is slicing a tomato.", 2.8),
    ("The cat sits on the mat.", "A cat is sitting on a mat.", 4.6),
    ("The cat sits on the mat.", "The dog runs in the park.", 0.8),
    ("Kids are playing football outside.", "Children play soccer outside.", 3.9),
    ("Kids are playing football outside.", "The stock market fell today.", 0.0),
    ("A plane is taking off.", "An airplane is taking off.", 4.8),
    ("A plane is taking off.", "A man is eating pasta.", 0.2),
    ("Two dogs are running in the snow.", "Two dogs run through the snow.", 4.7),
    ("Two dogs are running in the snow.", "A bird is singing on a tree.", 0.4),
]


def test_mteb_tasks_without_the_package_are_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", None)  # as if the [mteb] extra were not installed
    with pytest.raises(
        ConfigError, match=r'^tasks: mteb: tasks need the mteb package: pip install -e ".\[mteb\]"$'
    ):
        check_evaluation(["stsb", "mteb:STS12"])


def test_an_unreachable_hub_is_one_line_naming_the_tasks(monkeypatch):
    from types import SimpleNamespace

    from sparsecse.evaluation import mteb_tasks

    def evaluate(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'mteb/sts12-sts' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "mteb", SimpleNamespace(evaluate=evaluate, get_task=lambda name: name))
    monkeypatch.setattr(mteb_tasks, "mteb_encoder", lambda *args: None)
    with pytest.raises(ConfigError) as err:
        mteb_tasks.evaluate_mteb(None, ["STS12"])
    assert str(err.value) == (
        "tasks: mteb:STS12: MTEB reads its datasets from the Hugging Face Hub, which cannot be reached here "
        "(Couldn't reach 'mteb/sts12-sts' on the Hub (LocalEntryNotFoundError)); run it once online, where "
        "the datasets cache keeps them, or evaluate the SentEval tasks"
    )


@pytest.mark.slow  # importing mteb takes seconds
def test_a_custom_mteb_task_runs_offline_through_sparsecse_eval(tmp_path, monkeypatch, toy_senteval_dir,
                                                                 tiny_model_dir):  # fmt: skip
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))  # mteb makes its cache folder on import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import Dataset, DatasetDict
    from mteb.abstasks import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    from sparsecse.cli.evaluate import evaluate
    from sparsecse.evaluation.mteb_tasks import register_task
    from sparsecse.export.model_io import load_encoder

    data = tmp_path / "toy-sts.jsonl"
    data.write_text(
        "".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in PAIRS)
    )

    @register_task
    class ToySTS(AbsTaskSTS):  # a custom task as MTEB documents them: metadata and load_data
        min_score, max_score = 0, 5
        metadata = TaskMetadata(
            name="ToySTS", description="Twelve sentence pairs the test writes.",
            dataset={"path": "local/toy-sts", "revision": "1"}, type="STS", category="t2t",
            modalities=["text"], eval_splits=["test"], eval_langs=["eng-Latn"], main_score="cosine_spearman",
            date=("2024-01-01", "2024-12-31"), domains=["Written"], license="not specified",
            annotations_creators="human-annotated", sample_creation="created", bibtex_citation="",
        )  # fmt: skip

        def load_data(self, num_proc=None, **kwargs):
            rows = [json.loads(line) for line in data.read_text().splitlines()]
            self.dataset = DatasetDict({"test": Dataset.from_list(rows)})
            self.data_loaded = True

    results = evaluate(compose_eval([f"model={tiny_model_dir}", "pooler=avg", "tasks=[stsb,mteb:ToySTS]",
                                     f"data_dir={toy_senteval_dir}", "device=cpu"]))  # fmt: skip
    encoder = load_encoder(str(tiny_model_dir), "avg")
    first, second = encoder.encode([a for a, _, _ in PAIRS]), encoder.encode([b for _, b, _ in PAIRS])
    cosine = torch.nn.functional.cosine_similarity(first.double(), second.double()).numpy()
    expected = 100 * spearmanr(cosine, [s for _, _, s in PAIRS])[0]
    assert results["mteb:ToySTS"] == pytest.approx(expected, abs=1e-6)
    assert "stsb" in results  # beside the SentEval tasks
    assert not (tmp_path / "mteb-cache" / "results").exists()  # MTEB wrote no results of its own

    with pytest.raises(ConfigError, match="^tasks: mteb:NoSuchTask: "):  # before the model loads
        evaluate(
            compose_eval(["model=/nonexistent", "tasks=[mteb:NoSuchTask]", f"data_dir={toy_senteval_dir}"])
        )
