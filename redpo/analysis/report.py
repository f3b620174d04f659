"""The claims report: the one place that judges the paper's claims, from the saved files only (no model).

``results/<profile>/claims.md`` checks the paper's eight claims (listed in the README). Claims 1-7 are each decided
by one pre-declared primary comparison (:func:`redpo.analysis.evidence.claim_specs`): a paired difference with a
95% CI from the hierarchical bootstrap of :mod:`redpo.analysis.stats`, split as the unit of replication. The
verdict (:func:`redpo.analysis.stats.verdict`): *holds* if the CI lies wholly on the claimed side (of 0, or of
the claim's stated margin), *does not hold* if it lies wholly on the other side, *inconclusive* otherwise, and
*not run*, with the reason, when the comparison has no data (an arm came back empty, so nothing was trained).
Secondary comparisons are shown and decide nothing; Holm-adjusted p-values across the primary comparisons are
noted. Claim 8 is a check of the DPO halves, not a comparison. :func:`build_all` also rebuilds every table, so
notebook 05 and ``python -m redpo figures`` write the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from redpo.analysis import paper_numbers
from redpo.analysis.evidence import (
    PLATEAU_RANGE,
    Evidence,
    SavedMetrics,
    Spec,
    claim_specs,
    gather,
)
from redpo.analysis.generation_tables import generation_tables
from redpo.analysis.ladder import ladder_tables
from redpo.analysis.re_tables import re_tables
from redpo.analysis.report_title import report_title
from redpo.analysis.run_setup import setup_lines
from redpo.analysis.stats import FAILS, HOLDS, INCONCLUSIVE, NOT_RUN, holm, verdict
from redpo.config import ClaimsConfig
from redpo.core.io import ResultsDir, read_json, write_json
from redpo.core.tables import markdown_table, save_table
from redpo.plateau.curves import plateau_tables

VERDICT_RULE = (
    "each claim is decided by its primary comparison, a paired difference signed so that positive is the claimed "
    "direction: holds if its 95% CI lies wholly on the claimed side of the margin (0 unless stated), does not hold "
    "if wholly on the other side, inconclusive otherwise; secondary comparisons are shown but do not decide"
)
NOT_RUN_RULE = (
    "A comparison with no data (an arm with no run, a curve with no point, no relation measured in both arms) is "
    "not run, with the reason beside it, and so is a claim whose primary comparison is: nothing was measured, "
    "unlike inconclusive, where the data's CI straddles the margin."
)
"""Added to the report's rule only when some comparison is not run, so a report without one reads as before."""
STATEMENTS = {
    1: "The dissimilarity instruction lowers mean pairwise similarity among a relation's generated samples.",
    2: "OBO generation is more diverse than AAO.",
    3: "DPO improves the RE score reached with OBO-generated data.",
    4: "At small K, generated data comes close to manual data; it stays below manual data on SemEval.",
    5: "A non-LLM RE model trained on generated data beats the LLM used directly as an RE model.",
    6: "Manual + generated data beats manual data alone (step-matched: more than more optimizer steps).",
    7: "The RE score plateaus beyond about 16–32 generated samples per relation.",
    8: "DPO adapters never saw gold samples of the relations they generate for: the two-half swap holds.",
}
DIVERSITY_PAPER = {
    1: "the instruction lowers the average cosine similarity by 0.051 (representation unpublished)",
    2: "stated qualitatively; no number published",
}


@dataclass
class ClaimResult:
    number: int
    statement: str
    rule: str
    verdict: str
    measured: str
    paper: str
    evidence: list[Evidence] = field(default_factory=list)
    holm_p: float | None = None

    @property
    def primary(self) -> Evidence | None:
        return next((e for e in self.evidence if e.spec.primary), None)


# ---- formatting ------------------------------------------------------------------------------------------
UNITS = {"diversity": "Δ cosine ×100", "f1": "Δ micro-F1 points", "plateau": "Δ micro-F1 points",
         "ratio": "% of manual's micro-F1"}


def _scale(spec: Spec) -> tuple[float, str]:
    """Effects are shown in F1 points, cosine x 100 or, for a ratio, percent (all on one axis's scale)."""
    return 100.0, UNITS[spec.kind]


