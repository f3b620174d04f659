"""The README's results summary: a block per profile, written from ``results/<profile>/tables/claims.csv``.

The block sits between two HTML comments that name the profile; ``python -m redpo readme`` rewrites what lies
between them, and ``python -m redpo readme --check`` (run by the tests) fails when a hand edit or a rebuilt claims
report left them apart. A copy by hand drifted as soon as the report changed a rule.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from redpo.config import ConfigError
from redpo.core.io import atomic_write, require_file

START = "<!-- claims:{profile} start: written by `python -m redpo readme` from {source}; do not edit by hand -->"
END = "<!-- claims:{profile} end -->"
BLOCK_RE = re.compile(r"<!-- claims:(?P<profile>[A-Za-z0-9._-]+) start\b[^\n]*-->\n(?P<body>.*?)"
                      r"<!-- claims:(?P=profile) end -->", re.DOTALL)
CI_MARK = " (95% CI)"


def claims_source(profile: str) -> str:
    return f"results/{profile}/tables/claims.csv"


def short_effect(effect: str) -> str:
    """The effect and its CI with their unit, without the counts and notes after them: ``+3.2 [-6.4, 13.1] Δ cosine
    ×100``. An effect without a CI (the leakage check) keeps its first clause."""
    if CI_MARK in effect:
        return effect.split(CI_MARK, 1)[0]
    return effect.split(" (", 1)[0]


def claim_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``claims.csv``."""
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def claims_table(results_root: Path, profile: str) -> str:
    """The markdown table of one profile's claims: statement, verdict, primary comparison, effect with its 95% CI,
    the CI's half-width."""
    path = require_file(results_root / profile / "tables" / "claims.csv", f"profile {profile}'s claims table",
                        f"run `python -m redpo figures --profile {profile}`, or fix the profile in the block's markers")
    rows = claim_rows(path)
    lines = ["| claim | verdict | primary comparison | effect [95% CI] | CI ± |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row['claim']}. {row['statement']}", f"**{row['verdict']}**", row["primary"],
                 short_effect(row["effect"]), row["ci_half_width"]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def block(results_root: Path, profile: str) -> str:
    """The whole block, markers included."""
    source = claims_source(profile)
    return "\n".join([START.format(profile=profile, source=source), claims_table(results_root, profile),
                      END.format(profile=profile)])


def fill_blocks(text: str, results_root: Path) -> str:
    """``text`` with every claims block rewritten from its profile's committed ``claims.csv``."""
    return BLOCK_RE.sub(lambda m: block(results_root, m["profile"]), text)


def block_profiles(text: str) -> list[str]:
    return [m["profile"] for m in BLOCK_RE.finditer(text)]


def refresh_blocks(path: Path, results_root: Path, *, check: bool) -> tuple[bool, str]:
    """``(current, message)`` for the file's claims blocks: rewritten from the committed tables (``current`` is then
    always true), or with ``check`` only compared (false when a block differs, so a stale README fails a test)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; name the markdown file with --file")
    text = path.read_text(encoding="utf-8")
    profiles = ", ".join(block_profiles(text))
    if not profiles:
        raise ConfigError(f"{path}: no claims block (<!-- claims:PROFILE start ... --> ... <!-- claims:PROFILE end "
                          "-->); add one where the results summary belongs")
    fresh = fill_blocks(text, results_root)
    if check:
        if fresh != text:
            return False, (f"{path}: the claims block of {profiles} differs from the committed claims tables; run "
                           "`python -m redpo readme`")
        return True, f"{path}: the claims block of {profiles} matches the committed claims tables"
    if fresh != text:
        atomic_write(path, fresh)
    return True, f"{path}: the claims block of {profiles} {'rewritten' if fresh != text else 'already current'}"

