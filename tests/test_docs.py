"""Documentation cross-references: design-document citations, stale file names, cited paths.

Light on purpose (standard library and git only). The files checked are those git tracks plus
untracked files that are not ignored (``git ls-files --cached --others --exclude-standard``), i.e.
what a commit would hold, so a new document is checked before it is committed; binary files are
skipped.
"""

from __future__ import annotations

import re
import subprocess
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = "docs/design.md"

# "docs/design.md §5", "docs/design.md §4, §8", "docs/design.md §5.3"
CITATION = re.compile(r"docs/design\.md\s*((?:§\d+(?:\.\d+)?(?:\s*(?:,|and|&)\s*(?=§))?)+)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")
# The old, upper-case name of the design document (built in two parts so this file does not
# contain it).
STALE_NAME = re.compile(re.escape("DESIGN" + ".md"))
# Repository paths as they appear in prose, commands and comments.
PATH_PREFIXES = ("tests", "jamun", "benchmarks", "config", "workflow", "docs", "envs")
PATH = re.compile(r"(?<![\w./$~-])((?:" + "|".join(PATH_PREFIXES) + r")/[^\s`'\"()\[\]<>|,;]*)")
PLACEHOLDER_PART = re.compile(r"^(?:[A-Z]|X+|N+)(?:\.\w+)?$")  # config/X.yaml, shard_N.npy


@lru_cache(maxsize=1)
def repo_files() -> tuple[str, ...]:
    """Paths (relative to the repository root) that a commit would hold and that exist now."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    return tuple(sorted({p for p in listed if p and (ROOT / p).is_file()}))


@lru_cache(maxsize=None)
def text_of(path: str) -> str | None:
    """The file's text, or None for a binary (NUL bytes or not UTF-8) file."""
    data = (ROOT / path).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_files() -> list[str]:
    return [p for p in repo_files() if text_of(p) is not None]


def design_sections() -> set[str]:
    """Section numbers with a heading in docs/design.md: "5" for "## 5. ...", "5.3" for "### 5.3 ..."."""
    text = (ROOT / DESIGN).read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. \S", text, flags=re.M))
    sections |= set(re.findall(r"^### (\d+\.\d+)\.? \S", text, flags=re.M))
    return sections


def test_design_document_has_sections_1_to_11_in_order() -> None:
    """Citations rely on the numbering: ``## 1.`` ... ``## 11.``, each once, in order."""
    text = (ROOT / DESIGN).read_text(encoding="utf-8")
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. \S", text, flags=re.M)]
    assert numbers == list(range(1, 12)), f"{DESIGN} top-level sections are {numbers}"


def test_design_citations_name_existing_sections() -> None:
    sections = design_sections()
    missing = []
    for path in text_files():
        for number, line in enumerate(text_of(path).splitlines(), start=1):
            for citation in CITATION.finditer(line):
                for section in SECTION.findall(citation.group(1)):
                    if section not in sections:
                        missing.append(f"{path}:{number}: §{section} ({citation.group(0).strip()})")
    assert not missing, f"citations of sections that {DESIGN} lacks:\n" + "\n".join(missing)


def test_no_file_cites_the_old_design_file_name() -> None:
    """The design document is docs/design.md; the old upper-case name is not in the repository."""
    stale = [
        f"{path}:{number}: {line.strip()}"
        for path in text_files()
        if path != DESIGN
        for number, line in enumerate(text_of(path).splitlines(), start=1)
        if STALE_NAME.search(line)
    ]
    assert not stale, f"cite {DESIGN} §N instead:\n" + "\n".join(stale)


def cited_paths(path: str) -> list[tuple[int, str]]:
    """(line number, repository path) cited in a Markdown file, or in the comments of a YAML file."""
    found = []
    for number, line in enumerate(text_of(path).splitlines(), start=1):
        if path.endswith(".yaml"):
            if "#" not in line:
                continue
            line = line.split("#", 1)[1]
        for match in PATH.finditer(line):
            found.append((number, match.group(1).rstrip(".:")))
    return found


def is_checkable(path: str) -> bool:
    """False for globs, templates and placeholders (``workflow/rules/*.smk``, ``{split}``, ``<pep>``, ``X.yaml``)."""
    if any(c in path for c in "*?{}<>$") or "..." in path:
        return False
    return not any(PLACEHOLDER_PART.match(part) for part in path.split("/"))


def documents() -> list[str]:
    return [p for p in text_files() if p.endswith(".md") or re.fullmatch(r"config/[^/]+\.yaml", p)]


def test_cited_repository_paths_exist() -> None:
    files = set(repo_files())
    folders = {str(parent) for f in files for parent in Path(f).parents}
    broken = [
        f"{doc}:{number}: {cited}"
        for doc in documents()
        for number, cited in cited_paths(doc)
        if is_checkable(cited) and cited.rstrip("/") not in files | folders
    ]
    assert not broken, "documents cite paths that are not in the repository:\n" + "\n".join(broken)


def test_path_scan_finds_paths() -> None:
    """The scan itself works: it sees the paths a known document cites."""
    cited = {path for _, path in cited_paths("README.md")}
    assert {"config/config.yaml", "benchmarks/README.md"} <= cited
    assert is_checkable("config/peptides/demo_train.txt")
    assert not is_checkable("workflow/rules/*.smk")
    assert not is_checkable("config/X.yaml")
    assert not is_checkable("config/peptides/paper_{train,val}.txt")
