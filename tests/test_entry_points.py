"""Console scripts work beside packages with generic names: Hugging Face's `evaluate` is common in
NLP environments and used to shadow our top-level `evaluate.py` (ImportError: cannot import name
'main' from 'evaluate')."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

GENERIC = ("evaluate", "prune", "report", "data", "push")


def console_scripts():
    return [ep for ep in distribution("sparsecse").entry_points if ep.group == "console_scripts"]


@pytest.fixture
def stand_ins(tmp_path) -> Path:
    """Packages and modules named like other people's, first on the path, that fail when imported."""
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "__init__.py").write_text("raise ImportError('the stand-in evaluate package')\n")
    for name in GENERIC[1:]:
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the stand-in {name} module')\n")
    return tmp_path


def test_every_console_script_imports_beside_generic_names(stand_ins, monkeypatch):
    monkeypatch.syspath_prepend(str(stand_ins))
    for name in GENERIC:
        monkeypatch.delitem(sys.modules, name, raising=False)
    scripts = console_scripts()
    expected = {"sparsecse-train", "sparsecse-eval", "sparsecse-prune", "sparsecse-data", "sparsecse-report",
                "sparsecse-push"}  # fmt: skip
    assert {ep.name for ep in scripts} >= expected
    for ep in scripts:
        assert callable(ep.load()), ep.name
        assert ep.module.split(".")[0] not in GENERIC, f"{ep.name} installs a generic top-level name"


@pytest.mark.slow
@pytest.mark.parametrize("script", [ep.name for ep in console_scripts()])
def test_console_script_help_with_a_stand_in_evaluate_package(script, stand_ins):
    executable = shutil.which(script)
    assert executable, f"{script} is not installed"
    env = {**os.environ, "PYTHONPATH": f"{stand_ins}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([executable, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower() or "powered by hydra" in proc.stdout.lower(), proc.stdout[:500]


def test_third_party_noise_is_silenced_and_real_warnings_are_not(caplog):
    import logging
    import warnings

    from sparsecse.cli import silence_third_party_noise

    noise = ["The `srun` command is available on your system but is not used. HINT: ...",
             "Metric `SpearmanCorrcoef` will save all targets and predictions in the buffer.",
             "`isinstance(treespec, LeafSpec)` is deprecated, use ...",
             "Checkpoint directory /runs/x/checkpoints exists and is not empty."]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party_noise()
        for message in [*noise, "The number of training batches (2) is smaller than the logging interval"]:
            warnings.warn(message, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "The number of training batches (2) is smaller than the logging interval"
    ]
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=tips.name):
        tips.info(
            "💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)"
        )
        tips.info("Loading `train_dataloader` to estimate number of stepping batches.")
        tips.info("Trainer already configured with model summary callbacks: [<class 'callbacks.progress."
                  "ParameterSummary'>]. Skipping setting a default `ModelSummary` callback.")  # fmt: skip
        tips.info("GPU available: False, used: False")
    assert caplog.messages == ["GPU available: False, used: False"]
