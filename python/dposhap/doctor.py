"""What is installed and what runs here: the report of ``dposhap doctor``.

:func:`sections` yields the report a section at a time (the versions of dposhap and of the
libraries it runs on, the compose backends that run here and why the others do not, the device,
the model cache, the packaged models), so that a caller can print each as it comes: checking the
C++ backend compiles it the first time (up to a minute), and later processes only load it.
Nothing here raises for a missing piece; a missing piece is a line that says what to install.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import DposhapError, first_line

__all__ = ["Check", "format_section", "sections"]

#: The libraries reported: (what the report calls it, its distribution name).
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("trl", "trl"),
    ("peft", "peft"),
    ("triton", "triton"),
    ("ray", "ray"),
    ("gguf", "gguf"),
    ("ninja", "ninja"),
)


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes
    ----------
    name
        What was checked (a package, a backend, the device...).
    ok
        Whether it is there and works.
    detail
        The version or place when ``ok``; else why not and what to do.
    """

    name: str
    ok: bool
    detail: str


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> list[Check]:
    """dposhap, its Rust core, Python and the libraries of :data:`LIBRARIES`, with their versions.

    Returns
    -------
    list[Check]
        One check per piece; a library that is not installed is a failed check (Triton and Ray
        are optional: the message says what they are for).
    """
    from . import __version__

    checks = [Check("dposhap", True, f"{__version__} ({os.path.dirname(os.path.abspath(__file__))})")]
    try:
        from . import _core

        built = _version("dposhap") or "unknown version"
        checks.append(Check("rust core", True, f"{built} ({_core.__file__})"))
    except ImportError as err:  # a source tree without the compiled module
        checks.append(Check("rust core", False, f"not importable ({first_line(err)}): reinstall dposhap"))
    checks.append(Check("python", True, f"{platform.python_version()} ({sys.executable})"))
    optional = {
        "triton": "optional: the Triton compose kernel on CUDA (comes with torch's CUDA builds on Linux)",
        "ray": "optional: training and valuing on a Ray cluster, pip install 'dposhap[ray]'",
        "gguf": "optional: GGUF model files, pip install 'dposhap[smollm2]'",
    }
    for label, distribution in LIBRARIES:
        found = _version(distribution)
        if found is None:
            checks.append(Check(label, False, "not installed" + (f" ({optional[label]})" if label in optional else "")))
            continue
        if label == "torch":
            import torch

            found += f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU build)"
        checks.append(Check(label, True, found))
    return checks


def backends() -> list[Check]:
    """The compose backends (:data:`dposhap.compose.registry.BACKENDS`): which run here, and why not.

    Checking ``"cpp"`` builds the C++ kernel the first time (then torch caches it).

    Returns
    -------
    list[Check]
        One check per backend, in the order ``"auto"`` tries them.
    """
    from .compose import registry

    return _backend_checks(registry.get, registry.AUTO_ORDER)


def scoring_backends() -> list[Check]:
    """The teacher-forced scoring backends (:data:`dposhap.compose.head.HEAD_BACKENDS`): which run here.

    Checking ``"cpp"`` builds the C++ scoring kernel the first time (then torch caches it).

    Returns
    -------
    list[Check]
        One check per backend, in the order ``"auto"`` tries them.
    """
    from .compose import head

    return _backend_checks(head.HEAD_BACKENDS.get, head.AUTO_ORDER)


def _backend_checks(get: Any, order: tuple[str, ...]) -> list[Check]:
    import torch

    checks = []
    for name in order:
        backend = get(name)
        reason = backend.unavailable_reason()
        if reason is None and name in ("cuda", "triton") and not torch.cuda.is_available():
            reason = f"runs on CUDA tensors, and torch sees no CUDA device here (torch {torch.__version__})"
        if reason is not None:
            checks.append(Check(name, False, reason))
            continue
        checks.append(Check(name, True, "the plain-torch reference" if name == "torch" else "runs here"))
    return checks


def machine() -> list[Check]:
    """The device ``device = "auto"`` trains on, the model cache folder, and the packaged models.

    Returns
    -------
    list[Check]
        The device, the cache folder, and one check per packaged model (a missing one says what to run).
    """
    import torch

    from .gguf import PACKAGED_MODELS, model_cache_dir, packaged_model_path

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = Check(
            "device",
            True,
            f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB; {torch.cuda.device_count()} GPU)",
        )
    else:
        device = Check("device", True, f"cpu ({os.cpu_count()} cores; no CUDA device seen by torch)")
    cache = model_cache_dir()
    if cache.is_dir():
        count = sum(1 for entry in cache.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        where = f"{cache} ({count} converted model{'s' if count != 1 else ''}; DPOSHAP_CACHE moves it)"
    else:
        where = f"{cache} (not created yet; DPOSHAP_CACHE moves it)"
    checks = [device, Check("model cache", True, where)]
    for name in sorted(PACKAGED_MODELS):
        try:
            path = packaged_model_path(name)
        except DposhapError as err:
            checks.append(Check(name, False, first_line(err)))
            continue
        if importlib.util.find_spec("gguf") is None:
            checks.append(
                Check(name, False, f"{path} is installed, but reading it needs gguf: pip install 'gguf>=0.10'")
            )
        else:
            checks.append(Check(name, True, str(path)))
    return checks


def sections() -> Iterator[tuple[str, list[Check]]]:
    """The report, a section at a time: ``("versions", ...)``, ``("compose backends", ...)``,
    ``("scoring backends", ...)``, ``("machine", ...)``.

    Yields
    ------
    tuple[str, list[Check]]
        The section's title and its checks.
    """
    yield "versions", versions()
    yield "compose backends", backends()
    yield "scoring backends", scoring_backends()
    yield "machine", machine()


def format_section(title: str, checks: list[Check]) -> str:
    """A section as text: its title, then one aligned line per check (``ok`` or ``--``)."""
    width = max(len(check.name) for check in checks)
    lines = [f"{title}:"]
    lines += [f"  {'ok' if check.ok else '--'}  {check.name:<{width}}  {check.detail}" for check in checks]
    return "\n".join(lines)
