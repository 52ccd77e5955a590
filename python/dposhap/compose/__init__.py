"""Compose kernels: language-model arithmetic over per-source logits.

A coalition's next-token distribution is ``log_softmax((l_ref + sum_i w_i (l_i - l_ref)) / T)``
(docs/design.md §1). This subpackage needs torch, which the Shapley engine does not, so
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
    The same combination on final hidden states, for a shared linear LM head (checked);
    :func:`compose_hidden_unchecked` is its arithmetic alone, for a hot path that builds its
    own arguments.

Modules, each importing only those above it
-------------------------------------------
:mod:`~dposhap.compose.contract`
    Output names, the gather request and its checked form, the argument checks.
:mod:`~dposhap.compose.noise`
    The counter-based noise (its C++/CUDA twin is ``csrc/compose_noise.h``).
:mod:`~dposhap.compose.reference`
    The plain-torch reference: the math, the ground truth of every backend.
:mod:`~dposhap.compose.triton_kernels`, :mod:`~dposhap.compose.triton_backend`, :mod:`~dposhap.compose.cuda_backend`
    The Triton kernels and the launchers of the Triton and CUDA kernels.
:mod:`~dposhap.compose.ops`
    The ``torch.library`` ops: ``dposhap::compose_gather`` (C++ CPU and CUDA kernels) and
    ``dposhap::compose_gather_triton``.
:mod:`~dposhap.compose.registry`
    The backends (``"torch"``, ``"cpp"``, ``"triton"``, ``"cuda"``) and the choice of ``"auto"``.
:mod:`~dposhap.compose.backends`
    The dispatcher: the forms with a ``backend`` argument.
"""

from . import contract, noise, reference
from .backends import GATHER_BACKENDS, Backend, SharedBackend, compose, log_probs, shared_scores
from .contract import OUTPUT_NAMES, ComposeOutput, GatherArgs, GatherRequest, OutputName, Temperature
from .reference import coalition_coefficients, compose_hidden, compose_hidden_unchecked

__all__ = [
    "GATHER_BACKENDS",
    "OUTPUT_NAMES",
    "Backend",
    "ComposeOutput",
    "GatherArgs",
    "GatherRequest",
    "OutputName",
    "SharedBackend",
    "Temperature",
    "coalition_coefficients",
    "compose",
    "compose_hidden",
    "compose_hidden_unchecked",
    "contract",
    "log_probs",
    "noise",
    "reference",
    "shared_scores",
]
