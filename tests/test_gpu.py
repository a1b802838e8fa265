"""The CUDA paths: nvJPEG decoding, the torch ranker, bf16 training. Skipped without a GPU.

Run on a GPU machine with `python -m pytest tests/test_gpu.py` (benchmarks/device_check.sh
does, before it measures anything).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_core.config import TrainConfig
from vpr_core.data import open_split
from vpr_core.data.image_feed import ImageFeed, chunks
from vpr_core.errors import UserError
from vpr_core.models.backbones import save_fresh_weights
from vpr_core.stages.train import training_run
from vpr_core.training.mining import FaissRanker, MiningIndex, TorchRanker

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def pixels(feed: ImageFeed, indices) -> np.ndarray:
    """The feed's images back on the 0-255 scale, [G, 3, H, W] float64."""
    images = next(feed.batches([indices]))
    return (images * feed.std + feed.mean).mul(255).double().cpu().numpy()


def test_gpu_decode_equals_cpu_decode_up_to_the_decoders_differences(synth_root):
    """nvJPEG and libjpeg-turbo (PIL) differ where colour changes sharply: nvJPEG repeats the
    half-resolution chroma samples, libjpeg-turbo interpolates them. On these small synthetic
    images, all sharp edges, an H200 gave a mean difference of 4.0 levels (of 255), a 99th
    percentile of 32 and a maximum of 89; a wrong channel order or scale gives tens."""
    split = open_split(synth_root, "val")
    indices = list(range(0, len(split.all_paths), 3))
    on_cpu = pixels(ImageFeed(split, (64, 80), CUDA, gpu_decode=False), indices)
    on_gpu = pixels(ImageFeed(split, (64, 80), CUDA, gpu_decode=True), indices)
    difference = np.abs(on_gpu - on_cpu)
    assert difference.mean() < 6.0 and np.percentile(difference, 99) <= 48, \
        (difference.mean(), np.percentile(difference, 99), difference.max())
    # the luma (brightness), which nvJPEG does not subsample, agrees far more closely
    luma = np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    assert np.abs(((on_gpu - on_cpu) * luma).sum(axis=1)).mean() < difference.mean()


def test_gpu_decoding_keeps_up_with_a_busy_stream(synth_root):
    """Batches decoded ahead on loader threads stay intact while the compute stream lags far
    behind: nvJPEG's output memory must not be memory the compute stream still reads."""
    split = open_split(synth_root, "val")
    groups = chunks(range(len(split.all_paths)), 4) * 4
    a, b = torch.randn(2, 2048, 2048, device=CUDA)
    seen = []
    for images in ImageFeed(split, (64, 80), CUDA, gpu_decode=True, workers=3).batches(groups):
        for _ in range(30):
            a @ b  # queue work, so the stream is far behind the loaders
        seen.append(images.clone())
    calm = ImageFeed(split, (64, 80), CUDA, gpu_decode=True)
    for group, images in zip(groups, seen):
        torch.cuda.synchronize()
        assert torch.equal(images, next(calm.batches([group])))


def test_extraction_on_cuda_lands_every_row_in_place(synth_root):
    from vpr_core.evaluation.extraction import extract_descriptors
    from vpr_core.models.place_model import build_model
    from vpr_core.runtime import prepare_model

    split = open_split(synth_root, "val")
    model = prepare_model(build_model("alexnet", "netvlad", 4, "none"), CUDA).eval()
    feed = ImageFeed(split, (64, 80), CUDA, gpu_decode=True, workers=2)
    order = np.random.default_rng(0).permutation(len(split.all_paths))
    ours = extract_descriptors(model, feed, order, batch_size=5, dtype=np.float16)
    with torch.no_grad():
        direct = torch.cat([model(images) for images in feed.batches(chunks(order, 5))])
    np.testing.assert_allclose(ours.astype(np.float32), direct.cpu().numpy(), atol=2e-3)


