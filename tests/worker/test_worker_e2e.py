#!/usr/bin/env python3
"""End-to-end test of `batchdet worker` against real components on 127.0.0.1:
redis-server (AOF, appendfsync always, temp dir), the embedded Kafka daemon (3 brokers),
an HTTP server over symlinked photos, and worker processes.

A: 2,000 images (shards of 50) over 3 workers with sim devices; a worker SIGKILLed and
   restarted three times; bad images (404, truncated, not an image, empty), a shard of an
   unknown model and two malformed manifests (-> DLQ with an "error" header), and a shard
   numbered beyond the job record's shards (refused by Redis -> DLQ, nothing counted).
B: a job during which redis-server is SIGKILLed and restarted on the same AOF dir, then a
   Kafka broker is taken down and brought back.
C: SIGHUP (a closed terminal) to a worker mid-job: a drain like SIGTERM's, exit 0 within
   the grace period; the job stays exact.
E: --max-inflight-shards holds (read from /metrics); a second SIGTERM exits at once and
   stores nothing half-done; a restart completes the job exactly.
D: a cpu worker on yolox_nano: results equal `batchdet detect` on the same photos; a
   model with its own NAME.names beside it is labelled from that file.
G: SIGTERM while every Kafka broker is down: exit 0 within --grace plus a few seconds.
F: a shard of large PNGs (tiny files, 27 MB of pixels each): the decoded pixels waiting
   for a slow device stay under --max-inflight-mb (read from /metrics); the job is exact.
Every check is exact (counters == per-image truth); every wait is bounded."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from bd_testlib import big_png  # noqa: E402
from wk_stack import (Stack, Worker, check_job, consume, free_port, job_progress, log,  # noqa
                      make_images, manifest_lines, produce, stop_all, wait_job)

DATA = os.environ.get("BD_TEST_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))
DATA = os.path.abspath(DATA)
TOPIC = "batchdet.jobs"


def sim_args(models, extra=()):
    return ["--devices", "sim:2:20", "--models", models, "--batch", "16", "--batch-timeout-ms", "20",
            "--report-interval", "1", "--grace", "20", "--decode-threads", "1",
            "--session-timeout-ms", "6000"] + list(extra)


def phase_a(st, models, workers, metrics_port):
    job = "simjob"
    imgs = make_images(st, DATA, job, 2000)
    bad = {}
    bad_src = {7: (None, "fetch: HTTP 404"), 333: ("truncated_dog.jpg", "decode:"),
               1234: ("not_an_image.jpg", "decode:"), 1999: ("empty.jpg", "")}
    for idx, (src, prefix) in bad_src.items():
        iid = imgs[idx][0]
        name = iid + "-bad.jpg"
        if src:
            os.symlink(os.path.join(DATA, "images", "bad", src), os.path.join(st.www, name))
        imgs[idx] = (iid, st.base_url + name, None)
        bad[iid] = prefix
    lines = manifest_lines(job, imgs, 50)
    nomodel = make_images(st, DATA, "nomodel", 10)
    lines += manifest_lines("nomodel", nomodel, 10, model="nosuch")
    malformed = ['{"v":1,"job":"simjob","shard":"seven","model":"yolox_nano","images":[]}',
                 'this is not json']
    lines.insert(5, malformed[0])
    lines.insert(20, malformed[1])
    # The job's record, as submit writes it, and a hand-made shard 40 of new images: not
    # part of the job (its shards are 0..39), so Redis refuses it and the worker
    # dead-letters it instead of pushing done past the total.
    st.r.cmd("HSET", "job:%s" % job, "total", 2000, "shards", 40, "state", "queued")
    beyond_imgs = make_images(st, DATA, "beyond", 3)
    beyond = manifest_lines(job, beyond_imgs, 3, first_shard=40)[0]
    lines.insert(30, beyond)
    produce(st, TOPIC, lines)
    log("A: produced 40 shards + 1 unknown-model shard + 2 malformed + 1 beyond the job")
    kills = [300, 800, 1300]

    def tick(n):
        if kills and n >= kills[0]:
            kills.pop(0)
            w = random.choice(workers)
            log("A: SIGKILL %s at %d images" % (w.name, n))
            w.p.kill()
            w.p.wait(10)
            w.start()

    d, f = wait_job(st.r, job, 2000, 150, on_tick=tick)
    assert not kills, "job finished before all kills: %s left" % kills
    log("A: job done: done=%d failed=%d" % (d, f))
    check_job(st.r, job, imgs, 40, bad)
    wait_job(st.r, "nomodel", 10, 30)
    check_job(st.r, "nomodel", nomodel, 1, {i: "model: unknown model 'nosuch'" for i, _, _ in nomodel})
    # At-least-once: a worker killed after dead-lettering but before its offset was
    # committed dead-letters the message again, so duplicates are allowed.
    refused = []
    for n in range(3, 10):
        dlq = consume(st, "batchdet.jobs.dlq", n, 10)
        refused = [m for m in dlq if "not part of job simjob" in m["headers"].get("error", "")]
        if ({m["value"] for m in dlq} >= set(malformed) and refused) or len(dlq) < n:
            break
    assert {m["value"] for m in dlq} >= set(malformed), dlq
    for m in dlq:
        assert m["headers"].get("error"), m
    # the dead letter is the shard's manifest (re-encoded), with its images
    assert refused and [i["id"] for i in json.loads(refused[0]["value"])["images"]] == \
        [i for i, _, _ in beyond_imgs], dlq
    assert json.loads(refused[0]["value"])["shard"] == 40
    assert all(st.r.cmd("EXISTS", "det:%s:%s" % (job, i)) == 0 for i, _, _ in beyond_imgs)
    log("A: DLQ reasons: %s" % [m["headers"]["error"][:60] for m in dlq])
    # Reports: every worker reported, with the shards it finished.
    reps = consume(st, "batchdet.reports", 50, 10)
    names = {json.loads(m["value"])["worker"] for m in reps}
    assert names & {w.name for w in workers}, names
    assert any(json.loads(m["value"]).get("shards_done") for m in reps)
    beat = st.r.hgetall("worker:w0")
    assert beat.get("host") and "sim:0" in beat.get("devices", ""), beat
    assert 0 < int(st.r.cmd("TTL", "worker:w0")) <= 3
    # Metrics and liveness of w0 (restarted or not, it serves on the same port, unless a
    # start found that port taken and moved: Worker.start).
    metrics_port = workers[0].metrics_port
    base = "http://127.0.0.1:%d" % metrics_port
    deadline = time.time() + 10
    while True:
        try:
            assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
            text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)
    health_under_flood(metrics_port)
    for want in ('batchdet_images_total{device="sim:0",status="ok"}',
                 'batchdet_stage_seconds_bucket{stage="decode",le="+Inf"}',
                 "batchdet_batch_fill_ratio", 'batchdet_queue_depth{queue="decode"}',
                 "batchdet_kafka_lag", 'batchdet_device_img_s{device="sim:1"}'):
        assert want in text, want


def health_under_flood(port):
    """1,100 idle connections from another loopback address (127.0.0.2) once locked out
    /healthz (a select()-bound server with no per-client limit); the probe's own address
    must still get an answer."""
    import resource
    import socket
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        log("A: flood check skipped: open-files hard limit %d" % hard)
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    socks = []
    try:
        for _ in range(1100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.2", 0))
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
                s.send(b"GET /metrics HTTP/1.1\r\n")  # never finished
            except OSError:
                pass
            socks.append(s)
        time.sleep(0.5)
        code = urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5).status
        assert code == 200, code
        log("A: /healthz answered with 1,100 idle connections from 127.0.0.2 open")
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def phase_b(st, workers):
    job = "faultjob"
    imgs = make_images(st, DATA, job, 800)
    produce(st, TOPIC, manifest_lines(job, imgs, 50))
    wait_until(st, job, 100, 60)
    log("B: SIGKILL redis-server at %d images" % sum(job_progress(st.r, job)))
    st.kill_redis()
    time.sleep(2)
    st.start_redis()
    log("B: redis-server restarted")
    wait_until(st, job, 400, 90)
    log("B: broker 1 down at %d images" % sum(job_progress(st.r, job)))
    st.kafka_control("down 1")
    time.sleep(3)
    st.kafka_control("up 1")
    log("B: broker 1 up")
    wait_job(st.r, job, 800, 120)
    check_job(st.r, job, imgs, 16)
    for w in workers:
        assert w.p.poll() is None, "%s exited (rc %s)" % (w.name, w.p.returncode)
    # The outage is in the logs at once (one warning, then one line when it is back), not
    # after the ~10 s of retries inside the Redis client that it once took.
    said = []
    for w in workers:
        with open(w.log_path(), errors="replace") as f:
            text = f.read()
        if "(unavailable; shards wait" in text and "redis: available again after" in text:
            said.append(w.name)
    assert said, "no worker logged the Redis outage and its end"
    log("B: job exact after redis restart and broker down; outage logged by %s" % said)


def wait_until(st, job, n, timeout_s):
    deadline = time.time() + timeout_s
    while sum(job_progress(st.r, job)) < n:
        assert time.time() < deadline, "%s did not reach %d images" % (job, n)
        time.sleep(0.1)


def phase_c(st, workers):
    job = "termjob"
    imgs = make_images(st, DATA, job, 600)
    produce(st, TOPIC, manifest_lines(job, imgs, 50))
    wait_until(st, job, 100, 60)
    w = workers[1]
    t = time.time()
    w.p.send_signal(signal.SIGHUP)
    rc = w.p.wait(30)
    took = time.time() - t
    log("C: SIGHUP -> %s exit %d in %.1f s" % (w.name, rc, took))
    assert rc == 0, open(w.log_path()).read()[-2000:]
    assert took < 20 + 5
    # Its partitions move to the others once its static membership session times out.
    wait_job(st.r, job, 600, 90)
    check_job(st.r, job, imgs, 12)
    rcs = stop_all([x for x in workers if x is not w])
    log("C: remaining workers stopped: %s" % rcs)
    assert all(r == 0 for r in rcs), rcs


def metric(port, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("metric %s missing" % name)


def phase_e(st):
    """Backpressure (at most --max-inflight-shards in flight) and the second signal: an
    immediate exit that stores nothing for unfinished shards. The first worker's device
    takes 60 s per batch, so its shards stay in flight whatever the machine's speed."""
    job = "sigjob"
    imgs = make_images(st, DATA, job, 160)
    st.kafka_control("topic sig.jobs 4 1")
    time.sleep(0.5)
    port = free_port()
    args = ["--devices", "sim:1:60000", "--batch", "20", "--topic", "sig.jobs", "--group", "sig",
            "--max-inflight-shards", "2", "--metrics-port", str(port), "--report-interval", "1",
            "--session-timeout-ms", "6000", "--grace", "20"]
    w = Worker(st, "ws", args).start()
    port = w.metrics_port  # another one if the first was taken
    produce(st, "sig.jobs", manifest_lines(job, imgs, 20))
    deadline = time.time() + 40
    peak = 0
    while time.time() < deadline and peak < 2:
        try:
            peak = max(peak, metric(port, "batchdet_inflight_shards"))
        except OSError:
            pass
        time.sleep(0.1)
    assert peak == 2, "the worker never had 2 shards in flight"
    for _ in range(10):  # 8 shards wait in Kafka, yet only 2 are taken
        n = metric(port, "batchdet_inflight_shards")
        assert n <= 2, "%d shards in flight with --max-inflight-shards 2" % n
        time.sleep(0.1)
    assert metric(port, "batchdet_kafka_lag") >= 0
    t = time.time()
    w.p.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    w.p.send_signal(signal.SIGTERM)
    rc = w.p.wait(15)
    log("E: %d shards in flight; second signal -> exit %d in %.1f s" % (peak, rc, time.time() - t))
    assert rc == 1 and time.time() - t < 10, rc
    assert job_progress(st.r, job) == (0, 0)
    w.args = [a if a != "sim:1:60000" else "sim:1:5" for a in args]
    w.start()
    wait_job(st.r, job, 160, 60)
    check_job(st.r, job, imgs, 8)
    assert stop_all([w]) == [0]
    log("E: the restarted worker redid the abandoned shards; job exact")


