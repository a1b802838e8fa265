"""GSV-Cities and MSLS: reading the layouts as released, the official MSLS-val query rule,
the generated datasets of `synth`, and every data mistake as one line."""
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run_main

from vpr_core.data import detect_layout, gsv_cities, msls, open_places, open_split
from vpr_core.data.synthetic import SynthConfig, write_synthetic
from vpr_core.errors import UserError
from vpr_core.models.place_model import build_model

SMALL = dict(places=12, image_size=(64, 80), seed=0, show_progress=False)


@pytest.fixture(scope="module")
def gsv_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("places") / "gsv"
    write_synthetic(SynthConfig(out=out, layout="gsv-cities", **SMALL))
    return out


@pytest.fixture(scope="module")
def msls_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("places") / "msls"
    write_synthetic(SynthConfig(out=out, layout="msls", **SMALL))
    return out


def copy(root, tmp_path):
    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data"


def test_a_real_gsv_cities_row_maps_to_its_released_file_name(tmp_path):
    # a row as the released Dataframes/London.csv writes it (the authors' column names)
    (tmp_path / "Dataframes").mkdir()
    (tmp_path / "Dataframes" / "London.csv").write_text(
        "place_id,year,month,northdeg,city_id,lat,lon,panoid\n"
        "12,2017,6,41,London,51.50743910,-0.12775830,x8VbnGV_Zf2vTNNb1L2Zqw\n")
    places = gsv_cities.read_places(tmp_path, ["London"], min_images_per_place=1)
    assert places.paths == (str(tmp_path / "Images" / "London" /
                                "London_0000012_2017_06_041_51.5074391_-0.1277583_"
                                "x8VbnGV_Zf2vTNNb1L2Zqw.jpg"),)
    assert places.place_names == ("London_0000012",)


def test_generated_gsv_cities(gsv_root):
    assert detect_layout(gsv_root) == "gsv-cities"
    places = open_places(gsv_root)
    assert places.dataset == "gsv-cities" and places.native_size == (64, 80)
    assert (places.num_places, places.num_images) == (24, 96)
    assert (places.images_per_place() == 4).all()
    for place in range(places.num_places):  # a place's images carry its city and place id
        prefix = places.place_names[place] + "_"
        assert all(places.paths[i].rsplit("/", 1)[1].startswith(prefix)
                   for i in places.images_of(place))
    rows = (gsv_root / "Dataframes" / "Boston.csv").read_text().splitlines()
    header, first = rows[0].split(","), dict(zip(rows[0].split(","), rows[1].split(",")))
    assert tuple(header) == gsv_cities.COLUMNS
    name = gsv_cities.row_image_name(first, gsv_root, 2)
    assert (gsv_root / "Images" / "Boston" / name).is_file()
    assert open_places(gsv_root, cities=["Boston"]).num_places == 12


@pytest.fixture
def information_shown():
    """vpr_core's information lines on, whatever an earlier `--quiet` command left."""
    from vpr_core.log import log

    previous = log.level
    log.setLevel(logging.INFO)
    yield
    log.setLevel(previous)


def test_gsv_cities_places_below_the_minimum_are_left_out(tmp_path, gsv_root, capsys,
                                                         information_shown):
    root = copy(gsv_root, tmp_path)
    csv = root / "Dataframes" / "London.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:-1]) + "\n")  # place 11 of London keeps 3 images
    places = open_places(root, cities=["London"])
    assert places.num_places == 11 and "London_0000011" not in places.place_names
    assert "left out 1 of 12 places with fewer than 4 images" in capsys.readouterr().out
    with pytest.raises(UserError, match="no place with at least 5 images"):
        open_places(root, cities=["London"], min_images_per_place=5)


