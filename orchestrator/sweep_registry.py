"""A sweep's best trial registered in MLflow's Model Registry, at the sweep's end. Registering
never costs the sweep its results: a failure is a warning naming what failed."""
from __future__ import annotations

from vpr_core.log import log
from vpr_tracking.names import Tag

from .tracking import Tracker


def register_best(tracker: Tracker, result, name: str) -> dict:
    """Register `result`'s best trial as a version of `name` (see `vpr_tracking.registry`);
    returns what happened as --json holds it: the registration, or {"name", "error"}."""
    best = result.best
    if result.interrupted or best is None:
        why = "the sweep was interrupted" if result.interrupted else "no trial has a recall"
        return {"name": name, "error": f"nothing registered: {why}"}
    from vpr_tracking.registry import register_run

    try:
        registration = register_run(tracker.store, name, best.run_id, result.metric,
                                    sweep_run_id=result.parent_run_id)
        tracker.store.set_tags(result.parent_run_id, {Tag.REGISTERED_MODEL: registration.uri})
    except Exception as error:  # noqa: BLE001 - a registry problem must not cost the results
        first = (str(error).splitlines() or [""])[0][:200]
        log.warning(f"the best trial ({best.trial_id}) was not registered as {name} "
                    f"({type(error).__name__}: {first}); the sweep's results stand")
        return {"name": name, "error": f"{type(error).__name__}: {first}"}
    log.info(registration.line())
    return registration.to_dict()


def registration_line(registration: dict | None) -> str | None:
    """The sweep summary's line of its registration (None: registering was turned off)."""
    if registration is None:
        return None
    if "error" in registration:
        return f"not registered as {registration['name']}: {registration['error']}"
    return f"registered {registration['uri']}; {registration['reason']}"
