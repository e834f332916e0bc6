"""``webdataset_captions`` read as the trainer reads it: dealt to ranks and workers, resumed from a saved
position (also after SIGKILL), mixed with an indexable dataset by weight, and damaged shards."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from pgmm_core.data import BadImageTracker, collate
from pgmm_core.errors import DataError, TooManyBadImagesError
from pgmm_core.preprocessing import clip_spec
from pgmm_core.streaming import TrainStream
from pgmm_data.configs import SyntheticShapesConfig, WebdatasetCaptionsConfig
from pgmm_data.synthetic import build_synthetic_shapes
from pgmm_data.testing_shards import write_caption_shards
from pgmm_data.webdataset import build_webdataset_captions

SPEC = clip_spec(32)


def _dataset(pattern, **fields):
    config = WebdatasetCaptionsConfig(shards=pattern, buffer_size=fields.pop("buffer_size", 4), **fields)
    return build_webdataset_captions(config, split="train", image_spec=SPEC)


def _loader(stream, *, workers, batch_size=3):
    return StatefulDataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=list)


def _keys(batches):
    return [item.get("image_id", item.get("bad")) for batch in batches for item in batch]


def _take(loader, count, iterator=None):
    iterator = iterator if iterator is not None else iter(loader)
    return [next(iterator) for _ in range(count)], iterator


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_caption_shards(tmp_path_factory.mktemp("shards"), shards=8, per_shard=3)


def test_two_ranks_by_two_workers_read_every_sample_once_per_pass(shards):
    dataset = _dataset(shards.pattern)
    assert dataset.samples_per_epoch == 24  # from img2dataset's NNNNN_stats.json
    passes: list[list[str]] = [[], []]
    for rank in range(2):
        stream = TrainStream([dataset], ["shards"], seed=5)
        stream.configure(rank, 2, 2)
        batches, _ = _take(_loader(stream, workers=2), 8)  # 2 passes: 2 workers x 6 samples x 2
        keys = _keys(batches)
        # batches alternate between the workers: batches 0-3 are each worker's first pass
        passes[0] += keys[:12]
        passes[1] += keys[12:]
    for keys in passes:
        assert len(keys) == len(set(keys)) == 24, collections.Counter(keys).most_common(3)
        assert set(keys) == set(shards.all_keys)
    assert passes[0] != passes[1]  # the second pass is dealt and shuffled anew


def test_resume_from_the_saved_state_continues_exactly(shards):
    dataset = _dataset(shards.pattern)
    stream = TrainStream([dataset], ["shards"], seed=1)
    stream.configure(0, 1, 2)
    loader = _loader(stream, workers=2)
    _, iterator = _take(loader, 5)
    state = json.loads(json.dumps(loader.state_dict()))  # JSON-native: it goes into meta.json
    expected, _ = _take(loader, 6, iterator)

    again = TrainStream([dataset], ["shards"], seed=1)
    again.configure(0, 1, 2)
    resumed_loader = _loader(again, workers=2)
    resumed_loader.load_state_dict(state)
    resumed, _ = _take(resumed_loader, 6)
    assert _keys(resumed) == _keys(expected)
    for ours, theirs in zip(expected, resumed):
        for a, b in zip(ours, theirs):
            assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]


KILLED = textwrap.dedent('''
    import json, os, signal, sys
    from torchdata.stateful_dataloader import StatefulDataLoader
    from pgmm_core.preprocessing import clip_spec
    from pgmm_core.streaming import TrainStream
    from pgmm_data.configs import WebdatasetCaptionsConfig
    from pgmm_data.webdataset import build_webdataset_captions

    pattern, out, total, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dataset = build_webdataset_captions(WebdatasetCaptionsConfig(shards=pattern, buffer_size=5), split="train",
                                        image_spec=clip_spec(32))
    stream = TrainStream([dataset], ["shards"], seed=3)
    stream.configure(0, 1, 2)
    loader = StatefulDataLoader(stream, batch_size=2, num_workers=2, collate_fn=list)
    start = 0
    if os.path.exists(out + ".state"):
        saved = json.loads(open(out + ".state").read())
        loader.load_state_dict(saved["loader"])
        start = saved["batch"]
    log = open(out + ".keys", "a")
    for number, batch in zip(range(start, total), loader):
        log.write(json.dumps([number, [item["image_id"] for item in batch]]) + "\\n")
        log.flush()
        if (number + 1) % 3 == 0:  # a checkpoint: the position after this batch, written atomically
            with open(out + ".tmp", "w") as handle:
                handle.write(json.dumps({"batch": number + 1, "loader": loader.state_dict()}))
            os.replace(out + ".tmp", out + ".state")
        if number + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_sees_the_straight_runs_samples(shards, tmp_path):
    total = 20  # 40 samples: more than a pass (24), so the resume crosses into the reshuffled next pass
    run = [sys.executable, "-c", KILLED, shards.pattern]
    killed = subprocess.run([*run, str(tmp_path / "killed"), str(total), "8"])
    assert killed.returncode == -signal.SIGKILL
    saved = json.loads((tmp_path / "killed.state").read_text())["batch"]
    assert saved == 6  # the checkpoint before the kill; batches 6 and 7 were read and are lost
    assert subprocess.run([*run, str(tmp_path / "killed"), str(total), "0"]).returncode == 0

    stream = TrainStream([_dataset(shards.pattern, buffer_size=5)], ["shards"], seed=3)
    stream.configure(0, 1, 2)
    straight = _keys(_take(_loader(stream, workers=2, batch_size=2), total)[0])
    rows = [json.loads(line) for line in (tmp_path / "killed.keys").read_text().splitlines()]
    before = [k for number, keys in rows[:8] if number < saved for k in keys]
    after = [k for number, keys in rows[8:] for k in keys]
    assert collections.Counter(before + after) == collections.Counter(straight)
    assert before + after == straight  # the loader is deterministic: even the order is the same
    assert max(collections.Counter(straight[:24]).values()) == 1  # no sample twice within a pass


def test_truncated_shard_is_read_up_to_the_damage_and_reported(tmp_path):
    whole = write_caption_shards(tmp_path / "whole", shards=2, per_shard=4)
    cut = next(r.end for i, r in enumerate(_dataset(whole.pattern).read_shard(1, 0)) if i == 1) + 700
    damaged = write_caption_shards(tmp_path / "cut", shards=2, per_shard=4, truncate={1: cut})
    dataset = _dataset(damaged.pattern)
    stream = TrainStream([dataset], ["shards"], seed=0)
    stream.configure(0, 1, 0)
    items = iter(stream)
    pass_items = [next(items) for _ in range(4 + 2 + 1)]  # shard 0, shard 1's two whole samples, the report
    keys = [it["image_id"] for it in pass_items if "bad" not in it]
    assert sorted(keys) == sorted(damaged.keys[0] + damaged.keys[1][:2])
    reports = [it["bad"] for it in pass_items if "bad" in it]
    assert len(reports) == 1 and "00001.tar" in reports[0] and "after 2 complete sample(s)" in reports[0]
    tracker = BadImageTracker(max_fraction=0.5)
    tracker.update(collate(pass_items))
    assert tracker.bad == 1 and "00001.tar" in tracker.examples[0]


def test_bad_members_are_skipped_and_counted_like_bad_images(tmp_path):
    shards = write_caption_shards(tmp_path, shards=2, per_shard=4,
                                  broken={1: "corrupt", 2: "no_caption", 5: "no_image", 6: "json_caption"})
    stream = TrainStream([_dataset(shards.pattern)], ["shards"], seed=0)
    stream.configure(0, 1, 0)
    items = iter(stream)
    batch = collate([next(items) for _ in range(8)])
    reasons = sorted(batch.bad)
    assert len(reasons) == 3 and len(batch) == 5
    assert any("000000001.jpg" in r and "cannot decode" in r for r in reasons)
    assert any("000000002" in r and "no caption" in r for r in reasons)
    assert any("000010001" in r and "no image member" in r for r in reasons)
    assert "000010002" in batch.image_ids  # its caption came from the .json
    tracker = BadImageTracker(max_fraction=0.1, min_seen_before_stop=1)
    with pytest.raises(TooManyBadImagesError, match="3 of 8 images"):
        tracker.update(batch)


def test_a_missing_local_shard_is_an_error_at_start_naming_it(shards, tmp_path):
    pattern = shards.pattern.replace("00007}", "00009}")
    with pytest.raises(DataError, match=r"2 of 10 shard\(s\) not found: .*00008\.tar, .*00009\.tar"):
        _dataset(pattern)


def test_pipe_shards_are_read_like_files(shards):
    dataset = _dataset([f"pipe:cat {p}" for p in shards.paths], samples_per_epoch=24)
    records = list(dataset.read_shard(2, 0))
    assert [r.key for r in records] == shards.keys[2]
    assert [r.key for r in dataset.read_shard(2, records[0].end)] == shards.keys[2][1:]


def test_an_unknown_epoch_length_is_an_error(tmp_path):
    shards = write_caption_shards(tmp_path, shards=1, per_shard=2, stats=False)
    with pytest.raises(DataError, match="samples_per_epoch"):
        _dataset(shards.pattern)


def test_mixing_an_indexable_dataset_and_shards_follows_the_weights(shards):
    synthetic = build_synthetic_shapes(SyntheticShapesConfig(num_samples=40), split="train", image_spec=SPEC)
    stream = TrainStream([synthetic, _dataset(shards.pattern)], ["synthetic_shapes", "shards"], weights=[3.0, 1.0],
                         seed=11)
    stream.configure(0, 1, 0)
    items = iter(stream)
    draws = 1200
    drawn = [next(items) for _ in range(draws)]
    from_shards = sum(item["image_id"] in set(shards.all_keys) for item in drawn)
    fraction = from_shards / draws
    sigma = (0.25 * 0.75 / draws) ** 0.5
    assert abs(fraction - 0.25) < 4 * sigma, fraction
    assert stream.state_dict()["counts"] == [draws - from_shards, from_shards]
    shard_keys = [item["image_id"] for item in drawn if item["image_id"] in set(shards.all_keys)]
    assert max(collections.Counter(shard_keys[:24]).values()) == 1  # each pass of the shards reads each sample once


def test_the_epoch_length_comes_from_data_shards_manifest(tmp_path):
    shards = write_caption_shards(tmp_path, shards=2, per_shard=3, stats=False)
    manifest = {"format": "pgmm-shards/1", "shards": [{"name": "00000.tar", "samples": 3, "bytes": 1, "sha256": "x"},
                                                      {"name": "00001.tar", "samples": 2, "bytes": 1, "sha256": "y"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert _dataset(shards.pattern).samples_per_epoch == 5  # manifest.json beside the shards
    assert _dataset(shards.paths[0].as_posix(), manifest=str(tmp_path / "manifest.json")).samples_per_epoch == 3
    assert _dataset(shards.pattern, samples_per_epoch=9).samples_per_epoch == 9  # the config wins


def test_reading_from_the_end_of_a_shard_gives_nothing(tmp_path):
    shards = write_caption_shards(tmp_path, shards=1, per_shard=3)
    records = list(_dataset(shards.pattern).read_shard(0, 0))
    last_end = records[-1].end
    assert list(_dataset(shards.pattern).read_shard(0, last_end)) == []  # the end-of-archive blocks
    data = shards.paths[0].read_bytes()
    shards.paths[0].write_bytes(data[:last_end])  # a tar without end-of-archive blocks: still whole
    assert [r.key for r in _dataset(shards.pattern).read_shard(0, 0)] == shards.keys[0]
    assert list(_dataset(shards.pattern).read_shard(0, last_end)) == []
