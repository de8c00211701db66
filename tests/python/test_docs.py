"""The user documentation against what it documents: docs/configuration.md lists every key of
schemas/pipeline.schema.yaml with the type the schema gives and the default the binary really
uses (`stochseg validate --format yaml` prints the effective config of a config that sets
nothing); docs/report.md lists every field of schemas/report.schema.yaml; neither documents a
key the schema does not have; and every relative link in README.md and docs/ resolves, anchors
included.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, load_yaml, model_path, stochseg, write_config

DOCS = ROOT / "docs"
CONFIG_DOC = DOCS / "configuration.md"
REPORT_DOC = DOCS / "report.md"
PIPELINE_SCHEMA = ROOT / "schemas" / "pipeline.schema.yaml"
REPORT_SCHEMA = ROOT / "schemas" / "report.schema.yaml"
PLACEHOLDER = re.compile(r"<[^<>]*>")
CODE = re.compile(r"`([^`]+)`")


# --------------------------------------------------------------------------------------------
# the schemas' key paths
# --------------------------------------------------------------------------------------------
def key_paths(schema: dict) -> tuple[dict, dict]:
    """(path -> sub-schema, def name -> {relative path -> sub-schema}) of every property.

    `a.b` is property b of object a, `a[].b` property b of each item of list a, `a.<>.b`
    property b of each value of map a. A property whose schema refers to an object in `$defs`
    is a path of its own; the object's properties are listed once, under the def's name."""
    defs = schema.get("$defs", {})
    paths: dict = {}
    needed: set = set()
    walk(schema, "", defs, paths, needed)
    shared = {}
    while needed - set(shared):
        name = sorted(needed - set(shared))[0]
        shared[name] = {}
        walk(defs[name], "", defs, shared[name], needed)
    return paths, shared


def walk(node: dict, prefix: str, defs: dict, paths: dict, needed: set) -> None:
    for name, sub in (node.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        paths[path] = sub
        descend(sub, path, defs, paths, needed)


def descend(sub: dict, path: str, defs: dict, paths: dict, needed: set) -> None:
    """Into an object's properties, a list's items (`[]`) and a map's values (`.<>`); a
    reference to a def object is noted in `needed` instead, and one to a top-level property
    (`#/properties/...`) is documented where that property is."""
    for part, child in (("", sub), ("[]", sub.get("items")),
                        (".<>", sub.get("additionalProperties"))):
        if not isinstance(child, dict):
            continue
        if child.get("$ref", "").startswith("#/properties/"):
            continue
        if "$ref" in child:
            name = child["$ref"].rsplit("/", 1)[-1]
            if "properties" in defs[name]:
                needed.add(name)
        elif part or "properties" in child:
            walk(child, path + part, defs, paths, needed)


# --------------------------------------------------------------------------------------------
# the docs' tables
# --------------------------------------------------------------------------------------------
def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def doc_tables(path: Path) -> list[dict]:
    """Every table of a markdown file: the heading it sits under, its header cells, its rows."""
    tables, heading, current = [], "", None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|"):
            cells = split_row(line)
            if current is None:
                current = {"heading": heading, "header": cells, "rows": []}
                tables.append(current)
            elif not set("".join(cells)) <= set("-: "):
                current["rows"].append(cells)
        else:
            current = None
    return tables


def documented(path: Path, first_column: str) -> dict:
    """(heading code span or "" -> {key path in the first cell -> row}) of the tables whose
    first column is `first_column`; placeholders such as `<channel>` become `<>`."""
    out: dict = {}
    for t in doc_tables(path):
        if t["header"][0] != first_column:
            continue
        spans = CODE.findall(t["heading"])
        section = out.setdefault(spans[0] if spans else "", {})
        for row in t["rows"]:
            m = CODE.fullmatch(row[0])
            assert m, f"{path.name}: first cell {row[0]!r} is not one `key`"
            section[PLACEHOLDER.sub("<>", m.group(1))] = row
    return out


def headings(path: Path) -> set:
    return {span for line in path.read_text().splitlines() if line.startswith("#")
            for span in CODE.findall(line)}


def schema(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------------------------
# docs/configuration.md
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config_rows() -> dict:
    sections = documented(CONFIG_DOC, "key")
    rows = {}
    for section in sections.values():
        for key, row in section.items():
            assert key not in rows, f"{key} is documented twice"
            rows[key] = row
    return rows


@pytest.fixture(scope="module")
def effective_config(tmp_path_factory) -> dict:
    """The config the binary uses when the file names one model and sets nothing else."""
    cfg = write_config(tmp_path_factory.mktemp("docs") / "minimal.yaml", [model_path("unet-p32")])
    p = stochseg("validate", "--pipeline", cfg, "--format", "yaml")
    assert p.returncode == 0, p.stderr
    return load_yaml(p.stdout)["effective_config"]


def test_effective_config_is_the_file_and_the_flags(tmp_path):
    """What the defaults test reads: `effective_config` holds the file's values, the flags'
    overrides and the defaults."""
    cfg = write_config(tmp_path / "p.yaml", [model_path("unet-p32")],
                       {"ensemble": {"passes": 7, "seed": 3}})
    p = stochseg("validate", "--pipeline", cfg, "--seed", "5", "--threads", "1", "--format",
                 "yaml")
    assert p.returncode == 0, p.stderr
    e = load_yaml(p.stdout)["effective_config"]
    assert (e["ensemble"]["passes"], e["ensemble"]["seed"]) == (7, 5)
    assert e["execution"]["threads"] == 1
    assert e["models"] == [{"path": str(model_path("unet-p32"))}]


def config_keys() -> dict:
    paths, shared = key_paths(schema(PIPELINE_SCHEMA))
    assert not shared, "the pipeline schema has no shared objects"
    return paths


def required_keys() -> set:
    """Paths the schema requires wherever their parent is given."""
    out = set()
    for path, sub in [("", schema(PIPELINE_SCHEMA))] + list(config_keys().items()):
        node = sub.get("items", sub) if sub.get("type") == "array" else sub
        prefix = f"{path}[]" if node is not sub else path
        for name in node.get("required", []):
            out.add(f"{prefix}.{name}" if prefix else name)
    return out


def is_section(path: str, sub: dict) -> bool:
    """Top-level objects (`ensemble`, ...) are documented by a heading, not by a row."""
    return "." not in path and "properties" in sub


def test_configuration_doc_lists_every_key(config_rows):
    keys = config_keys()
    missing = [k for k, sub in keys.items() if k not in config_rows
               and not (is_section(k, sub) and k in headings(CONFIG_DOC))]
    assert not missing, f"docs/configuration.md does not document {missing}"
    unknown = sorted(set(config_rows) - set(keys))
    assert not unknown, f"docs/configuration.md documents keys the schema lacks: {unknown}"


def lookup(config: dict, path: str):
    """The value at `path` in the effective config (`models[]` is its one model); KeyError
    where the key is absent, None for a path through a map's values."""
    node = config
    for part in path.split("."):
        if part == "<>":
            return None
        name, is_list = (part[:-2], True) if part.endswith("[]") else (part, False)
        node = node[name]
        if is_list:
            assert len(node) == 1, path
            node = node[0]
    return node


