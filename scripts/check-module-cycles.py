#!/usr/bin/env python3
"""Report import cycles between the modules of a Rust crate.

Usage: scripts/check-module-cycles.py [--edges] CRATE_SRC_DIR [CRATE_SRC_DIR ...]
       e.g. scripts/check-module-cycles.py proxy/src control-plane/src
       (--edges also lists every edge found, with an example file:line)

A module is a file `foo.rs` or `foo/mod.rs`, named by its path (`api::workspaces`);
`lib.rs` (or `main.rs` when there is no `lib.rs`) is the crate root. Bin targets
(`src/bin/`, and `main.rs` next to a `lib.rs`) are not part of the library's graph.

Module A *uses* module B when A's code names a path into B: a `use crate::...`,
`use super::...` or `use self::...` item (grouped and multi-line ones included), a
path written inline in code (`crate::foo::bar(..)`, `super::x::Y`), or a path that
starts with a child module's name or with a module brought in by a `use` (`child::f`,
`store::calls::X` after `use crate::store;`). Each path resolves to the longest prefix
that is an existing module. Declaring a child (`mod foo;`) is ownership, not an edge;
but a parent that uses its child's items, and a child that uses `super::Z`, are both
edges, so a parent and child that use each other form a cycle (as in cargo-modules'
`dependencies --acyclic`). Edges to and from the crate root are ignored, as are
`#[cfg(test)] mod tests { .. }` blocks (and `#[cfg(test)] mod x;` files),
comments and string literals.

Cycles are looked for at every level of the module tree: between the top-level
modules (each standing for itself and everything below it), then, for each module
with submodules, between its own file and each child subtree (so `api/mod.rs` and
`api::teams` using each other is reported under `api`). Every strongly connected
component of more than one module is reported with, for each edge inside it, one
example `file:line` (and the submodules that edge comes from). Exits 1 if any
directory has a cycle, else prints `no cycles between modules of DIR (N modules)`
per directory (N not counting the crate root) and exits 0.
"""

import os
import re
import signal
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
KEYWORD_HEADS = {"crate", "super", "self"}


def strip_comments_and_strings(src):
    """Blank out comments and the contents of string/char literals, keeping newlines
    (so that offsets still map to the same lines)."""
    out = []
    i, n = 0, len(src)

    def blank(text):
        return "".join("\n" if c == "\n" else " " for c in text)

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(src[i:j]))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(src[i:j]))
            i = j
        else:
            m = re.compile(r'(?:b|c)?r(#*)"').match(src, i)
            if m and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
                end = '"' + m.group(1)
                j = src.find(end, m.end())
                j = n if j < 0 else j + len(end)
                out.append('""' + blank(src[i + 2 : j]))
                i = j
                continue
            if c == '"' or (
                c in "bc"
                and src.startswith('"', i + 1)
                and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_"))
            ):
                start = i
                j = i + (1 if c == '"' else 2)
                while j < n and src[j] != '"':
                    j += 2 if src[j] == "\\" else 1
                j = min(j + 1, n)
                out.append('""' + blank(src[start + 2 : j]))
                i = j
            elif c == "'":
                # A char literal ('a', '\n', '\u{..}', '\'') or a lifetime/label ('a).
                if src.startswith("\\", i + 1):
                    j = i + 2
                    while j < n and src[j] != "'":
                        j += 2 if src[j] == "\\" else 1
                    j = min(j + 1, n)
                    out.append("''" + blank(src[i + 2 : j]))
                    i = j
                elif i + 2 < n and src[i + 2] == "'":
                    out.append("'' ")
                    i += 3
                else:
                    out.append(c)
                    i += 1
            else:
                out.append(c)
                i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


