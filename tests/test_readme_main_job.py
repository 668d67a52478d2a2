"""The README's account of the main job is that job's output: `python train.py` as a fresh clone runs
it prints the table the README shows, and the counts the README quotes are its results.json's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_main_job() -> tuple[list[str], str]:
    """The table the README shows for `python train.py`, and the paragraph after it."""
    text = (ROOT / "README.md").read_text()
    after = text.split("prints the dense and sparse rows side by side:\n\n```\n", 1)[1]
    table, rest = after.split("```\n", 1)
    return table.strip("\n").splitlines(), rest.split("\n\n", 1)[0]


def test_the_readme_shows_what_the_main_job_prints(tmp_path):
    if not os.environ.get("SPARSECSE_DATA_DIR"):
        pytest.skip("the main job reads SentEval's files: set SPARSECSE_DATA_DIR")
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "train.py", f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table, paragraph = readme_main_job()
    for line in table:
        assert line in done.stdout, f"the README shows {line!r}; the run printed:\n{done.stdout[-2000:]}"
    results = json.loads((tmp_path / "results.json").read_text())
    sparsity = results["sparsity"]
    layers = range(sum(key.startswith("prune/heads_layer") for key in sparsity))
    heads = [int(sparsity[f"prune/heads_layer{i}"]) for i in layers]
    neurons = sum(int(sparsity[f"prune/neurons_layer{i}"]) for i in layers)
    quoted = re.sub(r"\s+", " ", paragraph)
    assert f"keeps {sum(heads)} of {12 * len(heads)} heads (per layer {' '.join(map(str, heads))})" in quoted
    assert f"and {neurons:,} of {1536 * len(heads):,} FFN neurons" in quoted
    assert f"{sparsity['prune/encoder_parameters'] / 1e6:.2f}M of the layers'" in quoted
