"""Teacher-forced utilities of coalitions: margin games and the composed likelihood.

Neither needs any generation (DESIGN.md §1):

- **Margin games.** On a held-out pair ``(x, y_w, y_l)`` source ``i`` has the DPO margin
  ``m_i = beta * ((log pi_i(y_w|x) - log pi_ref(y_w|x)) - (log pi_i(y_l|x) - log pi_ref(y_l|x)))``
  and a coalition's margin is exactly ``sum_{i in S} m_i``. One teacher-forced pass per source
  and one for the reference give the margins matrix ``[n, P]``; preference accuracy and
  held-out DPO log-likelihood of any coalition are then a masked sum, evaluated natively by
  :class:`~dposhap.MarginGame` (:func:`margin_utilities`).
- **Composed likelihood.** The token-level log-likelihood of held-out preferred responses under
  the composed policy of each coalition. The per-position logits of the reference and of every
  source are computed once; any batch of coalitions is then scored by the compose kernels'
  shared-source form, without a ``[K, N, V]`` tensor (:class:`ComposedLikelihood`).

Sequences are tokenized exactly as TRL's ``DPOTrainer`` (1.x) tokenizes them for training and
evaluation, so the margins are the ``rewards/margins`` TRL reports:

- plain text: the EOS token is appended to each response that does not already end with it;
  ``prompt``, ``prompt + chosen`` and ``prompt + rejected`` are tokenized (with the tokenizer's
  special tokens), and the response starts where the tokenized prompt stops being a prefix of
  both tokenized sequences;
- conversations: the same with the tokenizer's chat template (the prompt with the generation
  prompt, prompt + response without);
- a sequence longer than ``max_length`` keeps its first ``max_length`` tokens (TRL's default
  ``keep_start``); a response truncated away entirely has log-probability 0 (TRL instead drops
  such pairs from its dataset);
- log-probabilities are summed over the response tokens, EOS included, at temperature 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import numbers
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import DataError, InvalidArgumentError
from .games import MarginGame, MarginKind

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "MARGIN_KINDS",
    "TOY_EVAL_PAIRS",
    "ComposedLikelihood",
    "MarginUtilities",
    "heldout_records",
    "load_run_models",
    "margin_utilities",
    "margins_matrix",
    "sequence_logprobs",
    "toy_eval_records",
]

MarginUtilityKind = Literal["accuracy", "loglik", "logsigmoid", "mean"]
#: The utility kinds of :func:`margin_utilities` and the :class:`MarginGame` kind each one runs.
MARGIN_KINDS: dict[str, MarginKind] = {"accuracy": "accuracy", "loglik": "logsigmoid", "logsigmoid": "logsigmoid",
                                       "mean": "mean"}
#: Pairs per objective in the toy world's clean evaluation sets (``heldout="toy:<objective>"``).
TOY_EVAL_PAIRS = 128
#: Added to the toy world's seed to draw its evaluation pairs, so that they are independent of the sources'.
_TOY_EVAL_SEED_OFFSET = 7_919
_CACHE_FORMAT = 1

Record = Mapping[str, Any]


# --------------------------------------------------------------------------------------
# tokenization, as TRL's DPOTrainer does it


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _encode(tokenizer: PreTrainedTokenizerBase, text: Any, *, generation_prompt: bool = False) -> list[int]:
    """Token ids of a plain string (special tokens added) or of a conversation (chat template)."""
    if isinstance(text, list):
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidArgumentError(
                "the records are conversations but the tokenizer has no chat template: give plain-text records or "
                "a tokenizer with a chat_template"
            )
        out = tokenizer.apply_chat_template(text, tokenize=True, return_dict=True,
                                            add_generation_prompt=generation_prompt, tools=None)
        return list(out["input_ids"])
    return list(tokenizer(text=text)["input_ids"])


def _tokenize_responses(tokenizer: PreTrainedTokenizerBase, record: Record,
                        fields: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """The prompt's token ids and, for each response field, the response's ids (TRL's split)."""
    prompt = record["prompt"]
    responses = [record[name] for name in fields]
    if isinstance(prompt, list):
        full = [_encode(tokenizer, prompt + response) for response in responses]
        prompt_ids = _encode(tokenizer, prompt, generation_prompt=True)
    else:
        eos = tokenizer.eos_token
        if eos is None:
            raise InvalidArgumentError("the tokenizer has no EOS token, which TRL appends to plain-text responses")
        full = [_encode(tokenizer, prompt + (r if r.endswith(eos) else r + eos)) for r in responses]
        prompt_ids = _encode(tokenizer, prompt)
    n_prompt = min(_common_prefix(prompt_ids, ids) for ids in full)
    return prompt_ids[:n_prompt], [ids[n_prompt:] for ids in full]


def _check_records(records: Sequence[Record], fields: Sequence[str]) -> None:
    if len(records) == 0:
        raise InvalidArgumentError("no records to score: give at least one {prompt, chosen, rejected} record")
    for index, record in enumerate(records):
        for name in ("prompt", *fields):
            if not isinstance(record, Mapping) or name not in record:
                raise DataError(f"record {index} has no {name!r} field", field=name)


def _sequences(tokenizer: PreTrainedTokenizerBase, records: Sequence[Record], fields: Sequence[str],
               max_length: int | None) -> list[tuple[list[int], int]]:
    """``(ids, n_prompt)`` per record and field (field-major: every record's first field first)."""
    _check_records(records, fields)
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise InvalidArgumentError(f"max_length must be None or an int >= 1, got {max_length!r}")
    split = [_tokenize_responses(tokenizer, record, fields) for record in records]
    out = []
    for j in range(len(fields)):
        for prompt_ids, responses in split:
            ids = prompt_ids + responses[j]
            out.append((ids[:max_length] if max_length is not None else ids, len(prompt_ids)))
    return out


# --------------------------------------------------------------------------------------
# batched teacher-forced forward passes


def _model_device(model: Any) -> torch.device:
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def _policy(model: Any, adapter: str | None) -> Iterator[None]:
    """Run ``model`` as the reference (``adapter=None``: adapters disabled) or as one source's policy."""
    is_peft = hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
    if adapter is None:
        with model.disable_adapter() if is_peft else contextlib.nullcontext():
            yield
        return
    if not is_peft:
        raise InvalidArgumentError(f"adapter {adapter!r} asked for, but the model holds no adapters: load them with "
                                   "dposhap.models.load_adapters")
    if adapter not in model.peft_config:
        raise InvalidArgumentError(f"the model has no adapter {adapter!r}; it has {sorted(model.peft_config)}")
    previous = model.active_adapter
    model.set_adapter(adapter, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(previous, inference_mode=True)


def _forward_batches(model: Any, sequences: Sequence[tuple[list[int], int]], *, batch_size: int, device: Any,
                     pad_id: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Teacher-forced logits of the sequences, a batch at a time, shortest sequences first.

    Yields
    ------
    (order, logits, targets, mask)
        ``order`` [B]: the sequences of the batch; ``logits`` [B, L-1, V] predicting
        ``targets`` [B, L-1]; ``mask`` [B, L-1] is True where the target is a response token.
    """
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
    device = _model_device(model) if device is None else torch.device(device)
    lengths = np.array([len(ids) for ids, _ in sequences])
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(2, int(lengths[batch].max()))
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        response = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, index in enumerate(batch):
            seq, n_prompt = sequences[index]
            ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, :len(seq)] = 1
            response[row, max(n_prompt, 1):len(seq)] = True  # the first token has no prediction
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
        yield batch, logits[:, :-1], ids[:, 1:].to(logits.device), response[:, 1:].to(logits.device)


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


def _response_logprobs(model: Any, tokenizer: PreTrainedTokenizerBase, sequences: Sequence[tuple[list[int], int]],
                       *, batch_size: int, device: Any) -> np.ndarray:
    """Summed response-token log-probabilities of each sequence, float64 ``[len(sequences)]``."""
    import torch

    out = np.zeros(len(sequences), dtype=np.float64)
    for batch, logits, targets, mask in _forward_batches(model, sequences, batch_size=batch_size, device=device,
                                                         pad_id=_pad_id(tokenizer)):
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        out[batch] = (logp.double() * mask).sum(dim=1).cpu().numpy()
    return out


def sequence_logprobs(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    *,
    adapter: str | None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    max_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced ``log pi(chosen | prompt)`` and ``log pi(rejected | prompt)`` of each record.

    Parameters
    ----------
    model
        A causal LM; a PEFT model (:func:`dposhap.models.load_adapters`) to score an adapter.
    tokenizer
        Its tokenizer.
    records
        ``{"prompt", "chosen", "rejected"}`` dicts: three plain strings or three conversations
        (lists of ``{"role", "content"}``), tokenized as TRL's ``DPOTrainer`` does (module docstring).
    adapter
        None for the reference policy (every adapter disabled), else the name of the adapter to
        score with.
    batch_size
        Pairs per forward pass (each pair is two sequences, right-padded; the batches group
        sequences of similar length).
    device
        Where the inputs go; default the model's device.
    max_length
        Keep at most this many tokens of prompt + response (TRL's ``max_length``); None: all.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float64 ``[len(records)]`` each: the log-probability summed over the response tokens
        (EOS included, prompt excluded).

    Raises
    ------
    InvalidArgumentError
        An unknown adapter, no records, conversations without a chat template.
    DataError
        A record lacks a field.
    """
    sequences = _sequences(tokenizer, records, ("chosen", "rejected"), max_length)
    with _policy(model, adapter):
        logps = _response_logprobs(model, tokenizer, sequences, batch_size=2 * batch_size, device=device)
    return logps[:len(records)], logps[len(records):]


def margins_matrix(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    records: Sequence[Record],
    beta: float,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    max_length: int | None = None,
) -> np.ndarray:
    """The DPO margin of every source on every pair.

    ``margins[i, j] = beta * ((lp_i(c_j) - lp_ref(c_j)) - (lp_i(r_j) - lp_ref(r_j)))``, with
    ``lp`` from :func:`sequence_logprobs`: one pass over the pairs for the reference and one per
    source (the records are tokenized once).

    Parameters
    ----------
    model
        A PEFT model holding one adapter per source, named by the source.
    tokenizer, records, batch_size, device, max_length
        As in :func:`sequence_logprobs`.
    sources
        The adapters, in player order.
    beta
        The DPO temperature the adapters were trained with.

    Returns
    -------
    numpy.ndarray
        float64 ``[len(sources), len(records)]``.
    """
    if not sources:
        raise InvalidArgumentError("no sources: give at least one adapter name")
    if not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not beta > 0:
        raise InvalidArgumentError(f"beta must be a positive number, got {beta!r}")
    sequences = _sequences(tokenizer, records, ("chosen", "rejected"), max_length)
    n = len(records)

    def log_ratio_difference(adapter: str | None) -> np.ndarray:
        with _policy(model, adapter):
            lp = _response_logprobs(model, tokenizer, sequences, batch_size=2 * batch_size, device=device)
        return lp[:n] - lp[n:]

    reference = log_ratio_difference(None)
    return np.stack([beta * (log_ratio_difference(source) - reference) for source in sources])


# --------------------------------------------------------------------------------------
# the run directory: models, evaluation sets, cache


def _manifest(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    from .rundir import RunDir

    run = RunDir(run_dir)
    manifest = run.read_manifest()
    if not manifest or not manifest.get("sources"):
        raise InvalidArgumentError(f"{run.root} holds no trained run (no manifest.json with sources): run "
                                   "`dposhap train` into it first")
    return run, manifest


def _select_sources(manifest: dict[str, Any], sources: Sequence[str] | None) -> list[str]:
    known = list(manifest["sources"])
    if sources is None:
        return known
    if isinstance(sources, str):
        raise InvalidArgumentError(f"sources must be a list of source names, not the string {sources!r}")
    unknown = [s for s in sources if s not in known]
    if unknown or not sources or len(set(sources)) != len(sources):
        raise InvalidArgumentError(f"sources must name trained sources, each once; got {list(sources)}, the run has "
                                   f"{known}")
    return list(sources)


def load_run_models(run_dir: str | Path, *, sources: Sequence[str] | None = None,
                    device: str | None = None) -> tuple[Any, PreTrainedTokenizerBase, list[str]]:
    """The base model of a run with one adapter per source, its tokenizer, and the source names.

    Parameters
    ----------
    run_dir
        A run directory written by :func:`dposhap.train_sources`.
    sources
        Load only these sources' adapters (default: every trained source, in manifest order).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; default the run's ``model.device`` setting.

    Returns
    -------
    (peft.PeftModel, tokenizer, list of str)
        The model in eval mode in the dtype it was trained in; its adapters are named by source.
    """
    import torch

    from .models import load_adapters, load_base_model, load_tokenizer, resolve_device, resolve_model

    run, manifest = _manifest(run_dir)
    names = _select_sources(manifest, sources)
    base = manifest["base_model"]
    location = Path(base["location"]) if base.get("local") else base["location"]
    toy = manifest.get("toy")
    if base.get("local") and not Path(location).is_dir() and toy:  # the run folder was moved
        location = run.root / toy["root"] / "model"
    settings = manifest.get("config", {}).get("model", {})
    ref = resolve_model(str(location), revision=base.get("revision"),
                        trust_remote_code=bool(settings.get("trust_remote_code", False)))
    device = resolve_device(device or settings.get("device", "auto"))
    dtype = getattr(torch, base.get("dtype") or "float32")
    tokenizer = load_tokenizer(ref)
    model = load_base_model(ref, dtype=dtype, device=device)
    adapters = {name: run.root / manifest["sources"][name]["adapter"] for name in names}
    return load_adapters(model, adapters), tokenizer, names


def toy_eval_records(seed: int, objective: str, n_pairs: int = TOY_EVAL_PAIRS) -> list[dict[str, str]]:
    """A clean preference set of the toy world, labelled by the planted reward of one objective.

    The pairs are made as the source of the same name makes its own (one or two words edited
    along the objective's direction), but on the world's held-out prompts (in no source and not
    in pretraining) and from an independent random stream; each is oriented so that ``chosen``
    has the strictly higher reward of ``objective``.

    Parameters
    ----------
    seed
        The toy world's seed (``manifest["toy"]["seed"]``).
    objective
        One of :data:`dposhap.toy.OBJECTIVES`.
    n_pairs
        How many distinct pairs.

    Returns
    -------
    list of dict
        ``{"prompt", "chosen", "rejected"}`` records.
    """
    from . import toy
    from .toy.language import split_prompts
    from .toy.sources import make_pairs, stream_rng

    if objective not in toy.OBJECTIVES:
        raise InvalidArgumentError(f"unknown toy objective {objective!r}; choose from {list(toy.OBJECTIVES)}")
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise InvalidArgumentError(f"n_pairs must be an int >= 1, got {n_pairs!r}")
    reward = toy.REWARDS[objective]
    _, held_out = split_prompts(stream_rng(seed, "prompts"))
    records = []
    for prompt, chosen, rejected in make_pairs(objective, seed + _TOY_EVAL_SEED_OFFSET, held_out, n_pairs):
        better, worse = reward(prompt, chosen), reward(prompt, rejected)
        if better == worse:  # cannot happen with the clean recipes; kept as a guard
            continue
        if better < worse:
            chosen, rejected = rejected, chosen
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return records


def heldout_records(run_dir: str | Path, heldout: str | Sequence[str] = "all", *,
                    toy_pairs: int = TOY_EVAL_PAIRS) -> tuple[list[dict[str, Any]], list[str]]:
    """The evaluation pairs named by ``heldout``, and which set each pair comes from.

    Parameters
    ----------
    run_dir
        A trained run directory.
    heldout
        ``"all"`` (every source's held-out split, in manifest order), or a list whose entries
        are source names (that source's held-out split) or ``"toy:<objective>"`` (the toy
        world's clean set for that objective, :func:`toy_eval_records`; toy runs only). A single
        name may be given as a string.
    toy_pairs
        Pairs per ``"toy:<objective>"`` set.

    Returns
    -------
    (list of dict, list of str)
        The records ``{"prompt", "chosen", "rejected"}``, and per record the name of its set.
    """
    from .data import read_jsonl_records

    run, manifest = _manifest(run_dir)
    if isinstance(heldout, str):
        names = list(manifest["sources"]) if heldout == "all" else [heldout]
    else:
        names = list(heldout)
    if not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"heldout must name at least one evaluation set, each once; got {heldout!r}")
    records: list[dict[str, Any]] = []
    sets: list[str] = []
    for name in names:
        if name.startswith("toy:"):
            if not manifest.get("toy"):
                raise InvalidArgumentError(f"heldout {name!r} needs a toy-world run; this run was trained on "
                                           f"{manifest['base_model'].get('name')!r}")
            part = toy_eval_records(int(manifest["toy"]["seed"]), name.removeprefix("toy:"), toy_pairs)
        elif name in manifest["sources"]:
            entry = manifest["sources"][name]
            path = run.root / entry["heldout"] if entry.get("heldout") else run.data(name) / "heldout.jsonl"
            part = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_jsonl_records(path)]
        else:
            raise InvalidArgumentError(f"unknown evaluation set {name!r}: give a source of the run "
                                       f"({', '.join(manifest['sources'])}), 'toy:<objective>' or 'all'")
        records += part
        sets += [name] * len(part)
    return records, sets


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _margins_key(run: Any, manifest: dict[str, Any], sources: Sequence[str], records: Sequence[Record], beta: float,
                 max_length: int | None) -> str:
    """What the margins depend on: base weights, dtype, each adapter's weights, the pairs, beta, max_length."""
    adapters = []
    for name in sources:
        folder = run.root / manifest["sources"][name]["adapter"]
        files = sorted(folder.glob("adapter_model.*"))
        adapters.append([name, _file_digest(files[0]) if files else manifest["sources"][name].get("training_hash")])
    text = json.dumps({
        "format": _CACHE_FORMAT,
        "base": manifest["base_model"].get("fingerprint"),
        "dtype": manifest["base_model"].get("dtype"),
        "adapters": adapters,
        "records": hashlib.sha256(json.dumps(list(records), sort_keys=True).encode()).hexdigest(),
        "beta": float(beta),
        "max_length": max_length,
    }, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------
# margin games


@dataclass(frozen=True)
class MarginUtilities:
    """Margin games of a run: preference accuracy, held-out DPO log-likelihood, mean margin.

    Calling it evaluates a batch of coalitions (the ask/tell loop's utility); each game is also
    available as a native :class:`~dposhap.MarginGame` for :func:`dposhap.shapley`, which
    evaluates it in Rust with no Python call per coalition.

    Attributes
    ----------
    margins
        float64 ``[n_sources, n_pairs]``.
    sources
        The players, in order.
    kinds
        The utilities, in output order: ``"accuracy"`` (``mean 1[m_S > 0]``, ties 1/2),
        ``"loglik"`` (``mean log sigmoid(m_S)``), ``"mean"`` (``mean m_S``).
    games
        One :class:`~dposhap.MarginGame` per kind.
    pair_sets
        Per pair, the evaluation set it comes from (a source name or ``"toy:<objective>"``).
    beta
        The DPO temperature of the margins.
    cache_path
        The ``.npy`` file the margins were read from or written to, or None.
    from_cache
        Whether the margins were read from the cache rather than computed.
    """

    margins: np.ndarray
    sources: tuple[str, ...]
    kinds: tuple[str, ...]
    games: dict[str, MarginGame] = field(repr=False)
    pair_sets: tuple[str, ...] = field(default=(), repr=False)
    beta: float = 0.1
    cache_path: Path | None = None
    from_cache: bool = False

    @classmethod
    def from_margins(cls, margins: np.ndarray, sources: Sequence[str],
                     kinds: Sequence[MarginUtilityKind] = ("accuracy", "loglik"), **kwargs: Any) -> MarginUtilities:
        """Build the games of a margins matrix ``[n, P]`` whose rows are ``sources``."""
        if isinstance(kinds, str):
            kinds = (kinds,)
        kinds = tuple(kinds)
        unknown = [k for k in kinds if k not in MARGIN_KINDS]
        if unknown or not kinds or len(set(kinds)) != len(kinds):
            raise InvalidArgumentError(f"kinds must be distinct names from {list(MARGIN_KINDS)}, got {list(kinds)}")
        margins = np.ascontiguousarray(margins, dtype=np.float64)
        if margins.ndim != 2 or margins.shape[0] != len(sources):
            raise InvalidArgumentError(f"margins has shape {margins.shape}; expected [{len(sources)}, n_pairs]")
        games = {kind: MarginGame(margins, MARGIN_KINDS[kind]) for kind in kinds}
        return cls(margins, tuple(sources), kinds, games, **kwargs)

    @property
    def n_players(self) -> int:
        """Number of sources."""
        return len(self.sources)

    @property
    def n_pairs(self) -> int:
        """Number of evaluation pairs."""
        return int(self.margins.shape[1])

    def game(self, kind: str | None = None) -> MarginGame:
        """The native game of ``kind`` (default: the first kind)."""
        kind = self.kinds[0] if kind is None else kind
        if kind not in self.games:
            raise InvalidArgumentError(f"no {kind!r} game here; the kinds are {list(self.kinds)}")
        return self.games[kind]

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """Utilities of a batch of coalitions, bool ``[b, n]``: ``[b]`` for one kind, ``[b, k]`` for several."""
        values = [self.games[kind](coalitions) for kind in self.kinds]
        return values[0] if len(values) == 1 else np.stack(values, axis=1)

    def select(self, pair_set: str) -> MarginUtilities:
        """The same games restricted to the pairs of one evaluation set."""
        keep = np.array([s == pair_set for s in self.pair_sets])
        if not keep.any():
            raise InvalidArgumentError(f"no pairs from {pair_set!r}; the sets are {sorted(set(self.pair_sets))}")
        return MarginUtilities.from_margins(self.margins[:, keep], self.sources, self.kinds,
                                            pair_sets=(pair_set,) * int(keep.sum()), beta=self.beta)


def margin_utilities(
    run_dir: str | Path,
    *,
    heldout: str | Sequence[str] = "all",
    kinds: Sequence[MarginUtilityKind] = ("accuracy", "loglik"),
    sources: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str | None = None,
    toy_pairs: int = TOY_EVAL_PAIRS,
    recompute: bool = False,
) -> MarginUtilities:
    """The margin games of a trained run, over held-out pairs.

    Loads the run's base model and adapters (:func:`load_run_models`), computes the margins
    matrix (:func:`margins_matrix`, with the run's ``beta`` and ``max_length``) and caches it as
    ``RUN/margins/<hash>.npy``, with a ``.json`` beside it saying what it holds. The hash covers
    the base model's fingerprint and dtype, every adapter's weights, the pairs, beta and
    max_length, so a later call with the same inputs reads the file and loads no model.

    Parameters
    ----------
    run_dir
        A run directory written by :func:`dposhap.train_sources`.
    heldout
        The evaluation pairs, as in :func:`heldout_records`: ``"all"`` (the union of every
        source's held-out split), or a list of source names and ``"toy:<objective>"`` (the toy
        world's clean sets, labelled by its planted rewards).
    kinds
        The utilities, in output order: ``"accuracy"``, ``"loglik"`` (``"logsigmoid"``) or ``"mean"``.
    sources
        The players (default: every trained source, in manifest order).
    batch_size
        Pairs per forward pass.
    device
        Where to run the models; default the run's ``model.device``.
    toy_pairs
        Pairs per ``"toy:<objective>"`` set.
    recompute
        Ignore (and overwrite) a cached matrix.

    Returns
    -------
    MarginUtilities
    """
    run, manifest = _manifest(run_dir)
    names = _select_sources(manifest, sources)
    records, sets = heldout_records(run.root, heldout, toy_pairs=toy_pairs)
    config = manifest.get("config", {}).get("dpo", {})
    beta = float(config.get("beta", 0.1))
    max_length = config.get("max_length")
    key = _margins_key(run, manifest, names, records, beta, max_length)
    path = run.root / "margins" / f"{key}.npy"
    extra = dict(pair_sets=tuple(sets), beta=beta, cache_path=path)
    if not recompute and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None
        if cached is not None and cached.shape == (len(names), len(records)):
            return MarginUtilities.from_margins(cached, names, kinds, from_cache=True, **extra)
    MarginUtilities.from_margins(np.zeros((len(names), 1)), names, kinds)  # check the kinds before the work
    model, tokenizer, _ = load_run_models(run.root, sources=names, device=device)
    margins = margins_matrix(model, tokenizer, names, records, beta, batch_size=batch_size, max_length=max_length)
    _save_npy(path, margins)
    from .rundir import atomic_write_json

    atomic_write_json(path.with_suffix(".json"), {
        "sources": names, "heldout": heldout if isinstance(heldout, str) else list(heldout),
        "n_pairs": len(records), "pair_sets": sets, "beta": beta, "max_length": max_length,
    })
    return MarginUtilities.from_margins(margins, names, kinds, **extra)


# --------------------------------------------------------------------------------------
# composed likelihood


class ComposedLikelihood:
    """Mean log-likelihood per token of fixed responses under the composed policy of each coalition.

    The composed policy is the token-level one of the decoding engine (DESIGN.md §1):
    ``logits_S = l_ref + sum_{i in S} w_i (l_i - l_ref)``, normalised at every position. The
    per-position logits of the reference and of every source are held in memory (``[N, n + 1,
    V]``, N = response tokens) and each batch of coalitions is scored by
    :func:`dposhap.compose.shared_scores`, which never builds a ``[K, N, V]`` tensor.

    Parameters
    ----------
    logits
        ``[N, n + 1, V]``: at every response token, the logits predicting it under the reference
        (index 0) and each source.
    targets
        int64 ``[N]``: the response tokens.
    sources
        The ``n`` source names, in the order of ``logits``' columns 1..n.
    block_v
        Vocabulary block of the online log-sum-exp.
    max_elements
        Largest ``[K, N, block_v]`` intermediate built at once; coalitions and positions are
        processed in chunks under it.
    backend
        As in :func:`dposhap.compose.shared_scores`.
    """

    def __init__(self, logits: torch.Tensor, targets: torch.Tensor, sources: Sequence[str], *, block_v: int = 4096,
                 max_elements: int = 1 << 24, backend: Literal["auto", "torch", "triton"] = "auto"):
        import torch

        if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[1] != len(sources) + 1:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InvalidArgumentError(f"logits must be a tensor [N, {len(sources) + 1}, V], got {shape}")
        if logits.shape[0] == 0:
            raise InvalidArgumentError("no response tokens to score")
        self.logits, self.targets = logits, targets
        self.sources = tuple(sources)
        self.block_v, self.max_elements, self.backend = block_v, max_elements, backend

    @property
    def n_players(self) -> int:
        """Number of sources."""
        return len(self.sources)

    @property
    def n_tokens(self) -> int:
        """Number of scored response tokens."""
        return int(self.logits.shape[0])

    @classmethod
    def from_model(cls, model: Any, tokenizer: PreTrainedTokenizerBase, sources: Sequence[str],
                   records: Sequence[Record], *, batch_size: int = 16, device: str | torch.device | None = None,
                   max_length: int | None = None, store_dtype: torch.dtype | None = None,
                   **kwargs: Any) -> ComposedLikelihood:
        """Compute the per-position logits of the ``chosen`` responses: one pass for the reference, one per source.

        Parameters
        ----------
        model, tokenizer, records, batch_size, device, max_length
            As in :func:`sequence_logprobs`; only ``prompt`` and ``chosen`` are read.
        sources
            The adapters, in player order.
        store_dtype
            The dtype the logits are kept in (default float32).
        **kwargs
            Passed to the constructor.
        """
        import torch

        if not sources:
            raise InvalidArgumentError("no sources: give at least one adapter name")
        store_dtype = store_dtype or torch.float32
        sequences = _sequences(tokenizer, records, ("chosen",), max_length)
        columns, targets = [], None
        for adapter in (None, *sources):
            parts, part_targets = [], []
            with _policy(model, adapter):
                for _, logits, batch_targets, mask in _forward_batches(model, sequences, batch_size=batch_size,
                                                                       device=device, pad_id=_pad_id(tokenizer)):
                    parts.append(logits[mask].to(store_dtype))
                    part_targets.append(batch_targets[mask])
            columns.append(torch.cat(parts))
            targets = torch.cat(part_targets) if targets is None else targets
        return cls(torch.stack(columns, dim=1), targets, sources, **kwargs)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, heldout: str | Sequence[str] = "all", sources: Sequence[str] | None = None,
                 batch_size: int = 16, device: str | None = None, toy_pairs: int = TOY_EVAL_PAIRS,
                 **kwargs: Any) -> ComposedLikelihood:
        """The composed likelihood of the preferred responses of a run's evaluation pairs.

        ``heldout``, ``sources``, ``device`` and ``toy_pairs`` are as in :func:`margin_utilities`;
        ``max_length`` is the run's.
        """
        run, manifest = _manifest(run_dir)
        records, _ = heldout_records(run.root, heldout, toy_pairs=toy_pairs)
        model, tokenizer, names = load_run_models(run.root, sources=sources, device=device)
        max_length = manifest.get("config", {}).get("dpo", {}).get("max_length")
        return cls.from_model(model, tokenizer, names, records, batch_size=batch_size, max_length=max_length,
                              **kwargs)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """Mean log-likelihood per response token of each coalition.

        Parameters
        ----------
        coalitions
            ``[b, n]``: bool membership, or float weights ``w_i`` (0 outside the coalition).

        Returns
        -------
        numpy.ndarray
            float64 ``[b]``.
        """
        import torch

        from .compose import coalition_coefficients, shared_scores

        c = np.asarray(coalitions)
        if c.ndim == 1:
            c = c[None, :]
        if c.ndim != 2 or c.shape[1] != self.n_players:
            raise InvalidArgumentError(f"coalitions must be an array [b, {self.n_players}], got shape {c.shape}")
        weights = torch.as_tensor(c.astype(np.float64), dtype=torch.float32, device=self.logits.device)
        coef = coalition_coefficients(weights)
        n_pos = self.n_tokens
        block = min(self.block_v, self.logits.shape[2])
        pos_chunk = max(1, min(n_pos, self.max_elements // block))
        coal_chunk = max(1, self.max_elements // (block * pos_chunk))
        total = torch.zeros(len(coef), dtype=torch.float64)
        for k in range(0, len(coef), coal_chunk):
            for p in range(0, n_pos, pos_chunk):
                _, target = shared_scores(self.logits[p:p + pos_chunk], coef[k:k + coal_chunk],
                                          self.targets[p:p + pos_chunk], block_v=self.block_v, backend=self.backend)
                total[k:k + coal_chunk] += target.double().sum(dim=1).cpu()
        return (total / n_pos).numpy()
