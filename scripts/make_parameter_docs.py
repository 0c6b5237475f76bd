"""Writes docs/parameters.md: every parameter of conf/base with its default and meaning.

    python scripts/make_parameter_docs.py          # rewrite the page
    python scripts/make_parameter_docs.py --check  # exit 1 when the page is out of date

The meaning is the YAML comment on the parameter's line (and the comment lines aligned under
it); a comment block above a group describes the group. The YAML files stay the one source:
a test (tests/test_docs.py) fails when a parameter has no comment or the page is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "base"
PAGE = ROOT / "docs" / "parameters.md"
KEY = re.compile(
    r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$"
)
COMMENT = re.compile(r"^(?P<indent> *)#\s?(?P<text>.*)$")


@dataclass
class Parameter:
    path: str
    default: str
    meaning: list[str] = field(default_factory=list)
    comment_column: int = -1


@dataclass
class Group:
    path: str
    description: list[str]


def parse(text: str) -> tuple[list[Parameter], list[Group]]:
    """Leaf parameters (dotted path, default as written, comment) and commented groups."""
    parameters: list[Parameter] = []
    groups: list[Group] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []  # comment lines above the next key
    last: Parameter | None = None
    for line in text.splitlines():
        if not line.strip():
            pending, last = [], None
            continue
        comment = COMMENT.match(line)
        if comment:
            column = len(comment["indent"])
            if last is not None and column == last.comment_column:
                last.meaning.append(comment["text"].strip())
            else:
                pending.append(comment["text"].strip())
                last = None
            continue
        match = KEY.match(line)
        if not match:  # a list item or a continued value: part of the previous parameter
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(k for _, k in stack), match["key"]])
        value = match["value"].strip()
        meaning = [match["comment"].strip()] if match["comment"] else []
        if value:
            column = line.index("#") if match["comment"] is not None else -1
            last = Parameter(path, value, meaning or pending, column)
            parameters.append(last)
        else:
            stack.append((indent, match["key"]))
            if pending or meaning:
                groups.append(Group(path, pending + meaning))
            last = None
        pending = []
    return parameters, groups


def render() -> str:
    files = sorted(CONF.glob("parameters*.yml"))
    lines = [
        "# Parameters",
        "",
        "Every parameter of `conf/base`, with its default and meaning (written from the YAML",
        "files' own comments by `python scripts/make_parameter_docs.py`). Override one for a",
        "run with `kedro run --params <name>=<value>` (dotted names, comma-separated), or for",
        "good in an environment (`conf/<env>/parameters*.yml`, `kedro run --env <env>`); the",
        "environments `baseline`, `paper`, `fixed512`, `random_split` and `logo` override only",
        "the keys listed in their own files.",
        "",
    ]
    for path in files:
        parameters, groups = parse(path.read_text())
        stage = path.stem.removeprefix("parameters").lstrip("_") or "shared"
        lines += [f"## `{path.name}` ({stage})", ""]
        described = {g.path: " ".join(g.description) for g in groups}
        for group in described:
            lines.append(f"- **`{group}`**: {described[group]}")
        if described:
            lines.append("")
        lines += ["| parameter | default | meaning |", "|---|---|---|"]
        for parameter in parameters:
            meaning = " ".join(parameter.meaning).replace("|", "\\|")
            default = parameter.default.replace("|", "\\|")
            lines.append(f"| `{parameter.path}` | `{default}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            sys.exit(f"{PAGE} is out of date: run python scripts/make_parameter_docs.py")
        return
    PAGE.write_text(page)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
