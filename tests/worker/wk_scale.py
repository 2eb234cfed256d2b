#!/usr/bin/env python3
"""Worker scaling bench (driven by tests/bench/worker_scale.sh): end-to-end img/s of
1, 2, 4, 8 worker processes with sim devices against the embedded Kafka daemon and a
real redis-server, and the scaling efficiency relative to one worker. Prints a table;
asserts nothing about speed."""
import os
import sys
import tempfile
import time
import shutil

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wk_stack import Stack, Worker, make_images, manifest_lines, produce, stop_all, wait_job, log  # noqa


def main():
    data = os.path.abspath(os.environ["BD_TEST_DATA"])
    counts = [int(x) for x in os.environ.get("SCALE_WORKERS", "1 2 4 8").split()]
    n_img = int(os.environ.get("SCALE_IMAGES", "2000"))
    shard = int(os.environ.get("SCALE_SHARD", "50"))
    dev = os.environ.get("SCALE_DEVICES", "sim:1:20")
    tmp = tempfile.mkdtemp(prefix="bd-worker-scale-")
    st = Stack(tmp, appendfsync="everysec")
    rows = []
    try:
        for n in counts:
            job = "scale%d" % n
            topic = "scale.jobs.%d" % n
            st.kafka_control("topic %s 24 1" % topic)
            imgs = make_images(st, data, job, n_img)
            workers = [Worker(st, "s%d-%d" % (n, i),
                              ["--devices", dev, "--topic", topic, "--group", "scale-%d" % n,
                               "--batch", "16", "--report-interval", "2"]).start()
                       for i in range(n)]
            # Warm-up job: the group settles (joins, cooperative rebalances) and the
            # connections open before the clock starts.
            warm = make_images(st, data, job + "w", 48)
            produce(st, topic, manifest_lines(job + "w", warm, 2))
            wait_job(st.r, job + "w", len(warm), 120)
            time.sleep(2)
            t0 = time.time()
            produce(st, topic, manifest_lines(job, imgs, shard))
            wait_job(st.r, job, n_img, 600)
            dt = time.time() - t0
            stop_all(workers)
            rows.append((n, n_img, dt, n_img / dt))
            log("%d workers: %.1f s" % (n, dt))
    finally:
        st.close()
        if not os.environ.get("BD_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0][3] / rows[0][0] if rows else 1
    print("\n%8s %8s %9s %9s %11s" % ("workers", "images", "seconds", "img/s", "efficiency"))
    for n, k, dt, rate in rows:
        print("%8d %8d %9.2f %9.1f %10.0f%%" % (n, k, dt, rate, 100.0 * rate / (n * base)))
    print("\nsim devices (%s): no inference; decode, fetch, Kafka and Redis are real. "
          "Efficiency = img/s / (workers x img/s of the first row)." % dev)


if __name__ == "__main__":
    main()
