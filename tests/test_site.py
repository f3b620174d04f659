"""The documentation site and the README's results block, both generated from the code and the committed results.

The two strict builds are slow-marked (each renders twelve executed notebooks, ~15 s); what they rely on is also
checked here without a build: the generated reference, the Results pages and nav, the nav's optional pages, and
the README block.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import yaml
from pydantic import BaseModel

from redpo.analysis.plots import FIGURES
from redpo.config import REPO_ROOT, Profile
from redpo.site import readme, reference, results
from redpo.site.mkdocs_hooks import _nav

RESULTS = REPO_ROOT / "results"
COMMITTED = tuple(yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())["extra"]["results_profiles"])
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent, env=ENV, capture_output=True, text=True, timeout=900,
    )


# ---- the whole site ---------------------------------------------------------------------------------------
@pytest.mark.slow  # ~15 s: twelve executed notebooks are rendered
def test_the_site_builds_strict_with_every_page_figure_and_notebook(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = build(REPO_ROOT / "mkdocs.yml", site)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for page in ("index", "method/index", "data", "engines", "provenance", "usage", "reference/profile",
                 "results/index"):
        assert (site / f"{page}.html").is_file(), page  # plain .html files: browsable from disk
    assert "generation.n_per_relation" in (site / "reference" / "profile.html").read_text()
    for profile in COMMITTED:
        out = site / "results" / profile
        gallery = (out / "all-figures.html").read_text()
        for png in (RESULTS / profile / "figures").glob("*.png"):
            assert f"figures/{png.name}" in gallery and (out / "figures" / png.name).is_file(), png
        overview = (out / "index.html").read_text()
        for nb in (RESULTS / profile / "notebooks").glob("*.ipynb"):
            assert (out / "notebooks" / f"{nb.stem}.html").is_file() and f"notebooks/{nb.stem}.html" in overview
        for rel in {rel for spec in FIGURES.values() for rel in spec.inputs}:
            assert (out / rel).is_file() == (RESULTS / profile / rel).is_file(), rel


@pytest.mark.slow  # ~15 s: a whole build
def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """The site's own mkdocs.yml over a copy of its pages: one link to a page that does not exist must fail the
    build, naming the link."""
    shutil.copytree(REPO_ROOT / "docs", tmp_path / "docs")
    (tmp_path / "results").symlink_to(RESULTS)
    config = (REPO_ROOT / "mkdocs.yml").read_text()
    (tmp_path / "mkdocs.yml").write_text(config.replace("  - redpo/", f"  - {REPO_ROOT}/redpo/"))  # hooks, watch
    page = tmp_path / "docs" / "data.md"
    page.write_text(page.read_text() + "\nSee [the formats](formats-gone.md).\n")

    proc = build(tmp_path / "mkdocs.yml", tmp_path / "site")

    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "'formats-gone.md'" in warnings[0], log[-3000:]
    assert "Aborted with 1 warnings in strict mode" in log


def test_optional_pages_join_the_nav_once_they_exist(tmp_path: Path) -> None:
    """Pages that other work adds later (``extra.optional_pages``) are left out while missing, so the strict build
    passes before they land; a missing page that is not optional stays in the nav, where the build refuses it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    config = SimpleNamespace(docs_dir=str(docs), config_file_path=str(tmp_path / "mkdocs.yml"),
                             extra={"optional_pages": ["cluster.md"], "results_profiles": []})
    nav = [{"Home": "index.md"}, {"Cluster": "cluster.md"}, {"Method": ["method/index.md", {"Gone": "gone.md"}]}]
    assert _nav(nav, config) == [{"Home": "index.md"}, {"Method": ["method/index.md", {"Gone": "gone.md"}]}]
    (docs / "cluster.md").write_text("# Cluster\n")
    assert {"Cluster": "cluster.md"} in _nav(nav, config)


