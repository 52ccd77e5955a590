"""Per-source DPO training: one TRL ``DPOTrainer`` with a PEFT LoRA adapter per source.

The implementation lives in :mod:`dposhap.train.sources`; this package keeps every name importable
from ``dposhap.train``.
"""

from .sources import (
    Job as Job,
)
from .sources import (
    Result as Result,
)
from .sources import (
    TrainingCheck,
    check_training,
    train_sources,
)
from .sources import (
    _audit as _audit,
)
from .sources import (
    _check_against_model as _check_against_model,
)
from .sources import (
    _check_lora_targets as _check_lora_targets,
)
from .sources import (
    _check_max_length as _check_max_length,
)
from .sources import (
    _check_model as _check_model,
)
from .sources import (
    _check_reporting as _check_reporting,
)
from .sources import (
    _declared_sources as _declared_sources,
)
from .sources import (
    _entry_from_adapter as _entry_from_adapter,
)
from .sources import (
    _eval_records as _eval_records,
)
from .sources import (
    _inputs as _inputs,
)
from .sources import (
    _new_manifest as _new_manifest,
)
from .sources import (
    _ray_result as _ray_result,
)
from .sources import (
    _remove_leftovers as _remove_leftovers,
)
from .sources import (
    _run_per_source as _run_per_source,
)
from .sources import (
    _SourceJob as _SourceJob,
)
from .sources import (
    _store_eval as _store_eval,
)
from .sources import (
    _task_dtype as _task_dtype,
)
from .sources import (
    _train_into as _train_into,
)
from .sources import (
    _train_locked as _train_locked,
)
from .sources import (
    _train_on_ray as _train_on_ray,
)
from .sources import (
    _train_one as _train_one,
)
from .sources import (
    _train_source_task as _train_source_task,
)
from .sources import (
    _up_to_date as _up_to_date,
)

__all__ = ["TrainingCheck", "check_training", "train_sources"]
