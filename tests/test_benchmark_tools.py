"""The benchmarks' own tools: the model pairs measured, tables, and the device's wheel parts."""
import hashlib
import subprocess

from benchmarks.models import pairs
from benchmarks.pack_wheels import present_on_device, write_parts
from benchmarks.table import markdown


def test_the_pairs_measured_leave_out_a_class_token_aggregator_on_a_cnn():
    found = pairs(["resnet18", "dinov2_vits14"], ["gem", "salad", "megaloc"])
    assert found == [("resnet18", "gem"), ("dinov2_vits14", "gem"), ("dinov2_vits14", "salad"),
                     ("dinov2_vits14", "megaloc")]


def test_markdown_prints_one_table_per_kind_with_the_columns_present():
    records = [{"benchmark": "extract", "arch": "resnet18", "aggregator": "gem",
                "descriptor_dim": 512, "bare_forward_images_per_s": 1234.5,
                "eval_path_images_per_s": 1200.0, "ratio_eval_to_bare": 0.972},
               {"benchmark": "compress", "arch": "vgg16", "speedup": 1.5}]
    tables = markdown(records).split("\n\n")
    assert tables[0].splitlines()[0] == ("| arch | aggregator | descriptor_dim | "
                                         "bare_forward_images_per_s | eval_path_images_per_s | "
                                         "ratio_eval_to_bare |")
    assert tables[0].splitlines()[2] == "| resnet18 | gem | 512 | 1,234 | 1,200 | 0.972 |"
    assert tables[1].splitlines()[2] == "| vgg16 | 1.5 |"


def test_wheel_parts_stay_under_the_limit_and_join_back(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    sizes = {"big-1.0-py3-none-any.whl": 2500, "a-1.0-py3-none-any.whl": 700,
             "b-1.0-py3-none-any.whl": 300}
    for number, (name, size) in enumerate(sizes.items()):
        (wheels / name).write_bytes(bytes([number]) * size + bytes(range(256)))
    originals = {p.name: p.read_bytes() for p in wheels.iterdir()}
    folders = write_parts(sorted(wheels.iterdir()), tmp_path / ".whl", limit=1000)
    assert [f.name for f in folders] == [f"part{n}" for n in range(1, len(folders) + 1)]
    stage = tmp_path / "stage"
    stage.mkdir()
    for folder in folders:
        assert sum(f.stat().st_size for f in folder.glob("*.whl*")) <= 1000
        assert (folder / "PARTS").read_text() == f"{len(folders)}\n"
        for piece in folder.iterdir():
            (stage / piece.name).write_bytes(piece.read_bytes())
    chunks = sorted(stage.glob("big-1.0-py3-none-any.whl.*"))
    assert [c.name[-2:] for c in chunks] == ["00", "01", "02"]
    (stage / "big-1.0-py3-none-any.whl").write_bytes(b"".join(c.read_bytes() for c in chunks))
    for name, data in originals.items():
        assert (stage / name).read_bytes() == data
        assert f"{hashlib.sha256(data).hexdigest()}  {name}" in (stage / "SHA256SUMS").read_text()
    checked = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=stage)
    assert checked.returncode == 0


def test_the_device_package_list_names_what_the_machine_has_and_not_the_sweeps_needs():
    present = present_on_device()
    assert {"torch", "torchvision", "pandas", "pyarrow", "grpcio", "timm"} <= present
    assert not {"ray", "mlflow", "mlflow-skinny", "optuna", "faiss-cpu"} & present
