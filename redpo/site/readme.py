"""The README's results summary: a block per profile, written from ``results/<profile>/tables/claims.csv``.

The block sits between two HTML comments that name the profile; ``python -m redpo readme`` rewrites what lies
between them, and ``python -m redpo readme --check`` (run by the tests) fails when a hand edit or a rebuilt claims
report left them apart. A copy by hand drifted as soon as the report changed a rule.

An *editions* block (``<!-- editions:FIRST+SECOND start ... -->``) puts two editions of a run side by side, per
claim: each edition's verdict and effect with its CI, the paper's number, and one line on what changed it. The
numbers come from both ``claims.csv`` files, each edition's name (:attr:`redpo.config.ClaimsConfig.edition`) from
the title of its ``claims.md``; the lines are the one thing written by a person, in the second
edition's ``what_changed.yaml`` (:data:`CHANGES_FILE`), because why a verdict moved is a reading of the two runs,
not a number.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from redpo.analysis.report_title import report_edition
from redpo.config import ConfigError, safe_yaml
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
    rows = claim_rows(_claims_file(results_root, profile))
    lines = ["| claim | verdict | primary comparison | effect [95% CI] | CI ± |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row['claim']}. {row['statement']}", f"**{row['verdict']}**", row["primary"],
                 short_effect(row["effect"]), row["ci_half_width"]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


EDITIONS_START = ("<!-- editions:{first}+{second} start: written by `python -m redpo readme` from {sources}; do not "
                  "edit by hand -->")
EDITIONS_END = "<!-- editions:{first}+{second} end -->"
EDITIONS_RE = re.compile(r"<!-- editions:(?P<first>[A-Za-z0-9._-]+)\+(?P<second>[A-Za-z0-9._-]+) start\b[^\n]*-->\n"
                         r"(?P<body>.*?)<!-- editions:(?P=first)\+(?P=second) end -->", re.DOTALL)
CHANGES_FILE = "what_changed.yaml"
"""In the second edition's results folder: ``since: <first edition's profile>`` and ``claims: {<n>: <one line>}``,
one line per claim of its report on what changed the claim between the editions."""


def _claims_file(results_root: Path, profile: str) -> Path:
    """A profile's committed ``tables/claims.csv``, or an error saying how to make it."""
    return require_file(results_root / profile / "tables" / "claims.csv", f"profile {profile}'s claims table",
                        f"run `python -m redpo figures --profile {profile}`, or fix the profile in the block's markers")


def what_changed(results_root: Path, first: str, second: str, claims: list[str]) -> dict[str, str]:
    """``{claim: line}`` from ``results/<second>/what_changed.yaml``, checked: written against ``first``, one
    non-empty line for each of ``claims`` (either report's) and for no other."""
    path = require_file(results_root / second / CHANGES_FILE, f"the lines on what changed each claim since {first}",
                        f"write it: `since: {first}` and `claims:` with one line per claim number")
    data = safe_yaml(path.read_text(encoding="utf-8"), str(path), "fix the YAML")
    if not isinstance(data, dict) or data.get("since") != first or not isinstance(data.get("claims"), dict):
        raise ConfigError(f"{path}: must hold `since: {first}` and a `claims:` mapping of claim number to one line")
    lines = {str(k): v for k, v in data["claims"].items()}
    missing = [c for c in claims if not (isinstance(lines.get(c), str) and lines[c].strip())]
    extra = sorted(set(lines) - set(claims))
    if missing or extra:
        raise ConfigError(f"{path}: " + "; ".join(
            ([f"no line for claim(s) {', '.join(missing)}"] if missing else [])
            + ([f"claim(s) {', '.join(extra)} are in neither report"] if extra else []))
            + "; give each claim of the report exactly one line")
    return {c: " ".join(lines[c].split()) for c in claims}


