"""Connecting to Ray: a local instance bound to loopback, or an existing cluster."""
from __future__ import annotations

import os
import socket

from vpr_core.errors import UserError

_started_here = False  # whether `connect` started (or joined) Ray in this process
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0",
             "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
             "RAY_DEDUP_LOGS": "0"}


def connect(address: str | None, num_cpus: int | None = None) -> dict:
    """Start or join Ray; returns the cluster's resources ({'CPU': .., 'GPU': ..})."""
    import ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return ray.cluster_resources()  # the caller's Ray: `shutdown` leaves it running
    global _started_here
    _started_here = True
    runtime_env = {"env_vars": {k: os.environ[k] for k in QUIET_ENV}}
    if address:
        check_reachable(address)
        _join(address, runtime_env)
    else:
        # a private local instance, listening on loopback only; trials print nothing worth
        # reading (the driver prints their progress), so their output stays in Ray's logs
        # address="local": a new instance even when a stale cluster file points elsewhere
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 runtime_env=runtime_env,
                 logging_level="warning", log_to_driver=False, _node_ip_address="127.0.0.1")
    return ray.cluster_resources()


def _join(address: str, runtime_env: dict) -> None:
    """ray.init on an existing cluster; `UserError` when Ray cannot join the one at `address`:
    nothing that is Ray answers there (ConnectionError, TimeoutError), the token is missing or
    wrong (AuthenticationError), or it runs another Ray or Python ('Version mismatch')."""
    import ray
    from ray import exceptions

    # AuthenticationError came with Ray's token authentication: older Rays have none
    refusals = (ConnectionError, TimeoutError, getattr(exceptions, "AuthenticationError",
                                                        ConnectionError))
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True,
                 logging_level="warning")
    except refusals as error:
        raise _cannot_join(address, error) from None
    except RuntimeError as error:
        if not str(error).startswith("Version mismatch"):
            raise
        raise _cannot_join(address, error) from None


def _cannot_join(address: str, error: Exception) -> UserError:
    reason = str(error).partition("\n")[0][:160]
    return UserError(f"cannot join the Ray cluster at {address} ({type(error).__name__}: "
                     f"{reason}); check --ray-address")


def check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's long retries, when nothing answers at `address`."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError):
        raise UserError(f"nothing answers at --ray-address {address}; start the head with "
                        f"`ray start --head --port PORT` or fix the address") from None


def shutdown() -> None:
    """End the Ray connection `connect` made, never one the caller had made before."""
    import ray

    global _started_here
    if _started_here and ray.is_initialized():
        ray.shutdown()
    _started_here = False
