"""Zipped packaged encoders (``kind: hf_zip``, all-mpnet-base-v2): the registry entry, safe unzipping, the whole
install -> reassemble -> check -> unzip -> mark path on a stand-in, and (slow) the real model in the RE classifier."""

from __future__ import annotations

import dataclasses
import io
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import DataCollatorWithPadding

from redpo.core.hashing import sha256_file
from redpo.models import packaged
from redpo.models.archive import unzip_model
from redpo.models.load import clear_model_cache, load_encoder, registry_table, resolve_model
from redpo.models.packaged import MARKER
from redpo.models.registry import PACKAGED, ModelIntegrityError, PackagedModel, _chunked
from redpo.models.tiny import build_tiny_bert

ROOT = "tiny-bert"


def _must_not_run(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a prepared model was installed or unpacked again")


def test_mpnet_base_is_a_zip_split_over_five_pinned_wheels_in_order(tmp_cache: Path) -> None:
    entry = PACKAGED["mpnet-base"]
    assert entry.kind == "hf_zip" and len(entry.archive_sha256) == 64 and entry.archive_root
    numbers = [spec.split("==")[0].rsplit("-", 1)[1] for spec in entry.packages]
    assert numbers == ["001", "002", "003", "004", "005"]
    for number, (module, inside) in zip(numbers, entry.parts, strict=True):  # wheel i holds chunk i
        assert module.endswith(f"_{number}") and inside.endswith(f".zip.{number}")
    row = next(r for r in registry_table() if r["name"] == "mpnet-base")
    assert row["kind"] == "encoder" and row["prepared"] is False  # an empty cache: not unzipped yet


def _zip(path: Path, members: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize(
    ("bad", "links"),
    [
        (f"{ROOT}/../evil.txt", ()),
        ("../evil.txt", ()),
        ("/tmp/evil.txt", ()),
        (f"{ROOT}\\..\\evil.txt", ()),
        ("C:/evil.txt", ()),
        ("elsewhere/evil.txt", ()),
        (f"{ROOT}/link", (f"{ROOT}/link",)),
    ],
)
def test_unzip_refuses_a_member_that_could_land_outside_and_writes_nothing(
    tmp_path: Path, bad: str, links: tuple[str, ...]
) -> None:
    archive = _zip(tmp_path / "m.zip", {f"{ROOT}/config.json": b"{}", bad: b"/etc/passwd"}, links)
    out = tmp_path / "out" / "model"
    out.mkdir(parents=True)
    with pytest.raises(ModelIntegrityError, match="refusing to unpack"):
        unzip_model(archive, ROOT, out)
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*")) and not (tmp_path / "evil.txt").exists()


def test_unzip_drops_the_root_folder_and_keeps_subfolders(tmp_path: Path) -> None:
    members = {f"{ROOT}/": b"", f"{ROOT}/config.json": b"{}", f"{ROOT}/1_Pooling/c.json": b"1"}
    archive = _zip(tmp_path / "m.zip", members)
    assert sorted(unzip_model(archive, ROOT, tmp_path / "out")) == ["1_Pooling/c.json", "config.json"]
    assert (tmp_path / "out" / "config.json").read_bytes() == b"{}"
    assert (tmp_path / "out" / "1_Pooling" / "c.json").read_bytes() == b"1"


@pytest.fixture()
def fake_zip_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PackagedModel:
    """A tiny BERT zipped and split over three 'installed' packages with hyphenated names, as the mpnet wheels
    are, found on ``sys.path`` by ``find_spec`` (so nothing is pip-installed), registered as ``fake-zip``."""
    model = build_tiny_bert(tmp_path / "src" / ROOT, hidden=32)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(model.rglob("*")):
            zf.write(file, file.relative_to(model.parent).as_posix())
    blob = buffer.getvalue()
    site = tmp_path / "site"
    third = len(blob) // 3 + 1
    for i in range(1, 4):
        chunk = site / f"fake-zip-part_{i}" / "input" / f"m.zip.{i}"
        chunk.parent.mkdir(parents=True)
        (chunk.parent.parent / "__init__.py").write_text("raise ImportError('never imported')\n")
        chunk.write_bytes(blob[(i - 1) * third : i * third])
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "whole.zip").write_bytes(blob)
    entry = PackagedModel(
        name="fake-zip",
        kind="hf_zip",
        **_chunked("fake-zip-part-", "fake-zip-part_", "0.0.1", 3, lambda i: f"input/m.zip.{i}"),
        archive_sha256=sha256_file(tmp_path / "whole.zip"),
        archive_root=ROOT,
        sha256=sha256_file(model / "model.safetensors"),
        size=(model / "model.safetensors").stat().st_size,
        notes="test stand-in",
    )
    monkeypatch.setitem(PACKAGED, entry.name, entry)
    return entry


def test_a_zipped_model_is_reassembled_checked_unzipped_once_and_loads(
    tmp_cache: Path, fake_zip_entry: PackagedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = resolve_model("fake-zip")
    out = tmp_cache / "models" / "fake-zip"
    assert (info.source, info.path, info.sha256) == ("packaged", str(out), fake_zip_entry.sha256)
    assert (out / "config.json").is_file() and (out / MARKER).is_file(), "the archive's root folder is dropped"
    assert info.details["archive_sha256"] == fake_zip_entry.archive_sha256
    assert not list(out.parent.glob(".fake-zip.assemble")), "the reassembled zip is removed"
    with monkeypatch.context() as patch:  # prepared: a second resolve neither installs nor unzips again
        patch.setattr(packaged, "_pip_install", _must_not_run)
        patch.setattr(packaged, "_unpack_zip", _must_not_run)
        assert resolve_model("fake-zip") == info
    enc = load_encoder("fake-zip")
    batch = enc.tokenizer(["the storm caused damage ."], return_tensors="pt")
    with torch.no_grad():
        assert enc.model(**batch).last_hidden_state.shape[-1] == 32


@pytest.mark.parametrize("pin", ["archive_sha256", "sha256"])
def test_a_wrong_pin_is_an_integrity_error_and_leaves_no_usable_build(
    tmp_cache: Path, fake_zip_entry: PackagedModel, monkeypatch: pytest.MonkeyPatch, pin: str
) -> None:
    entry = dataclasses.replace(fake_zip_entry, name="fake-zip-bad", **{pin: "0" * 64})
    monkeypatch.setitem(PACKAGED, entry.name, entry)
    with pytest.raises(ModelIntegrityError, match=r"expected 0{64}") as err:
        resolve_model(entry.name)
    assert getattr(fake_zip_entry, pin) in str(err.value), "the message names the hash the file actually has"
    out = tmp_cache / "models" / entry.name
    assert not (out / MARKER).exists()
    if pin == "archive_sha256":
        assert not (out / "model.safetensors").exists(), "nothing is unpacked from an archive that fails its pin"


@pytest.mark.slow
def test_packaged_mpnet_runs_a_forward_pass_through_the_re_classifier(capsys: pytest.CaptureFixture[str]) -> None:
    """Real cache on purpose: the 404 MB of wheels are installed once per environment and unzipped once per machine
    (``REDPO_CACHE``), not per run."""
    from redpo.__main__ import main
    from redpo.core.sample import RESample
    from redpo.extraction.encoding import Inputs
    from redpo.extraction.model import REClassifier, prepare_encoder

    assert main(["models", "--prepare", "mpnet-base"]) == 0
    assert PACKAGED["mpnet-base"].sha256 in capsys.readouterr().out
    clear_model_cache()
    encoder, tokenizer, info = prepare_encoder("mpnet-base", typed=False, seed=0)
    assert info["sha256"] == PACKAGED["mpnet-base"].sha256 and encoder.config.model_type == "mpnet"
    samples = [
        RESample(("The", "storm", "caused", "the", "damage", "."), (1, 2), (4, 5), "Cause-Effect(e1,e2)"),
        RESample(("A", "key", "sat", "in", "the", "old", "drawer", "."), (1, 2), (6, 7), "Content-Container(e1,e2)"),
    ]
    rows = Inputs(tokenizer, 128, typed=False).dataset(samples).to_list()
    assert [tokenizer.convert_ids_to_tokens(r["input_ids"][r["head_pos"]]) for r in rows] == ["<e1>", "<e1>"]
    batch = DataCollatorWithPadding(tokenizer, return_tensors="pt")(rows)
    model = REClassifier(encoder, num_labels=19).eval()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 19) and torch.isfinite(logits).all()
    clear_model_cache()
