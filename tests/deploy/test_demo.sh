#!/usr/bin/env bash
# deploy/demo.sh end to end on the CPU, with the suite's binary (no install, no build):
# every submitted image has a result (the shipped photos are all valid), known objects are
# found in known photos, the COCO file is valid JSON with one image per submitted one and
# boxes inside the images, annotated JPEG previews and the HTML report exist (and render,
# when chromium is installed), and no process the demo started is left behind.
# Skips (77) while `batchdet worker` or `batchdet submit` is not implemented yet and the
# worker cannot be fed otherwise (the test producer tool).
# Env: BATCHDET, BD_SOURCE_DIR, BD_TEST_DATA, BATCHDET_KAFKA_MOCK, BD_TEST_PRODUCE.
set -euo pipefail
SRC="${BD_SOURCE_DIR:?}"
BD="${BATCHDET:?}"
fail() { echo "FAIL: $*"; exit 1; }
not_impl() { "$BD" "$1" --help 2>&1 | grep -q "not implemented yet"; }
if not_impl worker; then echo "SKIP: batchdet worker is not implemented yet"; exit 77; fi
if not_impl submit && [ ! -x "${BD_TEST_PRODUCE:-}" ]; then
  echo "SKIP: batchdet submit is not implemented yet (and no producer tool)"; exit 77
fi
[ -f "${BD_TEST_DATA:?}/models/yolox_nano.onnx" ] || { echo "SKIP: no yolox_nano.onnx in $BD_TEST_DATA/models"; exit 77; }

OUT="$(mktemp -d /tmp/bd-demo-test.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
# One copy of the 9 photos: the suite's binary is a Debug + sanitizer build.
export BATCHDET_BIN="$BD" BATCHDET_DEMO_OUT="$OUT/demo" BATCHDET_DEMO_COPIES="${BD_DEMO_COPIES:-1}"
export BATCHDET_DEMO_TIMEOUT=220 BATCHDET_MODELS="$BD_TEST_DATA/models" BATCHDET_DEMO_JOB=demo-test
unset BATCHDET_BROKERS BATCHDET_REDIS
start=$(date +%s)
set +e
"$SRC/deploy/demo.sh" >"$OUT/demo.out" 2>&1
rc=$?
set -e
cat "$OUT/demo.out"
[ $rc = 0 ] || fail "demo.sh exited $rc"
echo "demo took $(($(date +%s) - start)) s"
D="$OUT/demo"

# No process of ours left: nothing mentions the demo folder in its arguments or
# environment (the worker and coordinator inherit BATCHDET_DEVSTACK_DIR from the demo).
left=""
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = $$ ] && continue
  if tr '\0' '\n' 2>/dev/null <"$p/cmdline" | grep -qF "$D" || tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qF "$D/stack"; then
    st="$(awk '/^State:/{print $2}' "$p/status" 2>/dev/null || true)"
    [ "$st" = Z ] || left+=" ${p#/proc/}($(tr '\0' ' ' <"$p/cmdline" | cut -c1-80))"
  fi
done
[ -z "$left" ] || fail "processes left running:$left"

python3 - "$D" "$BD_TEST_DATA" <<'EOF'
import json, os, sys
d, data = sys.argv[1], sys.argv[2]
ids = [l.split(",", 1)[0] for l in open(os.path.join(d, "images.csv")) if l.strip()]
photos = sorted(f for f in os.listdir(os.path.join(data, "images")) if f.lower().endswith((".jpg", ".jpeg", ".png")))
copies = int(os.environ["BATCHDET_DEMO_COPIES"])
assert len(ids) == len(photos) * copies == len(set(ids)), "%d ids for %d photos x %d" % (len(ids), len(photos), copies)
rs = [json.loads(l) for l in open(os.path.join(d, "results.jsonl")) if l.strip()]
by = {}
for r in rs:
    key = os.path.basename(r["image"])
    assert key not in by, "image %s twice in the results" % key
    by[key] = r
missing = [i for i in ids if i not in by]
assert not missing, "no result for %s" % missing[:5]
for i in ids:
    r = by[i]
    assert "error" not in r, "%s: %s" % (i, r["error"])
    assert r["width"] > 0 and r["height"] > 0, r
# Known content of the shipped photos (DESIGN's test data): label sets per photo.
expect = {"dog.jpg": "dog", "giraffe.jpg": "giraffe", "horses.jpg": "horse", "person.jpg": "person",
          "kite.jpg": "kite", "eagle.jpg": "bird"}
for i in ids:
    photo = i.split("-", 1)[1]
    if photo in expect:
        labels = {x["label"] for x in by[i]["detections"]}
        assert expect[photo] in labels, "%s: no %s among %s" % (i, expect[photo], sorted(labels))
coco = json.load(open(os.path.join(d, "coco.json")))
assert len(coco["images"]) == len(ids), "COCO has %d images, %d submitted" % (len(coco["images"]), len(ids))
img = {im["id"]: im for im in coco["images"]}
cats = {c["id"] for c in coco["categories"]}
assert len(coco["annotations"]) == sum(len(by[i]["detections"]) for i in ids), "COCO annotation count"
for a in coco["annotations"]:
    im = img[a["image_id"]]
    x, y, w, h = a["bbox"]
    assert a["category_id"] in cats and w > 0 and h > 0, a
    assert x >= -1 and y >= -1 and x + w <= im["width"] + 1 and y + h <= im["height"] + 1, (a, im)
ann = os.listdir(os.path.join(d, "annotated"))
assert len(ann) >= 5, "only %d annotated previews" % len(ann)
for f in ann:
    assert open(os.path.join(d, "annotated", f), "rb").read(2) == b"\xff\xd8", f + " is no JPEG"
page = open(os.path.join(d, "report.html"), encoding="utf-8").read()
assert page.count("<figure>") >= min(len(ids), 9) and "<svg" in page, "report without thumbnails"
s = json.load(open(os.path.join(d, "summary.json")))
print("demo outputs OK: mode %s, %d images, %d annotations, %.1f s" % (s["mode"], len(ids), len(coco["annotations"]), s["elapsed_s"]))
if s["mode"] != "detect":
    m = open(os.path.join(d, "metrics.txt")).read()
    assert "batchdet_images_total" in m, "no worker metrics scraped"
EOF
if command -v chromium >/dev/null 2>&1; then
  python3 "$SRC/tests/deploy/test_report_render.py" "$D/report.html" || fail "report renders blank"
fi
if grep -q "mode worker" "$OUT/demo.out"; then
  echo "note: ran in worker mode (submit/coordinator/status/export not implemented yet)"
fi
echo "demo test OK"
