"""Compose kernels: language-model arithmetic over per-source logits.

A coalition's next-token distribution is ``log_softmax((l_ref + sum_i w_i (l_i - l_ref)) / T)``
(DESIGN.md §1). This subpackage needs torch, which the Shapley engine does not, so
``import dposhap`` does not import it: use ``from dposhap import compose``.

Forms
-----
:func:`compose`
    The gather form of the decoding engine: rows of a ``[T, V]`` logits matrix combined per
    output row; returns log-probabilities, the log-normaliser, the sequence-level correction,
    target log-probabilities or a sampled token (Gumbel-max with common random numbers from
    :mod:`dposhap.compose.noise`).
:func:`log_probs`
    The dense convenience form.
:func:`shared_scores`
    Fixed text scored under many coalitions, with an online log-sum-exp over the vocabulary.
:func:`compose_hidden`
    The same combination on final hidden states, for a shared linear LM head.

:func:`compose` dispatches to a backend: the plain-torch reference
(:mod:`dposhap.compose.reference`, the ground truth every other backend is tested against),
the C++ CPU kernel (``dposhap/csrc/compose.h``), the Triton kernel
(:mod:`dposhap.kernels.compose`) or the CUDA kernel (``dposhap/csrc/compose_cuda.cu``). The
dense form runs on the same backends; :func:`shared_scores` on the reference or Triton; the
hidden-state form is the reference's.
"""

from . import noise, reference
from .backends import GATHER_BACKENDS, compose, shared_scores
from .reference import (
    OUTPUT_NAMES,
    Backend,
    ComposeOutput,
    OutputName,
    coalition_coefficients,
    compose_hidden,
    log_probs,
)

__all__ = [
    "GATHER_BACKENDS",
    "OUTPUT_NAMES",
    "Backend",
    "ComposeOutput",
    "OutputName",
    "coalition_coefficients",
    "compose",
    "compose_hidden",
    "log_probs",
    "noise",
    "reference",
    "shared_scores",
]
