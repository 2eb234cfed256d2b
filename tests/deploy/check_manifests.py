#!/usr/bin/env python3
"""Static checks of the deployment files against the real binary (Docker and Kubernetes
cannot run here, so everything that can be checked without them is):

- deploy/compose.yaml and deploy/k8s/*.yaml parse (PyYAML), every document has a kind;
- every `batchdet` flag they pass appears in that subcommand's --help output, and every
  BATCHDET_* variable they set is read by the binary (named in the subcommand's --help,
  else present as a string in the executable);
- metrics ports agree: --metrics-port == containerPort "metrics" == probe ports ==
  Prometheus annotation == Service targetPort == compose's published container port;
  the coordinator listens on 0.0.0.0 inside containers;
- KEDA's ScaledObject targets the worker Deployment, on the group/topic/brokers the
  worker uses; GPUs are requested; Redis runs with AOF; Kafka runs in KRaft mode;
- deploy/Dockerfile: stages build and runtime exist, COPY --from names an earlier stage,
  COPY sources exist in the build context (the repository root), a non-root USER, the
  ENTRYPOINT is batchdet, and the build stage installs every library -dev package of
  deploy/install-deps.sh (so the image cannot drift from the Debian build).

Exit 0 when everything holds, 1 on a failure, 77 (skip) when all checks that could run
passed but a subcommand the files use still answers "not implemented yet".
"""
import json
import os
import re
import shlex
import subprocess
import sys

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed (deploy/install-deps.sh installs it)")
    sys.exit(77)

