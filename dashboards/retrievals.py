"""`retrievals`: what a checkpoint retrieves, as a grid of images.

One row per query: the query, then its top-k database matches, each framed green when it is
a true positive (among the split's evaluation positives, within 25 m) and red when not, with
the UTM distance between query and match in metres under it. The ranking is the one
`vpr_core.evaluation.evaluate` computes for Recall@N.
"""
from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpr_core.config.common import CommonConfig, ckpt_setting, split_setting
from vpr_core.errors import UserError
from vpr_core.settings import check, redeclared, setting
from vpr_tracking.names import is_model_reference

from .style import NEGATIVE_COLOUR, POSITIVE_COLOUR

MAX_TOP_K = 20  # evaluate() keeps the 20 nearest database images
CELL_WIDTH = 1.8  # inches per image column (180 pixels as saved)
LABEL_HEIGHT = 0.5  # inches per row for the title above and the distance below an image
TITLE_HEIGHT = 0.6  # inches for the figure's title
THUMBNAIL_WIDTH = 320  # pixels: images are shrunk before drawing, whatever their size


OUTPUT, SOURCE = "output", "checkpoint"  # the groups of its flags
THE_RUNS = "the run's"  # where a data setting comes from when not given


def _data(name: str, **changes):
    """A data setting of the checkpoint's run (flags.json or MLflow params) unless given."""
    return redeclared(CommonConfig, name, default=None, shown_default=THE_RUNS,
                      roles=frozenset(), **changes)


@dataclass(frozen=True)
class RetrievalSettings:
    """What to draw. `resume` (file or run folder) or `run_id` (an MLflow run's
    checkpoints/model_best.pth.tar) names the checkpoint; `data_root`, `dataset` and
    `image_size` default to the run's own (flags.json or the MLflow params)."""

    out: Path = setting(None, "PNG to write", metavar="FILE.png", group=OUTPUT)
    resume: Path | None = setting(None, "checkpoint file, run folder or registered model",
                                  group=SOURCE, metavar="FILE|RUN_DIR|models:/NAME@ALIAS")
    ckpt: str = ckpt_setting()
    run_id: str | None = setting(None, "an MLflow run's best checkpoint", flag="--run",
                                 metavar="RUN_ID", group=SOURCE)
    tracking_uri: str | None = setting(None, "MLflow store of --run", flag="")
    data_root: Path | None = _data("data_root")
    dataset: str | None = _data("dataset")
    split: str = split_setting("val", roles=())
    image_size: str | None = _data("image_size", written=None)
    queries: int = setting(8, "rows to draw", metavar="N", parse=int, minimum=1, group=OUTPUT)
    top_k: int = setting(5, "matches per query", metavar="N", parse=int, minimum=1,
                         group=OUTPUT)
    seed: int = setting(0, "which queries are drawn", metavar="N", parse=int, group=OUTPUT)
    only_wrong: bool = setting(False, "only queries whose top-1 match is not a true positive",
                               parse=bool, group=OUTPUT)
    device: str = redeclared(CommonConfig, "device", roles=frozenset())
    workers: int = redeclared(CommonConfig, "workers", roles=frozenset())
    cache_batch_size: int = redeclared(CommonConfig, "cache_batch_size", roles=frozenset(),
                                       help="images per forward pass")

    def validate(self) -> RetrievalSettings:
        if self.out is None:
            raise UserError("retrievals needs --out FILE.png, the picture to write")
        if (self.resume is None) == (self.run_id is None):
            raise UserError("pass exactly one of --resume FILE|RUN_DIR and --run RUN_ID")
        check(self)
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise UserError(f"--top-k must be between 1 and {MAX_TOP_K} (the evaluation keeps "
                            f"the {MAX_TOP_K} nearest), got {self.top_k}")
        return dataclasses.replace(self, out=Path(self.out).absolute())


def match_is_positive(query_index: int, db_index: int, positives: list) -> bool:
    """True when database image `db_index` is among the positives of query `query_index`.

    `positives`: one array of database indices per query (`Split.eval_positives()`).
    """
    return bool(db_index >= 0 and np.isin(db_index, positives[query_index]))


def frame_colours(query_index: int, matches, positives: list) -> list[str]:
    """The frame colour of each match of one query: green for a positive, red otherwise."""
    return [POSITIVE_COLOUR if match_is_positive(query_index, int(m), positives)
            else NEGATIVE_COLOUR for m in matches]


def match_distances(query_utm: np.ndarray, database_utm: np.ndarray, query_indices,
                    matches: np.ndarray) -> np.ndarray:
    """UTM distances in metres [R, k] between queries `query_indices` [R] (rows of
    `query_utm` [M, 2]) and their matches [R, k] (rows of `database_utm` [N, 2])."""
    offsets = database_utm[matches] - query_utm[np.asarray(query_indices)][:, None, :]
    return np.linalg.norm(offsets, axis=-1)


