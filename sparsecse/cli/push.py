"""`sparsecse-push`: publish an exported model directory on the Hugging Face Hub.

The token comes from where huggingface_hub looks for it (`$HF_TOKEN`, then the token `hf auth login`
stored), unless `--token` gives one.

Usage:
    sparsecse-push MODEL_DIR REPO_ID [--private] [--token TOKEN] [--message TEXT] [--dry-run]

`--dry-run` lists the files that would be uploaded, with their sizes, and sends nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx2
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from sparsecse.core.console import failed
from sparsecse.core.errors import ConfigError
from sparsecse.export.hub import export_files, push_to_hub

PROG = "sparsecse-push"


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
        return failed(f"{PROG}: error: {err}", 2)
    except OfflineModeIsEnabled:
        why = "HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it to publish"
        return failed(f"{PROG}: error: {why} (--dry-run shows what would go)", 2)
    except (HfHubHTTPError, httpx2.HTTPError, ConnectionError) as err:
        return failed(f"{PROG}: the upload failed: {' '.join(str(err).split())}", 1)
    print(f"{PROG}: {args.model_dir} published as {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
