"""The claims report: the one place that judges the paper's claims, from the saved metrics only (no model).

``results/<profile>/claims.md`` checks the paper's eight claims (listed in the README) against redpo's numbers with
one stated rule (:func:`verdict`): a difference counts only when it is larger than the larger seed spread of the
two numbers compared. :func:`build_all` also rebuilds every table, so notebook 05 and ``python -m redpo figures``
write the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from redpo.analysis import paper_numbers
from redpo.analysis.plateau import plateau_tables
from redpo.analysis.re_tables import re_tables
from redpo.analysis.tables import format_mean_sd, markdown_table, mean_sd, save_table
from redpo.core.io import ResultsDir, read_json, write_json

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICT_RULE = (
    "difference in the claimed direction and larger than the larger sd of the two numbers: holds; in the "
    "opposite direction and larger than that sd: does not hold; otherwise (or with no spread measured): "
    "inconclusive"
)
DIVERSITY_METRIC = "tfidf_cos"
"""The similarity claims 1 and 2 are checked on: TF-IDF cosine, the authors' usual representation."""
PLATEAU_RANGE = (16, 32)
"""The paper: RE performance stops improving noticeably after about 16-32 generated samples per relation."""


# ---- the verdict rule ------------------------------------------------------------------------------------
def verdict(diff: float | None, sd_a: float | None, sd_b: float | None) -> str:
    """Verdict on a difference ``diff`` signed so that positive is the claimed direction (see VERDICT_RULE).

    A missing or NaN sd is ignored; with no sd at all there is no spread to compare with: inconclusive.
    """
    if diff is None or np.isnan(diff):
        return INCONCLUSIVE
    spreads = [float(s) for s in (sd_a, sd_b) if s is not None and not np.isnan(s)]
    if not spreads:
        return INCONCLUSIVE
    noise = max(spreads)
    if diff > noise:
        return HOLDS
    if -diff > noise:
        return FAILS
    return INCONCLUSIVE


def combine(verdicts: Iterable[str]) -> str:
    """One verdict from several comparisons: unanimous holds / does not hold, anything mixed is inconclusive."""
    found = set(verdicts)
    return found.pop() if len(found) == 1 else INCONCLUSIVE


@dataclass
class Comparison:
    """One measured comparison behind a claim: ``a`` is expected to beat ``b`` in the claimed direction."""

    label: str
    a: str
    b: str
    mean_a: float | None = None
    sd_a: float | None = None
    mean_b: float | None = None
    sd_b: float | None = None
    diff: float | None = None
    """``a - b`` signed so that positive is the claimed direction."""
    verdict: str = INCONCLUSIVE
    note: str = ""


@dataclass
class ClaimResult:
    number: int
    statement: str
    rule: str
    verdict: str
    measured: str
    paper: str
    comparisons: list[Comparison] = field(default_factory=list)


def compare(label: str, a: str, b: str, stats_a: tuple[float, float] | None, stats_b: tuple[float, float] | None,
            *, higher_is_claimed: bool = True) -> Comparison:
    """A :class:`Comparison` from two ``(mean, sd)``; either missing means the arm was not run."""
    if stats_a is None or stats_b is None:
        return Comparison(label, a, b, note="not run")
    (ma, sa), (mb, sb) = stats_a, stats_b
    diff = (ma - mb) if higher_is_claimed else (mb - ma)
    return Comparison(label, a, b, ma, sa, mb, sb, diff, verdict(diff, sa, sb))


def _verdict_of(comparisons: Sequence[Comparison]) -> str:
    run = [c.verdict for c in comparisons if c.note != "not run"]
    return combine(run) if run else INCONCLUSIVE


def _fmt(mean: float | None, sd: float | None, scale: float) -> str:
    """Percent with one decimal for F1 (``scale=100``), three decimals for similarities (``scale=1``)."""
    if mean is None:
        return "not run"
    sd = float("nan") if sd is None else sd
    if scale == 100:
        return format_mean_sd(mean, sd)
    return f"{mean:.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}")


def describe(comparisons: Sequence[Comparison], scale: float = 100.0) -> str:
    """``label: a 61.2 ± 1.0 vs b 55.3 ± 2.1 (diff +5.9) -> holds``, one per comparison, ``; ``-joined."""
    parts = []
    for c in comparisons:
        if c.note == "not run":
            parts.append(f"{c.label}: {c.a} vs {c.b}: not run")
            continue
        diff = f"{c.diff * scale:+.1f}" if scale == 100 else f"{c.diff:+.3f}"
        parts.append(f"{c.label}: {c.a} {_fmt(c.mean_a, c.sd_a, scale)} vs {c.b} {_fmt(c.mean_b, c.sd_b, scale)} "
                     f"(diff in claimed direction {diff}) → {c.verdict}")
    return "; ".join(parts)


