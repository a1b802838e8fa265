import re
import shutil

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from vpr_core.data import detect_layout, open_split, pittsburgh, resolve_image_size
from vpr_core.data.utm_folder import parse_utm
from vpr_core.errors import UserError


def write_mat(path, fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"dbStruct": fields})


def cells(names):
    array = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        array[i, 0] = name
    return array


def pitts_fields(db_names, q_names, db_utm, q_utm, integer_counts=True):
    """dbStruct fields in the order and types of the real pitts30k_*.mat files."""
    count = np.int64 if integer_counts else np.float64
    return {
        "whichSet": "val", "dbImageFns": cells(db_names), "utmDb": np.asarray(db_utm, float).T,
        "qImageFns": cells(q_names), "utmQ": np.asarray(q_utm, float).T,
        "numImages": count(len(db_names)), "numQueries": count(len(q_names)),
        "posDistThr": np.int64(25), "posDistSqThr": np.int64(625),
        "nonTrivPosDistSqThr": np.int64(100),
    }


@pytest.fixture
def pitts_like(tmp_path, synth_root):
    """A root in the real Pitts30k naming: 000/000000_pitch1_yaw1.jpg, queries_real/000/..."""
    image = next((synth_root / "database" / "val").glob("*.jpg"))
    db_names = [f"000/00000{i}_pitch1_yaw{i + 1}.jpg" for i in range(4)]
    q_names = ["000/000000_pitch1_yaw1.jpg", "001/000007_pitch2_yaw3.jpg"]
    for name in db_names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tmp_path / name)
    for name in q_names:
        (tmp_path / "queries_real" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tmp_path / "queries_real" / name)
    db_utm = [[585000.0, 4477000.0], [585010.0, 4477000.0], [585030.0, 4477000.0],
              [585100.0, 4477000.0]]
    q_utm = [[585001.0, 4477000.0], [585099.0, 4477005.0]]
    fields = pitts_fields(db_names, q_names, db_utm, q_utm)
    write_mat(tmp_path / "datasets" / "pitts30k_val.mat", fields)
    return tmp_path, fields


def test_a_mat_in_the_real_layout_parses(pitts_like):
    root, _ = pitts_like
    split = open_split(root, "val")
    assert (split.dataset, split.split) == ("pitts30k", "val")
    assert split.num_database == 4 and split.num_queries == 2
    assert split.database_paths[1] == str(root / "000/000001_pitch1_yaw2.jpg")
    assert split.query_paths[1] == str(root / "queries_real/001/000007_pitch2_yaw3.jpg")
    assert split.database_utm.shape == (4, 2) and split.database_utm[2, 0] == 585030.0
    assert [p.tolist() for p in split.eval_positives()] == [[0, 1], [3]]
    assert [p.tolist() for p in split.train_positives()] == [[0, 1], [3]]
    assert split.potential_negatives()[0].tolist() == [2, 3]
    assert resolve_image_size(split, None) == (64, 80)


def test_double_counts_as_some_matlab_writers_store_them(pitts_like):
    root, fields = pitts_like
    fields = dict(fields, numImages=np.float64(4), numQueries=np.float64(2))
    write_mat(root / "datasets" / "pitts30k_val.mat", fields)
    assert open_split(root, "val").num_database == 4


@pytest.mark.parametrize("mistake, message", [
    ("missing_field", "nonTrivPosDistSqThr"),
    ("truncated", "cannot be read"),
    ("other_structure", "no 'dbStruct'"),
    ("absolute_path", "outside the dataset root"),
    ("climbing_path", "outside the dataset root"),
    ("bad_utm", "utmDb"),
    ("count_mismatch", "numImages"),
])
def test_malformed_mat_files_are_one_clear_error(pitts_like, mistake, message):
    root, fields = pitts_like
    path = root / "datasets" / "pitts30k_val.mat"
    if mistake == "missing_field":
        write_mat(path, {k: v for k, v in fields.items() if k != "nonTrivPosDistSqThr"})
    elif mistake == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif mistake == "other_structure":
        savemat(str(path), {"something": np.zeros(3)})
    elif mistake == "absolute_path":
        write_mat(path, dict(fields, dbImageFns=cells(["/etc/passwd"] * 4)))
    elif mistake == "climbing_path":
        write_mat(path, dict(fields, dbImageFns=cells(["000/../../secret.jpg"] * 4)))
    elif mistake == "bad_utm":
        write_mat(path, dict(fields, utmDb=np.zeros((3, 4))))
    elif mistake == "count_mismatch":
        write_mat(path, dict(fields, numImages=np.int64(5)))
    with pytest.raises(UserError, match=message) as caught:
        open_split(root, "val")
    assert "\n" not in str(caught.value)


