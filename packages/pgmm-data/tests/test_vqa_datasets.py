"""VQAv2, OK-VQA and GQA read from tiny files in the official and LAVIS formats."""

from __future__ import annotations

import json

import pytest

from pgmm_core.errors import DataError
from pgmm_core.preprocessing import clip_spec
from pgmm_core.vqa_accuracy import exact_match, vqa_accuracy
from pgmm_data.processors import blip_question
from pgmm_data.testing_vqa import write_coco_vqa_tree, write_gqa_tree
from pgmm_data.vqa import VqaEvalSet, VqaTrainSet, answer_weights, build_coco_vqa, build_gqa
from pgmm_data.vqa_configs import GqaConfig, OkVqaConfig, Vqav2Config

SPEC = clip_spec(32)


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    return write_coco_vqa_tree(tmp_path_factory.mktemp("vqav2"), train=3, val=2, size=(40, 32), broken={2: "corrupt"})


@pytest.fixture(scope="module")
def okvqa(tmp_path_factory):
    return write_coco_vqa_tree(tmp_path_factory.mktemp("okvqa"), dataset="okvqa", train=2, val=2, size=(40, 32))


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
    return write_gqa_tree(tmp_path_factory.mktemp("gqa"), train=2, val=2, test=1, size=(40, 32))


def _texts(item):
    return {k: v for k, v in item.items() if k != "image"}


