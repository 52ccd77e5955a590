"""Per-source DPO training: one TRL ``DPOTrainer`` with a PEFT LoRA adapter per source.

One concern per module:

- :mod:`~dposhap.train.sources`: :func:`train_sources`, a run's sources trained (in process or on
  Ray) and its manifest written after each;
- :mod:`~dposhap.train.adapter`: one source's ``DPOTrainer`` with its PEFT LoRA adapter;
- :mod:`~dposhap.train.resume`: which adapters are up to date, leftovers of an interrupted run;
- :mod:`~dposhap.train.inputs`: the data, the world and the trusted set a config trains on;
- :mod:`~dposhap.train.checks`: the settings checks against the model, ``report_to``, the audit;
- :mod:`~dposhap.train.dry_run`: :func:`check_training` (``dposhap check``, ``train --dry-run``);
- :mod:`~dposhap.train.on_ray`: one Ray task per source.

The names the module ``dposhap.train`` had before it became a package stay importable from here;
the underscored ones are deprecated aliases of the names that moved.
"""

from . import adapter, dry_run, on_ray, sources
from .adapter import train_one
from .checks import audit_data, check_against_model, check_lora_targets, check_max_length, check_reporting
from .dry_run import TrainingCheck, check_training
from .inputs import training_inputs, trusted_records
from .on_ray import Job as Job
from .on_ray import Result as Result
from .on_ray import SourceJob, train_on_ray
from .resume import entry_from_adapter, remove_leftovers, up_to_date
from .sources import train_sources

__all__ = ["TrainingCheck", "check_training", "train_sources"]

# deprecated aliases: the names these had in the module dposhap.train
_audit = audit_data
_check_against_model = check_against_model
_check_lora_targets = check_lora_targets
_check_max_length = check_max_length
_check_reporting = check_reporting
_entry_from_adapter = entry_from_adapter
_eval_records = trusted_records
_inputs = training_inputs
_remove_leftovers = remove_leftovers
_SourceJob = SourceJob
_train_on_ray = train_on_ray
_train_one = train_one
_up_to_date = up_to_date
# names private to their modules, importable from here as they were from the module dposhap.train
_check_model = dry_run._check_model
_declared_sources = sources._declared_sources
_new_manifest = sources._new_manifest
_ray_result = on_ray._ray_result
_run_per_source = on_ray._run_per_source
_store_eval = sources._store_eval
_task_dtype = on_ray._task_dtype
_train_into = adapter._train_into
_train_locked = sources._train_locked
_train_source_task = on_ray._train_source_task
