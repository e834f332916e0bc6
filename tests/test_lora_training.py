"""Training with LoRA on the LLM (``model.llm.lora``), end to end: the trainable-only checkpoint holds
the adapters, resume is bit-identical, ``fsdp2`` on 2 ranks follows one process, and
``python -m pgmm_core export --merge-lora`` writes an openPangu-layout LLM that gives the adapter
model's logits (to 1e-5) when read back by pgmm's openPangu loader.

The runs: one process, 4 steps, checkpoints at 2 and 4 (the adapters learn fast: lr 1e-2; adapter
dropout on); the same resumed from step 2; ``ddp`` and ``fsdp2`` on 2 ranks with the same global batch and the LLM's
activation checkpointing on.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from pgmm_core.testing import final_weights, log_records, no_dropout_config, run_train

STEPS = 4
LORA = {"rank": 4, "alpha": 8, "dropout": 0.0}  # runs on different rank counts compare step by step


SINGLE_LORA = {**LORA, "dropout": 0.1}  # one process: resume must restore the adapters' dropout too


def _config(out: Path, *, ranks: int = 1, lora: dict | None = LORA, **train) -> dict:
    config = no_dropout_config(out, train={"log_every": 1, "max_steps": STEPS, "save_every": 2, "lr": 1e-2,
                                           "warmup_steps": 0, **train})
    config["model"]["llm"].update({"num_layers": 2, "lora": lora})
    config["data"].update({"batch_size": 8 // ranks, "val": []})
    if ranks > 1:
        config["strategy"] = {"type": "fsdp2"}
        config["model"]["llm"]["grad_checkpointing"] = True
    return config


def _train(config: dict, tmp: Path, name: str, *extra: str, ranks: int = 1) -> Path:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] \
        if ranks > 1 else None
    result = run_train(config, tmp, *extra, name=name, launcher=launcher)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return Path(config["train"]["output_dir"])


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in log_records(run_dir)}


def _export(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m pgmm_core export ARGS`` in this process: exit code, stdout, stderr."""
    from pgmm_core.cli import main

    capsys.readouterr()
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lora")
    return _train(_config(tmp / "single", lora=SINGLE_LORA), tmp, "single.json")


def test_checkpoint_holds_the_adapters_and_the_usual_parts(run):
    weights = final_weights(run)
    llm = sorted(k for k in weights if k.startswith("llm."))
    assert llm and all(".lora_A.default." in k or ".lora_B.default." in k for k in llm)
    assert len(llm) == 2 * 7 * 2  # A and B of 7 projections in each of 2 layers
    assert any(k.startswith("projector.") for k in weights) and any(k.startswith("connector.") for k in weights)
    assert all(weights[k].dtype == torch.float32 for k in llm)
    assert any(weights[k].abs().sum() > 0 for k in llm if ".lora_B." in k)  # B starts at zero: it trained
    recorded = json.loads((run / "frozen_weights.json").read_text())["fingerprint"]
    assert set(recorded) == {"llm", "vision"}


