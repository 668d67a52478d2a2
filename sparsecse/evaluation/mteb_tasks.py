"""MTEB tasks through the `mteb` package (the `[mteb]` extra): `tasks=[mteb:STSBenchmark, ...]`.

The encoder is wrapped in MTEB's encoder protocol; each task's main score comes back x 100 under
`mteb:<TaskName>`, beside the SentEval tasks. MTEB's own tasks download their data from the Hub.
A custom task, a subclass of one of MTEB's task classes as MTEB documents custom tasks, becomes
reachable by name once `register_task` has seen it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sparsecse.core.errors import ConfigError

PREFIX = "mteb:"
_REGISTERED: dict[str, type] = {}  # custom tasks, by their metadata name


def is_mteb(task: str) -> bool:
    return task.startswith(PREFIX)


def register_task(task_class: type) -> type:
    """Make a custom MTEB task class reachable as `mteb:<its metadata.name>` (usable as a decorator)."""
    _REGISTERED[task_class.metadata.name] = task_class
    return task_class


def _mteb():
    try:
        import mteb
    except ImportError:
        raise ConfigError("tasks", 'mteb: tasks need the mteb package: pip install -e ".[mteb]"') from None
    return mteb


def load_tasks(names: Sequence[str]) -> list:
    """MTEB task objects for `names` (without the prefix): registered custom tasks, then MTEB's own;
    an unknown name is one line naming it."""
    mteb = _mteb()
    tasks = []
    for name in names:
        if name in _REGISTERED:
            tasks.append(_REGISTERED[name]())
            continue
        try:
            tasks.append(mteb.get_task(name))
        except KeyError as err:
            reason = str(err.args[0]) if err.args else "unknown"
            raise ConfigError("tasks", f"{PREFIX}{name}: {reason}") from None
    return tasks


def mteb_encoder(encoder, name: str, batch_size: int):
    """`encoder` (a SentenceEncoder) behind MTEB's encoder protocol: cosine similarity, float32."""
    from mteb.models import ModelMeta
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ScoringFunction

    class SparseCSEEncoder(AbsEncoder):
        def __init__(self):
            meta = {"name": f"sparsecse/{re.sub(r'[^A-Za-z0-9._-]', '_', name)[-80:]}", "revision": "local",
                    "similarity_fn_name": ScoringFunction.COSINE, "modalities": ["text"]}  # fmt: skip
            self.mteb_model_meta = ModelMeta.create_empty(overwrites=meta)

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            # inputs: a DataLoader of {"text": [str, ...]} batches
            texts = [text for batch in inputs for text in batch["text"]]
            label = f"{task_metadata.name} encode"
            return encoder.encode(texts, batch_size=batch_size, show_progress=label).numpy()

    return SparseCSEEncoder()


def unreachable(err: OSError) -> bool:
    """An error of a Hub that cannot be reached: no connection, or offline mode (HF_HUB_OFFLINE,
    HF_DATASETS_OFFLINE)."""
    return (
        isinstance(err, ConnectionError)
        or type(err).__name__ in ("ConnectionError", "OfflineModeIsEnabled")
        or "offline" in str(err).lower()
    )


def evaluate_mteb(
    encoder, names: Sequence[str], batch_size: int = 128, name: str = "model"
) -> dict[str, float]:
    """Each task's main score x 100 (mean over its evaluation splits and subsets), keyed `mteb:<Task>`.
    Nothing is cached or written by MTEB (`cache=None`)."""
    mteb = _mteb()
    try:
        result = mteb.evaluate(
            mteb_encoder(encoder, name, batch_size), load_tasks(names), cache=None, co2_tracker=False,
            overwrite_strategy="always", encode_kwargs={"batch_size": batch_size}, show_progress_bar=False,
        )  # fmt: skip
    except OSError as err:  # ConnectionError, and requests' and datasets' errors of an unreachable Hub
        if not unreachable(err):
            raise
        tasks, why = ", ".join(f"{PREFIX}{n}" for n in names), str(err).splitlines()[0][:120]
        raise ConfigError("tasks", f"{tasks}: MTEB reads its datasets from the Hugging Face Hub, which "
                          f"cannot be reached here ({why}); run it once online, where the datasets cache "
                          "keeps them, or evaluate the SentEval tasks") from None  # fmt: skip
    return {f"{PREFIX}{task.task_name}": 100 * float(task.get_score()) for task in result.task_results}
