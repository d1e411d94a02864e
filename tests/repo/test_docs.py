"""The Markdown files, and every file's references, checked.

- Every relative link (and image) in every Markdown file of the repository
  resolves to a file or directory of the repository, and a ``#fragment``
  names a heading of its page, by GitHub's anchor rules.
- No text file points outside the repository: to a sibling folder the docs
  once came from, or to documents the repository does not hold.

"The repository" is what git tracks plus the new files it does not ignore,
so a page is checked before it is committed. The checkers are plain
functions; they are also run on small fixtures below, so a broken link is
seen to fail.
"""

from __future__ import annotations

import bisect
import posixpath
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.helpers.ci import missing

ROOT = Path(__file__).resolve().parents[2]

#: what points outside the repository (built from pieces, so that this file
#: does not name them itself)
OUTSIDE = ("../" + "shared", "shared/" + "API.md", "DESIGN" + ".md", "STYLE" + ".md")

# -- Markdown, as far as links and anchors need it -----------------------------------------

FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
#: a code span, within one paragraph (it may wrap lines, not cross a blank one)
CODE_SPAN_RE = re.compile(r"(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)
COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
#: ``[text](target)`` or ``![alt](target "title")``; the text may wrap lines
INLINE_LINK_RE = re.compile(
    r"!?\[((?:[^\[\]\\]|\\.|\[[^\[\]]*\])*)\]"
    r"\(\s*(<[^<>\n]*>|[^\s()]*)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
#: ``[label]: target``
REFERENCE_RE = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*(<[^<>\n]*>|\S+)", re.M)
ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_RE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
#: lines that cannot be the text of a setext heading
NOT_SETEXT_TEXT_RE = re.compile(r"^\s*$|^ {0,3}(#|>|\||[-*+] |\d+[.)] )")
HTML_ANCHOR_RE = re.compile(r"<[a-zA-Z][^>]*\b(?:id|name)=[\"']([^\"']+)[\"']")
SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _blank(match: re.Match[str]) -> str:
    """The match's text with everything but line breaks turned into spaces."""
    return re.sub(r"[^\n]", " ", match.group(0))


def without_fences(text: str) -> str:
    """*text* with fenced code blocks blanked: every character of theirs but
    the line breaks becomes a space, so offsets and line numbers hold."""
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        found = FENCE_RE.match(line)
        if fence is None:
            if found and not (found.group(1)[0] == "`" and "`" in found.group(2)):
                fence = found.group(1)
                out.append(" " * len(line))
            else:
                out.append(line)
            continue
        if (
            found
            and found.group(1)[0] == fence[0]
            and len(found.group(1)) >= len(fence)
            and not found.group(2).strip()
        ):
            fence = None
        out.append(" " * len(line))
    return "\n".join(out)


def prose(text: str) -> str:
    """*text* with code blocks, code spans and HTML comments blanked out, every
    other character where it was: what can hold a link."""
    return CODE_SPAN_RE.sub(_blank, COMMENT_RE.sub(_blank, without_fences(text)))


def plain(heading: str) -> str:
    """A heading's text as rendered: code spans and links keep their text, the
    markup around them goes."""
    text = re.sub(r"(`+)(.+?)\1", lambda m: m.group(2).strip(), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"!?\[([^\]]*)\]\[[^\]]*\]", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("*", "")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, every character dropped but
    letters, digits, ``-``, ``_`` and spaces, then each space a ``-``."""
    text = plain(heading).strip().lower()
    kept = (
        ch
        for ch in text
        if ch in " -" or unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc"
    )
    return "".join(kept).replace(" ", "-")


def headings(text: str) -> list[str]:
    """The headings of a Markdown text (ATX and setext), outside code blocks."""
    lines = without_fences(text).split("\n")
    found: list[str] = []
    for i, line in enumerate(lines):
        atx = ATX_RE.match(line)
        if atx:
            found.append(atx.group(2) or "")
        elif (
            i + 1 < len(lines)
            and SETEXT_RE.match(lines[i + 1])
            and not NOT_SETEXT_TEXT_RE.match(line)
        ):
            found.append(line.strip())
    return found


def anchors(text: str) -> set[str]:
    """Every ``#fragment`` a page answers to: its headings' slugs (a repeated
    heading gets ``-1``, ``-2`` …) and explicit HTML ids and names."""
    result: set[str] = set()
    for heading in headings(text):
        base = candidate = slug(heading)
        n = 0
        while candidate in result:
            n += 1
            candidate = f"{base}-{n}"
        result.add(candidate)
    result.update(HTML_ANCHOR_RE.findall(without_fences(text)))
    return result


def links(text: str) -> list[tuple[int, str, str]]:
    """``(line, the link as written, target)`` for every inline link, image and
    reference definition outside code."""
    clear = prose(text)
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    found = []
    for regex, group in ((INLINE_LINK_RE, 2), (REFERENCE_RE, 1)):
        for m in regex.finditer(clear):
            line = bisect.bisect_right(starts, m.start())
            written = " ".join(text[m.start() : m.end()].split())
            found.append((m.start(), line, written, m.group(group)))
    return [(line, written, target) for _, line, written, target in sorted(found)]


# -- the checks -------------------------------------------------------------------------


def _inside(root: Path, rel: str) -> str | None:
    """*rel* (a path from the root, ``/``-separated) normalised, or None when it
    leaves the root."""
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../") or posixpath.isabs(norm):
        return None
    return "" if norm == "." else norm


def check_links(root: Path, pages: Iterable[str], known: set[str] | None = None) -> list[str]:
    """One line per broken link in *pages* (Markdown files, paths from *root*):
    ``file:line: link: what is wrong``. With *known* (every file of the
    repository), a target must also be one of them or a folder holding one:
    a file that exists here but is ignored is missing from a clone."""
    known_dirs: set[str] = set()
    if known is not None:
        for name in known:
            parts = name.split("/")[:-1]
            known_dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        known_dirs.add("")
    cache: dict[str, set[str]] = {}

    def anchors_of(rel: str) -> set[str]:
        if rel not in cache:
            cache[rel] = anchors((root / rel).read_text(encoding="utf-8"))
        return cache[rel]

    problems: list[str] = []
    for page in pages:
        text = (root / page).read_text(encoding="utf-8")
        for line, written, raw in links(text):
            where = f"{page}:{line}: {written}"
            target = raw[1:-1] if raw.startswith("<") and raw.endswith(">") else raw
            if SCHEME_RE.match(target) or target.startswith("//"):
                continue  # a URL: not this test's business
            if not target:
                problems.append(f"{where}: empty link target")
                continue
            path, _, fragment = target.partition("#")
            path = unquote(path.partition("?")[0])
            if not path:
                rel: str | None = page
            elif path.startswith("/"):
                rel = _inside(root, path.lstrip("/"))
            else:
                rel = _inside(root, posixpath.join(posixpath.dirname(page), path))
            if rel is None:
                problems.append(f"{where}: points outside the repository")
                continue
            if not (root / rel).exists():
                problems.append(f"{where}: no such file or directory: {rel}")
                continue
            if known is not None and rel not in known and rel not in known_dirs:
                problems.append(f"{where}: {rel} exists here but is not in the repository")
                continue
            is_page = rel.endswith(".md") and (root / rel).is_file()
            if fragment and is_page and unquote(fragment) not in anchors_of(rel):
                problems.append(f"{where}: no heading #{fragment} in {rel}")
    return problems


def outside_pointers(root: Path, files: Iterable[str]) -> list[str]:
    """One line per mention of something outside the repository in a text
    file: ``file:line: what: the line``. Binary files are skipped."""
    problems: list[str] = []
    for name in files:
        data = (root / name).read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for needle in OUTSIDE:
                if needle in line:
                    problems.append(
                        f"{name}:{number}: {needle!r} is outside the repository: {line.strip()}"
                    )
    return problems


def repo_files(pattern: str | None = None) -> list[str]:
    """Files git tracks, and new files it does not ignore, that exist; paths
    from the root, ``.venv`` left out."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        missing("the docs checks need a git checkout and git")
    argv = [git, "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    if pattern is not None:
        argv += ["--", pattern]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout
    names = {name for name in out.decode("utf-8").split("\0") if name}
    return sorted(
        name
        for name in names
        if not (name == ".venv" or name.startswith(".venv/")) and (ROOT / name).is_file()
    )


# -- the repository ---------------------------------------------------------------------


def test_the_markdown_files_are_found() -> None:
    pages = repo_files("*.md")
    assert {"README.md", "docs/API.md"} <= set(pages), pages


def test_every_relative_link_resolves() -> None:
    problems = check_links(ROOT, repo_files("*.md"), set(repo_files()))
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_nothing_points_outside_the_repository() -> None:
    problems = outside_pointers(ROOT, repo_files())
    assert not problems, "references outside the repository:\n" + "\n".join(problems)


# -- the checkers, on fixtures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Quick start", "quick-start"),
        ("A whole sale in one command: `make demo`", "a-whole-sale-in-one-command-make-demo"),
        (
            "Rate limits: choosing `rate`, `burst` and the per-user values",
            "rate-limits-choosing-rate-burst-and-the-per-user-values",
        ),
        ("Rehearse a sale (locust)", "rehearse-a-sale-locust"),
        ("5. Admin API", "5-admin-api"),
        ("§6 Invariants", "6-invariants"),
        ("seckill — the contract", "seckill--the-contract"),
        ("`per_user_limit` and [links](x.md)", "per_user_limit-and-links"),
        ("2026-11-25 16:12 UTC — commit ae969b0", "2026-11-25-1612-utc--commit-ae969b0"),
    ],
)
def test_slug_follows_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_anchors_number_repeated_headings_and_skip_code() -> None:
    text = "# Top\n## Notes\n## Notes\n```\n# not a heading\n```\nSetext\n------\n"
    assert anchors(text) == {"top", "notes", "notes-1", "setext"}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


GOOD = """# Guide

See [the API](docs/API.md), [its §5](docs/API.md#5-admin-api),
[a folder](docs/), [this page's start](#guide) and
[a wrapped
link](docs/API.md#5-admin-api). ![a picture](docs/pic.png)

[ref]: docs/API.md#5-admin-api

Not links: `[code](missing.md)`, https://example.com/x.md, [web](https://example.com/missing.md),
<!-- [commented](missing.md) -->

```sh
[in a block](missing.md)
```
"""

API = "# The contract\n\n## 5. Admin API\n\nSee [the guide](../README.md#guide).\n"


def test_check_links_passes_a_good_tree(tmp_path: Path) -> None:
    _write(tmp_path, {"README.md": GOOD, "docs/API.md": API, "docs/pic.png": "png"})
    assert check_links(tmp_path, ["README.md", "docs/API.md"]) == []


def test_check_links_names_file_line_and_link(tmp_path: Path) -> None:
    broken = (
        "# Guide\n"
        "```sh\n"
        "echo '[a block](nowhere.md)'\n"
        "```\n"
        "[gone](docs/gone.md)\n"
        "[bad anchor](#nowhere) and [bad anchor there](docs/API.md#6-nothing)\n"
        "[out](../../etc/passwd)\n"
        "[ignored file](var/out.md)\n"
        "[empty]()\n"
        "[defined]: docs/missing.md\n"
    )
    _write(tmp_path, {"README.md": broken, "docs/API.md": API, "var/out.md": "# Out\n"})
    problems = check_links(tmp_path, ["README.md"], {"README.md", "docs/API.md"})
    assert problems == [
        "README.md:5: [gone](docs/gone.md): no such file or directory: docs/gone.md",
        "README.md:6: [bad anchor](#nowhere): no heading #nowhere in README.md",
        "README.md:6: [bad anchor there](docs/API.md#6-nothing): "
        "no heading #6-nothing in docs/API.md",
        "README.md:7: [out](../../etc/passwd): points outside the repository",
        "README.md:8: [ignored file](var/out.md): "
        "var/out.md exists here but is not in the repository",
        "README.md:9: [empty](): empty link target",
        "README.md:10: [defined]: docs/missing.md: no such file or directory: docs/missing.md",
    ]


def test_outside_pointers_names_file_and_line(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "README.md": f"# Guide\n\nThe contract is [{OUTSIDE[1]}]({OUTSIDE[0]}/API.md).\n",
            "seckill/x.py": f'"""Style: see {OUTSIDE[3]}."""\n',
            "clean.txt": "nothing here\n",
        },
    )
    (tmp_path / "blob.bin").write_bytes(b"\0" + OUTSIDE[2].encode())
    problems = outside_pointers(tmp_path, ["README.md", "seckill/x.py", "clean.txt", "blob.bin"])
    assert [p.split(": ", 2)[:2] for p in problems] == [
        ["README.md:3", f"{OUTSIDE[0]!r} is outside the repository"],
        ["README.md:3", f"{OUTSIDE[1]!r} is outside the repository"],
        ["seckill/x.py:1", f"{OUTSIDE[3]!r} is outside the repository"],
    ]
