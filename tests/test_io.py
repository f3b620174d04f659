"""Results-folder I/O: atomic writes, and the manifest entries that ``python -m redpo figures`` refreshes."""

from __future__ import annotations

import json
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
    assert set(read_json(root / "manifest.json")["rebuilt_git"]) == {"commit", "dirty"}  # the code that rewrote them
    before = (root / "manifest.json").read_bytes()
    record_rebuilt_files(root)
    assert (root / "manifest.json").read_bytes() == before  # nothing time-dependent: a no-op rebuild is a no-op


def test_no_manifest_no_refresh(tmp_path: Path) -> None:
    assert record_rebuilt_files(tmp_path) == {}
    assert not (tmp_path / "manifest.json").exists()


def test_two_processes_writing_one_file_never_collide(tmp_path: Path) -> None:
    """Each write goes through its own temporary file, so concurrent writers never remove each other's."""
    import subprocess
    import sys

    target = tmp_path / "shared.json"
    code = ("import sys; from pathlib import Path; from redpo.core.io import write_json\n"
            "for i in range(300): write_json(Path(sys.argv[1]), {'writer': sys.argv[2], 'i': i})")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), name], stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert json.loads(target.read_text())["i"] == 299
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.json"]  # no temporary left behind
