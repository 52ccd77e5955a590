"""Loading base models, tokenizers and per-source adapters, from a local folder, a GGUF file or the hub.

A model name is, in this order: a packaged model's name (:data:`dposhap.gguf.PACKAGED_MODELS`,
e.g. ``"smollm2-135m-instruct"``); a ``.gguf`` file; a local folder (relative paths resolve
against the config file's folder first, then the working directory); otherwise it must look like
a hub id (``org/name`` or ``name``) and is fetched through ``transformers`` (which needs the hub
to be reachable, or the model in the local hub cache). A GGUF file is converted once into a
plain model folder in a cache (:func:`dposhap.gguf.convert_gguf`) and loaded from there. Remote
code runs only when asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError, first_line
from .gguf import PACKAGED_MODELS, convert_gguf, gguf_sha256, is_gguf_file, packaged_model_path

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "ModelRef",
    "adapter_metadata",
    "first_line",
    "load_hint",
    "load_pretrained",
    "quiet_libraries",
    "load_adapters",
    "load_base_model",
    "load_model_skeleton",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)?$")


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: ``location`` is a resolved local folder or a hub id.

    ``origin`` and ``origin_sha256`` name the GGUF file a local folder was converted from, and
    its sha256 (None for a model that was not converted).
    """

    location: str
    local: bool
    revision: str | None = None
    trust_remote_code: bool = False
    origin: str | None = None
    origin_sha256: str | None = None

    def fingerprint(self) -> str:
        """A cheap identity of the weights: hub id and revision, or the local files' contents.

        For a local folder: its config and, for each weight file, the name, size and a hash of
        its first and last MiB (enough to notice a different checkpoint without reading
        gigabytes).
        """
        if not self.local:
            return f"hub:{self.location}@{self.revision or 'main'}"
        digest = hashlib.sha256()
        root = Path(self.location)
        for path in sorted(root.iterdir()):
            if path.name == "config.json":
                digest.update(path.read_bytes())
            elif path.suffix in (".safetensors", ".bin", ".pt") and path.is_file():
                size = path.stat().st_size
                digest.update(f"{path.name}:{size}".encode())
                with open(path, "rb") as handle:
                    digest.update(handle.read(1 << 20))
                    if size > 2 << 20:
                        handle.seek(-(1 << 20), 2)
                        digest.update(handle.read(1 << 20))
        return "local:" + digest.hexdigest()

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained``."""
        out: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.local:
            out["local_files_only"] = True
        elif self.revision:
            out["revision"] = self.revision
        return out


def resolve_model(
    name: str, *, base_dir: Path | None = None, revision: str | None = None, trust_remote_code: bool = False
) -> ModelRef:
    """Decide whether ``name`` is a packaged model, a GGUF file, a local folder or a hub id.

    A packaged model or a GGUF file is converted (once, then cached) into a local folder, which
    the returned reference points to, with the GGUF file and its sha256 as its origin.

    Raises
    ------
    ModelLoadError
        ``name`` looks like a path but no folder with a ``config.json`` or GGUF file is there; a
        packaged model's extra is not installed; a GGUF file cannot be converted.
    """
    if name in PACKAGED_MODELS:
        return _converted(packaged_model_path(name), trust_remote_code)
    # a relative path is read from the config file's folder only, as the data paths are: never
    # also from the current folder, where the same config would find another model
    path = Path(name).expanduser()
    candidates = [Path(base_dir) / path if base_dir is not None and not path.is_absolute() else path]
    for path in candidates:
        if path.is_file() and is_gguf_file(path):
            return _converted(path, trust_remote_code)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelLoadError(
                    f"model folder {path} has no config.json: point to a folder saved with save_pretrained"
                )
            return ModelRef(str(path.resolve()), True, None, trust_remote_code)
    if is_gguf_file(name):
        raise ModelLoadError(
            f"no GGUF file at {candidates[0]}: check the path (relative paths are read from the config file's folder)"
        )
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")
    # "runs/mdoel" where the folder runs/ is here: a mistyped path, not a hub id to try for a minute
    looks_like_path = looks_like_path or any(p.parent != Path(".") and p.parent.is_dir() for p in candidates)
    if looks_like_path or not _HUB_ID.match(name):
        raise ModelLoadError(
            f"no model folder at {candidates[0]}: check the path (relative paths are read from "
            "the config file's folder)"
        )
    return ModelRef(name, False, revision, trust_remote_code)


def _converted(gguf_file: Path, trust_remote_code: bool) -> ModelRef:
    """The reference to the cached plain folder of ``gguf_file`` (converting it the first time)."""
    folder = convert_gguf(gguf_file)
    origin = gguf_file.expanduser().resolve()
    return ModelRef(str(folder.resolve()), True, None, trust_remote_code, str(origin), gguf_sha256(origin))


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device is 'cuda' but no CUDA device is visible: use 'cpu' or 'auto'")
    return device


def resolve_dtype(precision: str, device: str) -> torch.dtype:
    """The weights' dtype: ``"auto"`` is bfloat16 on a GPU that supports it, float32 elsewhere."""
    import torch

    if precision == "auto":
        return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_hint(ref: ModelRef) -> str:
    """What to try when the model at ``ref`` cannot be loaded (local folder, converted GGUF file or hub id)."""
    if ref.origin is not None:
        return f"delete the converted folder {ref.location} to convert {ref.origin} again"
    if ref.local:
        return "check that the folder holds a complete model saved with save_pretrained"
    return (
        "if this machine cannot reach the hub, download the model on one that can "
        "(huggingface-cli download ID --local-dir DIR) and give the local folder instead"
    )


