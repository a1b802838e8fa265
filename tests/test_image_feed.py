"""The one image path: CPU decoding, the decoded store, encoded bytes, precision."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from vpr_core.data import open_split
from vpr_core.data.image_feed import ImageFeed, chunks, decodes_on_gpu
from vpr_core.data.image_store import ImageStore
from vpr_core.data.images import IMAGENET_MEAN, IMAGENET_STD
from vpr_core.errors import UserError
from vpr_core.evaluation import evaluate
from vpr_core.evaluation.extraction import extract_descriptors
from vpr_core.models.place_model import build_model

CPU = torch.device("cpu")
STORE = dict(store_budget=10**9)


def reference_images(paths, size) -> torch.Tensor:
    """What pytorch-NetVlad's transform makes of these files: ToTensor + Normalize."""
    out = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        if (image.height, image.width) != size:
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        out.append(TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD))
    return torch.stack(out)


@pytest.fixture(scope="module")
def val(synth_root):
    return open_split(synth_root, "val")


@pytest.mark.parametrize("size", [(64, 80), (48, 56)])
@pytest.mark.parametrize("store", [False, True])
def test_the_feed_gives_the_reference_tensors_bit_for_bit(val, tmp_path, size, store):
    feed = ImageFeed(val, size, CPU, workers=2, cache_dir=tmp_path, **(STORE if store else {}))
    indices = [0, 5, val.num_database + 3, 7]
    images = next(feed.batches([indices]))
    assert (feed.store() is not None) == store
    assert torch.equal(images, reference_images([val.all_paths[i] for i in indices], size))


def test_fp32_descriptors_are_the_reference_pipelines(val, tmp_path):
    model = build_model("alexnet", "netvlad", 8, "none").eval()
    feed = ImageFeed(val, (64, 80), CPU, workers=2, cache_dir=tmp_path, **STORE)
    ours = extract_descriptors(model, feed, range(len(val.all_paths)), batch_size=10)
    with torch.no_grad():
        reference = np.concatenate([
            model(reference_images([val.all_paths[i] for i in group], (64, 80))).numpy()
            for group in chunks(range(len(val.all_paths)), 10)])
    assert np.array_equal(ours, reference)


def test_bf16_recalls_are_within_one_query_of_fp32(val):
    model = build_model("vgg16", "netvlad", 8, "none").eval()
    feed = ImageFeed(val, (64, 80), CPU)
    fp32 = evaluate(model, feed, batch_size=24, precision="fp32")
    bf16 = evaluate(model, feed, batch_size=24, precision="bf16")
    assert bf16.precision == "bf16" and fp32.to_dict()["precision"] == "fp32"
    for n in fp32.recalls:
        assert abs(bf16.recalls[n] - fp32.recalls[n]) * val.num_queries <= 1 + 1e-9
    # bf16 really ran: the descriptors differ, if only a little
    assert not np.array_equal(fp32.distances, bf16.distances)


def test_threads_keep_the_order(val):
    groups = chunks(range(len(val.all_paths)), 7)[::-1]
    alone = [b for b in ImageFeed(val, (64, 80), CPU, workers=0).batches(groups)]
    threaded = [b for b in ImageFeed(val, (64, 80), CPU, workers=3).batches(groups)]
    assert all(torch.equal(a, b) for a, b in zip(alone, threaded)) and len(alone) == len(groups)


# ---- the decoded store ------------------------------------------------------------------
def build(split, size, cache, calls: list, budget=10**9):
    def decode_all(out):
        calls.append(len(out))
        out[:] = np.arange(len(out), dtype=np.uint8)[:, None, None, None]

    return ImageStore.open_or_build(split, size, cache, budget, decode_all)


