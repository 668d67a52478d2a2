"""`sparsecse-data` against a throwaway server on 127.0.0.1 serving tiny fixture files, both as the
Hub's resolve endpoint (through huggingface_hub) and as a plain folder."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

from sparsecse.cli import data as data_cli
from sparsecse.core.errors import ConfigError
from sparsecse.data import download as dl
from sparsecse.data import sources

REPO = Path(__file__).resolve().parents[1]
WIKI = "".join(f"sentence {i}\n" for i in range(5))
NLI = "sent0,sent1,hard_neg\na,b,c\nd,e,f\ng,h,i\n"
LINES = {dl.WIKI1M: 5, dl.NLI: 4}
SENTEVAL = {
    "STS/STSBenchmark/sts-test.csv": "main-captions\tMSRvid\t2012test\t0001\t5.000\tA\tB\n",
    "SICK/SICK_test_annotated.txt": "pair_ID\tsentence_A\tsentence_B\trelatedness_score\n",
    "SNLI/s1.test": "A man plays .\n",
    "MR/rt-polarity.pos": "good .\n",
}
FILES = tuple(SENTEVAL)
RESOLVE = f"/datasets/{sources.HUB_REPO}/resolve/{sources.HUB_REVISION}/"


def write_tar(path: Path, members: dict[str, str]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class Server(ThreadingHTTPServer):
    """Serves a folder: as the Hub's resolve endpoint under RESOLVE, as plain files elsewhere.

    `cuts[name]` yields, for each GET of `name`, the byte offset at which the body stops and the
    connection closes (a transfer broken off mid-body). `requests` logs (method, name, Range).
    """

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.cuts: dict[str, Iterator[int]] = {}
        self.requests: list[tuple[str, str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def commit(self) -> str:
        """Changes whenever a file does, as a git commit would: huggingface_hub caches by commit."""
        digest = hashlib.sha1()
        for path in sorted(self.root.iterdir()):
            digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()


class Handler(BaseHTTPRequestHandler):
    """The parts of the Hub's `resolve` answer that huggingface_hub's file_download reads."""

    server: Server

    def do_HEAD(self) -> None:
        self._reply(body=False)

    def do_GET(self) -> None:
        self._reply(body=True)

    def _reply(self, body: bool) -> None:
        path = urllib.parse.unquote(self.path)
        hub = path.startswith(RESOLVE)
        name = path.removeprefix(RESOLVE) if hub else path.lstrip("/")
        ranged = self.headers.get("Range")
        self.server.requests.append((self.command, name, ranged))
        file = self.server.root / name
        if not file.is_file():
            self.send_response(404)
            if hub:
                self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = file.read_bytes()
        start = int(ranged.removeprefix("bytes=").removesuffix("-")) if ranged else 0
        self.send_response(206 if start else 200)
        if hub:
            self.send_header("X-Repo-Commit", self.server.commit())
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if body:
            stop = next(self.server.cuts.get(name, iter(())), len(data))
            self.wfile.write(data[start : max(start, stop)])

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub's cache in tmp_path, never the user's; it reads its settings at import, hence
    the patches, and the developer's own settings must not change what the tests see."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_VERBOSITY", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return home


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub waits 1-8 s between retries; the local server needs no such patience."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """The fixture files a server would hold."""
    root = tmp_path / "remote"
    root.mkdir()
    write_tar(root / dl.SENTEVAL_TAR, {f"downstream/{k}": v for k, v in SENTEVAL.items()})
    (root / dl.WIKI1M).write_text(WIKI)
    (root / dl.NLI).write_text(NLI)
    return root


@pytest.fixture
def server(remote: Path) -> Iterator[Server]:
    """A local server for `remote`, shut down after the test."""
    httpd = Server(remote)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def hub(server: Server, tmp_path: Path) -> sources.Hub:
    return sources.Hub(endpoint=server.url, cache_dir=tmp_path / "hf-cache")


@pytest.fixture(params=["hub", "plain"])
def source(request: pytest.FixtureRequest, server: Server, tmp_path: Path) -> sources.Hub | sources.Mirror:
    """Each behaviour through both paths: huggingface_hub on the resolve endpoint, and plain HTTP."""
    if request.param == "hub":
        return sources.Hub(endpoint=server.url, cache_dir=tmp_path / "hf-cache")
    return sources.Mirror(server.url)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch_all(
    data_dir: Path,
    source: sources.Hub | sources.Mirror,
    datasets: Sequence[str] = tuple(dl.DATASETS),
    force: bool = False,
) -> list[str]:
    """`download` with the fixture tables."""
    return dl.download(data_dir, datasets, source, force, LINES, FILES)


def cached_blobs(cache: Path) -> list[Path]:
    return [p for p in cache.glob("*/blobs/*") if p.is_file()]


def test_download_places_files(source: sources.Hub | sources.Mirror, data_dir: Path) -> None:
    assert fetch_all(data_dir, source) == ["senteval", "wiki1m", "nli"]
    assert (data_dir / dl.WIKI1M).read_text() == WIKI
    assert (data_dir / dl.NLI).read_text() == NLI
    for name, text in SENTEVAL.items():
        assert (data_dir / name).read_text() == text
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        ["MR", "SICK", "SNLI", "STS", dl.NLI, dl.WIKI1M]
    )


def test_hub_download_fills_the_cache_and_leaves_a_real_file(hub: sources.Hub, data_dir: Path) -> None:
    fetch_all(data_dir, hub, datasets=["wiki1m"])
    assert [p.read_text() for p in cached_blobs(hub.cache_dir)] == [WIKI]
    assert not (data_dir / dl.WIKI1M).is_symlink()


def test_hub_cache_serves_a_rerun_when_the_server_is_gone(
    hub: sources.Hub, data_dir: Path, closed_port: int
) -> None:
    fetch_all(data_dir, hub, datasets=["nli"])
    (data_dir / dl.NLI).unlink()
    offline = sources.Hub(endpoint=f"http://127.0.0.1:{closed_port}", cache_dir=hub.cache_dir)
    assert fetch_all(data_dir, offline, datasets=["nli"]) == ["nli"]
    assert (data_dir / dl.NLI).read_text() == NLI


def test_file_url(remote: Path, data_dir: Path) -> None:
    fetch_all(data_dir, sources.Mirror(remote.as_uri()))
    assert (data_dir / dl.NLI).read_text() == NLI
    assert (data_dir / "SNLI" / "s1.test").read_text() == SENTEVAL["SNLI/s1.test"]


def test_present_files_are_skipped_unless_forced(
    source: sources.Hub | sources.Mirror, remote: Path, data_dir: Path
) -> None:
    fetch_all(data_dir, source)
    for path in remote.iterdir():
        path.unlink()
    assert fetch_all(data_dir, source) == []
    with pytest.raises(sources.DownloadError, match="HTTP 404 Not Found"):
        fetch_all(data_dir, source, datasets=["wiki1m"], force=True)
    assert (data_dir / dl.WIKI1M).read_text() == WIKI


def test_line_count_mismatch_names_file_and_counts(
    source: sources.Hub | sources.Mirror, data_dir: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        dl.download(data_dir, ["wiki1m"], source, line_counts={dl.WIKI1M: 6}, senteval_files=FILES)
    assert str(err.value) == f"{source.url(dl.WIKI1M)}: expected 6 lines, found 5"
    assert list(data_dir.iterdir()) == []


def test_hub_file_with_wrong_line_count_never_replaces_a_good_one(
    hub: sources.Hub, remote: Path, data_dir: Path
) -> None:
    data_dir.mkdir()
    (data_dir / dl.WIKI1M).write_text(WIKI)
    (remote / dl.WIKI1M).write_text(WIKI + "one too many\n")
    for _ in range(2):  # the second time from the cache: a cached file is checked all the same
        with pytest.raises(ConfigError, match="expected 5 lines, found 6$"):
            fetch_all(data_dir, hub, datasets=["wiki1m"], force=True)
        assert [p.name for p in data_dir.iterdir()] == [dl.WIKI1M]
        assert (data_dir / dl.WIKI1M).read_text() == WIKI
    (remote / dl.WIKI1M).write_text(WIKI.replace("0", "zero"))
    assert fetch_all(data_dir, hub, datasets=["wiki1m"], force=True) == ["wiki1m"]
    assert (data_dir / dl.WIKI1M).read_text() == WIKI.replace("0", "zero")


def test_check_reports_wrong_line_count_of_present_file(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir.mkdir()
    (data_dir / dl.NLI).write_text(NLI + "x,y,z")
    with pytest.raises(ConfigError, match=r"nli_for_simcse\.csv: expected 4 lines, found 5$"):
        dl.check(data_dir, ["nli"], LINES)
    assert data_cli.report(data_dir, ["nli"], LINES, FILES) == 1
    assert capsys.readouterr().out.startswith(f"bad      nli: {data_dir / dl.NLI}: expected 4")


def test_check_names_missing_senteval_file(hub: sources.Hub, data_dir: Path) -> None:
    fetch_all(data_dir, hub, datasets=["senteval"])
    (data_dir / "SNLI" / "s1.test").unlink()
    with pytest.raises(ConfigError, match=r"SNLI/s1\.test: missing"):
        dl.check(data_dir, ["senteval"], LINES, FILES)


@pytest.mark.parametrize("fault", ["cut off", "absent"])
def test_failed_download_keeps_existing_file(
    source: sources.Hub | sources.Mirror,
    server: Server,
    remote: Path,
    data_dir: Path,
    fault: str,
    no_backoff: None,
) -> None:
    if fault == "cut off":
        server.cuts[dl.WIKI1M] = itertools.repeat(8)
    else:
        (remote / dl.WIKI1M).unlink()
    data_dir.mkdir()
    (data_dir / dl.WIKI1M).write_text("good\n")
    with pytest.raises(sources.DownloadError, match=dl.WIKI1M):
        fetch_all(data_dir, source, datasets=["wiki1m"], force=True)
    assert (data_dir / dl.WIKI1M).read_text() == "good\n"
    assert [p.name for p in data_dir.iterdir()] == [dl.WIKI1M]


def test_interrupted_hub_transfer_leaves_no_partial_file_and_a_rerun_completes(
    hub: sources.Hub, server: Server, data_dir: Path, no_backoff: None
) -> None:
    server.cuts[dl.WIKI1M] = itertools.repeat(8)
    with pytest.raises(sources.DownloadError) as err:
        fetch_all(data_dir, hub, datasets=["wiki1m"])
    assert str(err.value).startswith(f"cannot reach {hub.url(dl.WIKI1M)}: ")
    assert "peer closed connection without sending complete message body" in str(err.value)
    assert "\n" not in str(err.value)
    assert list(data_dir.iterdir()) == []
    assert list(hub.cache_dir.rglob("*incomplete*")) == []
    assert cached_blobs(hub.cache_dir) == []
    del server.cuts[dl.WIKI1M]
    assert fetch_all(data_dir, hub, datasets=["wiki1m"]) == ["wiki1m"]
    assert (data_dir / dl.WIKI1M).read_text() == WIKI


def test_hub_resumes_a_transfer_that_broke_off(
    hub: sources.Hub, server: Server, data_dir: Path, no_backoff: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4
    )  # resumes from the last whole chunk
    server.cuts[dl.WIKI1M] = iter([8])
    assert fetch_all(data_dir, hub, datasets=["wiki1m"]) == ["wiki1m"]
    assert (data_dir / dl.WIKI1M).read_text() == WIKI
    gets = [(name, ranged) for method, name, ranged in server.requests if method == "GET"]
    assert gets == [(dl.WIKI1M, None), (dl.WIKI1M, "bytes=8-")]


@pytest.mark.parametrize("option", ["--endpoint", "--base-url"])
def test_unreachable_server_is_one_line_on_stderr(
    closed_port: int,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    option: str,
    no_backoff: None,
) -> None:
    base = f"http://127.0.0.1:{closed_port}"
    argv = ["download", "--data-dir", str(data_dir), "--only", "nli", option, base]
    assert data_cli.main(argv) == 1
    out, err = capsys.readouterr()
    url = f"{base}{RESOLVE}{dl.NLI}" if option == "--endpoint" else f"{base}/{dl.NLI}"
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"sparsecse-data: cannot reach {url}: ")
    assert "Connection refused" in err
    assert f"Put the files in {data_dir} yourself and point SPARSECSE_DATA_DIR there." in err
    assert [r.getMessage() for r in caplog.records if r.name.startswith("huggingface_hub")] == []
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize("name", ["downstream/../../evil.txt", "/tmp/sparsecse-evil.txt"])
def test_path_traversal_in_archive_is_refused(
    source: sources.Hub | sources.Mirror, remote: Path, tmp_path: Path, data_dir: Path, name: str
) -> None:
    write_tar(remote / dl.SENTEVAL_TAR, {"downstream/STS/ok.txt": "ok\n", name: "boom\n"})
    with pytest.raises(ConfigError, match="unsafe member") as err:
        fetch_all(data_dir, source, datasets=["senteval"])
    assert str(err.value).startswith(f"{source.url(dl.SENTEVAL_TAR)}: ")
    assert "\n" not in str(err.value)
    assert list(data_dir.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/sparsecse-evil.txt").exists()


def test_corrupt_archive_is_one_line_error(
    source: sources.Hub | sources.Mirror, remote: Path, data_dir: Path
) -> None:
    (remote / dl.SENTEVAL_TAR).write_bytes(b"not a tar archive" * 100)
    with pytest.raises(ConfigError, match="unreadable tar archive") as err:
        fetch_all(data_dir, source, datasets=["senteval"])
    assert str(err.value).startswith(f"{source.url(dl.SENTEVAL_TAR)}: ")
    assert "\n" not in str(err.value)
    assert list(data_dir.iterdir()) == []


def test_archive_without_prefix_extracts_as_is(tmp_path: Path) -> None:
    write_tar(tmp_path / "plain.tar", SENTEVAL)
    dl.extract_senteval(tmp_path / "plain.tar", tmp_path / "out")
    assert (tmp_path / "out" / "SNLI" / "s1.test").read_text() == SENTEVAL["SNLI/s1.test"]


@pytest.mark.parametrize("option", ["--endpoint", "--base-url"])
def test_cli_download_then_check(
    server: Server,
    data_dir: Path,
    hf_home: Path,
    option: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(dl, "LINE_COUNTS", LINES)
    monkeypatch.setattr(dl, "SENTEVAL_FILES", FILES)
    monkeypatch.setenv("SPARSECSE_DATA_DIR", str(data_dir))
    assert data_cli.main(["check"]) == 1
    assert "missing  wiki1m" in capsys.readouterr().out
    assert data_cli.main(["download", option, server.url]) == 0
    assert data_cli.main(["check"]) == 0
    for flag in ("--dir", "--data-dir"):
        assert data_cli.main(["check", flag, str(data_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "ok       senteval",
        "ok       wiki1m",
        "ok       nli",
    ]
    assert len(cached_blobs(hf_home / "hub")) == (3 if option == "--endpoint" else 0)


def test_endpoint_and_base_url_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as exit_:
        data_cli.main(["download", "--endpoint", "http://a", "--base-url", "http://b"])
    assert exit_.value.code == 2


def test_hf_endpoint_names_the_mirror(server: Server, remote: Path, tmp_path: Path, data_dir: Path) -> None:
    """The console script, in a process of its own, takes the Hub endpoint from $HF_ENDPOINT."""
    (remote / dl.NLI).write_text("sent0,sent1,hard_neg\n" + "a,b,c\n" * (dl.LINE_COUNTS[dl.NLI] - 1))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf")}
    for offline in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
    ):  # huggingface_hub honours either; clusters set them
        env.pop(offline, None)
    cmd = [
        sys.executable,
        "-m",
        "sparsecse.cli.data",
        "download",
        "--data-dir",
        str(data_dir),
        "--only",
        "nli",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (data_dir / dl.NLI).read_bytes() == (remote / dl.NLI).read_bytes()
    assert ("HEAD", dl.NLI, None) in server.requests


@pytest.mark.slow
def test_console_script_exit_status(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sparsecse.cli.data", "check", "--data-dir", str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "missing  nli" in result.stdout


@pytest.mark.parametrize(("text", "lines"), [("", 0), ("a\nb\n", 2), ("a\nb", 2), ("\n", 1)])
def test_count_lines(tmp_path: Path, text: str, lines: int) -> None:
    path = tmp_path / "f.txt"
    path.write_text(text)
    assert dl.count_lines(path) == lines


def test_expected_senteval_files_match_the_real_layout(real_senteval_dir):
    missing = [name for name in dl.SENTEVAL_FILES if not (real_senteval_dir / name).is_file()]
    assert missing == []
    dl.check_dataset(real_senteval_dir, "senteval")  # and the line counts they are checked against


# --- data.download=auto: the main job fetches what it lacks (fetch_missing) ---


@pytest.fixture
def fixture_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """fetch_missing checks against the module's tables; here those of the fixture files."""
    monkeypatch.setattr(dl, "LINE_COUNTS", {**LINES, **{name: 1 for name in SENTEVAL}})
    monkeypatch.setattr(dl, "SENTEVAL_FILES", FILES)


