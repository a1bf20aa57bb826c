"""`batchmask report`: audit tables from the cumulative outputs of one or more OUTPUT folders.

Counts come from faces.csv (one row per face, its label) and images.csv (one
row per photo, its date and camera), so the report's totals are the tables'
totals. A photo's day is its EXIF capture date, or its file date when the
photo has none. The compliance rate is masked / classified faces: a mask worn
incorrectly counts as non-compliant.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .annotate import COLOURS
from .remote import RemoteError, is_url, read_bytes
from .remote import join as remote_join
from .sinks import REWRITES, STATE_DIR, TABLES, run_records, spreadsheet_plain, spreadsheet_safe
from .storage import UnsafePathError, atomic_write_bytes, atomic_write_text, safe_join
from .worker import ANNOTATED_DIR, annotated_name

GROUPINGS = ("day", "folder", "camera")
COUNTS = ("masked", "incorrect", "unmasked")


class AuditError(Exception):
    pass


def _read(out, name: str) -> bytes | None:
    """A file of an OUTPUT folder or OUTPUT URL, None when it is not there."""
    if is_url(out):
        try:
            return read_bytes(remote_join(str(out), name), 1 << 34)
        except (OSError, RemoteError):
            return None
    path = Path(out) / name
    return path.read_bytes() if path.is_file() else None


def _committed_lengths(out) -> dict | None:
    """Byte lengths of the tables as of OUTPUT's last committed photo (the ledger's last
    complete line): rows past them are being written, or were cut short by a kill."""
    if is_url(out):
        data = _read(out, ".batchmask/ledger.jsonl")
    else:
        path = Path(out) / ".batchmask" / "ledger.jsonl"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - (4 << 20)))
                data = f.read()
        except OSError:
            return None
    for line in reversed((data or b"").split(b"\n")[:-1]):  # the part after the last newline is unfinished
        try:
            return json.loads(line)["lengths"]
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _locate(root, rel: str) -> str | None:
    """root/rel for a folder (when the file is there) or a URL (read errors are handled by the caller)."""
    if is_url(root):
        return remote_join(str(root), rel)
    path = safe_join(root, rel)
    return str(path) if path.is_file() else None


def _rewrites(out) -> int:
    """OUTPUT's rewrite counter (odd while a rewrite is under way; see sinks.OutputStore._rewrite)."""
    try:
        return int((_read(out, REWRITES) or b"0").strip() or 0)
    except ValueError:
        return 0