TEST_MOD = re.compile(
    r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+("
    + IDENT
    + r")\s*([{;])"
)


def strip_test_modules(text):
    """Blank `#[cfg(test)] mod x { .. }` blocks; return (text, names of test-only
    `#[cfg(test)] mod x;` file children)."""
    test_children = set()
    while True:
        m = TEST_MOD.search(text)
        if not m:
            return text, test_children
        if m.group(2) == ";":
            test_children.add(m.group(1))
            end = m.end() - 1
        else:
            end = matching_brace(text, m.end() - 1)
        blanked = "".join("\n" if c == "\n" else " " for c in text[m.start() : end + 1])
        text = text[: m.start()] + blanked + text[end + 1 :]


def discover_modules(src_dir):
    """Map module path (tuple of names; () for the root) -> file path."""
    root = None
    for name in ("lib.rs", "main.rs"):
        if os.path.isfile(os.path.join(src_dir, name)):
            root = name
            break
    if root is None:
        sys.exit(f"{src_dir}: no lib.rs or main.rs")
    modules = {(): os.path.join(src_dir, root)}
    for dirpath, dirnames, filenames in os.walk(src_dir):
        rel = os.path.relpath(dirpath, src_dir)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        if parts == ("bin",) or parts[:1] == ("bin",):
            dirnames[:] = []
            continue
        dirnames.sort()
        for f in sorted(filenames):
            if not f.endswith(".rs"):
                continue
            if not parts and f in ("lib.rs", "main.rs"):
                continue
            if f == "mod.rs":
                if parts:
                    modules[parts] = os.path.join(dirpath, f)
            else:
                modules[parts + (f[:-3],)] = os.path.join(dirpath, f)
    return modules


def split_top(text, sep=","):
    """Split on `sep` at brace depth 0."""
    parts, depth, cur = [], 0, []
    for c in text:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def expand_use_tree(tree, prefix=()):
    """Yield (segments, alias) for every leaf of a use tree: `a::{b, c::{d as e}}`."""
    tree = re.sub(r"\s+", " ", tree).strip()
    if tree.startswith("::"):
        tree = tree[2:].strip()
    if tree.startswith("{"):
        inner = tree[1 : tree.rindex("}")]
        for part in split_top(inner):
            yield from expand_use_tree(part, prefix)
        return
    brace = tree.find("{")
    if brace >= 0:
        head = [s.strip() for s in tree[:brace].split("::") if s.strip()]
        inner = tree[brace + 1 : tree.rindex("}")]
        for part in split_top(inner):
            yield from expand_use_tree(part, prefix + tuple(head))
        return
    alias = None
    m = re.match(r"(.*?)\s+as\s+(" + IDENT + r")$", tree)
    if m:
        tree, alias = m.group(1), m.group(2)
    segs = tuple(s.strip() for s in tree.split("::") if s.strip())
    yield prefix + segs, alias


class Crate:
    def __init__(self, src_dir):
        self.src_dir = src_dir
        self.modules = discover_modules(src_dir)
        self.texts = {}
        test_only = set()
        for mod, path in self.modules.items():
            with open(path, encoding="utf-8") as f:
                text = strip_comments_and_strings(f.read())
            text, test_children = strip_test_modules(text)
            self.texts[mod] = text
            test_only |= {mod + (c,) for c in test_children}
        # Drop test-only file modules and everything below them.
        for mod in list(self.modules):
            if any(mod[: len(t)] == t for t in test_only):
                del self.modules[mod]
                del self.texts[mod]
        self.edges = {}  # (from, to) -> "file:line"

    def longest_module(self, segs):
        for k in range(len(segs), -1, -1):
            if segs[:k] in self.modules:
                return segs[:k]
        return None

    def absolute(self, mod, segs, local):
        """Turn a path as written in `mod` into an absolute path, or None when it
        does not start in this crate."""
        if not segs:
            return None
        head = segs[0]
        if head == "crate":
            return segs[1:]
        if head in ("self", "super"):
            base = list(mod)
            i = 0
            if segs[0] == "self":
                i = 1
            while i < len(segs) and segs[i] == "super":
                if not base:
                    return None
                base.pop()
                i += 1
            return tuple(base) + segs[i:]
        if head in local:
            return local[head] + segs[1:]
        return None

    def add_edge(self, mod, target, path, text, offset):
        if target is None or target == mod or target == () or mod == ():
            return
        key = (mod, target)
        if key not in self.edges:
            line = text.count("\n", 0, offset) + 1
            self.edges[key] = f"{path}:{line}"

    def analyse(self):
        use_item = re.compile(r"\buse\s+([^;]*);")
        inline = re.compile(
            r"(?<![A-Za-z0-9_:$])(" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)"
        )
        for mod, text in self.texts.items():
            path = self.modules[mod]
            # Names in scope that denote modules: child modules, then `use` aliases.
            local = {
                m[-1]: m for m in self.modules if len(m) == len(mod) + 1 and m[:-1] == mod
            }
            uses = []
            for m in use_item.finditer(text):
                for segs, alias in expand_use_tree(m.group(1)):
                    uses.append((segs, alias, m.start()))
            # Aliases may refer to each other (`use crate::api; use api::teams;`):
            # resolve until nothing changes.
            for _ in range(3):
                for segs, alias, _off in uses:
                    if segs and segs[-1] == "self":
                        segs, name = segs[:-1], alias or (segs[-2] if len(segs) > 1 else None)
                    else:
                        name = alias or (segs[-1] if segs else None)
                    if name in (None, "*", "_"):
                        continue
                    absolute = self.absolute(mod, segs, local)
                    if absolute is not None and absolute in self.modules and absolute != ():
                        local.setdefault(name, absolute)
            for segs, _alias, off in uses:
                if segs and segs[-1] in ("self", "*"):
                    segs = segs[:-1]
                absolute = self.absolute(mod, segs, local)
                if absolute is not None:
                    self.add_edge(mod, self.longest_module(absolute), path, text, off)
            # Inline paths, outside `use` items.
            code = use_item.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
            for m in inline.finditer(code):
                segs = tuple(s.strip() for s in m.group(1).split("::"))
                if segs[0] not in KEYWORD_HEADS and segs[0] not in local:
                    continue
                absolute = self.absolute(mod, segs, local)
                if absolute is not None:
                    self.add_edge(mod, self.longest_module(absolute), path, code, m.start())

    def levels(self):
        """Yield (parent, nodes, edges) for each module that has submodules: the nodes
        are the parent's own file (not for the crate root) and each of its children
        together with everything below it; an edge (a, b) -> "file:line (from -> to)"
        exists when code in a's subtree uses a module in b's subtree. So the crate root's
        level shows cycles between top-level modules, `api`'s level cycles between
        api/mod.rs and the api::* children, and so on."""
        parents = sorted({m[:-1] for m in self.modules if m})
        for parent in parents:

            def node(m, parent=parent):
                if m[: len(parent)] != parent:
                    return None
                if m == parent:
                    return None if parent == () else parent
                return m[: len(parent) + 1]

            nodes = sorted({node(m) for m in self.modules} - {None})
            edges = {}
            for (a, b), where in sorted(self.edges.items()):
                na, nb = node(a), node(b)
                if na is None or nb is None or na == nb or (na, nb) in edges:
                    continue
                via = "" if (na, nb) == (a, b) else f", {name(a)} -> {name(b)}"
                edges[(na, nb)] = f"{where}{via}"
            yield parent, nodes, edges

    def cycles(self):
        """(parent, component, edges inside it) for every strongly connected component
        of more than one node, at every level."""
        found = []
        for parent, nodes, edges in self.levels():
            graph = {v: sorted(b for (a, b) in edges if a == v) for v in nodes}
            for comp in strongly_connected(graph):
                if len(comp) > 1:
                    members = set(comp)
                    inside = {e: w for e, w in edges.items() if e[0] in members and e[1] in members}
                    found.append((parent, sorted(comp), inside))
        return found


