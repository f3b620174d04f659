"""The profile reference page, generated from ``redpo.config``: each field's type, default, identity and docstring.

Field docstrings reach pydantic as ``description`` (``use_attribute_docstrings`` on the sections' base model), so
the page says exactly what the code says; a field without a docstring is listed as undocumented rather than left
out. The committed profiles' own settings are shown beside each field they set.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from redpo.config import IDENTITY, PROFILES_DIR, RUN_ONLY, WHEN_SET, Profile, available_profiles, safe_yaml

ROLE_RE = re.compile(r":(?:func|class|data|mod|meth|attr):`~?([^`]+)`")
BOUNDS = ((Ge, "ge", "≥"), (Gt, "gt", ">"), (Le, "le", "≤"), (Lt, "lt", "<"))
UNDOCUMENTED = "*(no docstring in `redpo/config.py`)*"

INTRO = """# Profile reference

Generated from `redpo/config.py` when the site is built: each field's type, default and docstring are the code's
own, so this page cannot drift from it. Set any field in a profile YAML (`redpo/profiles/<name>.yaml`) or on the
command line with a dotted key, e.g. `python -m redpo run --profile cpu -p generation.n_per_relation=4`.

The **identity** mark says how a field enters the cache keys and fingerprints that decide whether a stored model
call, RE run or adapter is reused (`redpo.config.identity`):

- **keyed** (no mark): part of its section's identity, so it enters every key built from that section; changing
  it computes those results anew.
- **run only**: changes how a run goes (threads, time-outs, checkpoint cadence, how many cells), never what one
  result holds; changing it reuses every cached result.
- **keyed when set**: joins the key only when it differs from its default, so results committed before the field
  existed keep their keys and still replay.

**Profiles** lists the committed profiles that set the field in their YAML file (the others use the default).
"""


def markdown_text(doc: str) -> str:
    """A docstring as one markdown paragraph: reST literals and roles become code spans, lines are joined."""
    text = ROLE_RE.sub(r"`\1`", doc.replace("``", "`"))
    return " ".join(text.split())


def type_text(tp: Any) -> str:
    """A field's annotation as a reader writes it in YAML terms: ``list[int] | None``, ``"a" | "b"``."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_text(a) for a in args)}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def bounds_text(field: FieldInfo) -> str:
    """The numeric bounds the field validates (``≥ 1``, ``> 0``), joined."""
    return ", ".join(f"{sign} {getattr(m, attr)}" for m in field.metadata for cls, attr, sign in BOUNDS
                     if isinstance(m, cls))


def default_text(field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if default is PydanticUndefined:
        return "required"
    return json.dumps(to_jsonable_python(default), ensure_ascii=False)


def identity_text(field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    mark = extra.get(IDENTITY)
    if mark == RUN_ONLY:
        return "run only"
    if mark == WHEN_SET:
        return f"keyed when set (the default keeps `{extra.get('committed')}`'s keys)"
    return "keyed"


def sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """``(dotted path, section class)`` for the model and every nested section, each parent before its children."""
    yield prefix, model
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from sections(field.annotation, f"{prefix}{name}.")


def profile_settings(folder: Path = PROFILES_DIR) -> dict[str, dict[str, Any]]:
    """``{dotted key: {profile: value}}`` for every leaf that a committed profile YAML sets."""
    out: dict[str, dict[str, Any]] = {}

    def walk(node: Mapping[str, Any], prefix: str, profile: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.", profile)
            else:
                out.setdefault(f"{prefix}{key}", {})[profile] = value

    for name in available_profiles():
        path = folder / f"{name}.yaml"
        walk(safe_yaml(path.read_text(encoding="utf-8"), str(path), "fix the profile") or {}, "", name)
    return out


def field_entry(path: str, field: FieldInfo, settings: Mapping[str, Any]) -> str:
    kind = type_text(field.annotation)
    bounds = bounds_text(field)
    facts = [f"`{kind}`" + (f" {bounds}" if bounds else ""), f"default `{default_text(field)}`",
             identity_text(field)]
    if settings:
        facts.append("profiles: " + ", ".join(
            f"`{name}` `{json.dumps(to_jsonable_python(value), ensure_ascii=False)}`"
            for name, value in settings.items()))
    doc = markdown_text(field.description) if field.description else UNDOCUMENTED
    return f"- **`{path}`** · {' · '.join(facts)}  \n  {doc}"


def profile_reference(model: type[BaseModel] = Profile, settings: Mapping[str, Mapping[str, Any]] | None = None,
                      ) -> str:
    """The whole reference page as markdown: one section per config section, one entry per field."""
    settings = profile_settings() if settings is None else settings
    out = [INTRO]
    for prefix, section in sections(model):
        title = prefix.rstrip(".") or "top level"
        out.append(f"## `{title}`\n" if prefix else "## Top level\n")
        if section.__doc__ and section is not model:
            out.append(markdown_text(section.__doc__) + "\n")
        for name, field in section.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                continue  # a nested section: it has its own heading below
            path = prefix + name
            out.append(field_entry(path, field, settings.get(path, {})))
        out.append("")
    return "\n".join(out)
