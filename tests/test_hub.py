"""`sparsecse-push`: what would reach the Hub, with huggingface_hub's repo creation and commit replaced
by recorders (no Hub can be reached here)."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import OfflineModeIsEnabled

from sparsecse.cli import push
from sparsecse.core.errors import ConfigError
from sparsecse.export import hub
from sparsecse.export.model_io import save_sparse_encoder


class Recorder:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        files = {op.path_in_repo: op.path_or_fileobj for op in operations}
        self.calls.append(("create_commit", repo_id, files, kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(HfApi, "create_repo", recorder.create_repo)
    monkeypatch.setattr(HfApi, "create_commit", recorder.create_commit)
    return recorder


@pytest.fixture
def export(make_encoder, tmp_path):
    from test_export import prune

    return save_sparse_encoder(prune(make_encoder("avg")), tmp_path / "model")


def test_push_uploads_every_file_of_the_export_in_one_commit(export, recorder, monkeypatch, capsys):
    (export / ".cache").mkdir()
    (export / ".cache" / "lock").write_text("")  # hidden: never published
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    assert push.main([str(export), "me/sparse-minilm", "--private"]) == 0
    (create, repo_id, options), (commit, _, files, commit_options) = recorder.calls
    assert (create, repo_id) == ("create_repo", "me/sparse-minilm")
    assert options == {"token": None, "private": True, "repo_type": "model", "exist_ok": True}
    assert commit == "create_commit" and commit_options["commit_message"] == "Upload a SparseCSE model"
    expected = {
        p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file() and ".cache" not in p.parts
    }
    assert set(files) == expected
    assert {"README.md", "config.json", "model.safetensors", "surgery.py", "layout.py", "modules.json",
            "tokenizer.json", "sparsecse.json", "1_Pooling/config.json"} <= set(files)  # fmt: skip
    assert all(files[name] == str(export / name) for name in files)
    assert "published as https://huggingface.co/me/sparse-minilm/commit/abc" in capsys.readouterr().out


def test_push_is_public_by_default_and_takes_a_token(export, recorder):
    hub.push_to_hub(export, "me/public", token="hf_given")
    (_, _, options), (_, _, _, commit_options) = recorder.calls
    assert options["private"] is False and options["token"] == commit_options["token"] == "hf_given"


def test_only_an_export_is_published(tmp_path, export, recorder, capsys):
    assert push.main([str(tmp_path / "nowhere"), "me/x"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"sparsecse-push: error: MODEL_DIR: no such directory {tmp_path}/nowhere"
    )
    (export / "README.md").unlink()
    with pytest.raises(ConfigError, match=r"is not a model this project exported \(no README.md\)$"):
        hub.push_to_hub(export, "me/x")
    (export / "README.md").write_text("card")
    (export / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match=r"holds pickled files \(pytorch_model.bin\): not published$"):
        hub.push_to_hub(export, "me/x")
    assert recorder.calls == []


def test_a_dry_run_lists_the_files_and_sends_nothing(export, recorder, capsys):
    assert push.main([str(export), "me/sparse-minilm", "--dry-run"]) == 0
    assert recorder.calls == []
    out = capsys.readouterr().out.splitlines()
    files = [p for p in export.rglob("*") if p.is_file()]
    assert {line.split()[0] for line in out[:-1]} == {p.relative_to(export).as_posix() for p in files}
    assert out[-1].startswith(f"sparsecse-push: dry run: {len(files)} files, ")
    assert out[-1].endswith("would go to the public repository me/sparse-minilm; nothing was sent")


def test_offline_the_push_is_one_line_naming_the_variable(export, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OfflineModeIsEnabled(
            "Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled."
        )

    monkeypatch.setattr(HfApi, "create_repo", offline)
    assert push.main([str(export), "me/sparse-minilm"]) == 2
    assert capsys.readouterr().err == (
        "sparsecse-push: error: HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it to publish "
        "(--dry-run shows what would go)\n"
    )
