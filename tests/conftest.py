"""Shared settings of the dposhap tests."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# The shared games with known values and the reference semivalues are in dposhap.testing.

# Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors (it must be chosen
# before triton is first imported).
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Reproducible runs: the same examples every time, no wall-clock deadline (the first call of
# a method may be slower than the rest). Each test sets its own max_examples.
settings.register_profile("dposhap", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("dposhap")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is faster and does not wait on others."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
