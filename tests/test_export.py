"""`export`: ONNX files of the model families run in onnxruntime within the tolerance, at
another batch size than the export's; a TorchScript file; `eval` of an .onnx gives the
checkpoint's recalls; compressed variants (fp16, int8, PQ) as built; bad inputs are one line."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import onnx
import pytest
import torch
from cli_helpers import assert_user_error, run_main, tree

from vpr_core.compression import half, quantize
from vpr_core.compression.variants import compressed_checkpoint
from vpr_core.export.check import generated_pixels
from vpr_core.export.graph import DescriptorGraph
from vpr_core.export.metadata import ExportMetadata
from vpr_core.export.onnx_file import write_onnx
from vpr_core.models.checkpoints import save_checkpoint
from vpr_core.models.dinov2 import DinoV2, ViTConfig
from vpr_core.models.onnx_model import OnnxModel
from vpr_core.models.place_model import PlaceModel, build_model
from vpr_core.models.salad import SALAD
from vpr_core.models.shape import ModelShape

SIZE = "64x80"  # conftest's synthetic images


def saved(folder, arch: str, aggregator: str, **settings):
    """A checkpoint of a randomly initialised `arch` + `aggregator` (this project's format)."""
    torch.manual_seed(0)
    model = build_model(arch, aggregator, weights="none", **settings)
    return save_checkpoint(folder / f"{arch}_{aggregator}.pth.tar",
                           {"epoch": 0, "state_dict": model.state_dict(),
                            "model": model.shape.record()})


def export(capsys, monkeypatch, tmp_path, *flags, name: str = "result"):
    """`export FLAGS --json`: (exit status, stderr, the --json result or None)."""
    out = tmp_path / f"{name}.json"
    done = run_main(["export", *flags, "--json", out], capsys, monkeypatch, tmp_path)
    return done, json.loads(out.read_text()) if out.exists() else None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    return {"folder": folder, "alexnet": saved(folder, "alexnet", "netvlad", num_clusters=4),
            "vgg16": saved(folder, "vgg16", "netvlad", num_clusters=4),
            "resnet18": saved(folder, "resnet18", "gem")}


@pytest.fixture(scope="module")
def alexnet_onnx(models, synth_root) -> tuple:
    """AlexNet + NetVLAD exported by the stage, checked on the synthetic dataset's images:
    (the file, the --json result)."""
    from vpr_core.config import ExportConfig
    from vpr_core.stages import export as export_stage

    out = models["folder"] / "alexnet.onnx"
    done = export_stage.run(ExportConfig(resume=models["alexnet"], out=out,
                                         data_root=synth_root))
    return out, done.to_dict()


def check_netvlad_file(out, result: dict, arch: str, checkpoint) -> None:
    """Within 1e-4 of PyTorch on 3 images (traced with 2), its metadata, and at another
    batch size and image size than the export's."""
    from vpr_core.stages.starting_model import model_from_checkpoint

    assert result["max_abs_difference"] <= result["tolerance"] == 1e-4
    assert result["check_batch"] == 3 and result["dynamic_axes"] == "batch,height,width"
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (props["arch"], props["aggregator"], props["descriptor_dim"], props["image_size"],
            props["precision"]) == (arch, "netvlad", str(4 * (256 if arch == "alexnet" else 512)),
                                    SIZE, "fp32")
    graph = DescriptorGraph(model_from_checkpoint(checkpoint).model.eval())
    images = generated_pixels(5, (96, 64), seed=3)
    with torch.no_grad():
        assert (OnnxModel(out)(images) - graph(images)).abs().max() < 1e-4


def test_alexnet_netvlad_onnx_checked_on_a_dataset(alexnet_onnx, models):
    out, result = alexnet_onnx
    assert result["checked_on"].startswith("images of")
    check_netvlad_file(out, result, "alexnet", models["alexnet"])


def test_vgg16_netvlad_onnx_checked_on_generated_images(models, tmp_path, capsys, monkeypatch):
    out = tmp_path / "vgg16.onnx"
    done, result = export(capsys, monkeypatch, tmp_path, "--resume", models["vgg16"], "--out",
                          out, "--image-size", SIZE)
    assert done.returncode == 0, done.stderr
    assert result["checked_on"] == "generated images"
    assert f"largest difference from PyTorch {result['max_abs_difference']:.2e}" in done.stdout
    check_netvlad_file(out, result, "vgg16", models["vgg16"])


def test_a_resnet18_gem_onnx_takes_any_batch_and_size(models, tmp_path, capsys, monkeypatch):
    from vpr_core.stages.starting_model import model_from_checkpoint

    out = tmp_path / "resnet18_gem.onnx"
    done, result = export(capsys, monkeypatch, tmp_path, "--resume", models["resnet18"],
                          "--out", out, "--image-size", SIZE)
    assert done.returncode == 0, done.stderr
    assert result["max_abs_difference"] <= 1e-4 and result["descriptor_dim"] == "512"
    assert result["dynamic_axes"] == "batch,height,width"
    graph = DescriptorGraph(model_from_checkpoint(models["resnet18"]).model.eval())
    images = generated_pixels(1, (96, 64), seed=4)
    with torch.no_grad():
        assert (OnnxModel(out)(images) - graph(images)).abs().max() < 1e-4


def test_a_dinov2_salad_graph_runs_in_onnxruntime(tmp_path):
    """A small DINOv2 (the family's code, 2 blocks) with SALAD: the class token and the
    optimal transport in the graph; the file at another batch size than the export's."""
    torch.manual_seed(0)
    vit = DinoV2(ViTConfig(embed_dim=64, depth=2, num_heads=2, image_size=56))
    model = PlaceModel(ModelShape.of("dinov2_vits14", "salad", {"num_clusters": 4}), vit,
                       SALAD(64, num_clusters=4, cluster_dim=8, token_dim=16)).eval()
    graph = DescriptorGraph(model).eval()
    meta = ExportMetadata("dinov2_vits14", "salad", "{}", 48, "56x56", "", "rgb", "test", "fp32")
    written = write_onnx(graph, generated_pixels(2, (56, 56)), tmp_path / "vit.onnx", 18, False,
                         meta)
    assert written.dynamic_axes == "batch"  # a ViT's file is fixed at its image size
    images = generated_pixels(3, (56, 56), seed=1)
    with torch.no_grad():
        found, expected = OnnxModel(tmp_path / "vit.onnx")(images), graph(images)
    assert found.shape == (3, 48) and (found - expected).abs().max() < 1e-4


def test_eval_of_the_onnx_gives_the_checkpoints_recalls(alexnet_onnx, models, synth_root,
                                                        tmp_path, capsys, monkeypatch):
    recalls = []
    for model in (models["alexnet"], alexnet_onnx[0]):  # the .onnx: its size from its metadata
        size = ["--image-size", SIZE] if model == models["alexnet"] else []
        done = run_main(["eval", "--resume", model, "--data-root", synth_root, "--quiet",
                         "--workers", 0, *size, "--json", tmp_path / "eval.json"],
                        capsys, monkeypatch, tmp_path)
        assert done.returncode == 0, done.stderr
        recalls.append(json.loads((tmp_path / "eval.json").read_text()))
    names = [f"recall@{n}" for n in (1, 5, 10, 20)]
    assert [recalls[1][n] for n in names] == [recalls[0][n] for n in names]
    assert 0 < recalls[0]["recall@20"]


def test_benchmark_takes_the_onnx_beside_its_checkpoint(alexnet_onnx, models, synth_root,
                                                        tmp_path):
    """The benchmark's checked plan (what it evaluates, before any MLflow run): the .onnx a
    row of format ONNX beside the checkpoint it came from."""
    from orchestrator.benchmark import prepare
    from orchestrator.benchmark_spec import BenchmarkSpec

    spec = BenchmarkSpec(models=(str(models["alexnet"]), str(alexnet_onnx[0])),
                         test_sets=(str(synth_root),), eval={"image_size": SIZE, "workers": 0})
    plan = prepare(spec, runs_store=None, scratch=tmp_path)
    assert [(m.label, m.family, m.architecture) for m in plan.models] == [
        ("alexnet_netvlad", "vpr-sweeps", "alexnet netvlad K=4"),
        ("alexnet (ONNX)", "ONNX", "alexnet netvlad K=4")]


def test_an_onnx_of_another_project_is_evaluated_at_the_size_given(alexnet_onnx, synth_root,
                                                                    tmp_path, capsys,
                                                                    monkeypatch):
    """A file without this project's metadata (one [N, 3, H, W] input, one [N, D] output)
    takes ImageNet-normalised images and needs --image-size."""
    model = onnx.load(str(alexnet_onnx[0]))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "theirs.onnx"))
    theirs = OnnxModel(tmp_path / "theirs.onnx")
    assert theirs.metadata is None and theirs.takes_normalised and theirs.image_size is None
    flags = ["eval", "--resume", tmp_path / "theirs.onnx", "--data-root", synth_root, "--quiet",
             "--workers", 0]
    assert_user_error(run_main(flags, capsys, monkeypatch, tmp_path),
                      "does not say the image size", "--image-size")
    done = run_main([*flags, "--image-size", SIZE], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0 and "Recall@5: " in done.stdout, done.stderr


def test_an_fp16_variant_within_its_tolerance_and_a_failed_check_leaves_nothing(
        tmp_path, capsys, monkeypatch):
    """A `half --dtype fp16` variant's file differs from PyTorch's fp16 model by more than
    1e-9 (so the check fails, exit 1, and leaves no file) but within fp16's 5e-3."""
    torch.manual_seed(0)
    model = build_model("alexnet", "netvlad", 4, weights="none")
    model, extra = half.apply(model, {"dtype": "fp16"}, None)
    path = save_checkpoint(tmp_path / "fp16.pth.tar", compressed_checkpoint(
        model, "half", {"dtype": "fp16"}, model.shape, extra))
    out = tmp_path / "files" / "fp16.onnx"
    done, _ = export(capsys, monkeypatch, tmp_path, "--resume", path, "--out", out,
                     "--image-size", SIZE, "--tolerance", 1e-9)
    assert done.returncode == 1 and "above the tolerance 1e-09" in done.stderr
    assert tree(tmp_path / "files") == []  # not the file, nor its temporary name
    difference = float(done.stderr.split("PyTorch's by ")[1].split(",")[0])
    assert 0 < difference <= 5e-3


def test_int8_is_torchscript_only_and_pq_exports_the_model(tmp_path, capsys, monkeypatch):
    """An int8 variant is refused as ONNX in one line and written as TorchScript (with its
    metadata), which gives PyTorch's descriptors at another batch size; a PQ variant's file is
    its model, and the output says that the codebook is not in it."""
    torch.manual_seed(0)
    model = build_model("alexnet", "netvlad", 4, weights="none")
    settings = quantize.validate({"mode": "ptq-int8"}, model)
    images = [generated_pixels(4, (64, 80), seed=2)]  # the calibration images
    context = SimpleNamespace(calibration_batches=lambda count: images, precision="fp32")
    int8, extra = quantize.apply(model, settings, context)
    path = save_checkpoint(tmp_path / "int8.pth.tar", compressed_checkpoint(
        int8, "quantize", settings, model.shape, extra))
    done, _ = export(capsys, monkeypatch, tmp_path, "--resume", path, "--out",
                     tmp_path / "int8.onnx", "--image-size", SIZE)
    assert_user_error(done, "int8", "--format torchscript")
    assert not (tmp_path / "int8.onnx").exists()
    out = tmp_path / "int8.pt"
    done, result = export(capsys, monkeypatch, tmp_path, "--resume", path, "--out", out,
                          "--format", "torchscript", "--image-size", SIZE)
    assert done.returncode == 0, done.stderr
    assert result["precision"] == "int8" and result["max_abs_difference"] <= 1e-4
    files = {"vpr_export.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's own deprecation
        torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files["vpr_export.json"])["compression"] == "quantize"

    pq = compressed_checkpoint(model, "pq", {"pq_bytes": 16}, model.shape, {})
    path = save_checkpoint(tmp_path / "pq.pth.tar", pq)
    done, result = export(capsys, monkeypatch, tmp_path, "--resume", path, "--out",
                          tmp_path / "pq.pt", "--format", "torchscript", "--image-size", SIZE)
    assert done.returncode == 0, done.stderr
    assert "not a model" in result["note"] and "note: a PQ variant" in done.stdout


@pytest.mark.parametrize("flags, needles", [
    (["--opset", 13], ["--opset 13", "18 to 23"]),
    (["--format", "torchscript", "--opset", 18], ["--opset does not apply"]),
    ([], ["does not say its image size", "--image-size"]),
], ids=["opset", "opset-torchscript", "no-size"])
def test_bad_settings_are_one_line(flags, needles, models, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out" / ("model.pt" if "torchscript" in flags else "model.onnx")
    done, _ = export(capsys, monkeypatch, tmp_path, "--resume", models["alexnet"], "--out", out,
                     *flags)
    assert_user_error(done, *needles)
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_one_line(synth_root, tmp_path, capsys, monkeypatch):
    notes = tmp_path / "notes.pth.tar"
    notes.write_text("not a model\n")
    done, _ = export(capsys, monkeypatch, tmp_path, "--resume", notes, "--out",
                     tmp_path / "m.onnx", "--image-size", SIZE)
    assert_user_error(done, str(notes), "not a readable checkpoint")
    done, _ = export(capsys, monkeypatch, tmp_path, "--out", tmp_path / "m.onnx")
    assert_user_error(done, "export needs --resume")
    done, _ = export(capsys, monkeypatch, tmp_path, "--resume", tmp_path / "gone", "--out",
                     tmp_path / "m.onnx")
    assert_user_error(done, "gone does not exist")
    (tmp_path / "fake.onnx").write_text("not a model\n")
    done = run_main(["eval", "--resume", tmp_path / "fake.onnx", "--data-root", synth_root,
                     "--quiet"], capsys, monkeypatch, tmp_path)
    assert_user_error(done, "fake.onnx", "not an ONNX model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.onnx", "notes.pth.tar"]
