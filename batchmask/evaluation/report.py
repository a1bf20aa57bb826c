"""`batchmask evaluate`: predictions (ours, run on the engine, or a peer's JSONL) scored
against ground truth, written as metrics.json, report.md, report.html and PNG plots."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import time
from pathlib import Path

from ..sinks import spreadsheet_plain
from ..storage import atomic_write_json, atomic_write_text
from .groundtruth import image_key, load_ground_truth
from .metrics import Prediction, compute_metrics
from .plots import recall_plot, roc_plot, sweep_plot


class PredictionsError(Exception):
    pass


def load_predictions(path: Path) -> dict[str, list[Prediction]]:
    """batchmask's faces.jsonl (one face a line) or a peer's JSONL (one image a line, `faces` list);
    a malformed line is rejected naming its number."""
    preds: dict[str, list[Prediction]] = {}
    seen: dict = {}  # an image (one-image lines) or (image, face) (one-face lines) -> its line
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not row["image"]:
                    raise ValueError("needs an 'image' name")
                name = image_key(row["image"])
                key = name if "faces" in row else (name, row.get("face", line_no))
                if key in seen:
                    what = f"image {name!r}" if "faces" in row else f"face {key[1]!r} of {name!r}"
                    raise PredictionsError(f"{path}:{line_no}: {what} was already given on line {seen[key]} (the file holds some predictions twice?)")
                seen[key] = line_no
                if "faces" in row and isinstance(row["faces"], list):
                    faces = preds.setdefault(name, [])
                    for face in row["faces"]:
                        mask = face.get("mask_prob", face.get("mask_score"))
                        faces.append(_prediction(face["box"], face["det_score"], mask, face.get("incorrect_score")))
                else:
                    box = [row[k] for k in ("x1", "y1", "x2", "y2")]
                    pred = _prediction(box, row["det_score"], row.get("mask_score"), row.get("incorrect_score"))
                    same = (name, tuple(pred.box))  # lines without a `face` index: the same box twice
                    if same in seen:
                        raise PredictionsError(f"{path}:{line_no}: the same box of {name!r} was already given on line {seen[same]}")
                    seen[same] = line_no
                    preds.setdefault(name, []).append(pred)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"{type(e).__name__}: {e}"
                raise PredictionsError(f"{path}:{line_no}: not a prediction line ({reason})") from None
    return preds


def covered_images(path: Path, preds: dict[str, list[Prediction]]) -> set[str] | None:
    """The photos a predictions file says something about, found or not: every image of a one-image-a-line
    file; for batchmask's faces.jsonl (photos without a face have no line) the images.csv beside it;
    None when that cannot be told."""
    with open(path, "rb") as f:
        first = next((line for line in f if line.strip()), b"")
    try:
        per_image = "faces" in json.loads(first.decode("utf-8-sig"))
    except (ValueError, TypeError):
        per_image = False
    if per_image:
        return set(preds)
    table = Path(path).parent / "images.csv"
    try:
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return {image_key(spreadsheet_plain(r["image"])) for r in rows}
    except (OSError, KeyError, ValueError, csv.Error):
        return None


def labelled_threshold(path: Path) -> float | None:
    """The one threshold the rows of batchmask's faces.jsonl were labelled at, from the run
    records beside it (run.json, runs.jsonl); None for other files or rows of several thresholds."""
    from ..sinks import run_records

    folder = Path(path).parent
    try:
        records = run_records(*((folder / name).read_bytes() if (folder / name).is_file() else None for name in ("run.json", "runs.jsonl")))
        runs = set()
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    if "faces" in row or "run_id" not in row:
                        return None
                    runs.add(row["run_id"])
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    thresholds = {(records.get(r) or {}).get("config", {}).get("threshold") for r in runs}
    if len(thresholds) != 1 or None in thresholds:
        return None
    value = thresholds.pop()
    return float(value) if isinstance(value, (int, float)) and 0 <= value <= 1 else None


def _finite(value, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def _probability(value, name: str) -> float | None:
    if value is None:
        return None
    p = _finite(value, name)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be within 0..1, got {value!r}")
    return p


def _prediction(box, det_score, mask, incorrect) -> Prediction:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"box must be 4 numbers [x1, y1, x2, y2], got {box!r}")
    b = [_finite(v, "box coordinate") for v in box]
    if not (b[2] > b[0] and b[3] > b[1]):
        raise ValueError(f"box must have x2 > x1 and y2 > y1, got {box!r}")
    mask_p, incorrect_p = _probability(mask, "mask score"), _probability(incorrect, "incorrect_score")
    if mask_p is None:  # scored as "not flagged", it would make FNR 0 and TNR 0: a detector alone is not what evaluate scores
        raise ValueError("no mask score (mask_score or mask_prob, the probability of a mask): evaluate scores faces found and classified")
    if incorrect_p is not None and mask_p + incorrect_p > 1 + 1e-6:
        raise ValueError(f"mask score {mask_p:g} and incorrect_score {incorrect_p:g} add up to more than 1")
    return Prediction(b, _finite(det_score, "det_score"), mask_p, incorrect_p)


def _seed_table_md(metrics: dict) -> str:
    t = metrics["table"]
    rows = [
        "| faces ≥ {w:g} px | ground truth | identified and classified correctly | identified but classified wrongly | not identified |".format(w=metrics["min_width"]),
        "|---|---:|---:|---:|---:|",
    ]
    for label in ("masked", "unmasked"):
        r = t[label]
        rows.append(f"| {label} | {r['ground_truth']} | {r['identified_correct']} | {r['identified_wrong']} | {r['not_identified']} |")
    i = t["incorrect"]
    rows.append(
        f"| mask worn incorrectly | {i['ground_truth']} | labelled incorrect: {i.get('labelled_incorrect', 0)}, unmasked: {i['labelled_unmasked']} "
        f"| labelled masked: {i['labelled_masked']} | {i['not_identified']} |"
    )
    return "\n".join(rows)


def confusion_md(t: dict) -> list[str]:
    """Rows of a 3-label confusion table (truth down, label given across) with per-class recall."""
    rows = ["| ground truth \\ labelled | " + " | ".join(t["labels"]) + " | recall |", "|---|" + "---:|" * (len(t["labels"]) + 1)]
    for name, counts in zip(t["labels"], t["confusion"]):
        rows.append(f"| {name} | " + " | ".join(str(c) for c in counts) + f" | {fmt(t['recall'][name])} |")
    return rows


def sweep_md(sweep: list[dict], used: float | None = None) -> list[str]:
    """The threshold sweep as a table: 0.10, 0.20, ... and the threshold `used`."""
    shown = [s for s in sweep if round(s["threshold"] * 100) % 10 == 0 or (used is not None and abs(s["threshold"] - used) < 1e-6)]
    return [
        "| threshold | " + " | ".join(f"{s['threshold']:.2f}" for s in shown) + " |",
        "|---|" + "---:|" * len(shown),
        "| TNR | " + " | ".join(fmt(s["tnr"]) for s in shown) + " |",
        "| FNR | " + " | ".join(fmt(s["fnr"]) for s in shown) + " |",
    ]


def _three_labels_md(metrics: dict) -> list[str]:
    t = metrics.get("three_labels")
    if not t:
        why = ("no annotated face was found" if metrics.get("recall_all_sizes") == 0
               else "these predictions carry two labels only (no incorrect score)")
        return ["## Three labels", "", f"No 3 × 3 table: {why}.", ""]
    rows = confusion_md(t)
    rows.append("| precision | " + " | ".join(fmt(t["precision"][c]) for c in t["labels"]) + " | |")
    return [
        "## Three labels",
        "",
        f"Matched faces ≥ {metrics['min_width']:g} px. Masked = P(masked) ≥ threshold; otherwise the likelier of incorrect and unmasked.",
        "",
        *rows,
        "",
        f"Non-compliant recall (incorrect or unmasked faces not labelled masked): {fmt(t['noncompliant_recall'])}. "
        f"Worn-incorrectly faces labelled non-compliant: {fmt(t['incorrect_labelled_noncompliant'])}, exactly incorrect: "
        f"{fmt(t['incorrect_labelled_incorrect'])}. Correctly masked faces labelled incorrect: {fmt(t['masked_labelled_incorrect'])}.",
        "",
    ]


def fmt(x) -> str:
    return "–" if x is None or x != x else f"{x:.3f}"


def render_markdown(metrics: dict, title: str, source: str) -> str:
    buckets = metrics["recall_by_width"]
    lines = [
        f"# {title}",
        "",
        f"{source}. {metrics['images']} images, {metrics['faces']['all']} annotated faces; mask threshold {metrics['threshold']:.2f}; "
        "matching one-to-one at IoU > 0.5, highest detection score first.",
        "",
        *([f"Left out: {len(metrics['left_out_images'])} annotated photos that are not in the photo folder: "
           + ", ".join(metrics["left_out_images"][:10]) + (" …" if len(metrics["left_out_images"]) > 10 else ""), ""]
          if metrics.get("left_out_images") else []),
        *([f"Unreadable: {len(metrics['unreadable_images'])} photos could not be read and count as photos where no face was found: "
           + ", ".join(metrics["unreadable_images"][:10]) + (" …" if len(metrics["unreadable_images"]) > 10 else ""), ""]
          if metrics.get("unreadable_images") else []),
        *([f"Warning: {metrics['boxes_outside_photo']} ground-truth boxes reach beyond their photo (annotations made for another "
           "size of these photos?).", ""] if metrics.get("boxes_outside_photo") else []),
        "## Summary",
        "",
        f"| TNR | FNR | recall ≥ {metrics['min_width']:g} px | recall ≥ 32 px | recall, all sizes | precision | AP50 | false detections / image |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {fmt(metrics['tnr'])} | {fmt(metrics['fnr'])} | {fmt(metrics['recall'])} | {fmt(metrics['recall_ge32'])} | {fmt(metrics['recall_all_sizes'])} | "
        f"{fmt(metrics['precision'])} | {fmt(metrics['ap50'])} | {metrics['false_detections_per_image']:.2f} |",
        "",
        "TNR: unmasked faces caught (not labelled masked: unmasked, or incorrect with three labels) / all unmasked faces. "
        "FNR: masked faces not labelled masked / all masked faces. A face the detector missed counts as labelled masked, "
        "as the published pipeline counted it: it lowers TNR and cannot raise FNR.",
        "",
        "## Per class",
        "",
        _seed_table_md(metrics),
        "",
        "The published pipeline's table, binary: a masked face is classified correctly when labelled masked, an unmasked "
        "face when labelled non-compliant (unmasked, or incorrect); the worn-incorrectly row lists what its faces were "
        "labelled. The three-label table below tells incorrect and unmasked apart.",
        "",
        f"False detections (boxes matching no annotated face of any size): {metrics['false_detections']}, "
        f"of which {metrics['false_detections_flagged_unmasked']} were not labelled masked (unmasked or incorrect).",
        "",
        *_three_labels_md(metrics),
        "## Detector recall by face width",
        "",
        "| width (px) | " + " | ".join(buckets) + " |",
        "|---|" + "---:|" * len(buckets),
        "| faces | " + " | ".join(str(v["faces"]) for v in buckets.values()) + " |",
        "| recall | " + " | ".join(fmt(v["recall"]) for v in buckets.values()) + " |",
        "",
        "![recall by width](recall_by_width.png)",
        "",
        "## ROC",
        "",
        f"Pipeline ROC AUC {fmt(metrics['pipeline_roc']['auc'])} (missed faces count as predicted masked, as the published pipeline counted them); "
        f"classifier-only ROC AUC on matched faces {fmt(metrics['classifier_roc']['auc'])}.",
        "",
        "![ROC](roc.png)",
        "",
        "## Threshold sweep",
        "",
        *sweep_md(metrics["threshold_sweep"], metrics["threshold"]),
        "",
        "![threshold sweep](threshold_sweep.png)",
        "",
    ]
    return "\n".join(lines)


def render_html(markdown_text: str, out: Path) -> str:
    """A self-contained page: the report's tables and the plots embedded as data URIs."""
    body = []
    in_table = False
    for line in markdown_text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-:"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            name = line[line.index("(") + 1 : -1]
            data = base64.b64encode((out / name).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#111;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto;max-width:100%}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f4f6}img{max-width:100%;margin:0.5em 0}"
    )
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>batchmask evaluation</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(gt_path: Path, preds: dict[str, list[Prediction]], out: Path, threshold: float, title: str, source: str,
                 min_width: float = 16.0, gt: dict | None = None, left_out: list[str] = (), unreadable: list[str] = (),
                 outside: int = 0) -> dict:
    """Score `preds` against the ground truth (`gt`, else loaded from `gt_path`); `left_out`
    names annotated photos that were not scored (absent from the photo folder), `unreadable`
    those that could not be read, `outside` counts boxes reaching beyond their photo."""
    gt = load_ground_truth(gt_path) if gt is None else gt
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(gt, preds, threshold, min_width)
    metrics["ground_truth"] = str(gt_path)
    metrics["left_out_images"] = sorted(left_out)
    metrics["unreadable_images"] = sorted(unreadable)
    metrics["boxes_outside_photo"] = outside
    metrics["source"] = source
    metrics["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    roc_plot(metrics, out / "roc.png")
    recall_plot(metrics, out / "recall_by_width.png")
    sweep_plot(metrics, out / "threshold_sweep.png")
    md = render_markdown(metrics, title, source)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", render_html(md, out))
    return metrics
