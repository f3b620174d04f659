"""environment.yml (conda), the Makefile's torch pin, its install line and the extras CI installs must say what
pyproject.toml says."""

from __future__ import annotations

import re

import tomllib
import yaml

from redpo.config import REPO_ROOT


def _pyproject_deps() -> list[str]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def _docs_extra() -> list[str]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]["docs"]


def _conda_pip_deps() -> list[str]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    return pip_sections[0]


def _normalize(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_conda_pip_list_matches_pyproject() -> None:
    pip = _conda_pip_deps()
    assert "-e .[dev,docs]" in pip, "environment.yml must install the package itself with `-e .[dev,docs]`"
    conda = sorted(_normalize(r) for r in pip if not r.startswith("-e"))
    project = sorted(_normalize(r) for r in [*_pyproject_deps(), *_docs_extra()])  # CI builds the docs: conda too
    assert conda == project, (
        f"only in environment.yml: {sorted(set(conda) - set(project))}; "
        f"only in pyproject.toml: {sorted(set(project) - set(conda))}"
    )


def test_conda_python_satisfies_requires_python() -> None:
    from packaging.specifiers import SpecifierSet

    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pins = [d.split("=", 1)[1] for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert len(pins) == 1 and pins[0] in SpecifierSet(requires), (pins, requires)


def _make_extras() -> list[str]:
    """The extras `make setup` always installs (its PIP_EXTRAS line, before the optional EXTRAS)."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "-e '.[$(PIP_EXTRAS)]'" in makefile, "make setup no longer installs the package with PIP_EXTRAS"
    line = re.search(r"^PIP_EXTRAS := ([\w,]+)", makefile, re.MULTILINE)
    assert line, "Makefile lost its PIP_EXTRAS line"
    return line.group(1).split(",")


def test_make_setup_installs_the_extras_the_tests_need() -> None:
    """`make test` builds the documentation site, so `make setup` must install the docs extra with the dev one."""
    assert _make_extras() == ["dev", "docs"]


def test_makefile_torch_pin_matches_pyproject() -> None:
    torch = [r for r in _pyproject_deps() if re.match(r"torch\b", r)]
    makefile = (REPO_ROOT / "Makefile").read_text()
    pin = re.search(r"^TORCH_SPEC \?= (\S+)$", makefile, re.MULTILINE)
    assert pin, "Makefile lost its TORCH_SPEC line"
    assert [_normalize(pin.group(1))] == [_normalize(t) for t in torch]


def test_ci_installs_the_browser_before_the_tests() -> None:
    """The JupyterLab browser test fails under CI without Debian's chromium: .ci/run must install it first."""
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*step browser make browser </dev/null$", ci, re.MULTILINE), (
        ".ci/run must run `make browser` and stop when it fails")
    assert ci.index("make browser") < ci.index("step test make test")
    target = re.search(r"^browser:\n((?:\t.*\n)+)", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert target and "chromium chromium-driver" in target.group(1)


def _optional_extras() -> set[str]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def test_ci_installs_every_optional_extra_so_no_test_skips_for_one() -> None:
    ci = re.search(r"^export EXTRAS=(\S+)$", (REPO_ROOT / ".ci" / "run").read_text(), re.MULTILINE)
    assert ci, ".ci/run lost its `export EXTRAS=...` line"
    assert {*ci.group(1).split(","), *_make_extras()} == _optional_extras()


def test_the_extras_environment_yml_and_the_makefile_install_exist() -> None:
    pip = _conda_pip_deps()
    named = {x for line in pip if line.startswith("-e") for x in re.findall(r"\[(.*)\]", line)[0].split(",")}
    assert named | set(_make_extras()) <= _optional_extras()