def phase_g(st):
    """SIGTERM during a whole-cluster Kafka outage: leaving the group and the last report
    get what is left of --grace (at least 2 s and 1 s), so the worker exits 0 close to its
    grace period (it once took about 15 s more, waiting for the group coordinator)."""
    job = "outjob"
    imgs = make_images(st, DATA, job, 40)
    st.kafka_control("topic out.jobs 2 1")
    time.sleep(0.5)
    w = Worker(st, "wo", ["--devices", "sim:1:5", "--batch", "4", "--topic", "out.jobs", "--group",
                          "out", "--report-interval", "1", "--session-timeout-ms", "6000",
                          "--grace", "4"]).start()
    produce(st, "out.jobs", manifest_lines(job, imgs, 10))
    wait_job(st.r, job, 40, 60)
    for b in (1, 2, 3):
        st.kafka_control("down %d" % b)
    time.sleep(2)
    t = time.time()
    w.p.send_signal(signal.SIGTERM)
    rc = w.p.wait(60)
    took = time.time() - t
    for b in (1, 2, 3):
        st.kafka_control("up %d" % b)
    log("G: SIGTERM with every broker down -> exit %d in %.1f s (grace 4 s)" % (rc, took))
    assert rc == 0, open(w.log_path()).read()[-2000:]
    assert took < 4 + 6, "%.1f s past a 4 s grace" % took
    check_job(st.r, job, imgs, 4)