def test_generated_msls_as_places_and_splits(msls_root):
    assert detect_layout(msls_root) == "msls"
    places = open_places(msls_root)  # train cities london, boston
    # each city's first place lost its first query (a panorama): 3 images, below 4
    assert (places.num_places, places.num_images) == (22, 88)
    assert all(name.startswith(("london_", "boston_")) for name in places.place_names)
    for place in range(places.num_places):  # one place: images of one synthetic place
        stems = {places.paths[i].rsplit("/", 1)[1][:-5] for i in places.images_of(place)}
        assert len({stem[-3:] for stem in stems}) == 1, stems
    official, everything = open_split(msls_root, "val"), open_split(msls_root, "val", "msls-all")
    assert (official.dataset, everything.dataset) == ("msls", "msls-all")
    assert official.num_database == everything.num_database == 48
    # per city 24 queries: 8 outside subtask `all`, 1 panorama
    assert (official.num_queries, everything.num_queries) == (30, 46)
    assert all("/cph/" in p or "/sf/" in p for p in official.all_paths)
    assert open_split(msls_root, "sf").num_queries == 15
    assert open_split(msls_root, "train").num_database == 48


def write_msls_folder(where, rows, pano=(), outside=()):
    """An MSLS folder from (key, easting, northing) rows, as the released CSV files write them."""
    where.mkdir(parents=True)
    post = [",key,easting,northing,unique_cluster,control_panel,night,view_direction"]
    raw, sub = [",key,lon,lat,ca,captured_at,pano"], [",all,s2w,w2s,o2n,n2o,d2n,n2d"]
    for i, (key, east, north) in enumerate(rows):
        post.append(f"{i},{key},{east},{north},0,False,False,Forward")
        raw.append(f"{i},{key},12.5,55.6,10.0,2016-05-05,{key in pano}")
        sub.append(f"{i},{key not in outside},False,False,False,False,False,False")
    for name, lines in (("postprocessed", post), ("raw", raw), ("subtask_index", sub)):
        (where / f"{name}.csv").write_text("\n".join(lines) + "\n")


def test_the_official_query_rule_on_hand_made_csvs(tmp_path):
    city = tmp_path / "train_val" / "cph"
    write_msls_folder(city / "database", [("d0", 0, 0), ("d1", 100, 0), ("d2", 300, 0),
                                          ("d3", 500, 0)], pano={"d2"}, outside={"d3"})
    write_msls_folder(city / "query", [
        ("q_kept", 10, 0),            # d0 at 10 m
        ("q_edge", 125, 0),           # d1 at exactly 25 m: kept (inclusive)
        ("q_far", 126, 0),            # nearest kept database image 26 m away
        ("q_pano", 0, 5),             # a panorama
        ("q_outside", 100, 1),        # not in subtask `all`
        ("q_near_pano_db", 300, 1),   # only the panorama database image d2 is near
        ("q_near_outside_db", 500, 1),  # only d3, outside subtask `all`, is near
    ], pano={"q_pano"}, outside={"q_outside"})
    split = msls.read_split(tmp_path, "cph")
    kept = [p.rsplit("/", 1)[1] for p in split.query_paths]
    assert kept == ["q_kept.jpg", "q_edge.jpg"]
    assert [p.rsplit("/", 1)[1] for p in split.database_paths] == ["d0.jpg", "d1.jpg"]
    assert split.query_utm.tolist() == [[10, 0], [125, 0]]
    every = msls.read_split(tmp_path, "cph", "msls-all")
    assert every.num_queries == 6 and every.num_database == 3  # panoramas only are left out


def test_a_gsv_cities_root_is_not_a_split(gsv_root, tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match="GSV-Cities, training data .* MSLS_ROOT --split val"):
        open_split(gsv_root, "val")
    done = run_main(["eval", "--data-root", gsv_root, "--arch", "alexnet"], capsys, monkeypatch,
                    tmp_path)
    assert_user_error(done, "GSV-Cities", "--split val")


def test_a_pittsburgh_root_has_no_places(synth_root):
    with pytest.raises(UserError, match="place-batched training needs GSV-Cities .* or MSLS"):
        open_places(synth_root)


def drop_column(csv, column):
    lines = [line.split(",") for line in csv.read_text().splitlines()]
    at = lines[0].index(column)
    csv.write_text("\n".join(",".join(cells[:at] + cells[at + 1:]) for cells in lines) + "\n")


