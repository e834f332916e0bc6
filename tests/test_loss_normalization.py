"""``train.loss_normalization``: ``token`` weighs every caption token of a step the same, however the
step's samples are split into micro-batches and ranks; ``mean`` (LAVIS, the default) weighs every
micro-batch the same."""

from __future__ import annotations

import sys

import pgmm_core
from pgmm_core.config.loading import validate_config
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import log_records, no_dropout_config, run_train


def _config(run_dir, *, batch_size, accum_steps, normalization):
    data = no_dropout_config(run_dir, train={"log_every": 1, "epochs": 1, "accum_steps": accum_steps,
                                             "loss_normalization": normalization})
    data["data"]["batch_size"] = batch_size
    data["data"]["val"] = []
    return data


def _losses(tmp_path, name, **settings):
    config = validate_config(_config(tmp_path / name, **settings), PluginHost(environ={}))
    pgmm_core.train(config)
    return [r["loss"] for r in log_records(tmp_path / name)]


def _close(a, b, rel):
    return all(abs(x - y) <= rel * abs(x) for x, y in zip(a, b))


def test_token_normalisation_does_not_depend_on_accumulation(tmp_path):
    whole = _losses(tmp_path, "whole", batch_size=8, accum_steps=1, normalization="token")
    split = _losses(tmp_path, "split", batch_size=4, accum_steps=2, normalization="token")
    assert len(whole) == len(split) == 8
    assert _close(whole, split, 1e-5), (whole, split)
    # the default weighs the two micro-batches equally, whatever their caption lengths: it differs
    mean_split = _losses(tmp_path, "mean", batch_size=4, accum_steps=2, normalization="mean")
    assert not _close(whole, mean_split, 1e-5), (whole, mean_split)


def test_token_normalisation_over_two_ranks_matches_one_process(tmp_path):
    one = _config(tmp_path / "one", batch_size=8, accum_steps=1, normalization="token")
    assert run_train(one, tmp_path, name="one.json").returncode == 0
    two = _config(tmp_path / "two", batch_size=2, accum_steps=2, normalization="token")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = run_train(two, tmp_path, name="two.json", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    a = [r["loss"] for r in log_records(tmp_path / "one")]
    b = [r["loss"] for r in log_records(tmp_path / "two")]
    assert len(a) == len(b) == 8
    assert _close(a, b, 1e-5), (a, b)
