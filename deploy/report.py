#!/usr/bin/env python3
"""batchdet demo report: one self-contained HTML page from a job's results.

    report.py html  --results R.jsonl | --coco C.json  [--images-dir DIR]... [--image-list CSV]
                    [--metrics FILE]
                    [--status FILE] [--summary FILE] [--max-thumbs N] -o OUT.html
    report.py coco  --results R.jsonl -o C.json        (results -> COCO detection JSON)
    report.py redis-dump --redis URL --job J --ids FILE -o R.jsonl
                    (det:{job}:{id} values of the ids in FILE, one JSON per line)

Results are the DESIGN's per-image lines ({"image", "width", "height", "detections":
[{"class","label","score","box":[x1,y1,x2,y2]}]} or {"image","error"}), as written by
`batchdet detect` and `batchdet export --format jsonl`; a COCO file from `batchdet export
--format coco` is read too. Thumbnails are the original images (copied next to the page,
so the folder can be moved) with the boxes drawn as an SVG overlay. Python stdlib only.
"""
import argparse
import collections
import html
import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.parse

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#9a6324", "#800000", "#469990", "#000075", "#808000"]


def die(msg):
    print("report: " + msg, file=sys.stderr)
    sys.exit(1)


# ---- inputs ----------------------------------------------------------------------------

def load_results(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                j = json.loads(line)
            except ValueError as e:
                die("%s:%d: not JSON: %s" % (path, n, e))
            if not isinstance(j, dict) or "image" not in j:
                die("%s:%d: not a result line (no \"image\")" % (path, n))
            out.append(j)
    return out


def results_from_coco(path):
    """COCO detection JSON -> result lines (boxes back to x1,y1,x2,y2)."""
    with open(path, encoding="utf-8") as f:
        c = json.load(f)
    names = {cat["id"]: cat.get("name", str(cat["id"])) for cat in c.get("categories", [])}
    by_img = collections.OrderedDict()
    for im in c.get("images", []):
        stem = os.path.splitext(os.path.basename(str(im.get("file_name", im["id"]))))[0]
        by_img[im["id"]] = {"image": stem, "width": im.get("width", 0),
                            "height": im.get("height", 0), "detections": [],
                            "_file": im.get("file_name")}
    for a in c.get("annotations", []):
        r = by_img.get(a.get("image_id"))
        if r is None:
            continue
        x, y, w, h = a["bbox"]
        r["detections"].append({"class": a.get("category_id"),
                                "label": names.get(a.get("category_id"), str(a.get("category_id"))),
                                "score": a.get("score", 1.0), "box": [x, y, x + w, y + h]})
    return list(by_img.values())


def to_coco(results):
    """Result lines -> COCO detection JSON (bbox x,y,w,h; category id = class + 1)."""
    images, anns, cats = [], [], {}
    for n, r in enumerate(results, 1):
        if "error" in r:
            continue
        images.append({"id": n, "file_name": r["image"], "width": r.get("width", 0),
                       "height": r.get("height", 0)})
        for d in r.get("detections", []):
            x1, y1, x2, y2 = d["box"]
            cid = int(d["class"]) + 1
            cats[cid] = d.get("label", str(d["class"]))
            anns.append({"id": len(anns) + 1, "image_id": n, "category_id": cid,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "score": d["score"], "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": k, "name": v} for k, v in sorted(cats.items())]}