def effect_text(e: Evidence) -> str:
    """``+3.1 [0.4, 5.9] Δ micro-F1 points, n = 6 cell(s) in 3 split(s), 2717 sentences each``, or why it is missing.

    The cell count is the total over splits (split × classifier seed), not a per-split factor, so the text never
    reads as a product the bootstrap did not resample.
    """
    if e.effect is None:
        return e.note
    scale, unit = _scale(e.spec)
    x = e.effect
    if e.spec.kind == "diversity":
        n = f"n = {x.n_units} relations, {x.n_splits} split(s), equal N per relation"
    else:
        n = f"n = {x.n_cells} cell(s) in {x.n_splits} split(s), {x.n_units} sentences each"
    if x.n_splits < 2:  # nothing to resample at the level the claim is about: say so beside the number
        n += (" (one generation split: the CI covers test-sentence and seed noise, not the generation draw)"
              if e.spec.kind != "diversity" else " (one generation split: the CI covers relations only)")
    sign = "" if e.spec.kind == "ratio" else "+"  # a ratio has no direction of its own: 68.4%, not +68.4
    macro = (f"; SemEval macro-F1 {e.macro.estimate * scale:{sign}.1f} [{e.macro.low * scale:.1f}, "
             f"{e.macro.high * scale:.1f}]" if e.macro is not None else "")
    if len(x.per_split) > 1:  # the spread a few-split bootstrap understates, shown as it is
        n += "; per split " + ", ".join(f"{split} {v * scale:{sign}.1f}" for split, v in x.per_split)
    note = f"; {e.note}" if e.note else ""  # what the pairing left out, or what a plateau step added
    return (f"{x.estimate * scale:{sign}.1f} [{x.low * scale:.1f}, {x.high * scale:.1f}] {unit} (95% CI), {n}, "
            f"p = {x.p_value:.3g}{macro}{note}")


def evidence_verdict(e: Evidence) -> str:
    """The comparison's verdict; *not run* when it has no effect (its note says why)."""
    return NOT_RUN if e.effect is None else verdict(e.effect, e.spec.margin, e.spec.upper)


def _rule(number: int, plateau_min_gain: float, n_values: Sequence[int] | None, close_ratio: float,
          below_manual: bool) -> str:
    if number in (1, 2):
        return ("TF-IDF cosine similarity (lower = more diverse) per relation at equal N (each arm's first "
                "min(n_a, n_b) samples), similarity(b) − similarity(a) averaged over splits per relation; "
                "bootstrap CI over relations; holds if the CI is above 0")
    if number == 4:
        below = (" and its upper end below 100% (stays below manual: manual − generated > 0)" if below_manual
                 else "")
        return (f"micro-F1(generated) as a share of micro-F1(manual), ratio of the mean F1 over paired cells: the "
                f"95% CI's lower end must reach {close_ratio * 100:.0f}% (comes close; the paper's own ratios are "
                f"68% on SemEval, 78% on Re-TACRED, 102% on TACRED){below}; hierarchical paired bootstrap "
                "(splits, seeds within splits, sentences)")
    if number == 7:
        in_range = n_values is not None and max(n_values) >= PLATEAU_RANGE[1]
        rule = (f"F1(smaller N) − F1(largest N) of one curve, paired by cell and sentence, must stay above "
                f"−{plateau_min_gain * 100:.0f} point(s) (the gain beyond {PLATEAU_RANGE[0]}–{PLATEAU_RANGE[1]} "
                f"samples is under plateau.min_gain)")
        return rule if in_range else (f"{rule}; inconclusive by range: the N values {list(n_values or [])} stop "
                                      f"below {PLATEAU_RANGE[1]}")
    return ("micro-F1 without the negative label, paired hierarchical bootstrap: splits resampled, classifier "
            "seeds within splits, test sentences within each split; holds if the CI is above 0")


# ---- the claims ----------------------------------------------------------------------------------------------
def _load(results: ResultsDir, relative: str) -> Any | None:
    path = results.root / relative
    return read_json(path) if path.is_file() else None


def _dataset(results: ResultsDir) -> str:
    payload = _load(results, "metrics/re_results.json") or _load(results, "metrics/data.json") or {}
    return payload.get("dataset", "semeval")


