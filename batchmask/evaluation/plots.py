"""PNG plots for evaluation reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def roc_plot(metrics: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    drawn = 0
    # the two curves often coincide: solid and wide under dashed and narrow, so both show
    for key, name, style in (("pipeline_roc", "pipeline (missed = masked)", {"lw": 3.5, "alpha": 0.55}),
                             ("classifier_roc", "classifier, matched faces", {"lw": 1.2, "ls": "--"})):
        r = metrics[key]
        if r["fpr"]:
            ax.plot(r["fpr"], r["tpr"], label=f"{name}, AUC {r['auc']:.3f}", **style)
            drawn += 1
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("masked faces flagged unmasked (FNR)")
    ax.set_ylabel("unmasked faces caught (TNR)")
    ax.set_title("ROC, unmasked = positive")
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "needs matched masked and unmasked faces", ha="center", fontsize=9)
    ax.grid(alpha=0.3)
    _save(fig, path)


def recall_plot(metrics: dict, path: Path) -> None:
    plt = _plt()
    buckets = metrics["recall_by_width"]
    names = [b for b, v in buckets.items() if v["faces"]]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    bars = ax.bar(names, [buckets[b]["recall"] for b in names], color="#2563eb")
    for bar, b in zip(bars, names):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"{buckets[b]['found']}/{buckets[b]['faces']}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("face width (px)")
    ax.set_ylabel("detector recall (IoU > 0.5)")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def sweep_plot(metrics: dict, path: Path) -> None:
    plt = _plt()
    s = metrics["threshold_sweep"]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.plot([x["threshold"] for x in s], [x["tnr"] for x in s], marker="o", ms=3, label="TNR (unmasked caught)")
    ax.plot([x["threshold"] for x in s], [x["fnr"] for x in s], marker="o", ms=3, label="FNR (masked flagged)")
    ax.axvline(metrics["threshold"], color="0.5", ls="--", lw=0.8, label=f"threshold used ({metrics['threshold']:.2f})")
    ax.set_xlabel("mask threshold")
    ax.set_ylabel("share of faces")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