@contextlib.contextmanager
def quiet_libraries(*, loading_reports: bool = True) -> Iterator[None]:
    """Hide the ML libraries' loading bars and their deprecation notices (restored afterwards).

    The notices (``FutureWarning`` / ``DeprecationWarning`` raised inside transformers, PEFT,
    TRL, accelerate, datasets and torch) are about those libraries' own calls, not the caller's
    code; the CLI and the Python API's heavy calls run under this. Other warnings stay.

    Parameters
    ----------
    loading_reports
        False: also silence transformers' and PEFT's loading reports (transformers' weight
        report, PEFT's adapter-key warnings, both libraries' log warnings) and TRL's log
        warnings (one per pair it tokenises oddly), as ``--quiet`` and
        ``progress=False`` do. Weights that a model would get at random are an error of
        :func:`load_pretrained` either way.
    """
    import logging

    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    loggers = [logging.getLogger(name) for name in ("peft", "trl")]  # TRL: its per-row tokenisation notices
    levels = [logger.level for logger in loggers]
    hf_logging.disable_progress_bar()
    if not loading_reports:
        hf_logging.set_verbosity_error()
        for logger in loggers:
            logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=_LIBRARY_MODULES)
            if not loading_reports:
                warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft)(\.|$)")
            yield
    finally:
        if not loading_reports:
            hf_logging.set_verbosity(verbosity)
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
        if enabled:
            hf_logging.enable_progress_bar()


#: The top-level module names of the heads transformers adds to a base model (sequence classification).
_HEAD_NAMES = ("score", "classifier")
_LIBRARY_MODULES = r"(transformers|peft|trl|accelerate|datasets|torch)(\.|$)"