# ---- inputs ------------------------------------------------------------------------------------------------
def _load(results: ResultsDir, relative: str) -> Any | None:
    path = results.root / relative
    return read_json(path) if path.is_file() else None


def diversity_values(payload: Mapping[str, Any] | None, arm: str, metric: str = DIVERSITY_METRIC) -> list[float]:
    """Per-relation values of ``metric`` for ``arm`` over every split's compared relations."""
    if not payload:
        return []
    out = []
    for block in payload["diversity"]["splits"].values():
        report = block["arms"].get(arm)
        if report:
            out += [report["per_relation"][r][metric] for r in block["relations"]
                    if report["per_relation"].get(r, {}).get(metric) is not None]
    return out


def _stats(values: Sequence[float]) -> tuple[float, float] | None:
    return mean_sd(values) if values else None


def re_summary(results: ResultsDir) -> dict[tuple[str, int], tuple[float, float]]:
    """``{(arm, K): (mean, sd)}`` of micro-F1 from ``metrics/re_results.json`` (sd NaN for one run)."""
    payload = _load(results, "metrics/re_results.json")
    if not payload:
        return {}
    return {(r["arm"], int(r["k"])): (r["mean"], float("nan") if r["sd"] is None else r["sd"])
            for r in payload["summary"]["micro_f1"]}


def _dataset(results: ResultsDir) -> str:
    payload = _load(results, "metrics/re_results.json") or _load(results, "metrics/data.json") or {}
    return payload.get("dataset", "semeval")


def paper_text(dataset: str, arms: Sequence[str]) -> str:
    """Published micro-F1 (%) of ``arms`` for ``dataset`` at any K, from :mod:`redpo.paper_numbers`."""
    found = [f"{p.row} {p.micro_f1:.2f} (K={p.k}, {p.table})" for p in paper_numbers.published(dataset)
             if set(p.arms) & set(arms)]
    return "; ".join(dict.fromkeys(found)) or f"none published for {dataset}"


# ---- the eight claims -----------------------------------------------------------------------------------------
def _re_claim(results: ResultsDir, pairs: Sequence[tuple[str, str]]) -> list[Comparison]:
    summary = re_summary(results)
    ks = sorted({k for (_a, k) in summary}) or [0]
    return [compare(f"K={k}", a, b, summary.get((a, k)), summary.get((b, k))) for k in ks for a, b in pairs]


def claim_diversity(results: ResultsDir, number: int) -> ClaimResult:
    """Claims 1 and 2: lower mean pairwise TF-IDF cosine, per relation (mean ± sd over relations)."""
    icl = _load(results, "metrics/generation_icl.json")
    pairs = [("obo", "obo_nodiv"), ("aao", "aao_nodiv")] if number == 1 else [("obo", "aao")]
    comps = [
        compare(f"{a} vs {b}", a, b, _stats(diversity_values(icl, a)), _stats(diversity_values(icl, b)),
                higher_is_claimed=False)
        for a, b in pairs
    ]
    statement = ("The dissimilarity instruction lowers mean pairwise similarity among a relation's generated "
                 "samples." if number == 1 else "OBO generation is more diverse than AAO.")
    paper = ("the instruction lowers the average cosine similarity by 0.051 (representation unpublished)"
             if number == 1 else "stated qualitatively; no number published")
    rule = (f"{DIVERSITY_METRIC} (lower = more diverse), per relation, mean ± sd over relations "
            f"(metrics/generation_icl.json); per comparison the default rule; all comparisons must agree")
    return ClaimResult(number, statement, rule, _verdict_of(comps), describe(comps, scale=1.0), paper, comps)


