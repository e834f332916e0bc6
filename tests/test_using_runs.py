"""Using a trained run: caption real photographs, re-evaluate, report — from the run directory alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pgmm_core.testing import run_train, tiny_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    config = tiny_config(tmp / "run", train={"epochs": 2, "eval_every": 8})
    result = run_train(config, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.jpg", quality=90)
    return folder


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pgmm_core", *args], capture_output=True, text=True, timeout=300)


def test_caption_cli_prints_one_caption_per_photo(trained_run, photos):
    result = cli("caption", "--run", str(trained_run), "--checkpoint", "last", str(photos))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(photos / f"{n}.jpg") for n in ("astronaut", "chelsea", "coffee")]
    assert all(line.split("\t")[1].strip() for line in lines)

    result = cli("caption", "--run", str(trained_run), "--json", "--num-beams", "2",
                 "--num-return-sequences", "2", str(photos / "chelsea.jpg"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all(r["image"].endswith("chelsea.jpg") for r in rows)


def test_caption_cli_reports_unreadable_file_and_continues(trained_run, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    result = cli("caption", "--run", str(trained_run), str(broken), str(photos / "coffee.jpg"))
    assert result.returncode == 1
    assert "cannot read image" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.count("\n") == 1 and "coffee.jpg" in result.stdout
    result = cli("caption", "--run", str(trained_run), "--json", str(broken), str(photos / "coffee.jpg"))
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1 and [sorted(r) for r in rows] == [["error", "image"], ["caption", "image"]]


def test_caption_cli_options_are_checked_and_set_leaves_images_alone(trained_run, photos):
    result = cli("caption", "--run", str(trained_run), "--num-beams", "0", str(photos / "coffee.jpg"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "num_beams" in result.stderr
    result = cli("caption", "--run", str(trained_run), "--batch-size", "0", str(photos / "coffee.jpg"))
    assert result.returncode == 2 and "must be at least 1" in result.stderr
    result = cli("caption", "--run", str(trained_run), "--checkpoint", "last", "--set", "device.type=cpu",
                 str(photos / "coffee.jpg"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(str(photos / "coffee.jpg"))


def test_captioner_api_accepts_paths_pil_and_tensors(trained_run, photos):
    from pgmm_core import Captioner

    captioner = Captioner.from_run(trained_run, checkpoint="last")
    pil = Image.open(photos / "coffee.jpg")
    uint8 = torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()
    pixels = captioner.pixel_values([pil])[0]
    captions = captioner.caption([photos / "coffee.jpg", pil, uint8, pixels], num_beams=1)
    assert len(captions) == 4 and len(set(captions)) == 1  # the same picture, four ways


def test_a_run_rebuilds_the_frozen_weights_it_was_trained_with(trained_run, caplog):
    """The tiny tower is initialised at random (no checkpoint), so loading must use the run's seed.
    A mismatch is a logged warning (on stderr from the CLI)."""
    import logging

    from pgmm_core.runs import load_run

    caplog.set_level(logging.WARNING, logger="pgmm_core")

    assert (trained_run / "frozen_weights.json").is_file()
    torch.manual_seed(1234)
    caller_state = torch.random.get_rng_state()
    first = load_run(trained_run, checkpoint="last")
    assert torch.equal(torch.random.get_rng_state(), caller_state)  # the caller's generator is left alone
    torch.rand(5)
    second = load_run(trained_run, checkpoint="last")
    assert first.frozen_mismatch == [] and second.frozen_mismatch == []
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert not [r for r in caplog.records if "warning" in r.getMessage()]

    reseeded = load_run(trained_run, checkpoint="last", overrides=["train.seed=7"])
    assert reseeded.frozen_mismatch == ["vision"]
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "frozen weights of vision differ" in warned and "model.vision.checkpoint" in warned


def test_evaluate_reproduces_the_trainers_last_metrics(trained_run, tmp_path):
    out = tmp_path / "eval"
    result = cli("evaluate", "--run", str(trained_run), "--checkpoint", "last", "--split", "val", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CIDEr" in result.stdout
    trainer_last = json.loads((trained_run / "metrics.json").read_text())[-1]
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["step"] == trainer_last["step"] == 16
    for name in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert evaluated[name] == trainer_last[name], name
    assert json.loads((out / "results.json").read_text()) == json.loads((trained_run / "results.json").read_text())


def test_evaluate_under_torchrun_matches_one_process(trained_run, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgmm_core",
         "evaluate", str(trained_run), "--checkpoint", "last", "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    trainer_last = json.loads((trained_run / "metrics.json").read_text())[-1]
    evaluated = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for name in ("Bleu_4", "CIDEr"):
        assert evaluated[name] == pytest.approx(trainer_last[name], abs=1e-9), name
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert len(results) == 8 and len({r["image_id"] for r in results}) == 8  # every image once


def test_run_moved_to_another_machine_with_overridden_llm_path(trained_run, tmp_path, photos):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(trained_run, moved)
    llm_dir = tmp_path / "llm"
    from pgmm_core import Captioner

    here = Captioner.from_run(trained_run, checkpoint="last").caption([photos / "astronaut.jpg"])
    there = Captioner.from_run(moved, checkpoint="last", overrides=[f"model.llm.path={llm_dir}"])
    assert there.caption([photos / "astronaut.jpg"]) == here
    assert (llm_dir / "config.json").is_file()


def test_report_page_renders_gallery_and_plots(trained_run, tmp_path):
    result = cli("report", "--run", str(trained_run), "--out", str(tmp_path / "report"), "--gallery", "6")
    assert result.returncode == 0, result.stderr[-2000:]
    page = tmp_path / "report" / "index.html"
    for name in ("loss.png", "lr.png", "metrics.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("PGMM_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required (PGMM_REQUIRE_CHROMIUM is set) but not installed")
        pytest.skip("chromium not installed (CI installs it; apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # Chromium writes dconf and crash-report settings under $HOME whatever --user-data-dir says: its own home
    home = tmp_path / "chromium-home"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         env=env)
    assert dom.stdout.count('<figure class="sample">') == 6
    assert dom.stdout.count('<figure class="plot">') == 3
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,1800", page.as_uri()],
                   capture_output=True, timeout=120, env=env)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    assert pixels.std() > 20  # text, plots and pictures, not a blank page
    saturated = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 60
    assert saturated.mean() > 0.01  # the coloured shapes of the gallery are drawn (plots alone: ~0.4%)
