"""Shared settings of the dposhap tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from dposhap.models import ModelRef

# The shared games with known values and the reference semivalues are in dposhap.testing.

# Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors (it must be chosen
# before triton is first imported).
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (`make test` runs one worker per core, up to 4), the workers share the cores:
# each runs torch on its share of them, set before torch is first imported.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    os.environ.setdefault("MKL_NUM_THREADS", str(_share))

# Reproducible runs: the same examples every time, no wall-clock deadline (the first call of
# a method may be slower than the rest). Each test sets its own max_examples.
settings.register_profile("dposhap", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("dposhap")


#: Test files whose module or session fixtures take minutes: run first, so that on several workers
#: they do not start last and hold the others up.
LONG_SETUPS = ("test_reproduce.py", "reliability/", "test_cluster_", "test_select.py", "test_valuation.py")
#: Files that share a session resource: all of them on one worker (one Ray runtime, one trained run).
SHARED_GROUPS = {"test_cluster_": "ray", "reliability/": "reliability"}


def _test_file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].removeprefix("tests/")


def work_unit(nodeid: str) -> str:
    """The unit a test is scheduled in on pytest-xdist's workers: its file, or the group of files
    sharing a session resource."""
    path = _test_file(nodeid)
    return next((name for key, name in SHARED_GROUPS.items() if key in path), path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker: the long set-ups first (the controller hands the units out in this order)."""
    if not hasattr(config, "workerinput"):
        return

    def rank(item: pytest.Item) -> int:
        path = _test_file(item.nodeid)
        return next((i for i, key in enumerate(LONG_SETUPS) if key in path), len(LONG_SETUPS))

    items.sort(key=rank)  # stable: each file keeps its order


if importlib.util.find_spec("xdist") is not None:

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """``make test``'s scheduler: whole work units (:func:`work_unit`) to one worker each, in
        collection order, so a file's module fixtures are built once, the Ray runtime and the
        reliability suite's trained run once, and the SmolLM2 reproduction first."""
        from xdist.scheduler import LoadScopeScheduling

        class WorkUnits(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return work_unit(nodeid)

        return WorkUnits(config, log)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one torch thread is faster than several and does not wait on other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """DPOSHAP_CACHE pointed at a fresh folder for the whole session: the user's cache is never touched."""
    root = tmp_path_factory.mktemp("dposhap-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DPOSHAP_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def smollm2(model_cache: Path) -> ModelRef:
    """The real SmolLM2-135M-Instruct (the smollm2 extra's GGUF file), converted once for the session."""
    from dposhap.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


#: The source whose adapter-saving Ray worker kills itself once (tests/train/test_cluster_train.py).
RAY_DIES_ONCE = "duplicate"


@pytest.fixture(scope="session")
def ray_fault_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file whose absence arms the fault of :data:`RAY_DIES_ONCE` (created as the worker dies)."""
    return tmp_path_factory.mktemp("ray-fault") / "died-once"


@pytest.fixture(scope="session")
def ray_runtime(ray_fault_marker: Path) -> Iterator[object]:
    """One local Ray runtime for the whole session (2 CPUs, no dashboard, no network): starting one
    takes seconds, and every cluster test shares it. Its workers (not this process) carry a fault
    hook: the one saving the adapter of a source named ``duplicate`` kills itself, once."""
    ray = pytest.importorskip("ray")
    faults = {
        "DPOSHAP_FAULT": f"kill-once:{RAY_DIES_ONCE}",
        "DPOSHAP_FAULT_ONCE": str(ray_fault_marker),
        "OMP_NUM_THREADS": "1",
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": faults},
    )
    yield ray
    ray.shutdown()


#: The chat template of :func:`tiny_chat_model`: role-prefixed lines, "assistant:" as the generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the toy world's word-level tokenizer and a chat template, saved as a folder.

    Every word the toy language lacks is one ``<unk>`` token, so different texts of unknown words
    tokenise alike.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dposhap.worlds.toy.model import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("model") / "tiny-chat"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