def phase_f(st):
    """Memory within one shard: 24 images of 3000 x 3000 (27 MB of pixels each, 648 MB
    together) behind a device that takes 300 ms per batch of 2, with 4 decoders and
    --max-inflight-mb 64. The decoders must wait for the network: the decoded pixels
    never pass 64 MiB (two images), where without the budget they all decode at once."""
    job = "memjob"
    big_png(os.path.join(st.www, "memjob-big.png"), 3000, 3000)
    imgs = []
    for i in range(24):
        name = "%s-img-%05d.png" % (job, i)
        os.symlink(os.path.join(st.www, "memjob-big.png"), os.path.join(st.www, name))
        imgs.append(("%s-img-%05d" % (job, i), st.base_url + name, None))
    st.kafka_control("topic mem.jobs 1 1")
    time.sleep(0.5)
    port = free_port()
    w = Worker(st, "wm", ["--devices", "sim:1:300", "--batch", "2", "--batch-timeout-ms", "20",
                          "--topic", "mem.jobs", "--group", "mem", "--decode-threads", "4",
                          "--max-inflight-mb", "64", "--metrics-port", str(port),
                          "--report-interval", "1", "--session-timeout-ms", "6000"]).start()
    port = w.metrics_port  # another one if the first was taken
    produce(st, "mem.jobs", manifest_lines(job, imgs, 24))
    wait_job(st.r, job, 24, 120)
    check_job(st.r, job, imgs, 1)
    peak = metric(port, "batchdet_decoded_bytes_peak")
    now = metric(port, "batchdet_decoded_bytes")
    log("F: decoded pixels peaked at %.1f MiB with --max-inflight-mb 64 (%.0f left)" % (peak / 2**20, now))
    assert 27e6 <= peak <= 64 * 2**20, "decoded pixels peaked at %.0f bytes" % peak
    assert now == 0, "decoded bytes not released: %d" % now
    assert stop_all([w]) == [0]


