"""Faults: kill -9 at several moments, Ctrl-C, a full disk, a file-size limit, unexpected bugs.

Faults are injected with the run layer's ``DPOSHAP_FAULT`` hook (:func:`dposhap.run.files.fault_point`:
at the moment a named file is about to be renamed into place), with a real SIGINT, and with a real
RLIMIT_FSIZE in the child process (its writes then fail with EFBIG, as on a full disk).
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import SOURCES, TRAIN_ARGS, cli, one_line_error, snapshot


def _forget(run: Path, source: str) -> None:
    """Make ``source`` untrained again (as after a train killed before it), so a rerun trains just it."""
    shutil.rmtree(run / "adapters" / source)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    del manifest["sources"][source]
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _trained(run: Path) -> dict[str, dict]:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))["sources"]


def _no_leftovers(run: Path) -> None:
    assert not [p.name for p in (run / "adapters").iterdir() if p.name.startswith(".")]
    assert not list(run.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["noisy", "dposhap.json", "manifest.json"])
def test_kill_9_during_train_then_rerun_finishes(run: Path, moment: str) -> None:
    """Killed while placing the adapter, while writing its metadata, or while writing the manifest."""
    _forget(run, "noisy")
    kept = {s: (run / "adapters" / s / "adapter_model.safetensors").read_bytes() for s in ("harmless", "helpful")}
    result = cli("train", "--out", run, *TRAIN_ARGS, env={"DPOSHAP_FAULT": f"kill:{moment}"})
    assert result.returncode == -signal.SIGKILL
    assert sorted(_trained(run)) == ["harmless", "helpful"]  # the manifest is the old one, whole
    assert not (run / "adapters" / "noisy").exists() or moment == "manifest.json"
    result = cli("train", "--out", run, *TRAIN_ARGS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(_trained(run)) == SOURCES
    _no_leftovers(run)
    for source, data in kept.items():
        assert (run / "adapters" / source / "adapter_model.safetensors").read_bytes() == data


@pytest.mark.parametrize("moment", ["noisy", "manifest.json"])
def test_a_full_disk_during_train_leaves_nothing_half_written(run: Path, moment: str) -> None:
    _forget(run, "noisy")
    manifest_before = (run / "manifest.json").read_bytes()
    result = cli("train", "--out", run, *TRAIN_ARGS, env={"DPOSHAP_FAULT": f"enospc:{moment}"})
    one_line_error(result, 2, "disk is full", "run the same command again")
    if moment == "noisy":
        assert not (run / "adapters" / "noisy").exists()
    else:
        assert (run / "manifest.json").read_bytes() == manifest_before
    assert sorted(_trained(run)) == ["harmless", "helpful"]  # whole, and nothing lost
    _no_leftovers(run)


def _fsize_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_real_file_size_limit_while_saving_an_adapter(run: Path) -> None:
    _forget(run, "noisy")
    before = snapshot(run)
    result = cli("train", "--out", run, *TRAIN_ARGS, preexec_fn=_fsize_limit(40_000))  # the weights are ~73 kB
    one_line_error(result, 2, "disk is full")
    assert not (run / "adapters" / "noisy").exists()
    _no_leftovers(run)
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k.startswith("adapters/")} == {
        k: v for k, v in before.items() if k.startswith("adapters/")
    }


@pytest.mark.parametrize("fault", ["enospc", "kill", "interrupt"])
def test_a_fault_while_writing_values_keeps_the_old_ones(run: Path, fault: str) -> None:
    before = (run / "values.json").read_bytes()
    result = cli(
        "value",
        run,
        "--utility",
        "accuracy",
        "--quiet",
        "--name",
        "again",
        env={"DPOSHAP_FAULT": f"{fault}:values.json"},
    )
    if fault == "kill":
        assert result.returncode == -signal.SIGKILL
    elif fault == "enospc":
        one_line_error(result, 2, "disk is full")
    else:
        one_line_error(result, 130, "interrupted")
    assert (run / "values.json").read_bytes() == before
    assert not list(run.glob(".*.tmp")) or fault == "kill"
    if fault == "kill":  # the next run goes through
        result = cli("value", run, "--utility", "accuracy", "--quiet", "--name", "again")
        assert result.returncode == 0, result.stderr[-2000:]


def test_ctrl_c_during_train(run: Path) -> None:
    _forget(run, "noisy")
    before = (run / "manifest.json").read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dposhap.cli", "train", "--out", str(run), *TRAIN_ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the lock names the process once train is under way
        lock = run / ".lock"
        if lock.is_file() and f"pid {proc.pid}" in lock.read_text(encoding="utf-8"):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # finished before the signal: nothing to check but the result
        assert sorted(_trained(run)) == SOURCES
        return
    one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 130, "interrupted")
    # the manifest may have been rewritten (the plan is recorded before training starts), never lost
    # or changed in what it says was trained
    after = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert after["sources"] == json.loads(before)["sources"]
    _no_leftovers(run)


def test_an_unexpected_bug_is_one_line_and_a_log_in_the_run(run: Path) -> None:
    code = (
        "import sys, dposhap.cli as c\n"
        "def boom(args):\n    raise RuntimeError('something impossible')\n"
        "c.value._cmd_report = boom\n"
        f"sys.exit(c.main(['report', {str(run)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err = one_line_error(result, 1, "internal error", "RuntimeError: something impossible", str(run / "logs"))
    log = Path(err.rsplit(" ", 1)[-1].strip())
    assert (
        log.is_file() and "Traceback" in log.read_text(encoding="utf-8") and "boom" in log.read_text(encoding="utf-8")
    )


def test_an_unexpected_bug_without_a_run_logs_to_the_temp_folder(tmp_path: Path) -> None:
    code = (
        "import sys, dposhap.cli as c\n"
        "def boom(args):\n    raise KeyError('x')\n"
        "c.recipes._cmd_demo = boom\n"
        f"sys.exit(c.main(['demo', '--out', {str(tmp_path / 'none')!r}]))\n"
    )
    env = {"TMPDIR": str(tmp_path)}
    import os

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    one_line_error(result, 1, "internal error", str(tmp_path / "dposhap-logs"))
    assert not (tmp_path / "none").exists()


def test_a_prompt_file_that_is_not_utf8(run: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a caf\xe9 question\n")
    before = snapshot(run)
    result = cli(
        "value",
        run,
        "--utility",
        "generation",
        "--prompts",
        prompts,
        "--n-prompts",
        "1",
        "--max-new-tokens",
        "1",
        "--quiet",
    )
    one_line_error(result, 2, "prompts.txt", "UTF-8")
    assert {k: v for k, v in snapshot(run).items() if k != "cache.sqlite"} == {
        k: v for k, v in before.items() if k != "cache.sqlite"
    }


@pytest.mark.parametrize(
    "prompt", [7, None, {"role": "user", "content": "hi"}, ""], ids=["number", "null", "dict", "empty"]
)
def test_a_prompt_that_is_not_a_text_is_located(run: Path, tmp_path: Path, prompt: object) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "a good one"}) + "\n" + json.dumps({"prompt": prompt}) + "\n", encoding="utf-8"
    )
    result = cli(
        "value",
        run,
        "--utility",
        "generation",
        "--prompts",
        prompts,
        "--max-new-tokens",
        "1",
        "--quiet",
    )
    err = one_line_error(result, 2, f"{prompts}:2 field 'prompt'", "a prompt must be a string or a conversation")
    assert "chat template" not in err


def test_an_empty_prompt_file(run: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n  \n", encoding="utf-8")
    result = cli(
        "value",
        run,
        "--utility",
        "generation",
        "--prompts",
        prompts,
        "--n-prompts",
        "1",
        "--max-new-tokens",
        "1",
        "--quiet",
    )
    one_line_error(result, 2, "no prompts")


def test_conversations_with_a_tokenizer_without_a_chat_template(run: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": [{"role": "user", "content": "hello"}]}) + "\n", encoding="utf-8")
    result = cli(
        "value",
        run,
        "--utility",
        "generation",
        "--prompts",
        prompts,
        "--n-prompts",
        "1",
        "--max-new-tokens",
        "1",
        "--quiet",
    )
    one_line_error(result, 2, "chat template")


@pytest.mark.parametrize(
    ("override", "field"),
    [("lora.target_modules=['no_such_proj']", "lora.target_modules"), ("dpo.max_length=3", "dpo.max_length")],
)
def test_settings_only_the_model_can_check(run: Path, override: str, field: str) -> None:
    before = snapshot(run)
    result = cli("train", "--out", run, *TRAIN_ARGS, "--set", override, "--force")
    one_line_error(result, 2, field)
    assert {k: v for k, v in snapshot(run).items() if k.startswith("adapters/")} == {
        k: v for k, v in before.items() if k.startswith("adapters/")
    }


@pytest.mark.slow
def test_selecting_sources_with_the_toy_model_and_your_own_data(tmp_path: Path) -> None:
    rows = [
        {"source": name, "prompt": f"q {i} {name}", "chosen": f"good {i}", "rejected": f"bad {i}"}
        for name in ("alpha", "beta", "gamma")
        for i in range(16)
    ]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[model]\nbase = "toy"\n[toy]\npairs_per_source = 16\n[data]\nfiles = ["{data}"]\n'
        "[dpo]\nmax_steps = 1\nmax_length = 64\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = cli("train", "--config", config, "--out", out, "--sources", "alpha,beta", "--quiet", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(_trained(out)) == ["alpha", "beta"]
