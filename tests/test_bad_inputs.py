"""The bad-input matrix: user mistakes across every verb. Each one ends with exit status 2, one
line on stderr naming the problem, no traceback, and nothing written (no MLflow store, no
cache, no run folder, no synthetic data)."""
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import InProcess, assert_user_error, run_main, tree
from scipy.io import loadmat, savemat
from test_datasets import cells

from vpr_core.models.place_model import build_model

NO_WEIGHTS = ["--arch", "alexnet", "--num-clusters", "4", "--weights", "none", "--quiet"]


def copy_tree(source, target):
    shutil.copytree(source, target)
    return target


def damage_mat(root, split="val", **changes):
    path = root / "datasets" / f"synth_{split}.mat"
    struct = loadmat(str(path))["dbStruct"].item()
    names = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
             "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")
    fields = dict(zip(names, struct))
    for key, value in changes.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    savemat(str(path), {"dbStruct": fields})


def folder_layout(root, synth_root, database=True, queries=True, bad_name=False):
    image = next((synth_root / "database" / "val").glob("*.jpg"))
    for kind, wanted in (("database", database), ("queries", queries)):
        folder = root / "images" / "val" / kind
        folder.mkdir(parents=True)
        if wanted:
            shutil.copy(image, folder / "@585000.00@4477000.00@17@T@@@@@@@@@@@.jpg")
    if bad_name:
        shutil.copy(image, root / "images" / "val" / "queries" / "IMG_0042.jpg")
    return root


