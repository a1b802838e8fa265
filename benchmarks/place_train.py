"""`python -m benchmarks train --loss multi-similarity`: place-batched training steps (images
loaded, forward, in-batch miner, loss, backward, step, schedule) against bare forward+backward
steps on the same batches already in memory.

    python -m benchmarks train --loss multi-similarity --device cuda
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from vpr_core.config import TrainConfig
from vpr_core.data.places import PlaceSet
from vpr_core.stages.starting_model import training_start
from vpr_core.training.place_data import place_training_data
from vpr_core.training.run import TrainingRun

from . import common
from .datagen import write_dataset


def write_places(root: Path, places: int, per_place: int, size: tuple[int, int]) -> PlaceSet:
    """Random images, `per_place` of each place (GSV-Cities-like: a Dataframes/*.csv marks
    it; the images are handed over as this `PlaceSet`, not read from it)."""
    (root / "Dataframes").mkdir(parents=True)
    (root / "Dataframes" / "Bench.csv").touch()
    (root / "Images").mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for index in range(places * per_place):
        path = root / "Images" / f"{index:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return PlaceSet("bench", root, tuple(paths), np.repeat(np.arange(places), per_place),
                    tuple(map(str, range(places))), native_size=size)


def run(args, settings: dict, scratch: Path) -> dict:
    size = tuple(int(v) for v in args.size.split("x"))
    places = write_places(scratch / "places", args.places, 4, size)
    write_dataset(scratch / "val", 64, 64, size, splits=("val",))
    clusters = settings["num_clusters"] if args.aggregator == "netvlad" else None
    config = TrainConfig(**{**settings, "num_clusters": clusters, "data_root": places.root},
                         val_root=scratch / "val", loss=args.loss,
                         places_per_batch=args.places_per_batch, epochs=args.epochs,
                         run_dir=scratch / "run", cache_dir=scratch / "cache",
                         warmup_steps=0).validate()
    data = place_training_data(config, places, common.device_and_precision(args)[0])
    start = training_start(config, data.train_split, data.image_size)
    training = TrainingRun(config, data, start)
    epochs = list(training.epochs())
    last = epochs[-1]
    steps_per_s = last.batches / last.stage_seconds["training_steps"]
    bare = bare_steps_per_s(training, epochs[-1].epoch)
    return {"loss": args.loss, "arch": config.arch, "aggregator": config.aggregator,
            "batch_images": config.places_per_batch * 4, "steps": last.batches,
            "train_steps_per_s": round(steps_per_s, 2), "bare_steps_per_s": round(bare, 2),
            "train_step_ratio_to_bare": common.ratio(steps_per_s, bare)}


def bare_steps_per_s(training: TrainingRun, epoch: int) -> float:
    """Forward, a plain sum as the loss, backward and step on the batches of `epoch`, their
    images already on the device."""
    source, model = training.train_input.source, training.train_input.forward
    batches = training.places.sampler.epoch_batches(epoch)
    images = list(source.batches(b.images for b in batches))
    optimizer = training.optimizer

    def steps():
        for batch in images:
            loss = model(batch).float().square().sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    steps()  # warm
    common.synchronize(training.device)
    started = time.perf_counter()
    steps()
    common.synchronize(training.device)
    return len(images) / (time.perf_counter() - started)
