"""`sparsecse-data` against a throwaway server on 127.0.0.1 serving tiny fixture files."""

from __future__ import annotations

import functools
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator, Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sparsecse import download as dl
from sparsecse.errors import ConfigError

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


def write_tar(path: Path, members: dict[str, str]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class Handler(SimpleHTTPRequestHandler):
    """Serves a folder; under /truncated/ it promises 1000 bytes and closes after a few."""

    def do_GET(self) -> None:
        if not self.path.startswith("/truncated/"):
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"partial\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


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
def server(remote: Path) -> Iterator[str]:
    """Base URL of a local HTTP server for `remote`, shut down after the test."""
    handler = functools.partial(Handler, directory=str(remote))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch_all(
    data_dir: Path, base_url: str, datasets: Sequence[str] = tuple(dl.DATASETS), force: bool = False
) -> list[str]:
    """`download` with the fixture tables."""
    return dl.download(data_dir, datasets, base_url, force, LINES, FILES)


def test_download_places_files(server: str, data_dir: Path) -> None:
    assert fetch_all(data_dir, server) == ["senteval", "wiki1m", "nli"]
    assert (data_dir / dl.WIKI1M).read_text() == WIKI
    assert (data_dir / dl.NLI).read_text() == NLI
    for name, text in SENTEVAL.items():
        assert (data_dir / name).read_text() == text
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        ["MR", "SICK", "SNLI", "STS", dl.NLI, dl.WIKI1M]
    )


def test_file_url(remote: Path, data_dir: Path) -> None:
    fetch_all(data_dir, remote.as_uri())
    assert (data_dir / dl.NLI).read_text() == NLI
    assert (data_dir / "SNLI" / "s1.test").read_text() == SENTEVAL["SNLI/s1.test"]


def test_present_files_are_skipped_unless_forced(server: str, remote: Path, data_dir: Path) -> None:
    fetch_all(data_dir, server)
    for path in remote.iterdir():
        path.unlink()
    assert fetch_all(data_dir, server) == []
    with pytest.raises(dl.DownloadError, match="404"):
        fetch_all(data_dir, server, datasets=["wiki1m"], force=True)
    assert (data_dir / dl.WIKI1M).read_text() == WIKI


def test_line_count_mismatch_names_file_and_counts(server: str, data_dir: Path) -> None:
    with pytest.raises(ConfigError) as err:
        dl.download(data_dir, ["wiki1m"], server, line_counts={dl.WIKI1M: 6}, senteval_files=FILES)
    assert str(err.value) == f"{server}{dl.WIKI1M}: expected 6 lines, found 5"
    assert list(data_dir.iterdir()) == []


def test_check_reports_wrong_line_count_of_present_file(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir.mkdir()
    (data_dir / dl.NLI).write_text(NLI + "x,y,z")
    with pytest.raises(ConfigError, match=r"nli_for_simcse\.csv: expected 4 lines, found 5$"):
        dl.check(data_dir, ["nli"], LINES)
    assert dl.report(data_dir, ["nli"], LINES, FILES) == 1
    assert capsys.readouterr().out.startswith(f"bad      nli: {data_dir / dl.NLI}: expected 4")


def test_check_names_missing_senteval_file(server: str, data_dir: Path) -> None:
    fetch_all(data_dir, server, datasets=["senteval"])
    (data_dir / "SNLI" / "s1.test").unlink()
    with pytest.raises(ConfigError, match=r"SNLI/s1\.test: missing"):
        dl.check(data_dir, ["senteval"], LINES, FILES)


@pytest.mark.parametrize("folder", ["truncated/", "absent/"])
def test_failed_download_keeps_existing_file(server: str, data_dir: Path, folder: str) -> None:
    data_dir.mkdir()
    (data_dir / dl.WIKI1M).write_text("good\n")
    with pytest.raises(dl.DownloadError, match=dl.WIKI1M):
        fetch_all(data_dir, server + folder, datasets=["wiki1m"], force=True)
    assert (data_dir / dl.WIKI1M).read_text() == "good\n"
    assert [p.name for p in data_dir.iterdir()] == [dl.WIKI1M]


def test_unreachable_server_is_one_line_on_stderr(
    closed_port: int, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"http://127.0.0.1:{closed_port}/"
    argv = ["download", "--data-dir", str(data_dir), "--only", "nli", "--base-url", base]
    assert dl.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"sparsecse-data: cannot reach {base}{dl.NLI}: ")
    assert f"Put the files in {data_dir} yourself and point SPARSECSE_DATA_DIR there." in err
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize("name", ["downstream/../../evil.txt", "/tmp/sparsecse-evil.txt"])
def test_path_traversal_in_archive_is_refused(tmp_path: Path, data_dir: Path, name: str) -> None:
    remote = tmp_path / "evil"
    remote.mkdir()
    write_tar(remote / dl.SENTEVAL_TAR, {"downstream/STS/ok.txt": "ok\n", name: "boom\n"})
    with pytest.raises(ConfigError, match="unsafe member") as err:
        fetch_all(data_dir, remote.as_uri(), datasets=["senteval"])
    assert "\n" not in str(err.value)
    assert list(data_dir.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_corrupt_archive_is_one_line_error(tmp_path: Path, data_dir: Path) -> None:
    remote = tmp_path / "bad"
    remote.mkdir()
    (remote / dl.SENTEVAL_TAR).write_bytes(b"not a tar archive" * 100)
    with pytest.raises(ConfigError, match="unreadable tar archive") as err:
        fetch_all(data_dir, remote.as_uri(), datasets=["senteval"])
    assert str(err.value).startswith(f"{remote.as_uri()}/{dl.SENTEVAL_TAR}: ")
    assert "\n" not in str(err.value)
    assert list(data_dir.iterdir()) == []


def test_archive_without_prefix_extracts_as_is(tmp_path: Path) -> None:
    write_tar(tmp_path / "plain.tar", SENTEVAL)
    dl.extract_senteval(tmp_path / "plain.tar", tmp_path / "out")
    assert (tmp_path / "out" / "SNLI" / "s1.test").read_text() == SENTEVAL["SNLI/s1.test"]


def test_cli_download_then_check(
    server: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(dl, "LINE_COUNTS", LINES)
    monkeypatch.setattr(dl, "SENTEVAL_FILES", FILES)
    monkeypatch.setenv("SPARSECSE_DATA_DIR", str(data_dir))
    assert dl.main(["check"]) == 1
    assert "missing  wiki1m" in capsys.readouterr().out
    assert dl.main(["download", "--base-url", server]) == 0
    assert dl.main(["check"]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "ok       senteval",
        "ok       wiki1m",
        "ok       nli",
    ]


@pytest.mark.slow
def test_console_script_exit_status(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sparsecse.download", "check", "--data-dir", str(tmp_path)]
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
