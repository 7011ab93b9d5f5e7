#!/usr/bin/env python3
"""Lines per source file and per function under src/, and import cycles
between files (the budgets the upper-layers issue set: files under 700
lines, functions at most 120, no file importing another that imports it
back, directly or around a longer loop).

Usage: tools/code-shape.py [--top N] [--max-fn 120] [--max-file 700]
Exits 1 when a file or function is over its budget or files form a cycle."""
import argparse, pathlib, re, sys

ap = argparse.ArgumentParser()
ap.add_argument("--top", type=int, default=10)
ap.add_argument("--max-fn", type=int, default=120)
ap.add_argument("--max-file", type=int, default=700)
args = ap.parse_args()

root = pathlib.Path(__file__).resolve().parent.parent / "src"
fn_re = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
files, fns = [], []
for p in sorted(root.rglob("*.rs")):
    lines = p.read_text().splitlines()
    files.append((len(lines), str(p.relative_to(root))))
    i = 0
    while i < len(lines):
        m = fn_re.match(lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j])
            code = re.sub(r"'(\\.|[^'\\])'", "''", code).split("//")[0]
            for ch in code:
                if ch == "{":
                    depth += 1
                    started = True
                elif ch == "}":
                    depth -= 1
            if started and depth <= 0:
                break
            if not started and code.rstrip().endswith(";"):
                break  # a declaration without a body
            j += 1
        fns.append((j - i + 1, f"{p.relative_to(root)}:{i + 1} {m.group(6)}"))
        i += 1



def module_of(path):
    """The module path of a source file: ('imgapi', 'copy') for
    src/imgapi/copy.rs; the binary's modules (src/main.rs, src/cli/) under
    ('#bin',), the library's under ()."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], []):
        return ()
    if parts == ["main"]:
        return ("#bin",)
    if parts[0] == "cli":
        return ("#bin",) + tuple(parts)
    return tuple(parts)


def use_paths(text):
    """Every path a file names from its crate: `use` trees expanded, and
    `crate::a::b` / `super::a` written inline."""
    text = re.sub(r"//[^\n]*", "", text)
    out = []

    def expand(prefix, tree):
        tree = tree.strip()
        if not tree:
            return
        if "{" in tree and tree.endswith("}"):
            head, inner = tree.split("{", 1)
            head = head.strip().rstrip(":")
            inner = inner[:-1]
            depth, cur, items = 0, "", []
            for ch in inner:
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    items.append(cur)
                    cur = ""
                else:
                    cur += ch
            items.append(cur)
            base = prefix + ([p for p in head.split("::") if p] if head else [])
            for it in items:
                expand(base, it)
        else:
            name = tree.split(" as ")[0].strip()
            out.append(prefix + [p for p in name.split("::") if p])

    for m in re.finditer(r"\buse\s+([^;]+);", text):
        expand([], m.group(1))
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        out.append(m.group(1).split("::"))
    return out


def resolve(mod, path, known):
    """The deepest known module a path from module `mod` lands in."""
    if not path:
        return None
    if path[0] == "crate":
        base, rest = (("#bin",) if mod[:1] == ("#bin",) else ()), path[1:]
    elif path[0] == "super":
        base, rest = mod, path
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif path[0] == "self":
        base, rest = mod, path[1:]
    elif path[0] == "imgstore":
        base, rest = (), path[1:]
    else:
        return None
    best = base if base in known else None
    cur = base
    for p in rest:
        cur = cur + (p,)
        if cur in known:
            best = cur
    return best


known = {}
for p in sorted(root.rglob("*.rs")):
    known[module_of(p)] = p
edges = {m: set() for m in known}
for m, p in known.items():
    for path in use_paths(p.read_text()):
        t = resolve(m, path, known)
        # A module and its ancestors are one unit (a parent declares and
        # re-exports its children; a child reads its parent's items).
        if t is None or t == m or t == m[: len(t)] or m == t[: len(m)]:
            continue
        edges[m].add(t)

# Tarjan's strongly connected components: a component of several files is
# a cycle.
index, low, stack, on, comps = {}, {}, [], set(), []
counter = [0]


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(comp)


sys.setrecursionlimit(10000)
for v in list(edges):
    if v not in index:
        strong(v)
cycles = [sorted(str(known[m].relative_to(root)) for m in c) for c in comps]

files.sort(reverse=True)
fns.sort(reverse=True)
print(f"{len(files)} files, {sum(n for n, _ in files)} lines")
print("largest files:")
for n, f in files[: args.top]:
    print(f"  {n:5} {f}")
print("longest functions:")
for n, f in fns[: args.top]:
    print(f"  {n:5} {f}")
over = [f for n, f in files if n >= args.max_file] + [f for n, f in fns if n > args.max_fn]
print(f"import cycles between files: {len(cycles)}")
for c in cycles:
    print("  " + " <-> ".join(c))
if over:
    print("over budget:", *over, sep="\n  ")
if over or cycles:
    sys.exit(1)
