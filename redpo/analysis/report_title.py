"""The claims report's title: the one line of ``claims.md`` that names the run's profile and its edition.

Kept apart from :mod:`redpo.analysis.report` because the README's editions block (:mod:`redpo.site.readme`) reads
each edition's name back from its committed report, and should not import the report's tables and plots for it.
"""

from __future__ import annotations

from pathlib import Path

from redpo.core.io import DataError

REPORT_TITLE = "# Claims of the paper, checked on the `{profile}` profile"
"""The claims report's first line; an edition's name follows it after ``": "``."""


def report_title(profile: str, edition: str = "") -> str:
    """The claims report's first line: the profile, then its edition (:attr:`redpo.config.ClaimsConfig.edition`)."""
    return REPORT_TITLE.format(profile=profile) + (f": {edition}" if edition else "")


def report_edition(report: Path, profile: str) -> str:
    """The edition a committed claims report names in its title, ``""`` where it names none: the README's editions
    table reads each edition's name from the report it was written with, not from a profile edited since."""
    with report.open(encoding="utf-8") as fh:
        title = fh.readline().rstrip("\n")
    bare = REPORT_TITLE.format(profile=profile)
    rest = title[len(bare):]
    if not title.startswith(bare) or (rest and not rest.startswith(": ")):
        raise DataError(f"{report}: its first line is not the claims report's title for `{profile}`; rebuild it "
                        f"with `python -m redpo figures --profile {profile}`")
    return rest.removeprefix(": ")
