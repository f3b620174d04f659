"""``make data``: copy the datasets from a mirror (or download SemEval's pinned KnowPrompt files), and hash them.

Copies are idempotent (same size and sha256: skipped) and downloads are checked against pinned sha256s, so
``make data`` can run any number of times and the manifest's data hashes identify exactly what was read.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redpo.config import REPO_ROOT, Profile
from redpo.core.hashing import sha256_file
from redpo.core.io import DataError, atomic_write

KNOWPROMPT_COMMIT = "5f1ce468c33d9d8f4067a3edd70bbf810bc5fff4"
KNOWPROMPT_RAW = f"https://raw.githubusercontent.com/zjunlp/KnowPrompt/{KNOWPROMPT_COMMIT}/dataset/semeval"
# sha256 of the files at that commit (identical to the copies in the shared data mirror).
SEMEVAL_KNOWPROMPT_SHA256 = {
    "train.txt": "5a53be5e2dfbf865f77c287deec7b9e8a12be333ffb6157bfb5a692250a06220",
    "val.txt": "a91170e7c19354a895a58e582bf7fad43994467a0d27a8632319a70840b88e02",
    "test.txt": "1f33efe3db4dc6ff99f52416331682f3ec6759de526786d3629e6b43f8020795",
    "rel2id.json": "8f1ba2782e0df0d456ebc8f1a2d9d39de6c703f44a75e68e1588291919e25b64",
}
MIRROR_FOLDERS = ("semeval2010_task8", "fewrel")


def copy_if_changed(src: Path, dst: Path) -> bool:
    """Copy unless ``dst`` already has the same size and sha256; returns whether it copied."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and sha256_file(dst) == sha256_file(src):
        return False
    atomic_write(dst, src.read_bytes())
    return True


def default_mirror() -> Path | None:
    """``REDPO_DATA_MIRROR``, else ``../shared/data`` beside the repository, if it holds SemEval."""
    env = os.environ.get("REDPO_DATA_MIRROR")
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"
    return candidate if (candidate / "semeval2010_task8").is_dir() else None


def fetch_data(
    dest: Path | str,
    mirror: Path | str | None = None,
    *,
    opener: Callable[..., Any] = urllib.request.urlopen,
    timeout: float = 30.0,
) -> list[str]:
    """Fill ``dest`` (``REDPO_DATA_DIR``) for ``make data``; returns one line per file for the log.

    With a mirror: copy its ``semeval2010_task8/`` and ``fewrel/`` trees (idempotent: files with the same
    size and sha256 are skipped). Without: download SemEval's KnowPrompt split from GitHub at a pinned
    commit and check each file's sha256.
    """
    dest = Path(dest)
    if mirror is not None:
        return _copy_mirror(Path(mirror), dest)
    folder = dest / "semeval2010_task8" / "knowprompt_split"
    folder.mkdir(parents=True, exist_ok=True)
    log = []
    for name, sha in SEMEVAL_KNOWPROMPT_SHA256.items():
        target = folder / name
        if target.is_file() and sha256_file(target) == sha:
            log.append(f"unchanged {target}")
            continue
        url = f"{KNOWPROMPT_RAW}/{name}"
        try:
            with opener(url, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise DataError(
                f"{target}: cannot download {url} ({getattr(err, 'reason', err)}). If this machine is "
                "offline, pass a mirror (`make data MIRROR=/path/to/data` or REDPO_DATA_MIRROR), or fetch "
                "the file elsewhere and put it at this path"
            ) from None
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise DataError(
                f"{target}: downloaded {url} but its sha256 is {got}, expected {sha}; "
                "the download was corrupted or redirected — retry, or copy the file from a mirror"
            )
        atomic_write(target, data)
        log.append(f"downloaded {target}")
    return log


def _copy_mirror(mirror: Path, dest: Path) -> list[str]:
    missing = [f for f in MIRROR_FOLDERS if not (mirror / f).is_dir()]
    if missing:
        raise DataError(
            f"{mirror}: mirror lacks {', '.join(missing)}/; point REDPO_DATA_MIRROR (or MIRROR=) at a folder "
            f"holding {' and '.join(MIRROR_FOLDERS)}/"
        )
    log = []
    for folder in MIRROR_FOLDERS:
        for src in sorted(p for p in (mirror / folder).rglob("*") if p.is_file()):
            dst = dest / src.relative_to(mirror)
            log.append(f"{'copied' if copy_if_changed(src, dst) else 'unchanged'} {dst}")
    return log


def data_file_hashes(profile: Profile) -> dict[str, str]:
    """sha256 of every file in the dataset folder (not sub-folders), keyed by path under the data dir (or the
    absolute path, for a dataset of your own kept elsewhere)."""
    folder = profile.dataset_dir
    if not folder.is_dir():
        return {}
    root = profile.data_dir.absolute()
    return {
        (p.absolute().relative_to(root) if p.absolute().is_relative_to(root) else p.absolute()).as_posix():
        sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file()
    }
