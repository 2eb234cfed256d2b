#!/usr/bin/env python3
"""End-to-end tests of submit, coordinator, status, export and resubmit.

Real components on loopback: redis-server (appendonly yes, temp dir, random port), the
Kafka mock daemon (batchdet-kafka-mock) and s3rver (tests/storage/servers/s3_server.js).
The batchdet binary is driven as a user would; Kafka topics are read back with
bd_sched_tool, Redis through a minimal RESP client below. Expected values come from
the test's own inputs (image lists, MD5 ETags, boxes), never from the code under test.
Every wait is bounded."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import bd_testlib  # noqa: E402

BATCHDET = os.environ["BATCHDET"]
MOCK = os.environ["BD_KAFKA_MOCK"]
TOOL = os.environ["BD_SCHED_TOOL"]
SRC = os.environ["BD_SOURCE_DIR"]
PROCS = []
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, flush=True)
    else:
        print("ok:", what, flush=True)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Resp:
    """A minimal Redis client: commands as lists, pipelining by sending many at once."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.s.makefile("rb")

    @staticmethod
    def enc(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            d = self.f.read(n + 2)[:-2]
            return d.decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def cmd(self, *args):
        self.s.sendall(self.enc(args))
        return self.read()

    def pipe(self, cmds, chunk=2000):
        for i in range(0, len(cmds), chunk):
            part = cmds[i:i + chunk]
            self.s.sendall(b"".join(self.enc(c) for c in part))
            for _ in part:
                self.read()


def start(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    PROCS.append(p)
    return p


def run(args, env=None, timeout=120):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([BATCHDET] + args, capture_output=True, text=True, timeout=timeout, env=e)


def consume(brokers, topic, expect, timeout=30):
    group = "t-%s-%d" % (topic, time.time_ns())
    r = subprocess.run([TOOL, "consume", brokers, topic, group, str(expect), str(timeout)],
                       capture_output=True, text=True, timeout=timeout + 30)
    out = []
    for line in r.stdout.splitlines():
        k, _, v = line.partition("\t")
        out.append((k, json.loads(v)))
    return out


def manifests_ok(msgs, job, shard_size):
    ids, per = [], {}
    for k, m in msgs:
        if m["job"] != job or k != "%s:%d" % (job, m["shard"]) or len(m["images"]) > shard_size:
            return None, None
        per[m["shard"]] = m
        ids += [i["id"] for i in m["images"]]
    return ids, per


def main():
    tmp = tempfile.mkdtemp(prefix="bd-sched-")
    try:
        body(tmp)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failures" % len(FAILS))
    for f in FAILS:
        print("  -", f)
    return 1 if FAILS else 0


def body(tmp):
    # ---- servers ----
    rport = free_port()
    os.mkdir(os.path.join(tmp, "redis"))
    start(["/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--dir",
           os.path.join(tmp, "redis"), "--save", "", "--appendonly", "yes", "--appendfsync",
           "everysec", "--daemonize", "no", "--logfile", os.path.join(tmp, "redis", "log")])
    topics = ["batchdet.jobs:12", "batchdet.reports:3", "t.list:6", "t.dir:6", "t.s3:6",
              "t.inc:6", "t.coord:6", "t.resub:6", "t.resub2:6", "t.bom:1", "t.progress:2"]
    args = [MOCK, "--brokers", "1", "--no-stdin"]
    for t in topics:
        args += ["--topic", t]
    mock = start(args, stdout=subprocess.PIPE, text=True)
    brokers = mock.stdout.readline().strip()
    check(brokers.startswith("127.0.0.1"), "kafka mock bootstrap %s" % brokers)
    redis_url = "redis://127.0.0.1:%d" % rport
    r = None
    for _ in range(100):
        try:
            r = Resp(rport)
            r.cmd("PING")
            break
        except OSError:
            time.sleep(0.05)
    base = ["--brokers", brokers, "--redis", redis_url]

    # ---- submit's progress on a terminal: listing, URLs, shards, then cleared ----
    big = os.path.join(tmp, "big.txt")
    with open(big, "w") as f:
        f.write("".join("http://127.0.0.1:9/big/%05d.jpg\n" % i for i in range(2500)))
    rc, out, tty = bd_testlib.run_tty([BATCHDET, "submit", "--job", "P1", "--model", "m1", "--list",
                                       big, "--shard-size", "100", "--topic", "t.progress"] + base)
    check(rc == 0 and "2500 images in 25 shards" in out and "\rbatchdet submit: listed 1000 images" in tty
          and "storing URLs 2500/2500 (100%)" in tty and "queuing shards 25/25 (100%)" in tty
          and tty.endswith("\r\x1b[K"), "submit progress on a terminal (%r)" % tty[-160:])

    # ---- submit from a list ----
    lst = os.path.join(tmp, "list.txt")
    with open(lst, "w") as f:
        f.write("# a comment\n\n")
        for i in range(1000):
            if i % 2:
                f.write("img-%04d,http://127.0.0.1:9/p/%04d.jpg\n" % (i, i))
            else:
                f.write("https://cdn.example.org/photos/%04d.jpg?x=1\n" % i)
    p = run(["submit", "--job", "L1", "--model", "m1", "--list", lst, "--shard-size", "64",
             "--topic", "t.list"] + base)
    check(p.returncode == 0, "submit list exit 0 (%s)" % p.stderr.strip())
    check("1000 images in 16 shards" in p.stdout, "submit summary: %s" % p.stdout.strip())
    check("\r" not in p.stderr, "submit: no progress line when stderr is not a terminal")
    msgs = consume(brokers, "t.list", 16)
    ids, per = manifests_ok(msgs, "L1", 64)
    check(len(msgs) == 16 and ids is not None and sorted(per) == list(range(16)),
          "list: 16 manifests, shards 0..15, keys JOB:SHARD (got %d)" % len(msgs))
    exp_ids = set(["img-%04d" % i for i in range(1, 1000, 2)] +
                  ["photos_%04d.jpg" % i for i in range(0, 1000, 2)])
    check(ids is not None and len(ids) == 1000 and set(ids) == exp_ids, "list: 1000 images, ids given or derived")
    parts = set()
    job = r.cmd("HGETALL", "job:L1")
    job = dict(zip(job[::2], job[1::2]))
    check(job.get("total") == "1000" and job.get("shards") == "16" and job.get("state") == "queued"
          and job.get("model") == "m1", "list: job:L1 record %s" % {k: job.get(k) for k in ("total", "shards", "state")})
    gen1 = job.get("gen")
    check(gen1 and all(m.get("gen") == gen1 for _, m in msgs),
          "list: every manifest carries the job record's submission id (gen %s)" % gen1)
    check(r.cmd("HLEN", "job:L1:urls") == 1000, "list: job:L1:urls holds 1000 URLs")
    m = re.search(r"over (\d+) of (\d+) partitions", p.stdout)
    check(m and int(m.group(1)) > 1 and m.group(2) == "6", "list: shards spread over partitions")

    # resubmission refused, --force resets
    p = run(["submit", "--job", "L1", "--model", "m1", "--list", lst, "--topic", "t.list"] + base)
    check(p.returncode == 1 and "already exists" in p.stderr and "--force" in p.stderr,
          "re-submit refused: rc %d, %s" % (p.returncode, p.stderr.strip()))
    r.pipe([["SET", "det:L1:img-0001", '{"image":"img-0001","width":1,"height":1,"detections":[]}'],
            ["HINCRBY", "job:L1", "done", 7], ["SADD", "job:L1:shards", 0, 1],
            ["HSET", "job:L1:errors", "img-0003", "x"]])
    p = run(["submit", "--job", "L1", "--model", "m1", "--list", lst, "--shard-size", "64",
             "--topic", "t.list", "--force"] + base)
    check(p.returncode == 0 and "removed" in p.stdout, "submit --force ok: %s" % p.stdout.strip())
    job = r.cmd("HGETALL", "job:L1")
    job = dict(zip(job[::2], job[1::2]))
    check(job.get("done") == "0" and job.get("total") == "1000" and r.cmd("EXISTS", "det:L1:img-0001") == 0
          and r.cmd("SCARD", "job:L1:shards") == 0 and r.cmd("EXISTS", "job:L1:errors") == 0,
          "--force reset counters, results, shard set, errors (no double count)")
    msgs = consume(brokers, "t.list", 32)
    check(len(msgs) == 32, "--force produced the 16 shards again (32 on the topic: %d)" % len(msgs))
    # a new submission id: the shards still in flight from the first one (gen1) are
    # dropped by the workers' completion script instead of counting for this one
    gen2 = job.get("gen")
    gens = sorted(set(m.get("gen") for _, m in msgs))
    check(gen2 and gen2 != gen1 and gens == sorted([gen1, gen2]),
          "--force: a new gen (%s -> %s), the old shards keep the old one (%s)" % (gen1, gen2, gens))

    # ---- long URLs: a manifest stays under 900 KiB whatever --shard-size says ----
    lst2 = os.path.join(tmp, "long.txt")
    with open(lst2, "w") as f:
        for i in range(600):
            f.write("long-%04d,http://127.0.0.1:9/%s/%04d.jpg\n" % (i, "p" * 3900, i))
    p = run(["submit", "--job", "LONG", "--model", "m1", "--list", lst2, "--shard-size", "600",
             "--topic", "t.list"] + base)
    job = dict(zip(*[iter(r.cmd("HGETALL", "job:LONG"))] * 2))
    nsh = int(job.get("shards", "0"))
    msgs = [x for x in consume(brokers, "t.list", 32 + nsh) if x[1]["job"] == "LONG"]
    sizes = sorted(len(json.dumps(m)) for _, m in msgs)
    ids, per = manifests_ok(msgs, "LONG", 600)
    check(p.returncode == 0 and nsh >= 3 and len(msgs) == nsh and ids is not None and
          sorted(ids) == ["long-%04d" % i for i in range(600)] and sizes[-1] < 900 * 1024,
          "long URLs: %d shards under 900 KiB each (largest %s bytes), every image once (%s)"
          % (nsh, sizes[-1] if sizes else None, p.stdout.strip()))

    # ---- list edge cases: a UTF-8 BOM, no images ----
    bom = os.path.join(tmp, "bom.txt")
    with open(bom, "wb") as f:
        f.write(b"\xef\xbb\xbfid1,http://127.0.0.1:9/a.jpg\nid2,http://127.0.0.1:9/b.jpg\n")
    p = run(["submit", "--job", "B1", "--model", "m1", "--list", bom, "--topic", "t.bom"] + base)
    msgs = consume(brokers, "t.bom", 1)
    check(p.returncode == 0 and [i["id"] for _, m in msgs for i in m["images"]] == ["id1", "id2"],
          "list with a UTF-8 BOM: ids id1, id2 (%s %s)" % (p.stdout.strip(), p.stderr.strip()))
    for name, text in (("empty.txt", b""), ("bomonly.txt", b"\xef\xbb\xbf"),
                       ("comments.txt", b"# nothing\n\nid,url\n")):
        el = os.path.join(tmp, name)
        with open(el, "wb") as f:
            f.write(text)
        p = run(["submit", "--job", "EMPTY", "--model", "m1", "--list", el, "--topic", "t.bom"] + base)
        check(p.returncode == 1 and "no images in %s" % el in p.stderr and
              r.cmd("EXISTS", "job:EMPTY") == 0 and r.cmd("EXISTS", "job:EMPTY:urls") == 0,
              "submit of %s fails and creates no job: rc %d, %s" % (name, p.returncode, p.stderr.strip()))

    ed = os.path.join(tmp, "emptydir")
    os.makedirs(os.path.join(ed, "sub"))
    with open(os.path.join(ed, "notes.txt"), "w") as f:
        f.write("x")
    p = run(["submit", "--job", "EMPTYD", "--model", "m1", "--dir", ed, "--topic", "t.dir"] + base)
    check(p.returncode == 1 and "no images in %s" % ed in p.stderr and r.cmd("EXISTS", "job:EMPTYD") == 0,
          "submit of a directory without images fails and creates no job: rc %d, %s"
          % (p.returncode, p.stderr.strip()))

    # ---- submit from a directory ----
    d = os.path.join(tmp, "imgs")
    # names that mean something in a URL ('#' fragment, '?' query, '%' escape, space,
    # newline, non-ASCII) must still name the file once percent-encoded
    files = ["a/1.jpg", "a/b/2.png", "a/b/3.JPG", "c.jpeg", "c.txt", "z/9.png", "z/.hidden.jpg",
             "m/x y.jpg", "m/#hash.jpg", "m/%41.jpg", "m/q?x.jpg", "m/nl\n.jpg", "m/\u00e9t\u00e9.jpg"] + \
        ["n/%03d.jpg" % i for i in range(25)]
    for fn in files:
        os.makedirs(os.path.dirname(os.path.join(d, fn)), exist_ok=True)
        with open(os.path.join(d, fn), "wb") as f:
            f.write(fn.encode())
    os.symlink(os.path.join(tmp, "nonexistent.jpg"), os.path.join(d, "m", "dangling.jpg"))

    def walk(path):  # reference order: entries sorted by name (C locale), depth first
        out = []
        for e in sorted(os.listdir(path)):
            full = os.path.join(path, e)
            if e.startswith("."):
                continue
            if os.path.isdir(full):
                out += walk(full)
            elif os.path.isfile(full) and e.rsplit(".", 1)[-1].lower() in ("jpg", "jpeg", "png"):
                out.append("file://" + urllib.parse.quote(os.path.realpath(full), safe="/"))
        return out
    want = walk(d)
    p = run(["submit", "--job", "D1", "--model", "m1", "--dir", d, "--shard-size", "10",
             "--topic", "t.dir"] + base)
    check(p.returncode == 0 and "%d images in 4 shards" % len(want) in p.stdout and
          "ignored: 1 not matching --ext, 1 hidden (name starts with '.'), 1 dangling links, "
          "unreadable or not files\n" in p.stdout,
          "submit dir: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    msgs = consume(brokers, "t.dir", 4)
    _, per = manifests_ok(msgs, "D1", 10)
    urls = [i["url"] for s in sorted(per or {}) for i in per[s]["images"]]
    check(urls == want and len(want) == 36, "dir: %d file:// URLs, recursive and sorted" % len(urls))
    readback = []
    for u in urls:  # a reference decoder gives back each file (its content is its name)
        try:
            with open(urllib.parse.unquote(u[len("file://"):]), "rb") as f:
                readback.append(f.read().decode())
        except OSError:
            readback.append(None)
    images = set(fn for fn in files if "/." not in fn and fn.rsplit(".", 1)[-1].lower() in ("jpg", "jpeg", "png"))
    check(len(readback) == 36 and set(readback) == images, "dir: every URL decodes to its own file")
    ok = bool(per)
    for sh, m in sorted((per or {}).items()):
        mf = os.path.join(tmp, "d1-%d.json" % sh)
        with open(mf, "w") as f:
            json.dump(m, f)
        v = run(["manifest", "validate", mf])
        ok = ok and v.returncode == 0 and ("ok: %d images" % len(m["images"])) in v.stdout
    check(ok, "dir: manifests with encoded URLs pass manifest validate")

    # ---- S3 prefix (> 1000 keys: pagination) and incremental ----
    s3dir = os.path.join(tmp, "s3")
    os.mkdir(s3dir)
    s3 = start(["/usr/bin/node", "--openssl-legacy-provider",
                os.path.join(SRC, "tests/storage/servers/s3_server.js"), s3dir, "bdtest"],
               stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    s3port = int(s3.stdout.readline())
    s3env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:%d" % s3port, "AWS_ACCESS_KEY_ID": "S3RVER",
             "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_REGION": "us-east-1"}
    etags = {}

    def put(key, data):
        req = urllib.request.Request("http://127.0.0.1:%d/bdtest/%s" % (s3port, key), data=data, method="PUT")
        urllib.request.urlopen(req, timeout=10).read()
        etags[key] = hashlib.md5(data).hexdigest()
    N = 1203
    for i in range(N):
        put("photos/k%05d.jpg" % i, b"img %d" % i)
    put("photos/readme.txt", b"x")
    put("other/k1.jpg", b"x")
    p = run(["submit", "--job", "S1", "--model", "m1", "--s3-prefix", "s3://bdtest/photos/",
             "--shard-size", "100", "--topic", "t.s3"] + base, env=s3env)
    check(p.returncode == 0 and "%d images in 13 shards" % N in p.stdout,
          "submit s3: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    msgs = consume(brokers, "t.s3", 13)
    ids, per = manifests_ok(msgs, "S1", 100)
    s3imgs = [i for s in sorted(per or {}) for i in per[s]["images"]]
    check(len(msgs) == 13 and len(s3imgs) == N and
          [i["url"] for i in s3imgs] == ["s3://bdtest/photos/k%05d.jpg" % i for i in range(N)] and
          [i["id"] for i in s3imgs] == ["k%05d.jpg" % i for i in range(N)],
          "s3: 13 manifests, %d images in key order, ids from keys" % len(s3imgs))
    # results as a worker stores them: model and the HTTP ETag (quoted)
    r.pipe([["SET", "det:S1:k%05d.jpg" % i, json.dumps(
        {"image": "k%05d.jpg" % i, "width": 10, "height": 10, "model": "m1",
         "etag": '"%s"' % etags["photos/k%05d.jpg" % i], "detections": []})] for i in range(N)])
    p = run(["submit", "--job", "S2", "--model", "m1", "--s3-prefix", "s3://bdtest/photos/",
             "--topic", "t.inc", "--incremental", "--since-job", "S1"] + base, env=s3env)
    check(p.returncode == 0 and "0 images in 0 shards" in p.stdout and "%d skipped" % N in p.stdout,
          "incremental, unchanged prefix: nothing submitted: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    changed = ["photos/k00005.jpg", "photos/k00600.jpg", "photos/k01202.jpg"]
    for k in changed:
        put(k, b"changed " + k.encode())
    put("photos/new1.jpg", b"n1")
    put("photos/new2.png", b"n2")
    p = run(["submit", "--job", "S3", "--model", "m1", "--s3-prefix", "s3://bdtest/photos/",
             "--topic", "t.inc", "--incremental", "--since-job", "S1"] + base, env=s3env)
    check(p.returncode == 0 and "5 images in 1 shards" in p.stdout and "3 source changed" in p.stdout
          and "2 new" in p.stdout, "incremental after 3 changes + 2 new: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    msgs = consume(brokers, "t.inc", 1)
    got = sorted(i["url"] for _, m in msgs for i in m["images"])
    check(got == sorted("s3://bdtest/" + k for k in changed + ["photos/new1.jpg", "photos/new2.png"]),
          "incremental: exactly the 5 changed/new objects on the topic (%d)" % len(got))
    check(r.cmd("HGET", "job:S3", "total") == "5", "incremental job total counts submitted images only")
    # a prefix with no matching objects is a mistake, as an empty list is: no job
    p = run(["submit", "--job", "S4", "--model", "m1", "--s3-prefix", "s3://bdtest/nothing-here/",
             "--topic", "t.s3"] + base, env=s3env)
    check(p.returncode == 1 and "no images under s3://bdtest/nothing-here/" in p.stderr and
          r.cmd("EXISTS", "job:S4") == 0, "s3 prefix without images: rc %d, %s" % (p.returncode, p.stderr.strip()))
    s3.stdin.close()

    # ---- resubmit --failed ----
    rl = os.path.join(tmp, "resub.txt")
    with open(rl, "w") as f:
        for i in range(20):
            f.write("r%02d,http://127.0.0.1:9/r/%02d.jpg\n" % (i, i))
    p = run(["submit", "--job", "R1", "--model", "m1", "--list", rl, "--shard-size", "8",
             "--score-thr", "0.4", "--topic", "t.resub"] + base)
    check(p.returncode == 0, "submit R1")
    failed = ["r03", "r07", "r11", "r19"]
    r.pipe([["HSET", "job:R1", "done", 16, "failed", 4, "state", "complete"], ["SADD", "job:R1:shards", 0, 1, 2]] +
           [["HSET", "job:R1:errors", x, "fetch: HTTP 404"] for x in failed])
    p = run(["resubmit", "--job", "R1", "--failed", "--shard-size", "3", "--topic", "t.resub"] + base)
    check(p.returncode == 0 and "requeued 4 failed images as shards 3..4" in p.stdout,
          "resubmit: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    msgs = consume(brokers, "t.resub", 5)
    new = [m for _, m in msgs if m["shard"] >= 3]
    got = sorted((i["id"], i["url"]) for m in new for i in m["images"])
    check(len(msgs) == 5 and sorted(m["shard"] for m in new) == [3, 4] and
          got == [(x, "http://127.0.0.1:9/r/%s.jpg" % x[1:]) for x in failed] and
          all(m.get("score_thr") == 0.4 and m["model"] == "m1" for m in new),
          "resubmit: new shards 3,4 carry exactly the failed images, URLs, thresholds")
    job = r.cmd("HGETALL", "job:R1")
    job = dict(zip(job[::2], job[1::2]))
    check(job.get("shards") == "5" and job.get("total") == "20" and job.get("state") == "queued",
          "resubmit: shards 3 -> 5, total unchanged, state queued")
    check(job.get("gen") and all(m.get("gen") == job.get("gen") for _, m in msgs),
          "resubmit: the new shards carry the job's submission id (gen %s)" % job.get("gen"))
    retry = r.cmd("HGETALL", "job:R1:retry")
    retry = dict(zip(retry[::2], retry[1::2]))
    check(retry == {"r03": "3", "r07": "3", "r11": "3", "r19": "4"},
          "resubmit records the shard carrying each requeued image: %s" % retry)
    # Again before shards 3 and 4 have run: nothing is queued twice.
    p = run(["resubmit", "--job", "R1", "--failed", "--shard-size", "3", "--topic", "t.resub"] + base)
    check(p.returncode == 0 and "no failed images to requeue" in p.stdout and
          "4 failed images are still pending" in p.stdout and r.cmd("HGET", "job:R1", "shards") == "5",
          "resubmit while the retries are pending: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    # Shard 3 completed with its images failing again: those three are requeued, r19 waits.
    r.cmd("SADD", "job:R1:shards", 3)
    p = run(["resubmit", "--job", "R1", "--failed", "--shard-size", "3", "--topic", "t.resub"] + base)
    check(p.returncode == 0 and "requeued 3 failed images as shards 5..5" in p.stdout and
          "1 failed images are still pending" in p.stdout,
          "resubmit after shard 3 completed: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    # --include-pending takes all four (a lost shard's images, say).
    p = run(["resubmit", "--job", "R1", "--failed", "--include-pending", "--shard-size", "3",
             "--topic", "t.resub"] + base)
    check(p.returncode == 0 and "requeued 4 failed images as shards 6..7" in p.stdout,
          "resubmit --include-pending: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    msgs = consume(brokers, "t.resub", 9, timeout=5)
    later = sorted((m["shard"], sorted(i["id"] for i in m["images"])) for _, m in msgs if m["shard"] >= 5)
    check(len(msgs) == 8 and later == [(5, ["r03", "r07", "r11"]), (6, ["r03", "r07", "r11"]), (7, ["r19"])],
          "the topic holds exactly shards 0..7, the retries as expected: %d, %s" % (len(msgs), later))
    # A claim whose resubmit died before recording its shard: taken again once stale (900
    # s; "-1" is the old form, claimed in 1970), left alone while fresh (10 minutes old:
    # a claim 899 s old, truncated to whole seconds, went stale on a loaded machine).
    r.cmd("HSET", "job:R1:retry", "r03", "-1", "r07", "-%d" % (time.time() - 600))
    p = run(["resubmit", "--job", "R1", "--failed", "--shard-size", "3", "--topic", "t.resub"] + base)
    check(p.returncode == 0 and "requeued 1 failed images as shards 8..8" in p.stdout and
          "3 failed images are still pending" in p.stdout and
          r.cmd("HGET", "job:R1:retry", "r03") == "8" and
          r.cmd("HGET", "job:R1:retry", "r07").startswith("-"),
          "resubmit takes a stale claim, leaves a fresh one: %s %s" % (p.stdout.strip(), p.stderr.strip()))
    # Four resubmits at once: each failed image is claimed by exactly one of them (before,
    # all four requeued all three), and the shard numbers stay distinct (they once all read
    # shards=1 and produced shard 1 four times, leaving shards=5 with 2 distinct).
    p = run(["submit", "--job", "R2", "--model", "m1", "--list", rl, "--shard-size", "20",
             "--topic", "t.resub2"] + base)
    r.pipe([["HSET", "job:R2", "done", 17, "failed", 3, "state", "complete"], ["SADD", "job:R2:shards", 0]] +
           [["HSET", "job:R2:errors", x, "fetch: HTTP 404"] for x in failed[:3]])
    procs = [subprocess.Popen([BATCHDET, "resubmit", "--job", "R2", "--failed", "--topic", "t.resub2"] + base,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [pr.communicate(timeout=120) for pr in procs]
    msgs = consume(brokers, "t.resub2", 6, timeout=5)
    new = [m for _, m in msgs if m["shard"] >= 1]
    got = sorted(i["id"] for m in new for i in m["images"])
    shards_now = int(r.cmd("HGET", "job:R2", "shards") or -1)
    check(all(pr.returncode == 0 for pr in procs) and got == sorted(failed[:3]) and
          sorted(m["shard"] for m in new) == list(range(1, shards_now)),
          "four resubmits at once requeue each failed image once, in distinct shards 1..%d: %s %s"
          % (shards_now - 1, got, [o[0].strip() for o in outs]))

    # ---- coordinator ----
    cl = os.path.join(tmp, "coord.txt")
    with open(cl, "w") as f:
        for i in range(400):
            f.write("c%03d,http://127.0.0.1:9/c/%03d.jpg\n" % (i, i))
    p = run(["submit", "--job", "C1", "--model", "m1", "--list", cl, "--shard-size", "40",
             "--topic", "t.coord"] + base)
    check(p.returncode == 0, "submit C1")
    co = start([BATCHDET, "coordinator", "--tick", "0.25", "--silent-after", "4", "--stall-after", "60",
                "--metrics-port", "-1"] + base, stderr=subprocess.PIPE, text=True)
    mport = None
    t_end = time.time() + 30
    while time.time() < t_end:
        line = co.stderr.readline()
        mm = re.search(r"coordinator ready: metrics port (\d+)", line)
        if mm:
            mport = int(mm.group(1))
            break
    check(mport, "coordinator started, metrics port %s" % mport)
    prod = start([TOOL, "produce", brokers, "batchdet.reports"], stdin=subprocess.PIPE, text=True)

    def report(worker, ts, rate, shards=()):
        rep = {"v": 1, "worker": worker, "host": worker.split(":")[0], "ts": ts,
               "devices": [{"name": "cuda:0", "images": 1, "failed": 0, "img_s": rate},
                           {"name": "cuda:1", "images": 1, "failed": 0, "img_s": rate / 2}],
               "shards_done": [{"job": "C1", "shard": s, "images": 40, "failed": 0} for s in shards]}
        prod.stdin.write("%s\t%s\n" % (worker, json.dumps(rep)))
        prod.stdin.flush()
    report("deadhost:1", time.time(), 10.0)
    RATE = 50.0
    t0 = time.time()
    done = 0
    rate_seen = eta_seen = None
    elapsed_rate = 0.0
    last_rep = 0
    while done < 400 and time.time() - t0 < 30:
        target = min(400, int((time.time() - t0) * RATE))
        if target > done:
            r.cmd("HINCRBY", "job:C1", "done", target - done)
            for s in range(done // 40, target // 40):
                r.cmd("SADD", "job:C1:shards", s)
            done = target
        if time.time() - last_rep > 0.5:
            report("livehost:7", time.time(), RATE * 2 / 3)
            last_rep = time.time()
        if 300 <= done < 400 and rate_seen is None:
            rate_seen = float(r.cmd("HGET", "job:C1", "rate") or 0)
            eta_seen = r.cmd("HGET", "job:C1", "eta")
            elapsed_rate = done / (time.time() - t0)
        time.sleep(0.05)
    check(rate_seen is not None and abs(rate_seen - elapsed_rate) <= 0.2 * elapsed_rate,
          "coordinator rate %.1f within 20%% of images/elapsed %.1f" % (rate_seen or -1, elapsed_rate))
    check(eta_seen is not None and 0 < float(eta_seen) < 10, "coordinator ETA while running: %s" % eta_seen)
    state = None
    t_end = time.time() + 15
    while time.time() < t_end:
        report("livehost:7", time.time(), RATE * 2 / 3)
        state = r.cmd("HGET", "job:C1", "state")
        if state == "complete" and r.cmd("HGET", "worker:deadhost:1", "silent") == "1":
            break
        time.sleep(0.3)
    check(state == "complete" and r.cmd("HEXISTS", "job:C1", "finished") == 1, "coordinator marked C1 complete")
    check(r.cmd("HGET", "worker:deadhost:1", "silent") == "1", "silent worker flagged")
    check(r.cmd("HGET", "worker:livehost:7", "silent") == "0", "live worker not flagged")
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
    check('batchdet_job_progress_ratio{job="C1"} 1' in metrics and
          'batchdet_worker_img_s{worker="livehost:7",device="cuda:0"} 33.3333' in metrics and
          'batchdet_worker_silent{worker="deadhost:1"} 1' in metrics and
          'batchdet_job_complete{job="C1"} 1' in metrics, "prometheus metrics")
    # restart: the view is rebuilt from Redis
    co.send_signal(signal.SIGTERM)
    check(co.wait(20) == 0, "coordinator exits 0 on SIGTERM")
    # restart: the view is rebuilt from Redis (SCAN job:*), a reopened job is tracked again
    r.cmd("HSET", "job:R1", "state", "queued")
    # U1: results of hand-made manifests for a job submit never recorded (no total, no
    # shards): counted, but never complete (it once showed complete with total 0) and,
    # with nothing expected, never stalled.
    r.cmd("HSET", "job:U1", "done", 5, "failed", 1)
    r.cmd("SADD", "job:U1:shards", 0)
    co = start([BATCHDET, "coordinator", "--tick", "0.25", "--silent-after", "4", "--stall-after", "1.5",
                "--metrics-port", "-1"] + base,
               stderr=subprocess.PIPE, text=True)
    mport = None
    t_end = time.time() + 30
    while time.time() < t_end and mport is None:
        mm = re.search(r"coordinator ready: metrics port (\d+)", co.stderr.readline())
        mport = int(mm.group(1)) if mm else None
    r.cmd("SADD", "job:R1:shards", 3, 4, 5, 6, 7, 8)  # the retry shards queued above
    r.cmd("HSET", "job:R1", "done", 19, "failed", 1)
    t_end = time.time() + 10
    while time.time() < t_end and r.cmd("HGET", "job:R1", "state") != "complete":
        time.sleep(0.2)
    # The metrics page is rendered from the coordinator's view, which can trail the Redis
    # write of the same tick: poll it (bounded) instead of reading it once.
    metrics = ""
    t_end = time.time() + 10
    while mport and time.time() < t_end:
        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
        if ('batchdet_job_complete{job="C1"} 1' in metrics
                and 'batchdet_job_images{job="R1",outcome="done"} 19' in metrics):
            break
        time.sleep(0.25)
    check(r.cmd("HGET", "job:R1", "state") == "complete" and 'batchdet_job_complete{job="C1"} 1' in metrics
          and 'batchdet_job_images{job="R1",outcome="done"} 19' in metrics,
          "restarted coordinator rebuilt its view and completed the resubmitted job (state %s, mport %s)"
          % (r.cmd("HGET", "job:R1", "state"), mport))
    t_end = time.time() + 10
    while time.time() < t_end and r.cmd("HGET", "job:L1", "stalled") != "1":
        time.sleep(0.2)
    check(r.cmd("HGET", "job:L1", "stalled") == "1", "a job without progress is flagged stalled")
    u1 = r.cmd("HGETALL", "job:U1")
    u1 = dict(zip(u1[::2], u1[1::2])) if isinstance(u1, list) else u1
    check(u1.get("state") == "running" and u1.get("stalled") == "0" and "finished" not in u1
          and 'batchdet_job_total_images{job="U1"} NaN' in metrics,
          "a job with no submit record is running, not complete or stalled: %s" % u1)
    p = run(["status", "--redis", redis_url])
    check(any(x.startswith("L1 ") and x.endswith("stalled") for x in p.stdout.splitlines()),
          "status shows the stalled job")
    co.send_signal(signal.SIGTERM)
    check(co.wait(20) == 0, "restarted coordinator exits 0")
    prod.stdin.close()
    prod.wait(30)

    # ---- status ----
    p = run(["status", "--json", "--redis", redis_url])
    try:
        doc = json.loads(p.stdout)
        jobs = {j["job"]: j for j in doc["jobs"]}
        ok = jobs["C1"]["state"] == "complete" and jobs["L1"]["total"] == 1000 and \
            jobs["U1"]["total"] is None and \
            any(w["worker"] == "livehost:7" and len(w["devices"]) == 2 for w in doc["workers"])
    except (ValueError, KeyError) as e:
        ok = False
        print(e, p.stdout[:500])
    check(p.returncode == 0 and ok, "status --json is valid JSON with jobs and workers")
    p = run(["status", "--job", "R1", "--redis", redis_url])
    check(p.returncode == 0 and "fetch: HTTP 404" in p.stdout and re.search(r"\b4\s+fetch: HTTP 404", p.stdout),
          "status --job shows the error summary")
    t = time.time()
    p = run(["status", "--job", "C1", "--watch", "--interval", "0.2", "--redis", redis_url], timeout=20)
    check(p.returncode == 0 and p.stdout.startswith("\033[H\033[2J") and time.time() - t < 10,
          "status --watch --job ends when the job is complete")
    p = run(["status", "--job", "nope", "--redis", redis_url])
    check(p.returncode == 1 and "no such job" in p.stderr, "status of a missing job fails")
    p = run(["status", "--redis", redis_url])
    lines = p.stdout.splitlines()
    check(p.returncode == 0 and all(len(x) <= 80 for x in lines), "status lines <= 80 columns (max %d)" %
          max(len(x) for x in lines))
    if shutil.which("tmux"):
        sock = os.path.join(tmp, "tmux.sock")
        cmdline = "%s status --redis %s; sleep 30" % (BATCHDET, redis_url)
        subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "80", "-y", "40", cmdline],
                       check=False, timeout=30, env=dict(os.environ, TERM="xterm"))
        screen = ""
        for _ in range(50):
            time.sleep(0.2)
            screen = subprocess.run(["tmux", "-S", sock, "capture-pane", "-p"], capture_output=True,
                                    text=True, timeout=30).stdout
            if "WORKER" in screen:
                break
        subprocess.run(["tmux", "-S", sock, "kill-server"], timeout=30)
        rows = screen.splitlines()
        c1 = [x for x in rows if x.startswith("C1 ")]
        check(any(x.startswith("JOB") and "PROGRESS" in x and "ETA" in x for x in rows) and c1 and
              "[##########]100%" in c1[0] and "complete" in c1[0] and
              any(x.startswith("L1 ") and "[..........]  0%" in x and "stalled" in x for x in rows) and
              all(len(x) <= 80 for x in rows), "status in tmux at 80 columns:\n" + screen)
    else:
        check(False, "tmux is installed (deploy/install-deps.sh)")

    # ---- export ----
    rng = __import__("random").Random(7)
    results = {}
    for i in range(300):
        iid = "e%03d" % i
        if i % 10 == 9:
            results[iid] = {"image": iid, "error": "decode: truncated"}
            continue
        w, h = rng.randint(50, 2000), rng.randint(50, 2000)
        dets = []
        for _ in range(rng.randint(0, 4)):
            x1, y1 = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            x2, y2 = rng.uniform(x1, w), rng.uniform(y1, h)
            dets.append({"class": rng.randint(0, 79), "label": "x", "score": round(rng.random(), 4),
                         "box": [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)]})
        results[iid] = {"image": iid, "width": w, "height": h, "model": "m1", "detections": dets}
    r.pipe([["HSET", "job:E1", "state", "complete", "model", "m1", "total", 300]] +
           [["SET", "det:E1:" + k, json.dumps(v)] for k, v in results.items()] +
           [["HSET", "job:E1:urls", k, "http://h/dir/%s.jpg" % k] for k in results])
    coco91 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
              31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54,
              55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81,
              82, 84, 85, 86, 87, 88, 89, 90]
    out = os.path.join(tmp, "e1.json")
    p = run(["export", "--job", "E1", "--format", "coco", "-o", out, "--redis", redis_url])
    check(p.returncode == 0 and "exported job E1" in p.stderr, "export coco: %s" % p.stderr.strip())
    with open(out) as f:
        coco = json.load(f)
    imgs = {im["id"]: im for im in coco["images"]}
    good = {k: v for k, v in results.items() if "error" not in v}
    ok = len(imgs) == len(coco["images"]) == len(good)
    ok = ok and all(im["file_name"] == im["image_key"] + ".jpg" and
                    im["width"] == good[im["image_key"]]["width"] for im in coco["images"])
    want_ann = sorted((k, coco91[d["class"]], d["box"][0], d["box"][1], d["box"][2] - d["box"][0],
                       d["box"][3] - d["box"][1], d["score"]) for k, v in good.items() for d in v["detections"])
    got_ann = sorted((imgs[a["image_id"]]["image_key"], a["category_id"], *a["bbox"], a["score"])
                     for a in coco["annotations"])
    ok = ok and len(want_ann) == len(got_ann) and all(
        w[:2] == g[:2] and all(abs(x - y) < 0.011 for x, y in zip(w[2:], g[2:])) for w, g in zip(want_ann, got_ann))
    ok = ok and len(set(a["id"] for a in coco["annotations"])) == len(coco["annotations"])
    ok = ok and [c["id"] for c in coco["categories"]] == coco91
    check(ok, "coco: image ids unique, categories 80->91, bbox [x,y,w,h], scores (%d anns)" % len(got_ann))
    # a custom model's labels name its categories (ids unchanged: COCO's below 80); a
    # class from 80 up is listed with id 1000 + class, its label, or "class N" without one
    r.pipe([["HSET", "job:E3", "state", "complete", "model", "m3", "total", 2],
            ["SET", "det:E3:c1", json.dumps({"image": "c1", "width": 10, "height": 10, "detections": [
                {"class": 3, "label": "helmet", "score": 0.9, "box": [1, 1, 5, 5]},
                {"class": 100, "label": "thing", "score": 0.8, "box": [2, 2, 6, 6]}]})],
            ["SET", "det:E3:c2", json.dumps({"image": "c2", "width": 10, "height": 10, "detections": [
                {"class": 3, "label": "helmet", "score": 0.7, "box": [1, 1, 4, 4]},
                {"class": 205, "score": 0.6, "box": [0, 0, 3, 3]}]})]])
    out3 = os.path.join(tmp, "e3.json")
    p3 = run(["export", "--job", "E3", "--format", "coco", "-o", out3, "--redis", redis_url])
    cats3 = {}
    if p3.returncode == 0:
        with open(out3) as f:
            e3 = json.load(f)
        cats3 = {c["id"]: c["name"] for c in e3["categories"]}
        anns3 = sorted(a["category_id"] for a in e3["annotations"])
    check(p3.returncode == 0 and len(cats3) == 82 and cats3.get(4) == "helmet" and cats3.get(1) == "person"
          and cats3.get(1100) == "thing" and cats3.get(1205) == "class 205" and anns3 == [4, 4, 1100, 1205],
          "coco categories named by the results' labels, classes >= 80 listed: %s" %
          {k: v for k, v in cats3.items() if k in (1, 4) or k >= 1000})
    # file:// URLs as submit --dir writes them (percent-encoded): file_name is the name on
    # disk; http URLs keep their segment as is; a name that is not UTF-8 gets U+FFFD
    r.pipe([["HSET", "job:E2", "state", "complete", "model", "m1", "total", 3]] +
           [["SET", "det:E2:" + k, json.dumps({"image": k, "width": 10, "height": 10, "detections": []})]
            for k in ("f1", "f2", "f3")] +
           [["HSET", "job:E2:urls", "f1", "file:///data/sub/a%20b%23c.jpg"],
            ["HSET", "job:E2:urls", "f2", "http://h/x%20y.jpg"],
            ["HSET", "job:E2:urls", "f3", "file:///data/bad%FF.jpg"]])
    out2 = os.path.join(tmp, "e2.json")
    p2 = run(["export", "--job", "E2", "--format", "coco", "-o", out2, "--redis", redis_url])
    names = {}
    if p2.returncode == 0:
        with open(out2) as f:
            names = {im["image_key"]: im["file_name"] for im in json.load(f)["images"]}
    check(names == {"f1": "a b#c.jpg", "f2": "x%20y.jpg", "f3": "bad\ufffd.jpg"},
          "coco file_name of file:// URLs decoded: %s" % names)
    n_dets = sum(len(v["detections"]) for v in good.values())
    check("%d images, %d detections, %d errors" % (len(good), n_dets, len(results) - len(good)) in p.stderr,
          "export coco summary counts: %s" % p.stderr.strip())
    out = os.path.join(tmp, "e1.jsonl")
    p = run(["export", "--job", "E1", "--format", "jsonl", "-o", out, "--redis", redis_url])
    with open(out) as f:
        rows = [json.loads(x) for x in f]
    check(p.returncode == 0 and sorted(rows, key=lambda x: x["image"]) == [results[k] for k in sorted(results)],
          "jsonl: every result, errors included, one per line")
    check("%d images, %d detections, %d errors" % (len(good), n_dets, len(results) - len(good)) in p.stderr,
          "export jsonl summary counts the detections it wrote: %s" % p.stderr.strip())
    for fmt in ("jsonl", "coco", "yolo"):
        out = os.path.join(tmp, "nojob." + fmt)
        p = run(["export", "--job", "nojob", "--format", fmt, "-o", out, "--redis", redis_url])
        check(p.returncode == 1 and "job nojob: no such job" in p.stderr and not os.path.exists(out),
              "export %s of a missing job fails, writes nothing: rc %d, %s" % (fmt, p.returncode, p.stderr.strip()))
    out = os.path.join(tmp, "yolo")
    p = run(["export", "--job", "E1", "--format", "yolo", "-o", out, "--redis", redis_url])
    check("%d detections" % n_dets in p.stderr, "export yolo summary: %s" % p.stderr.strip())
    ok = p.returncode == 0 and sorted(os.listdir(out)) == sorted([k + ".txt" for k in good] + ["data.yaml"])
    if ok:
        import yaml
        with open(os.path.join(out, "data.yaml")) as f:
            dy = yaml.safe_load(f)
        check(dy["nc"] == 80 and len(dy["names"]) == 80 and all(n == "x" for n in dy["names"]),
              "yolo data.yaml: nc 80, names from the results' labels (%s)" % str(dy)[:120])
    out3 = os.path.join(tmp, "yolo3")
    p3 = run(["export", "--job", "E3", "--format", "yolo", "-o", out3, "--redis", redis_url])
    names3 = []
    if p3.returncode == 0:
        import yaml
        with open(os.path.join(out3, "data.yaml")) as f:
            dy = yaml.safe_load(f)
        names3 = dy["names"] if dy["nc"] == 206 == len(dy["names"]) else []
    check(names3 and names3[0] == "person" and names3[3] == "helmet" and names3[100] == "thing"
          and names3[150] == "class 150" and names3[205] == "class 205",
          "yolo data.yaml of custom and >= 80 classes: %s" % names3[:5])
    for k, v in good.items():
        if not ok:
            break
        with open(os.path.join(out, k + ".txt")) as f:
            got = [x.split() for x in f.read().splitlines()]
        w, h = v["width"], v["height"]
        want = [[d["class"], (d["box"][0] + d["box"][2]) / 2 / w, (d["box"][1] + d["box"][3]) / 2 / h,
                 (d["box"][2] - d["box"][0]) / w, (d["box"][3] - d["box"][1]) / h] for d in v["detections"]]
        ok = len(got) == len(want) and all(len(g) == 5 and int(g[0]) == wv[0] and
                                           all(abs(float(a) - b) < 2e-6 for a, b in zip(g[1:], wv[1:]))
                                           for g, wv in zip(got, want))
    check(ok, "yolo: one file per image, class cx cy w h normalised (5 columns)")

    # 100k results: bounded memory
    def load(job, n):
        cmds = [["HSET", "job:" + job, "state", "complete", "model", "m1", "total", n]]
        for i in range(n):
            cmds.append(["SET", "det:%s:i%06d" % (job, i), '{"image":"i%06d","width":640,"height":480,'
                         '"model":"m1","detections":[{"class":%d,"score":0.5,"box":[10,20,110,220]}]}' % (i, i % 80)])
        r.pipe(cmds, chunk=5000)

    def export_rss(job, fmt, out):
        t = time.time()
        # ASan's quarantine keeps freed memory resident (256 MB by default): turn it off so
        # that RSS shows what the program holds.
        env = dict(os.environ, ASAN_OPTIONS="quarantine_size_mb=0:detect_leaks=1")
        pr = subprocess.Popen([BATCHDET, "export", "--job", job, "--format", fmt, "-o", out, "--redis", redis_url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        _, status, ru = os.wait4(pr.pid, 0)
        pr.returncode = os.waitstatus_to_exitcode(status)
        return pr.returncode, ru.ru_maxrss / 1024.0, time.time() - t
    load("B10K", 10000)
    load("B100K", 100000)
    rc1, rss10, t10 = export_rss("B10K", "coco", os.path.join(tmp, "b10k.json"))
    rc2, rss100, t100 = export_rss("B100K", "coco", os.path.join(tmp, "b100k.json"))
    with open(os.path.join(tmp, "b100k.json")) as f:
        big = json.load(f)
    sanitized = b"__asan_init" in open(BATCHDET, "rb").read()
    print("export max RSS: 10k %.1f MB (%.1f s), 100k %.1f MB (%.1f s), sanitizers %s" %
          (rss10, t10, rss100, t100, sanitized))
    check(rc1 == 0 and rc2 == 0 and len(big["images"]) == 100000 and len(big["annotations"]) == 100000,
          "export of 100k results complete")
    # Under ASan the shadow memory and quarantine inflate RSS: there the bound is on growth.
    check(rss100 < 64 if not sanitized else (rss100 < 128 and rss100 - rss10 < 16),
          "export memory bounded: 100k -> %.1f MB, 10k -> %.1f MB" % (rss100, rss10))

    # ---- past 10,000 job records; a key of another kind under job:*; a stall across a
    # coordinator restart; methods other than GET ----
    now = time.time()
    r.pipe([["HSET", "job:F%05d" % i, "state", "complete", "model", "m1", "total", 1, "done", 1,
             "shards", 1, "finished", now - 3600, "updated", now - 3600] for i in range(10050)], chunk=5000)
    r.cmd("SET", "job:legacy", "not a hash")
    r.pipe([["HSET", "job:ZZ-live", "state", "queued", "model", "m1", "total", 4, "shards", 2, "done", 0,
             "failed", 0, "created", now]])
    r.cmd("HSET", "job:ST1", "state", "queued", "model", "m1", "total", 10, "shards", 2, "done", 3,
          "failed", 0, "created", now)

    def coordinator(stall):
        pr = start([BATCHDET, "coordinator", "--tick", "0.25", "--stall-after", str(stall),
                    "--metrics-port", "-1"] + base, stderr=subprocess.PIPE, text=True)
        port, t_end = None, time.time() + 30
        while time.time() < t_end and port is None:
            mm = re.search(r"coordinator ready: metrics port (\d+)", pr.stderr.readline())
            port = int(mm.group(1)) if mm else None
        return pr, port
    co, mport = coordinator(3)
    r.pipe([["HSET", "job:ZZ-live", "done", 4], ["SADD", "job:ZZ-live:shards", 0, 1]])
    t_end = time.time() + 60
    while time.time() < t_end and (r.cmd("HGET", "job:ZZ-live", "state") != "complete"
                                   or r.cmd("HGET", "job:ST1", "stalled") != "1"):
        time.sleep(0.25)
    check(r.cmd("HGET", "job:ZZ-live", "state") == "complete",
          "with 10,052 job records and a non-hash job:legacy, a new job still completes")
    check(r.cmd("HGET", "job:ST1", "stalled") == "1", "ST1 flagged stalled")
    try:
        urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%d/metrics" % mport, data=b"x"),
                               timeout=10)
        code = 200
    except urllib.error.HTTPError as e:
        code = e.code
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
    check(code == 405 and 'job="ZZ-live"' in metrics and 'job="F00001"' not in metrics,
          "metrics: POST gets 405; long-finished jobs have no series (%d, %d bytes)" % (code, len(metrics)))
    co.send_signal(signal.SIGTERM)
    check(co.wait(30) == 0, "coordinator with 10k jobs exits 0")
    co, mport = coordinator(3)
    flips, t_end = [], time.time() + 2.5  # less than --stall-after: a fresh clock would clear it
    while time.time() < t_end:
        flips.append(r.cmd("HGET", "job:ST1", "stalled"))
        time.sleep(0.1)
    check(flips and all(x == "1" for x in flips), "a restarted coordinator keeps the stall: %s" % set(flips))
    co.send_signal(signal.SIGTERM)
    co.wait(30)
    # hand-made records: a control sequence in an id, a rate of nan, a date past year 9999
    r.cmd("HSET", "job:+esc\x1b[31mred", "state", "running", "model", "m\x07", "total", 5,
          "done", 1, "rate", "nan", "created", "1e308")
    p = run(["status", "--redis", redis_url])
    esc = [x for x in p.stdout.splitlines() if x.startswith("+esc")]
    check(p.returncode == 0 and "\x1b" not in p.stdout and "\x07" not in p.stdout and esc
          and esc[0].startswith("+esc?[31mr~ m?") and "nan" not in esc[0],
          "status shows control bytes from Redis as '?' and nan as no rate: %r" % esc)
    p = run(["status", "--job", "+esc\x1b[31mred", "--redis", redis_url])
    check(p.returncode == 0 and "created ? UTC" in p.stdout and "\x1b" not in p.stdout,
          "status --job: a created date out of range shows as '?': %r" % p.stdout[:300])
    p = run(["status", "--redis", redis_url])
    check(p.returncode == 0 and re.search(r"^\(\d+ more jobs not shown", p.stdout, re.M) and
          "(1 keys under job:* are no job record; skipped)" in p.stdout,
          "status past 10,000 jobs says how many it left out, and skips job:legacy: rc %d %s"
          % (p.returncode, p.stderr.strip()[:200]))
    p = run(["status", "--json", "--redis", redis_url])
    try:
        doc = json.loads(p.stdout)
        ok = len(doc["jobs"]) + doc["jobs_not_shown"] >= 10052 and doc["jobs_unreadable"] == 1
        ej = [j for j in doc["jobs"] if j["job"].startswith("+esc")]
        ok = ok and ej and ej[0]["rate"] == 0 and ej[0]["job"] == "+esc\x1b[31mred"
    except (ValueError, KeyError):
        ok = False
    check(p.returncode == 0 and ok, "status --json: jobs_not_shown and jobs_unreadable")


if __name__ == "__main__":
    sys.exit(main())