def choose_queries(wrong_top1: np.ndarray, count: int, seed: int, only_wrong: bool
                   ) -> np.ndarray:
    """Up to `count` query indices, drawn without replacement with `seed`, in ascending order.

    `wrong_top1` [M] bool: queries whose first match is not a positive; with `only_wrong`
    only those are drawn from.
    """
    candidates = np.flatnonzero(wrong_top1) if only_wrong else np.arange(len(wrong_top1))
    rng = np.random.default_rng(seed)
    picked = rng.choice(candidates, size=min(count, len(candidates)), replace=False)
    return np.sort(picked)


def grid_size(rows: int, top_k: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    """(width, height) in pixels of the saved grid for `rows` queries and `top_k` matches of
    images of (H, W) pixels (at least one row: an empty grid holds a sentence)."""
    height, width = image_hw
    cell_height = CELL_WIDTH * height / width + LABEL_HEIGHT
    return (round(CELL_WIDTH * (top_k + 1) * 100),
            round((max(rows, 1) * cell_height + TITLE_HEIGHT) * 100))


def retrievals(settings: RetrievalSettings) -> dict:
    """Rank the split's database for each query with the checkpoint, draw the grid to
    `settings.out` and return a summary (rows, matches, green and red frame counts)."""
    from vpr_core.evaluation import named_recalls

    settings = settings.validate()
    source, shape, split, result = rank(settings)
    positives = split.eval_positives()
    top_k = result.predictions[:, :settings.top_k]
    wrong = np.array([not match_is_positive(q, int(m), positives)
                      for q, m in enumerate(top_k[:, 0])], dtype=bool)
    chosen = choose_queries(wrong, settings.queries, settings.seed, settings.only_wrong)
    rows = _rows(split, chosen, top_k[chosen], positives)
    title = (f"Top-{settings.top_k} matches of {shape.label} on "
             f"{split.dataset} {split.split} (green: within {split.pos_dist_thr:g} m, red: not)")
    from .plots import save

    out = Path(settings.out).absolute()
    save(draw_grid(rows, settings.top_k, title, _first_size(split)), out)
    green = sum(m["positive"] for row in rows for m in row["matches"])
    return {"out": str(out), "checkpoint": source, "run_id": settings.run_id,
            "model": shape.label, "arch": shape.arch, "aggregator": shape.aggregator,
            "num_clusters": shape.num_clusters, "dataset": split.dataset,
            "split": split.split, "top_k": settings.top_k,
            "recalls": named_recalls(result.recalls),
            "only_wrong": settings.only_wrong, "wrong_top1": int(wrong.sum()),
            "green_frames": green, "red_frames": len(rows) * settings.top_k - green,
            "rows": rows}


def rank(settings: RetrievalSettings) -> tuple:
    """(checkpoint source, its `ModelShape`, the `Split`, the `EvalResult` with predictions
    [M, min(20, N)]); every input is checked before the checkpoint is fetched."""
    source, defaults, fetch = _checkpoint_source(settings)
    split, image_size, given = _split(settings, defaults)
    if settings.top_k > split.num_database:
        raise UserError(f"--top-k {settings.top_k} exceeds the {split.num_database} database "
                        f"images of {split.dataset} {split.split}")
    from vpr_core.models.encoders import feature_map_size, fitting_size
    from vpr_core.stages.starting_model import model_from_checkpoint

    with tempfile.TemporaryDirectory() as scratch:
        model, checkpoint, shape, authors_size = model_from_checkpoint(fetch(Path(scratch)))
    if not given:  # as eval: a released file's authors' size, a ViT's whole patches
        image_size = fitting_size(shape.arch, authors_size or image_size)
    feature_map_size(shape.arch, image_size, shape.aggregator)
    return source, shape, split, _evaluate(model, checkpoint, split, image_size, settings)


def _checkpoint_source(settings: RetrievalSettings) -> tuple[str, dict, Callable]:
    """(what the checkpoint is, defaults for data_root / dataset / image_size from its run,
    `fetch(scratch_folder) -> checkpoint file`). Everything is checked here; only `fetch`
    downloads, so a mistake found later has not cost a download."""
    from vpr_core.models.checkpoints import checkpoint_file, read_flags

    if is_model_reference(settings.resume):
        return _registered_source(settings)
    if settings.resume is not None:
        path = checkpoint_file(Path(settings.resume).expanduser().absolute(), settings.ckpt)
        return str(path), read_flags(path), lambda scratch: path
    from vpr_tracking.run_checkpoint import run_checkpoint
    from vpr_tracking.store import as_store

    found = run_checkpoint(as_store(settings.tracking_uri), settings.run_id)
    return found.source, dict(found.run.params), found.fetch


def _registered_source(settings: RetrievalSettings) -> tuple[str, dict, Callable]:
    """`_checkpoint_source` of a registered model (`--resume models:/NAME@ALIAS`): the data
    defaults from the version's tags, the files downloaded by `fetch`."""
    from vpr_tracking.model_refs import registered_version, version_checkpoint
    from vpr_tracking.names import VersionTag
    from vpr_tracking.store import as_store

    reference, store = str(settings.resume), as_store(settings.tracking_uri)
    found = registered_version(store, reference)
    tags = found.tags
    defaults = {"data_root": tags.get(VersionTag.DATA_ROOT),
                "dataset": tags.get(VersionTag.DATASET),
                "image_size": tags.get(VersionTag.IMAGE_SIZE)}
    return reference, defaults, lambda scratch: version_checkpoint(store, found)


def _split(settings: RetrievalSettings, defaults: dict):
    """(the split, the (H, W) images are brought to), from flags then the run's defaults."""
    from vpr_core.config import parse_image_size
    from vpr_core.data import open_split, resolve_image_size

    root = settings.data_root or defaults.get("data_root")
    if root is None:
        raise UserError("the checkpoint does not say where its dataset is; pass --data-root")
    split = open_split(Path(root), settings.split, settings.dataset or defaults.get("dataset"))
    size = settings.image_size or defaults.get("image_size")
    # 'native': images keep their sizes ('mixed', as sweeps logged it before)
    size = None if size in (None, "mixed", "native") else size
    return split, resolve_image_size(split, parse_image_size(size)), size is not None


def _evaluate(model, checkpoint: dict, split, image_size, settings: RetrievalSettings):
    """The ranking `eval` computes for this checkpoint (a compressed one included: int8 on
    the CPU, a product-quantised database searched as such)."""
    from vpr_core.compression import cpu_only, search_index
    from vpr_core.data.image_feed import ImageFeed
    from vpr_core.evaluation import evaluate
    from vpr_core.runtime import (
        memory_format,
        prepare_model,
        resolve_device,
        resolve_precision,
    )

    device = resolve_device("cpu" if cpu_only(checkpoint) else settings.device)
    precision = resolve_precision(None, device)
    feed = ImageFeed(split, image_size, device, workers=settings.workers,
                     gpu_decode=device.type == "cuda",
                     memory_format=memory_format(device, precision))
    return evaluate(prepare_model(model, device, precision), feed,
                    batch_size=settings.cache_batch_size, precision=precision,
                    index=search_index(checkpoint))


def _rows(split, chosen: np.ndarray, matches: np.ndarray, positives: list) -> list[dict]:
    """One dict per chosen query: its image and, per match, index, image, metres, positive."""
    if len(chosen) == 0:
        return []
    metres = match_distances(split.query_utm, split.database_utm, chosen, matches)
    rows = []
    for query, row_matches, row_metres in zip(chosen, matches, metres):
        colours = frame_colours(int(query), row_matches, positives)
        rows.append({"query_index": int(query), "query_path": split.query_paths[query],
                     "matches": [{"database_index": int(m), "path": split.database_paths[m],
                                  "distance_m": round(float(d), 2),
                                  "positive": colour == POSITIVE_COLOUR, "colour": colour}
                                 for m, d, colour in zip(row_matches, row_metres, colours)]})
    return rows


def _first_size(split) -> tuple[int, int]:
    """(H, W) of the split's first query image, which sets the grid's cell shape."""
    from PIL import Image

    with Image.open(split.query_paths[0]) as image:
        return image.height, image.width


def draw_grid(rows: list[dict], top_k: int, title: str, image_hw: tuple[int, int]):
    """The figure: a row per query (query, then `top_k` framed matches); `rows` as returned
    in the summary. With no rows, one sentence says there is nothing to show."""
    from .plots import plt  # the file-only backend

    width, height = grid_size(len(rows), top_k, image_hw)
    figure = plt.figure(figsize=(width / 100, height / 100), layout="constrained")
    figure.suptitle(title, fontsize="medium")
    if not rows:
        figure.text(0.5, 0.4, "every chosen query's top-1 match is a true positive: nothing "
                    "to show with --only-wrong", ha="center", va="center")
        return figure
    axes = np.atleast_2d(figure.subplots(len(rows), top_k + 1))
    for row, row_axes in zip(rows, axes):
        _image_cell(row_axes[0], row["query_path"], "#000000", f"query {row['query_index']}")
        for rank, (match, axis) in enumerate(zip(row["matches"], row_axes[1:]), start=1):
            _image_cell(axis, match["path"], match["colour"],
                        f"#{rank}: db {match['database_index']}")
            axis.set_xlabel(f"{match['distance_m']:.1f} m", color=match["colour"],
                            fontsize="small")
    return figure


def _image_cell(axis, path: str, colour: str, title: str) -> None:
    """One image in `axis`, framed in `colour`, titled."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))
        axis.imshow(np.asarray(image))
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title, fontsize="small")
    for spine in axis.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
