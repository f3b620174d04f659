"""The site's Results section, one part per committed profile, written from ``results/<profile>/`` at build time.

Per profile: a page with the claims table (the README block's table, ``redpo.site.readme``) and the forest plot; a
page with every figure of the registry, what it shows and the input files it is rebuilt from (linked, and copied
into the site beside it); the executed notebooks, rendered as pages; the run log (``RUNLOG.md``); ``claims.md``
and the tables. Nothing is copied into ``docs/``: the build reads the committed files where they are.

A run that measured none of the paper's claims (a run of notebooks 00 and 06 alone, whose ``claims.csv`` says
*not run* for every primary comparison, or one with no ``claims.csv`` at all) gets its own tables and figures on
its first page instead: a table of eight *not run* rows would say nothing about what the run found.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redpo.analysis.plots import FIGURES
from redpo.analysis.stats import NOT_RUN
from redpo.config import PROFILES_DIR, safe_yaml
from redpo.core.manifest import RUNLOG_NAME as RUNLOG
from redpo.site.readme import claim_rows, claims_table

FIGURES_PAGE = "all-figures.md"
NavEntry = dict[str, Any]


def notebooks(profile_root: Path) -> list[Path]:
    return sorted((profile_root / "notebooks").glob("*.ipynb"))


def notebook_title(path: Path) -> str:
    """The notebook's first markdown heading (``00 · Data: …``), else its file name."""
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def static_files(results_root: Path, profile: str) -> list[str]:
    """Paths under the results root that the site copies as they are: the figures (PNG and PDF), the figures'
    declared inputs, ``claims.md``, the tables, the run log and the executed notebooks."""
    root = results_root / profile
    wanted = [*(root / "figures").glob("*.png"), *(root / "figures").glob("*.pdf"), *notebooks(root),
              *(root / "tables").glob("*.md"), root / "claims.md", root / RUNLOG]
    wanted += [root / rel for spec in FIGURES.values() for rel in spec.inputs]
    return sorted({str(p.relative_to(results_root)) for p in wanted if p.is_file()})


def description(profile: str) -> str:
    """The profile YAML's own one-line description, if the profile still exists."""
    path = PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file():
        return ""
    return (safe_yaml(path.read_text(encoding="utf-8"), str(path), "fix the profile") or {}).get("description", "")


def measures_claims(profile_root: Path) -> bool:
    """Whether the run measured any of the paper's claims: a ``tables/claims.csv`` with at least one primary
    comparison that ran (its effect is not *not run*)."""
    path = profile_root / "tables" / "claims.csv"
    return path.is_file() and any(not row["effect"].startswith(NOT_RUN) for row in claim_rows(path))


def drawn(profile_root: Path) -> list[str]:
    """The registry's figures this run has, in notebook order."""
    return [name for name in FIGURES if (profile_root / "figures" / f"{name}.png").is_file()]


def _figure(name: str) -> list[str]:
    """A figure embedded with what it shows (its alt text too)."""
    shows = FIGURES[name].shows
    return [f"![{shows}](figures/{name}.png)", "", f"*{shows}.*", ""]


def _own_results(root: Path, profile: str) -> list[str]:
    """A run without claims: why, then its tables (inlined, as the committed markdown has them) and figures."""
    ran = ", ".join(nb.stem[:2] for nb in notebooks(root))
    why = "; [claims.md](claims.md) says why each is not run" if (root / "claims.md").is_file() else ""
    lines = [f"This run measures none of the paper's claims{f' (its notebooks: {ran})' if ran else ''}{why}. What it "
             f"found is in its tables and figures below, written from `results/{profile}/` when the site is built.",
             ""]
    for table in sorted((root / "tables").glob("*.md")):
        if table.stem != "claims":
            lines += [f"## {table.stem}", "", table.read_text(encoding="utf-8").strip(), "",
                      f"From [`tables/{table.name}`](tables/{table.name}).", ""]
    for name in drawn(root):
        lines += [f"## {name}", "", *_figure(name)]
    return lines


