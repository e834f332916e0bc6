"""The report's metric chart keeps CIDEr (0-10) off the axis of the 0-1 scores."""

from __future__ import annotations

from matplotlib import pyplot as plt

from pgmm_core.report import metrics_figure

HISTORY = [
    {"step": 100, "Bleu_4": 0.21, "METEOR": 0.18, "ROUGE_L": 0.41, "CIDEr": 1.9},
    {"step": 200, "Bleu_4": 0.48, "METEOR": 0.33, "ROUGE_L": 0.72, "CIDEr": 4.6},
]


def _lines(ax):
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}


def test_cider_has_its_own_panel():
    fig = metrics_figure(HISTORY)
    try:
        assert len(fig.axes) == 2
        scores, cider = (_lines(ax) for ax in fig.axes)
        assert set(scores) == {"Bleu_4", "METEOR", "ROUGE_L"} and set(cider) == {"CIDEr"}
        assert cider["CIDEr"] == [1.9, 4.6]
        low, high = fig.axes[0].get_ylim()
        assert high < 1.0  # the 0-1 scores use their own range, not CIDEr's
    finally:
        plt.close(fig)


def test_only_panels_with_data():
    fig = metrics_figure([{"step": 1, "CIDEr": 0.5}])
    try:
        assert len(fig.axes) == 1 and set(_lines(fig.axes[0])) == {"CIDEr"}
    finally:
        plt.close(fig)