NEEDED = ["STS/STSBenchmark/sts-test.csv", "SNLI/s1.test"]


def test_auto_fetches_what_a_run_lacks_and_says_where(
    hub: sources.Hub, server: Server, data_dir: Path, fixture_tables: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dl.fetch_missing(data_dir, NEEDED, "auto", source=hub) == ["senteval"]
    assert all((data_dir / name).read_text() == SENTEVAL[name] for name in NEEDED)
    out = capsys.readouterr().out
    lacking = f"{data_dir} lacks the senteval data (STS/STSBenchmark/sts-test.csv, and 1 more)"
    assert f"{lacking}: downloading" in out
    assert re.search(f"senteval data downloaded, checked and placed in {data_dir} in [0-9.]+ s", out)
    requests = len(server.requests)
    assert dl.fetch_missing(data_dir, NEEDED, "auto", source=hub) == []  # present: nothing is asked
    assert len(server.requests) == requests


def test_never_fetches_nothing(hub: sources.Hub, server: Server, data_dir: Path) -> None:
    assert dl.fetch_missing(data_dir, NEEDED, "never", source=hub) == []
    assert not data_dir.exists() and server.requests == []
    with pytest.raises(ConfigError, match=r"^data.download: must be one of auto, never, got 'always'$"):
        dl.fetch_missing(data_dir, NEEDED, "always", source=hub)


def test_offline_auto_is_one_line_naming_the_folder_the_command_and_the_variable(
    closed_port: int, data_dir: Path, tmp_path: Path, no_backoff: None
) -> None:
    hub = sources.Hub(endpoint=f"http://127.0.0.1:{closed_port}", cache_dir=tmp_path / "hf-cache")
    with pytest.raises(ConfigError) as err:
        dl.fetch_missing(data_dir, NEEDED, "auto", source=hub)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"data_dir: {data_dir} lacks the senteval data (STS/STSBenchmark/sts-test.csv")
    assert f"cannot reach {hub.url(dl.SENTEVAL_TAR)}" in message
    assert f"fetch it with `sparsecse-data download --data-dir {data_dir} --only senteval`" in message
    assert message.endswith("or set SPARSECSE_DATA_DIR (or data_dir=) to a folder that holds it")
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []


