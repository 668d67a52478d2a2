"""`sparsecse-eval`: SentEval-protocol evaluation of any encoder. See conf/tools/eval.yaml."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig

from sparsecse.cli import tool_main
from sparsecse.core.errors import ConfigError
from sparsecse.evaluation import (
    check_evaluation,
    check_senteval_files,
    evaluate_encoder,
    format_table,
    write_results,
)
from sparsecse.export.model_io import load_encoder


@contextmanager
def model_key() -> Iterator[None]:
    """Errors about the model name name `model`, the key these tools take it by."""
    try:
        yield
    except ConfigError as err:
        if err.key != "name_or_path":
            raise
        raise ConfigError("model", err.message) from None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError("device", f"unknown device {device!r}; expected auto, cpu or cuda[:N]") from None


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Load the encoder named by `cfg.model`, evaluate it, print the table, write `cfg.output`."""
    check_evaluation(cfg.tasks, cfg.transfer_preset)
    data_dir = Path(cfg.data_dir).expanduser()
    check_senteval_files(data_dir, cfg.tasks)  # every missing file listed, before the model loads
    device = pick_device(cfg.device)
    with model_key():
        encoder = load_encoder(cfg.model, cfg.pooler, attn_implementation=cfg.attn_implementation).to(device)
    if cfg.compile:
        encoder.compile_for_inference()
    results = evaluate_encoder(encoder, data_dir, cfg.tasks, cfg.batch_size, cfg.transfer_preset)
    print(format_table({str(cfg.model): results}))
    if cfg.output:
        write_results(cfg.output, results)
    return results


main = tool_main("sparsecse-eval", "eval", evaluate)

if __name__ == "__main__":
    main()