def paper_text(dataset: str, arms: Sequence[str]) -> str:
    """Published micro-F1 (%) of ``arms`` for ``dataset`` at any K, from :mod:`redpo.analysis.paper_numbers`."""
    found = [f"{p.row} {p.micro_f1:.2f} (K={p.k}, {p.table})" for p in paper_numbers.published(dataset)
             if set(p.arms) & set(arms)]
    return "; ".join(dict.fromkeys(found)) or f"none published for {dataset}"


def claim_from_evidence(results: ResultsDir, number: int, specs: Sequence[Spec], saved: SavedMetrics,
                        claims: ClaimsConfig) -> ClaimResult:
    """Claims 1-7: the primary comparison decides; every comparison is listed."""
    plateau = saved.plateau
    evidence = [gather(results, s, saved, claims, with_macro=s.primary) for s in specs]
    primary = next(e for e in evidence if e.spec.primary)
    decided = evidence_verdict(primary)
    n_values = plateau.get("n_values")
    if number == 7 and decided != NOT_RUN and (n_values is None or max(n_values) < PLATEAU_RANGE[1]):
        decided = INCONCLUSIVE
    lines = [f"{'primary' if e.spec.primary else 'secondary'} {e.spec.label}: {effect_text(e)} → "
             f"{evidence_verdict(e)}" for e in evidence]
    if number in DIVERSITY_PAPER:
        paper = DIVERSITY_PAPER[number]
    elif number == 7:
        paper = "RE performance stops improving noticeably after about 16–32 generated samples per relation"
    else:
        arms = list(dict.fromkeys(x for s in specs for x in (s.a, s.b)))
        paper = paper_text(_dataset(results), arms)
    rule = _rule(number, plateau.get("min_gain", 0.01), n_values, claims.close_ratio, below_manual(results))
    return ClaimResult(number, STATEMENTS[number], rule, decided, "; ".join(lines), paper, evidence)


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
    statement = STATEMENTS[8]
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


def below_manual(results: ResultsDir) -> bool:
    """Whether claim 4 includes "stays below manual": the paper says so of SemEval only (on TACRED its generated
    data scored above manual)."""
    return _dataset(results) == "semeval"


def check_claims(results: ResultsDir, settings: ClaimsConfig) -> list[ClaimResult]:
    """Claims 1-8, with Holm-adjusted p-values across the primary comparisons that have an effect; ``settings``
    is the profile's ``claims`` section (bootstrap size, claim 4's ratio)."""
    saved = SavedMetrics.load(results)
    specs = claim_specs(float(saved.plateau.get("min_gain", 0.01)), settings.close_ratio, below_manual(results))
    claims = [claim_from_evidence(results, n, specs[n], saved, settings) for n in sorted(specs)]
    claims.append(claim_leakage(results))
    decided = [c for c in claims if c.primary is not None and c.primary.effect is not None]
    for c, p in zip(decided, holm([c.primary.effect.p_value for c in decided]), strict=True):  # type: ignore[union-attr]
        c.holm_p = p
    return claims


def half_width_text(e: Evidence | None) -> str:
    """The primary CI's half-width in the effect's points (``3.1``), or empty when there is no effect."""
    if e is None or e.effect is None:
        return ""
    return f"{_scale(e.spec)[0] * e.effect.half_width:.1f}"


def claims_frame(claims: Sequence[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": c.number, "statement": c.statement, "verdict": c.verdict,
                          "primary": c.primary.spec.label if c.primary else "leakage check",
                          "effect": effect_text(c.primary) if c.primary else c.measured,
                          "ci_half_width": half_width_text(c.primary),
                          "holm_p": c.holm_p, "paper": c.paper, "rule": c.rule} for c in claims])


def claims_detail(claims: Sequence[ClaimResult]) -> list[dict[str, Any]]:
    """Everything the report and the forest plot show, JSON-safe (``tables/claims_detail.json``)."""
    return [{
        "claim": c.number, "statement": c.statement, "verdict": c.verdict, "holm_p": c.holm_p, "rule": c.rule,
        "comparisons": [{
            "label": e.spec.label, "kind": e.spec.kind, "a": e.spec.a, "b": e.spec.b, "primary": e.spec.primary,
            "margin": e.spec.margin, "upper": e.spec.upper, "unit": _scale(e.spec)[1],
            "effect": e.effect.to_json() if e.effect else None,
            "half_width": round(_scale(e.spec)[0] * e.effect.half_width, 3) if e.effect else None,
            "macro": e.macro.to_json() if e.macro else None,
            "verdict": evidence_verdict(e), "note": e.note,
        } for e in c.evidence],
    } for c in claims]