def test_a_corrupted_file_is_never_used(
    source: sources.Hub | sources.Mirror, remote: Path, data_dir: Path, fixture_tables: None
) -> None:
    corrupted = {**SENTEVAL, "SNLI/s1.test": "A man plays .\nA stray second line .\n"}
    write_tar(remote / dl.SENTEVAL_TAR, {f"downstream/{k}": v for k, v in corrupted.items()})
    with pytest.raises(ConfigError, match=r"SNLI/s1.test: expected 1 lines, found 2$"):
        dl.fetch_missing(data_dir, NEEDED, "auto", source=source)
    assert [p for p in data_dir.rglob("*") if p.is_file()] == [], "nothing of the archive was put in place"


def test_an_interrupted_download_is_redone_and_no_half_file_is_used(
    hub: sources.Hub, server: Server, data_dir: Path, fixture_tables: None, no_backoff: None
) -> None:
    server.cuts[dl.SENTEVAL_TAR] = itertools.repeat(100)  # every transfer breaks off after 100 bytes
    with pytest.raises(ConfigError, match="peer closed connection"):
        dl.fetch_missing(data_dir, NEEDED, "auto", source=hub)
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []
    assert list(hub.cache_dir.rglob("*incomplete*")) == []
    server.cuts[dl.SENTEVAL_TAR] = iter([100])  # breaks off once: resumed within the same call
    assert dl.fetch_missing(data_dir, NEEDED, "auto", source=hub) == ["senteval"]
    assert (data_dir / "SNLI/s1.test").read_text() == SENTEVAL["SNLI/s1.test"]