def editions_table(results_root: Path, first: str, second: str) -> str:
    """Per claim of either edition's report: both editions' verdict and effect [95% CI], the paper's number and what
    changed it. A claim one report lacks shows an empty cell for that edition."""
    old = {row["claim"]: row for row in claim_rows(_claims_file(results_root, first))}
    new = {row["claim"]: row for row in claim_rows(_claims_file(results_root, second))}
    claims = sorted(set(old) | set(new), key=lambda c: (len(c), c))  # numeric order of the claim numbers
    changed = what_changed(results_root, first, second, claims)
    lines = [f"| claim | `{first}` | `{second}` | paper | what changed it |", "|---|---|---|---|---|"]
    for claim in claims:
        before, after = old.get(claim), new.get(claim)
        either = after or before or {}
        cells = [f"{claim}. {either['statement']}",
                 f"**{before['verdict']}** {short_effect(before['effect'])}" if before else "",
                 f"**{after['verdict']}** {short_effect(after['effect'])}" if after else "",
                 either["paper"], changed[claim]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def edition_lines(results_root: Path, first: str, second: str) -> list[str]:
    """One line per edition that names itself in its committed ``claims.md``: what the profile's folder held, its
    generator and pipeline version, so the table's columns say more than two folder names."""
    lines = []
    for profile in (first, second):
        report = require_file(results_root / profile / "claims.md", f"profile {profile}'s claims report",
                              f"run `python -m redpo figures --profile {profile}`")
        if edition := report_edition(report, profile):
            lines.append(f"- `{profile}`: {edition}")
    return [*lines, ""] if lines else []


def editions_block(results_root: Path, first: str, second: str) -> str:
    """The whole editions block, markers included: each edition's name, then the table."""
    sources = (f"{claims_source(first)}, {claims_source(second)}, both claims.md titles and "
               f"results/{second}/{CHANGES_FILE}")
    return "\n".join([EDITIONS_START.format(first=first, second=second, sources=sources),
                      *edition_lines(results_root, first, second), editions_table(results_root, first, second),
                      EDITIONS_END.format(first=first, second=second)])


def block(results_root: Path, profile: str) -> str:
    """The whole block, markers included."""
    source = claims_source(profile)
    return "\n".join([START.format(profile=profile, source=source), claims_table(results_root, profile),
                      END.format(profile=profile)])


def fill_blocks(text: str, results_root: Path) -> str:
    """``text`` with every claims block rewritten from its profile's committed ``claims.csv``, and every editions
    block from both editions' tables and the second's ``what_changed.yaml``."""
    text = BLOCK_RE.sub(lambda m: block(results_root, m["profile"]), text)
    return EDITIONS_RE.sub(lambda m: editions_block(results_root, m["first"], m["second"]), text)


def block_profiles(text: str) -> list[str]:
    """The profiles of the claims blocks, then each editions block as ``FIRST+SECOND``."""
    return ([m["profile"] for m in BLOCK_RE.finditer(text)]
            + [f"{m['first']}+{m['second']}" for m in EDITIONS_RE.finditer(text)])


def refresh_blocks(path: Path, results_root: Path, *, check: bool) -> tuple[bool, str]:
    """``(current, message)`` for the file's claims blocks: rewritten from the committed tables (``current`` is then
    always true), or with ``check`` only compared (false when a block differs, so a stale README fails a test)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; name the markdown file with --file")
    text = path.read_text(encoding="utf-8")
    profiles = ", ".join(block_profiles(text))
    if not profiles:
        raise ConfigError(f"{path}: no claims block (<!-- claims:PROFILE start ... --> ... <!-- claims:PROFILE end "
                          "-->) and no editions block (<!-- editions:FIRST+SECOND start ... -->); add one where "
                          "the results summary belongs")
    fresh = fill_blocks(text, results_root)
    if check:
        if fresh != text:
            return False, (f"{path}: the claims block of {profiles} differs from the committed claims tables; run "
                           "`python -m redpo readme`")
        return True, f"{path}: the claims block of {profiles} matches the committed claims tables"
    if fresh != text:
        atomic_write(path, fresh)
    return True, f"{path}: the claims block of {profiles} {'rewritten' if fresh != text else 'already current'}"

