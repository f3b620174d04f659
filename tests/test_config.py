"""Profiles load, and bad keys/values fail with a message naming the key and the file."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import get_args

import pytest

from redpo.config import ConfigError, GenerationArm, available_profiles, load_profile, parse_override
from redpo.generation.specs import ARMS, ICL_ARMS, split_dpo_name


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.fewshot.k and profile.fewshot.seeds


def test_shipped_profiles_are_the_documented_ones() -> None:
    assert {"smoke", "cpu", "paper"} <= set(available_profiles())


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "dataset:\n  nmae: semeval\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert "dataset.nmae" in str(err.value)
    assert str(path) in str(err.value)


def test_bad_value_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "generation:\n  n_per_relation: 0\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert "generation.n_per_relation" in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "tpu"])
def test_a_device_torch_cannot_name_fails_at_load(device: str) -> None:
    with pytest.raises(ConfigError, match=r"generator\.device"):
        load_profile("smoke", {"generator.device": device})


def test_bad_override_value_names_key_and_profile_file() -> None:
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {"fewshot.k": [0]})
    assert "fewshot.k" in str(err.value)
    assert "smoke.yaml" in str(err.value)


def test_unknown_profile_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"available: .*cpu"):
        load_profile("nosuchprofile")


def test_dotted_overrides_reach_nested_sections() -> None:
    profile = load_profile(
        "smoke",
        dict(map(parse_override, ["generation.n_per_relation=5", "generator.sampling.temperature=0.7"])),
    )
    assert profile.generation.n_per_relation == 5
    assert profile.generator.sampling.temperature == pytest.approx(0.7)
    assert profile.generator.model == load_profile("smoke").generator.model  # siblings untouched


def test_override_replaces_a_nested_list() -> None:
    overrides = dict(map(parse_override, ["dpo.lora.target_modules=[q_proj, v_proj]", "fewshot.k=[8,16]"]))
    profile = load_profile("cpu", overrides)
    assert profile.dpo.lora.target_modules == ["q_proj", "v_proj"]
    assert profile.fewshot.k == [8, 16]


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        load_profile("smoke", {"dataset.name.x": 1})


@pytest.mark.parametrize("text", ["no_equals", "=5", ""])
def test_malformed_override_says_the_form(text: str) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(text)


def test_override_values_are_yaml_scalars() -> None:
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=null") == ("a.b", None)
    assert parse_override("a.b=text") == ("a.b", "text")


# ---- arm names are checked when the profile loads, not hours later in a notebook -------------------------------
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"plateau.arms": ["obo_typo"]}, "plateau.arms"),
        ({"plateau.arms": ["baseline_dpo"]}, "plateau.arms"),  # the baseline has no DPO arm
        ({"generation.arms": ["obo", "aoa"]}, "generation.arms"),
        ({"dpo.arms": ["baseline"]}, "dpo.arms"),
    ],
)
def test_an_unknown_arm_fails_at_load_naming_the_key(override: dict[str, list[str]], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_profile("smoke", override)


def test_a_dpo_arm_must_be_generated_first() -> None:
    with pytest.raises(ConfigError, match=r"dpo\.arms \['aao'\] are not in generation\.arms"):
        load_profile("smoke", {"generation.arms": ["baseline", "obo"], "dpo.arms": ["obo", "aao"]})
    assert load_profile("smoke", {"generation.arms": ["obo"], "dpo.arms": ["obo"]}).dpo.arms == ["obo"]


def test_every_arm_name_a_profile_accepts_has_a_meaning() -> None:
    """One vocabulary: the names a profile validates against are the keys of the catalogue the loops read."""
    for arm in get_args(GenerationArm):
        assert load_profile("smoke", {"generation.arms": [arm], "dpo.arms": []}).generation.arms == [arm]
        assert ARMS[arm].prompt in ("baseline", "aao", "obo")
    with pytest.raises(ConfigError, match=r"generation\.arms"):
        load_profile("smoke", {"generation.arms": ["obo_nodiff"]})
    assert all(split_dpo_name(f"{arm}_dpo") == (arm, True) for arm in ICL_ARMS)


@pytest.mark.parametrize("name", ["../../escape", "/tmp/x", "a/b", ".hidden", ""])
def test_a_profile_name_stays_inside_the_results_root(name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        load_profile("smoke", {"name": name})
    assert load_profile("smoke", {"name": "smoke-2.b_c"}).name == "smoke-2.b_c"


def test_a_generator_the_smoke_fitter_would_replace_is_refused() -> None:
    with pytest.raises(ConfigError, match="would never be used"):
        load_profile("smoke", {"generator.model": "no-such-model"})
    assert load_profile("smoke", {"generator.model": "no-such-model", "generator.fit.steps": 0})


def test_profile_tiers_keep_their_promises() -> None:
    """cpu is the short main job (one split, one seed); cpu-full is the run that decides (3+ generation splits, the
    full test set, the plateau up to N = 32, DPO for several epochs); both use the same models and method."""
    cpu, full = load_profile("cpu"), load_profile("cpu-full")
    assert cpu.generation.kshot_seeds is None and cpu.fewshot.seeds == [1] and cpu.encoder.seeds_per_split == 1
    assert len(full.generation.kshot_seeds or []) >= 3 and full.encoder.seeds_per_split >= 2
    assert full.dataset.test_subsample is None and full.dataset.relations is None
    assert max(full.plateau.n_values) >= 32 and full.dpo.epochs >= 3 and full.dpo.num_demos >= 5
    assert (cpu.generator.model, cpu.encoder.model) == (full.generator.model, full.encoder.model)
    assert cpu.encoder.early_stopping_threshold == full.encoder.early_stopping_threshold > 0


def test_executor_by_name_and_its_fields_change_no_run_key(tmp_path: Path) -> None:
    """``executor: ray`` is short for ``{kind: ray}``; where a run trains is part of no key, so a grid moved to a
    cluster reuses every stored run."""
    pytest.importorskip("ray", reason="the optional ray extra is not installed (make setup EXTRAS=ray)")
    from redpo.core.sample import RESample
    from redpo.extraction.run_store import run_fingerprint
    from redpo.extraction.training_sets import GridCell

    assert load_profile("smoke", {"executor": "ray"}).executor.kind == "ray"
    on_ray = load_profile("smoke", {"executor.kind": "ray", "executor.num_cpus": 2, "executor.address": "auto"})
    train = [RESample.from_marked("the <e1>a</e1> and <e2>b</e2> .", "Other")]
    keys = {run_fingerprint(p, "manual", GridCell(4, 1, 0), train, "dev", "test")
            for p in (load_profile("smoke"), on_ray)}
    assert len(keys) == 1


def test_an_executor_that_is_not_installed_or_known_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"executor\.kind: Input should be 'local' or 'ray'"):
        load_profile("smoke", {"executor": "dask"})
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where the extra is not installed
    with pytest.raises(ConfigError, match=re.escape("needs Ray, which is not installed: pip install -e '.[ray]'")):
        load_profile("smoke", {"executor": "ray"})