def test_official_val_items_carry_every_annotators_answer_and_the_types(vqa):
    dataset = build_coco_vqa(Vqav2Config(root=str(vqa.root)), split="val", image_spec=SPEC)
    assert isinstance(dataset, VqaEvalSet) and dataset.answer_metric == "vqa" and len(dataset) == 6
    annotations = json.loads(vqa.annotation_files["val2014"].read_text())["annotations"]
    questions = json.loads((vqa.root / "annotations" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    for index in (0, 4):
        item, ann = dataset[index], annotations[index]
        assert item["question_id"] == ann["question_id"] == questions["questions"][index]["question_id"]
        assert item["answers"] == [a["answer"] for a in ann["answers"]] and len(item["answers"]) == 10
        assert item["answer_type"] == ann["answer_type"] and item["question_type"] == ann["question_type"]
        assert item["question"] == blip_question(questions["questions"][index]["question"])
        assert item["image_id"] == ann["image_id"] and tuple(item["image"].shape) == (3, 32, 32)
    assert dataset.table.images[0].endswith(f"val2014/COCO_val2014_{annotations[0]['image_id']:012d}.jpg")


def test_lavis_json_gives_the_same_questions_and_answers_as_the_official_files(vqa):
    official = build_coco_vqa(Vqav2Config(root=str(vqa.root)), split="val", image_spec=SPEC)
    lavis = build_coco_vqa(Vqav2Config(root=str(vqa.root), format="lavis"), split="val", image_spec=SPEC)
    assert len(lavis) == len(official)
    for index in range(len(lavis)):
        assert _texts(lavis[index]) == _texts(official[index])  # types too: LAVIS' download has the official file
    train = build_coco_vqa(Vqav2Config(root=str(vqa.root), format="lavis"), split="train", image_spec=SPEC)
    train_official = build_coco_vqa(Vqav2Config(root=str(vqa.root)), split="train", image_spec=SPEC)
    assert [_texts(train[i]) for i in (0, 3)] == [_texts(train_official[i]) for i in (0, 3)]


def test_lavis_eval_without_the_official_file_has_no_types(vqa, tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "vqa_val_eval.json").write_bytes(vqa.annotation_files["lavis_val2014"].read_bytes())
    config = Vqav2Config(root=str(tmp_path), format="lavis", image_root=str(vqa.root / "images"))
    item = build_coco_vqa(config, split="val", image_spec=SPEC)[1]
    assert item["answer_type"] is None and item["question_type"] is None and len(item["answers"]) == 10


def test_train_items_weight_the_distinct_answers_as_lavis(vqa):
    dataset = build_coco_vqa(Vqav2Config(root=str(vqa.root)), split="train", image_spec=SPEC)
    assert isinstance(dataset, VqaTrainSet) and len(dataset) == 9
    item = dataset[0]  # "astronaut" x6, "a astronaut" x2, "astronauts", "photo"
    assert item["answers"] == ["astronaut", "a astronaut", "astronauts", "photo"]
    assert item["answer_weights"] == pytest.approx([0.6, 0.2, 0.1, 0.1], abs=1e-12)
    assert dataset[1]["answers"] == ["no", "yes"] and dataset[1]["answer_weights"] == pytest.approx([0.7, 0.3])
    assert isinstance(item["question_id"], int) and item["image_id"] == 100
    assert answer_weights(["a", "b", "a", "c"]) == (["a", "b", "c"], [0.5, 0.25, 0.25])


def test_an_unreadable_image_is_reported_and_max_samples_cuts(vqa):
    dataset = build_coco_vqa(Vqav2Config(root=str(vqa.root), max_samples=7), split="train", image_spec=SPEC)
    assert len(dataset) == 7
    assert set(dataset[6]) == {"bad"} and str(vqa.images["train2014"][2]) in dataset[6]["bad"]
    with pytest.raises(IndexError):
        dataset[7]


def test_okvqa_official_names_and_answers(okvqa):
    dataset = build_coco_vqa(OkVqaConfig(root=str(okvqa.root)), split="test", image_spec=SPEC)
    item = dataset[0]
    assert len(item["answers"]) == 10 and item["answers"][0] == item["answers"][1]
    assert item["answer_type"] == "other" and item["question_type"] == "eight"
    train = build_coco_vqa(OkVqaConfig(root=str(okvqa.root), format="lavis"), split="train", image_spec=SPEC)
    assert sum(train[0]["answer_weights"]) == pytest.approx(1.0) and len(train) == 6


def test_gqa_keeps_string_ids_and_scores_by_exact_match(gqa):
    dataset = build_gqa(GqaConfig(root=str(gqa.root)), split="val", image_spec=SPEC)
    entries = json.loads(gqa.annotation_files["val"].read_text())
    assert dataset.answer_metric == "exact" and len(dataset) == len(entries) == 6
    item = dataset[0]
    assert item["question_id"] == entries[0]["question_id"] and item["question_id"].startswith("0")
    assert item["answers"] == [entries[0]["answer"]] and item["image_id"] == "n161315"
    train = build_gqa(GqaConfig(root=str(gqa.root)), split="train", image_spec=SPEC)[1]
    assert train["answers"] == ["no"] and train["answer_weights"] == [1.0]
    test = build_gqa(GqaConfig(root=str(gqa.root)), split="test", image_spec=SPEC)
    assert test.table.source.endswith("testdev_balanced_questions.json") and len(test) == 3
    truth = dataset.ground_truth()["answers"]
    assert exact_match({q: a[0].upper() + "." for q, a in truth.items()}, {q: a[0] for q, a in truth.items()}) == 1.0


def test_eval_ground_truth_feeds_vqa_accuracy(vqa):
    dataset = build_coco_vqa(Vqav2Config(root=str(vqa.root)), split="val", image_spec=SPEC)
    truth = dataset.ground_truth()
    # first answers, but "2" (one annotator of ten) for the counting questions
    predictions = {q: "2" if truth["answer_types"][q] == "number" else answers[0]
                   for q, answers in truth["answers"].items()}
    result = vqa_accuracy(predictions, truth["answers"], truth["answer_types"], truth["question_types"])
    assert result["questions"] == 6 and set(result["per_answer_type"]) == {"other", "yes/no", "number"}
    assert result["per_answer_type"]["yes/no"] == 1.0  # "no" x7
    assert result["per_answer_type"]["other"] == 1.0  # "astronaut" x6 + "a astronaut" x2 once normalised
    assert result["per_answer_type"]["number"] == pytest.approx(0.3)  # 9 of 10 subsets hold the one "2": 1/3
    assert result["overall"] == pytest.approx((4 + 2 * 0.3) / 6)


def test_missing_files_name_themselves_and_the_download(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"v2_mscoco_val2014_annotations\.json|v2_OpenEnded_mscoco_val2014") as err:
        build_coco_vqa(Vqav2Config(root=str(tmp_path)), split="val", image_spec=SPEC)
    assert "visualqa.org" in str(err.value)
    with pytest.raises(DataError, match=r"okvqa_train\.json.*okvqa\.allenai\.org"):
        build_coco_vqa(OkVqaConfig(root=str(tmp_path), format="lavis"), split="train", image_spec=SPEC)
    with pytest.raises(DataError, match=r"testdev_balanced_questions\.json.*gqa/balanced"):
        build_gqa(GqaConfig(root=str(tmp_path)), split="test", image_spec=SPEC)


def test_required_paths_name_the_default_files(tmp_path):
    paths = {p.path.name for p in Vqav2Config(root=str(tmp_path)).required_paths(split="train")}
    assert {"v2_OpenEnded_mscoco_train2014_questions.json", "v2_mscoco_train2014_annotations.json"} <= paths
    lavis = Vqav2Config(root=str(tmp_path), format="lavis",
                        annotation=["annotations/vqa_train.json", "annotations/vqa_val.json"])
    assert {"vqa_train.json", "vqa_val.json"} <= {p.path.name for p in lavis.required_paths(split="train")}
    assert "val_balanced_questions.json" in {p.path.name for p in GqaConfig(root="x").required_paths(split="val")}


@pytest.mark.parametrize(("entry", "problem"), [
    ({"question_id": 1, "question": "q?", "image": "val2014/x.jpg", "answer": "yes"}, "'answer' must be a non-empty list of strings"),
    ({"question_id": 1, "question": "", "image": "val2014/x.jpg", "answer": ["yes"]}, "'question' must be"),
    ({"question": "q?", "image": "val2014/x.jpg", "answer": ["yes"]}, "'question_id' must be"),
    ({"question_id": 1, "question": "q?", "answer": ["yes"]}, "'image' must be"),
])
def test_bad_lavis_entries_are_refused_with_file_and_entry(tmp_path, entry, problem):
    good = {"question_id": 0, "question": "q?", "image": "val2014/x.jpg", "answer": ["no"]}
    path = tmp_path / "annotations" / "vqa_val_eval.json"
    path.parent.mkdir()
    path.write_text(json.dumps([good, entry]))
    with pytest.raises(DataError, match=rf"vqa_val_eval\.json: entry 1: {problem}"):
        build_coco_vqa(Vqav2Config(root=str(tmp_path), format="lavis"), split="val", image_spec=SPEC)


def test_duplicate_question_ids_and_mismatched_files_are_refused(vqa, tmp_path):
    entries = json.loads(vqa.annotation_files["lavis_val2014"].read_text())
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "vqa_val_eval.json").write_text(json.dumps(entries + entries[:1]))
    with pytest.raises(DataError, match=rf"entry {len(entries)}: question_id {entries[0]['question_id']} was already used"):
        build_coco_vqa(Vqav2Config(root=str(tmp_path), format="lavis"), split="val", image_spec=SPEC)
    ann = tmp_path / "annotations" / "v2_mscoco_val2014_annotations.json"
    ann.write_text(json.dumps({"annotations": []}))
    (tmp_path / "annotations" / "v2_OpenEnded_mscoco_val2014_questions.json").write_bytes(
        (vqa.root / "annotations" / "v2_OpenEnded_mscoco_val2014_questions.json").read_bytes())
    with pytest.raises(DataError, match=r"questions\[0\]: question_id \d+ has no entry in .*same subset"):
        build_coco_vqa(Vqav2Config(root=str(tmp_path)), split="val", image_spec=SPEC)
