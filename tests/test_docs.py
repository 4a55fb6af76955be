"""The documents readers see: README.md, BUILD_NOTES.md and docs/*.md (no TensorFlow needed).

README opens with what the project is and the two commands that set it up and run it; the
details live in docs/, the build decisions and measurements in BUILD_NOTES.md. A clone holds
nothing outside the repository, so no document may point outside it.
"""

from __future__ import annotations

import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
BUILD_NOTES = os.path.join(REPO, "BUILD_NOTES.md")
DOCS = sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
DOCUMENTS = [README, BUILD_NOTES, *DOCS]
DOC_IDS = [os.path.relpath(p, REPO) for p in DOCUMENTS]

# [text](target) and ![alt](target); the target ends at whitespace or ')'
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MODULE = re.compile(r"python -m ((?:sdmtcnn_tf|datasets)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
FENCE = "```"


def read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def line_count(path: str) -> int:
  return len(read(path).splitlines())


def test_readme_is_under_150_lines():
  assert line_count(README) < 150


def test_build_notes_is_under_400_lines():
  assert line_count(BUILD_NOTES) < 400


def test_docs_pages_exist_and_stay_short():
  assert DOCS, "docs/*.md"
  for path in DOCS:
    assert line_count(path) <= 200, os.path.relpath(path, REPO)


def test_readme_starts_with_the_two_commands():
  """Title, at most one paragraph, then the code block holding exactly `make demo`, `make test`."""
  lines = read(README).splitlines()
  assert lines and lines[0].startswith("# "), "README.md must start with a title line"
  rest = lines[1:]
  while rest and not rest[0].strip():
    rest = rest[1:]
  if rest and not rest[0].startswith(FENCE):  # one paragraph: lines up to the first blank one
    end = next((i for i, line in enumerate(rest) if not line.strip()), len(rest))
    assert not any(line.startswith(FENCE) for line in rest[:end]), "paragraph runs into the block"
    rest = rest[end:]
    while rest and not rest[0].strip():
      rest = rest[1:]
  assert rest and rest[0].strip() == FENCE, \
    "after the title and at most one paragraph README.md must open the commands' code block"
  close = rest.index(FENCE, 1)
  assert [line.strip() for line in rest[1:close] if line.strip()] == ["make demo", "make test"]


def _links(path: str) -> list[str]:
  text = read(path)
  # links inside code (fenced blocks, inline code) are examples, not links
  text = re.sub(r"```.*?```", "", text, flags=re.S)
  text = re.sub(r"`[^`\n]*`", "", text)
  return LINK.findall(text)


@pytest.mark.parametrize("path", DOCUMENTS, ids=DOC_IDS)
def test_relative_links_and_images_point_to_files_in_the_repository(path):
  base = os.path.dirname(path)
  for target in _links(path):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
      continue  # a URL or an anchor in the same page
    file = target.split("#", 1)[0]
    resolved = os.path.normpath(os.path.join(base, file))
    assert resolved == REPO or resolved.startswith(REPO + os.sep), \
      f"{os.path.relpath(path, REPO)}: {target} points outside the repository"
    assert os.path.exists(resolved), f"{os.path.relpath(path, REPO)}: {target} does not exist"


@pytest.mark.parametrize("path", DOCUMENTS, ids=DOC_IDS)
def test_no_document_points_outside_the_repository(path):
  text = read(path)
  for outside in ("../shared", "/work/"):
    assert outside not in text, f"{os.path.relpath(path, REPO)} mentions {outside}"


@pytest.mark.parametrize("path", [README, *DOCS], ids=DOC_IDS[:1] + DOC_IDS[2:])
def test_every_python_m_command_is_an_existing_module(path):
  for module in MODULE.findall(read(path)):
    parts = module.split(".")
    as_file = os.path.join(REPO, *parts) + ".py"
    as_package = os.path.join(REPO, *parts, "__main__.py")
    assert os.path.isfile(as_file) or os.path.isfile(as_package), \
      f"{os.path.relpath(path, REPO)}: python -m {module} is not a module of the repository"
