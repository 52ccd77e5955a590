"""Valuing the sources of a trained run: utilities in, Shapley values out, everything cached.

:func:`value_run` builds a utility of the run's coalitions, runs the Rust estimator's ask/tell
loop over it, and records the values in ``RUN/values.json`` / ``values.csv``. Utilities:

``accuracy``, ``loglik``
    Margin games (DESIGN.md §1): one teacher-forced pass per source over the held-out pairs,
    then any coalition is a masked sum evaluated natively in Rust.
``likelihood``
    The token-level log-likelihood of held-out preferred responses under each coalition,
    through the compose kernels' shared-source form.
``generation``
    Batched composed decoding of every asked coalition on a prompt set, scored by reward
    functions or reward models (several objectives at once); the noise is common to all
    coalitions (common random numbers).

Expensive utilities (``likelihood``, ``generation``) go through the run's SQLite cache
(``RUN/cache.sqlite``), keyed by the utility's configuration: an interrupted valuation resumes
with nothing recomputed, and a coalition is never evaluated twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import DposhapError, InvalidArgumentError
from .report import record_values
from .rundir import RunDir
from .shapley import ShapleyResult, banzhaf, shapley

__all__ = ["GenerationSettings", "UTILITIES", "value_run"]

UtilityName = Literal["accuracy", "loglik", "likelihood", "generation"]
UTILITIES: tuple[str, ...] = ("accuracy", "loglik", "likelihood", "generation")


@dataclass
class GenerationSettings:
    """How the generation utility decodes and scores.

    Attributes
    ----------
    rewards
        ``["toy"]`` (the toy world's two reward functions), or local folders / hub ids of
        sequence-classification reward models (one objective each, named by the folder).
    prompts
        A file of prompts (JSONL with a ``prompt`` field, or one prompt per line); default: the
        toy world's evaluation prompts, else the unique prompts of the run's held-out splits.
    n_prompts
        Use at most this many prompts (the first ones).
    max_new_tokens, temperature, top_k, correction
        Decoding; ``correction`` weighs each sample by the sequence-level importance weight.
    """

    rewards: list[str] = field(default_factory=lambda: ["toy"])
    prompts: str | None = None
    n_prompts: int = 32
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    correction: bool = False

    def __post_init__(self) -> None:
        if self.n_prompts < 1 or self.max_new_tokens < 1:
            raise InvalidArgumentError("n_prompts and max_new_tokens must be >= 1")
        if self.temperature <= 0:
            raise InvalidArgumentError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise InvalidArgumentError(f"top_k must be >= 1, got {self.top_k}")
        if not self.rewards:
            raise InvalidArgumentError("give at least one reward (toy, a reward model folder or a hub id)")


def _manifest(run: RunDir) -> dict[str, Any]:
    manifest = run.read_manifest()
    if not manifest or not manifest.get("sources"):
        raise DposhapError(f"{run.root} has no trained sources (no manifest.json): run dposhap train --out "
                           f"{run.root} first")
    missing = [s for s, e in manifest["sources"].items() if not (run.root / e["adapter"]).is_dir()]
    if missing:
        raise DposhapError(f"{run.root}: the adapters of {', '.join(missing)} are missing: run dposhap train again "
                           "to (re)train them")
    return manifest


def value_run(
    run_dir: str | Path,
    utility: UtilityName | str = "accuracy",
    *,
    method: str = "auto",
    semivalue: Literal["shapley", "banzhaf"] = "shapley",
    budget: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    generation: GenerationSettings | None = None,
    heldout: Sequence[str] | None = None,
    device: str = "auto",
    label: str | None = None,
    progress: bool = True,
) -> tuple[ShapleyResult, dict[str, Any]]:
    """Value the sources of a trained run under one utility and record the result.

    Parameters
    ----------
    run_dir
        A run directory made by :func:`dposhap.train_sources`.
    utility
        One of :data:`UTILITIES`.
    method, semivalue, budget, tol, seed, batch_size
        Passed to :func:`dposhap.shapley` / :func:`dposhap.banzhaf`.
    generation
        Settings of the ``generation`` utility.
    heldout
        Sources whose held-out pairs the margin and likelihood utilities use (default: all).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for the model passes.
    label
        The entry's name in ``values.json`` (default: the utility's name); give another to
        keep several valuations of one utility side by side.
    progress
        Show progress bars.

    Returns
    -------
    (ShapleyResult, dict)
        The values and the entry written to ``RUN/values.json``.
    """
    if utility not in UTILITIES:
        raise InvalidArgumentError(f"unknown utility {utility!r}; choose one of {', '.join(UTILITIES)}")
    run = RunDir(run_dir)
    with run.lock(f"dposhap value --utility {utility}"):
        manifest = _manifest(run)
        sources = list(manifest["sources"])
        started = time.perf_counter()
        built = _build_utility(run, manifest, utility, generation=generation, heldout=heldout, device=device,
                               seed=seed)
        try:
            estimate = shapley if semivalue == "shapley" else banzhaf
            result = estimate(built.game, len(sources), method=method, budget=budget, tol=tol, seed=seed,
                              batch_size=batch_size or built.batch_size, names=sources, progress=progress)
        finally:
            built.close()
        seconds = time.perf_counter() - started
        entry = record_values(run, label or utility, result, built.objectives, config=built.config,
                              new_evaluations=built.new_evaluations(result), seconds=seconds)
    return result, entry


@dataclass
class _Built:
    """A utility ready for the estimator, and what to record about it."""

    game: Any
    objectives: list[str]
    config: dict[str, Any]
    batch_size: int | None = None
    cached: Any = None
    store: Any = None

    def new_evaluations(self, result: ShapleyResult) -> int:
        return int(self.cached.evaluated) if self.cached is not None else int(result.n_evaluations)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _build_utility(run: RunDir, manifest: dict[str, Any], utility: str, *, generation: GenerationSettings | None,
                   heldout: Sequence[str] | None, device: str, seed: int) -> _Built:
    from . import utilities
    from .models import resolve_device

    device = resolve_device(device)
    if heldout:
        pairs: str | list[str] = list(heldout)
    elif manifest.get("toy"):  # the toy world's clean evaluation pairs, one set per objective
        pairs = [f"toy:{objective}" for objective in manifest["toy"]["objectives"]]
    else:
        pairs = "all"
    if utility in ("accuracy", "loglik"):
        margins = utilities.margin_utilities(run.root, heldout=pairs, kinds=(utility,), device=device)
        return _Built(game=margins.game(utility), objectives=[utility],
                      config={"utility": utility, "heldout": pairs, "pairs": margins.n_pairs})
    if utility == "likelihood":
        model = utilities.ComposedLikelihood.from_run(run.root, heldout=pairs, device=device)
        return _cache(run, manifest, "likelihood", model, ["likelihood"], {"utility": "likelihood", "heldout": pairs},
                      seed=seed, batch_size=64)
    settings = generation or GenerationSettings()
    gen = _generation_utility(run, manifest, settings, device=device, seed=seed)
    return _cache(run, manifest, "generation", gen, gen.objectives, gen.config, seed=seed, batch_size=16)


def _cache(run: RunDir, manifest: dict[str, Any], name: str, fn: Any, objectives: list[str], config: dict[str, Any],
           *, seed: int, batch_size: int) -> _Built:
    from .store import UtilityStore, cached

    store = UtilityStore(run.cache)
    full_config = {**config, "seed": seed,
                   "adapters": {s: e["data_hash"] + e["training_hash"] for s, e in manifest["sources"].items()}}
    key = store.utility_key(name, full_config, len(manifest["sources"]), objectives)
    wrapped = cached(fn, store, key, seed=seed)
    return _Built(game=wrapped, objectives=objectives, config=full_config, batch_size=batch_size, cached=wrapped,
                  store=store)


class _GenerationUtility:
    """Decode every asked coalition on the prompt set and score the texts: ``[b, objectives]``."""

    def __init__(self, decoder: Any, prompts: list[str], scorer: Any, config: Any, settings: GenerationSettings):
        self.decoder, self.prompts, self.scorer, self.decode_config = decoder, prompts, scorer, config
        self.objectives = list(scorer.objectives)
        self.config = {"utility": "generation", **asdict(settings), "prompts": len(prompts),
                       "prompt_hash": _hash_texts(prompts)}

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        result = self.decoder.generate(self.prompts, coalitions, self.decode_config)
        out = np.empty((len(coalitions), len(self.objectives)))
        for k, completions in enumerate(result.completions):
            scores = np.asarray(self.scorer(self.prompts, completions), dtype=float)  # [B, objectives]
            if result.log_weights is not None:
                w = np.exp(result.log_weights[k] - result.log_weights[k].max())
                out[k] = (w[:, None] * scores).sum(0) / w.sum()
            else:
                out[k] = scores.mean(0)
        return out


def _hash_texts(texts: Sequence[str]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()[:16]


def _generation_utility(run: RunDir, manifest: dict[str, Any], settings: GenerationSettings, *, device: str,
                        seed: int) -> _GenerationUtility:
    from . import rewards
    from .decode import ComposedDecoder, DecodeConfig
    from .models import load_adapters, load_base_model, load_tokenizer, resolve_model, resolve_dtype

    ref = resolve_model(manifest["base_model"]["location"])
    tokenizer = load_tokenizer(ref)
    dtype = resolve_dtype(manifest["config"]["model"]["precision"], device)
    model = load_adapters(load_base_model(ref, dtype=dtype, device=device),
                          {s: run.root / e["adapter"] for s, e in manifest["sources"].items()})
    prompts = _prompts(run, manifest, settings, tokenizer)
    scorers: list[Any] = []
    for name in settings.rewards:
        if name == "toy":
            scorers.append(rewards.toy_rewards())
        else:
            scorers.append(rewards.HFRewardModel(name, device=device))
    scorer = scorers[0] if len(scorers) == 1 else rewards.MultiScorer(scorers)
    decoder = ComposedDecoder(model, tokenizer, list(manifest["sources"]), device=device)
    config = DecodeConfig(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                          top_k=settings.top_k, seed=seed, correction=settings.correction)
    return _GenerationUtility(decoder, prompts, scorer, config, settings)


def _prompts(run: RunDir, manifest: dict[str, Any], settings: GenerationSettings, tokenizer: Any) -> list[str]:
    """The prompt set: a file, the toy world's evaluation prompts, or the held-out prompts."""
    import json

    from .data import read_jsonl_records

    texts: list[Any] = []
    if settings.prompts is not None:
        path = Path(settings.prompts)
        if not path.is_file():
            raise InvalidArgumentError(f"prompt file {path} not found")
        if path.suffix in (".jsonl", ".ndjson"):
            for number, record in enumerate(read_jsonl_records(path), start=1):
                if "prompt" not in record:
                    raise DposhapError(f"{path}:{number} field 'prompt': missing; each line needs a prompt")
                texts.append(record["prompt"])
        else:
            texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif manifest.get("toy"):
        from . import toy

        info = manifest["toy"]
        world = toy.build_toy_world(run.root / info["root"], seed=info["seed"], sources=info["sources"],
                                    pairs_per_source=info["pairs_per_source"])  # already built: reused
        texts = list(world.eval_prompts)
    if not texts:
        seen: dict[str, None] = {}
        for entry in manifest["sources"].values():
            for record in read_jsonl_records(run.root / entry["heldout"]):
                seen.setdefault(json.dumps(record["prompt"]), None)
        texts = [json.loads(t) for t in seen]
    prompts = [t if isinstance(t, str) else tokenizer.apply_chat_template(t, tokenize=False, add_generation_prompt=True)
               for t in texts[: settings.n_prompts]]
    if not prompts:
        raise DposhapError("no prompts to decode: give --prompts FILE")
    return prompts