def same(documented_value, actual) -> bool:
    if isinstance(actual, float) or isinstance(documented_value, float):
        return isinstance(documented_value, (int, float)) and math.isclose(
            documented_value, actual, rel_tol=1e-6, abs_tol=0)
    return documented_value == actual


def test_configuration_defaults_are_the_binarys(config_rows, effective_config):
    header = next(t["header"] for t in doc_tables(CONFIG_DOC) if t["header"][0] == "key")
    column = header.index("default")
    keys = config_keys()
    required = required_keys()
    wrong = []
    for key, row in config_rows.items():
        cell = row[column]
        if (cell == "required") != (key in required):
            wrong.append(f"{key}: the doc says {cell!r}, the schema "
                         f"{'requires it' if key in required else 'does not require it'}")
        if key in required:
            continue
        try:
            actual = lookup(effective_config, key)
        except KeyError:  # absent unless given: the doc names no value
            if cell.startswith("`"):
                wrong.append(f"{key}: the doc gives {cell}, the binary sets nothing")
            continue
        if actual is None or isinstance(actual, dict) and not is_scalar_map(keys[key]):
            continue  # a section, or a path through a map's values
        if not cell.startswith("`"):
            wrong.append(f"{key}: the doc gives no value, the binary uses {actual!r}")
            continue
        value = yaml.safe_load(CODE.match(cell).group(1))
        if not same(value, actual):
            wrong.append(f"{key}: the doc says {value!r}, the binary uses {actual!r}")
        if "default" in keys[key] and not same(keys[key]["default"], actual):
            wrong.append(f"{key}: the schema's default {keys[key]['default']!r}, the binary's "
                         f"{actual!r}")
    assert not wrong, "; ".join(wrong)