# ---- the profile reference --------------------------------------------------------------------------------
def _config_copy(tmp_path: Path, edit: tuple[str, str]) -> ModuleType:
    """``redpo/config.py`` with one text edit, imported as a module of its own (pydantic reads each field's
    docstring from that module's source)."""
    source = (REPO_ROOT / "redpo" / "config.py").read_text()
    assert source.count(edit[0]) == 1, edit[0]
    path = tmp_path / "config_copy.py"
    path.write_text(source.replace(*edit))
    spec = importlib.util.spec_from_file_location("config_copy", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["config_copy"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["config_copy"]
    return module


def test_the_profile_reference_follows_the_field_docstrings(tmp_path: Path) -> None:
    """Deleting a field's docstring in config.py changes the generated reference at that field, and only there."""
    docstring = '    """Valid samples wanted per relation and arm."""\n'
    page = reference.profile_reference(Profile, settings={})
    edited = reference.profile_reference(_config_copy(tmp_path, (docstring, "")).Profile, settings={})

    assert "Valid samples wanted per relation and arm." in page
    changed = [(a, b) for a, b in zip(page.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert changed == [("  Valid samples wanted per relation and arm.", f"  {reference.UNDOCUMENTED}")]
    assert page.splitlines()[page.splitlines().index(changed[0][0]) - 1].startswith(
        "- **`generation.n_per_relation`** · `int` ≥ 1 · default `8` · keyed")


def test_the_reference_lists_every_field_with_its_identity_mark() -> None:
    page = reference.profile_reference()
    for prefix, section in reference.sections(Profile):
        for name, field in section.model_fields.items():
            if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
                assert f"- **`{prefix}{name}`** · " in page, prefix + name
    assert "**`generator.server.read_timeout`** · `float` > 0 · default `1200.0` · run only" in page
    assert "**`generator.sampling.stop`** · `list[str]` · default `[]` · keyed when set" in page
    assert "profiles: `cpu` `8`" in page  # generation.n_per_relation as cpu.yaml sets it


# ---- the Results pages ------------------------------------------------------------------------------------
def test_every_committed_run_has_a_results_part() -> None:
    """A run committed under results/ (its executed notebooks tracked by git) is listed in ``results_profiles``."""
    tracked = subprocess.run(["git", "ls-files", "results/*/notebooks/*.ipynb"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=False)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: which runs are committed is unknown")
    runs = {Path(line).parts[1] for line in tracked.stdout.splitlines()}
    assert runs and runs == set(COMMITTED), "mkdocs.yml's extra.results_profiles must list every committed run"


@pytest.mark.parametrize("profile", COMMITTED)
def test_the_results_pages_reach_every_figure_input_and_notebook(profile: str) -> None:
    gallery = results.figures_page(RESULTS, profile)
    for png in (RESULTS / profile / "figures").glob("*.png"):
        assert png.stem in FIGURES, f"{png.name} is not in the registry, so no page shows what it is drawn from"
        assert f"(figures/{png.name})" in gallery
        for rel in FIGURES[png.stem].inputs:
            assert f"[`{rel}`]({rel})" in gallery or not (RESULTS / profile / rel).is_file()
    for name in FIGURES:  # drawn, or listed once as not drawn with the reason
        assert gallery.count(f"(figures/{name}.png)") + gallery.count(f"- `{name}`: ") == 1, name
    nav = results.results_nav(RESULTS, [profile])[1][profile]
    notebooks = next(entry["Notebooks"] for entry in nav if "Notebooks" in entry)
    linked = {path for entry in notebooks for path in entry.values()}
    assert linked == {f"results/{profile}/notebooks/{nb.name}" for nb in (RESULTS / profile / "notebooks").glob(
        "*.ipynb")}
    assert f"results/{profile}/RUNLOG.md" in {v for entry in nav for v in entry.values() if isinstance(v, str)}
    page = results.profile_page(RESULTS, profile)
    if results.measures_claims(RESULTS / profile):
        assert readme.claims_table(RESULTS, profile) in page
    else:  # the run's own tables, whole, in place of eight "not run" rows
        for table in (RESULTS / profile / "tables").glob("ladder_*.md"):
            assert table.read_text().strip() in page, table.name
        assert "| claim | verdict |" not in page


def _run(root: Path, claims: list[str] | None) -> Path:
    """A results folder with one table, one figure, one notebook and, unless None, a claims.csv of these effects."""
    run = root / "x"
    for rel in ("tables/ladder_gap.md", "figures/ladder_f1.png", "notebooks/06_gap_ladder.ipynb"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
    (run / "tables" / "ladder_gap.md").write_text("| piece | points |\n|---|---|\n| gap | +33.0 |\n")
    (run / "figures" / "ladder_f1.png").write_bytes(b"png")
    (run / "notebooks" / "06_gap_ladder.ipynb").write_text('{"cells": []}')
    if claims is not None:
        rows = [f'{i},"statement {i}",v,p,"{effect}",,,paper,rule' for i, effect in enumerate(claims, 1)]
        (run / "tables" / "claims.csv").write_text(
            "claim,statement,verdict,primary,effect,ci_half_width,holm_p,paper,rule\n" + "\n".join(rows) + "\n")
    return run


@pytest.mark.parametrize("claims", [None, ["not run (no metrics/re_results.json)", "not run"]])
def test_a_run_without_claims_shows_its_own_tables_and_figures(tmp_path: Path, claims: list[str] | None) -> None:
    """A run of notebooks 00 and 06 alone has no claim to show (no claims.csv, or every effect *not run*): its page
    shows its tables and figures instead, and the nav calls it Results."""
    _run(tmp_path, claims)
    page = results.profile_page(tmp_path, "x")
    assert page.startswith("# `x`: results") and "| gap | +33.0 |" in page and "(figures/ladder_f1.png)" in page
    assert "| claim | verdict |" not in page and "(its notebooks: 06)" in page
    assert results.results_nav(tmp_path, ["x"])[1]["x"][0] == {"Results": "results/x/index.md"}


def test_a_run_with_one_measured_claim_shows_the_claims_table(tmp_path: Path) -> None:
    _run(tmp_path, ["not run", "+3.2 [-6.4, 13.1] Δ cosine ×100 (95% CI), n = 17 relations"])
    page = results.profile_page(tmp_path, "x")
    assert page.startswith("# `x`: claims") and readme.claims_table(tmp_path, "x") in page
    assert "| gap | +33.0 |" not in page
    assert results.results_nav(tmp_path, ["x"])[1]["x"][0] == {"Claims": "results/x/index.md"}


# ---- the README's results block ---------------------------------------------------------------------------
def test_the_readme_claims_block_is_what_the_script_writes() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.block_profiles(text) == ["cpu-full"]
    assert readme.fill_blocks(text, RESULTS) == text, "run `python -m redpo readme`"


def test_a_hand_edit_of_one_number_in_the_readme_block_is_caught(tmp_path: Path) -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- claims:cpu-full start")
    edited = text[:start] + text[start:].replace("[-4.3, -0.7]", "[-4.3, -0.8]", 1)
    assert edited != text
    copy = tmp_path / "README.md"
    copy.write_text(edited, encoding="utf-8")

    check = subprocess.run([sys.executable, "-m", "redpo", "readme", "--check", "--file", str(copy)],
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "differs from the committed claims tables" in check.stderr
    assert readme.fill_blocks(edited, RESULTS) == text  # and the script puts the committed number back


def test_the_readme_block_names_each_claim_with_its_verdict_and_ci() -> None:
    table = readme.claims_table(RESULTS, "cpu-full")
    assert len(table.splitlines()) == 2 + 8
    assert "| 4. At small K, generated data comes close to manual data" in table
    row = "| **does not hold** | gen:obo_dpo@pair vs manual | 38.6 [33.6, 44.4] % of manual's micro-F1 | 5.4 |"
    assert row in table
    assert readme.short_effect("leakage check ok (adapter A: 150 pairs, 0 leaking)") == "leakage check ok"
