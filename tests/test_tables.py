"""The generation tables that read saved metrics only: diversity per arm, and the effect of one arm over another."""

from __future__ import annotations

import pandas as pd
import pytest

from redpo.analysis.tables import diversity_frame, effect_table


def _summary() -> dict:
    def report(tfidf: float, bleu: float) -> dict:
        return {"macro": {"tfidf_cos": tfidf, "self_bleu": bleu}}

    return {"splits": {
        "k8_s1": {"relations": ["A", "B"], "arms": {"obo": report(0.20, 0.30), "obo_nodiv": report(0.30, 0.35)}},
        "k8_s2": {"relations": ["A"], "arms": {"obo": report(0.10, 0.20), "obo_nodiv": report(0.30, 0.45)}},
    }}


def test_diversity_frame_is_one_row_per_split_and_arm() -> None:
    frame = diversity_frame(_summary())
    assert list(frame.columns) == ["split", "arm", "relations", "tfidf_cos", "self_bleu"]
    assert frame[["split", "arm", "relations"]].values.tolist() == [
        ["k8_s1", "obo", 2], ["k8_s1", "obo_nodiv", 2], ["k8_s2", "obo", 1], ["k8_s2", "obo_nodiv", 1]]


def test_effect_table_is_the_difference_of_split_means() -> None:
    table = effect_table(diversity_frame(_summary()), [("obo", "obo_nodiv"), ("aao", "aao_nodiv")],
                         ["tfidf_cos", "self_bleu", "distinct_2"])
    # obo: tfidf mean 0.15 vs 0.30; self-BLEU 0.25 vs 0.40. aao was not generated, distinct_2 not measured: left out.
    assert table[["arm", "reference", "metric"]].values.tolist() == [
        ["obo", "obo_nodiv", "tfidf_cos"], ["obo", "obo_nodiv", "self_bleu"]]
    assert table["change"].tolist() == pytest.approx([-0.15, -0.15])


def test_effect_table_of_nothing_is_empty_with_its_columns() -> None:
    empty = effect_table(pd.DataFrame({"arm": [], "tfidf_cos": []}), [("obo", "obo_nodiv")], ["tfidf_cos"])
    assert empty.empty and list(empty.columns) == ["arm", "reference", "metric", "change"]


def _arm_report(tfidf: float, n: int) -> dict:
    return {"macro": {"tfidf_cos": tfidf, "near_copy_share": 0.5}, "macro_n": {"tfidf_cos": n}}


def _yield(arm: str, seed: int, valid: int, calls: int) -> dict:
    return {"arm": arm, "seed": seed, "valid": valid, "calls": calls, "relations_short": 1, "model_seconds": 60.0}


def test_generation_quality_sums_yield_pools_correctness_and_averages_diversity(tmp_path) -> None:
    from redpo.analysis.generation_tables import generation_quality
    from redpo.core.io import ResultsDir, write_json

    results = ResultsDir("p", tmp_path)
    splits = {f"k8_s{s}": {"relations": ["A", "B"], "arms": {"gold": _arm_report(0.1, 2), "obo": _arm_report(t, 2)}}
              for s, t in ((1, 0.2), (2, 0.4))}
    write_json(results.metrics / "generation_icl.json", {
        "diversity": {"splits": splits},
        "yield": [_yield("obo", 1, 10, 40), _yield("obo", 2, 6, 20)]})
    dpo_splits = {"k8_s1": {"relations": ["A"], "arms": {"obo": _arm_report(0.9, 1), "obo_dpo": _arm_report(0.3, 1)}}}
    write_json(results.metrics / "generation_dpo.json", {
        "diversity": {"splits": dpo_splits},
        "yield": [_yield("obo", 1, 99, 99), _yield("obo_dpo", 1, 8, 10)]})
    arms = {"gold": {"oracle_agreement": 0.8, "direction_flip_rate": 0.0, "negative_share": 0.1, "n": 20},
            "obo": {"oracle_agreement": 0.5, "direction_flip_rate": 0.25, "negative_share": 0.0, "n": 16}}
    write_json(results.metrics / "correctness_icl.json", {"arms": arms})

    table = generation_quality(results)
    assert table.index.tolist() == ["gold", "obo", "obo_dpo"]
    obo = table.loc["obo"]  # read from generation_icl, the first file that holds it; not the DPO file's copy
    assert (obo["splits"], obo["valid"], obo["calls"], obo["relations short"]) == (2, 16, 60, 2)
    assert obo["valid per call"] == pytest.approx(16 / 60) and obo["model minutes"] == pytest.approx(2.0)
    assert obo["TF-IDF cos"] == pytest.approx(0.3) and obo["oracle agreement"] == 0.5
    assert pd.isna(table.loc["gold", "valid"]) and pd.isna(table.loc["obo_dpo", "oracle agreement"])
    assert table.loc["obo_dpo", "valid"] == 8 and table.loc["obo_dpo", "TF-IDF cos"] == pytest.approx(0.3)


def test_generation_quality_of_a_split_without_comparable_relations_is_blank_not_an_error(tmp_path) -> None:
    """Leaving out the manual copies can leave a small dataset no relation with two samples in every arm."""
    from redpo.analysis.generation_tables import generation_quality
    from redpo.core.io import ResultsDir, write_json

    results = ResultsDir("p", tmp_path)
    empty = {"relations": [], "per_relation": {}, "skipped": [], "macro": {}, "macro_n": {}}
    write_json(results.metrics / "generation_icl.json", {
        "diversity": {"splits": {"k8_s1": {"relations": [], "arms": {"gold": empty, "obo": empty}}}},
        "yield": [_yield("obo", 1, 3, 9)]})
    row = generation_quality(results).loc["obo"]
    assert row["diversity relations"] == 0 and pd.isna(row["TF-IDF cos"]) and row["valid"] == 3
