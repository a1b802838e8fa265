"""Points of a sweep's space as a sweep samples them, without Ray."""
import optuna

from orchestrator.space_sampler import SpaceSampler, optuna_points
from orchestrator.sweep import first_points


def sampled_points(spec, count: int, period: int) -> tuple[list[dict], optuna.Study]:
    """`count` points of `spec`'s space and the study that gave them: its first points, then
    TPE (seed 0), told the made-up score 0.1 x (i mod `period`) after each."""
    sample = SpaceSampler(spec.space)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    for point in optuna_points(spec.space, first_points(spec)):
        study.enqueue_trial(point)
    points = []
    for i in range(count):
        trial = study.ask()
        points.append(sample(trial))
        study.tell(trial, 0.1 * (i % period))
    return points, study