def test_gpu_decode_resizes_like_pil(synth_root):
    split = open_split(synth_root, "val")
    indices = list(range(0, len(split.all_paths), 3))
    on_cpu = pixels(ImageFeed(split, (48, 60), CUDA, gpu_decode=False), indices)
    on_gpu = pixels(ImageFeed(split, (48, 60), CUDA, gpu_decode=True), indices)
    difference = np.abs(on_gpu - on_cpu)
    assert difference.mean() < 3.0, (difference.mean(), difference.max())


def test_a_jpeg_nvjpeg_refuses_goes_to_the_cpu_decoder_which_names_it(synth_root, tmp_path):
    """nvJPEG's refusal of a damaged file is one the feed recognises (image_feed's
    DECODER_REFUSALS): PIL then names the file, instead of nvJPEG's RuntimeError escaping."""
    split = open_split(synth_root, "val")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8" + bytes(range(256)) * 4)
    split = split.__class__(**{**split.__dict__,
                               "database_paths": (str(bad),) + split.database_paths[1:]})
    with pytest.raises(UserError, match="bad.jpg"):
        next(ImageFeed(split, (64, 80), CUDA, gpu_decode=True).batches([[1, 0]]))


def test_store_on_cuda_equals_decoding_on_cuda(synth_root, tmp_path):
    split = open_split(synth_root, "val")
    indices = list(range(len(split.all_paths)))
    stored = ImageFeed(split, (64, 80), CUDA, store_budget=10**9, cache_dir=tmp_path)
    assert stored.store() is not None
    decoded = ImageFeed(split, (64, 80), CUDA)
    assert torch.equal(next(stored.batches([indices])), next(decoded.batches([indices])))


def assert_same_ranking(distances_a, order_a, distances_b, order_b, tolerance=1e-4):
    """The same full ranking, up to float rounding: the same distances, and each order sorts
    the other's distances (ties and near-ties may come in either order)."""
    assert distances_a.shape == distances_b.shape
    np.testing.assert_allclose(distances_a, distances_b, rtol=1e-5, atol=tolerance)
    for row in range(len(order_a)):
        assert set(order_a[row]) == set(order_b[row])
        by_b = np.empty(order_b.shape[1])
        by_b[order_b[row]] = distances_b[row]
        assert np.all(np.diff(by_b[order_a[row]]) >= -tolerance)


