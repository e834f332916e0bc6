"""COCO Karpathy, Visual Genome and JSONL datasets on real-layout trees; malformed files fail at start."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from pgmm_core.errors import DataError
from pgmm_data.configs import CocoCaptionConfig, JsonlCaptionsConfig, VgCaptionConfig
from pgmm_data.datasets import build_coco_caption, build_jsonl_captions, build_vg_caption
from pgmm_data.processors import blip_caption
from pgmm_data.testing import ORIGIN_PREFIX, captions_for, write_coco_tree, write_jsonl_tree, write_vg_tree

SIZE = 16


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco_tree(tmp_path_factory.mktemp("data") / "coco", train=4, val=3, test=2)


@pytest.fixture(scope="module")
def vg(tmp_path_factory):
    return write_vg_tree(tmp_path_factory.mktemp("data") / "vg", images=4, regions_per_image=2)


def coco_set(root, role, **fields):
    return build_coco_caption(CocoCaptionConfig(root=str(root), **fields), split=role, image_size=SIZE)


# --- COCO -------------------------------------------------------------------------------------------


def test_coco_train_gives_one_sample_per_caption(coco):
    train = coco_set(coco.root, "train")
    assert len(train) == 4 * 5 and train.name == "coco_caption[train]"
    item = train[6]  # image 1, caption 1
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert item["caption"] == blip_caption(captions_for(1)[1])
    assert item["image_id"] == "coco_1001"


def test_coco_eval_gives_one_item_per_image_with_int_id_and_all_references(coco):
    val = coco_set(coco.root, "val")
    assert len(val) == 3
    item = val[1]
    assert item["image_id"] == 5001  # parsed from COCO_val2014_000000005001.jpg
    assert item["references"] == captions_for(5001)  # as written: the scorer tokenizes them
    assert len(coco_set(coco.root, "test")) == 2


def test_coco_eval_images_go_through_blip_image_eval(coco):
    from PIL import Image

    from pgmm_data.processors import blip_image_eval

    expected = blip_image_eval(SIZE)(Image.open(coco.images["val"][0]).convert("RGB"))
    assert torch.equal(coco_set(coco.root, "val")[0]["image"], expected)


def test_coco_references_come_from_the_gt_file_when_present(tmp_path):
    tree = write_coco_tree(tmp_path / "coco", train=1, val=2, test=1)
    gt_path = tree.annotation_files["val_gt"]
    gt = json.loads(gt_path.read_text())
    for ann in gt["annotations"]:
        ann["caption"] = f"gt says {ann['id']}"
    gt_path.write_text(json.dumps(gt))
    assert coco_set(tree.root, "val")[0]["references"] == [f"gt says {i}" for i in range(5)]
    gt_path.unlink()  # absent: built from the Karpathy file
    assert coco_set(tree.root, "val")[0]["references"] == captions_for(5000)


def test_coco_gt_also_found_in_lavis_coco_gt_folder(tmp_path):
    tree = write_coco_tree(tmp_path / "coco", train=1, val=1, test=1)
    (tmp_path / "coco_gt").mkdir()
    gt = json.loads(tree.annotation_files["val_gt"].read_text())
    gt["annotations"][0]["caption"] = "from coco_gt"
    tree.annotation_files["val_gt"].unlink()
    (tmp_path / "coco_gt" / "coco_karpathy_val_gt.json").write_text(json.dumps(gt))
    assert coco_set(tree.root, "val")[0]["references"][0] == "from coco_gt"


def test_coco_config_split_and_paths_override_the_defaults(coco, tmp_path):
    # data.val entry reading the Karpathy test file (the DESIGN example form, with split given)
    assert len(coco_set(coco.root, "val", split="test")) == 2
    # train on the val annotation: one sample per caption
    assert len(coco_set(coco.root, "train", split="val")) == 3 * 5
    moved = tmp_path / "elsewhere.json"
    moved.write_text(coco.annotation_files["val"].read_text())
    gt = "annotations/coco_karpathy_val_gt.json"
    assert len(coco_set(coco.root, "val", annotation=str(moved), ground_truth=gt)) == 3
    with pytest.raises(DataError, match="ground_truth not found"):
        coco_set(coco.root, "val", ground_truth="nope.json")


def test_gt_without_an_image_of_the_split_is_an_error(tmp_path):
    tree = write_coco_tree(tmp_path / "coco", train=1, val=2, test=1)
    gt = json.loads(tree.annotation_files["val_gt"].read_text())
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] != 5001]
    tree.annotation_files["val_gt"].write_text(json.dumps(gt))
    with pytest.raises(DataError, match=r"coco_karpathy_val_gt.json: no references for image id 5001"):
        coco_set(tree.root, "val")


def test_missing_annotation_file_says_where_to_get_it(tmp_path):
    (tmp_path / "coco").mkdir()
    with pytest.raises(DataError, match=r"not found: .*coco_karpathy_train.json\. Download https://storage"):
        coco_set(tmp_path / "coco", "train")


def test_wrong_image_root_fails_at_start(coco, tmp_path):
    with pytest.raises(DataError, match="none of .* images checked exists"):
        coco_set(coco.root, "train", image_root=str(tmp_path))


def test_datasets_pickle_for_worker_processes(coco):
    train = coco_set(coco.root, "train")
    clone = pickle.loads(pickle.dumps(train))
    torch.manual_seed(0)
    a = clone[3]
    torch.manual_seed(0)
    assert torch.equal(a["image"], train[3]["image"]) and a["caption"] == train[3]["caption"]


# --- malformed annotation files: file and position -------------------------------------------------------


def _write_annotations(root, name, text):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / name).write_text(text)


def test_invalid_json_names_file_line_and_column(tmp_path):
    _write_annotations(tmp_path, "coco_karpathy_train.json", '[\n {"image": "a.jpg", "caption": "x"},\n {"image": }\n]')
    with pytest.raises(DataError, match=r"coco_karpathy_train.json: invalid JSON at line 3 column 12"):
        coco_set(tmp_path, "train")


@pytest.mark.parametrize("entry,problem", [
    ({"caption": "x"}, "entry 1: 'image' must be a non-empty string"),
    ({"image": "train2014/COCO_train2014_000000000002.jpg", "caption": 7}, "entry 1: 'caption' must be a string or"),
    ({"image": "train2014/COCO_train2014_000000000002.jpg", "caption": []}, "entry 1: 'caption' must be a string or"),
    ({"image": "train2014/no_digits.jpg", "caption": "x"}, "entry 1: no image id in the file name"),
    ({"image": "mine/photo.jpg", "caption": "x", "image_id": "mine"}, "and no number in its 'image_id'"),
    ("just a string", "entry 1: expected an object"),
])
def test_bad_entries_name_the_entry(tmp_path, entry, problem):
    good = {"image": "train2014/COCO_train2014_000000000001.jpg", "caption": "a", "image_id": "coco_1"}
    _write_annotations(tmp_path, "coco_karpathy_train.json", json.dumps([good, entry]))
    with pytest.raises(DataError, match=problem):
        coco_set(tmp_path, "train")


def test_own_photo_in_a_train_file_takes_the_number_in_its_image_id(tmp_path):
    good = {"image": "train2014/COCO_train2014_000000000001.jpg", "caption": "a", "image_id": "coco_1"}
    mine = {"image": "photos/my_cat.jpg", "caption": "my cat", "image_id": "mine_77"}
    for image in (good["image"], mine["image"]):
        _tiny_jpeg(tmp_path / image)
    _write_annotations(tmp_path, "coco_karpathy_train.json", json.dumps([good, mine]))
    dataset = coco_set(tmp_path, "train")
    assert len(dataset) == 2


def _tiny_jpeg(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)


def test_top_level_must_be_a_list(tmp_path):
    _write_annotations(tmp_path, "coco_karpathy_train.json", '{"images": []}')
    with pytest.raises(DataError, match="expected a JSON list of entries, got a JSON dict"):
        coco_set(tmp_path, "train")


def test_malformed_gt_names_the_annotation(tmp_path):
    tree = write_coco_tree(tmp_path / "coco", train=1, val=1, test=1)
    tree.annotation_files["val_gt"].write_text(json.dumps({"annotations": [{"image_id": "5000", "caption": "x"}]}))
    with pytest.raises(DataError, match=r"annotations\[0\]: 'image_id' must be an integer"):
        coco_set(tree.root, "val")


def test_duplicate_eval_ids_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    lines = [{"image": "a/1.jpg", "caption": "x", "image_id": 7}, {"image": "a/2.jpg", "caption": "y", "image_id": 7}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(DataError, match="same evaluation id 7"):
        build_jsonl_captions(JsonlCaptionsConfig(path=str(tmp_path / "c.jsonl")), split="val", image_size=SIZE)


# --- Visual Genome -------------------------------------------------------------------------------------------


def test_vg_foreign_absolute_paths_are_found_by_file_name(vg):
    annotation = json.loads(vg.annotation_files["train"].read_text())
    assert annotation[0]["image"].startswith(ORIGIN_PREFIX)  # as in LAVIS' file: another machine's paths
    train = build_vg_caption(VgCaptionConfig(root=str(vg.root)), split="train", image_size=SIZE)
    assert len(train) == 8
    assert train.annotations.images[0] == str(vg.root / "images" / "VG_100K" / "1.jpg")
    assert train.annotations.images[1] == str(vg.root / "images" / "VG_100K_2" / "2.jpg")
    item = train[2]
    assert item["image_id"] == "vg_2" and item["image"].shape == (3, SIZE, SIZE)
    assert item["caption"] == blip_caption(annotation[2]["caption"])


def test_vg_path_prefix_rewrites_explicitly(tmp_path):
    tree = write_vg_tree(tmp_path / "vg", images=2, regions_per_image=1)
    flat = tmp_path / "vg" / "image"
    flat.mkdir()
    for path in tree.images["train"]:
        path.rename(flat / path.name)
    config = VgCaptionConfig(root=str(tree.root), image_root="image", path_prefix=ORIGIN_PREFIX)
    train = build_vg_caption(config, split="train", image_size=SIZE)
    assert train.annotations.images[1] == str(flat / "2.jpg")
    assert "image" in train[1]
    bad = VgCaptionConfig(root=str(tree.root), image_root="image", path_prefix="/somewhere/else")
    with pytest.raises(DataError, match="entry 0: image path .* does not start with path_prefix"):
        build_vg_caption(bad, split="train", image_size=SIZE)


def test_vg_eval_uses_the_number_of_the_image_id(vg):
    val = build_vg_caption(VgCaptionConfig(root=str(vg.root)), split="val", image_size=SIZE)
    assert len(val) == 4 and val[3]["image_id"] == 4 and len(val[3]["references"]) == 2


def test_vg_with_no_image_under_root_fails_at_start(vg, tmp_path):
    with pytest.raises(DataError, match="none of .* images checked exists"):
        build_vg_caption(VgCaptionConfig(root=str(vg.root), image_root=str(tmp_path)), split="train", image_size=SIZE)


# --- JSONL ---------------------------------------------------------------------------------------------------


def test_jsonl_single_and_list_captions(tmp_path):
    tree = write_jsonl_tree(tmp_path / "mine", images=4)
    config = JsonlCaptionsConfig(path=str(tree.annotation_files["train"]))
    train = build_jsonl_captions(config, split="train", image_size=SIZE)
    assert len(train) == 1 + 2 + 1 + 2  # lines alternate one caption / a list of two
    assert train[1]["image_id"] == "photos/img_001.jpg"
    val = build_jsonl_captions(config, split="val", image_size=SIZE)
    assert [val[i]["image_id"] for i in range(4)] == [0, 1, 2, 3]
    assert val[1]["references"] == captions_for(1, 2)


def test_jsonl_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "c.jsonl"
    for name in ("a.jpg", "b.jpg"):
        _tiny_jpeg(tmp_path / name)
    path.write_text('{"image": "a.jpg", "caption": "x"}\n{"image": "b.jpg", "caption": "y"}\n', encoding="utf-8-sig")
    dataset = build_jsonl_captions(JsonlCaptionsConfig(path=str(path)), split="train", image_size=SIZE)
    assert len(dataset) == 2


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"image": "a.jpg", "caption": "x"}\n\n{"image": "b.jpg", "caption": "y"\n')
    with pytest.raises(DataError, match=r"c.jsonl: line 3: invalid JSON at column 34: Expecting ','"):
        build_jsonl_captions(JsonlCaptionsConfig(path=str(path)), split="train", image_size=SIZE)
    path.write_text('{"image": "a.jpg", "caption": "x"}\n{"image": "b.jpg"}\n')
    with pytest.raises(DataError, match=r"line 2: 'caption' must be"):
        build_jsonl_captions(JsonlCaptionsConfig(path=str(path)), split="train", image_size=SIZE)


def test_design_example_and_full_configs_validate(tmp_path):
    from pgmm_core.config.loading import validate_config
    from pgmm_core.plugins import PluginHost
    from pgmm_core.testing import tiny_config

    design_example = {"type": "coco_caption", "root": "/data/coco", "split": "val"}
    assert CocoCaptionConfig.model_validate(design_example).split == "val"
    data = tiny_config(tmp_path, data={
        "train": [{"type": "coco_caption", "root": "/data/coco"}, {"type": "vg_caption", "root": "/data/vg"},
                  {"type": "jsonl_captions", "path": "/data/mine.jsonl", "image_processor": "blip_image_train"}],
        "val": [{"type": "coco_caption", "root": "/data/coco", "split": "val"}],
    })
    config = validate_config(data, PluginHost())
    assert [d.type for d in config.data.train] == ["coco_caption", "vg_caption", "jsonl_captions"]
    data["data"]["train"][0]["min_scale"] = 0.9
    data["data"]["train"][0]["max_scale"] = 0.5
    from pgmm_core.errors import ConfigError

    with pytest.raises(ConfigError, match="data.train.0"):
        validate_config(data, PluginHost())