def test_simcse_training_files_are_fetched_by_name(
    source: sources.Hub | sources.Mirror, data_dir: Path, fixture_tables: None
) -> None:
    from sparsecse.training.data import data_files

    files = data_files(data_dir, str(data_dir / dl.WIKI1M))
    assert files == ["STS/STSBenchmark/sts-dev.csv", dl.WIKI1M]
    assert data_files(data_dir, str(data_dir.parent / dl.WIKI1M)) == ["STS/STSBenchmark/sts-dev.csv"]
    assert dl.fetch_missing(data_dir, [dl.WIKI1M, "SNLI/s1.test"], "auto", source=source) == [
        "wiki1m",
        "senteval",
    ]
    assert (data_dir / dl.WIKI1M).read_text() == WIKI


def test_a_rank_that_does_not_download_waits_for_the_files(data_dir: Path, monkeypatch) -> None:
    slept = []

    def sleep(seconds: float) -> None:  # rank 0 places the file while this rank waits
        slept.append(seconds)
        (data_dir / "SNLI").mkdir(parents=True, exist_ok=True)
        (data_dir / "SNLI" / "s1.test").write_text("x\n")

    monkeypatch.setattr(time, "sleep", sleep)
    assert dl.fetch_missing(data_dir, ["SNLI/s1.test"], "auto", wait=True) == []
    assert slept == [5.0]
    monkeypatch.setattr(dl, "WAIT_SECONDS", -1.0)
    with pytest.raises(ConfigError, match="after -1 s waiting for rank 0"):
        dl.fetch_missing(data_dir, ["SNLI/s2.test"], "auto", wait=True)


