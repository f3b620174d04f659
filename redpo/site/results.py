"""The site's Results section, one part per committed profile, written from ``results/<profile>/`` at build time.

Per profile: a page with the claims table (the README block's table, ``redpo.site.readme``) and the forest plot; a
page with every figure of the registry, what it shows and the input files it is rebuilt from (linked, and copied
into the site beside it); the executed notebooks, rendered as pages; the run log (``RUNLOG.md``); ``claims.md``
and the tables. Nothing is copied into ``docs/``: the build reads the committed files where they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redpo.analysis.plots import FIGURES
from redpo.config import PROFILES_DIR, safe_yaml
from redpo.core.manifest import RUNLOG_NAME as RUNLOG
from redpo.site.readme import claims_table

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


def profile_page(results_root: Path, profile: str) -> str:
    """``results/<profile>/index.md``: the claims and the forest plot, then where everything else is."""
    root = results_root / profile
    lines = [f"# `{profile}`: claims", "", description(profile), "",
             f"Written from `results/{profile}/tables/claims.csv` when the site is built; the full report with "
             f"every secondary comparison, the paper's numbers and each rule is [claims.md](claims.md).", "",
             claims_table(results_root, profile), ""]
    if (root / "figures" / "claims_forest.png").is_file():
        lines += ["![The claims' primary effects with their 95% CIs](figures/claims_forest.png)", "",
                  f"*{FIGURES['claims_forest'].shows}.*", ""]
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
    """``results/<profile>/all-figures.md``: each registry figure, one line on what it shows, and its inputs."""
    root = results_root / profile
    lines = [f"# `{profile}`: figures", "",
             f"Every figure of `results/{profile}/figures/`, in notebook order. `python -m redpo figures --profile "
             f"{profile}` (or `make figures PROFILE={profile}`) redraws each from the files listed under it and "
             "nothing else (`redpo.analysis.plots.FIGURES` declares them), without loading a model.", ""]
    for name, spec in FIGURES.items():
        lines += [f"## {name}", ""]
        if not (root / "figures" / f"{name}.png").is_file():
            missing = [rel for rel in spec.inputs if not (root / rel).is_file()]
            why = (f"this run has no {', '.join(f'`{rel}`' for rel in missing)}" if missing else
                   f"its input ({', '.join(f'`{rel}`' for rel in spec.inputs)}) holds nothing to plot")
            lines += [f"Not drawn for this profile: {why}.", ""]
            continue
        inputs = ", ".join(f"[`{rel}`]({rel})" if (root / rel).is_file() else f"`{rel}` (absent)"
                           for rel in spec.inputs)
        lines += [f"![{name}](figures/{name}.png)", "", f"**Shows** {spec.shows}. **Rebuilt from** {inputs} "
                  f"([PDF](figures/{name}.pdf)).", ""]
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
        part: list[NavEntry] = [{"Claims": f"results/{profile}/index.md"},
                                {"Figures": f"results/{profile}/{FIGURES_PAGE}"}]
        if (root / RUNLOG).is_file():
            part.append({"Run log": f"results/{profile}/{RUNLOG}"})
        part.append({"Notebooks": [{notebook_title(nb): f"results/{profile}/notebooks/{nb.name}"}
                                   for nb in notebooks(root)]})
        nav.append({profile: part})
    return nav
