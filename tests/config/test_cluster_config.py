"""Where train and value run: the [cluster] table, --ray / --workers, and their errors (no Ray needed)."""

from __future__ import annotations

import pytest

from dposhap.cli import build_parser
from dposhap.cluster import check_address, cluster_config
from dposhap.config import ClusterConfig, load_config
from dposhap.errors import ConfigError, InvalidArgumentError


@pytest.mark.parametrize("address", ["local", "auto", "off", "head:6379", "ray://10.0.0.1:10001", "node-1.lan:6379"])
def test_addresses_ray_takes(address: str) -> None:
    assert check_address(address) == address


@pytest.mark.parametrize("address", ["/tmp/run", "head", "ray://head", "http://head:8265", "", "local:x"])
def test_other_addresses_are_refused_with_what_to_give(address: str) -> None:
    with pytest.raises(InvalidArgumentError, match="not a Ray address: give local"):
        check_address(address)


def test_the_table_is_checked_field_by_field() -> None:
    assert load_config(None, ["cluster.address='local'", "cluster.workers=4"]).cluster.workers == 4
    for override, field in [
        ("cluster.workers=0", "cluster.workers"),
        ("cluster.cpus_per_worker=0", "cluster.cpus_per_worker"),
        ("cluster.gpus_per_worker=-1", "cluster.gpus_per_worker"),
        ("cluster.max_retries=-1", "cluster.max_retries"),
        ("cluster.address='somewhere'", "cluster.address"),
    ]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_config(None, [override])


def test_the_table_is_not_part_of_the_training_hash() -> None:
    assert (
        load_config(None, []).training_hash()
        == load_config(None, ["cluster.address='local'", "cluster.workers=3"]).training_hash()
    )


def test_the_command_line_overrides_the_table_and_off_means_in_process() -> None:
    recorded = ClusterConfig(address="head:6379", workers=8, cpus_per_worker=4)
    assert cluster_config(recorded, None, None) == recorded
    assert cluster_config(recorded, "local", 2) == ClusterConfig(address="local", workers=2, cpus_per_worker=4)
    assert cluster_config(recorded, "off", None).address is None
    assert cluster_config(None, None, None).address is None  # an older run without the table: in process


def test_ray_flag_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["value", "run", "--utility", "accuracy", "--ray"]).ray == "auto"
    assert parser.parse_args(["value", "run", "--utility", "accuracy", "--ray", "local", "--workers", "2"]).workers == 2
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["value", "--ray", "/tmp/run", "--utility", "accuracy"])
    assert exit_.value.code == 2 and "not a Ray address" in capsys.readouterr().err


def test_workers_without_ray_is_an_error_not_ignored() -> None:
    with pytest.raises(InvalidArgumentError, match="--workers counts Ray workers: add --ray local"):
        cluster_config(None, None, 2)
    with pytest.raises(InvalidArgumentError, match="--workers"):
        cluster_config(ClusterConfig(address="local"), "off", 2)
    assert cluster_config(ClusterConfig(address="local"), None, 2).workers == 2


def test_an_unreachable_cluster_is_one_line_at_once() -> None:
    pytest.importorskip("ray")
    from dposhap.cluster import connect

    for address in ("127.0.0.1:9", "no-such-host.invalid:6379"):
        with pytest.raises(InvalidArgumentError, match=f"could not reach the Ray cluster at {address}"):
            connect(ClusterConfig(address=address))  # checked before Ray, which retries for minutes
