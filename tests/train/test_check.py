"""``dposhap check`` / ``train --dry-run``: everything train checks, without training or reading weights,
with the data audit; ``RUN/data-audit.json``; ``[dpo] report_to`` passed through to TRL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from dposhap.audit import audit_sources
from dposhap.cli import main
from dposhap.config import load_config
from dposhap.errors import ConfigError
from dposhap.train import check_training, train_sources

N = 10


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def standard(i: int) -> dict[str, Any]:
    # the toy tokenizer: one token per word (<unk> for the words it lacks), <s> in front
    return {"prompt": f"the sky {i} is", "chosen": f" azure {i}", "rejected": f" verdant {i}"}


def chat(i: int) -> dict[str, Any]:
    question = f"where {i} ?"
    return {
        "prompt": question,
        "chosen": [{"role": "user", "content": question}, {"role": "assistant", "content": f"here {i}"}],
        "rejected": [{"role": "user", "content": question}, {"role": "assistant", "content": f"there {i}"}],
    }


@pytest.fixture
def project(tiny_chat_model: Path, tmp_path: Path) -> Path:
    """A config with a plain source, a chat source, a reseller of the chat source and a trusted set."""
    write_jsonl(tmp_path / "plain.jsonl", [standard(i) for i in range(N)])
    write_jsonl(tmp_path / "chat.jsonl", [chat(i) for i in range(N)])
    resold = [chat(i) for i in range(N)]
    for row in resold:  # the same pairs up to case and spacing
        row["chosen"][1]["content"] = "  " + row["chosen"][1]["content"].upper()
    write_jsonl(tmp_path / "resold.jsonl", resold)
    write_jsonl(tmp_path / "eval.jsonl", [chat(0), chat(1), chat(N + 5)])
    (tmp_path / "run.toml").write_text(
        f'[model]\nbase = "{tiny_chat_model}"\ndevice = "cpu"\n'
        '[data.sources]\nplain = "plain.jsonl"\nchat = "chat.jsonl"\nresold = "resold.jsonl"\n'
        '[eval]\nfiles = ["eval.jsonl"]\n'
        "[dpo]\nmax_steps = 1\nper_device_train_batch_size = 2\nmax_length = 64\n",
        encoding="utf-8",
    )
    return tmp_path


def test_a_clean_check_with_the_audit(project: Path) -> None:
    check = check_training(project / "run.toml")
    assert check.ok, check.errors
    assert set(check.checked) >= {"config", "data", "eval", "model", "tokenizer", "lora", "max_length", "report_to"}
    assert "chat template" in check.checked["tokenizer"] and "config only" in check.checked["model"]
    audit = check.audit
    assert audit is not None and audit.eval_pairs == 3
    plain, resold, own = audit.sources["plain"], audit.sources["resold"], audit.sources["chat"]
    assert plain.pairs == own.pairs == resold.pairs == N
    # <s> the sky i is | azure i </s>: 5 prompt tokens, 3 per response
    assert (plain.mean_prompt_tokens, plain.mean_response_tokens) == (5.0, 3.0)
    assert resold.shared_pairs == {"chat": N} and own.shared_pairs == {"resold": N} and not plain.shared_pairs
    assert own.eval_prompts == resold.eval_prompts == 2 and plain.eval_prompts == 0
    assert plain.identical_pairs == N  # azure and verdant are words the toy tokenizer lacks: both <unk>
    assert plain.truncated_pairs == plain.dropped_response_tokens == plain.duplicate_pairs == 0
    assert len(check.warnings) == len(audit.warnings()) > 0
    assert any(
        "resold: 10 pairs are also in chat" in w or "chat: 10 pairs are also in resold" in w for w in check.warnings
    )

    strict = check_training(project / "run.toml", strict=True)
    assert not strict.ok and strict.errors[-1].startswith("strict:")


def test_truncation_is_counted_as_trl_truncates() -> None:
    from dposhap.worlds.toy.model import build_tokenizer

    tokenizer = build_tokenizer()
    records = [standard(i) for i in range(4)]
    records.append({"prompt": "a b c d e f g", "chosen": " x", "rejected": " y"})  # 8 prompt tokens
    audit = audit_sources({"s": records}, tokenizer, max_length=6)
    found = audit.sources["s"]
    # standard pairs: 5 + 3 tokens, 2 of each response cut; the long prompt: both 2-token responses cut whole
    assert found.truncated_pairs == 5 and found.dropped_response_tokens == 4 * 4 + 2 * 2
    assert found.prompt_only_pairs == 1
    found = audit_sources({"s": records}, tokenizer, max_length=10).sources["s"]
    assert found.truncated_pairs == 0 and found.prompt_only_pairs == 0


def test_duplicates_up_to_case_and_spacing() -> None:
    from dposhap.worlds.toy.model import build_tokenizer

    rows = [standard(i) for i in range(3)] + [{**standard(1), "chosen": "AZURE   1"}]
    found = audit_sources({"s": rows}, build_tokenizer(), max_length=64).sources["s"]
    assert found.duplicate_pairs == 1


def test_no_weights_are_read(project: Path, tmp_path: Path, tiny_chat_model: Path) -> None:
    model = tmp_path / "config-only"
    shutil.copytree(tiny_chat_model, model)
    for weights in model.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    check = check_training(load_config(project / "run.toml", [f"model.base={str(model)!r}"]))
    assert check.ok, check.errors


def test_errors_are_collected_not_raised(project: Path) -> None:
    rows = [standard(i) for i in range(N)] + [{"chosen": "yes", "rejected": "no"}]
    write_jsonl(project / "plain.jsonl", rows)
    cfg = load_config(project / "run.toml", ["lora.target_modules=['q_proj','wings']"])
    check = check_training(cfg)
    assert not check.ok
    assert check.errors[0].startswith("data: 1 problem(s)") and "plain.jsonl:11" in check.errors[0]
    assert len(check.data_problems) == 1 and "no 'prompt'" not in check.data_problems[0]
    assert any(error.startswith("lora:") and "wings" in error for error in check.errors)
    assert check.audit is None  # no data to audit


def test_conversations_need_a_chat_template(project: Path, tmp_path: Path, tiny_chat_model: Path) -> None:
    model = tmp_path / "no-template"
    shutil.copytree(tiny_chat_model, model)
    config = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    for extra in ("chat_template.jinja", "chat_template.json"):
        (model / extra).unlink(missing_ok=True)
    check = check_training(load_config(project / "run.toml", [f"model.base={str(model)!r}"]))
    assert any(error.startswith("tokenizer:") and "chat template" in error for error in check.errors)
    plain_only = load_config(project / "run.toml", [f"model.base={str(model)!r}", "eval.files=[]"])
    assert check_training(plain_only, sources=["plain"]).ok


def test_the_commands(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    assert main(["check", "--config", "run.toml"]) == 0
    out = capsys.readouterr().out
    assert "training would start" in out and "eval prompts" in out

    assert main(["check", "--config", "run.toml", "--json", "--strict"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["audit"]["sources"]["resold"]["shared_pairs"] == {"chat": N}

    write_jsonl(project / "plain.jsonl", [standard(i) for i in range(N)] + [{"chosen": "yes", "rejected": "no"}] * 2)
    assert main(["train", "--config", "run.toml", "--out", "run", "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "training would not start" in out and "all 2 data problems are listed in run/data-problems.txt" in out
    assert sorted(p.name for p in (project / "run").iterdir()) == ["data-problems.txt"]  # nothing else written
    assert main(["check", "--config", "run.toml"]) == 2
    assert f"listed in {project / 'data-problems.txt'}" in capsys.readouterr().out  # beside the config
    assert (project / "data-problems.txt").read_text(encoding="utf-8").count("\n") == 2

    assert main(["train", "--config", "run.toml", "--out", "run", "--strict"]) == 2
    assert "--strict and --json go with --dry-run" in capsys.readouterr().err


def test_report_to_is_checked_and_passed_to_trl(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="dpo.report_to.*'tensorbored'.*tensorboard"):
        load_config(project / "run.toml", ['dpo.report_to="tensorbored"'])
    cfg = load_config(project / "run.toml", ['dpo.report_to=["tensorboard"]'])
    assert cfg.training_hash() == load_config(project / "run.toml").training_hash()  # logs change no adapter
    if "tensorboard" not in __import__("transformers").integrations.get_available_reporting_integrations():
        check = check_training(cfg)
        assert any("pip install tensorboard" in error for error in check.errors)

    # a stand-in integration, to see what TRL is handed and where it writes
    from transformers import TrainerCallback, integrations
    from transformers.integrations import integration_utils

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            import os

            self.folder = Path(os.environ["TENSORBOARD_LOGGING_DIR"])

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            with open(self.folder / "events.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(logs) + "\n")

    monkeypatch.setitem(integration_utils.INTEGRATION_TO_CALLBACK, "recorder", Recorder)
    monkeypatch.setattr(integrations, "get_available_reporting_integrations", lambda: ["recorder"])
    cfg = load_config(project / "run.toml", ['dpo.report_to="recorder"'])
    train_sources(cfg, tmp_path / "run", sources=["plain"], progress=False)
    logged = (tmp_path / "run" / "logs" / "plain" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert any("loss" in json.loads(line) for line in logged)