def strongly_connected(graph):
    """Tarjan's algorithm, iterative so that deep crates do not hit the recursion
    limit. `graph` maps each node to its successors."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            v, successors = work[-1]
            for w in successors:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    sccs.append(comp)
    return sccs


def name(mod):
    return "::".join(mod) if mod else "crate"


def main(argv):
    args = argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    show_edges = "--edges" in args
    args = [a for a in args if a != "--edges"]
    found = False
    for src_dir in args:
        crate = Crate(src_dir.rstrip("/"))
        crate.analyse()
        if show_edges:
            for (a, b), where in sorted(crate.edges.items()):
                print(f"edge {name(a)} -> {name(b)}  ({where})")
        cycles = crate.cycles()
        count = len(crate.modules) - 1  # the crate root is not counted
        if not cycles:
            print(f"no cycles between modules of {src_dir} ({count} modules)")
            continue
        found = True
        for parent, comp, edges in cycles:
            if parent == ():
                where = "between top-level modules (each with its submodules)"
            else:
                where = f"inside {name(parent)} (its own file and its submodules)"
            print(f"cycle in {src_dir} {where}: " + ", ".join(name(m) for m in comp))
            for (a, b), example in sorted(edges.items()):
                print(f"  {name(a)} -> {name(b)}  ({example})")
    return 1 if found else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into `head`
    sys.exit(main(sys.argv))
