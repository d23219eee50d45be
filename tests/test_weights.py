"""`fasterrcnn weights download`: the hash prefix checked, atomic, and a clear offline message."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import pytest

from fasterrcnn.cli import main
from fasterrcnn.errors import CheckpointError
from fasterrcnn.weights import WEIGHTS, WeightFile, download


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fake(monkeypatch, payload: bytes, name: str = "fasterrcnn_resnet50_fpn"):
    """Point `name` at a file whose hash prefix matches `payload`, served by a fake urlopen."""
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    monkeypatch.setitem(WEIGHTS, name, WeightFile(name, f"https://example.invalid/models/{name}_coco-{prefix}.pth"))
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: _Response(payload))
    return prefix


def test_download_checks_the_hash_prefix_and_reuses_the_file(monkeypatch, tmp_path, capsys):
    prefix = _fake(monkeypatch, b"weights" * 1000)
    assert main(["weights", "download", "fasterrcnn_resnet50_fpn", "--dir", str(tmp_path)]) == 0
    path = tmp_path / f"fasterrcnn_resnet50_fpn_coco-{prefix}.pth"
    assert path.read_bytes() == b"weights" * 1000
    assert "SHA-256 prefix checked" in capsys.readouterr().out
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("fetched twice"))
    assert download("fasterrcnn_resnet50_fpn", tmp_path) == path


def test_a_corrupt_download_is_refused_and_removed(monkeypatch, tmp_path):
    _fake(monkeypatch, b"good bytes")
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: _Response(b"truncated"))
    with pytest.raises(CheckpointError, match="does not start with"):
        download("fasterrcnn_resnet50_fpn", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_offline_says_which_file_to_fetch_and_where(monkeypatch, tmp_path, capsys):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert main(["weights", "download", "fasterrcnn_mobilenet_v3_large_fpn", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    w = WEIGHTS["fasterrcnn_mobilenet_v3_large_fpn"]
    assert w.url in err and str(tmp_path / w.filename) in err and err.count("\n") == 1
    assert main(["weights", "download", "alexnet"]) == 2
    assert "available: fasterrcnn_resnet50_fpn" in capsys.readouterr().err


def test_the_official_names_carry_their_hash_prefixes():
    assert WEIGHTS["fasterrcnn_resnet50_fpn"].filename == "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    assert WEIGHTS["fasterrcnn_resnet50_fpn"].hash_prefix == "258fb6c6"
    assert {w.hash_prefix for w in WEIGHTS.values()} == {"258fb6c6", "dd69338a", "fb6a3cc7", "907ea3f9"}