def test_the_store_is_built_once_then_reused(val, tmp_path):
    calls = []
    first = build(val, (64, 80), tmp_path, calls)
    second = build(val, (64, 80), tmp_path, calls)
    assert calls == [len(val.all_paths)] and first.path == second.path
    assert second.read([3, 1])[:, 0, 0, 0].tolist() == [3, 1]
    assert second.array.shape == (len(val.all_paths), 64, 80, 3)
    meta = json.loads(second.path.with_suffix(".json").read_text())
    assert meta["count"] == len(val.all_paths) and meta["size"] == [64, 80]


def test_a_damaged_store_is_rebuilt(val, tmp_path):
    calls = []
    store = build(val, (64, 80), tmp_path, calls)
    with open(store.path, "r+b") as handle:
        handle.truncate(store.path.stat().st_size // 2)
    assert build(val, (64, 80), tmp_path, calls) is not None and len(calls) == 2
    meta = json.loads(store.path.with_suffix(".json").read_text())
    store.path.with_suffix(".json").write_text(json.dumps(dict(meta, count=1)))
    assert build(val, (64, 80), tmp_path, calls) is not None and len(calls) == 3


def test_a_changed_dataset_gets_a_new_store_and_the_old_one_goes(synth_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    calls = []
    old = build(open_split(root, "val"), (64, 80), tmp_path / "cache", calls)
    victim = Path(open_split(root, "val").database_paths[0])
    victim.write_bytes(victim.read_bytes() + b"\0")  # another size, another mtime
    new = build(open_split(root, "val"), (64, 80), tmp_path / "cache", calls)
    assert len(calls) == 2 and new.path != old.path
    assert not old.path.exists() and new.path.exists()


def test_the_store_is_off_when_the_budget_is_too_small(val, tmp_path):
    calls = []
    assert build(val, (64, 80), tmp_path / "cache", calls, budget=1000) is None
    assert calls == [] and not (tmp_path / "cache").exists()
    feed = ImageFeed(val, (64, 80), CPU, cache_dir=tmp_path / "cache", store_budget=1000)
    assert feed.store() is None and next(feed.batches([[0]])).shape == (1, 3, 64, 80)


def test_two_processes_build_the_store_once(synth_root, tmp_path):
    log = tmp_path / "builds.log"
    script = f"""
import sys, time
import numpy as np
from vpr_core.data import open_split
from vpr_core.data.image_store import ImageStore
def decode_all(out):
    open({str(log)!r}, "a").write("built\\n")
    time.sleep(1.0)
    out[:] = 7
store = ImageStore.open_or_build(open_split({str(synth_root)!r}, "val"), (64, 80),
                                 {str(tmp_path / 'cache')!r}, 10**9, decode_all)
print(int(store.read([0, 5]).sum()))
"""
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    workers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True, env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0].strip() for w in workers]
    assert log.read_text() == "built\n"
    assert outputs == [str(7 * 2 * 64 * 80 * 3)] * 2


def test_an_unreadable_image_stops_the_store_and_leaves_nothing(synth_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    victim = Path(open_split(root, "val").query_paths[2])
    victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])  # header intact
    feed = ImageFeed(open_split(root, "val"), (64, 80), CPU, workers=2,
                     cache_dir=tmp_path / "cache", **STORE)
    with pytest.raises(UserError, match=victim.name):
        next(feed.batches([[0]]))
    assert not (tmp_path / "cache").exists()


# ---- encoded bytes (the GPU path's plumbing, decoded here by torchvision on the CPU) --------
def test_encoded_path_matches_pil_within_rounding_and_takes_other_formats(val, tmp_path):
    png = tmp_path / "frame.png"
    Image.open(val.query_paths[0]).save(png)
    split = val.__class__(**{**val.__dict__, "query_paths": (str(png),) + val.query_paths[1:]})
    indices = [0, 1, split.num_database, split.num_database + 1]  # the first query is a PNG
    for size in ((64, 80), (48, 56)):
        encoded = next(ImageFeed(split, size, CPU, gpu_decode=True, workers=2).batches([indices]))
        decoded = next(ImageFeed(split, size, CPU).batches([indices]))
        scale = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
        difference = ((encoded - decoded) * scale).abs()
        assert torch.equal(encoded[2], decoded[2])  # the PNG: decoded on the CPU, as PIL
        assert difference.mean() < 3.0 and difference.max() < 80, difference.max()


