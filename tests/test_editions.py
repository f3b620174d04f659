"""Two editions of a run side by side: the README's editions block, written from both claims tables."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from redpo.analysis.report_title import report_title
from redpo.config import ClaimsConfig, ConfigError
from redpo.core.io import DataError
from redpo.site import readme

REPO = Path(__file__).resolve().parent.parent
FIELDS = ["claim", "statement", "verdict", "primary", "effect", "ci_half_width", "holm_p", "paper", "rule"]


def _claims(root: Path, profile: str, rows: list[tuple[str, str, str]]) -> None:
    path = root / profile / "tables" / "claims.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        for claim, verdict, effect in rows:
            writer.writerow({"claim": claim, "statement": f"statement {claim}", "verdict": verdict, "primary": "a vs b",
                             "effect": effect, "ci_half_width": "1.0", "holm_p": "", "paper": f"paper {claim}",
                             "rule": "r"})


def _report(root: Path, profile: str, edition: str = "") -> None:
    (root / profile).mkdir(parents=True, exist_ok=True)
    (root / profile / "claims.md").write_text(report_title(profile, edition) + "\n\nbody\n")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _report(tmp_path, "first", "first edition (0.5B, pipeline 1)")
    _report(tmp_path, "second")
    _claims(tmp_path, "first", [("3", "does not hold", "-2.7 [-4.3, -0.7] Δ micro-F1 points (95% CI), n = 10"),
                                ("4", "does not hold", "38.6 [33.6, 44.4] % of manual (95% CI)")])
    _claims(tmp_path, "second", [("3", "holds", "+1.9 [0.4, 3.3] Δ micro-F1 points (95% CI), n = 10"),
                                 ("4", "inconclusive", "55.0 [48.0, 62.0] % of manual (95% CI)"),
                                 ("9", "holds", "new claim")])
    (tmp_path / "second" / readme.CHANGES_FILE).write_text(
        "since: first\nclaims:\n  3: the adapters trained on 40 pairs per relation\n  4: own quotas\n  9: new\n")
    return tmp_path


def test_each_claim_shows_both_editions_the_paper_and_what_changed(root: Path) -> None:
    table = readme.editions_table(root, "first", "second").splitlines()
    assert table[0] == "| claim | `first` | `second` | paper | what changed it |"
    assert table[2] == ("| 3. statement 3 | **does not hold** -2.7 [-4.3, -0.7] Δ micro-F1 points | **holds** +1.9 "
                        "[0.4, 3.3] Δ micro-F1 points | paper 3 | the adapters trained on 40 pairs per relation |")
    assert table[4].startswith("| 9. statement 9 |  | **holds** new claim |")  # the first edition had no claim 9


def test_a_claim_only_the_first_edition_had_keeps_its_row(root: Path) -> None:
    _claims(root, "first", [("3", "does not hold", "-2.7 [-4.3, -0.7] Δ micro-F1 points (95% CI)"),
                            ("4", "does not hold", "38.6 [33.6, 44.4] % of manual (95% CI)"),
                            ("5", "holds", "+1.0 [0.1, 2.0] Δ micro-F1 points (95% CI)")])
    with pytest.raises(ConfigError, match=r"no line for claim\(s\) 5"):
        readme.editions_table(root, "first", "second")
    (root / "second" / readme.CHANGES_FILE).write_text("since: first\nclaims: {3: a, 4: b, 5: dropped, 9: c}\n")
    rows = readme.editions_table(root, "first", "second").splitlines()[2:]
    assert [r.split(".")[0] for r in rows] == ["| 3", "| 4", "| 5", "| 9"]
    assert rows[2] == "| 5. statement 5 | **holds** +1.0 [0.1, 2.0] Δ micro-F1 points |  | paper 5 | dropped |"


def test_the_block_is_rewritten_in_place_and_a_stale_number_is_caught(root: Path, tmp_path: Path) -> None:
    fresh = readme.editions_block(root, "first", "second")
    text = f"intro\n{fresh}\noutro\n"
    assert readme.fill_blocks(text, root) == text and readme.block_profiles(text) == ["first+second"]
    stale = text.replace("+1.9", "+2.9")
    assert readme.fill_blocks(stale, root) == text
    page = tmp_path / "page.md"
    page.write_text(stale)
    assert readme.refresh_blocks(page, root, check=True)[0] is False


@pytest.mark.parametrize(("changes", "message"), [
    ("since: other\nclaims: {3: a, 4: b, 9: c}\n", "must hold `since: first`"),
    ("since: first\nclaims: {3: a, 9: c}\n", "no line for claim(s) 4"),
    ("since: first\nclaims: {3: a, 4: ' ', 9: c}\n", "no line for claim(s) 4"),
    ("since: first\nclaims: {3: a, 4: b, 9: c, 10: d}\n", "claim(s) 10 are in neither report"),
    ("since: first\nclaims: [3\n", "not valid YAML"),
])
def test_a_wrong_changes_file_is_one_error_naming_it(root: Path, changes: str, message: str) -> None:
    (root / "second" / readme.CHANGES_FILE).write_text(changes)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        readme.editions_table(root, "first", "second")
    assert str(root / "second" / readme.CHANGES_FILE) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_changes_file_says_what_to_write(root: Path) -> None:
    (root / "second" / readme.CHANGES_FILE).unlink()
    with pytest.raises(DataError, match=r"what_changed.yaml: the lines on what changed each claim since first not "
                                        r"found; write it: `since: first`"):
        readme.editions_table(root, "first", "second")


def test_the_committed_first_edition_renders_against_itself(tmp_path: Path) -> None:
    """The real claims table parses: the first edition set beside a copy of itself."""
    shutil.copytree(REPO / "results" / "cpu-full" / "tables", tmp_path / "cpu-full" / "tables")
    shutil.copytree(REPO / "results" / "cpu-full" / "tables", tmp_path / "copy" / "tables")
    lines = "\n".join(f"  {n}: unchanged" for n in range(1, 9))
    (tmp_path / "copy" / readme.CHANGES_FILE).write_text(f"since: cpu-full\nclaims:\n{lines}\n")
    table = readme.editions_table(tmp_path, "cpu-full", "copy").splitlines()
    assert len(table) == 10 and table[4].startswith("| 3. ") and table[4].count("**does not hold**") == 2


def test_each_edition_is_named_from_its_report_title(root: Path) -> None:
    """The block says what each folder was; an edition without a name adds no line, and a report whose title is
    not the claims report's is one error naming it."""
    block = readme.editions_block(root, "first", "second").splitlines()
    assert block[1:3] == ["- `first`: first edition (0.5B, pipeline 1)", ""] and block[3].startswith("| claim |")
    _report(root, "first")
    assert readme.editions_block(root, "first", "second").splitlines()[1].startswith("| claim |")
    (root / "second" / "claims.md").write_text("# something else\n")
    with pytest.raises(DataError, match=r"second/claims.md: its first line is not the claims report's title"):
        readme.edition_lines(root, "first", "second")


def test_the_report_title_names_the_edition() -> None:
    assert report_title("cpu-full") == "# Claims of the paper, checked on the `cpu-full` profile"
    assert report_title("v2", "second edition (x)").endswith("`v2` profile: second edition (x)")


def test_an_edition_is_one_line_and_a_title_that_runs_on_is_an_error(root: Path) -> None:
    with pytest.raises(ValueError, match="edition"):
        ClaimsConfig(edition="first edition\nsecond line")
    (root / "second" / "claims.md").write_text(report_title("second") + "s and more\n")
    with pytest.raises(DataError, match="not the claims report's title for `second`"):
        readme.edition_lines(root, "first", "second")
