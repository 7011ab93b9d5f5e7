#!/usr/bin/env python3
"""Lines per source file and per function under src/ (the budget the
upper-layers issue set: files under 700 lines, functions at most 120).

Usage: tools/code-shape.py [--top N] [--max-fn 120] [--max-file 700]
Exits 1 when a file or function is over its budget."""
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
if over:
    print("over budget:", *over, sep="\n  ")
    sys.exit(1)