@pytest.mark.slow
def test_the_main_job_with_no_data_folder_downloads_the_data_and_carries_on(
    tmp_path: Path,
    toy_senteval_dir: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python train.py` on a fresh machine: the toy SentEval folder served as the Hub's senteval.tar."""
    from helpers import compose_train, cpu_overrides

    from train import train

    remote = tmp_path / "remote"
    remote.mkdir()
    with tarfile.open(remote / dl.SENTEVAL_TAR, "w") as tar:
        tar.add(toy_senteval_dir, arcname="downstream")
    counts = {name: dl.count_lines(toy_senteval_dir / name) for name in dl.SENTEVAL_FILES}
    monkeypatch.setattr(dl, "LINE_COUNTS", {**dl.LINE_COUNTS, **counts})
    httpd = Server(remote)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(
            dl, "SIMCSE_HUB", sources.Hub(endpoint=httpd.url, cache_dir=tmp_path / "hf-cache")
        )
        data_dir = tmp_path / "cache" / "sparsecse" / "data"
        overrides = cpu_overrides(tmp_path / "run", data_dir, tiny_model_dir) + [
            "data.download=auto", "data.batch_size=8", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "pruning=none", "evaluate.tasks=[stsb]", "save_model=false",
        ]  # fmt: skip
        results = train(compose_train(overrides))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert "stsb" in results["before"] and "stsb" in results["after"]
    dl.check_dataset(data_dir, "senteval", dl.LINE_COUNTS)  # every file in place, as served
    assert [name for method, name, _ in httpd.requests if method == "GET"] == [dl.SENTEVAL_TAR]
    out = capsys.readouterr().out  # each long stage: a line when it starts, one with its time when it ends
    for stage in ("evaluation before training", "training", "evaluation after training", "writing results"):
        assert f"sparsecse-train: {stage}" in out
    assert out.count(" done in ") == 4
    assert out.index("senteval data downloaded") < out.index("sparsecse-train: training ...")