def load_pretrained(
    ref: ModelRef,
    auto_class: Any,
    *,
    dtype: torch.dtype,
    device: str,
    what: str = "model",
    new_weights_hint: str | None = None,
    new_head: bool = False,
    **options: Any,
) -> Any:
    """``auto_class.from_pretrained`` of ``ref`` in ``dtype`` on ``device``, in eval mode: the one model loader.

    A checkpoint that lacks weights of ``auto_class``'s architecture (transformers would
    initialise them at random, e.g. the score head of a causal LM's folder loaded as a
    sequence classifier) is refused: dposhap never evaluates with random weights.

    Parameters
    ----------
    new_weights_hint
        What to do when weights are missing (default: a generic hint naming ``what``).
    new_head
        The head is meant to be new (a reward model about to be trained from a causal LM):
        missing weights of the head alone are allowed, any other is still refused.
    options
        Passed to ``from_pretrained`` as they are (``num_labels=1`` for a new reward head).

    Raises
    ------
    ModelLoadError
        The model cannot be loaded, or some of its weights are not in the checkpoint (one line:
        what, from where, what to try).
    """
    try:
        with quiet_libraries():
            model, info = auto_class.from_pretrained(
                ref.location, dtype=dtype, output_loading_info=True, **ref.kwargs(), **options
            )
    except Exception as err:  # transformers raises OSError, ValueError, HTTP errors...
        raise ModelLoadError(f"cannot load the {what} {ref.location!r}: {first_line(err)}; {load_hint(ref)}") from err
    missing = sorted(info.get("missing_keys") or ())
    if new_head:
        missing = [key for key in missing if key.split(".", 1)[0] not in _HEAD_NAMES]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        hint = new_weights_hint or f"give a {what} saved with save_pretrained as a {auto_class.__name__}"
        raise ModelLoadError(
            f"the {what} {ref.location!r} has no trained weights for {shown} (they would be initialised at random): "
            f"{hint}"
        )
    return model.to(device).eval()


def load_tokenizer(ref: ModelRef) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a padding token (the EOS token when the model has none)."""
    from transformers import AutoTokenizer

    try:
        with quiet_libraries():
            tokenizer = AutoTokenizer.from_pretrained(ref.location, **ref.kwargs())
    except Exception as err:  # transformers raises OSError, ValueError, HTTP errors...
        raise ModelLoadError(
            f"cannot load the tokenizer of {ref.location!r}: {first_line(err)}; {load_hint(ref)}"
        ) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"the tokenizer of {ref.location!r} has neither a padding nor an EOS token: add one and save it again"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_skeleton(ref: ModelRef) -> PreTrainedModel:
    """The causal LM at ``ref`` built from its config alone, on the meta device: its modules, no weights.

    Enough to check LoRA targets and the architecture without reading (or holding) any weights.

    Raises
    ------
    ModelLoadError
        The model's config cannot be read, or names an architecture transformers cannot build.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with quiet_libraries():
            config = AutoConfig.from_pretrained(ref.location, **ref.kwargs())
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(config, trust_remote_code=ref.trust_remote_code)
    except Exception as err:  # transformers raises OSError, ValueError, KeyError...
        raise ModelLoadError(
            f"cannot read the model config of {ref.location!r}: {first_line(err)}; {load_hint(ref)}"
        ) from err


def load_base_model(ref: ModelRef, *, dtype: torch.dtype, device: str) -> PreTrainedModel:
    """The causal LM at ``ref`` in ``dtype`` on ``device``, in eval mode."""
    from transformers import AutoModelForCausalLM

    return load_pretrained(ref, AutoModelForCausalLM, dtype=dtype, device=device)


def load_adapters(model: PreTrainedModel, adapter_dirs: dict[str, Path]) -> PeftModel:
    """Wrap ``model`` in a PEFT model holding one adapter per source, named by the source.

    Raises
    ------
    ModelLoadError
        An adapter folder is missing or does not fit the model.
    """
    from peft import PeftModel

    if not adapter_dirs:
        raise ModelLoadError("no adapters to load: train the sources first (dposhap train)")
    peft_model: PeftModel | None = None
    for name, path in adapter_dirs.items():
        if not (Path(path) / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"adapter of source {name!r} is missing or incomplete at {path}: run dposhap train "
                "again to (re)train it"
            )
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
            else:
                peft_model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except Exception as err:
            raise ModelLoadError(
                f"cannot load the adapter of source {name!r} from {path}: {first_line(err)}; was it "
                "trained on this base model?"
            ) from err
    assert peft_model is not None
    return peft_model.eval()


def adapter_metadata(path: Path) -> dict[str, Any] | None:
    """The ``dposhap.json`` written beside a finished adapter, or None."""
    try:
        return json.loads((Path(path) / "dposhap.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
