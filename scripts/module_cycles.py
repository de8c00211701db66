#!/usr/bin/env python3
"""Lists import cycles between the library's modules (one module = one file under src/).

    python3 scripts/module_cycles.py [SRC_DIR]      # exit 1 and the cycles when there are any

An edge A -> B is a path `crate::b::...` (or `super::...`, `self::...`, or `x::...` for a
child module `x` that A declares) written in A, resolved to the longest module prefix that is a
file; `mod x;` declarations themselves and test modules
(`#[cfg(test)] mod tests { ... }` at the end of a file) are not edges. `main.rs` and
`src/bin/` are the binary, not part of the library graph. Used by `make lint`.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)::\{")


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def without_tests(text: str) -> str:
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*(pub\s+)?mod\s+\w+\s*\{", text, re.M)
    return text[: cut.start()] if cut else text


def group_paths(text: str, start: int) -> list[list[str]]:
    """The paths of a `use crate::{a::b, c::{d, e}}` group beginning at `start` (the `{`)."""
    depth, i, token, stack, out = 0, start, "", [[]], []
    prefix: list[list[str]] = [[]]
    while i < len(text):
        ch = text[i]
        if ch == "{":
            depth += 1
            prefix.append(prefix[-1] + [p for p in token.split("::") if p])
            token = ""
        elif ch in ",}":
            names = [p for p in token.split("::") if p]
            if names:
                out.append(prefix[-1] + names)
            token = ""
            if ch == "}":
                prefix.pop()
                depth -= 1
                if depth == 0:
                    break
        elif not ch.isspace():
            token += ch
        i += 1
    del stack
    return out


def edges(src: Path) -> dict[tuple, set[tuple]]:
    files = {
        module_of(src, f): f
        for f in src.rglob("*.rs")
        if f.name != "main.rs" and f.relative_to(src).parts[0] != "bin"
    }
    graph: dict[tuple, set[tuple]] = {m: set() for m in files}
    for mod, file in files.items():
        text = without_tests(file.read_text())
        text = re.sub(r"//[^\n]*", "", text)
        is_dir_module = file.name in ("mod.rs", "lib.rs")
        paths: list[tuple[str, list[str]]] = []
        for m in PATH.finditer(text):
            paths.append((m.group(1), m.group(2).split("::")[1:]))
        for m in GROUP.finditer(text):
            for p in group_paths(text, m.end() - 1):
                paths.append((m.group(1), p))
        for child in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
            if re.search(rf"(?<![:\w]){child}::", text):
                paths.append(("self", [child]))
        for root, names in paths:
            if root == "crate":
                base: tuple = ()
            elif root == "super":
                base = mod if is_dir_module else mod[:-1]
                base = base[:-1] if is_dir_module else base
            else:
                base = mod
            target = resolve(files, base + tuple(names))
            if target is not None and target != mod and target != ():
                if mod[: len(target)] == target and root == "super":
                    graph[mod].add(target)
                elif mod[: len(target)] != target or root != "self":
                    graph[mod].add(target)
    return graph


def resolve(files: dict, path: tuple) -> tuple | None:
    for n in range(len(path), -1, -1):
        if path[:n] in files:
            return path[:n]
    return None


def cycles(graph: dict[tuple, set[tuple]]) -> list[list[tuple]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    graph = edges(src)
    found = cycles(graph)
    name = lambda m: "::".join(m) or "crate"
    for comp in found:
        inside = set(comp)
        print(f"import cycle of {len(comp)} modules: {', '.join(name(m) for m in comp)}")
        for m in comp:
            for t in sorted(graph[m] & inside):
                print(f"  {name(m)} -> {name(t)}")
    if not found:
        print(f"module graph: {len(graph)} modules, no import cycle")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
