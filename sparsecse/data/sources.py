"""Where the data comes from: the Hub dataset princeton-nlp/datasets-for-simcse (through
huggingface_hub and its cache), or a plain http(s):// or file:// folder; a failed transfer is one
line naming the URL and the reason."""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import hf_hub_download, hf_hub_url
from huggingface_hub.utils import logging as hub_logging
from tqdm import tqdm

HUB_REPO = "princeton-nlp/datasets-for-simcse"
HUB_REVISION = "main"
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A server that could not be reached or a transfer that broke off."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = " ".join(reason.split()).rstrip(".")
        super().__init__(f"cannot reach {url}: {self.reason}")


def _reason(err: BaseException) -> str:
    """The root cause in a few words: `HTTP 404 Not Found`, or the network error's own message."""
    while err.__cause__ is not None:  # huggingface_hub wraps the network error in its own
        err = err.__cause__
    response = getattr(err, "response", None)
    if isinstance(response, httpx2.Response) and response.is_error:
        return f"HTTP {response.status_code} {response.reason_phrase}"
    return str(err) or type(err).__name__


@contextlib.contextmanager
def _reaching(url: str) -> Iterator[None]:
    """Turn a failed transfer from `url` into a one-line DownloadError."""
    try:
        yield
    except OSError as err:
        if err.errno is not None:  # the local disk (full, read-only), not the server: say so as it is
            raise
        raise DownloadError(url, _reason(err)) from None
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError) as err:
        raise DownloadError(url, _reason(err)) from None


@dataclass(frozen=True)
class Hub:
    """A Hub dataset repo holding the files; `endpoint` None means `$HF_ENDPOINT`, else huggingface.co."""

    repo_id: str = HUB_REPO
    revision: str = HUB_REVISION
    endpoint: str | None = None
    cache_dir: Path | None = None  # None: huggingface_hub's cache ($HF_HUB_CACHE, $HF_HOME)

    def __post_init__(self) -> None:
        if self.endpoint is not None:
            object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))

    def url(self, name: str) -> str:
        return hf_hub_url(
            self.repo_id, name, repo_type="dataset", revision=self.revision, endpoint=self.endpoint
        )

    def fetch(self, name: str, dest: Path, force: bool = False) -> None:
        """Bring `name` into the cache unless it is there and current (`force`: anyway), copy it to `dest`."""
        with _reaching(self.url(name)):
            cached = hf_hub_download(
                self.repo_id,
                name,
                repo_type="dataset",
                revision=self.revision,
                endpoint=self.endpoint,
                cache_dir=self.cache_dir,
                force_download=force,
                token=False,  # public files: a stale stored token would only turn them into 401s
            )
        shutil.copyfile(cached, dest)


@dataclass(frozen=True)
class Mirror:
    """A plain http(s):// or file:// folder holding the files under their own names (files not on the Hub)."""

    base_url: str
    timeout: float = 60.0

    def url(self, name: str) -> str:
        return f"{self.base_url.rstrip('/')}/{name}"

    def fetch(self, name: str, dest: Path, force: bool = False) -> None:
        """Copy `name` to `dest`; a plain folder has no cache, so `force` changes nothing here."""
        url = self.url(name)
        with _reaching(url):
            if urllib.parse.urlsplit(url).scheme == "file":
                _copy_local(url, dest)
            else:
                _stream(url, dest, self.timeout)


def _copy_local(url: str, dest: Path) -> None:
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if not path.is_file():
        raise DownloadError(url, "no such file")
    shutil.copyfile(path, dest)


def _stream(url: str, dest: Path, timeout: float) -> None:
    """GET `url` into `dest`; httpx2 raises on a body shorter than its Content-Length."""
    with httpx2.stream("GET", url, follow_redirects=True, timeout=timeout) as response:
        response.raise_for_status()
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        with open(dest, "wb") as out, tqdm.wrapattr(out, "write", total, desc=dest.name) as sink:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                sink.write(chunk)


SIMCSE_HUB = Hub()


@contextlib.contextmanager
def hub_retries_unlogged() -> Iterator[None]:
    """huggingface_hub logs each retry in two lines of its own; here a failure is one line in the end.

    `HF_HUB_VERBOSITY=warning` shows them again.
    """
    level = hub_logging.get_verbosity()
    if "HF_HUB_VERBOSITY" not in os.environ:
        hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(level)
