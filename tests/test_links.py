"""The README and the guide in docs/: every link to a local file resolves, the README stays a
front page, and mkdocs.yml's navigation holds exactly the guide's pages.

Reads Markdown files only (no mkdocs, no process): well under a second. `make docs` builds the
site with `mkdocs build --strict`, which checks the same links and the API pages' docstrings.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README_MAX_LINES = 300

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose(path: Path) -> str:
    """The file's Markdown without fenced blocks and inline code, where brackets are code."""
    return INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading (mkdocs.yml's toc slugify gives the same): lower case,
    inline code's backticks and punctuation dropped, unicode letters kept, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(h) for h in HEADING.findall(text)}


def local_links(path: Path) -> list[tuple[str, Path, str]]:
    """`(link as written, file it names, anchor or "")` of each relative link of `path`."""
    found = []
    for target in LINK.findall(prose(path)):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        found.append((target, resolved, unquote(anchor)))
    return found


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_resolves(page):
    broken = []
    for target, resolved, anchor in local_links(page):
        if not resolved.is_file():
            broken.append(f"{target}: no file {resolved.relative_to(ROOT)}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading '#{anchor}' in {resolved.name}")
        elif page.is_relative_to(DOCS) and not resolved.is_relative_to(DOCS):
            # mkdocs builds docs/ alone: a link out of it is broken on the site.
            broken.append(f"{target}: outside docs/, which the site does not hold")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_is_a_front_page_that_links_every_guide_page():
    readme = ROOT / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {README_MAX_LINES}: move the "
        "details into a page of docs/ and link it")
    # Every page of the guide is reachable from the README by following links.
    seen, todo = set(), [readme.resolve()]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.is_file():
            continue
        seen.add(page)
        todo += [resolved for _, resolved, _ in local_links(page)]
    unreached = sorted(
        str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if p.resolve() not in seen)
    assert not unreached, f"pages no link from the README leads to: {unreached}"


def test_mkdocs_navigation_lists_exactly_the_guide_pages():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    navigation = config.split("\nnav:\n", 1)[1]
    listed = re.findall(r"^\s+- (?:[^\n]*?: )?(\S+\.md)\s*$", navigation, re.MULTILINE)
    assert len(listed) == len(set(listed)), f"a page listed twice: {listed}"
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert set(listed) == on_disk, (
        f"in mkdocs.yml's nav, not in docs/: {sorted(set(listed) - on_disk)}; "
        f"in docs/, not in the nav: {sorted(on_disk - set(listed))}")


def test_the_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "b.md").write_text("# A title: `x.y`\n\n## Choosing β\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#a-title-xy) [β](b.md#choosing-β) [gone](c.md) "
                    "`[code](d.md)` [web](https://example.org)\n```\n[fenced](e.md)\n```\n")
    links = {target: (resolved.name, anchor) for target, resolved, anchor in local_links(page)}
    assert links == {"b.md#a-title-xy": ("b.md", "a-title-xy"),
                     "b.md#choosing-β": ("b.md", "choosing-β"), "c.md": ("c.md", "")}
    assert anchors(tmp_path / "b.md") == {"a-title-xy", "choosing-β"}
