"""``data shard`` (WebDataset shards in img2dataset's layout, manifest, resume) and ``data check --shards``."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from pgmm_core.cli import main as cli_main
from pgmm_core.testing import tiny_config, write_config
from pgmm_data.testing import write_coco_tree, write_jsonl_tree


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _shard(config: Path, out: Path, per_shard: int, *extra: str) -> int:
    return cli_main(["data", "shard", str(config), "--out", str(out), "--samples-per-shard", str(per_shard), *extra])


@pytest.fixture()
def jsonl_config(tmp_path):
    tree = write_jsonl_tree(tmp_path / "mine", images=7)  # 1 or 2 captions per image: 10 captions
    tree.images["train"][3].write_bytes(b"not a JPEG " * 10)  # 2 captions
    config = tiny_config(tmp_path / "run", data={"train": [{"type": "jsonl_captions",
                                                             "path": str(tree.annotation_files["train"])}]})
    return write_config(tmp_path / "c.json", config), tree


def test_jsonl_captions_become_well_formed_shards_with_a_manifest(jsonl_config, tmp_path, capsys):
    config, tree = jsonl_config
    out = tmp_path / "shards"
    assert _shard(config, out, 3) == 0
    assert "skipped 2 sample(s) of 1 bad image(s) (1 unreadable)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "00001.tar", "00002.tar", "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["layout"] == "img2dataset"
    lines = [json.loads(line) for line in tree.annotation_files["train"].read_text().splitlines()]
    expected = [(line["image"], c) for line in lines for c in ([line["caption"]] if isinstance(line["caption"], str)
                                                                else line["caption"]) if line["image"] != "photos/img_003.jpg"]
    seen = []
    for index, entry in enumerate(manifest["shards"]):
        path = out / entry["name"]
        data = path.read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        members = _members(path)
        keys = [name.split(".")[0] for name, _ in members[::3]]
        assert [name for name, _ in members] == [f"{k}.{ext}" for k in keys for ext in ("jpg", "txt", "json")]
        assert keys == [f"{index:05d}{offset}" for offset in range(entry["samples"])]  # img2dataset's keys
        for (_, image), (_, text), (_, meta) in zip(members[::3], members[1::3], members[2::3]):
            meta = json.loads(meta)
            assert image == Path(meta["source_image"]).read_bytes()  # the JPEG byte for byte
            assert text.decode() == meta["caption"]
            seen.append((Path(meta["source_image"]).relative_to(tree.root).as_posix(), meta["caption"]))
            assert (meta["width"], meta["height"]) == (64, 48) and meta["source"] == "jsonl_captions[train]"
    assert seen == expected and [s["samples"] for s in manifest["shards"]] == [3, 3, 2]
    totals = manifest["totals"]
    assert (totals["samples"], totals["skipped_samples"], totals["bad_images"], totals["source_samples"]) == (8, 2, 1, 10)
    assert manifest["shards"][1]["bad"] == [{"image": str(tree.images["train"][3]), "kind": "unreadable",
                                             "reason": "not an image file PIL can read", "samples": 2}]
    assert manifest["source"]["dataset"]["type"] == "jsonl_captions" and manifest["settings"]["samples_per_shard"] == 3

    assert cli_main(["data", "check", "--shards", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["samples"] == report["totals"]["good"] == 8
    assert report["manifest"] == "complete" and report["manifest_problems"] == []


def test_synthetic_shapes_shards_are_deterministic_pngs(tmp_path):
    from pgmm_data.synthetic import render
    from PIL import Image

    config = write_config(tmp_path / "c.json", tiny_config(tmp_path / "run", data={
        "train": [{"type": "synthetic_shapes", "num_samples": 10, "seed": 3}]}))
    assert _shard(config, tmp_path / "a", 4) == 0
    assert _shard(config, tmp_path / "b", 4) == 0
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b")  # same input, same bytes (manifest included)
    assert sorted(first) == ["00000.tar", "00001.tar", "00002.tar", "manifest.json"]
    members = _members(tmp_path / "a" / "00001.tar")
    assert [n for n, _ in members][:3] == ["000010.png", "000010.txt", "000010.json"]
    meta = json.loads(members[2][1])
    image, (colour, shape, place) = render(3, "train", meta["source_index"], meta["width"])
    assert meta["source_index"] == 4 and members[1][1].decode() == f"a {colour} {shape} in the {place}"
    assert Image.open(io.BytesIO(members[0][1])).tobytes() == image.tobytes()  # lossless


_KILL = textwrap.dedent("""
    import os, signal, sys
    from pgmm_data import shard_tar
    add = shard_tar.ShardTarWriter.add
    count = 0
    def add_then_die(self, key, members):
        global count
        add(self, key, members)
        count += 1
        if count == int(sys.argv[1]):
            self._handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # as a lost node or an OOM kill: no cleanup at all
    shard_tar.ShardTarWriter.add = add_then_die
    from pgmm_core.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_a_killed_run_resumes_to_identical_output(tmp_path, capsys):
    coco = write_coco_tree(tmp_path / "coco", train=5, captions_per_image=3, broken={1: "truncated"})
    config = write_config(tmp_path / "c.json", tiny_config(tmp_path / "run", data={
        "train": [{"type": "coco_caption", "root": str(coco.root)}]}))
    assert _shard(config, tmp_path / "straight", 4, "--shuffle", "7") == 0
    out = tmp_path / "resumed"
    args = ["data", "shard", str(config), "--out", str(out), "--samples-per-shard", "4", "--shuffle", "7"]
    killed = subprocess.run([sys.executable, "-c", _KILL, "6", *args], capture_output=True, text=True,
                            timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr
    left = sorted(p.name for p in out.iterdir())
    assert left == ["00000.tar", "00001.tar.tmp", "manifest.json"]  # one shard done, the second half-written
    assert (out / "00001.tar.tmp").stat().st_size > 0
    assert not json.loads((out / "manifest.json").read_text())["complete"]

    assert cli_main(args) == 0
    straight = _files(tmp_path / "straight")
    assert _files(out) == straight
    manifest = json.loads(straight["manifest.json"])
    assert manifest["totals"]["samples"] == 12 and manifest["totals"]["skipped_samples"] == 3

    damaged = bytearray((out / "00002.tar").read_bytes())  # a completed shard changed on disk
    damaged[700] ^= 0xFF
    (out / "00002.tar").write_bytes(bytes(damaged))
    assert cli_main(args) == 0
    assert _files(out) == straight
    capsys.readouterr()

    other = ["data", "shard", str(config), "--out", str(out), "--samples-per-shard", "5"]
    assert cli_main(other) != 0  # other settings: refused, nothing touched
    assert "holds shards of another settings" in capsys.readouterr().err
    assert _files(out) == straight


def test_coco_val_split_gives_one_sample_per_image_with_its_references(tmp_path):
    coco = write_coco_tree(tmp_path / "coco", train=2, val=3, test=1)
    config = write_config(tmp_path / "c.json", tiny_config(tmp_path / "run", data={
        "val": [{"type": "coco_caption", "root": str(coco.root), "split": "val"}]}))
    assert _shard(config, tmp_path / "val", 10, "--split", "val") == 0
    members = _members(tmp_path / "val" / "00000.tar")
    metas = [json.loads(data) for name, data in members if name.endswith(".json")]
    assert [m["image_id"] for m in metas] == [5000, 5001, 5002]
    assert all(len(m["references"]) == 5 and m["caption"] == m["references"][0] for m in metas)


def test_data_check_reports_truncated_shards_and_bad_members(jsonl_config, tmp_path, capsys):
    config, tree = jsonl_config
    out = tmp_path / "shards"
    assert _shard(config, out, 3) == 0
    capsys.readouterr()
    data = (out / "00001.tar").read_bytes()
    (out / "00001.tar").write_bytes(data[:1000])  # inside the first sample's JPEG
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in [("x1.jpg", b"broken"), ("x1.txt", b"a cat"), ("x2.jpg", tree.images["train"][0].read_bytes()),
                              ("x2.json", b"{}"), ("x3.png", tree.images["train"][0].read_bytes()), ("x3.txt", b"  ")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    (out / "00003.tar").write_bytes(buffer.getvalue())
    assert cli_main(["data", "check", "--shards", str(out), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["bad_by_kind"] == {"empty_caption": 1, "missing_caption": 1, "truncated": 1,
                                               "undecodable_image": 1}
    assert report["totals"]["truncated"] == ["00001.tar"]
    assert report["totals"]["samples"] == 3 + 1 + 2 + 3 and report["totals"]["good"] == 3 + 2
    assert any(p.startswith("00001.tar: differs from manifest.json") for p in report["manifest_problems"])
    assert "00003.tar: not listed in manifest.json" in report["manifest_problems"]

    assert cli_main(["data", "check", "--shards", str(out / "00003.tar")]) == 1
    text = capsys.readouterr().out
    assert "x1: undecodable image: x1.jpg: not an image file PIL can read" in text
    assert "x2: missing caption: no x2.txt" in text and "manifest: none" in text


def test_the_tiny_demo_training_data_can_be_sharded(tmp_path, capsys):
    demo = Path(__file__).parents[3] / "examples" / "tiny" / "stage2.json"
    out = tmp_path / "tiny"
    args = ["data", "shard", str(demo), "--out", str(out), "--samples-per-shard", "64", "data.train.0.max_samples=150",
            "--json"]
    assert cli_main(args) == 0
    assert json.loads(capsys.readouterr().out) == {
        "shards": 3, "samples": 150, "bytes": sum(p.stat().st_size for p in out.glob("*.tar")), "skipped_samples": 0,
        "bad_images": 0, "bad_by_kind": {}, "source_samples": 150}
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["samples"] for s in manifest["shards"]] == [64, 64, 22]
    assert manifest["source"]["image_size"] == 64 and manifest["source"]["overrides"] == ["data.train.0.max_samples=150"]
    names = [name for name, _ in _members(out / "00002.tar")]
    assert names[:3] == ["0000200.png", "0000200.txt", "0000200.json"] and len(names) == 3 * 22
    assert cli_main(["data", "check", "--shards", str(out)]) == 0
    assert "150 samples" in capsys.readouterr().out

    # the demo trains from those shards, and `data check --config` reads them as the run will
    from_shards = json.loads(demo.read_text())
    from_shards["data"]["train"] = [{"type": "webdataset_captions", "shards": str(out / "{00000..00002}.tar"),
                                     "buffer_size": 32}]
    from_shards["data"]["val"] = [{"type": "synthetic_shapes", "num_samples": 8, "seed": 0}]
    from_shards["train"].update(output_dir=str(tmp_path / "run"), max_steps=3, log_every=1, eval_every=3,
                                save_every=3)
    config = write_config(tmp_path / "shards.json", from_shards)
    assert cli_main(["data", "check", "--config", str(config), "--split", "train"]) == 0
    assert "150 samples" in capsys.readouterr().out
    assert cli_main(["train", "--config", str(config)]) == 0
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]
    assert (tmp_path / "run" / "checkpoints" / "step-000003").is_dir()


def test_png_and_webp_are_kept_as_they_are_and_other_formats_become_png(tmp_path):
    from pgmm_data.testing import photo
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    lines = []
    for index, (name, fmt) in enumerate([("a.png", "PNG"), ("b.webp", "WEBP"), ("c.bmp", "BMP"), ("d.jpg", "PNG")]):
        photo(index, (40, 30)).convert("RGB").save(folder / name, format=fmt)  # d.jpg holds PNG data
        lines.append(json.dumps({"image": name, "caption": f"picture {index}"}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path / "c.json", tiny_config(tmp_path / "run", data={
        "train": [{"type": "jsonl_captions", "path": str(folder / "captions.jsonl")}]}))
    assert _shard(config, tmp_path / "out", 10) == 0
    members = dict(_members(tmp_path / "out" / "00000.tar"))
    images = {name: data for name, data in members.items() if not name.endswith((".txt", ".json"))}
    assert sorted(images) == ["000000.png", "000001.webp", "000002.png", "000003.png"]
    assert images["000000.png"] == (folder / "a.png").read_bytes()
    assert images["000001.webp"] == (folder / "b.webp").read_bytes()
    assert images["000003.png"] == (folder / "d.jpg").read_bytes()  # by content, not by file name
    bmp = Image.open(io.BytesIO(images["000002.png"]))
    assert bmp.format == "PNG" and bmp.tobytes() == Image.open(folder / "c.bmp").convert("RGB").tobytes()
    assert json.loads(members["000002.json"])["reencoded"] == "png"
    assert "reencoded" not in json.loads(members["000000.json"])