@pytest.fixture(scope="module")
def cases(tmp_path_factory, synth_root):
    """(name, argv, words the one error line must contain), with the broken inputs on disk."""
    base = tmp_path_factory.mktemp("broken")
    d = {name: copy_tree(synth_root, base / name) for name in (
        "missing_field", "truncated_mat", "other_mat", "image_missing", "image_empty",
        "image_text", "absolute_path", "climbing_path")}
    damage_mat(d["missing_field"], nonTrivPosDistSqThr=None)
    mat = d["truncated_mat"] / "datasets" / "synth_val.mat"
    mat.write_bytes(mat.read_bytes()[:400])
    savemat(str(d["other_mat"] / "datasets" / "synth_train.mat"), {"points": np.zeros((3, 2))})
    victims = {}
    for name in ("image_missing", "image_empty", "image_text"):
        victims[name] = sorted((d[name] / "database" / "train").glob("*.jpg"))[2]
    victims["image_missing"].unlink()
    victims["image_empty"].write_bytes(b"")
    victims["image_text"].write_text("GIF? no, just text")
    count = len(list((synth_root / "database" / "val").glob("*.jpg")))
    damage_mat(d["absolute_path"], dbImageFns=cells(["/etc/hostname"] * count))
    damage_mat(d["climbing_path"], dbImageFns=cells(["database/../../../secret.jpg"] * count))
    malformed = folder_layout(base / "malformed", synth_root, bad_name=True)
    no_queries = folder_layout(base / "no_queries", synth_root, queries=False)
    no_database = folder_layout(base / "no_database", synth_root, database=False)

    ckpt = base / "ckpt"
    ckpt.mkdir()
    torch.save({"state_dict": build_model("alexnet", "netvlad", 4, "none").state_dict()},
               ckpt / "alexnet_k4.pth.tar")
    (ckpt / "truncated.pth.tar").write_bytes((ckpt / "alexnet_k4.pth.tar").read_bytes()[:3000])
    (ckpt / "notes.pth.tar").write_text("my notes, not a checkpoint")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {base / 'PWNED'}",))

    torch.save({"state_dict": {}, "x": Payload()}, ckpt / "evil.pth.tar")

    specs = base / "specs"
    specs.mkdir()
    (specs / "malformed.yaml").write_text("name: x\nsearch: {num_samples: 3\n")
    (specs / "unknown.yaml").write_text(yaml.safe_dump({"name": "x", "serch": {}}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    root = synth_root
    return base, [
        ("missing data root", ["cluster", "--data-root", base / "nowhere", *NO_WEIGHTS],
         ["does not exist", "--data-root"]),
        ("root with no dataset", ["train", "--data-root", specs, *NO_WEIGHTS], ["no dataset"]),
        (".mat missing a field", ["eval", "--data-root", d["missing_field"], *NO_WEIGHTS],
         ["nonTrivPosDistSqThr", "missing"]),
        (".mat truncated", ["eval", "--data-root", d["truncated_mat"], *NO_WEIGHTS],
         ["cannot be read"]),
        (".mat of another structure", ["cluster", "--data-root", d["other_mat"], *NO_WEIGHTS],
         ["no 'dbStruct'"]),
        ("listed image missing", ["train", "--data-root", d["image_missing"], *NO_WEIGHTS],
         [victims["image_missing"].name, "does not exist"]),
        ("listed image empty", ["cluster", "--data-root", d["image_empty"], *NO_WEIGHTS],
         [victims["image_empty"].name, "empty"]),
        ("listed file not an image", ["cluster", "--data-root", d["image_text"], *NO_WEIGHTS],
         [victims["image_text"].name, "not an image"]),
        ("absolute path in .mat", ["eval", "--data-root", d["absolute_path"], *NO_WEIGHTS],
         ["/etc/hostname", "outside the dataset root"]),
        ("path climbing out", ["eval", "--data-root", d["climbing_path"], *NO_WEIGHTS],
         ["outside the dataset root"]),
        ("folder layout, malformed name", ["eval", "--data-root", malformed, *NO_WEIGHTS],
         ["IMG_0042.jpg", "@UTM@"]),
        ("split with no queries", ["eval", "--data-root", no_queries, *NO_WEIGHTS],
         ["no queries"]),
        ("split with no database", ["eval", "--data-root", no_database, *NO_WEIGHTS],
         ["no database images"]),
        ("checkpoint of the other arch", ["eval", "--data-root", root, "--resume",
                                          ckpt / "alexnet_k4.pth.tar", "--arch", "vgg16"],
         ["alexnet", "--arch"]),
        ("checkpoint of another K", ["eval", "--data-root", root, "--resume",
                                     ckpt / "alexnet_k4.pth.tar", "--num-clusters", "64"],
         ["K=4", "--num-clusters"]),
        ("truncated checkpoint", ["eval", "--data-root", root, "--resume",
                                  ckpt / "truncated.pth.tar"], ["truncated"]),
        ("not a checkpoint", ["train", "--data-root", root, "--resume", ckpt / "notes.pth.tar",
                              "--weights", "none"], ["not a readable checkpoint"]),
        ("pickle that runs code", ["eval", "--data-root", root, "--resume",
                                   ckpt / "evil.pth.tar"], ["refused", "system"]),
        ("K < 1", ["cluster", "--data-root", root, "--arch", "alexnet", "--num-clusters", "0",
                   "--weights", "none"], ["--num-clusters"]),
        ("K larger than the descriptors", ["cluster", "--data-root", root, "--arch", "alexnet",
                                           "--num-clusters", "5000", "--weights", "none"],
         ["larger than the", "local descriptors"]),
        ("image too small", ["train", "--data-root", root, "--image-size", "12x12", *NO_WEIGHTS],
         ["too small for the alexnet encoder"]),
        ("negative learning rate", ["train", "--data-root", root, "--lr", "-0.1", *NO_WEIGHTS],
         ["--lr must be positive"]),
        ("zero margin", ["train", "--data-root", root, "--margin", "0", *NO_WEIGHTS],
         ["--margin must be positive"]),
        ("zero batch size", ["train", "--data-root", root, "--batch-size", "0", *NO_WEIGHTS],
         ["--batch-size"]),
        ("negative frozen budget", ["train", "--data-root", root, "--frozen-cache-gb", "-1",
                                    *NO_WEIGHTS], ["--frozen-cache-gb must be 0"]),
        ("unknown arch", ["eval", "--data-root", root, "--arch", "resnet5"], ["resnet5"]),
        ("unknown arch (cluster)", ["cluster", "--data-root", root, "--arch", "resnet"],
         ["resnet"]),
        ("image too small (cluster)", ["cluster", "--data-root", root, "--image-size", "16x16",
                                       *NO_WEIGHTS], ["too small"]),
        ("image size not HxW", ["cluster", "--data-root", root, "--image-size", "big",
                                *NO_WEIGHTS], ["HxW"]),
        ("zero learning rate", ["train", "--data-root", root, "--lr", "0", *NO_WEIGHTS],
         ["--lr"]),
        ("missing checkpoint", ["eval", "--data-root", root, "--resume", ckpt / "x.pth"],
         ["does not exist"]),
        ("unknown split", ["eval", "--data-root", root, "--split", "dev", *NO_WEIGHTS],
         ["dev"]),
        ("unknown flag", ["train", "--data-root", root, "--bogus"], ["--bogus"]),
        ("malformed experiment YAML", ["sweep", "--config", specs / "malformed.yaml"],
         ["not valid YAML at line"]),
        ("unknown keys in the YAML", ["sweep", "--config", specs / "unknown.yaml"],
         ["unknown key(s) serch"]),
        ("unreachable --ray-address", ["sweep", "--data-root", root, "--ray-address",
                                       f"127.0.0.1:{closed_port}"], ["nothing answers"]),
        ("MLflow URI of an unknown scheme", ["sweep", "--tracking-uri", "mongodb://db/x"],
         ["unknown scheme 'mongodb'"]),
        ("MLflow URI of an unknown scheme (eval)", ["eval", "--data-root", root,
                                                    "--tracking-uri", "s3://bucket/x",
                                                    *NO_WEIGHTS], ["unknown scheme 's3'"]),
        ("nothing to resume", ["sweep", "--resume"], ["to resume", "--name"]),
        ("synth into a full folder", ["synth", "--out", specs], ["not empty"]),
        ("no MLflow database for the UI", ["ui"], ["no MLflow database"]),
    ]


def test_every_mistake_is_one_line_exit_2_and_writes_nothing(cases, tmp_path, capsys,
                                                            monkeypatch):
    base, table = cases
    assert len(table) >= 20
    for index, (name, argv, needles) in enumerate(table):
        work = tmp_path / f"case{index}"
        work.mkdir()
        before_base = tree(base)
        try:
            done = run_main(argv, capsys, monkeypatch, work)
        except SystemExit as exit_:  # argparse refusing a value, after its one line
            out, err = capsys.readouterr()
            done = InProcess(exit_.code, out, err)
        try:
            assert_user_error(done, *needles)
        except AssertionError as error:
            raise AssertionError(f"case {name!r}: {error}") from None
        assert tree(work) == [], (name, tree(work))
        assert tree(base) == before_base, name
    assert not (base / "PWNED").exists()