@pytest.mark.parametrize("mistake, message", [
    ("no dataframes", "does not exist; GSV-Cities needs ROOT/Dataframes"),
    ("missing columns", r"London.csv lacks the column\(s\) lat, panoid"),
    ("missing image", r"gsv-cities training image .*London_0000003_.*\.jpg does not exist"),
    ("bad number", "London.csv line 3: year is 'soon', not a number"),
    ("unknown city", "no Paris.csv in"),
])
def test_gsv_cities_mistakes_are_one_line(tmp_path, gsv_root, mistake, message):
    root = copy(gsv_root, tmp_path)
    csv = root / "Dataframes" / "London.csv"
    cities = None
    if mistake == "no dataframes":
        shutil.rmtree(root / "Dataframes")
        with pytest.raises(UserError, match="no dataset under .* ROOT/Dataframes/<city>.csv"):
            open_places(root)
        with pytest.raises(UserError, match=message):
            gsv_cities.read_places(root)
        return
    if mistake == "missing columns":
        drop_column(csv, "panoid")
        drop_column(csv, "lat")
    elif mistake == "missing image":
        next((root / "Images" / "London").glob("London_0000003_*.jpg")).unlink()
    elif mistake == "bad number":
        lines = csv.read_text().splitlines()
        lines[2] = lines[2].replace(",2011,", ",soon,")
        csv.write_text("\n".join(lines) + "\n")
    else:
        cities = ["Paris"]
    with pytest.raises(UserError, match=message) as caught:
        open_places(root, cities=cities)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("mistake, message", [
    ("no subtask index", r"val/cph/query/subtask_index.csv does not exist"),
    ("missing columns", r"cph/database/postprocessed.csv lacks the column\(s\) easting"),
    ("missing image", r"msls val query image .*cph/query/images/cphq0003.jpg does not exist"),
    ("rows disagree", "disagree on the number of images"),
    ("bad pano", "raw.csv line 2: pano is 'maybe', not True or False"),
    ("unknown city", "no city rome under"),
    ("test cities", "the MSLS test cities have no positions"),
    ("query set", "--dataset 'pitts30k' is not an MSLS query set"),
])
def test_msls_mistakes_are_one_line(tmp_path, msls_root, mistake, message):
    root = copy(msls_root, tmp_path)
    city = root / "train_val" / "cph"
    split, dataset = "val", None
    if mistake == "no subtask index":
        (city / "query" / "subtask_index.csv").unlink()
        assert open_split(root, "val", "msls-all").num_queries == 46  # not needed for all
    elif mistake == "missing columns":
        drop_column(city / "database" / "postprocessed.csv", "easting")
    elif mistake == "missing image":
        (city / "query" / "images" / "cphq0003.jpg").unlink()
    elif mistake == "rows disagree":
        lines = (city / "query" / "raw.csv").read_text().splitlines()
        (city / "query" / "raw.csv").write_text("\n".join(lines[:-1]) + "\n")
    elif mistake == "bad pano":
        raw = city / "query" / "raw.csv"
        raw.write_text(raw.read_text().replace(",True\n", ",maybe\n", 1))
    elif mistake == "unknown city":
        split = "cph,rome"
    elif mistake == "test cities":
        split = "test"
    else:
        dataset = "pitts30k"
    with pytest.raises(UserError, match=message) as caught:
        open_split(root, split, dataset)
    assert "\n" not in str(caught.value)


def test_msls_places_with_no_place_left(tmp_path, msls_root):
    with pytest.raises(UserError, match="MSLS london under .* no place with at least 9 images"):
        open_places(msls_root, cities=["london"], min_images_per_place=9)


def test_eval_on_a_generated_msls_val_split(tmp_path, msls_root, capsys, monkeypatch):
    checkpoint = tmp_path / "checkpoint.pth.tar"
    torch.manual_seed(0)
    model = build_model("alexnet", "netvlad", 4, weights="none")
    torch.save({"epoch": 1, "state_dict": model.state_dict(),
                "recalls": {5: np.float64(0.1)}, "best_score": np.float64(0.1)}, checkpoint)
    done = run_main(["eval", "--resume", checkpoint, "--data-root", msls_root, "--split", "val",
                     "--json", tmp_path / "r.json", "--quiet"], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["split"], result["num_queries"], result["num_database"]) == ("val", 30, 48)
    assert 0 < result["recall@20"]