def write_v73(path) -> None:
    """A MATLAB v7.3 file: HDF5 behind MATLAB's 128-byte header (version 0x0200)."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle["dbStruct"] = np.zeros(3)
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, HDF5 schema 1.00 .".ljust(124) + b"\x00\x02IM")


@pytest.mark.parametrize("damage, message", [
    ("text", "cannot be read as a MATLAB file (IndexError"),
    ("png", "cannot be read as a MATLAB file (ValueError"),
    ("compressed_flipped", "cannot be read as a MATLAB file (error"),  # zlib.error
    ("v7.3", "is a MATLAB v7.3 file"),
])
def test_a_mat_file_scipy_cannot_read_is_one_clear_error(pitts_like, damage, message):
    root, fields = pitts_like
    path = root / "datasets" / "pitts30k_val.mat"
    if damage == "text":
        path.write_text("dbImageFns = {'000/000000_pitch1_yaw1.jpg'}\n")
    elif damage == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif damage == "compressed_flipped":
        savemat(str(path), {"dbStruct": fields}, do_compression=True)
        content = bytearray(path.read_bytes())
        content[200:216] = b"\xff" * 16
        path.write_bytes(bytes(content))
    else:
        write_v73(path)
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        open_split(root, "val")
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("bug", [AttributeError("module 'numpy' has no attribute 'float'"),
                                 KeyError("dbStruct"), RuntimeError("a bug in a reader"),
                                 NotImplementedError("subclass must implement read")],
                         ids=lambda error: type(error).__name__)
def test_a_bug_reading_a_mat_file_is_not_called_a_damaged_file(pitts_like, monkeypatch, bug):
    def loadmat(*args, **kwargs):
        raise bug

    monkeypatch.setattr(pittsburgh, "loadmat", loadmat)
    with pytest.raises(type(bug)) as caught:
        open_split(pitts_like[0], "val")
    assert caught.value is bug


@pytest.mark.parametrize("damage, message", [
    ("delete", "does not exist"), ("empty", "is empty"), ("text", "is not an image")])
def test_a_bad_listed_image_is_named(pitts_like, damage, message):
    root, _ = pitts_like
    target = root / "000" / "000002_pitch1_yaw3.jpg"
    if damage == "delete":
        target.unlink()
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        target.write_text("not a jpeg at all")
    with pytest.raises(UserError, match=message) as caught:
        open_split(root, "val")
    assert str(target) in str(caught.value)


def test_missing_root_split_and_ambiguous_dataset(tmp_path, pitts_like):
    root, fields = pitts_like
    with pytest.raises(UserError, match="does not exist"):
        open_split(tmp_path / "nowhere", "val")
    with pytest.raises(UserError, match="no dataset under"):
        detect_layout(tmp_path / "queries_real")
    with pytest.raises(UserError, match="_test.mat"):
        open_split(root, "test")
    write_mat(root / "datasets" / "pitts250k_val.mat", fields)
    with pytest.raises(UserError, match="--dataset"):
        open_split(root, "val")
    assert open_split(root, "val", dataset="pitts250k").dataset == "pitts250k"


def test_test250k_reads_pitts250k_test(pitts_like):
    root, fields = pitts_like
    write_mat(root / "datasets" / "pitts250k_test.mat", fields)
    split = open_split(root, "test250k")
    assert (split.dataset, split.split) == ("pitts250k", "test")


def test_folder_layout_parses_utm_from_the_basename_only():
    assert parse_utm("@0584459.21@4477378.86@17@T@040.44297@-079.99827@@@@@@@@@.jpg") == \
        (584459.21, 4477378.86)
    with pytest.raises(UserError, match="@UTM@"):
        parse_utm("IMG_0001.jpg")
    with pytest.raises(UserError, match="@UTM@"):
        parse_utm("@east@north@17@T@.jpg")


def test_folder_layout_with_a_malformed_name_is_one_error(tmp_path, synth_root):
    image = next((synth_root / "database" / "val").glob("*.jpg"))
    for kind in ("database", "queries"):
        (tmp_path / "images" / "val" / kind).mkdir(parents=True)
        shutil.copy(image, tmp_path / "images" / "val" / kind / "@585000.00@4477000.00@17@T@.jpg")
    shutil.copy(image, tmp_path / "images" / "val" / "database" / "holiday.jpg")
    with pytest.raises(UserError, match="holiday.jpg"):
        open_split(tmp_path, "val")


def test_a_split_without_queries_is_refused(tmp_path, synth_root):
    image = next((synth_root / "database" / "val").glob("*.jpg"))
    (tmp_path / "images" / "val" / "database").mkdir(parents=True)
    (tmp_path / "images" / "val" / "queries").mkdir(parents=True)
    shutil.copy(image, tmp_path / "images" / "val" / "database" / "@585000.00@4477000.00@17@T@.jpg")
    with pytest.raises(UserError, match="no queries"):
        open_split(tmp_path, "val")


def test_both_layouts_of_the_same_data_give_the_same_ground_truth(synth_root, synth_folder_root):
    pitts, folder = open_split(synth_root, "test"), open_split(synth_folder_root, "test")
    assert (pitts.num_database, pitts.num_queries) == (folder.num_database, folder.num_queries)
    # the folder layout orders files by name; compare ground truth through UTM coordinates
    assert np.array_equal(np.sort(pitts.database_utm, axis=0), np.sort(folder.database_utm, axis=0))

    def as_sets(split):
        return sorted(tuple(sorted(map(tuple, split.database_utm[p])))
                      for p in split.eval_positives())

    assert as_sets(pitts) == as_sets(folder)