def phase_d(st, models):
    job = "cpujob"
    imgs = make_images(st, DATA, job, 18)
    st.kafka_control("topic cpu.jobs 2 1")
    time.sleep(0.5)
    w = Worker(st, "wc", ["--devices", "cpu", "--models", models, "--batch", "4", "--group",
                          "cpu-workers", "--topic", "cpu.jobs", "--report-interval", "1"]).start()
    produce(st, "cpu.jobs", manifest_lines(job, imgs, 6))
    photos = sorted({p for _, _, p in imgs})
    det = subprocess.run([os.environ.get("BD_DETECT_BIN", os.environ["BATCHDET"]), "detect", "--model",
                          os.path.join(models, "yolox_nano.onnx")] +
                         [os.path.join(DATA, "images", p) for p in photos],
                         stdout=subprocess.PIPE, check=True, timeout=240)
    ref = {}
    for line in det.stdout.decode().splitlines():
        j = json.loads(line)
        ref[os.path.basename(j["image"])] = j
    wait_job(st.r, job, len(imgs), 240)
    res = check_job(st.r, job, imgs, 3)
    n_boxes = 0
    for iid, _, photo in imgs:
        a, b = res[iid], ref[photo]
        assert (a["width"], a["height"]) == (b["width"], b["height"]), (iid, a, b)
        assert a["model"] == "yolox_nano"
        assert len(a["detections"]) == len(b["detections"]), (iid, a, b)
        for x, y in zip(a["detections"], b["detections"]):
            assert x["class"] == y["class"] and x.get("label") == y.get("label"), (x, y)
            # detect prints scores with 5 decimals and boxes with 2: allow that rounding.
            assert abs(x["score"] - y["score"]) <= 5e-6 + 1e-3, (x, y)
            for u, v in zip(x["box"], y["box"]):
                assert abs(u - v) <= 0.005 + 1e-3, (iid, x, y)
            n_boxes += 1
    assert n_boxes > 0
    log("D: cpu results equal detect (%d images, %d boxes)" % (len(imgs), n_boxes))
    # A model with its own names file (MODELS/NAME.names) is labelled from it, not with
    # COCO's names: the same network under another name, names "k0".."k79".
    os.symlink(os.path.join(DATA, "models", "yolox_nano.onnx"), os.path.join(models, "nano_k.onnx"))
    with open(os.path.join(models, "nano_k.names"), "w") as f:
        f.write("".join("k%d\n" % c for c in range(80)))
    job = "cpujob-k"
    kimgs = make_images(st, DATA, job, 4)
    produce(st, "cpu.jobs", manifest_lines(job, kimgs, 4, model="nano_k"))
    wait_job(st.r, job, len(kimgs), 240)
    kres = check_job(st.r, job, kimgs, 1)
    kdets = [d for iid, _, _ in kimgs for d in kres[iid]["detections"]]
    ref_n = sum(len(ref[p]["detections"]) for _, _, p in kimgs)
    assert kdets and len(kdets) == ref_n and all(d.get("label") == "k%d" % d["class"] for d in kdets), kdets[:3]
    log("D: a model with NAME.names is labelled from it (%d boxes)" % len(kdets))
    rc = stop_all([w])
    assert rc == [0], rc


def main():
    tmp = tempfile.mkdtemp(prefix="bd-worker-e2e-")
    st = Stack(tmp)
    ok = False
    try:
        models = os.path.join(tmp, "models")
        os.makedirs(models)
        os.symlink(os.path.join(DATA, "models", "yolox_nano.onnx"), os.path.join(models, "yolox_nano.onnx"))
        p = subprocess.run([os.environ["BATCHDET"], "worker", "--metrics-addr", "nope"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "--metrics-addr wants an IPv4 address" in p.stderr, p.stderr
        mport = free_port()
        workers = [Worker(st, "w%d" % i, sim_args(models, ["--metrics-port", str(mport), "--metrics-addr",
                                                            "127.0.0.1"] if i == 0 else []))
                   for i in range(3)]
        for w in workers:
            w.start()
        phase_a(st, models, workers, mport)
        phase_b(st, workers)
        phase_c(st, workers)
        phase_e(st)
        phase_f(st)
        phase_d(st, models)
        phase_g(st)
        ok = True
        log("PASS")
    finally:
        st.close()
        if ok and not os.environ.get("BD_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log("logs kept in %s" % tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
