"""The documentation is for users: the README starts with how to use mixlab, and no tracked text
refers to numbered work sessions or numbered issues (history belongs in git, not in the files)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# the word session or issue (singular or plural, any case), then a number, maybe after "#" or "-"
NUMBERED = re.compile(r"\b(?:session|issue)s?[\s\-]*#?\s*\d", re.I)
# a '#' and digits standing alone (a tracker reference), but not a hex colour or an HTML entity, an
# anchor ("#1-intro", "/#546E7A"), a quoted colour or a Markdown heading ('#' followed by a space)
REFERENCE = re.compile(r"(?<![\w&#/\"'=:.-])#\d+\b(?![\w\-;])")
SKIPPED_SUFFIXES = {".ipynb", ".png", ".pdf", ".jpg", ".jpeg", ".gif", ".npz", ".pt", ".gz"}
MARKUP_SUFFIXES = {".html", ".htm", ".css", ".svg", ".js"}  # '#' is colours and anchors there


def offending_lines(path: Path) -> list[str]:
    """``path:line: text`` for each line of a text file that mentions a numbered session or issue;
    nothing for a binary file."""
    if path.suffix.lower() in SKIPPED_SUFFIXES or not path.is_file():
        return []
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []
    check_refs = path.suffix.lower() not in MARKUP_SUFFIXES
    found = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if NUMBERED.search(line) or (check_refs and REFERENCE.search(line)):
            found.append(f"{path}:{number}: {line.strip()[:120]}")
    return found


def tracked_files() -> list[Path]:
    """Tracked files and the untracked ones git would add (not ignored): what a commit can hold."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_text_mentions_numbered_sessions_or_issues():
    found = [hit for path in tracked_files() for hit in offending_lines(path)]
    assert not found, ("say what these lines mean without the history of who did what when:\n"
                       + "\n".join(found))


# built here, so that this file itself holds no such mention
S, I, H = "session", "issue", "#"


@pytest.mark.parametrize("text", [
    f"re-run in {S} 8", f"{S}s 5-7", f"{S.title()} {H}3", f"the {I}-16 target", f"see {I} 14, item 3",
    f"fixed in ({H}12)", f"fixes {H}12 for good", f"{I}s 14 and 15",
])
def test_the_scan_flags_numbered_history(tmp_path, text):
    note = tmp_path / "note.md"
    note.write_text(f"line one\n{text}\n")
    assert offending_lines(note) == [f"{note}:2: {text}"]


@pytest.mark.parametrize("text", [
    "merging by Eq. 11", "Fig. 3 of the paper", "## 1. EM for a Gaussian mixture", "color = '#1f77b4'",
    'edgecolor="#000000"', "a session of the lab", "proc = Popen(cmd, start_new_session=True)",
    "[the primer](#1-em-for-a-gaussian-mixture)", "an issue with small folders", "# 16 px (fixed before)",
])
def test_the_scan_leaves_ordinary_text_alone(tmp_path, text):
    note = tmp_path / "note.py"
    note.write_text(text + "\n")
    assert offending_lines(note) == []


def test_markup_colours_and_entities_are_not_references(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(f"td {{ color: {H}000000; background: {H}080 }}\n<!ENTITY Aacute \"&{H}193;\">\n")
    assert offending_lines(page) == []


def headings(lines: list[str]) -> list[tuple[int, str]]:
    """(line index, lower-cased title) of every Markdown heading."""
    return [(i, line.lstrip("#").strip().lower()) for i, line in enumerate(lines) if re.match(r"#{1,6}\s", line)]


def test_readme_is_short_and_starts_with_the_quick_start():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, "README.md is for users: keep it to 300 lines, move detail to docs/"
    titles = headings(lines)
    quick = next((i for i, title in titles if "quick start" in title), None)
    results = next((i for i, title in titles if "result" in title), None)
    assert quick is not None, "README.md needs a quick start section"
    assert results is not None, "README.md needs a results section"
    first_table = next((i for i, line in enumerate(lines) if line.startswith("<!-- begin results/")), len(lines))
    assert quick < results and quick < first_table, "the quick start comes before any results"
