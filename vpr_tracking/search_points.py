"""The points of a search space: what a point gives, the first points a sweep tries, and
whether the images fit every model the space can make.

A point is {dimension name: value} for exactly the dimensions that apply under its own values
(a GeM trial has `gem_p` and no `num_clusters`), each value inside the space and fitting the
others (SALAD pools a ViT's features, so its backbone is a DINOv2).
"""
from __future__ import annotations

from vpr_core.errors import UserError
from vpr_core.models.catalog import MAP_SIZED, PATCH, TAKES_CLASS_TOKEN, is_vit

from .search_space import BY_NAME, CHOICE, EVERY, LOG_UNIFORM, NAMES, Dimension, listed_in


def choices_under(d: Dimension, space: dict, point: dict) -> list | tuple:
    """The values of `d` a point with the values of `point` may take: a choice's that fit
    them, or the range (low, high)."""
    return d.kept(space[d.name], point) if d.kind == CHOICE else space[d.name]


def single(d: Dimension, values) -> bool:
    """Whether `values` (of `choices_under`) leave `d` one value."""
    return len(values) == 1 if d.kind == CHOICE else d.fixed(values)


def applicable(space: dict, point: dict) -> list[str]:
    """The dimensions of the space a point with these values gives, in sampling order."""
    return [d.name for d in listed_in(space) if d.applies(point)]


def completed(space: dict, point: dict) -> dict:
    """`point` with the dimensions it leaves out filled in where the space leaves them one
    value (a spec written before the aggregator was searched names none)."""
    out = dict(point)
    for d in listed_in(space):
        values = choices_under(d, space, out)
        if d.name not in out and d.applies(out) and single(d, values):
            out[d.name] = values[0]
    return out


def check_point(space: dict, point) -> dict:
    """A `search.start_with` entry, completed (`completed`): a value for every dimension that
    applies to it and for no other, inside the space, the values fitting each other."""
    if not isinstance(point, dict) or set(point) - set(NAMES):
        raise UserError(f"search.start_with entries give values of {', '.join(NAMES)}; got "
                        f"{point}")
    given, point = point, completed(space, point)
    wanted = applicable(space, point)
    missing = [name for name in wanted if name not in point]
    if missing:
        raise UserError(f"search.start_with entry {given} lacks {', '.join(missing)}; give "
                        f"a value for each")
    for name, value in point.items():
        d = BY_NAME[name]
        if name not in space:
            raise UserError(f"search.start_with entry {given}: {name} is not searched; list "
                            f"it under search.space or leave it out")
        if name not in wanted:
            other = next(iter(d.only_with))
            raise UserError(f"search.start_with entry {given}: {name} does not apply to "
                            f"{other} {point.get(other)}; leave it out")
        if not d.contains(space[name], value):
            raise UserError(f"search.start_with entry {given} lies outside the search space; "
                            f"widen the space or change the entry")
        if d.problem(value, point):
            raise UserError(f"search.start_with entry {given}: {d.problem(value, point)}")
    return point


def point_with(space: dict, **given) -> dict:
    """A point of the space with the `given` values, each other dimension that applies at
    its first fitting choice or its lower bound."""
    point = dict(given)
    for d in listed_in(space):
        if d.name not in point and d.applies(point):
            point[d.name] = choices_under(d, space, point)[0]
    return point


def first_points(space: dict, start_with) -> list[dict]:
    """The points tried first: `start_with` (completed), else points that try every value of
    each `EVERY` dimension at least once (every aggregator, every architecture, each with a
    backbone it fits), the other dimensions at their `start` values (clamped into the space).
    Constant dimensions are left out: the sampler sets them."""
    if start_with:
        points = [check_point(space, point) for point in start_with]
    else:
        points = [_with_starts(space, point) for point in _every_value_once(space)]
    constant = {d.name for d in listed_in(space) if d.kind == LOG_UNIFORM
                and d.fixed(space[d.name])}
    return [{k: v for k, v in point.items() if k not in constant} for point in points]


def _every_value_once(space: dict) -> list[dict]:
    """Points of the `EVERY` dimensions, each giving one of them a value not tried before."""
    dimensions = [d for d in listed_in(space) if d.kind == CHOICE and d.start == EVERY]
    tried = {d.name: set() for d in dimensions}
    points = []
    while (point := _untried(space, dimensions, tried, {})) is not None:
        points.append(point)
        for name, value in point.items():
            tried[name].add(value)
    return points or [{}]


def _untried(space: dict, dimensions: list, tried: dict, point: dict) -> dict | None:
    """`point` extended over `dimensions` so that some value is one not tried yet, untried
    values first (None: every value was tried)."""
    if not dimensions:
        return point if any(value not in tried[name] for name, value in point.items()) else None
    d, rest = dimensions[0], dimensions[1:]
    if not d.applies(point):
        return _untried(space, rest, tried, point)
    for value in sorted(choices_under(d, space, point), key=lambda v: v in tried[d.name]):
        found = _untried(space, rest, tried, {**point, d.name: value})
        if found is not None:
            return found
    return None


def _with_starts(space: dict, point: dict) -> dict:
    """`point` with every other dimension that applies at its `start` value."""
    point = dict(point)
    for d in listed_in(space):
        if d.name in point or not d.applies(point):
            continue
        values = choices_under(d, space, point)
        if d.kind == LOG_UNIFORM:
            point[d.name] = min(max(d.start, values[0]), values[1])
        else:
            point[d.name] = values[0] if d.start == EVERY else sorted(values)[len(values) // 2]
    return point


def check_images(space: dict, image_size: tuple[int, int] | None) -> None:
    """Every model the space can make takes images of `image_size` (H, W; None: each image
    keeps its own size): a DINOv2 whole patches, SALAD and MegaLoc more patches than clusters,
    MixVPR one size. Raises `UserError` naming the fix."""
    aggregators = space["aggregator"]
    vits = [a for a in space["arch"] if is_vit(a)]
    if image_size is None:
        sized = [a for a in aggregators if a in MAP_SIZED]
        if sized:
            raise UserError(f"search.space.aggregator {sized[0]} works on a feature map of one "
                            f"size, and the images keep sizes of their own; pass --image-size "
                            f"HxW (train.image_size)")
        return
    height, width = image_size
    if vits and (height % PATCH or width % PATCH):
        fit = "x".join(str(max(1, round(side / PATCH)) * PATCH) for side in image_size)
        raise UserError(f"search.space.arch {vits[0]} takes images whose sides are multiples "
                        f"of its {PATCH}-pixel patches, not {height}x{width}; pass --image-size "
                        f"{fit} (train.image_size)")
    patches = (height // PATCH) * (width // PATCH)
    pooling = [a for a in aggregators if a in TAKES_CLASS_TOKEN]
    too_many = [k for k in space["num_clusters"] if k >= patches]
    if pooling and too_many:
        raise UserError(f"search.space.num_clusters {', '.join(map(str, too_many))}: "
                        f"{pooling[0]} needs fewer clusters than the {patches} patches of "
                        f"{height}x{width} images; list fewer clusters, pass a larger "
                        f"--image-size or leave {pooling[0]} out")
