"""`compress`: PCA-whitening, half precision and product quantisation end to end, the
checkpoint each writes read back by `eval` and `compress`, the MLflow study and its report.
(Pruning and int8 have test files of their own.)"""
import json

import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run_main, tree
from mlflow import MlflowClient
from mlflow_helpers import store_uri
from test_dataset_inputs import dataset_inputs

from vpr_core.compression.pca import fit
from vpr_core.models.checkpoints import checkpoint_file
from vpr_core.stages.starting_model import model_from_checkpoint

FAST = ["--quiet", "--workers", 0, "--latency-batches", 1, 4]


def compress(trained, tmp_path, capsys, monkeypatch, *flags, name="variant"):
    done = run_main(["compress", "--resume", trained, "--run-dir", tmp_path / name,
                     "--json", tmp_path / f"{name}.json", *FAST, *flags],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / f"{name}.json").read_text())


def evaluate(run_dir, synth_root, tmp_path, capsys, monkeypatch) -> dict:
    done = run_main(["eval", "--resume", run_dir, "--data-root", synth_root, "--split", "val",
                     "--json", tmp_path / "eval.json", "--quiet", "--workers", 0],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "eval.json").read_text())


def recalls(figures: dict) -> list:
    return [figures[f"recall@{n}"] for n in (1, 5, 10, 20)]


def test_pca_without_whitening_at_full_rank_keeps_the_neighbours():
    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(300, 32)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    mean, projection = fit(descriptors, 32, whiten=False)
    projected = (descriptors - mean) @ projection.T
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)

    def neighbours(x):
        distances = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.argsort(distances, axis=1, kind="stable")[:, 1:6]

    assert np.array_equal(neighbours(projected), neighbours(descriptors))
    whitened_mean, whitened = fit(descriptors, 8, whiten=True)
    scores = (descriptors - whitened_mean) @ whitened.T
    np.testing.assert_allclose(scores.var(axis=0, ddof=1), 1.0, rtol=1e-3)  # unit variance