def test_resume_is_bitwise(run, tmp_path):
    config = _config(tmp_path / "resumed", lora=SINGLE_LORA)
    out = Path(config["train"]["output_dir"])
    shutil.copytree(run / "checkpoints" / "step-000002", out / "checkpoints" / "step-000002")
    resumed = _train(config, tmp_path, "resumed.json", "--resume", "auto")
    assert _losses(resumed) == {s: v for s, v in _losses(run).items() if s > 2}
    first, second = final_weights(run), final_weights(resumed)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_fsdp2_follows_ddp_on_two_ranks(run, tmp_path):
    """The adapters sit in the frozen LLM's decoder layers: fsdp2 shards the LLM as one mixed part."""
    ddp = _config(tmp_path / "ddp", ranks=2)
    ddp["strategy"] = {"type": "ddp"}
    replicated = _train(ddp, tmp_path, "ddp.json", ranks=2)
    sharded = _train(_config(tmp_path / "fsdp2", ranks=2), tmp_path, "fsdp2.json", ranks=2)
    assert sorted(_losses(sharded)) == list(range(1, STEPS + 1))
    for step, loss in _losses(replicated).items():
        assert _losses(sharded)[step] == pytest.approx(loss, rel=1e-5)
    one, two = final_weights(replicated), final_weights(sharded)
    assert one.keys() == two.keys() == final_weights(run).keys()  # whole adapters, gathered into one file
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.slow
def test_fsdp2_trains_adapters_beside_a_bf16_base(run, tmp_path):
    """bf16 policy: each decoder-layer unit holds bf16 frozen weights and float32 adapters (gathered
    in their own dtypes); the adapters train in float32 and the loss follows the fp32 run's."""
    config = _config(tmp_path / "bf16", ranks=2)
    config["device"]["precision"] = "bf16"
    sharded = _train(config, tmp_path, "bf16.json", ranks=2)
    weights = final_weights(sharded)
    assert weights.keys() == final_weights(run).keys()
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
    for step, loss in _losses(run).items():
        assert _losses(sharded)[step] == pytest.approx(loss, rel=1e-2)


def test_export_merges_into_the_release_layout(run, tmp_path, capsys):
    from pgmm_core.runs import load_run
    from pgmm_pangu.checkpoint import load_llama

    out = tmp_path / "merged"
    code, stdout, stderr = _export(capsys, "--run", str(run), "--merge-lora", "--out", str(out), "--checkpoint", "last")
    assert code == 0, stderr[-3000:]
    assert "merged the LoRA adapters" in stdout
    loaded = load_run(run, checkpoint="last")
    source = Path(loaded.model.llm.source_path)
    # the release's files, the same shards and key-to-shard map; nothing else
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in source.iterdir())
    for name in ("config.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes(), name
    index, original = (json.loads((d / "model.safetensors.index.json").read_text()) for d in (out, source))
    assert index["weight_map"] == original["weight_map"]
    assert index["metadata"]["total_size"] == original["metadata"]["total_size"]

    merged = load_llama(out)
    ids = torch.randint(3, 300, (2, 16))
    with torch.no_grad():
        adapted = loaded.model.llm.model(input_ids=ids).logits
        base = load_llama(source)(input_ids=ids).logits
        exported = merged(input_ids=ids).logits
    assert (adapted - base).abs().max() > 1e-3  # the adapters changed the model
    torch.testing.assert_close(exported, adapted, rtol=0, atol=1e-5)


def test_export_refuses_clearly(run, tmp_path, capsys):
    existing = tmp_path / "exists"
    existing.mkdir()
    code, _, err = _export(capsys, "--run", str(run), "--merge-lora", "--out", str(existing))
    assert code == 2 and "already exists" in err
    code, _, err = _export(capsys, "--run", str(run), "--out", str(tmp_path / "new"))
    assert code == 2 and "--merge-lora" in err
    code, _, err = _export(capsys, "--run", str(tmp_path), "--merge-lora", "--out", str(tmp_path / "new"))
    assert code == 2 and "not a pgmm run directory" in err
    plain = tmp_path / "plain"
    (plain / "checkpoints").mkdir(parents=True)
    config = _config(plain, lora=None)
    (plain / "config.json").write_text(json.dumps(config))
    code, _, err = _export(capsys, "--run", str(plain), "--merge-lora", "--out", str(tmp_path / "new"))
    assert code == 2 and "trained without LoRA" in err
    other_base = tmp_path / "other-base"
    shutil.copytree(run, other_base)
    record = json.loads((other_base / "frozen_weights.json").read_text())
    record["fingerprint"]["llm"] = "0" * 64  # trained on other LLM weights than model.llm.path holds now
    (other_base / "frozen_weights.json").write_text(json.dumps(record))
    code, _, err = _export(capsys, "--run", str(other_base), "--merge-lora", "--out", str(tmp_path / "new"))
    assert code == 2 and "belong to other base weights" in err
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".tmp-*"))
