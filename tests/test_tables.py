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