def parse_metrics(path):
    """Prometheus text -> {(name, frozenset(labels)): value}."""
    out = {}
    if not path or not os.path.exists(path):
        return out
    rx = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = rx.match(line)
            if not m or line.startswith("#"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            try:
                out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
            except ValueError:
                pass
    return out


def device_rows(metrics, status, elapsed):
    """Per-device throughput: from the worker's /metrics scrape, else from the first
    "devices" lists found in the status JSON (the worker reports relayed by the coordinator)."""
    rows = collections.OrderedDict()
    for (name, labels), v in metrics.items():
        lab = dict(labels)
        dev = lab.get("device")
        if not dev:
            continue
        r = rows.setdefault(dev, {"device": dev, "images": 0, "failed": 0, "img_s": None})
        if name == "batchdet_images_total":
            r["images" if lab.get("status") == "ok" else "failed"] += int(v)
        elif name == "batchdet_device_img_s":
            r["img_s"] = v

    def walk(j):
        if isinstance(j, dict):
            devs = j.get("devices")
            if isinstance(devs, list):
                for d in devs:
                    if isinstance(d, dict) and "name" in d:
                        key = "%s %s" % (j.get("worker", j.get("id", "")), d["name"])
                        if not any(d["name"] == k for k in rows):
                            rows[key.strip()] = {"device": key.strip(), "images": d.get("images", 0),
                                                 "failed": d.get("failed", 0), "img_s": d.get("img_s")}
            for v in j.values():
                walk(v)
        elif isinstance(j, list):
            for v in j:
                walk(v)
    walk(status)
    for k in [k for k, r in rows.items() if not r["images"] and not r["failed"] and not r["img_s"]]:
        del rows[k]  # e.g. the worker's "none" row for images that never reached a device
    for r in rows.values():
        # The job's average over the wall time beside the device's own recent rate.
        r["avg"] = r["images"] / elapsed if elapsed and elapsed > 0 else None
    return list(rows.values())


def load_image_list(path):
    """id,url CSV (the demo's submit list) -> {id: local file} for file:// URLs and plain paths."""
    out = {}
    if not path or not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            iid, _, url = line.strip().partition(",")
            if url.startswith("file://"):
                out[iid] = urllib.parse.unquote(url[7:])
            elif url.startswith("/"):
                out[iid] = url
    return out


def find_image(name, file_hint, dirs):
    """The local file of a result: its name as given (detect writes paths relative to the
    argument), its basename, or its id plus an image extension (ids of served copies)."""
    cands = [c for c in (file_hint, name) if c]
    cands += [name + e for e in IMAGE_EXT]
    for d in dirs:
        for c in cands:
            for p in (os.path.join(d, str(c)), os.path.join(d, os.path.basename(str(c)))):
                if os.path.isfile(p):
                    return p
    return None


# ---- HTML ------------------------------------------------------------------------------

CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 4px 0;font-size:26px} h2{font-size:19px;margin:26px 0 8px 0}
.sub{color:#666;margin-bottom:14px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:24px;color:#1a5fb4}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#eef}
.bar{background:#4363d8;height:12px;display:inline-block;vertical-align:middle}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden}
.ph{position:relative;line-height:0} .ph img{width:100%;display:block}
.ph svg{position:absolute;left:0;top:0;width:100%;height:100%}
figcaption{font-size:12px;padding:4px 8px;color:#444}
.err{color:#b00}
"""


def svg_overlay(r):
    w, h = max(1, r.get("width") or 1), max(1, r.get("height") or 1)
    sw = max(w, h) / 200.0
    parts = ['<svg viewBox="0 0 %d %d" preserveAspectRatio="none">' % (w, h)]
    for d in r.get("detections", []):
        x1, y1, x2, y2 = [float(v) for v in d["box"]]
        col = PALETTE[int(d.get("class", 0) or 0) % len(PALETTE)]
        label = "%s %.2f" % (d.get("label", d.get("class")), d.get("score", 0))
        parts.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="%s" '
                     'stroke-width="%.1f"/>' % (x1, y1, max(0, x2 - x1), max(0, y2 - y1), col, sw * 1.5))
        fs = sw * 9
        parts.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                     % (x1, max(0, y1 - fs * 1.2), fs * 0.62 * len(label), fs * 1.2, col))
        parts.append('<text x="%.1f" y="%.1f" font-size="%.1f" fill="#fff">%s</text>'
                     % (x1 + sw, max(fs, y1 - fs * 0.25), fs, html.escape(label)))
    parts.append("</svg>")
    return "".join(parts)


def cmd_html(a):
    if a.coco and not a.results:
        results = results_from_coco(a.coco)
    elif a.results:
        results = load_results(a.results)
    else:
        die("html needs --results or --coco")
    status = None
    if a.status and os.path.exists(a.status):
        try:
            with open(a.status, encoding="utf-8") as f:
                status = json.load(f)
        except ValueError:
            status = None
    summary = {}
    if a.summary and os.path.exists(a.summary):
        with open(a.summary, encoding="utf-8") as f:
            summary = json.load(f)
    elapsed = float(summary.get("elapsed_s", 0) or 0)
    metrics = parse_metrics(a.metrics)
    devs = device_rows(metrics, status, elapsed)

    ok = [r for r in results if "error" not in r]
    bad = [r for r in results if "error" in r]
    classes = collections.Counter(d.get("label", str(d.get("class"))) for r in ok
                                  for d in r.get("detections", []))
    out_dir = os.path.dirname(os.path.abspath(a.output))
    files_dir = os.path.join(out_dir, "report_files")
    os.makedirs(files_dir, exist_ok=True)

    h = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>batchdet report</title>",
         "<style>%s</style></head><body>" % CSS]
    title = summary.get("job", "batchdet job")
    h.append("<h1>batchdet: %s</h1>" % html.escape(str(title)))
    h.append("<div class='sub'>model %s &middot; mode %s &middot; %s</div>" % (
        html.escape(str(summary.get("model", "?"))), html.escape(str(summary.get("mode", "?"))),
        html.escape(time.strftime("%Y-%m-%d %H:%M:%S"))))
    cards = [("images", len(results)), ("with results", len(ok)), ("errors", len(bad)),
             ("detections", sum(classes.values()))]
    if elapsed > 0:
        cards.append(("wall time", "%.1f s" % elapsed))
        cards.append(("img/s", "%.1f" % (len(results) / elapsed)))
    # The coordinator's view of the job (batchdet status --json), when there is one.
    jobs = status.get("jobs", []) if isinstance(status, dict) else []
    job = next((j for j in jobs if isinstance(j, dict) and j.get("job") == summary.get("job")), None)
    if job:
        cards.append(("state", job.get("state", "?")))
        if "shards" in job:
            cards.append(("shards", "%s/%s" % (job.get("shards_done", "?"), job["shards"])))
        if isinstance(job.get("rate"), (int, float)):
            cards.append(("img/s (coordinator)", "%.1f" % job["rate"]))
    h.append("<div class='cards'>" + "".join("<div class='card'><b>%s</b>%s</div>" % (
        html.escape(str(v)), html.escape(k)) for k, v in cards) + "</div>")

    h.append("<h2>Throughput per device</h2>")
    if devs:
        h.append("<table><tr><th>device</th><th>images</th><th>failed</th>"
                 "<th>img/s (device, recent)</th><th>img/s (job average)</th></tr>")
        for r in devs:
            h.append("<tr><td>%s</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td></tr>" % (
                html.escape(str(r["device"])), int(r["images"] or 0), int(r["failed"] or 0),
                "%.1f" % r["img_s"] if r["img_s"] is not None else "-",
                "%.1f" % r["avg"] if r["avg"] is not None else "-"))
        h.append("</table>")
    else:
        h.append("<p>No worker metrics for this run (%s).</p>" % html.escape(
            str(summary.get("skipped", "detect mode"))))

    h.append("<h2>Detections per class</h2>")
    if classes:
        top = classes.most_common()
        mx = top[0][1]
        h.append("<table><tr><th>class</th><th>count</th><th></th></tr>")
        for k, v in top:
            h.append("<tr><td>%s</td><td>%d</td><td><span class='bar' style='width:%dpx'></span>"
                     "</td></tr>" % (html.escape(str(k)), v, max(2, int(300 * v / mx))))
        h.append("</table>")
    else:
        h.append("<p>No detections.</p>")

    if summary.get("skipped"):
        h.append("<h2>Skipped</h2><p>%s</p>" % html.escape(str(summary["skipped"])))

    h.append("<h2>Images</h2><div class='grid'>")
    shown, copied = 0, {}
    dirs = a.images_dir or []
    local = load_image_list(a.image_list)
    for r in ok:
        if shown >= a.max_thumbs:
            break
        src = local.get(str(r["image"]))
        if not src or not os.path.isfile(src):
            src = find_image(str(r["image"]), r.get("_file"), dirs)
        if not src:
            continue
        real = os.path.realpath(src)
        if real not in copied:
            dst_name = "%03d_%s" % (len(copied), os.path.basename(real))
            shutil.copyfile(real, os.path.join(files_dir, dst_name))
            copied[real] = dst_name
        rel = "report_files/" + urllib.parse.quote(copied[real])
        labels = collections.Counter(d.get("label", "?") for d in r.get("detections", []))
        cap = ", ".join("%s&times;%d" % (html.escape(str(k)), v) for k, v in labels.most_common(4))
        h.append("<figure><div class='ph'><img src='%s' alt='%s'>%s</div><figcaption><b>%s</b> "
                 "%dx%d &middot; %s</figcaption></figure>" % (
                     rel, html.escape(str(r["image"])), svg_overlay(r), html.escape(str(r["image"])),
                     r.get("width", 0), r.get("height", 0), cap or "no detections"))
        shown += 1
    h.append("</div>")
    if shown < len(ok):
        h.append("<p>%d of %d images shown.</p>" % (shown, len(ok)))
    if bad:
        h.append("<h2>Errors</h2><ul>")
        for r in bad[:200]:
            h.append("<li class='err'>%s: %s</li>" % (html.escape(str(r["image"])),
                                                      html.escape(str(r["error"]))))
        h.append("</ul>")
    h.append("</body></html>\n")
    tmp = a.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(h))
    os.replace(tmp, a.output)
    print("report: %s (%d images, %d thumbnails, %d classes)" % (a.output, len(results), shown,
                                                                 len(classes)), file=sys.stderr)


def cmd_coco(a):
    c = to_coco(load_results(a.results))
    with open(a.output, "w", encoding="utf-8") as f:
        json.dump(c, f)


# ---- a minimal Redis client (RESP2), for the demo's fallback path ----------------------

class Redis:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        if u.scheme != "redis":
            die("only redis:// URLs: %s" % url)
        self.s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=30)
        self.f = self.s.makefile("rb")
        if u.password:
            self.cmd("AUTH", u.password)

    def cmd(self, *args):
        buf = [b"*%d\r\n" % len(args)]
        for x in args:
            b = x if isinstance(x, bytes) else str(x).encode()
            buf.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.s.sendall(b"".join(buf))
        return self.reply()

    def reply(self):
        line = self.f.readline()
        if not line:
            die("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            die("redis: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode("utf-8", "replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        die("redis: bad reply %r" % line)


def cmd_redis_dump(a):
    r = Redis(a.redis)
    with open(a.ids, encoding="utf-8") as f:
        ids = [l.strip() for l in f if l.strip()]
    missing = 0
    with open(a.output, "w", encoding="utf-8") as out:
        for k in range(0, len(ids), 200):
            chunk = ids[k:k + 200]
            vals = r.cmd("MGET", *["det:%s:%s" % (a.job, i) for i in chunk])
            for i, v in zip(chunk, vals):
                if v is None:
                    missing += 1
                    out.write(json.dumps({"image": i, "error": "no result in Redis"}) + "\n")
                else:
                    out.write(v.strip() + "\n")
    if missing:
        print("report: %d of %d images have no result" % (missing, len(ids)), file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description="batchdet demo report")
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("html")
    h.add_argument("--results")
    h.add_argument("--coco")
    h.add_argument("--images-dir", action="append")
    h.add_argument("--image-list", help="id,url CSV: file:// URLs give the local images")
    h.add_argument("--metrics")
    h.add_argument("--status")
    h.add_argument("--summary")
    h.add_argument("--max-thumbs", type=int, default=36)
    h.add_argument("-o", "--output", required=True)
    c = sub.add_parser("coco")
    c.add_argument("--results", required=True)
    c.add_argument("-o", "--output", required=True)
    r = sub.add_parser("redis-dump")
    r.add_argument("--redis", required=True)
    r.add_argument("--job", required=True)
    r.add_argument("--ids", required=True)
    r.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    {"html": cmd_html, "coco": cmd_coco, "redis-dump": cmd_redis_dump}[a.cmd](a)


if __name__ == "__main__":
    main()
