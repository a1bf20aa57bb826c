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
    """Unmasked faces are the positives. Two panels: the whole curve, and its start (FNR up to 0.2),
    where operating points lie; the point used is marked."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.8, 4.2))
    for ax, zoom in zip(axes, (False, True)):
        drawn = 0
        # the two curves often coincide: solid and wide under dashed and narrow, so both show
        for key, name, style in (("pipeline_roc", "pipeline (missed = masked)", {"lw": 3.5, "alpha": 0.55}),
                                 ("classifier_roc", "classifier, matched faces", {"lw": 1.2, "ls": "--"})):
            r = metrics[key]
            if r["fpr"]:
                ax.plot(r["fpr"], r["tpr"], label=f"{name}, AUC {r['auc']:.3f}", **style)
                drawn += 1
        if metrics.get("fnr") == metrics.get("fnr") and metrics.get("tnr") == metrics.get("tnr") and metrics.get("fnr") is not None:
            ax.plot([metrics["fnr"]], [metrics["tnr"]], "o", color="black", ms=5, label=f"threshold used ({metrics['threshold']:.2f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
        ax.set_xlabel("masked faces flagged unmasked (FNR = false positive rate)", fontsize=8)
        ax.set_ylabel("unmasked faces caught (TNR = true positive rate)", fontsize=8)
        if zoom:
            ax.set_xlim(0, 0.2)
            ax.set_xticks([0, 0.05, 0.1, 0.15, 0.2])
            ax.set_ylim(0.5, 1.0)
            ax.set_title("the same, FNR up to 0.2", fontsize=10)
        else:
            ax.set_title("ROC, unmasked faces = positives", fontsize=10)
        if drawn:
            ax.legend(loc="lower right", fontsize=7)
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
    ax.set_title("Detector recall by face width (found / annotated)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def sweep_plot(metrics: dict, path: Path) -> None:
    plt = _plt()
    s = metrics["threshold_sweep"]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ax.plot([x["threshold"] for x in s], [x["tnr"] for x in s], marker="o", ms=3, label="TNR (unmasked caught)")
    ax.plot([x["threshold"] for x in s], [x["fnr"] for x in s], marker="o", ms=3, label="FNR (masked flagged)")
    ax.axvline(metrics["threshold"], color="0.5", ls="--", lw=0.8, label=f"threshold used ({metrics['threshold']:.2f})")
    ax.set_xlabel("mask threshold")
    ax.set_ylabel("share of faces")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("TNR and FNR by mask threshold", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=3, frameon=False)
    ax.grid(alpha=0.3)
    _save(fig, path)