SRC = os.environ.get("BD_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("BATCHDET")
DEPLOY = os.path.join(SRC, "deploy")
failures, skipped, checked = [], set(), [0]


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def ok(cond, msg):
    checked[0] += 1
    if not cond:
        fail(msg)
    return cond


_help = {}


def help_text(sub):
    if sub not in _help:
        args = [BIN] + ([sub] if sub else []) + ["--help"]
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        _help[sub] = p.stdout.decode("utf-8", "replace")
    return _help[sub]


_binary = []


def in_binary(s):
    if not _binary:
        with open(BIN, "rb") as f:
            _binary.append(f.read())
    return (s.encode() + b"\0") in _binary[0]


def has_flag(text, flag):
    return re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", text) is not None


def split_command(argv):
    """[global flags..., SUB, args...] -> (globals, sub, args)."""
    g, i = [], 0
    while i < len(argv) and argv[i].startswith("-"):
        g.append(argv[i])
        if argv[i] in ("--log-level",) and i + 1 < len(argv):
            g.append(argv[i + 1])
            i += 1
        i += 1
    if i >= len(argv):
        return g, None, []
    return g, argv[i], argv[i + 1:]


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return str(args[i + 1])
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def check_invocation(where, argv, env_names):
    """Flags and BATCHDET_* variables of one `batchdet ...` invocation."""
    argv = [str(a) for a in argv]
    g, sub, args = split_command(argv)
    top = help_text(None)
    for a in g:
        if a.startswith("--"):
            ok(has_flag(top, a.split("=", 1)[0]), "%s: global flag %s not in `batchdet --help`" % (where, a))
    if sub is None:
        return None, []
    ok(re.search(r"^\s+%s\s" % re.escape(sub), top, re.M) is not None,
       "%s: subcommand %r not in `batchdet --help`" % (where, sub))
    h = help_text(sub)
    if "not implemented yet" in h:
        skipped.add(sub)
        print("note: %s: `batchdet %s` is not implemented yet; its flags are not checked" % (where, sub))
    else:
        for a in args:
            if a.startswith("--"):
                f = a.split("=", 1)[0]
                ok(has_flag(h, f), "%s: `batchdet %s` has no flag %s (see its --help)" % (where, sub, f))
    for e in sorted(env_names):
        if not e.startswith("BATCHDET_"):
            continue
        if e in h or e in top:
            checked[0] += 1
        else:
            ok(in_binary(e), "%s: %s is not read by the batchdet binary" % (where, e))
    return sub, args


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    return docs


# ---- Kubernetes ------------------------------------------------------------------------

def check_k8s():
    kdir = os.path.join(DEPLOY, "k8s")
    files = sorted(f for f in os.listdir(kdir) if f.endswith((".yaml", ".yml")))
    ok(len(files) >= 4, "deploy/k8s has only %d YAML files" % len(files))
    docs = []
    for f in files:
        try:
            for d in load_yaml_docs(os.path.join(kdir, f)):
                ok(isinstance(d, dict) and "kind" in d and "apiVersion" in d, "%s: document without kind/apiVersion" % f)
                docs.append((f, d))
        except yaml.YAMLError as e:
            fail("%s: YAML: %s" % (f, e))
    by_kind = {}
    for f, d in docs:
        by_kind.setdefault(d.get("kind"), []).append((f, d))

    kust = [d for f, d in docs if d["kind"] == "Kustomization"]
    if kust:
        res = kust[0].get("resources", [])
        for r in res:
            ok(os.path.exists(os.path.join(kdir, r)), "kustomization lists missing %s" % r)
        for f in files:
            if f != "kustomization.yaml":
                ok(f in res, "kustomization.yaml does not list %s" % f)

    env_sources = {}
    for kind in ("ConfigMap", "Secret"):
        for f, d in by_kind.get(kind, []):
            keys = set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())
            env_sources[(kind, d["metadata"]["name"])] = (keys, dict(d.get("data") or {}, **(d.get("stringData") or {})))
    cm_all = {}
    for (kind, name), (keys, vals) in env_sources.items():
        cm_all.update(vals)
    for need in ("BATCHDET_BROKERS", "BATCHDET_REDIS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ok(need in cm_all, "no ConfigMap/Secret sets %s" % need)
    for (kind, name), (keys, vals) in env_sources.items():
        if kind == "ConfigMap":
            ok(not any(k in keys for k in ("AWS_SECRET_ACCESS_KEY", "BATCHDET_REDIS")),
               "ConfigMap %s holds a secret value; it belongs in a Secret" % name)

    deployments = {}
    for f, d in by_kind.get("Deployment", []):
        name = d["metadata"]["name"]
        tmpl = d["spec"]["template"]
        ok(d["spec"]["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items(),
           "%s: selector does not match the pod labels" % name)
        for c in tmpl["spec"]["containers"]:
            where = "%s/%s container %s" % (f, name, c["name"])
            env_names = set(e["name"] for e in c.get("env", []))
            env_vals = {e["name"]: e.get("value") for e in c.get("env", [])}
            for ef in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in ef:
                        src = env_sources.get((kind, ef[key]["name"]))
                        if ok(src is not None, "%s: envFrom %s %s not defined" % (where, kind, ef[key]["name"])):
                            env_names |= src[0]
            argv = list(c.get("command", [])[1:] if c.get("command") else []) + list(c.get("args", []))
            sub, args = check_invocation(where, argv, env_names)
            deployments[name] = (d, c, sub, args, env_vals)
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            mp = flag_value(args, "--metrics-port")
            if ok(mp is not None, "%s: no --metrics-port" % where):
                ok(ports.get("metrics") == int(mp), "%s: containerPort 'metrics' %s != --metrics-port %s" % (where, ports.get("metrics"), mp))
                ann = tmpl["metadata"].get("annotations", {})
                if "prometheus.io/port" in ann:
                    ok(str(ann["prometheus.io/port"]) == mp, "%s: prometheus.io/port %s != %s" % (where, ann["prometheus.io/port"], mp))
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    pr = c.get(probe)
                    if pr is None:
                        ok(probe == "startupProbe", "%s: no %s" % (where, probe))
                        continue
                    hp = pr.get("httpGet", {})
                    port = hp.get("port")
                    port = ports.get(port, port)
                    ok(port == int(mp), "%s: %s on port %s, metrics on %s" % (where, probe, hp.get("port"), mp))
                    want = "/healthz" if sub == "worker" else "/metrics"
                    ok(hp.get("path") == want, "%s: %s path %s, expected %s" % (where, probe, hp.get("path"), want))
                if sub == "coordinator":
                    ok(flag_value(args, "--metrics-addr") == "0.0.0.0",
                       "%s: coordinator metrics bind 127.0.0.1 unless --metrics-addr 0.0.0.0: probes would fail" % where)
            if sub == "worker":
                lim = c.get("resources", {}).get("limits", {})
                ok(int(lim.get("nvidia.com/gpu", 0)) >= 1, "%s: worker requests no nvidia.com/gpu" % where)
                dev = flag_value(args, "--devices")
                ok(dev is not None and dev.startswith("cuda"), "%s: GPU worker without --devices cuda" % where)
                ok(int(d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)) >
                   float(flag_value(args, "--grace") or 30),
                   "%s: terminationGracePeriodSeconds must exceed --grace" % where)
    roles = {sub: name for name, (d, c, sub, a, e) in deployments.items()}
    ok("worker" in roles and "coordinator" in roles, "need a worker and a coordinator Deployment, have %s" % roles)

    for f, s in by_kind.get("Service", []):
        sel = s["spec"]["selector"]
        targets = [n for n, (d, c, sub, a, e) in deployments.items()
                   if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        if ok(len(targets) == 1, "Service %s selects %d Deployments" % (s["metadata"]["name"], len(targets))):
            d, c, sub, args, _ = deployments[targets[0]]
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                ok(ports.get(tp, tp) in ports.values(), "Service %s targetPort %s is no container port" % (s["metadata"]["name"], tp))

    so = by_kind.get("ScaledObject", [])
    if ok(len(so) == 1, "need one KEDA ScaledObject, have %d" % len(so)):
        s = so[0][1]
        ok(s["apiVersion"].startswith("keda.sh/"), "ScaledObject apiVersion %s" % s["apiVersion"])
        wname = roles.get("worker")
        wenv = deployments[wname][4] if wname in deployments else {}
        wd = deployments[wname][3] if wname in deployments else []
        group = flag_value(wd, "--group") or wenv.get("BATCHDET_GROUP") or cm_all.get("BATCHDET_GROUP") or "batchdet-workers"
        topic = flag_value(wd, "--topic") or wenv.get("BATCHDET_TOPIC") or cm_all.get("BATCHDET_TOPIC") or "batchdet.jobs"
        ok(s["spec"]["scaleTargetRef"]["name"] == wname, "ScaledObject targets %s, worker Deployment is %s" % (s["spec"]["scaleTargetRef"]["name"], wname))
        trig = [t for t in s["spec"]["triggers"] if t["type"] == "kafka"]
        if ok(len(trig) == 1, "ScaledObject has no kafka trigger"):
            m = trig[0]["metadata"]
            ok(m.get("consumerGroup") == group == "batchdet-workers",
               "kafka trigger consumerGroup %s, workers use %s" % (m.get("consumerGroup"), group))
            ok(m.get("topic") == topic == "batchdet.jobs", "kafka trigger topic %s, workers use %s" % (m.get("topic"), topic))
            ok(m.get("bootstrapServers") == cm_all.get("BATCHDET_BROKERS"),
               "kafka trigger bootstrapServers %s != BATCHDET_BROKERS %s" % (m.get("bootstrapServers"), cm_all.get("BATCHDET_BROKERS")))
            ok(int(m.get("lagThreshold", 0)) >= 1, "lagThreshold missing")
        ok(int(s["spec"].get("maxReplicaCount", 100)) <= 12, "more worker replicas than batchdet.jobs partitions (12)")


# ---- compose ---------------------------------------------------------------------------

def check_compose():
    path = os.path.join(DEPLOY, "compose.yaml")
    try:
        c = yaml.safe_load(open(path, encoding="utf-8"))
    except yaml.YAMLError as e:
        fail("compose.yaml: YAML: %s" % e)
        return
    svcs = c["services"]
    for need in ("kafka", "redis", "minio", "coordinator", "worker"):
        ok(need in svcs, "compose.yaml: no service %s" % need)
    k = svcs.get("kafka", {})
    ok(k.get("image", "").startswith("apache/kafka:"), "kafka image %s" % k.get("image"))
    ok("broker" in str(k.get("environment", {}).get("KAFKA_PROCESS_ROLES", "")) and
       "controller" in str(k.get("environment", {}).get("KAFKA_PROCESS_ROLES", "")), "Kafka not in KRaft mode")
    r = " ".join(map(str, svcs.get("redis", {}).get("command", [])))
    ok("--appendonly yes" in r, "redis without --appendonly yes")
    roles = {}
    for name, s in svcs.items():
        if not str(s.get("image", "")).startswith("batchdet") and "build" not in s:
            continue
        if "build" in s:
            b = s["build"]
            df = os.path.normpath(os.path.join(DEPLOY, b.get("context", "."), b.get("dockerfile", "Dockerfile")))
            ok(os.path.exists(df), "compose %s: build dockerfile %s missing" % (name, df))
        cmd = s.get("command", [])
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        env = s.get("environment", {})
        env_names = set(env.keys()) if isinstance(env, dict) else set(e.split("=", 1)[0] for e in env)
        sub, args = check_invocation("compose %s" % name, cmd, env_names)
        roles.setdefault(sub, name)
        mp = flag_value(args, "--metrics-port")
        if mp:
            cports = [str(p).rsplit(":", 1)[-1].split("/")[0] for p in s.get("ports", [])]
            ok(mp in cports, "compose %s: --metrics-port %s not published (%s)" % (name, mp, cports))
            if sub == "coordinator":
                ok(flag_value(args, "--metrics-addr") == "0.0.0.0", "compose %s: coordinator metrics not on 0.0.0.0" % name)
        if sub == "worker":
            devs = s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
            ok(any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devs),
               "compose %s: no nvidia GPU reservation" % name)
            for need in ("BATCHDET_BROKERS", "BATCHDET_REDIS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                ok(need in env_names, "compose %s: %s not set" % (name, need))
    ok("worker" in roles and "coordinator" in roles, "compose: need worker and coordinator services (%s)" % roles)


# ---- Dockerfile ------------------------------------------------------------------------

def check_dockerfile():
    path = os.path.join(DEPLOY, "Dockerfile")
    text = open(path, encoding="utf-8").read()
    lines, cur = [], ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") and not cur:
            continue
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
            continue
        cur += raw
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
    stages, stage_lines = [], {}
    args = {}
    for ln in lines:
        ins, _, rest = ln.partition(" ")
        ins = ins.upper()
        if ins == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip().strip('"')
        if ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            image = re.sub(r"\$\{(\w+)\}", lambda mm: args.get(mm.group(1), ""), m.group(1))
            stages.append((m.group(2) or str(len(stages)), image))
            stage_lines[stages[-1][0]] = []
        elif stages:
            stage_lines[stages[-1][0]].append((ins, rest))
    names = [s for s, _ in stages]
    ok(names[:1] == ["build"] and names[-1:] == ["runtime"], "Dockerfile stages %s, expected build ... runtime" % names)
    img = dict(stages)
    ok(re.match(r"nvidia/cuda:13\.0\.\d+-cudnn-devel-ubuntu24\.04$", img.get("build", "")) is not None, "build stage base %s" % img.get("build"))
    ok(re.match(r"nvidia/cuda:13\.0\.\d+-cudnn-runtime-ubuntu24\.04$", img.get("runtime", "")) is not None, "runtime stage base %s" % img.get("runtime"))
    for i, (st, _) in enumerate(stages):
        for ins, rest in stage_lines[st]:
            if ins not in ("COPY", "ADD"):
                continue
            toks = shlex.split(rest)
            frm = [t.split("=", 1)[1] for t in toks if t.startswith("--from=")]
            srcs = [t for t in toks if not t.startswith("--")][:-1]
            ok(len(srcs) >= 1, "Dockerfile: %s %s has no source" % (ins, rest))
            if frm:
                ok(frm[0] in names[:i], "Dockerfile: COPY --from=%s names no earlier stage" % frm[0])
            else:
                for s in srcs:
                    ok(os.path.exists(os.path.join(SRC, s)), "Dockerfile: COPY source %s missing from the build context" % s)
    rt = stage_lines.get("runtime", [])
    users = [r for i, r in rt if i == "USER"]
    ok(users and users[-1] not in ("0", "root"), "runtime stage runs as root")
    ep = [r for i, r in rt if i == "ENTRYPOINT"]
    ok(ep and json.loads(ep[-1]) == ["batchdet"], "ENTRYPOINT is %s" % ep)
    cmd = [r for i, r in rt if i == "CMD"]
    env_names = set()
    for i, r in rt:
        if i == "ENV":
            env_names |= set(m.group(1) for m in re.finditer(r"(\w+)=", r))
    if cmd:
        check_invocation("Dockerfile CMD", json.loads(cmd[-1]), set())
    for e in env_names:
        if e.startswith("BATCHDET_"):
            ok(in_binary(e), "Dockerfile ENV %s is not read by batchdet" % e)
    build_text = " ".join(r for i, r in stage_lines.get("build", []) if i == "RUN")
    deps = open(os.path.join(DEPLOY, "install-deps.sh"), encoding="utf-8").read()
    pk = re.search(r"PKGS=\((.*?)\)", deps, re.S).group(1)
    for p in [t for t in pk.split() if t.endswith("-dev")]:
        if p in ("libcmocka-dev",) or "clang" in p:
            continue  # test-only
        ok(re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(p), build_text) is not None,
           "Dockerfile build stage does not install %s (deploy/install-deps.sh does)" % p)


def main():
    if not BIN or not os.access(BIN, os.X_OK):
        print("FAIL: set BATCHDET to the batchdet binary")
        return 1
    check_k8s()
    check_compose()
    check_dockerfile()
    print("%d checks, %d failures" % (checked[0], len(failures)))
    if failures:
        return 1
    if skipped:
        print("SKIP: flags of %s not checked: not implemented yet" % ", ".join(sorted(skipped)))
        return 77
    return 0


if __name__ == "__main__":
    sys.exit(main())
