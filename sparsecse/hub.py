"""`sparsecse-push`: publish an exported model directory on the Hugging Face Hub.

The token comes from where huggingface_hub looks for it (`$HF_TOKEN`, then the token `hf auth login`
stored), unless `--token` gives one.

Usage:
    sparsecse-push MODEL_DIR REPO_ID [--private] [--token TOKEN] [--message TEXT] [--dry-run]

`--dry-run` lists the files that would be uploaded, with their sizes, and sends nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from sparsecse.errors import ConfigError
from sparsecse.loading import PICKLE_SUFFIXES
from sparsecse.model_card import CARD

PROG = "sparsecse-push"
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


def dry_run(directory: Path, repo_id: str, private: bool) -> None:
    """Print the files `push_to_hub` would upload, with their sizes; nothing is sent."""
    files = export_files(directory)
    sizes = [(directory / p).stat().st_size for p in files]
    for path, size in zip(files, sizes):
        print(f"  {path}  {size / 1e6:.1f} MB")
    visibility = "private" if private else "public"
    print(f"{PROG}: dry run: {len(files)} files, {sum(sizes) / 1e6:.1f} MB, would go to the {visibility} "
          f"repository {repo_id}; nothing was sent")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="a directory sparsecse exported (a run's model/)")
    parser.add_argument("repo_id", help="user/name or org/name on the Hub")
    parser.add_argument("--private", action="store_true", help="a private repository (default: public)")
    parser.add_argument("--token", help="default: $HF_TOKEN, else the token `hf auth login` stored")
    parser.add_argument("--message", default="Upload a SparseCSE model", help="the commit message")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")
    args = parser.parse_args(argv)
    try:
        if args.dry_run:
            dry_run(args.model_dir, args.repo_id, args.private)
            return 0
        url = push_to_hub(args.model_dir, args.repo_id, args.private, args.token, args.message)
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OfflineModeIsEnabled:
        print(f"{PROG}: error: HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it to publish "
              "(--dry-run shows what would go)", file=sys.stderr)  # fmt: skip
        return 2
    except (HfHubHTTPError, httpx2.HTTPError, ConnectionError) as err:
        print(f"{PROG}: the upload failed: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"{PROG}: {args.model_dir} published as {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
