"""Loading and validation of multi-source preference data, and the held-out split of each source."""

from .validate import (
    ACCEPTED_SHAPES,
    DataProblem,
    DataSpec,
    PreferencePair,
    SourceData,
    Text,
    extract_trl_prompt,
    heldout_size,
    load_eval_records,
    load_pairs,
    load_sources,
    read_jsonl_records,
    split_heldout,
    text_problem,
    write_split,
)

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
