"""Content hashes: the manifest, the data fetcher and the model registry identify files by sha256, and every cache
key (RE runs, the oracle, the consistency judge) hashes a JSON description of what determines the result."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks so multi-GB weights never sit in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(obj: Any) -> str:
    """sha256 of ``obj`` as JSON with sorted keys: the same description always gives the same key, whatever order
    its dict was built in. The bytes are ``json.dumps(obj, sort_keys=True)``'s, so keys made that way stay valid."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()