def test_pca_whitening_centres_and_whitens_as_numpy_does():
    """On descriptors far from zero-mean (as NetVLAD's are), the whitened training descriptors
    have mean 0 and identity covariance, and the layer `apply` appends gives what an SVD of the
    centred descriptors gives (compared as inner products: each direction's sign is free)."""
    from types import SimpleNamespace

    from torch import nn

    from vpr_core.compression import pca

    rng = np.random.default_rng(1)
    spread = np.linspace(3.0, 0.2, 32)  # distinct variances: well-defined directions
    descriptors = rng.normal(size=(300, 32)) * spread + rng.normal(size=32) * 4
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    descriptors = descriptors.astype(np.float32)
    mean, projection = fit(descriptors, 8, whiten=True)
    whitened = (descriptors - mean) @ projection.T
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(8), atol=1e-3)

    model = SimpleNamespace(pool=nn.Identity())  # what apply touches: the pool's device
    context = SimpleNamespace(training_descriptors=lambda model, desc: descriptors)
    model, _ = pca.apply(model, {"dim": 8, "whiten": True}, context)
    with torch.no_grad():
        found = model.whiten(torch.from_numpy(descriptors)).numpy()
    centred = descriptors.astype(np.float64) - descriptors.mean(axis=0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ directions[:8].T / (singular[:8] / np.sqrt(len(centred) - 1))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(found @ found.T, expected @ expected.T, atol=1e-4)


def test_pca_whitening_end_to_end_and_read_back(trained, synth_root, tmp_path, capsys,
                                                monkeypatch):
    result = compress(trained, tmp_path, capsys, monkeypatch, "--method", "pca-whiten",
                      "--dim", 16)
    variant = result["variant"]
    assert variant["descriptor_bytes"] == 16 * 4 and result["original"]["descriptor_bytes"] \
        == 1024 * 4
    model, checkpoint, _, _ = model_from_checkpoint(checkpoint_file(tmp_path / "variant"))
    assert model.output_dim == 16 and checkpoint["compression"]["settings"] == \
        {"dim": 16, "whiten": True}
    flags = json.loads((tmp_path / "variant" / "checkpoints" / "flags.json").read_text())
    assert flags["method"] == "pca-whiten" and flags["settings"]["dim"] == 16
    assert recalls(evaluate(tmp_path / "variant", synth_root, tmp_path, capsys,
                            monkeypatch)) == recalls(variant)


def test_half_halves_the_encoder_and_reads_back(trained, synth_root, tmp_path, capsys,
                                                monkeypatch):
    result = compress(trained, tmp_path, capsys, monkeypatch, "--method", "half")
    original, variant = result["original"], result["variant"]
    assert variant["settings"] == {"dtype": "bf16"}
    assert variant["size_mb"] < 0.6 * original["size_mb"]  # the encoder is most of it
    model, _, _, _ = model_from_checkpoint(checkpoint_file(tmp_path / "variant"))
    assert next(model.encoder.parameters()).dtype == torch.bfloat16
    assert model.pool.centroids.dtype == torch.float32
    assert abs(variant["recall@5"] - original["recall@5"]) <= 2 / 24 + 1e-9
    assert recalls(evaluate(tmp_path / "variant", synth_root, tmp_path, capsys,
                            monkeypatch)) == recalls(variant)


@pytest.mark.parametrize("flags", [
    ["--method", "prune", "--amount", 0.5, "--structure", "channels"],
    ["--method", "quantize", "--mode", "ptq-int8"],
], ids=["prune-channels", "ptq-int8"])
def test_pruned_and_int8_variants_read_back_through_eval(trained, synth_root, tmp_path, capsys,
                                                         monkeypatch, flags):
    """`eval --resume VARIANT` rebuilds the variant from its checkpoint (narrower convs, int8
    modules) and finds the recalls compress measured on the model it had made."""
    variant = compress(trained, tmp_path, capsys, monkeypatch, *flags)["variant"]
    read_back = evaluate(tmp_path / "variant", synth_root, tmp_path, capsys, monkeypatch)
    assert recalls(read_back) == recalls(variant)


def test_product_quantisation_searches_the_codes(trained, synth_root, tmp_path, capsys,
                                                 monkeypatch):
    result = compress(trained, tmp_path, capsys, monkeypatch, "--method", "pq",
                      "--pq-bytes", 16)
    variant = result["variant"]
    # 24 training images: 4-bit codes (16 centroids per sub-quantiser), 16 of them = 8 bytes
    assert variant["descriptor_bytes"] == 8 and variant["settings"] == {"pq_bytes": 16}
    read_back = evaluate(tmp_path / "variant", synth_root, tmp_path, capsys, monkeypatch)
    assert recalls(read_back) == recalls(variant)
    # compress reads a compressed checkpoint too: PCA, then PQ of the PCA descriptors
    compress(trained, tmp_path, capsys, monkeypatch, "--method", "pca-whiten", "--dim", 16,
             name="pca")
    chained = compress(tmp_path / "pca", tmp_path, capsys, monkeypatch, "--method", "pq",
                       "--pq-bytes", 4, name="chained")
    _, checkpoint, _, _ = model_from_checkpoint(checkpoint_file(tmp_path / "chained"))
    assert [checkpoint["compression"]["previous"]["method"], chained["variant"]["method"]] == \
        ["pca-whiten", "pq"]
    assert chained["original"]["descriptor_bytes"] == 16 * 4  # its original: the PCA variant
    assert recalls(evaluate(tmp_path / "chained", synth_root, tmp_path, capsys,
                            monkeypatch)) == recalls(chained["variant"])
    # a PQ variant is final: its codes fit its model as it is
    done = run_main(["compress", "--resume", tmp_path / "variant", "--method", "half",
                     "--run-dir", tmp_path / "after_pq", *FAST], capsys, monkeypatch, tmp_path)
    assert_user_error(done, "apply pq last")


@pytest.mark.parametrize("flags, needles", [
    (["--method", "pca-whiten", "--dim", 5000], ["--dim 5000", "1024 dimensions"]),
    (["--method", "pca-whiten", "--dim", 40], ["--dim 40", "24 training descriptors"]),
    (["--method", "pq", "--pq-bytes", 7], ["--pq-bytes 7", "divide"]),
    (["--method", "half", "--amount", 0.3], ["--amount does not apply to --method half"]),
    (["--method", "pca-whiten", "--dim", 8, "--finetune-epochs", 1], ["--finetune-epochs"]),
    (["--method", "quantize", "--mode", "qat-int8"], ["--mode qat-int8 needs --finetune-epochs"]),
    (["--method", "prune", "--amount", 0.3, "--no-refit"],
     ["--no-refit applies to --structure channels"]),
])
def test_bad_compression_settings_are_one_line_and_write_nothing(trained, tmp_path, capsys,
                                                                 monkeypatch, flags, needles):
    done = run_main(["compress", "--resume", trained, "--run-dir", tmp_path / "variant",
                     *FAST, *flags], capsys, monkeypatch, tmp_path)
    assert_user_error(done, *needles)
    assert tree(tmp_path) == []


def test_the_mlflow_study_and_its_report(trained, tmp_path, capsys, monkeypatch):
    uri = store_uri(tmp_path / "mlflow.db")
    for name, flags in (("pca", ["--method", "pca-whiten", "--dim", 16]),
                        ("pq", ["--method", "pq", "--pq-bytes", 16])):
        compress(trained, tmp_path, capsys, monkeypatch, *flags, "--tracking-uri", uri,
                 "--study", "s1", name=name)
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("kind") == "compression-study"]
    children = [r for r in runs if r.data.tags.get("kind") == "compression-variant"]
    assert len(parents) == 1 and parents[0].data.tags["study"] == "s1"
    assert sorted(r.data.tags["variant"] for r in children) == \
        ["original", "pca-whiten 16", "pq 16 B"]
    expected = {"recall_at_1", "recall_at_5", "recall_at_10", "recall_at_20", "size_mb",
                "descriptor_bytes", "zero_share", "latency_cpu_b1_ms", "latency_cpu_b4_ms"}
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert expected <= set(run.data.metrics), run.data.tags["variant"]
        assert run.info.status == "FINISHED"
        assert dataset_inputs(run) == {("synth-val", "evaluation")}  # what both measured
    from dashboards.cli import main as dashboards_main

    done = run_main(["compress-report", "--tracking-uri", uri, "--study", "s1", "--out",
                     tmp_path / "study.png"], capsys, monkeypatch, tmp_path,
                    main=dashboards_main)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "study.png").stat().st_size > 10_000
    assert "original" in done.stdout and "pq 16 B" in done.stdout