def claim_re(results: ResultsDir, number: int) -> ClaimResult:
    """Claims 3-6: micro-F1 of two RE arms over the grid cells of notebook 04."""
    spec: dict[int, tuple[str, list[tuple[str, str]]]] = {
        3: ("DPO improves the RE score reached with OBO-generated data.", [("gen:obo_dpo", "gen:obo")]),
        4: ("At small K, generated data comes close to manual data; it stays below manual data on SemEval "
            "(checked: manual beats OBO + DPO-generated data).", [("manual", "gen:obo_dpo")]),
        5: ("A non-LLM RE model trained on generated data beats the LLM used directly as an RE model.",
            [("gen:obo_dpo", "llm")]),
        6: ("Manual + generated data beats manual data alone.",
            [("mix:obo", "manual"), ("mix:aao", "manual"), ("mix:obo_dpo", "manual")]),
    }
    statement, pairs = spec[number]
    comps = _re_claim(results, pairs)
    arms = list(dict.fromkeys(x for pair in pairs for x in pair))
    rule = ("micro-F1 without the negative label, mean ± sd over the grid cells (metrics/re_results.json); "
            "per comparison the default rule; all comparisons must agree")
    return ClaimResult(number, statement, rule, _verdict_of(comps), describe(comps),
                       paper_text(_dataset(results), arms), comps)


def plateau_verdict(plateau_n: int | None, n_max: int, upper: int = PLATEAU_RANGE[1]) -> str:
    """One curve: holds if it plateaus at N <= ``upper``; does not hold if it still rises at the largest N
    (no plateau) or plateaus later; inconclusive if the N range stops before ``upper``."""
    if n_max < upper:
        return INCONCLUSIVE
    return HOLDS if plateau_n is not None and plateau_n <= upper else FAILS


def claim_plateau(results: ResultsDir) -> ClaimResult:
    """Claim 7 from ``metrics/plateau.json``: every curve's plateau point by the stated rule."""
    statement = "The RE score plateaus beyond about 16–32 generated samples per relation."
    paper = "RE performance stops improving noticeably after about 16–32 generated samples per relation"
    payload = _load(results, "metrics/plateau.json")
    if not payload or not payload["plateau"]:
        return ClaimResult(7, statement, "plateau rule (not run)", INCONCLUSIVE, "not run", paper)
    n_max = max(payload["n_values"])
    summary = {(r["arm"], r["data"], r["n"]): r for r in payload["summary"]}
    comps, parts = [], []
    for p in payload["plateau"]:
        label = f"{p['data']}:{p['arm']}"
        first, last = summary[(p["arm"], p["data"], p["first_n"])], summary[(p["arm"], p["data"], p["last_n"])]
        v = plateau_verdict(p["plateau_n"], n_max)
        comps.append(Comparison(label, f"N={p['last_n']}", f"N={p['first_n']}", last["mean"], last["sd"],
                                first["mean"], first["sd"], None, v, note=f"plateau N={p['plateau_n']}"))
        where = f"plateau at N={p['plateau_n']}" if p["plateau_n"] is not None else "still rising at the largest N"
        parts.append(f"{label}: {_fmt(first['mean'], first['sd'], 100)} at N={p['first_n']} → "
                     f"{_fmt(last['mean'], last['sd'], 100)} at N={p['last_n']}, {where} → {v}")
    rule = (f"per curve ({payload['rule']}): holds if the plateau is at N ≤ {PLATEAU_RANGE[1]}, does not hold "
            f"if the curve still rises at the largest N or plateaus later, inconclusive if the N values stop "
            f"below {PLATEAU_RANGE[1]} (here: {payload['n_values']}); all curves must agree")
    if payload.get("skipped_arms"):
        parts.append("skipped: " + "; ".join(payload["skipped_arms"]))
    return ClaimResult(7, statement, rule, _verdict_of(comps), "; ".join(parts), paper, comps)


def dpo_generation_parts(results: ResultsDir) -> list[dict[str, Any]]:
    """Which adapter generated which relations, from every ``*_dpo_k*_s*.stats.json`` (incl. plateau runs)."""
    rows = []
    for path in sorted((results.root / "generations").glob("*_dpo_k*_s*.stats.json")):
        info = json.loads(path.read_text())["info"]
        rows += [{"file": path.name, "adapter": p["adapter_half"], "relations": p["relations"]}
                 for p in info.get("parts", [])]
    return rows


