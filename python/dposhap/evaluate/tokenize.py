"""Deprecated module name: the tokenisation of preference records is :mod:`dposhap.tokenization`
(training's data audit uses it too); the names below keep working."""

from __future__ import annotations

from ..tokenization import Record, check_records, encode, response_sequences, tokenize_responses

__all__ = ["Record", "check_records", "encode", "response_sequences", "tokenize_responses"]
