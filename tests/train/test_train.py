"""Per-source DPO training with TRL + PEFT on the toy world: it learns, it resumes, it reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dposhap.config import load_config
from dposhap.data import read_jsonl_records
from dposhap.errors import ModelLoadError, RunLockedError
from dposhap.models import load_adapters, load_base_model, load_tokenizer, resolve_model
from dposhap.run import MANIFEST_FORMAT, Run
from dposhap.train import adapter as train_adapter
from dposhap.train import train_sources

# small and quick, but enough for a clean source to be learnt
FAST = [
    "dpo.num_train_epochs=2",
    "dpo.learning_rate=1e-3",
    "dpo.max_length=64",
    "model.device=cpu",
    "toy.pairs_per_source=160",
]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """helpful, harmless and a duplicate of helpful, trained once for the module."""
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [*FAST, "toy.sources=['helpful','harmless','duplicate']"])
    train_sources(cfg, out, progress=False)
    return out


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_manifest_is_complete(toy_run: Path) -> None:
    manifest = _manifest(toy_run)
    assert manifest["format"] == MANIFEST_FORMAT
    for package in ("torch", "transformers", "trl", "peft", "datasets", "dposhap", "python"):
        assert manifest["versions"][package]
    assert manifest["base_model"]["local"] and manifest["base_model"]["fingerprint"].startswith("local:")
    assert manifest["config"]["dpo"]["learning_rate"] == 1e-3
    assert manifest["world"]["name"] == "toy" and manifest["world"]["objectives"] == ["helpful", "harmless"]
    assert list(manifest["sources"]) == ["duplicate", "harmless", "helpful"]
    for entry in manifest["sources"].values():
        assert entry["status"] == "trained"
        assert (
            len(entry["data_hash"]) == 64 and len(entry["training_hash"]) == 64 and len(entry["adapter_sha256"]) == 64
        )
        assert entry["n_train"] > 0 and entry["n_heldout"] > 0
        assert set(entry["metrics"]) >= {
            "heldout_reward_accuracy",
            "heldout_reward_margin",
            "heldout_loss",
            "train_loss",
            "steps",
        }
        assert entry["metrics"]["steps"] > 0
        assert entry["timings"]["train_s"] > 0 and entry["timings"]["peak_memory_mb"] > 0
        adapter = toy_run / entry["adapter"]
        assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
        assert json.loads((adapter / "dposhap.json").read_text())["data_hash"] == entry["data_hash"]
        heldout = read_jsonl_records(toy_run / entry["heldout"])
        assert len(heldout) == entry["n_heldout"]
    assert not list((toy_run / "adapters").glob(".tmp-*"))


def test_clean_sources_are_learnt(toy_run: Path) -> None:
    sources = _manifest(toy_run)["sources"]
    for name in ("helpful", "harmless"):
        metrics = sources[name]["metrics"]
        assert metrics["heldout_reward_accuracy"] > 0.8, (name, metrics)
        assert metrics["heldout_reward_margin"] > 0, (name, metrics)


def test_lora_never_touches_the_lm_head(toy_run: Path) -> None:
    config = json.loads((toy_run / "adapters" / "helpful" / "adapter_config.json").read_text())
    from safetensors.torch import load_file

    keys = load_file(str(toy_run / "adapters" / "helpful" / "adapter_model.safetensors")).keys()
    assert keys and not any("lm_head" in key for key in keys)
    assert config["r"] == 8 and not config.get("modules_to_save")


def test_duplicate_source_gives_the_identical_adapter(toy_run: Path) -> None:
    """The base model is restored exactly between sources, and training is deterministic."""
    from safetensors.torch import load_file

    a = load_file(str(toy_run / "adapters" / "helpful" / "adapter_model.safetensors"))
    b = load_file(str(toy_run / "adapters" / "duplicate" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adapters_load_from_the_run_on_a_local_base(toy_run: Path) -> None:
    manifest = _manifest(toy_run)
    ref = resolve_model(manifest["base_model"]["location"])
    assert ref.local
    tokenizer = load_tokenizer(ref)
    base = load_base_model(ref, dtype=torch.float32, device="cpu")
    model = load_adapters(base, {name: toy_run / "adapters" / name for name in ("helpful", "harmless")})
    assert set(model.peft_config) == {"helpful", "harmless"}
    prompt = read_jsonl_records(toy_run / "data" / "helpful" / "heldout.jsonl")[0]["prompt"]
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        with model.disable_adapter():
            ref_logits = model(ids).logits
        model.set_adapter("helpful")
        helpful = model(ids).logits
        model.set_adapter("harmless")
        harmless = model(ids).logits
        fresh = load_base_model(ref, dtype=torch.float32, device="cpu")(ids).logits
    assert torch.equal(ref_logits, fresh)  # adapters off = the reference policy
    assert not torch.allclose(helpful, ref_logits) and not torch.allclose(helpful, harmless)
    with pytest.raises(ModelLoadError, match="missing or incomplete"):
        load_adapters(load_base_model(ref, dtype=torch.float32, device="cpu"), {"nope": toy_run / "adapters" / "nope"})


def test_rerun_reuses_every_finished_source(toy_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (toy_run / "adapters").rglob("*.safetensors")}
    cfg = load_config(None, [*FAST, "toy.sources=['helpful','harmless','duplicate']"])
    manifest = train_sources(cfg, toy_run, progress=False).to_dict()
    assert {e["status"] for e in manifest["sources"].values()} == {"reused"}
    assert manifest["sources"]["helpful"]["metrics"]["heldout_reward_accuracy"] > 0.8  # kept from the first run
    assert before == {p: p.stat().st_mtime_ns for p in (toy_run / "adapters").rglob("*.safetensors")}


def _toy_files(toy_run: Path) -> dict[str, Path]:
    from dposhap.worlds import toy

    world = toy.build_toy_world(
        toy_run / "world", seed=0, sources=["helpful", "harmless", "duplicate"], pairs_per_source=160
    )
    return world.data_files


def test_changed_source_is_retrained_and_interrupted_source_restarts(
    tmp_path: Path, toy_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _toy_files(toy_run)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("helpful", "harmless"):
        shutil.copy(files[name], data / f"{name}.jsonl")
    model_dir = _manifest(toy_run)["base_model"]["location"]
    config = tmp_path / "run.toml"
    config.write_text(
        f"[model]\nbase = {json.dumps(model_dir)}\ndevice = 'cpu'\n"
        "[data.sources]\nhelpful = 'data/helpful.jsonl'\nharmless = 'data/harmless.jsonl'\n"
        "[dpo]\nlearning_rate = 5e-3\nmax_steps = 3\nmax_length = 64\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    first = train_sources(config, out, progress=False).to_dict()
    assert {e["status"] for e in first["sources"].values()} == {"trained"}

    # change one pair of one source: only that source is retrained
    lines = (data / "harmless.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["chosen"] = record["chosen"] + " the"
    lines[0] = json.dumps(record)
    (data / "harmless.jsonl").write_text("\n".join(lines) + "\n")
    second = train_sources(config, out, progress=False).to_dict()
    assert second["sources"]["helpful"]["status"] == "reused"
    assert second["sources"]["harmless"]["status"] == "trained"
    assert second["sources"]["harmless"]["data_hash"] != first["sources"]["harmless"]["data_hash"]

    # a config change retrains everything; interrupt the second source mid-run
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2 and self.label.endswith("helpful"):
                raise KeyboardInterrupt

    def callback(label: str) -> TrainerCallback:
        cb = Interrupt()
        cb.label = label
        return cb

    monkeypatch.setattr(train_adapter, "progress_callback", callback)
    with pytest.raises(KeyboardInterrupt):
        train_sources(load_config(config, ["dpo.beta=0.2"]), out, progress=True)
    manifest = _manifest(out)
    assert manifest["sources"]["harmless"]["status"] == "trained"  # finished before the interruption
    assert manifest["config"]["dpo"]["beta"] == 0.2
    assert "helpful" not in manifest["sources"]  # the interrupted source is not claimed
    assert not list((out / "adapters").glob(".tmp-helpful-*"))  # its half-written folder was removed at once
    old_meta = json.loads((out / "adapters" / "helpful" / "dposhap.json").read_text())
    assert old_meta["training_hash"] == first["sources"]["helpful"]["training_hash"]

    monkeypatch.undo()
    third = train_sources(load_config(config, ["dpo.beta=0.2"]), out, progress=False).to_dict()
    assert third["sources"]["harmless"]["status"] == "reused"
    assert third["sources"]["helpful"]["status"] == "trained"
    assert not list((out / "adapters").glob(".tmp-*"))


def test_a_run_in_use_is_refused(tmp_path: Path) -> None:
    run = Run(tmp_path / "run")
    with run.lock("another job"), pytest.raises(RunLockedError, match="another job"):
        train_sources(None, run.root, progress=False)


def test_model_resolution_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model folder"):
        resolve_model("./missing-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    ref = resolve_model("some-org/some-model")
    assert not ref.local and ref.fingerprint() == "hub:some-org/some-model@main"
    # a mistyped folder under a folder that is here is a path, not a hub id to try
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelLoadError, match="no model folder at .*models/mdoel"):
        resolve_model("models/mdoel", base_dir=tmp_path)


def test_unreachable_hub_model_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    ref = resolve_model("dposhap-test/not-a-model")
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer of 'dposhap-test/not-a-model'.*local"):
        load_tokenizer(ref)
    with pytest.raises(ModelLoadError, match="cannot load the model 'dposhap-test/not-a-model'.*local"):
        load_base_model(ref, dtype=torch.float32, device="cpu")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dposhap.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[dpo]\nbeta = -1\n")
    result = _cli("train", "--config", "bad.toml", "--out", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "bad.toml:2 field 'dpo.beta'" in result.stderr

    bad = tmp_path / "prefs.jsonl"
    bad.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "a", "source": "s"}\n'
        '{"prompt": "p", "chosen": "", "rejected": "b", "source": "s"}\n'
    )
    (tmp_path / "data.toml").write_text("[model]\nbase = 'org/model'\n[data]\nfiles = ['prefs.jsonl']\n")
    result = _cli("train", "--config", "data.toml", "--out", "run2", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "prefs.jsonl:1" in result.stderr and "nothing was trained" in result.stderr
    report = (tmp_path / "run2" / "data-problems.txt").read_text()
    assert "prefs.jsonl:2" in report and "prefs.jsonl:1" in report
    assert not (tmp_path / "run2" / "adapters").exists()

    result = _cli("train", "--out", "run3", "--set", "dpo.beta", cwd=tmp_path)
    assert result.returncode == 2 and "table.key=value" in result.stderr

    result = _cli("train", cwd=tmp_path)
    assert result.returncode == 2 and "--out" in result.stderr and result.stderr.count("\n") == 1
