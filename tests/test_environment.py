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


def _conda_python() -> list[str]:
    """The Python version(s) environment.yml pins (one, when it is right)."""
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    return [d.split("=", 1)[1] for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]


def test_conda_python_satisfies_requires_python() -> None:
    from packaging.specifiers import SpecifierSet

    pins = _conda_python()
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


def _constraints() -> dict[str, tuple[str, str]]:
    """constraints.txt as {normalised name: (version, marker)}."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, str]] = {}
    for number, line in enumerate((REPO_ROOT / "constraints.txt").read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"constraints.txt:{number}: not one exact pin: {line}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = (specs[0].version, str(req.marker))
    return pins


def test_constraints_pin_every_direct_dependency_within_pyproject() -> None:
    """The lock must cover what pyproject.toml names (else a release could still drift in) and agree with it (else
    `make setup` fails to resolve); torch stays with TORCH_SPEC."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _constraints()
    assert "torch" not in pins, "constraints.txt must not pin torch: the Makefile's TORCH_SPEC does"
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    direct = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    python = _locked_python()
    for spec in direct:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == "torch" or (req.marker and not req.marker.evaluate({"python_version": python})):
            continue
        assert name in pins, f"constraints.txt lacks {name}: rerun `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name][0]}, outside pyproject.toml's {req.specifier}")


def _locked_python() -> str:
    """The one Python version every pin is marked for."""
    markers = {marker for _, marker in _constraints().values()}
    assert len(markers) == 1, f"constraints.txt mixes markers: {sorted(markers)}"
    version = re.fullmatch(r'python_version == "(3\.\d+)"', markers.pop())
    assert version, "every constraints.txt line must end in `; python_version == \"3.X\"`"
    return version.group(1)


def test_constraints_are_for_the_python_conda_users_get() -> None:
    """Every pin carries one python_version marker (another Python resolves freely instead of failing on a release
    without a wheel for it), and it is the Python environment.yml installs, which the README promises the lock."""
    assert [_locked_python()] == _conda_python()


def test_make_setup_installs_under_the_constraints_and_reinstalls_when_they_change() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "$(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[$(PIP_EXTRAS)]'" in makefile
    stamp = re.search(r"^\$\(STAMP\): (.*)$", makefile, re.MULTILINE)
    assert stamp and "$(CONSTRAINTS)" in stamp.group(1).split(), "the install must rerun when the lock changes"
    name = re.search(r"^STAMP := (.*)$", makefile, re.MULTILINE)
    assert name and "$(if $(CONSTRAINTS)," in name.group(1), "a locked and a free environment need distinct stamps"
