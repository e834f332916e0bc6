"""Acceptance: training and evaluation over COCO- and VG-layout trees, bad images, the data check command."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from pgmm_core.config.loading import validate_config
from pgmm_core.errors import DataError
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config, write_config
from pgmm_data.testing import write_coco_tree, write_vg_tree

NO_JAVA = {"java": "/nonexistent/java"}  # simple tokenizer instead of the PTB one: these tests are about data


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    coco = write_coco_tree(root / "coco", train=6, val=3, test=2)
    return coco, write_vg_tree(root / "vg", images=4, regions_per_image=2)


def _train(config_dict):
    from pgmm_core.train import train

    return train(validate_config(config_dict, PluginHost()))


def test_train_and_evaluate_on_coco_and_vg_trees(trees, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pgmm_core")
    coco, vg = trees
    config = tiny_config(
        tmp_path / "run",
        data={"train": [{"type": "coco_caption", "root": str(coco.root)}, {"type": "vg_caption", "root": str(vg.root)}],
              "val": [{"type": "coco_caption", "root": str(coco.root), "split": "val"}], "batch_size": 6},
        train={"epochs": 2, "log_every": 1},
        eval={"generation": {"num_beams": 1, "max_new_tokens": 4, "min_new_tokens": 1}, **NO_JAVA},
    )
    summary = _train(config)
    assert summary["steps"] == 2 * (30 + 8) // 6 and summary["bad_images"] == 0
    assert summary["first_loss"] > 0 and "CIDEr" in summary["metrics"]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert sorted(r["image_id"] for r in results) == [5000, 5001, 5002]  # ints from the COCO file names
    assert "unreadable" not in caplog.text


def test_five_percent_bad_images_train_to_completion_with_the_exact_count(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pgmm_core")  # the trainer's messages (the CLI prints them)
    # 40 images x 1 caption; image 7 missing, 19 truncated: 2 of 40 = 5% of the samples
    coco = write_coco_tree(tmp_path / "coco", train=40, val=1, test=1, captions_per_image=1,
                           broken={7: "missing", 19: "truncated"})
    config = tiny_config(
        tmp_path / "run",
        data={"train": [{"type": "coco_caption", "root": str(coco.root)}], "val": [], "batch_size": 8,
              "max_bad_fraction": 0.1},
        train={"epochs": 2, "log_every": 5},
    )
    summary = _train(config)
    assert summary["steps"] == 10 and summary["bad_images"] == 4  # 2 bad images met once per epoch
    out = "\n".join(caplog.messages)
    assert out.count("epoch 0: skipped 2 unreadable image(s)") == 1
    assert out.count("epoch 1: skipped 2 unreadable image(s)") == 1
    assert "4 unreadable image(s) were skipped in total" in out
    assert "COCO_train2014_000000001007.jpg: file not found" in out
    assert "COCO_train2014_000000001019.jpg: cannot decode" in out


def test_too_many_bad_images_stop_the_run_naming_them(tmp_path):
    coco = write_coco_tree(tmp_path / "coco", train=40, val=1, test=1, captions_per_image=2,
                           broken={i: "corrupt" for i in range(0, 40, 5)})  # 20%
    config = tiny_config(
        tmp_path / "run",
        data={"train": [{"type": "coco_caption", "root": str(coco.root)}], "val": [], "batch_size": 8,
              "max_bad_fraction": 0.05},
    )
    with pytest.raises(DataError, match=r"images could not be read \(.*% > data.max_bad_fraction 5.0%\)"
                       r"[\s\S]*COCO_train2014_0000000010[0-9][0-9].jpg: not an image file"):
        _train(config)


def _forty_percent_bad(tmp_path, **train):
    """50 images x 1 caption, 20 of them corrupt; batch 8: 48 read per epoch (under the 50 after
    which every batch checks the limit), 2 never read (drop_last)."""
    coco = write_coco_tree(tmp_path / "coco", train=50, val=1, test=1, captions_per_image=1,
                           broken={i: "corrupt" for i in range(0, 50, 5)} | {i: "missing" for i in range(1, 50, 5)})
    return tiny_config(
        tmp_path / "run",
        data={"train": [{"type": "coco_caption", "root": str(coco.root)}], "val": [], "batch_size": 8,
              "max_bad_fraction": 0.2},
        train={"epochs": 2, "log_every": 1, **train},
    )


def test_the_bad_image_limit_holds_at_the_epoch_end_of_a_small_set(tmp_path):
    config = _forty_percent_bad(tmp_path, save_every=3)
    with pytest.raises(DataError) as caught:
        _train(config)
    message = str(caught.value)
    assert re.search(r"\b(1[6-9]|2[0-4]) of 48 images could not be read \(\d+\.\d% > data.max_bad_fraction 20.0%\)",
                     message), message
    assert "2 image(s) were never read" in message
    run = tmp_path / "run"
    assert f"The last good checkpoint is {run / 'checkpoints' / 'step-000003'} (step 3)" in message
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000003"]  # none after the epoch


def test_the_bad_image_limit_holds_at_the_end_of_a_short_run_and_the_cli_exits_non_zero(tmp_path):
    config = _forty_percent_bad(tmp_path, max_steps=4)  # 32 images read: stops before the first epoch end
    result = subprocess.run([sys.executable, "-m", "pgmm_core.train", "--config",
                             str(write_config(tmp_path / "config.json", config))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == DataError.exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and result.stderr.count("pgmm: error:") == 1
    assert re.search(r"\d+ of 32 images could not be read", result.stderr), result.stderr
    assert "No checkpoint was saved before it" in result.stderr
    assert not list((tmp_path / "run" / "checkpoints").glob("step-*"))  # the over-limit run is not saved
    assert "pgmm: done" not in result.stdout


def test_images_never_read_are_counted_and_reported(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pgmm_core")
    coco = write_coco_tree(tmp_path / "coco", train=50, val=1, test=1, captions_per_image=1)
    config = tiny_config(tmp_path / "run", data={"train": [{"type": "coco_caption", "root": str(coco.root)}],
                                                 "val": [], "batch_size": 8}, train={"epochs": 2})
    summary = _train(config)
    assert summary["steps"] == 12 and summary["bad_images"] == 0 and summary["unread_images"] == 4
    assert "4 image(s) were never read: each epoch's last partial batch is dropped" in caplog.text


def test_malformed_annotations_fail_before_training(tmp_path, capsys):
    from pgmm_core.train.__main__ import main as train_main

    coco = write_coco_tree(tmp_path / "coco", train=2, val=1, test=1)
    text = coco.annotation_files["train"].read_text()
    coco.annotation_files["train"].write_text(text.replace('"caption"', '"captoin"', 1))
    config = tiny_config(tmp_path / "run", data={"train": [{"type": "coco_caption", "root": str(coco.root)}]})
    assert train_main(["--config", str(write_config(tmp_path / "c.json", config))]) == 5  # DataError's exit code
    err = capsys.readouterr().err
    assert "coco_karpathy_train.json: entry 0: 'caption' must be" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_data_check_reports_counts_bad_files_and_caption_lengths(tmp_path, capsys):
    from pgmm_core.cli import main as cli_main

    coco = write_coco_tree(tmp_path / "coco", train=6, val=2, test=1, broken={2: "truncated", 4: "missing"})
    vg = write_vg_tree(tmp_path / "vg", images=3, regions_per_image=2)
    config = tiny_config(tmp_path / "run", data={
        "train": [{"type": "coco_caption", "root": str(coco.root)}, {"type": "vg_caption", "root": str(vg.root)}],
        "val": [{"type": "coco_caption", "root": str(coco.root), "split": "val"}],
        "test": [{"type": "synthetic_shapes", "num_samples": 5}],
    })
    path = str(write_config(tmp_path / "c.json", config))
    assert cli_main(["data", "check", "--config", path, "--json"]) == 1  # some images are bad
    captured = capsys.readouterr()
    reports = {r["name"]: r for r in json.loads(captured.out)["datasets"]}
    train = reports["coco_caption[train]"]
    assert (train["images"], train["samples"], train["bad_images"], train["bad_samples"]) == (6, 30, 2, 10)
    assert train["bad_by_kind"] == {"missing": 1, "unreadable": 1}
    assert any("COCO_train2014_000000001002.jpg: cannot decode" in e for e in train["bad_examples"])
    assert train["caption_words"]["min"] >= 5 and train["caption_words"]["max"] <= 16 and train["over_max_words"] == 0
    assert reports["vg_caption[train]"]["bad_images"] == 0 and reports["vg_caption[train]"]["samples"] == 6
    assert reports["coco_caption[val]"]["images"] == 2 and reports["coco_caption[val]"]["captions"] == 10
    assert reports["synthetic_shapes[test]"]["samples"] == 5 and reports["synthetic_shapes[test]"]["bad_images"] == 0
    assert "coco_caption[train]" in captured.err  # the progress bar

    assert cli_main(["data", "check", "--config", path, "train.seed=1"]) == 1
    text = capsys.readouterr().out
    assert "2 bad (1 missing, 1 unreadable)" in text
    assert "10 skipped per pass (33.33%, over data.max_bad_fraction" in text
    assert cli_main(["data", "check", "--config", path, "--split", "val"]) == 0
    text = capsys.readouterr().out
    assert "coco_caption[val]" in text and "all images of 1 dataset(s) are usable" in text
    assert "caption words (10 captions)" in text


def test_data_check_decodes_in_worker_processes(tmp_path):
    from pgmm_data.check import _scan

    coco = write_coco_tree(tmp_path / "coco", train=70, val=1, test=1, size=(16, 12), captions_per_image=1,
                           broken={65: "corrupt"})
    paths = [str(p) for p in coco.images["train"]]
    outcomes = _scan(paths, 10**6, workers=2, headers_only=False, label="scan")
    assert [i for i, o in enumerate(outcomes) if o] == [65] and outcomes[65][0] == "unreadable"


def test_plugins_json_lists_the_four_datasets():
    result = subprocess.run([sys.executable, "-m", "pgmm_core", "plugins", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data_plugin = next(p for p in json.loads(result.stdout) if p["distribution"] == "pgmm-data")
    for name in ("coco_caption", "vg_caption", "jsonl_captions", "synthetic_shapes"):
        assert f"dataset:{name}" in data_plugin["components"]


def test_data_check_warns_about_empty_captions(tmp_path, capsys):
    from pgmm_core.cli import main as cli_main
    from pgmm_data.testing import write_jsonl_tree

    tree = write_jsonl_tree(tmp_path / "mine", images=4)
    path = tree.annotation_files["train"]
    lines = path.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["caption"] = " ... "  # nothing left once punctuation is removed
    lines[0] = json.dumps(first)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tiny_config(tmp_path / "run", data={"train": [{"type": "jsonl_captions", "path": str(path)}], "val": []})
    assert cli_main(["data", "check", "--config", str(write_config(tmp_path / "c.json", config))]) == 0
    assert "warning: 1 empty caption(s)" in capsys.readouterr().out