def profile_page(results_root: Path, profile: str) -> str:
    """``results/<profile>/index.md``: the claims and the forest plot (or, for a run that measured none, its own
    tables and figures), then where everything else is."""
    root = results_root / profile
    if measures_claims(root):
        lines = [f"# `{profile}`: claims", "", description(profile), "",
                 f"Written from `results/{profile}/tables/claims.csv` when the site is built; the full report with "
                 f"every secondary comparison, the paper's numbers and each rule is [claims.md](claims.md).", "",
                 claims_table(results_root, profile), ""]
        if (root / "figures" / "claims_forest.png").is_file():
            lines += _figure("claims_forest")
    else:
        lines = [f"# `{profile}`: results", "", description(profile), "", *_own_results(root, profile)]
    lines += ["## More", "", f"- [Every figure]({FIGURES_PAGE}), with the files it is rebuilt from."]
    if (root / RUNLOG).is_file():
        lines.append(f"- [The run log]({RUNLOG}): how the run went, where, and how long it took.")
    lines.append("- The executed notebooks: " + ", ".join(
        f"[{nb.stem}](notebooks/{nb.name})" for nb in notebooks(root)) + ".")
    tables = sorted((root / "tables").glob("*.md"))
    if tables:
        lines.append("- The tables: " + ", ".join(f"[{t.stem}](tables/{t.name})" for t in tables) + ".")
    return "\n".join(lines) + "\n"


def figures_page(results_root: Path, profile: str) -> str:
    """``results/<profile>/all-figures.md``: each figure the run has, one line on what it shows, and its inputs;
    then the registry's other figures, each with why this run has none."""
    root = results_root / profile
    lines = [f"# `{profile}`: figures", "",
             f"Every figure of `results/{profile}/figures/`, in notebook order. `python -m redpo figures --profile "
             f"{profile}` (or `make figures PROFILE={profile}`) redraws each from the files listed under it and "
             "nothing else (`redpo.analysis.plots.FIGURES` declares them), without loading a model.", ""]
    for name in drawn(root):
        spec = FIGURES[name]
        inputs = ", ".join(f"[`{rel}`]({rel})" if (root / rel).is_file() else f"`{rel}` (absent)"
                           for rel in spec.inputs)
        lines += [f"## {name}", "", f"![{name}](figures/{name}.png)", "", f"**Shows** {spec.shows}. **Rebuilt "
                  f"from** {inputs} ([PDF](figures/{name}.pdf)).", ""]
    missing = [name for name in FIGURES if name not in drawn(root)]
    if missing:
        lines += ["## Not drawn for this run", ""]
        for name in missing:
            absent = [rel for rel in FIGURES[name].inputs if not (root / rel).is_file()]
            why = (f"no {', '.join(f'`{rel}`' for rel in absent)}" if absent else
                   f"its input ({', '.join(f'`{rel}`' for rel in FIGURES[name].inputs)}) holds nothing to plot")
            lines.append(f"- `{name}`: {why}. It shows {FIGURES[name].shows}.")
        lines.append("")
    return "\n".join(lines)


def overview_page(results_root: Path, profiles: list[str]) -> str:
    """``results/index.md``: the committed runs, one line each."""
    lines = ["# Results", "",
             "Each committed run has its own part: the claims with the forest plot, every figure with the files "
             "it is rebuilt from, the executed notebooks and the run log. These pages are written from "
             "`results/<profile>/` when the site is built.", ""]
    lines += [f"- [`{p}`]({p}/index.md): {description(p)}" for p in profiles]
    return "\n".join(lines) + "\n"


def generated_pages(results_root: Path, profiles: list[str]) -> dict[str, str]:
    """``{site path: markdown}`` of every generated page of the Results section."""
    pages = {"results/index.md": overview_page(results_root, profiles)}
    for profile in profiles:
        pages[f"results/{profile}/index.md"] = profile_page(results_root, profile)
        pages[f"results/{profile}/{FIGURES_PAGE}"] = figures_page(results_root, profile)
    return pages


def results_nav(results_root: Path, profiles: list[str]) -> list[NavEntry]:
    """The Results section of the site's navigation: every profile's pages and executed notebooks."""
    nav: list[NavEntry] = [{"Overview": "results/index.md"}]
    for profile in profiles:
        root = results_root / profile
        part: list[NavEntry] = [{"Claims" if measures_claims(root) else "Results": f"results/{profile}/index.md"},
                                {"Figures": f"results/{profile}/{FIGURES_PAGE}"}]
        if (root / RUNLOG).is_file():
            part.append({"Run log": f"results/{profile}/{RUNLOG}"})
        part.append({"Notebooks": [{notebook_title(nb): f"results/{profile}/notebooks/{nb.name}"}
                                   for nb in notebooks(root)]})
        nav.append({profile: part})
    return nav
