#!/usr/bin/env python3
"""Prints the import graph of src/ between modules (files) and any cycle in it; exit 1 on a cycle.

A module is a file under src/ (src/detector/mod.rs is `detector`, src/detector/decode.rs is
`detector::decode`); an edge A -> B is any `crate::B...` path (or `super::` resolved) in A outside
its `#[cfg(test)]` module. Usage: scripts/import-cycles.py [--modules detector,service,...]
(collapse submodules into the named top-level groups first)."""
import pathlib, re, sys

root = pathlib.Path(__file__).resolve().parent.parent / "src"
mods = {}
for f in root.rglob("*.rs"):
    rel = f.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "bin" or parts == ["lib"] or parts == ["main"]:
        continue
    if parts[-1] == "mod":
        parts = parts[:-1]
    mods["::".join(parts)] = f
names = sorted(mods, key=len, reverse=True)

def resolve(path, here):
    segs = path.split("::")
    if segs[0] == "super":
        base = here.split("::")
        is_dir = mods[here].name == "mod.rs"
        base = base if is_dir else base[:-1]
        while segs and segs[0] == "super":
            segs = segs[1:]
            base = base[:-1] if segs and segs[0] == "super" else base
        segs = base + segs
    elif segs[0] == "crate":
        segs = segs[1:]
    else:
        return None
    for n in range(len(segs), 0, -1):
        cand = "::".join(segs[:n])
        if cand in mods:
            return cand
    return None

group = None
if len(sys.argv) > 2 and sys.argv[1] == "--modules":
    group = sys.argv[2].split(",")

def key(m):
    if group:
        top = m.split("::")[0]
        return top if top in group else m.split("::")[0]
    return m

edges = {}
for m, f in mods.items():
    text = f.read_text()
    text = text.split("#[cfg(test)]\nmod tests")[0]
    text = re.sub(r"//.*", "", text)
    # expand `use crate::{a, b::c}` groups
    for g in re.finditer(r"(crate|super(?:::super)*)::\{([^}]*)\}", text):
        for item in g.group(2).split(","):
            item = item.strip()
            if item:
                text += f"\n{g.group(1)}::{item}"
    for p in re.finditer(r"\b((?:crate|super(?:::super)*)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
        t = resolve(p.group(1), m)
        if t and key(t) != key(m) and not key(m).startswith(key(t) + "::") and not key(t).startswith(key(m) + "::"):
            edges.setdefault(key(m), set()).add(key(t))

def cycles():
    found, state, stack = [], {}, []
    def visit(n):
        state[n] = 1
        stack.append(n)
        for t in sorted(edges.get(n, ())):
            if state.get(t) == 1:
                found.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2
    for n in sorted(edges):
        if n not in state:
            visit(n)
    return found

for m in sorted(edges):
    print(f"{m} -> {', '.join(sorted(edges[m]))}")
c = cycles()
for cyc in c:
    print("cycle:", " -> ".join(cyc))
print(f"{len(edges)} modules, {sum(map(len, edges.values()))} edges, {len(c)} cycles found")
sys.exit(1 if c else 0)
