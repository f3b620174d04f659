"""mkdocs hooks (``hooks:`` in ``mkdocs.yml``): the generated pages and the committed results enter the build here.

- ``on_config``: the nav's ``Results`` entry becomes one part per profile of ``extra.results_profiles`` (its pages and
  executed notebooks), and a page listed in ``extra.optional_pages`` is left out of the nav while its file does not
  exist, so pages that other work adds later need no edit here; every other missing page still fails the strict
  build.
- ``on_files``: the profile reference and the results pages are generated (``redpo.site``), and the committed
  figures, their inputs, notebooks, tables and run logs are read from ``results/`` where they are. It runs before
  mkdocs-jupyter's, so that plugin renders the executed notebooks it finds among these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

from redpo.site.reference import profile_reference
from redpo.site.results import generated_pages, results_nav, static_files

RESULTS_ENTRY = "results/index.md"
REFERENCE_PAGE = "reference/profile.md"


def _repo(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def _profiles(config: MkDocsConfig) -> list[str]:
    return list(config.extra.get("results_profiles", []))


def _nav(items: list[Any], config: MkDocsConfig) -> list[Any]:
    docs, optional = Path(config.docs_dir), set(config.extra.get("optional_pages", []))
    out: list[Any] = []
    for item in items:
        title, value = next(iter(item.items())) if isinstance(item, dict) else (None, item)
        if isinstance(value, list):
            value = _nav(value, config)
        elif value == RESULTS_ENTRY:
            value = results_nav(_repo(config) / "results", _profiles(config))
        elif value in optional and not (docs / value).is_file():
            continue
        out.append({title: value} if title is not None else value)
    return out


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    if config.nav:
        config.nav = _nav(config.nav, config)
    return config


@event_priority(50)  # before mkdocs-jupyter (priority 0), which turns the notebooks among these files into pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    repo = _repo(config)
    files.append(File.generated(config, REFERENCE_PAGE, content=profile_reference()))
    for path, content in generated_pages(repo / "results", _profiles(config)).items():
        files.append(File.generated(config, path, content=content))
    for profile in _profiles(config):
        for rel in static_files(repo / "results", profile):
            files.append(File(f"results/{rel}", src_dir=str(repo), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    return files
