"""Exit codes as documented: 0 success; 1 a notebook or model failed; 2 bad input, busy or refused (one ``error:``
line, no traceback); 130 interrupted by Ctrl-C, 143 by SIGTERM (the notebook marked, its kernel and server stopped).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from custom_dataset import write_custom_dataset
from fakes import write_notebook

from redpo.__main__ import main

FAKE_SERVER = Path(__file__).parent / "fixtures" / "fake_llama_server.py"


def _replace(name: str, text: Callable[[str], str]) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text((folder / name).read_text()))


BAD_DATASET_FILES = {
    "rel2id_is_a_list": (_replace("rel2id.json", lambda t: json.dumps(list(json.loads(t)))),
                         "rel2id.json: expected a non-empty JSON object, got list"),
    "rel2id_bad_json": (_replace("rel2id.json", lambda t: t[:-2]), "rel2id.json:1: not valid JSON"),
    "relations_yaml_malformed": (_replace("relations.yaml", lambda t: t.replace("labels:", "labels: [")),
                                 "relations.yaml: not valid YAML (line"),
    "relations_yaml_is_a_list": (_replace("relations.yaml", lambda _: "- works_for\n"),
                                 "relations.yaml: <root>: Input should be a valid dictionary"),
    "relations_yaml_with_a_python_tag": (
        _replace("relations.yaml", lambda t: t.replace("lowercase: true", "lowercase: !!python/name:os.getpid")),
        "relations.yaml: not valid YAML (line 2, column 12: could not determine a constructor"),
    "relations_yaml_label_mismatch": (_replace("rel2id.json", lambda t: t.rstrip()[:-1] + ', "spouse_of": 9}'),
                                      "labels differ from rel2id.json (only in rel2id.json: ['spouse_of']"),
    "relations_yaml_todo": (_replace("relations.yaml", lambda t: t.replace("the head person works for", "TODO")),
                            "the explanation of 'works_for' is still the draft placeholder 'TODO'"),
}
"""A custom dataset's label files, broken the ways a careless user breaks them: each is one line and exit 2."""


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI in this process (a traceback would be an exception here); return its only stderr line."""
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("command", ["run", "data"])
@pytest.mark.parametrize("case", sorted(BAD_DATASET_FILES))
def test_a_broken_label_file_is_one_error_line_and_exit_2(case: str, command: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_custom_dataset(tmp_path / "mine")
    breakage, needle = BAD_DATASET_FILES[case]
    breakage(folder)
    argv = [command, "--profile", "smoke", "-p", "dataset.name=custom", "-p", f"dataset.path={folder}",
            "-p", "dataset.relations=null"] + (["--results-dir", str(tmp_path / "r")] if command == "run" else [])
    assert needle in _one_error_line(capsys, argv)


def test_a_broken_override_or_a_tagged_profile_is_one_error_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = ["--results-dir", str(tmp_path / "r")]
    line = _one_error_line(capsys, ["run", "--profile", "smoke", "-p", "fewshot.k=[8,", *results])
    assert "override 'fewshot.k=[8,': not valid YAML (line 1, column 4" in line and "fewshot.k=[8,16]" in line
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("dataset:\n  name: !!python/object/apply:os.getpid []\n")
    line = _one_error_line(capsys, ["run", "--profile", str(tagged), *results])
    assert f"{tagged}: not valid YAML (line 2, column 9: could not determine a constructor" in line
    assert "!!python/object" in line  # the fix names what is not allowed


def test_executor_ray_without_ray_installed_is_one_error_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where the extra is not installed
    line = _one_error_line(capsys, ["run", "--profile", "smoke", "-p", "executor=ray", "--results-dir",
                                    str(tmp_path / "r")])
    assert "executor kind 'ray' needs Ray, which is not installed: pip install -e '.[ray]'" in line
    assert "make setup EXTRAS=ray" in line


@pytest.mark.slow  # runs a notebook
def test_a_tampered_model_fails_its_notebook_with_1_and_is_refused_with_2_outside_a_run(
        tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from redpo.models.tiny import ensure_tiny

    monkeypatch.setenv("REDPO_CACHE", str(tmp_path / "cache"))  # the kernel inherits it
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    weights = Path(ensure_tiny("tiny-random-llama").path) / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_notebook(nbdir / "00_load.ipynb", "from redpo.models.load import resolve_model\n"
                   "resolve_model('tiny-random-llama')")
    code = main(["run", "--profile", "smoke", "--notebooks-dir", str(nbdir), "--results-dir", str(tmp_path / "r"),
                 "--no-progress"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "00_load.ipynb failed" in last and "ModelIntegrityError" in last, last
    assert "was edited" in _one_error_line(capsys, ["models", "--prepare", "tiny-random-llama"])


def _alive(pid: int) -> bool:
    """Running (a zombie has exited; only its parent's wait() is missing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


SERVE_AND_WAIT = """\
import json, os, time
from pathlib import Path
from redpo.generation.backends.llama_server import LlamaServer
here = Path({here!r})
server = LlamaServer(here / "bin" / "llama-server", here / "m.gguf", log_dir=here / "logs", threads=1, parallel=1,
                     ctx_per_slot=512, startup_timeout=30).start()
(here / "pids.tmp").write_text(json.dumps({{"kernel": os.getpid(), "server": server.process.pid}}))
(here / "pids.tmp").rename(here / "pids.json")
time.sleep(600)
"""


@pytest.mark.slow  # runs a notebook
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_marks_its_notebook_stops_kernel_and_server_and_exits_128_plus_the_signal(
        sig: signal.Signals, code: int, tmp_path: Path, data_root: Path) -> None:
    """A run waiting inside a notebook whose kernel serves a stand-in llama-server, stopped by Ctrl-C or SIGTERM."""
    (tmp_path / "bin").mkdir()
    binary = tmp_path / "bin" / "llama-server"
    binary.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(FAKE_SERVER)!r}, run_name='__main__')\n")
    binary.chmod(0o755)
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_notebook(nbdir / "00_serve.ipynb", SERVE_AND_WAIT.format(here=str(tmp_path)))
    env = {**os.environ, "REDPO_RESULTS_DIR": str(tmp_path / "r"), "REDPO_DATA_DIR": str(data_root)}
    env.pop("REDPO_RESULTS_LOCK", None)
    # A job started with `&` from a script inherits SIGINT ignored, and the run keeps an ignored signal ignored (by
    # design): give the run Ctrl-C's default, as a terminal would, so the test means the same wherever it runs.
    proc = subprocess.Popen([sys.executable, "-m", "redpo", "run", "--profile", "smoke", "--notebooks-dir", str(nbdir),
                             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pids_file = tmp_path / "pids.json"
    deadline = time.monotonic() + 300
    while not pids_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not pids_file.exists():
        proc.kill()
        pytest.fail(f"the notebook never started its server:\n{proc.communicate()[1][-3000:]}")
    pids = json.loads(pids_file.read_text())
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=120)

    assert proc.returncode == code, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith(("interrupted:", "error:"))]
    assert len(ours) == 1 and ours[0].startswith(f"interrupted: {sig.name} stopped 00_serve.ipynb after "), err
    assert "redpo/__main__.py" not in err and "redpo/run/runner.py" not in err  # no traceback of the run's own
    assert not _alive(pids["kernel"])  # shut down before the run exits, not left to notice its parent is gone
    deadline = time.monotonic() + 30
    while _alive(pids["server"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pids["server"])
    results = tmp_path / "r" / "smoke"
    entry = json.loads((results / "manifest.json").read_text())["notebooks"]["00_serve.ipynb"]
    assert entry["status"] == "interrupted" and entry["error"] == f"interrupted by {sig.name}" and entry["end"]
    ends = [json.loads(line) for line in (results / "logs" / "run_segments.jsonl").read_text().splitlines()]
    assert [e["status"] for e in ends if e["event"] == "end"] == ["interrupted"]