def _committed_tables(out, wait: float = 30.0) -> dict[str, bytes | None]:
    """images.csv and faces.csv as of the ledger's last committed photo, read between two
    looks at the rewrite counter: a run replacing a changed photo's rows rewrites every file,
    and tables read across such a rewrite would not match each other, so they are read again
    (for up to `wait` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        count = _rewrites(out)
        if count % 2 == 0:
            lengths = _committed_lengths(out) or {}
            tables = {name: _read(out, name) for name in ("images.csv", "faces.csv")}
            if _rewrites(out) == count:
                break
        if time.monotonic() > deadline:
            raise AuditError(f"{out} was being rewritten all the while it was read (or a run was killed while "
                             "rewriting it: running that command again repairs it); try again")
        time.sleep(0.02)
    for name, data in tables.items():
        if data is not None and name in lengths:
            tables[name] = data[: lengths[name]]
    return tables


def load_tables(outputs: list, wait: float = 30.0):
    """images and faces of every OUTPUT (folders or URLs) as two DataFrames (text kept as text), keyed by (output, image)."""
    import pandas as pd

    images, faces = [], []
    for out in outputs:
        tables = _committed_tables(out, wait)
        for name, data in tables.items():
            if data is None:
                raise AuditError(f"{out} has no {name}: is it a batchmask OUTPUT folder?")
        img = pd.read_csv(io.BytesIO(tables["images.csv"]), dtype=str, keep_default_na=False)
        fac = pd.read_csv(io.BytesIO(tables["faces.csv"]), dtype=str, keep_default_na=False)
        for name, df, columns in (("images.csv", img, ("image", "status", "faces", *COUNTS)), ("faces.csv", fac, ("image", "label"))):
            missing = [c for c in columns if c not in df.columns]
            if missing:
                raise AuditError(f"{out}: {name} has no column {', '.join(missing)}: not a batchmask table (replaced by another file?)")
        for df in (img, fac):
            df["image"] = df["image"].map(spreadsheet_plain)
            df.insert(0, "output", str(out))
        if "camera" in img:
            img["camera"] = img["camera"].map(spreadsheet_plain)
        images.append(img)
        faces.append(fac)
    return pd.concat(images, ignore_index=True), pd.concat(faces, ignore_index=True)


def _day(row) -> str:
    """The capture date, else the file's date, else the day the row was made (a dangling link or
    a FIFO has no file date; its error row must still fall within --since/--until)."""
    for key in ("taken", "mtime"):
        value = row.get(key, "") or ""
        if len(value) >= 10:
            return value[:10]
    run_id = row.get("run_id", "") or ""  # 20261127T090447-4ebf1e
    if len(run_id) >= 9 and run_id[:8].isdigit() and run_id[8] == "T":
        return f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}"
    return "unknown"


def _folder(image: str) -> str:
    parent = image.rsplit("/", 1)[0] if "/" in image else ""
    return parent or "(top)"


def select_images(images, since: dt.date | None = None, until: dt.date | None = None):
    """Images with their day, folder and camera, limited to the days from `since` to `until` (inclusive)."""
    import pandas as pd

    images = images.copy()
    images["day"] = [_day(r) for r in images.to_dict("records")]
    images["folder"] = images["image"].map(_folder)
    images["camera"] = images.get("camera", pd.Series("", index=images.index)).replace("", "unknown")
    if since or until:
        days = pd.to_datetime(images["day"], format="%Y-%m-%d", errors="coerce")  # "unknown" -> NaT, never kept
        keep = days.notna()
        if since:
            keep &= days >= pd.Timestamp(since)
        if until:
            keep &= days <= pd.Timestamp(until)
        images = images[keep]
    return images


def audit_table(images, faces, by: str = "day"):
    """One row per group of `select_images` output: images, errors, faces, masked, incorrect, unmasked, compliance_rate."""
    import pandas as pd

    if by not in GROUPINGS:
        raise AuditError(f"--by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    per_face = faces.merge(images[["output", "image", by]], on=["output", "image"], how="inner")
    counts = pd.crosstab(per_face[by], per_face["label"]) if len(per_face) else pd.DataFrame()
    table = pd.DataFrame(index=sorted(images[by].unique()))
    table.index.name = by
    table["images"] = images.groupby(by).size()
    table["errors"] = images[images["status"] == "error"].groupby(by).size()
    table["faces"] = per_face.groupby(by).size()
    for label in COUNTS:
        table[label] = counts[label] if label in counts else 0
    table = table.fillna(0).astype(int)
    classified = table[list(COUNTS)].sum(axis=1)
    table["compliance_rate"] = (table["masked"] / classified.where(classified > 0)).round(4)
    return table.reset_index()


def drop_repeated_photos(outputs: list, images, faces):
    """Each photo once: a photo that several OUTPUTs made rows for from the same INPUT (the run
    records say which INPUT each row's run read) keeps the rows of the run that started last. Rows whose run has
    no record are kept as they are. Returns images, faces and the index labels of the rows kept
    for photos that had others (count them after selecting a period)."""
    if len(outputs) < 2 or "run_id" not in images or images.empty:
        return images, faces, set()
    runs: dict[tuple[str, str], tuple[str, float]] = {}  # (output, run_id) -> (INPUT, start time)
    for out in outputs:
        for run_id, run in run_records(_read(out, "run.json"), _read(out, "runs.jsonl")).items():
            try:  # started is local time with its UTC offset: compared as instants, not as text
                started = dt.datetime.strptime(run["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
            except (KeyError, TypeError, ValueError):
                continue
            if isinstance(run.get("input"), str):
                runs[(str(out), run_id)] = (run["input"].rstrip("/"), started)
    known = [runs.get((o, r)) for o, r in zip(images["output"], images["run_id"])]
    keyed = images.assign(_source=[k[0] if k else None for k in known], _started=[k[1] if k else None for k in known])
    keyed = keyed[keyed["_source"].notna()]
    latest = keyed.sort_values(["_started", "run_id"], kind="stable").drop_duplicates(["_source", "image"], keep="last")
    dropped = keyed.drop(latest.index)
    if dropped.empty:
        return images, faces, set()
    images = images.drop(dropped.index)
    gone = set(zip(dropped["output"], dropped["image"]))
    faces = faces.loc[np.array([key not in gone for key in zip(faces["output"], faces["image"])], dtype=bool)]
    kept = set(zip(dropped["_source"], dropped["image"]))
    return images, faces, {i for i, source, image in zip(latest.index, latest["_source"], latest["image"]) if (source, image) in kept}


@dataclass
class AuditResult:
    table: object  # pandas DataFrame
    totals: dict
    path: Path
    repeated: int = 0  # photos found in more than one OUTPUT, counted once


REPORT_SUFFIXES = (".csv", ".html", ".htm")


def report_target_problem(outputs: list, out: Path) -> str | None:
    """Why `out` cannot take a report: not .csv/.html, a folder, or one of an OUTPUT's own files
    (a report over `OUTPUT/.batchmask/ledger.jsonl` emptied every table at the next run)."""
    target = out.resolve()
    for o in outputs:
        if isinstance(o, Path):
            root = o.resolve()
            own = [root / STATE_DIR, root / ANNOTATED_DIR]
            if target.parent == root and target.name in (*TABLES, "run.json", "runs.jsonl") or any(d == target or d in target.parents for d in own):
                return f"{out} is one of {o}'s own files; write the report beside them (e.g. {o / 'report.html'})"
    if out.suffix.lower() not in REPORT_SUFFIXES:
        return f"the report file must end in .csv or .html, not {out.name!r}"
    if out.is_dir():
        return f"{out} is a folder; give a report file name (report.html, report.csv)"
    return None


def write_audit(outputs: list, out: Path, by: str = "day", since=None, until=None, thumbnails: int = 60) -> AuditResult:
    problem = report_target_problem(outputs, Path(out))
    if problem:
        raise AuditError(problem)
    images, faces = load_tables(outputs)
    images, faces, repeated_rows = drop_repeated_photos(outputs, images, faces)
    images = select_images(images, since, until)
    repeated = len(repeated_rows & set(images.index))
    faces = faces.merge(images[["output", "image"]], on=["output", "image"], how="inner")
    table = audit_table(images, faces, by)
    totals = {k: int(table[k].sum()) for k in ("images", "errors", "faces", *COUNTS)}
    classified = sum(totals[k] for k in COUNTS)
    totals["compliance_rate"] = round(totals["masked"] / classified, 4) if classified else None
    if out.suffix.lower() in (".html", ".htm"):
        page = _html(table, totals, by, since, until, outputs, images, faces, thumbnails, repeated)
        atomic_write_text(out, page)
    else:
        safe = table.copy()
        safe[by] = safe[by].map(spreadsheet_safe)
        atomic_write_bytes(out, safe.to_csv(index=False).encode("utf-8"))
    return AuditResult(table, totals, out, repeated)


def _chart_png(table, by: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(table)
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.45 * n + 3)), 4))
    x = np.arange(n)
    bottom = np.zeros(n)
    for label in COUNTS:
        ax.bar(x, table[label], bottom=bottom, color=_hex(label), label=label, edgecolor="#333333" if label == "incorrect" else None, linewidth=0.4)
        bottom += table[label].to_numpy()
    ax.set_ylabel("faces")
    ax.set_xticks(x, [str(v) for v in table[by]], rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=8)
    rate = ax.twinx()
    # days are a sequence (a line between them); folders and cameras are not (markers only)
    rate.plot(x, table["compliance_rate"] * 100, color="#111827", marker="o", linestyle="-" if by == "day" else "none", label="compliance %")
    rate.set_ylim(0, 105)
    rate.set_ylabel("compliance (%)")
    handles = ax.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
    ax.legend(handles, [*COUNTS, "compliance %"], loc="lower left", bbox_to_anchor=(0, 1.02), fontsize=8, ncols=4, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _hex(label: str) -> str:
    """The colour of a label in annotated copies, for the chart and the thumbnails' borders."""
    return "#%02x%02x%02x" % COLOURS[label]


def _thumbnails(outputs, images, faces, limit: int) -> list[dict]:
    """Crops of the non-compliant faces, newest day first, from the photos (INPUT, else the archive, else the
    annotated copies), skipping a photo whose name now holds another file (other time or size than its row)."""
    import cv2

    from .images import ImageError, load_image

    if limit <= 0:
        return []
    info = {(r["output"], r["image"]): r for r in images.to_dict("records")}
    wanted = faces[faces["label"].isin(["unmasked", "incorrect"])].copy()
    wanted["day"] = [_day(info.get((o, i), {})) for o, i in zip(wanted["output"], wanted["image"])]
    wanted = wanted.sort_values(["day", "image"], ascending=[False, True]).head(limit)
    sources: dict[str, list] = {}  # OUTPUT -> the folders its photos may still be in: INPUT, then --archive
    for out in outputs:
        try:
            run = json.loads(_read(out, "run.json") or b"{}")
        except ValueError:
            run = {}
        folders = [run.get("input"), (run.get("config") or {}).get("archive")]
        sources[str(out)] = [f if is_url(f) else Path(f) for f in folders if isinstance(f, str) and f]
    cache: dict[tuple, object] = {}
    thumbs = []
    for face in wanted.to_dict("records"):
        key = (face["output"], face["image"])
        if key not in cache:
            cache.clear()
            output = face["output"] if is_url(face["output"]) else Path(face["output"])
            candidates = [(folder, face["image"]) for folder in sources.get(face["output"], [])]
            candidates.append((output, f"{ANNOTATED_DIR}/{annotated_name(face['image'])}"))
            cache[key] = None
            row = info.get(key, {})
            for folder, name in candidates:
                try:
                    path = _locate(folder, name)
                    if not path or (name == face["image"] and not _same_file_time(path, row)):
                        continue  # the input now holds another photo under this name (a camera reusing names)
                    img = load_image(path, target_side=1600)
                    if name == face["image"] and row.get("width") and (str(img.width), str(img.height)) != (row["width"], row["height"]):
                        continue
                    cache[key] = img.pixels
                    break
                except (ImageError, OSError, UnsafePathError):
                    continue
        rgb = cache[key]
        if rgb is None:
            continue
        width = float(info.get(key, {}).get("width") or rgb.shape[1]) or rgb.shape[1]
        s = rgb.shape[1] / width
        x1, y1, x2, y2 = (float(face[k]) * s for k in ("x1", "y1", "x2", "y2"))
        pad = 0.15 * max(x2 - x1, y2 - y1)
        h, w = rgb.shape[:2]
        crop = rgb[max(0, int(y1 - pad)) : min(h, int(y2 + pad)), max(0, int(x1 - pad)) : min(w, int(x2 + pad))]
        if crop.size == 0:
            continue
        scale = 96 / crop.shape[0]
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), 96), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            thumbs.append({"jpeg": base64.b64encode(buf.tobytes()).decode(), "image": face["image"], "day": face["day"], "label": face["label"],
                           "face": face.get("face", "")})
    return thumbs


