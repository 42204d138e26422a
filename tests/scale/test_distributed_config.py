"""Multi-host start-up settings: config first, then the environment; nothing to join means one process."""

import pytest

from jaxalign import distributed
from jaxalign.distributed import DistributedConfig


def test_environment_fills_what_the_config_leaves_empty(monkeypatch):
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "10.0.0.2:1234")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "4")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "3")
    got = DistributedConfig().resolved()
    assert (got.coordinator_address, got.num_processes, got.process_id) == ("10.0.0.2:1234", 4, 3)
    explicit = DistributedConfig(coordinator_address="h:1", num_processes=2, process_id=0).resolved()
    assert (explicit.coordinator_address, explicit.num_processes, explicit.process_id) == ("h:1", 2, 0)


def test_single_process_without_settings_and_loud_failure_when_incomplete(monkeypatch):
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize(DistributedConfig()) is False
    assert distributed.is_main()
    with pytest.raises(ValueError, match="needs num_processes and process_id"):
        distributed.initialize(DistributedConfig(coordinator_address="127.0.0.1:1"))
