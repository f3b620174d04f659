"""Results-folder I/O: atomic writes, and the manifest entries that ``python -m redpo figures`` refreshes."""

from __future__ import annotations

from pathlib import Path

from redpo.core.io import atomic_write, read_json, write_json
from redpo.core.manifest import record_rebuilt_files


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"
    write_json(target, {"b": 1, "a": "é"})
    assert target.read_text() == '{\n  "a": "é",\n  "b": 1\n}\n'
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_figures_refresh_only_the_rebuilt_entries_of_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "cpu"
    (root / "tables").mkdir(parents=True)
    (root / "kshot").mkdir()
    (root / "tables" / "re_main.md").write_text("new table\n")
    (root / "claims.md").write_text("claims\n")
    stale = {"sha256": "0" * 64, "bytes": 1}
    write_json(root / "manifest.json", {"profile": "cpu", "files": {
        "tables/re_main.md": stale, "tables/re_claims.md": stale, "claims.md": stale,
        "kshot/k-shot/8-1/train.txt": stale,  # not rebuilt, and absent here: its entry stays as the run wrote it
    }})
    record_rebuilt_files(root)
    files = read_json(root / "manifest.json")["files"]
    assert sorted(files) == ["claims.md", "kshot/k-shot/8-1/train.txt", "tables/re_main.md"]
    assert files["tables/re_main.md"]["bytes"] == len("new table\n") and files["claims.md"] != stale
    assert files["kshot/k-shot/8-1/train.txt"] == stale
    before = (root / "manifest.json").read_bytes()
    record_rebuilt_files(root)
    assert (root / "manifest.json").read_bytes() == before  # nothing time-dependent: a no-op rebuild is a no-op


def test_no_manifest_no_refresh(tmp_path: Path) -> None:
    assert record_rebuilt_files(tmp_path) == {}
    assert not (tmp_path / "manifest.json").exists()
