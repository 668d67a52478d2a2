"""Publishing an exported model directory on the Hugging Face Hub: the files an export holds,
checked, in one commit. `sparsecse-push` (sparsecse.cli.push) is its command line."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

from sparsecse.core.errors import ConfigError
from sparsecse.export.model_card import CARD
from sparsecse.model.loading import PICKLE_SUFFIXES

EXPORT_FILES = ("config.json", "model.safetensors", "modules.json", CARD)  # what makes a directory an export


def export_files(directory: Path) -> list[Path]:
    """The files of an export that go to the Hub, relative to it: every file but hidden ones; an
    export is checked first (its own files present, no pickle that would run code when loaded)."""
    if not directory.is_dir():
        raise ConfigError("MODEL_DIR", f"no such directory {directory}")
    missing = [name for name in EXPORT_FILES if not (directory / name).is_file()]
    if missing:
        raise ConfigError("MODEL_DIR", f"{directory} is not a model this project exported (no {missing[0]})")
    files = sorted(p.relative_to(directory) for p in directory.rglob("*") if p.is_file())
    files = [p for p in files if not any(part.startswith(".") for part in p.parts)]
    if pickles := [str(p) for p in files if p.name.endswith(PICKLE_SUFFIXES)]:
        raise ConfigError(
            "MODEL_DIR", f"{directory} holds pickled files ({', '.join(pickles)}): not published"
        )
    return files


def push_to_hub(
    directory: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    message: str = "Upload a SparseCSE model",
) -> str:
    """Create `repo_id` if needed (private or public) and upload the export in one commit; returns
    the commit's URL. `token` None: huggingface_hub's own lookup."""
    directory = Path(directory)
    files = export_files(directory)
    api = HfApi(token=token)
    api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
    operations = [CommitOperationAdd(p.as_posix(), str(directory / p)) for p in files]
    commit = api.create_commit(repo_id, operations, commit_message=message, token=token, repo_type="model")
    return commit.commit_url
