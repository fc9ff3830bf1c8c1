#!/usr/bin/env python3
"""Checks the Grafana dashboard and the alert rules against promtool and the metric contract.

1. Every PromQL expression of the dashboard (panel targets, and the selectors of its
   `label_values(...)` variables) parses: Grafana variables are replaced with valid
   values, each expression becomes a recording rule in a temporary rules file, and
   `promtool check rules` reads it.
2. Every metric the dashboard, deploy/prometheus/alerts.yml or its unit tests
   (alerts_test.yml) name is in deploy/metrics.txt, the one list of what Gatehouse
   exposes (histograms by their base name). A typo in a healthy test series would
   make "stays quiet" tests pass for nothing, so test series are checked too.
3. Every variable the dashboard uses is defined, panel ids are unique and each
   target has its own refId.

Python 3 standard library only. Exits 0 when all is well, 1 with the findings
otherwise, 2 when promtool is missing (run scripts/prereqs.sh --tests).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "gatehouse.json")
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
ALERT_TESTS = os.path.join(ROOT, "deploy", "prometheus", "alerts_test.yml")
CONTRACT = os.path.join(ROOT, "deploy", "metrics.txt")

# Series Prometheus itself adds to every scrape: not Gatehouse's to promise.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Grafana's own variables, replaced with values of the right shape.
BUILTIN_VALUES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__from": "0",
    "__to": "3600000",
    "__dashboard": "gatehouse",
    "__name": "x",
    "__org": "1",
    "__user": "x",
}

VARIABLE = re.compile(
    r"\$\{(\w+)(?::[^}]*)?\}"  # ${name} and ${name:format}
    r"|\[\[(\w+)(?::[^\]]*)?\]\]"  # [[name]] (deprecated syntax)
    r"|\$(\w+)"  # $name
)


def fail_usage(message):
    print(f"check-dashboard: {message}", file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------- PromQL


TOKEN = re.compile(
    r"""
      (?P<space>\s+|\#[^\n]*)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<number>[0-9][0-9A-Za-z_.]*|\.[0-9]+)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<punct>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
    """,
    re.VERBOSE,
)

# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}


def tokens(expr):
    pos = 0
    out = []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
    return out


def metric_names(expr):
    """The metric names a PromQL expression selects (not functions, labels, keywords)."""
    toks = tokens(expr)
    names = set()
    depth = 0
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else None
        if text == "[":
            # A range or subquery (`[5m]`, `[1h:1m]`): durations, no names.
            while i < len(toks) and toks[i][1] != "]":
                i += 1
        elif text == "{":
            depth += 1
        elif text == "}":
            depth -= 1
        elif kind == "ident" and depth == 0:
            lowered = text.lower()
            if lowered in LABEL_LIST_KEYWORDS:
                if following == "(":
                    while i < len(toks) and toks[i][1] != ")":
                        i += 1
            elif following == "(" or lowered in KEYWORDS or lowered in AGGREGATIONS:
                pass  # a function call, an aggregation before `by`, or an operator
            else:
                names.add(text)
        i += 1
    return names


def substitute(expr, variables):
    """`expr` with every Grafana variable replaced; unknown variable names are returned."""
    unknown = []

    def value(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTIN_VALUES:
            return BUILTIN_VALUES[name]
        if name in variables:
            return variables[name]
        unknown.append(name)
        return "x"

    return VARIABLE.sub(value, expr), unknown


# ----------------------------------------------------------------------------- inputs


def read_contract():
    names = []
    with open(CONTRACT, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line):
                fail_usage(f"{CONTRACT}:{number}: not a metric name: {line!r}")
            names.append(line)
    return set(names)


def panels_of(dashboard):
    """Every panel, rows' nested (collapsed) panels included."""
    pending = list(dashboard.get("panels", []))
    while pending:
        panel = pending.pop(0)
        yield panel
        pending.extend(panel.get("panels", []))


def variable_values(dashboard):
    """A valid stand-in value for each dashboard variable."""
    values = {}
    for var in dashboard.get("templating", {}).get("list", []):
        kind = var.get("type")
        if kind == "interval":
            values[var["name"]] = "5m"
        elif kind == "datasource":
            values[var["name"]] = "prometheus"
        else:
            values[var["name"]] = var.get("allValue") or "x"
    return values


def dashboard_queries(dashboard, findings):
    """(where, raw expression) for each PromQL expression the dashboard runs."""
    queries = []
    seen_ids = {}
    for panel in panels_of(dashboard):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if pid in seen_ids:
            findings.append(f"panel id {pid} is used by {seen_ids[pid]!r} and {title!r}")
        seen_ids[pid] = title
        refs = set()
        for target in panel.get("targets", []):
            ref = target.get("refId")
            if ref in refs:
                findings.append(f"panel {title!r}: refId {ref} is used twice")
            refs.add(ref)
            expr = target.get("expr")
            if not expr:
                findings.append(f"panel {title!r} target {ref}: no PromQL `expr`")
                continue
            queries.append((f"panel {pid} {title!r} target {ref}", expr))
        if panel.get("type") != "row" and not panel.get("targets"):
            findings.append(f"panel {title!r} has no query")
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query or "")
        if not m:
            findings.append(f"variable {var['name']!r}: expected label_values(SELECTOR, LABEL), got {query!r}")
            continue
        queries.append((f"variable {var['name']!r}", m.group(1)))
    return queries


