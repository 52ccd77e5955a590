"""Triton kernels (``@triton.jit`` only; the launchers live beside the APIs that use them)."""
