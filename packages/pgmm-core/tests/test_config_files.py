"""``validate`` finds every file a run would open that is missing, named by its config path."""

from __future__ import annotations

import json

from pgmm_core.config.files import missing_paths
from pgmm_core.config.loading import validate_config
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config


def _config(tmp_path, **changes):
    data = tiny_config(tmp_path / "run")
    for section, value in changes.items():
        data[section] = value
    return validate_config(data, PluginHost(environ={}))


def test_tiny_config_needs_no_files(tmp_path):
    assert missing_paths(_config(tmp_path)) == []


def test_every_missing_path_is_listed_with_its_config_path(tmp_path):
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "coco_karpathy_train.json").write_text("[]")
    jsonl = tmp_path / "captions.jsonl"
    model = tiny_config(tmp_path)["model"]
    model["vision"]["checkpoint"] = str(tmp_path / "eva_vit_g.pth")
    model["connector"]["checkpoint"] = str(tmp_path / "blip2_pretrained.pth")
    data = {"train": [{"type": "coco_caption", "root": str(coco)}],
            "val": [{"type": "coco_caption", "root": str(coco)}, {"type": "jsonl_captions", "path": str(jsonl)}],
            "test": [{"type": "vg_caption", "root": str(tmp_path / "vg")}], "batch_size": 2}
    problems = missing_paths(_config(tmp_path, model=model, data=data))
    assert [p.split(":")[0] for p in problems] == [
        "model.vision.checkpoint", "model.connector.checkpoint", "data.val.0.root", "data.val.1.path",
        "data.test.0.root"], problems
    assert str(coco / "annotations" / "coco_karpathy_val.json") in problems[2]  # the split it is in
    assert str(tmp_path / "eva_vit_g.pth") in problems[0] and "LAVIS" in problems[0]
    assert str(tmp_path / "vg") in problems[4] and "vg_caption.json" not in problems[4]  # not inside a missing folder
    jsonl.write_text(json.dumps({"image": "a.jpg", "caption": "x"}) + "\n")
    assert len(missing_paths(_config(tmp_path, model=model, data=data))) == 4


def test_llm_directory_and_its_files(tmp_path):
    model = tiny_config(tmp_path)["model"]
    release = tmp_path / "pangu"
    release.mkdir()
    (release / "config.json").write_text("{}")
    model["llm"] = {"type": "openpangu", "path": str(release)}
    problems = missing_paths(_config(tmp_path, model=model))
    assert problems == [f"model.llm.path: file not found: {release / 'tokenizer.model'} "
                        "(from the openPangu-Embedded-7B release)"]


def test_training_checks_the_files_before_building_anything(tmp_path, monkeypatch):
    """A typo in a data path is reported at once, by config path, not after the model is built."""
    import pytest

    import pgmm_core.train.build
    from pgmm_core.errors import ConfigError
    from pgmm_core.train import train

    def never(*args, **kwargs):
        raise AssertionError("the model was built before the missing file was reported")

    monkeypatch.setattr(pgmm_core.train.build, "build_model", never)  # the name the trainer calls
    data = tiny_config(tmp_path / "run")["data"]
    data["train"] = [{"type": "jsonl_captions", "path": str(tmp_path / "nowhere.jsonl")}]
    with pytest.raises(ConfigError) as error:
        train(_config(tmp_path, data=data))
    assert error.value.problems == [f"data.train.0.path: file not found: {tmp_path / 'nowhere.jsonl'}"]
    assert not (tmp_path / "run").exists()
