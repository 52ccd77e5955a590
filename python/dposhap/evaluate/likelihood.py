"""The composed likelihood: token log-likelihood of held-out preferred responses under each coalition.

The per-position logits of the reference and of every source are computed once; any batch of
coalitions is then scored by the compose kernels' shared-source form, without a ``[K, N, V]``
tensor (:class:`ComposedLikelihood`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..core import ItemScores
from ..errors import InvalidArgumentError
from ..run import Run, config_hash
from ..tokenization import Record, response_sequences
from .base import BuildContext, UtilityKind, register_utility
from .evalsets import default_pair_sets, evaluation_pairs
from .margins import MarginSettings
from .teacher import forward_batches, pad_id, policy

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = ["ComposedLikelihood"]


class ComposedLikelihood:
    """Mean log-likelihood per token of fixed responses under the composed policy of each coalition.

    The composed policy is the token-level one of the decoding engine (docs/design.md §1):
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
    items
        int64 ``[N]``: the response each token belongs to (``0..m-1``), the items the value
        can be bootstrapped over; default: every token its own item.
    """

    #: Coalitions may be given as per-source weights (``[b, n]`` floats), which enter the compose kernel.
    takes_weights = True

    def __init__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        sources: Sequence[str],
        *,
        items: torch.Tensor | None = None,
        block_v: int = 4096,
        max_elements: int = 1 << 24,
        backend: Literal["auto", "torch", "triton"] = "auto",
    ):
        import torch

        if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[1] != len(sources) + 1:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InvalidArgumentError(f"logits must be a tensor [N, {len(sources) + 1}, V], got {shape}")
        if logits.shape[0] == 0:
            raise InvalidArgumentError("no response tokens to score")
        self.logits, self.targets = logits, targets
        if items is None:
            items = torch.arange(logits.shape[0])
        items = torch.as_tensor(items, dtype=torch.long).cpu()
        if items.shape != (logits.shape[0],) or int(items.min()) < 0:
            raise InvalidArgumentError(f"items must be [{logits.shape[0]}] response indices >= 0")
        # renumber to 0..m-1 in order of first appearance
        _, self.items = torch.unique(items, return_inverse=True)
        self.sources = tuple(sources)
        self.block_v, self.max_elements, self.backend = block_v, max_elements, backend
        self.cache_config: dict[str, Any] | None = None  # set by from_run: what the values depend on

    objectives: tuple[str, ...] = ("likelihood",)
    batch_size: int | None = 64

    @property
    def players(self) -> tuple[str, ...]:
        """The sources (:class:`~dposhap.evaluate.Utility` protocol)."""
        return self.sources

    def describe(self) -> dict[str, Any]:
        """The cache configuration (what the values depend on)."""
        return dict(self.cache_config or {})

    def native_game(self) -> None:
        """None: the composed likelihood runs in torch."""
        return None

    @property
    def n_players(self) -> int:
        """Number of sources."""
        return len(self.sources)

    @property
    def n_tokens(self) -> int:
        """Number of scored response tokens."""
        return int(self.logits.shape[0])

    @property
    def n_items(self) -> int:
        """Number of scored responses (the items a bootstrap resamples)."""
        return int(self.items.max()) + 1

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        sources: Sequence[str],
        records: Sequence[Record],
        *,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        max_length: int | None = None,
        store_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> ComposedLikelihood:
        """Compute the per-position logits of the ``chosen`` responses: one pass for the reference, one per source.

        The LM head runs at the response positions only (:mod:`dposhap.evaluate.scoring`) where
        the model's head is a plain linear layer; elsewhere every position's logits are computed
        and the response positions kept.

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
        sequences = response_sequences(tokenizer, records, ("chosen",), max_length)
        columns: list[torch.Tensor] = []
        targets: torch.Tensor | None = None
        items: torch.Tensor | None = None
        from .scoring import scoring_model

        scorer = scoring_model(model, device)  # the LM head at response positions only, where it applies
        for adapter in (None, *sources):
            parts, part_targets, part_items = [], [], []
            with policy(model, adapter), torch.no_grad():
                if scorer is not None:
                    for hidden, batch_targets, owners in scorer.response_hidden(
                        sequences, batch_size=batch_size, pad_id=pad_id(tokenizer)
                    ):
                        parts.append(scorer.head(hidden).to(store_dtype))
                        part_targets.append(batch_targets)
                        part_items.append(owners)
                else:
                    for order, logits, batch_targets, mask in forward_batches(
                        model, sequences, batch_size=batch_size, device=device, pad_id=pad_id(tokenizer)
                    ):
                        parts.append(logits[mask].to(store_dtype))
                        part_targets.append(batch_targets[mask])
                        rows = torch.as_tensor(order, dtype=torch.long)[:, None].expand(mask.shape)
                        part_items.append(rows[mask.cpu()])
            columns.append(torch.cat(parts))
            targets = torch.cat(part_targets) if targets is None else targets
            items = torch.cat(part_items) if items is None else items
        assert targets is not None  # the loop ran for the reference at least
        return cls(torch.stack(columns, dim=1), targets, sources, items=items, **kwargs)

    @classmethod
    def from_run(
        cls,
        run: Run | str | Path,
        *,
        heldout: str | Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        batch_size: int = 16,
        device: str | None = None,
        world_pairs: int | None = None,
        eval_file: str | Path | None = None,
        models: Any = None,
        **kwargs: Any,
    ) -> ComposedLikelihood:
        """The composed likelihood of the preferred responses of a run's evaluation pairs.

        ``heldout``, ``sources``, ``device``, ``world_pairs`` and ``eval_file`` are as in
        :func:`~dposhap.evaluate.margins.margin_utilities`; ``max_length`` is the run's. ``models``
        (:class:`dposhap.run.RunModels`): evaluate these adapters instead of the run's, uncached.
        """
        run = run if isinstance(run, Run) else Run.open(run)
        pair_sets = default_pair_sets(run, eval_file) if heldout is None else heldout
        records, sets = evaluation_pairs(run, pair_sets, world_pairs=world_pairs, eval_file=eval_file)
        loaded = models if models is not None else run.load_models(sources=sources, device=device)
        out = cls.from_model(
            loaded.model,
            loaded.tokenizer,
            loaded.sources,
            records,
            batch_size=batch_size,
            max_length=run.manifest.max_length,
            **kwargs,
        )
        out.cache_config = (
            {
                "utility": "likelihood",
                "heldout": list(dict.fromkeys(sets)),
                "pairs": len(records),
                "records": config_hash(records),
                "max_length": run.manifest.max_length,
                **run.cache_identity(loaded.sources),
            }
            if models is None
            else None
        )
        return out

    def item_scores(self, coalitions: np.ndarray) -> ItemScores:
        """Per response: the summed log-likelihood of its tokens (numerators) and its token count
        (weights), so that the utility is their ratio and can be bootstrapped over responses."""
        import torch

        per_token = self._token_scores(coalitions)  # [b, N] float64
        m = self.n_items
        numer = torch.zeros((per_token.shape[0], m), dtype=torch.float64)
        numer.index_add_(1, self.items, per_token)
        counts = torch.bincount(self.items, minlength=m).double()
        return ItemScores(numer.numpy()[:, None, :], np.tile(counts.numpy(), (per_token.shape[0], 1)))

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
        return self._token_scores(coalitions).sum(dim=1).div(self.n_tokens).numpy()

    def _token_scores(self, coalitions: np.ndarray) -> torch.Tensor:
        """float64 ``[b, N]``: each coalition's log-likelihood of every response token."""
        import torch  # torch and the compose kernels load on first use, not when the registry is read

        from ..compose import coalition_coefficients, shared_scores

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
        scores = torch.zeros((len(coef), n_pos), dtype=torch.float64)
        for k in range(0, len(coef), coal_chunk):
            for p in range(0, n_pos, pos_chunk):
                _, target = shared_scores(
                    self.logits[p : p + pos_chunk],
                    coef[k : k + coal_chunk],
                    self.targets[p : p + pos_chunk],
                    block_v=self.block_v,
                    backend=self.backend,
                )
                scores[k : k + coal_chunk, p : p + pos_chunk] = target.double().cpu()
        return scores


def _build(run: Run, settings: MarginSettings, context: BuildContext) -> ComposedLikelihood:
    return ComposedLikelihood.from_run(
        run,
        heldout=settings.pair_sets(),
        batch_size=settings.pair_batch_size,
        device=context.device,
        eval_file=settings.eval_file,
        world_pairs=settings.world_pairs,
        models=context.models,
    )


LIKELIHOOD = register_utility(
    UtilityKind(
        "likelihood",
        "token log-likelihood of the evaluation pairs' preferred responses under the composed model",
        MarginSettings,
        _build,
    )
)