def is_scalar_map(sub: dict) -> bool:
    return sub.get("type") == "object" and "properties" not in sub


def test_configuration_types_follow_the_schema(config_rows):
    """Each row's type cell names every value an enum allows and the schema's base type."""
    header = next(t["header"] for t in doc_tables(CONFIG_DOC) if t["header"][0] == "key")
    column = header.index("type")
    words = {"string": "string", "integer": "integer", "number": "number",
             "boolean": "boolean", "array": "list", "object": ("object", "map")}
    wrong = []
    for key, sub in config_keys().items():
        if key not in config_rows:
            continue
        cell = config_rows[key][column]
        for value in sub.get("enum", []):
            if f"`{value}`" not in cell:
                wrong.append(f"{key}: {value!r} not in {cell!r}")
        if "enum" not in sub and sub.get("type") in words:
            word = words[sub["type"]]
            if not any(w in cell for w in (word if isinstance(word, tuple) else (word,))):
                wrong.append(f"{key}: {sub['type']} is not {cell!r}")
    assert not wrong, "; ".join(wrong)


# --------------------------------------------------------------------------------------------
# docs/report.md
# --------------------------------------------------------------------------------------------
def test_report_doc_lists_every_field():
    paths, shared = key_paths(schema(REPORT_SCHEMA))
    sections = documented(REPORT_DOC, "field")
    top = {k: row for name, rows in sections.items() if name not in shared
           for k, row in rows.items()}
    missing = sorted(set(paths) - set(top) - headings(REPORT_DOC))
    assert not missing, f"docs/report.md does not document {missing}"
    unknown = sorted(set(top) - set(paths))
    assert not unknown, f"docs/report.md documents fields the schema lacks: {unknown}"
    for name, fields in shared.items():
        assert name in sections, f"docs/report.md has no section `{name}`"
        missing = sorted(set(fields) - set(sections[name]))
        assert not missing, f"docs/report.md, `{name}`: no {missing}"
        unknown = sorted(set(sections[name]) - set(fields))
        assert not unknown, f"docs/report.md, `{name}`: {unknown} are not in the schema"


# --------------------------------------------------------------------------------------------
# links
# --------------------------------------------------------------------------------------------
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to
    `-`; repeated headings get -1, -2, ..."""
    seen: dict = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        text = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def markdown_files() -> list[Path]:
    return [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))


def test_docs_exist_and_the_readme_links_them():
    readme = (ROOT / "README.md").read_text()
    for doc in sorted(DOCS.glob("*.md")):
        assert f"docs/{doc.name}" in readme, f"README.md does not link docs/{doc.name}"


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve(doc):
    broken = []
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and mailto: not fetched
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_link_check_finds_a_broken_link(tmp_path):
    """Negative control of the link check's rules."""
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n## Second `part`\n")
    assert anchors(page) == {"a-title", "second-part"}
    assert LINK.findall("see [x](gone.md#top) and ![img](pic.png)") == ["gone.md#top"]
