"""Training precision: bf16 only where the machine multiplies it natively, keyed only when set, applied where set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from redpo.config import ConfigError, EncoderConfig, derive, identity, load_profile
from redpo.models import precision


@pytest.mark.parametrize(("flags", "capability", "cuda", "native"), [
    (["avx2", "avx512_bf16", "avx512f"], "AVX512", False, True),
    (["avx2", "amx_bf16", "avx512f"], "AVX512", False, True),
    (["avx2", "avx512f"], "AVX512", False, False),  # AVX-512 without the bf16 instructions: emulated, slower
    (["avx2", "avx512_bf16", "avx512f"], "AVX2", False, False),  # ATEN_CPU_CAPABILITY=avx2: an AVX2 machine
    ([], "DEFAULT", True, True),  # a CUDA GPU with bf16
])
def test_native_bf16_needs_the_instructions_and_torch_at_avx512_or_cuda(
        flags: list[str], capability: str, cuda: bool, native: bool) -> None:
    assert precision.native_bf16(flags, capability, cuda) is native


def _no_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: ["avx2", "avx512f"])
    monkeypatch.setattr(precision, "cuda_bf16", lambda: False)


def test_bf16_is_refused_with_one_line_naming_the_key_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_native(monkeypatch)
    precision.check_precision(load_profile("cpu-full"))  # fp32 runs anywhere
    for key in ("encoder.precision", "dpo.precision"):
        with pytest.raises(ConfigError) as err:
            precision.check_precision(load_profile("cpu-full", {key: "bf16"}))
        assert "\n" not in str(err.value) and str(err.value).startswith(f"{key}: bf16 needs native bf16")
        assert f"-p {key}=fp32" in str(err.value)
    # Only the keys asked about: DPO's trainer does not refuse because the encoder asks for bf16.
    precision.check_precision(load_profile("cpu-full", {"encoder.precision": "bf16"}), "dpo.precision")


def test_bf16_is_allowed_on_cuda_whatever_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: [])
    monkeypatch.setattr(precision, "cuda_bf16", lambda: True)
    precision.check_precision(load_profile("cpu-full", {"encoder.precision": "bf16", "dpo.precision": "bf16"}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU allows bf16 whatever the CPU")
def test_the_cli_refuses_bf16_on_an_avx2_machine_before_any_notebook(data_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "REDPO_RESULTS_DIR": str(tmp_path),
           "REDPO_DATA_DIR": str(data_root)}
    proc = subprocess.run([sys.executable, "-m", "redpo", "run", "--profile", "smoke", "-p", "encoder.precision=bf16"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: encoder.precision: bf16 needs native bf16")
    assert not (tmp_path / "smoke" / "manifest.json").exists()


def test_precision_is_part_of_a_key_only_when_set() -> None:
    """Committed runs and adapters were keyed before the field existed: fp32 must leave their keys as they were."""
    prof = load_profile("cpu-full")
    assert "precision" not in identity(prof.encoder) and "precision" not in identity(prof.dpo)
    bf16 = load_profile("cpu-full", {"encoder.precision": "bf16", "dpo.precision": "bf16"})
    assert identity(bf16.encoder)["precision"] == "bf16" and identity(bf16.dpo)["precision"] == "bf16"
    with pytest.raises(ConfigError, match=r"encoder\.precision"):
        load_profile("cpu-full", {"encoder.precision": "fp16"})


def test_stage_precisions_name_every_training_stage() -> None:
    prof = load_profile("cpu-full", {"dpo.precision": "bf16"})
    assert precision.stage_precisions(prof) == {"re": "fp32", "oracle": "fp32", "dpo": "bf16"}


def test_trainer_arguments_carry_the_precision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """bf16 reaches TRL's config (with ``use_cpu`` off CUDA, without which the Trainer refuses bf16); fp32 does not."""
    from redpo.dpo.train import trainer_config

    monkeypatch.setattr(precision, "native_bf16", lambda *a: True)
    fp32 = trainer_config(load_profile("cpu-full"), tmp_path, progress=False)
    bf16 = trainer_config(load_profile("cpu-full", {"dpo.precision": "bf16"}), tmp_path, progress=False)
    assert (fp32.bf16, bf16.bf16) == (False, True)
    assert bf16.use_cpu is not torch.cuda.is_available()
    monkeypatch.setattr(precision, "native_bf16", lambda *a: False)
    with pytest.raises(ConfigError, match=r"dpo\.precision"):
        trainer_config(load_profile("cpu-full", {"dpo.precision": "bf16"}), tmp_path, progress=False)


def test_the_manifest_records_each_stage_precision(tmp_path: Path) -> None:
    from redpo.core.manifest import load_manifest, record_precision

    record_precision(tmp_path, {"re": "bf16", "oracle": "bf16", "dpo": "fp32", "native_bf16": True})
    assert load_manifest(tmp_path)["precision"] == {"re": "bf16", "oracle": "bf16", "dpo": "fp32", "native_bf16": True}


# ---- the RE classifier in bf16 and with fixed padding ---------------------------------------------------------
def _spy(model: Any) -> list[tuple[bool, int]]:
    """Record, at every encoder forward, whether bf16 autocast is on and the batch's padded length."""
    seen: list[tuple[bool, int]] = []

    def hook(_module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append((torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16,
                     int(ids.shape[1])))

    model.encoder.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize(("precision_", "padding"), [("fp32", "longest"), ("bf16", "fixed")])
def test_re_training_and_prediction_run_in_the_chosen_precision_and_padding(
        precision_: str, padding: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from test_re_model import SCHEMA, _toy

    from redpo.extraction import model as re_model
    from redpo.models.tiny import build_tiny_bert

    monkeypatch.setattr(precision, "native_bf16", lambda *a: True)
    encoder = str(build_tiny_bert(tmp_path / "bert", [s.text for s in _toy(10, seed=99)], vocab_size=300))
    real = re_model.REClassifier.__init__

    def spying_init(self: Any, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        self._seen = _spy(self)

    monkeypatch.setattr(re_model.REClassifier, "__init__", spying_init)
    cfg = derive(EncoderConfig(max_length=32, batch_size=4, epochs=1, learning_rate=1e-4), {"precision": precision_})
    trained = re_model.train_re_model(_toy(2, seed=1), _toy(1, seed=2), SCHEMA, cfg, encoder_name=encoder, seed=0,
                                      padding=padding)  # type: ignore[arg-type]
    during_training = list(trained.model._seen)
    re_model.predict(trained, _toy(1, seed=3))
    calls = trained.model._seen
    assert len(calls) > len(during_training) > 0
    assert {bf16 for bf16, _ in calls} == {precision_ == "bf16"}
    lengths = {length for _, length in calls}
    assert lengths == {32} if padding == "fixed" else max(lengths) < 32
    assert (trained.precision, trained.padding) == (precision_, padding)
    # The summary (the oracle's lands in the correctness metrics) names them only when set: a default run's reads
    # as before, a bf16 oracle reloads in bf16.
    summary = trained.summary()
    assert ("precision" in summary, "padding" in summary) == (precision_ == "bf16", padding == "fixed")
