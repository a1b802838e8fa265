"""Joining a Ray cluster: what is the user's address and what is a bug.

Ray itself cannot be made to refuse here in reasonable time (an address where something
answers, but not Ray, costs minutes of Ray's retries), so `ray.init` raises what Ray raises in
each case (ray/_private/worker.py, ray/_private/utils.py check_version_info).
"""
import socket

import pytest
import ray

from orchestrator import ray_cluster
from vpr_core.errors import UserError


@pytest.fixture
def answering_address():
    """host:port where something answers TCP, so `check_reachable` lets `ray.init` try."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def init_raising(monkeypatch):
    """Make `ray.init` raise the given error, with no Ray of this process in the way."""
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_cluster, "_started_here", False)

    def install(error: Exception) -> None:
        def init(*args, **kwargs):
            raise error
        monkeypatch.setattr(ray, "init", init)
    return install


@pytest.mark.parametrize("error", [
    ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6379"),
    TimeoutError("Timed out while waiting for GCS to become available"),
    RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.50.0\n"),
], ids=["not-ray", "timeout", "version-mismatch"])
def test_a_cluster_ray_cannot_join_is_one_clear_error(answering_address, init_raising, error):
    init_raising(error)
    with pytest.raises(UserError, match=f"cannot join the Ray cluster at {answering_address}") \
            as caught:
        ray_cluster.connect(answering_address)
    assert "check --ray-address" in str(caught.value)
    assert str(error).splitlines()[0] in str(caught.value)


@pytest.mark.parametrize("bug", [
    ValueError("When connecting to an existing cluster, num_cpus and num_gpus must not be "
               "provided."),
    TypeError("init() got an unexpected keyword argument 'logging_level'"),
    RuntimeError("Maybe you called ray.init twice by accident?"),
], ids=lambda error: type(error).__name__)
def test_a_bug_in_how_ray_is_called_is_not_blamed_on_the_address(answering_address,
                                                                 init_raising, bug):
    init_raising(bug)
    with pytest.raises(type(bug)) as caught:
        ray_cluster.connect(answering_address)
    assert caught.value is bug
