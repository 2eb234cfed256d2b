"""Helpers for the worker tests and the scale bench: a throwaway stack of real
components on 127.0.0.1 (redis-server with AOF in a temp dir, the embedded Kafka daemon,
an HTTP server over a directory of symlinked photos), worker processes, a minimal Redis
client and checks of a job's results. Python 3 standard library only. Every wait is
bounded in time."""
import functools
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time

T0 = time.time()


def log(*a):
    print("[%7.1fs]" % (time.time() - T0), *a, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Redis:
    """Just enough RESP for the checks; reconnects on each failure."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("redis closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("redis closed")
            self.buf += d
        v, self.buf = self.buf[:n], self.buf[n + 2:]
        return v

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError("redis: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("redis: bad reply %r" % line)

    def cmd(self, *args, retry_s=20):
        deadline = time.time() + retry_s
        while True:
            try:
                if self.sock is None:
                    self._connect()
                out = b"*%d\r\n" % len(args)
                for a in args:
                    a = a if isinstance(a, bytes) else str(a).encode()
                    out += b"$%d\r\n%s\r\n" % (len(a), a)
                self.sock.sendall(out)
                return self._reply()
            except (OSError, ConnectionError):
                if self.sock:
                    self.sock.close()
                self.sock = None
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def hgetall(self, key):
        r = self.cmd("HGETALL", key) or []
        return dict(zip(r[0::2], r[1::2]))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: fewer connections under load

    def log_message(self, *a):
        pass


class Stack:
    def __init__(self, tmp, appendfsync="always"):
        self.tmp = tmp
        self.procs = []
        self.redis_port = free_port()
        self.redis_dir = os.path.join(tmp, "redis")
        os.makedirs(self.redis_dir, exist_ok=True)
        self.appendfsync = appendfsync
        self.redis_proc = None
        self.start_redis()
        self.r = Redis(self.redis_port)
        self.fifo = os.path.join(tmp, "kafka.fifo")
        mock = os.environ["BD_KAFKA_MOCK"]
        self.kafka = subprocess.Popen([mock, "--brokers", "3", "--control-fifo", self.fifo,
                                       "--no-stdin"], stdout=subprocess.PIPE,
                                      stderr=open(os.path.join(tmp, "kafka.log"), "w"))
        self.brokers = self.kafka.stdout.readline().decode().strip()
        assert "127.0.0.1" in self.brokers, "kafka mock did not start: %r" % self.brokers
        self.www = os.path.join(tmp, "www")
        os.makedirs(self.www, exist_ok=True)
        handler = functools.partial(QuietHandler, directory=self.www)
        # A deep listen backlog: 3 workers x 64 connections would overflow the default 5
        # and stall connects in SYN retransmission.
        http.server.ThreadingHTTPServer.request_queue_size = 1024
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        # Connections reset by SIGKILLed workers are expected; keep the log readable.
        self.httpd.handle_error = lambda request, client_address: None
        self.http_port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = "http://127.0.0.1:%d/" % self.http_port

    def start_redis(self):
        exe = os.environ.get("BD_REDIS_SERVER", "redis-server")
        self.redis_proc = subprocess.Popen(
            [exe, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", self.redis_dir,
             "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
             "--logfile", os.path.join(self.redis_dir, "redis.log")])
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.redis_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill_redis(self):
        self.redis_proc.kill()
        self.redis_proc.wait(10)

    def kafka_control(self, cmd):
        with open(self.fifo, "w") as f:
            f.write(cmd + "\n")

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        try:
            self.kafka_control("quit")
            self.kafka.wait(10)
        except Exception:
            self.kafka.kill()
        self.redis_proc.kill()
        self.redis_proc.wait(10)
        self.httpd.shutdown()


PHOTOS = ["dog.jpg", "dog.png", "eagle.jpg", "giraffe.jpg", "horses.jpg", "horses_gray.jpg",
          "kite.jpg", "person.jpg", "scream.jpg"]


def make_images(stack, data, job, n):
    """n ids served by the HTTP server, cycling through the shipped photos. Returns
    [(id, url, photo)]."""
    out = []
    for i in range(n):
        photo = PHOTOS[i % len(PHOTOS)]
        iid = "%s-img-%05d" % (job, i)
        name = iid + os.path.splitext(photo)[1]
        dst = os.path.join(stack.www, name)
        if not os.path.lexists(dst):
            os.symlink(os.path.join(data, "images", photo), dst)
        out.append((iid, stack.base_url + name, photo))
    return out


def manifest_lines(job, images, shard_size, model="yolox_nano", first_shard=0):
    lines = []
    for k in range(0, len(images), shard_size):
        chunk = images[k:k + shard_size]
        lines.append(json.dumps({"v": 1, "job": job, "shard": first_shard + k // shard_size,
                                 "model": model, "score_thr": 0.3, "iou_thr": 0.45,
                                 "images": [{"id": i, "url": u} for i, u, _ in chunk]}))
    return lines


def produce(stack, topic, lines):
    path = os.path.join(stack.tmp, "produce-%d.jsonl" % random.randrange(1 << 30))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run([os.environ["BD_TEST_PRODUCE"], "produce", stack.brokers, topic, path],
                   check=True, timeout=90)


def consume(stack, topic, n, timeout_s):
    p = subprocess.run([os.environ["BD_TEST_PRODUCE"], "consume", stack.brokers, topic, str(n),
                        str(timeout_s)], stdout=subprocess.PIPE, timeout=timeout_s + 30)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]


class Worker:
    def __init__(self, stack, name, args, env=None, static=True):
        self.stack, self.name, self.args = stack, name, args
        self.static = static  # static group membership (--instance-id NAME)
        self.env = dict(os.environ, **(env or {}))
        self.logs = 0
        self.p = None

    def start(self):
        # free_port() only proposes a port: another process (a parallel test's outgoing
        # connection, say) can take it before the worker binds it, and the worker then
        # exits with "metrics: cannot listen". Then start again on another port (5 tries).
        for _ in range(5):
            self._launch()
            if self.metrics_port is None or not self._lost_metrics_port():
                break
            self.args[self.args.index("--metrics-port") + 1] = str(free_port())
        return self

    @property
    def metrics_port(self):
        """The port its metrics are served on (may change at start), or None."""
        if "--metrics-port" not in self.args:
            return None
        return int(self.args[self.args.index("--metrics-port") + 1])

    def _launch(self):
        self.logs += 1
        logf = open(os.path.join(self.stack.tmp, "%s.%d.log" % (self.name, self.logs)), "w")
        cmd = [os.environ["BATCHDET"], "--log-level", "info", "worker", "--brokers",
               self.stack.brokers, "--redis", "redis://127.0.0.1:%d" % self.stack.redis_port,
               ] + (["--instance-id", self.name] if self.static else []) + self.args
        self.p = subprocess.Popen(cmd, stdout=logf, stderr=logf, env=self.env)
        self.stack.procs.append(self.p)

    def _lost_metrics_port(self):
        """True when the worker exited because its metrics port was taken; waits (at most
        10 s) until it listens there or exits."""
        deadline = time.time() + 10
        while time.time() < deadline and self.p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.metrics_port), 0.2).close()
                time.sleep(0.3)  # a taken port answers too: the worker's exit then follows
                break
            except OSError:
                time.sleep(0.05)
        if self.p.poll() is None:
            return False
        with open(self.log_path()) as f:
            return "cannot listen" in f.read()

    def log_path(self):
        return os.path.join(self.stack.tmp, "%s.%d.log" % (self.name, self.logs))


def job_progress(r, job):
    h = r.hgetall("job:" + job)
    return int(h.get("done", 0)), int(h.get("failed", 0))


def wait_job(r, job, total, timeout_s, on_tick=None):
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        d, f = job_progress(r, job)
        if (d, f) != last:
            last = (d, f)
        if d + f >= total:
            return d, f
        if on_tick:
            on_tick(d + f)
        time.sleep(0.05 if on_tick else 0.2)
    raise AssertionError("job %s: %s of %d after %ds" % (job, last, total, timeout_s))


def check_job(r, job, images, n_shards, bad=None):
    """Exact checks of a finished job: counters, shard set, every det: key, errors hash."""
    bad = bad or {}
    d, f = job_progress(r, job)
    assert d + f == len(images), "job %s: done %d + failed %d != %d" % (job, d, f, len(images))
    assert f == len(bad), "job %s: failed %d, expected %d" % (job, f, len(bad))
    assert int(r.cmd("SCARD", "job:%s:shards" % job)) == n_shards
    errs = r.hgetall("job:%s:errors" % job)
    assert set(errs) == set(bad), "errors hash: %s" % sorted(set(errs) ^ set(bad))[:10]
    results = {}
    ids = [i for i, _, _ in images]
    for k in range(0, len(ids), 500):
        vals = r.cmd("MGET", *["det:%s:%s" % (job, i) for i in ids[k:k + 500]])
        for i, v in zip(ids[k:k + 500], vals):
            assert v is not None, "det:%s:%s missing" % (job, i)
            j = json.loads(v)
            assert j["image"] == i
            if i in bad:
                assert j.get("error", "").startswith(bad[i]), "%s: %r" % (i, j)
                assert errs[i].startswith(bad[i])
            else:
                assert "error" not in j and j["width"] > 0 and "detections" in j, j
            results[i] = j
    return results


def stop_all(workers, sig=signal.SIGTERM, timeout_s=40):
    for w in workers:
        if w.p and w.p.poll() is None:
            w.p.send_signal(sig)
    rcs = []
    for w in workers:
        try:
            rcs.append(w.p.wait(timeout_s))
        except subprocess.TimeoutExpired:
            w.p.kill()
            rcs.append("timeout")
    return rcs