def rule_exprs(path):
    """(where, expression) of each rule of a Prometheus rules file.

    A small reader for the shapes alerts.yml uses (`expr: ...` on one line, or a
    `|`/`>` block under it), so that no YAML library is needed; it cross-checks
    that it found one expression per `- alert:`/`- record:` entry.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    exprs = []
    rules = 0
    name = "?"
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*-\s*(alert|record):\s*(\S+)", line)
        if m:
            rules += 1
            name = m.group(2)
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest[:1] in ("|", ">"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i].strip())
                    i += 1
                exprs.append((f"{os.path.relpath(path, ROOT)} {name}", "\n".join(body).strip()))
                continue
            if rest[:1] in ("'", '"'):
                rest = rest[1:-1]
            exprs.append((f"{os.path.relpath(path, ROOT)} {name}", rest))
        i += 1
    if len(exprs) != rules:
        fail_usage(f"{path}: found {len(exprs)} expressions for {rules} rules; is an expr written in a shape this reader does not know?")
    return exprs


def test_series(path):
    """(where, series selector) of each input series of a promtool test file."""
    found = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            m = re.match(r"\s*-?\s*series:\s*(['\"])(.*)\1\s*$", line)
            if m:
                found.append((f"{os.path.relpath(path, ROOT)}:{number}", m.group(2)))
    return found


# ----------------------------------------------------------------------------- checks


def check_with_promtool(promtool, queries, findings):
    rules = []
    for n, (where, expr) in enumerate(queries):
        rules.append((f"dashboard:query_{n}", where, expr))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard_rules.yml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for record, where, expr in rules:
                # A JSON string is a valid YAML double-quoted scalar.
                f.write(f"      # {where}\n")
                f.write(f"      - record: {record}\n        expr: {json.dumps(expr)}\n")
        run = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if run.returncode != 0:
            report = run.stdout + run.stderr
            # promtool names failing rules by group index and expression; show ours.
            for record, where, expr in rules:
                if expr in report or record in report:
                    findings.append(f"{where}: promtool rejects {expr!r}")
            findings.append("promtool check rules failed on the dashboard's queries:\n" + report.strip())
    return len(rules)


def check_names(where, expr, contract, findings, used):
    try:
        names = metric_names(expr)
    except ValueError as e:
        findings.append(f"{where}: {e}")
        return
    for name in sorted(names):
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in contract:
                base = name[: -len(suffix)]
        if base in contract:
            used.add(base)
        elif base not in PROMETHEUS_SERIES:
            findings.append(f"{where}: metric {name!r} is not in deploy/metrics.txt")


def main():
    promtool = shutil.which("promtool")
    if not promtool:
        fail_usage("promtool is not installed: run scripts/prereqs.sh --tests")
    contract = read_contract()
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    findings = []

    variables = variable_values(dashboard)
    raw = dashboard_queries(dashboard, findings)
    queries = []
    for where, expr in raw:
        concrete, unknown = substitute(expr, variables)
        for name in unknown:
            findings.append(f"{where}: variable ${name} is not defined by the dashboard")
        queries.append((where, concrete))
    checked = check_with_promtool(promtool, queries, findings)

    on_dashboard = set()
    for where, expr in queries:
        check_names(where, expr, contract, findings, on_dashboard)
    in_alerts = set()
    for where, expr in rule_exprs(ALERTS):
        check_names(where, expr, contract, findings, in_alerts)
    for where, selector in test_series(ALERT_TESTS):
        check_names(where, selector, contract, findings, set())

    if findings:
        print(f"check-dashboard: {len(findings)} problem(s):", file=sys.stderr)
        for finding in findings:
            print(f"  - {finding}", file=sys.stderr)
        return 1
    missing = sorted(contract - on_dashboard)
    print(f"check-dashboard: {checked} dashboard queries parse; every metric used is in deploy/metrics.txt")
    if missing:
        print(f"check-dashboard: note: not on the dashboard: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
