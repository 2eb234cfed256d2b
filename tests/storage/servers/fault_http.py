#!/usr/bin/env python3
"""Fault-injection HTTP/1.1 server for bd_fetch tests (stdlib only).

Binds 127.0.0.1 on port 0, prints the port on the first stdout line, and serves:
  /ok?size=N            200, N bytes of the pattern (i*31+7)&255
  /flaky?key=K&fail=N   500 for the first N hits of K, then 200 "ok"
  /ratelimit?key=K&n=N  429 + Retry-After: 1 for the first N hits of K, then 200 "ok"
  /status?key=K&code=C  always status C (pad=N appends N spaces to the body)
  /stall?secs=S         headers (Content-Length 100), then silence for S seconds
  /big?size=N&chunked=B N bytes with Content-Length (B=0) or chunked (B=1)
  /truncated?key=K      Content-Length 1000, 500 bytes, then close
  /slow?ms=M            sleeps M ms, then 200 "ok" (slow_max: most /slow at once)
  /sigbkt/KEY           an S3 object whose GET must carry a valid AWS SigV4 signature for
                        access key AKIDTEST / secret "test/secret+KEY" (verified here,
                        independently of curl); 200 "sig-ok TOKEN" or 403 SignatureDoesNotMatch
  /stats                JSON: hits per key, max concurrent requests, connections, aborted sends
It exits by itself after --lifetime seconds (default 120) so that no test leaves it behind.
"""
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
STATE = {"hits": {}, "concurrent": 0, "max_concurrent": 0, "connections": 0, "aborted": 0,
         "slow_now": 0, "slow_max": 0}


SIG_KEYS = {"AKIDTEST": "test/secret+KEY"}


def hm(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_check(method, raw_path, headers):
    """Returns (ok, reason). Recomputes the AWS SigV4 signature of the request."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False, "no SigV4 Authorization"
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    ak, date, region, service, term = parts["Credential"].split("/")
    secret = SIG_KEYS.get(ak)
    if secret is None or service != "s3" or term != "aws4_request":
        return False, "bad credential scope"
    signed = parts["SignedHeaders"].split(";")
    for must in ("host", "x-amz-date", "x-amz-content-sha256"):
        if must not in signed:
            return False, "header %s not signed" % must
    if "X-Amz-Security-Token" in headers and "x-amz-security-token" not in signed:
        return False, "security token not signed"
    path, _, query = raw_path.partition("?")
    q = sorted(x.split("=", 1) if "=" in x else [x, ""] for x in query.split("&") if x)
    cq = "&".join("%s=%s" % (k, v) for k, v in q)
    ch = "".join("%s:%s\n" % (h, " ".join(headers.get(h, "").split())) for h in signed)
    creq = "\n".join([method, path, cq, ch, ";".join(signed), headers.get("x-amz-content-sha256", "")])
    amzdate = headers.get("x-amz-date", "")
    scope = "/".join([date, region, service, term])
    sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = hm(("AWS4" + secret).encode(), date)
    k = hm(hm(hm(k, region), service), term)
    want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts.get("Signature", "")), "signature mismatch"


def pattern(n):
    return bytes(((i * 31 + 7) & 255) for i in range(n))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with LOCK:
            STATE["connections"] += 1

    def log_message(self, fmt, *args):
        pass

    def send_body(self, code, body, headers=()):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def hit(self, key):
        with LOCK:
            n = STATE["hits"].get(key, 0) + 1
            STATE["hits"][key] = n
            return n

    def do_GET(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if u.path == "/stats":
            with LOCK:
                body = json.dumps(STATE).encode()
            return self.send_body(200, body, [("Content-Type", "application/json")])
        with LOCK:
            STATE["concurrent"] += 1
            STATE["max_concurrent"] = max(STATE["max_concurrent"], STATE["concurrent"])
        try:
            self.route(u.path, q)
        except (BrokenPipeError, ConnectionResetError):
            with LOCK:
                STATE["aborted"] += 1
            self.close_connection = True
        finally:
            with LOCK:
                STATE["concurrent"] -= 1

    def route(self, path, q):
        if path.startswith("/sigbkt/"):
            ok, why = sigv4_check("GET", self.path, self.headers)
            self.hit("sig-ok" if ok else "sig-bad")
            if ok:
                tok = self.headers.get("X-Amz-Security-Token", "-")
                return self.send_body(200, ("sig-ok " + tok).encode())
            body = "<Error><Code>SignatureDoesNotMatch</Code><Message>%s</Message></Error>" % why
            return self.send_body(403, body.encode())
        key = q.get("key", path)
        n = self.hit(key)
        if path == "/ok":
            size = min(int(q.get("size", "16")), 64 << 20)
            return self.send_body(200, pattern(size))
        if path == "/flaky":
            if n <= int(q.get("fail", "2")):
                return self.send_body(500, b"try again")
            return self.send_body(200, b"ok")
        if path == "/ratelimit":
            if n <= int(q.get("n", "1")):
                return self.send_body(429, b"slow down", [("Retry-After", "1")])
            return self.send_body(200, b"ok")
        if path == "/status":
            pad = b" " * min(int(q.get("pad", "0")), 64 << 20)
            return self.send_body(int(q.get("code", "404")), b"<Error><Code>NoSuchKey</Code></Error>" + pad)
        if path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            time.sleep(min(float(q.get("secs", "10")), 30.0))
            self.close_connection = True
            return
        if path == "/big":
            size = min(int(q.get("size", str(5 << 20))), 256 << 20)
            chunked = q.get("chunked", "0") == "1"
            self.send_response(200)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            block = pattern(65536)
            sent = 0
            while sent < size:
                n = min(65536, size - sent)
                if chunked:
                    self.wfile.write(b"%x\r\n" % n + block[:n] + b"\r\n")
                else:
                    self.wfile.write(block[:n])
                self.wfile.flush()
                sent += n
                time.sleep(0.001)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(pattern(500))
            self.wfile.flush()
            self.close_connection = True
            return
        if path == "/slow":
            with LOCK:
                STATE["slow_now"] += 1
                STATE["slow_max"] = max(STATE["slow_max"], STATE["slow_now"])
            try:
                time.sleep(min(int(q.get("ms", "100")), 5000) / 1000.0)
            finally:
                with LOCK:
                    STATE["slow_now"] -= 1
            return self.send_body(200, b"ok")
        return self.send_body(404, b"no such route")


def main():
    lifetime = 120.0
    if len(sys.argv) > 2 and sys.argv[1] == "--lifetime":
        lifetime = float(sys.argv[2])
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.request_queue_size = 512
    threading.Timer(lifetime, lambda: os._exit(3)).start()
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