def test_encoded_path_names_a_damaged_jpeg(val, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8" + bytes(range(256)) * 4)
    paths = (str(bad),) + val.database_paths[1:]
    split = val.__class__(**{**val.__dict__, "database_paths": paths})
    with pytest.raises(UserError, match="bad.jpg"):
        next(ImageFeed(split, (64, 80), CPU, gpu_decode=True).batches([[1, 0]]))


# How torchvision 0.29's decode_jpeg words its RuntimeErrors on CUDA (decode_jpegs_cuda.cpp wraps
# each failure so); source paths shortened, line numbers made up
NVJPEG = "decode_jpegs_cuda, decode_jpegs_cuda.cpp:137, Error while decoding JPEG images: "
OUT_OF_MEMORY = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has 79.19 GiB in all"


def failing_decoder(error: Exception):
    def decode(encoded: list) -> list:
        raise error
    return decode


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError(OUT_OF_MEMORY),
    RuntimeError(f"{NVJPEG}{OUT_OF_MEMORY} (originally from torch_call_dispatcher)"),
    RuntimeError(f"{NVJPEG}Failed to decode batch: 5"),  # NVJPEG_STATUS_ALLOCATOR_FAILURE
    RuntimeError(f"{NVJPEG}Failed to synchronize CUDA stream: 700"),  # an illegal address
], ids=["out-of-memory", "out-of-memory-in-nvjpeg", "nvjpeg-allocator", "cuda-fault"])
def test_a_device_that_fails_is_not_a_refused_file(val, monkeypatch, error):
    """Decoding on the CPU instead would hide the device's trouble behind one warning."""
    feed = ImageFeed(val, (64, 80), CPU, gpu_decode=True)
    monkeypatch.setattr(feed, "_decode_jpegs", failing_decoder(error))
    with pytest.raises(type(error)) as caught:
        next(feed.batches([[0, 1]]))
    assert caught.value is error


@pytest.mark.parametrize("refusal", [
    f"{NVJPEG}prepare_buffers, decode_jpegs_cuda.cpp:298, Unknown chroma subsampling",  # CMYK
    f"{NVJPEG}prepare_buffers, decode_jpegs_cuda.cpp:295, Failed to get image info: 3",
    f"{NVJPEG}decode_images, decode_jpegs_cuda.cpp:489, Failed to decode jpeg stream: 4",
    "decode_jpeg, decode_jpeg.cpp:171, Image is incomplete or truncated",  # libjpeg, on the CPU
])
def test_a_jpeg_the_decoder_refuses_is_decoded_on_the_cpu_with_one_warning(val, monkeypatch,
                                                                            capsys, refusal):
    feed = ImageFeed(val, (64, 80), CPU, gpu_decode=True)
    monkeypatch.setattr(feed, "_decode_jpegs", failing_decoder(RuntimeError(refusal)))
    groups = [[0, 1], [val.num_database, 2]]
    decoded = list(feed.batches(groups))
    assert all(torch.equal(a, b) for a, b in zip(decoded, ImageFeed(val, (64, 80), CPU)
                                                  .batches(groups)))  # PIL's pixels exactly
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: JPEG decoding on cpu failed")


def test_gpu_decoding_needs_a_gpu():
    assert decodes_on_gpu("auto", CPU) is False and decodes_on_gpu("cpu", CPU) is False
    with pytest.raises(UserError, match="--decode gpu needs a CUDA device"):
        decodes_on_gpu("gpu", CPU)
    with pytest.raises(UserError, match="--decode"):
        decodes_on_gpu("nvjpeg", CPU)
