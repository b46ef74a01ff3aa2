"""benchmarks/ layout: no tracker numbers in file names; each one-off study names the BUILD_NOTES.md section it backs."""
import ast
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _headings() -> list:
    with open(os.path.join(ROOT, "BUILD_NOTES.md")) as f:
        return [line.lstrip("#").strip() for line in f if line.startswith("#")]


def test_no_file_under_benchmarks_is_named_after_an_issue():
    bad = [os.path.relpath(os.path.join(d, n), ROOT) for d, dirs, files in os.walk(BENCH)
           for n in dirs + files if re.search(r"issue[\W_]*\d", n, re.IGNORECASE)]
    assert bad == []


def test_every_study_names_a_build_notes_section_that_exists():
    studies = sorted(glob.glob(os.path.join(BENCH, "studies", "*.py")))
    assert studies, "benchmarks/studies/ holds no .py file"
    headings = _headings()
    for path in studies:
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        name = os.path.basename(path)
        assert doc, f"{name} has no module docstring"
        first = doc.splitlines()[0]
        assert "BUILD_NOTES.md" in first, f"{name}: the docstring's first line names no BUILD_NOTES.md section"
        sections = re.findall(r'"([^"]+)"', first.split("BUILD_NOTES.md", 1)[1])
        assert sections, f"{name}: no quoted BUILD_NOTES.md heading in {first!r}"
        for s in sections:
            hits = [h for h in headings if h.startswith(s)]
            assert len(hits) == 1, f"{name}: {s!r} starts {len(hits)} BUILD_NOTES.md headings, not exactly one"
