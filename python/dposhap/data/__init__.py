"""Loading and validation of multi-source preference data, and the held-out split of each source.

A pair is ``(prompt, chosen, rejected)`` in one of TRL's two formats: three plain strings, or
three conversations (lists of ``{"role", "content"}`` messages; ``chosen`` and ``rejected`` end
with an ``assistant`` message). Every preference row TRL's ``DPOTrainer`` trains on is read into
that shape by TRL's own ``maybe_extract_prompt``: an explicit prompt, or none (the longest prefix
chosen and rejected share is the prompt), or a prompt string beside conversations that repeat it
(the conversations' shared prefix is the prompt); :data:`ACCEPTED_SHAPES` says it in one line.
Columns other than the source, prompt, chosen and rejected columns are ignored. Every pair
belongs to a *source*: named by a column of the data (:attr:`DataSpec.files`), or by the file it
comes from (:attr:`DataSpec.sources`).

Formats, and what ``line`` means in a pair's origin and in every problem report:

=========================================  =========================================================
``.jsonl`` / ``.ndjson`` (optionally .gz)  the physical line of the object (1-based)
``.json`` (optionally .gz)                 a list of objects, or ``{"data": [...]}`` or
                                           ``{"train": [...]}``: the line where the object starts
``.csv`` / ``.tsv`` (optionally .gz)       the physical line where the row starts; the header is
                                           the first line. A cell holding a valid JSON list of
                                           objects is a conversation, any other cell plain text;
                                           lines of spaces or of empty cells are skipped
``.parquet``                               the row index + 1
a folder written by ``save_to_disk``       the row index + 1; a ``DatasetDict`` gives its
                                           ``"train"`` split (or its only split); another split
                                           is read from its own folder inside
a hub id ``org/name``                      the row index + 1 in the ``"train"`` split (or the only
                                           split) of ``datasets.load_dataset(id)``; used only when
                                           the string is not an existing path
=========================================  =========================================================

Text files must be UTF-8 (a byte-order mark is allowed). Invalid bytes do not stop the reading:
the text that holds them is reported with its file, line and field.

:func:`load_pairs` checks everything before anything is trained and raises one
:class:`~dposhap.errors.DataValidationError` listing every problem; code that gets pairs from it
(or :func:`load_sources`) needs to check nothing again.
"""

from .readers import read_jsonl_records
from .records import DataProblem, DataSpec, PreferencePair, SourceData
from .split import heldout_size, load_sources, split_heldout, write_split
from .texts import Text, text_problem
from .validate import ACCEPTED_SHAPES, extract_trl_prompt, load_eval_records, load_pairs

__all__ = [
    "ACCEPTED_SHAPES",
    "DataProblem",
    "DataSpec",
    "PreferencePair",
    "SourceData",
    "Text",
    "extract_trl_prompt",
    "heldout_size",
    "load_eval_records",
    "load_pairs",
    "load_sources",
    "read_jsonl_records",
    "split_heldout",
    "text_problem",
    "write_split",
]