def claims_markdown(claims: Sequence[ClaimResult], profile: str, setup: Sequence[str] = (),
                    edition: str = "") -> str:
    """The claims report: a summary table, what ran (``setup``, :func:`redpo.analysis.run_setup.setup_lines`), then
    per claim the primary effect with its CI, the secondary ones, the paper's number, the verdict and its rule. The
    title names the run's ``edition`` (:attr:`redpo.config.ClaimsConfig.edition`) where it has one."""
    summary = pd.DataFrame([{
        "claim": c.number, "verdict": c.verdict,
        "primary comparison": c.primary.spec.label if c.primary else "leakage check",
        "effect [95% CI]": effect_text(c.primary).split(" (95% CI)")[0] if c.primary else "",
        "CI ±": half_width_text(c.primary),
        "Holm p": "" if c.holm_p is None else f"{c.holm_p:.3g}",
    } for c in claims])
    lines = [
        report_title(profile, edition),
        "",
        "Generated by notebook 05 and `python -m redpo figures` from `metrics/`, `dpo/` and `generations/`; "
        "do not edit by hand. The forest plot is `figures/claims_forest.png`.",
        f"Verdict rule: {VERDICT_RULE}. Holm-adjusted p-values are across the primary comparisons that have data."
        + (f" {NOT_RUN_RULE}" if any(e.effect is None for c in claims for e in c.evidence) else ""),
        "The paper's numbers come from KnowPrompt on RoBERTa-large (via a third-party reading note, approximate): "
        "compare directions, not values.",
        "",
        markdown_table(summary, index=False),
    ]
    if setup:  # the table ends with a newline, so each section starts after a blank line
        lines += ["## What ran", "", "The pipeline behind these verdicts, as the run's files record it:", "",
                  *setup, ""]
    for c in claims:
        lines += [f"## Claim {c.number}", "", c.statement, "", f"**Verdict: {c.verdict}**", ""]
        lines += [f"- {'Primary' if e.spec.primary else 'Secondary'} {e.spec.label}: {effect_text(e)} → "
                  f"{evidence_verdict(e)}" for e in c.evidence] or [f"- Measured: {c.measured}"]
        if c.holm_p is not None:
            lines.append(f"- Holm-adjusted p of the primary comparison: {c.holm_p:.3g}")
        lines += [f"- Paper: {c.paper}", f"- Rule: {c.rule}", ""]
    return "\n".join(lines)


def write_claims(results: ResultsDir, settings: ClaimsConfig) -> list[ClaimResult]:
    """``claims.md`` at the results root, ``tables/claims.csv|md`` and ``tables/claims_detail.json``."""
    claims = check_claims(results, settings)
    report = claims_markdown(claims, results.root.name, setup_lines(results), settings.edition)
    (results.root / "claims.md").write_text(report)
    save_table(results, "claims", claims_frame(claims), index=False)
    write_json(results.tables / "claims_detail.json", claims_detail(claims))
    return claims


TABLES: dict[str, tuple[str, Callable[[ResultsDir, ClaimsConfig], dict[str, pd.DataFrame]]]] = {
    "generation": ("metrics/generation_baseline.json", lambda results, _settings: generation_tables(results)),
    "re": ("metrics/re_results.json", re_tables),
    "plateau": ("metrics/plateau.json", lambda results, _settings: plateau_tables(results)),
    "ladder": ("metrics/ladder.json", ladder_tables),  # its paired CIs use the claims' bootstrap settings
}
"""Table group -> (the metrics file it needs, its builder); a group whose file is missing is skipped."""


def build_all(results: ResultsDir, settings: ClaimsConfig) -> dict[str, Any]:
    """Every table whose metrics exist, and the claims report: what ``python -m redpo figures`` writes.
    ``settings`` is the profile's ``claims`` section."""
    out: dict[str, Any] = {}
    for group, (needs, build) in TABLES.items():
        out[group] = sorted(build(results, settings)) if (results.root / needs).is_file() else f"skipped: no {needs}"
    out["claims"] = [c.verdict for c in write_claims(results, settings)]
    return out
