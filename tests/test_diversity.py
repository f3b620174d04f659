"""Diversity metrics on hand-made inputs with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from redpo.config import GenerationConfig
from redpo.core.sample import RESample
from redpo.generation import diversity as dv
from redpo.generation.embedding import make_encoder_embedder
from redpo.generation.parse import near_copy_score

REL = "Cause-Effect(e1,e2)"
THRESHOLD = GenerationConfig().near_copy_threshold


def _s(marked: str, relation: str = REL) -> RESample:
    return RESample.from_marked(marked, relation)


SAME = "the <e1>storm</e1> caused severe <e2>flooding</e2> in the valley ."
ENTITY_SWAP = "the <e1>virus</e1> caused severe <e2>illness</e2> in the valley ."
OTHER = "heavy <e1>rain</e1> over the weekend led to <e2>landslides</e2> near roads ."
FRESH = "a dropped <e1>match</e1> started the <e2>fire</e2> that closed the old mill for good ."


def test_mean_upper_triangle_counts_each_pair_once() -> None:
    sim = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    assert dv.mean_upper_triangle(sim) == pytest.approx(0.4)


def test_tfidf_cosine_known_values() -> None:
    assert dv.tfidf_cosine(["a b c", "a b c"]) == pytest.approx(1.0)
    assert dv.tfidf_cosine(["a b", "c d", "e f"]) == pytest.approx(0.0)
    # "x y" vs "x z": x is in both docs (idf 1), y and z in one (idf 1+ln(3/2)); cos = 1/(1+idf_y^2)
    idf = 1 + np.log(3 / 2)
    assert dv.tfidf_cosine(["x y", "x z"]) == pytest.approx(1 / (1 + idf**2))
    assert dv.tfidf_cosine(["only one"]) is None
    assert dv.tfidf_cosine([". ,", "!"]) is None


def test_embedding_cosine_uses_the_given_embedder() -> None:
    table = {"a": [1.0, 0.0], "b": [2.0, 0.0], "c": [0.0, 3.0]}

    def embed(texts: list[str]) -> np.ndarray:
        return np.array([table[t] for t in texts])

    assert dv.embedding_cosine(["a", "b"], embed) == pytest.approx(1.0)
    assert dv.embedding_cosine(["a", "b", "c"], embed) == pytest.approx(1 / 3)
    assert dv.embedding_cosine(["a"], embed) is None


def test_self_bleu_identical_is_one_and_disjoint_is_near_zero() -> None:
    sent = ["the", "storm", "caused", "severe", "flooding", "in", "the", "valley"]
    assert dv.self_bleu([sent, list(sent), list(sent)]) == pytest.approx(1.0)
    disjoint = dv.self_bleu([sent, ["heavy", "rain", "over", "weekend", "led", "to", "landslides", "nearby"]])
    assert disjoint is not None and disjoint < 0.01
    assert dv.self_bleu([sent]) is None


def test_distinct_n_hand_computed() -> None:
    tokens = [["a", "b", "a"], ["a", "c"]]
    # unigrams a b a a c: 3 unique / 5; bigrams ab ba ac: 3 unique / 3
    assert dv.distinct_n(tokens, 1) == pytest.approx(3 / 5)
    assert dv.distinct_n(tokens, 2) == pytest.approx(1.0)
    assert dv.distinct_n([["a", "a", "a"]], 2) == pytest.approx(1 / 2)
    assert dv.distinct_n([["a"]], 2) is None


def test_masked_variants_see_through_entity_swaps() -> None:
    metrics = dv.relation_metrics([_s(SAME), _s(ENTITY_SWAP)])
    for key in ("tfidf_cos", "self_bleu"):
        assert metrics[f"{key}_masked"] == pytest.approx(1.0)
        assert metrics[key] < 0.9
    # masked: the same 9 tokens twice ("the" twice in each) -> 8 unique of 18
    assert metrics["distinct_1_masked"] == pytest.approx(8 / 18)
    assert metrics["distinct_1"] > metrics["distinct_1_masked"]


def test_near_copy_share() -> None:
    demos = [_s(SAME)]
    assert dv.near_copy_share([_s(ENTITY_SWAP), _s(OTHER)], demos, THRESHOLD) == pytest.approx(0.5)
    assert dv.near_copy_share([], demos, THRESHOLD) is None
    other_score = near_copy_score(_s(OTHER), demos)  # the profile's threshold decides what counts
    assert dv.near_copy_share([_s(ENTITY_SWAP), _s(OTHER)], demos, other_score) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="near_copy_threshold"):
        dv.relation_metrics([_s(SAME)], demos=demos)


def test_report_structure_skips_small_relations_and_is_json() -> None:
    by_rel = {
        REL: [_s(SAME), _s(SAME.replace("valley", "city"))],
        "Other": [_s(OTHER, "Other")],
    }
    report = dv.diversity_report(
        by_rel,
        demos_by_relation={REL: [_s(ENTITY_SWAP)]},
        near_copy_threshold=THRESHOLD,
        embed=lambda texts: np.ones((len(texts), 3)),
        relations=[REL, "Other", "Message-Topic(e1,e2)"],
    )
    json.dumps(report, allow_nan=False)
    assert report["skipped"] == ["Other", "Message-Topic(e1,e2)"]
    assert report["per_relation"]["Other"]["tfidf_cos"] is None
    assert report["per_relation"]["Message-Topic(e1,e2)"]["n"] == 0
    assert report["macro_n"]["tfidf_cos"] == 1
    assert report["macro"]["embed_cos"] == pytest.approx(1.0)
    assert report["macro"]["tfidf_cos"] == report["per_relation"][REL]["tfidf_cos"]
    # distinct-1 is defined for the single "Other" sample too: the macro averages both relations
    assert report["macro_n"]["distinct_1"] == 2
    assert report["macro"]["near_copy_share"] == pytest.approx(1.0)


def test_macro_is_the_unweighted_mean_over_relations() -> None:
    by_rel = {"A": [_s(SAME, "A")] * 2, "B": [_s(SAME, "B"), _s(OTHER, "B")] * 3}
    report = dv.diversity_report(by_rel)
    values = [report["per_relation"][r]["self_bleu"] for r in ("A", "B")]
    assert values[0] == pytest.approx(1.0)
    assert report["macro"]["self_bleu"] == pytest.approx(np.mean(values))
    assert set(report["macro"]) >= {
        f"{k}{s}" for k in ("tfidf_cos", "self_bleu", "distinct_2") for s in ("", "_masked")
    }
    assert "embed_cos" not in report["macro"] and "near_copy_share" not in report["macro"]


def test_common_relations_needs_two_samples_in_every_arm() -> None:
    s = _s(SAME)
    arms = {"aao": {"A": [s, s], "B": [s, s], "C": [s]}, "obo": {"A": [s, s, s], "B": [s], "D": [s, s]}}
    assert dv.common_relations(arms) == ["A"]
    assert dv.common_relations(arms, min_samples=1) == ["A", "B"]
    assert dv.common_relations({}) == []


def test_compare_arms_measures_only_what_the_model_wrote() -> None:
    """A label every arm copies from the manual samples would add a zero difference; it must drop out of the
    common relations, out of the gold reference, and out of every arm's near-copy share."""
    manual = [_s(SAME, "Other"), _s(OTHER, "Other")]
    copied = [RESample(s.tokens, s.head, s.tail, s.relation, meta={"source": "manual"}) for s in manual]
    gold = {REL: [_s(SAME), _s(OTHER)], "Other": manual}
    arms = {
        "obo": {REL: [_s(ENTITY_SWAP), _s(FRESH)], "Other": copied},
        "aao": {REL: [_s(SAME), _s(ENTITY_SWAP), _s(OTHER)], "Other": copied},
        "gold": gold,
    }
    report = dv.compare_arms(arms, gold, reference="gold", near_copy_threshold=THRESHOLD)
    assert report["relations"] == [REL]
    assert set(report["arms"]) == {"obo", "aao", "gold"}
    for name, arm_report in report["arms"].items():
        assert list(arm_report["per_relation"]) == [REL]
        assert arm_report["macro_n"]["tfidf_cos"] == 1
        assert ("near_copy_share" in arm_report["macro"]) == (name != "gold")
    assert report["arms"]["obo"]["macro"]["near_copy_share"] == pytest.approx(0.5)  # the swap nearly copies SAME
    assert json.loads(json.dumps(report)) == report


def test_encoder_embedder_mean_pools_and_ignores_padding() -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "the", "storm", "caused", "flooding", "in", "valley", "and", "beyond"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()

    class Loaded:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
        torch.manual_seed(0)
        model = BertModel(
            BertConfig(
                vocab_size=len(words),
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
            )
        )

    embed = make_encoder_embedder(Loaded(), batch_size=2)
    short, long = "the storm", "the storm caused flooding in the valley and beyond"
    together = embed([short, long, short])
    alone = embed([short])
    assert together.shape == (3, 16)
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(together[2], alone[0], atol=1e-5)
    assert not np.allclose(together[0], together[1])
    assert embed([]).shape == (0, 16)
