"""Registering in MLflow's Model Registry from a command: a sweep's best trial at its end,
`compress --register`'s variant. Registering never costs a command its results: a failure
is a warning naming what failed, and the command's output and exit status stand."""
from __future__ import annotations

from vpr_core.errors import first_line
from vpr_core.log import log
from vpr_tracking.names import Tag

from .tracking import Tracker


def register_safely(tracker: Tracker, name: str, run_id: str, what: str, **options) -> dict:
    """Register run `run_id`'s model (`what` names it in a warning) as a version of `name`
    (`options`: of `vpr_tracking.registry.register_run`); returns what happened as --json
    holds it: the registration, or {"name", "error"}."""
    from vpr_tracking.registry import register_run

    try:
        registration = register_run(tracker.store, name, run_id, **options)
    except Exception as error:  # noqa: BLE001 - a registry problem must not cost the results
        first = first_line(error, 200)
        log.warning(f"{what} was not registered as {name} ({type(error).__name__}: {first}); "
                    f"the results stand")
        return {"name": name, "error": f"{type(error).__name__}: {first}"}
    return registration.to_dict()  # the command's summary says it (registration_line)


def register_best(tracker: Tracker, result, name: str) -> dict:
    """Register `result`'s (a `SweepResult`) best trial as a version of `name`, and tag the
    sweep's parent run with it."""
    best = result.best
    if result.interrupted or best is None:
        why = "the sweep was interrupted" if result.interrupted else "no trial has a recall"
        return {"name": name, "error": f"nothing registered: {why}"}
    done = register_safely(tracker, name, best.run_id, f"the best trial ({best.trial_id})",
                           metric=result.metric, sweep_run_id=result.parent_run_id)
    if "uri" in done:
        try:
            tracker.store.set_tags(result.parent_run_id, {Tag.REGISTERED_MODEL: done["uri"]})
        except Exception as error:  # noqa: BLE001 - the version exists; only the tag is lost
            log.warning(f"the sweep's run was not tagged with {done['uri']} "
                        f"({type(error).__name__})")
    return done


def registration_line(registration: dict | None) -> str | None:
    """The summary's line of a registration (None: registering was not asked for)."""
    if registration is None:
        return None
    if "error" in registration:
        return f"not registered as {registration['name']}: {registration['error']}"
    return f"registered {registration['uri']}; {registration['reason']}"