def _same_file_time(path: str, row: dict) -> bool:
    """Whether a local input file still has the modification time its images.csv row recorded (to the second)."""
    if is_url(path) or not row.get("mtime"):
        return True
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.stat(path).st_mtime)) == row["mtime"]


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def run_settings(outputs: list, images) -> list[tuple[str, int]]:
    """How the photos in `images` were labelled: detector preset, classifier, threshold and labels of the
    run that made each row (its record in OUTPUT's runs.jsonl, else run.json), with the number of
    photos; most photos first."""
    from .runner import detector_name

    described: dict[tuple[str, str], str] = {}
    for out in outputs:
        for run in run_records(_read(out, "run.json"), _read(out, "runs.jsonl")).values():
            try:
                config, classifier = run["config"], run["models"]["classifier"]
                mode = detector_name(config["detector"]) if isinstance(config.get("detector"), dict) else "default"
                described[(str(out), run["run_id"])] = (
                    f"{mode} detector{' (--fast)' if mode == 'fast' else ''}, classifier {str(classifier['sha256'])[:12]} "
                    f"(crop margin {classifier.get('crop_margin')}), threshold {float(config['threshold']):.2f}, {int(config['labels'])} labels")
            except (ValueError, KeyError, TypeError):
                continue  # not batchmask's
    counts: dict[str, int] = {}
    run_ids = images["run_id"] if "run_id" in images else [""] * len(images)
    for out, run_id in zip(images["output"], run_ids):
        key = described.get((out, run_id), "by a run with no record (settings unknown)")
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def _html(table, totals, by, since, until, outputs, images, faces, thumbnails: int, repeated: int = 0) -> str:
    esc = html.escape
    period = f"{since or '…'} to {until or '…'}" if since or until else "All dates"
    chart = base64.b64encode(_chart_png(table, by)).decode() if len(table) else ""
    head = "".join(f"<th>{esc(c.replace('_', ' '))}</th>" for c in table.columns)
    rows = []
    for r in table.to_dict("records"):
        cells = [esc(str(r[by]))] + [str(r[c]) for c in ("images", "errors", "faces", *COUNTS)]
        rate = r["compliance_rate"]
        cells.append("–" if rate != rate else f"{rate * 100:.1f} %")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rate = totals["compliance_rate"]
    total_cells = ["total"] + [str(totals[c]) for c in ("images", "errors", "faces", *COUNTS)] + ["–" if rate is None else f"{rate * 100:.1f} %"]
    rows.append("<tr class='total'>" + "".join(f"<td>{c}</td>" for c in total_cells) + "</tr>")
    thumbs = _thumbnails(outputs, images, faces, thumbnails)
    settings = run_settings(outputs, images)
    figures = "".join(
        f"<figure class='{esc(t['label'])}'><img src='data:image/jpeg;base64,{t['jpeg']}' alt='{esc(t['label'])}'>"
        f"<figcaption>{esc(t['label'])} · face {esc(str(t['face']))}<br>{esc(t['image']).replace('/', '/<wbr>')}<br>{esc(t['day'])}</figcaption></figure>"
        for t in thumbs
    )
    noncompliant = totals["incorrect"] + totals["unmasked"]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#111}"
        "table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto;max-width:100%}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f4f6}tr.total td{font-weight:bold;background:#f9fafb}"
        ".grid{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:126px;font-size:11px;overflow-wrap:break-word}"
        f"figure img{{height:102px;max-width:126px;box-sizing:border-box;border:3px solid {_hex('unmasked')}}}"
        f"figure.incorrect img{{border-color:{_hex('incorrect')}}}"
        "img.chart{max-width:100%}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>batchmask audit report</title>"
        f"<style>{style}</style></head><body>"
        f"<h1>Mask compliance by {esc(by)}</h1>"
        f"<p>{esc(period)} · {totals['images']} photos ({totals['errors']} unreadable) · {totals['faces']} faces · "
        f"compliance {'–' if rate is None else f'{rate * 100:.1f} %'} (masked / classified faces; a mask worn incorrectly is non-compliant)</p>"
        f"<p>Sources: {', '.join(esc(str(o)) for o in outputs)}. Generated {dt.datetime.now():%Y-%m-%d %H:%M}."
        + (f" {repeated} photo{_s(repeated)} processed into more than one of them from the same INPUT "
           f"{'is' if repeated == 1 else 'are'} counted once, by {'its' if repeated == 1 else 'their'} latest rows." if repeated else "")
        + "</p>"
        + (f"<p>Labelled with: {'; '.join(f'{n} photo{_s(n)} {esc(s)}' for s, n in settings)}"
           + (" (counts made with different settings are not directly comparable)</p>" if len(settings) > 1 else "</p>") if settings else "")
        + (f"<img class='chart' alt='chart' src='data:image/png;base64,{chart}'>" if chart else "<p>No photos in this period.</p>")
        + f"<table><tr>{head}</tr>{''.join(rows)}</table>"
        f"<h2>Non-compliant faces ({noncompliant}; {len(thumbs)} shown, newest day first)</h2>"
        + (f"<p>{min(noncompliant, thumbnails) - len(thumbs)} not shown: their photos are no longer in the input or archive "
           "folder as they were processed, and OUTPUT has no annotated copy of them.</p>" if len(thumbs) < min(noncompliant, thumbnails) else "")
        + f"<div class='grid'>{figures}</div>"
        "</body></html>\n"
    )