def test_a_compression_study_runs_as_a_sweep(ray_session, trained, synth_root, tmp_path,
                                             capsys, monkeypatch):
    """Variants as Tune trials (two PCA dimensions and half precision), one MLflow study."""
    import yaml

    uri = store_uri(tmp_path / "mlflow.db")
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "study", "data": {"root": str(synth_root)},
        "compress": {"checkpoint": str(trained), "latency_batches": [1],
                     "variants": [{"method": "pca-whiten", "dim": [8, 16]},
                                  {"method": "half"}]},
        "resources": {"cpus_per_trial": 1},
        "tracking": {"uri": uri, "experiment": "compress"}}))
    done = run_main(["sweep", "--config", spec, "--storage", tmp_path / "ray_results",
                     "--json", tmp_path / "study.json", "--quiet"], capsys, monkeypatch,
                    tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "study.json").read_text())
    assert sorted(v["variant"]["label"] for v in summary["variants"]) == \
        ["half bf16", "pca-whiten 16", "pca-whiten 8"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("compress")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("kind") == "compression-variant"]
    assert sorted(r.data.tags["variant"] for r in children) == \
        ["half bf16", "original", "pca-whiten 16", "pca-whiten 8"]
    assert len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1


def test_finetuning_keeps_its_best_validated_epoch(trained, synth_root, tmp_path, capsys,
                                                   monkeypatch):
    result = compress(trained, tmp_path, capsys, monkeypatch, "--data-root", synth_root,
                      "--split", "val", "--method", "prune", "--amount", 0.5, "--structure",
                      "channels", "--finetune-epochs", 2, "--finetune-lr", 0.05)
    history = result["finetune"]
    assert [entry["epoch"] for entry in history] == [0, 1, 2]  # 0: before fine-tuning
    assert [entry["kept"] for entry in history].count(True) == 1
    best = max(entry["recall@5"] for entry in history)
    kept = next(entry for entry in history if entry["kept"])
    assert kept == next(entry for entry in history if entry["recall@5"] == best)
    # the variant measured on val (and saved) is the kept epoch's model
    assert recalls(result["variant"]) == recalls(kept)


@pytest.mark.parametrize("section, needles", [
    ({"latency_batches": 32}, ["latency_batches", "32"]),
    ({"variants": [{"method": "prune", "amount": []}]}, ["lists no value for amount"]),
    ({"splt": "test"}, ["compress: unknown key(s) splt"]),
    ({"checkpoint": "/nonexistent/run"}, ["/nonexistent/run does not exist"]),
])
def test_a_bad_compression_spec_is_one_line_before_ray_starts(trained, synth_root, tmp_path,
                                                              capsys, monkeypatch, section,
                                                              needles):
    import yaml

    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "study", "data": {"root": str(synth_root)},
        "compress": {"checkpoint": str(trained), "variants": [{"method": "half"}], **section}}))
    done = run_main(["sweep", "--config", spec, "--storage", tmp_path / "ray_results"],
                    capsys, monkeypatch, tmp_path)
    assert_user_error(done, *needles)
    assert tree(tmp_path) == ["study.yaml"]  # no Ray results, no MLflow store
