"""The docs as a reader meets them: README.md stays a front page, every relative link in the docs leads to a file
(and, with a #fragment, to a heading of it), and every `make <target>` README names exists in the Makefile."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dagster_platform.paths import ROOT
from dagster_platform.template.render import questions

README = ROOT / "README.md"
README_MAX_BYTES = 8_500
DOCS = sorted(
    [README, ROOT / "helm" / "README.md", ROOT / "ci" / "README.md", ROOT / "platform" / "ops" / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
)
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
MAKE_TARGET = re.compile(r"(?<![\w-])make[ \t]+([a-z][a-z0-9-]*)")
MAKEFILE_TARGET = re.compile(r"^([a-z][a-z0-9-]*)[ \t]*:(?!=)", re.M)


def prose(text: str) -> str:
    """The text with fenced blocks and inline code removed: links there are examples, not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (not `-` or `_`), each space a `-`."""
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in found:
            n += 1
            unique = f"{slug}-{n}"
        found.add(unique)
    return found


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text())) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes (at most {README_MAX_BYTES}): reference belongs in docs/, figures in docs/bench.md"
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path):
    broken = []
    for link in relative_links(doc):
        target, _, fragment = link.partition("#")
        file = (doc.parent / target).resolve() if target else doc
        if not file.exists():
            broken.append(f"{link}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{link}: no heading #{fragment} in {file.relative_to(ROOT)}")
    assert broken == [], f"{doc.relative_to(ROOT)}: broken links"


def test_every_make_target_in_the_readme_exists():
    text = README.read_text()
    code = "\n".join(m.group(0) for m in FENCE.finditer(text)) + "\n" + "\n".join(INLINE_CODE.findall(text))
    named = set(MAKE_TARGET.findall(code))
    assert {"dev", "test", "test-fast"} <= named, "README names the two commands and the inner loop"
    defined = set(MAKEFILE_TARGET.findall((ROOT / "Makefile").read_text()))
    assert sorted(named - defined) == [], "README names make targets the Makefile does not define"


NO_INPUT_CONTEXT = re.compile(r"NO_INPUT=1\b[^\n`]*?CONTEXT='(\{[^'\n]*\})'")


def test_every_documented_new_usercode_without_input_answers_the_required_questions():
    """`make new-usercode NO_INPUT=1 CONTEXT=…` as the docs and `make help` show it must generate: copier asks
    nothing then, so the context answers every question with no default (else: "owner_email is required")."""
    required = sorted(name for name, question in questions().items() if "default" not in question)
    shown = {
        path.relative_to(ROOT).as_posix(): NO_INPUT_CONTEXT.findall(path.read_text())
        for path in [*DOCS, ROOT / "Makefile"]
    }
    assert shown["Makefile"] and shown["docs/usercode.md"], "make help and docs/usercode.md show NO_INPUT=1 CONTEXT"
    missing = {
        f"{where}: {context}": [name for name in required if name not in json.loads(context)]
        for where, contexts in shown.items()
        for context in contexts
    }
    unanswered = {example: names for example, names in missing.items() if names}
    assert not unanswered, (
        "rule: a documented NO_INPUT=1 CONTEXT answers every question of usercode-template/copier.yml that has no "
        f"default ({', '.join(required)}); add the missing ones to these examples: {unanswered}"
    )


def test_the_checks_see_what_they_should():
    """The parsers above, on a sample: links in code are skipped, anchors follow GitHub's rules."""
    sample = "[a](x.md) `[b](y.md)` [c](https://e.org)\n```\n[d](z.md)\n```\n"
    assert LINK.findall(prose(sample)) == ["x.md", "https://e.org"]
    assert MAKE_TARGET.findall("`make dev PORT=3001` and `make platform-check`") == ["dev", "platform-check"]
    assert "the-workspace-registry--previews-in-one-configmap" in anchors(ROOT / "helm" / "README.md")