def test_torch_ranker_on_cuda_ranks_as_faiss():
    rng = np.random.default_rng(0)
    database = rng.normal(size=(3000, 512)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    database[100:110] = database[5]  # exact ties
    queries = database[:64] + 0.05 * rng.normal(size=(64, 512)).astype(np.float32)
    for dtype in (np.float32, np.float16):  # float16: the caches' storage
        faiss_d, faiss_i = FaissRanker(database.astype(dtype)).rank(queries.astype(dtype))
        torch_d, torch_i = TorchRanker(database.astype(dtype), "cuda").rank(
            queries.astype(dtype))
        assert_same_ranking(torch_d, torch_i, faiss_d, faiss_i)


def test_mining_on_cuda_gives_the_cpu_triplets(synth_root):
    from vpr_core.training.mining import CandidateSampler, DescriptorCache

    rng = np.random.default_rng(1)
    split = open_split(synth_root, "train")
    along = np.arange(split.num_database, dtype=np.float32)
    database = np.stack([np.cos(along / 5 + k) for k in range(256)], axis=1)
    database += 0.01 * rng.normal(size=database.shape).astype(np.float32)
    queries = database[:split.num_queries] + 0.01 * rng.normal(
        size=(split.num_queries, 256)).astype(np.float32)
    cache = DescriptorCache(database, queries, np.arange(split.num_queries))
    sampler = CandidateSampler(split.train_positives(), split.potential_negatives(), 100)
    request = sampler.request(np.arange(split.num_queries), rng, 0.1, 10)
    on_cpu = MiningIndex(cache, "cpu").mine(request)
    on_gpu = MiningIndex(cache, "cuda").mine(request)
    assert [t and (t.positive, t.negatives.tolist()) for t in on_cpu] == \
        [t and (t.positive, t.negatives.tolist()) for t in on_gpu]


def test_bf16_training_on_cuda_lowers_the_loss(synth_root, tmp_path):
    config = TrainConfig(data_root=synth_root, arch="alexnet", num_clusters=8, weights="none",
                         cache_dir=Path(tmp_path) / "cache", run_dir=Path(tmp_path) / "run",
                         epochs=4, device="cuda", workers=2, show_progress=False, lr=1e-3)
    run = training_run(config)
    assert run.config.precision == "bf16" and run.data.train_feed.gpu_decode
    results = list(run.epochs())
    assert all(np.isfinite(r.loss) and r.triplets > 0 for r in results)
    assert results[-1].loss < results[0].loss, [r.loss for r in results]
    # the first epoch also checks for frozen layers (none here: every layer trains)
    stages = {"cache_refresh", "mining", "training_steps", "validation"}
    assert set(results[0].stage_seconds) == stages | {"frozen_features"}
    assert all(set(r.stage_seconds) == stages for r in results[1:])
    assert run.frozen_splits == ()


def test_frozen_features_on_cuda_train_as_the_whole_encoder_does(synth_root, tmp_path):
    """The same training with the frozen layers' output kept (bf16, channels-last rows on the
    GPU) and recomputed every step. Only bf16 rounding may differ: cuDNN picks its algorithms
    per batch shape, and the kept output is computed in other batches than the steps'.

    The bounds come from the CPU, where bf16 makes the two runs bit-identical, by rounding
    the kept output again: moving each stored value by one bf16 step (1/128 relative) in either
    direction moved the loss by at most 0.45% over 2 epochs, no recall, and every trained
    tensor by at most 4% of the distance training moved it. Rows read back transposed (a
    layout bug) moved the loss by 3.4-4.5%, Recall@1 by 3 queries and conv5 by 115%."""
    torch.manual_seed(0)
    weights = save_fresh_weights("alexnet", Path(tmp_path) / "alexnet.pth")
    runs, initial = {}, {}
    for name, budget in (("kept", None), ("off", 0.0)):
        config = TrainConfig(data_root=synth_root, arch="alexnet", num_clusters=8,
                             weights=str(weights), cache_dir=Path(tmp_path) / "cache",
                             run_dir=Path(tmp_path) / name, epochs=2, device="cuda",
                             workers=2, show_progress=False, lr=1e-2, frozen_cache_gb=budget)
        runs[name] = training_run(config)
        initial[name] = {k: v.clone() for k, v in runs[name].model.state_dict().items()}
        runs[name].results = list(runs[name].epochs())
    kept, off = runs["kept"], runs["off"]
    assert kept.frozen_splits == ("train", "val") and off.frozen_splits == ()
    storage = kept.train_input.source.storage
    assert storage.is_cuda and storage.dtype == torch.bfloat16  # what bf16 autocast gives
    assert kept.train_input.source.channels_last
    # both start from the same weights and centroids (the second run reads the first's file)
    assert all(torch.equal(initial["kept"][k], initial["off"][k]) for k in initial["off"])
    one_query = 1 / kept.data.val_split.num_queries
    for a, b in zip(kept.results, off.results, strict=True):
        assert a.triplets == b.triplets and a.batches == b.batches > 0
        assert a.loss == pytest.approx(b.loss, rel=0.02), (a.loss, b.loss)
        assert a.recalls.keys() == b.recalls.keys()
        assert all(abs(a.recalls[n] - b.recalls[n]) <= one_query + 1e-9 for n in a.recalls), \
            (a.recalls, b.recalls)
    trained, recomputed = kept.model.state_dict(), off.model.state_dict()
    for name, parameter in off.model.named_parameters():
        if not parameter.requires_grad:  # the frozen layers stay as loaded
            assert torch.equal(trained[name], recomputed[name]), name
            continue
        moved = (recomputed[name] - initial["off"][name]).float().norm()
        apart = (trained[name] - recomputed[name]).float().norm()
        assert moved > 0 and apart <= 0.25 * moved, (name, float(apart), float(moved))