def claim_leakage(results: ResultsDir) -> ClaimResult:
    """Claim 8: the pair builder's leakage report plus the relations each adapter actually generated for."""
    statement = ("DPO adapters never saw gold samples of the relations they generate for: the two-half swap "
                 "holds.")
    rule = ("dpo/leakage.json must report no leaking pair, and every DPO generation file must show each adapter "
            "generating only relation types outside its training half (dpo/halves.json; both directions of a type "
            "count as one type): both → holds; either violated → does not hold; not run → inconclusive")
    paper = "design statement (two-half relation split); no number"
    leakage, halves = _load(results, "dpo/leakage.json"), _load(results, "dpo/halves.json")
    parts = dpo_generation_parts(results)
    if leakage is None or halves is None:
        return ClaimResult(8, statement, rule, INCONCLUSIVE, "not run", paper)
    type_of = halves.get("label_types", {})
    trained = {a: {type_of.get(r, r) for r in rels} for a, rels in halves["halves"].items()}
    own = [(p, sorted(r for r in p["relations"] if type_of.get(r, r) in trained[p["adapter"]])) for p in parts]
    crossed = [f"{p['file']} adapter {p['adapter']}: {rels}" for p, rels in own if rels]
    adapters = leakage.get("adapters", {})
    measured = (
        f"leakage check {'ok' if leakage.get('ok') else 'FAILED'} ("
        + ", ".join(f"adapter {a}: {r.get('pairs', '?')} pairs, {len(r.get('leaks', []))} leaking" for a, r in
                    sorted(adapters.items()))
        + f"); {len(parts)} adapter generation part(s) in {len({p['file'] for p in parts})} file(s), "
        + (f"relations generated by the adapter trained on them: {crossed}" if crossed
           else "none generated for its own training half")
    )
    ok = bool(leakage.get("ok")) and not crossed
    return ClaimResult(8, statement, rule, HOLDS if ok and parts else (FAILS if not ok else INCONCLUSIVE),
                       measured if parts else measured + " (no DPO generation yet)", paper)


CLAIMS: tuple[Callable[[ResultsDir], ClaimResult], ...] = (
    lambda r: claim_diversity(r, 1),
    lambda r: claim_diversity(r, 2),
    lambda r: claim_re(r, 3),
    lambda r: claim_re(r, 4),
    lambda r: claim_re(r, 5),
    lambda r: claim_re(r, 6),
    claim_plateau,
    claim_leakage,
)
"""The paper's claims 1-8, in the README's order."""


def check_claims(results: ResultsDir) -> list[ClaimResult]:
    return [claim(results) for claim in CLAIMS]


def claims_frame(claims: Sequence[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": c.number, "statement": c.statement, "verdict": c.verdict,
                          "measured": c.measured, "paper": c.paper, "rule": c.rule} for c in claims])


def claims_markdown(claims: Sequence[ClaimResult], profile: str) -> str:
    """The claims report: a summary table, then per claim the numbers, the paper's, the verdict and its rule."""
    lines = [
        f"# Claims of the paper, checked on the `{profile}` profile",
        "",
        "Generated by notebook 05 and `python -m redpo figures` from `metrics/`, `dpo/` and `generations/`; "
        "do not edit by hand.",
        f"Default verdict rule: {VERDICT_RULE}. Numbers are mean ± sd (micro-F1 in %, similarity as is).",
        "The paper's numbers come from KnowPrompt on RoBERTa-large (via a third-party reading note, approximate): "
        "compare directions, not values.",
        "",
        markdown_table(pd.DataFrame([{"claim": c.number, "verdict": c.verdict, "statement": c.statement}
                                     for c in claims]), index=False),
    ]
    for c in claims:
        lines += [f"## Claim {c.number}", "", c.statement, "", f"**Verdict: {c.verdict}**", "",
                  f"- Measured: {c.measured}", f"- Paper: {c.paper}", f"- Rule: {c.rule}", ""]
    return "\n".join(lines)


def write_claims(results: ResultsDir) -> list[ClaimResult]:
    """``claims.md`` at the results root and ``tables/claims.csv|md``."""
    claims = check_claims(results)
    (results.root / "claims.md").write_text(claims_markdown(claims, results.root.name))
    save_table(results, "claims", claims_frame(claims), index=False)
    write_json(results.tables / "claims_detail.json",
               [{**asdict(c), "comparisons": [asdict(x) for x in c.comparisons]} for c in claims])
    return claims


TABLES: dict[str, tuple[str, Callable[[ResultsDir], dict[str, pd.DataFrame]]]] = {
    "re": ("metrics/re_results.json", re_tables),
    "plateau": ("metrics/plateau.json", plateau_tables),
}


def build_all(results: ResultsDir) -> dict[str, Any]:
    """Every table whose metrics exist, and the claims report: what ``python -m redpo figures`` writes."""
    out: dict[str, Any] = {}
    for group, (needs, build) in TABLES.items():
        out[group] = sorted(build(results)) if (results.root / needs).is_file() else f"skipped: no {needs}"
    out["claims"] = [c.verdict for c in write_claims(results)]
    return out
