"""The README's Python blocks run as written, and its relative links and anchors resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
#: ``[text](target)`` and ``![alt](target)``, but not inside code spans or fences.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """Each fenced ``python`` block with the README line its code starts on."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


def _prose(text: str) -> str:
    """The text outside fenced blocks and inline code, where links are links."""
    text = re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    heading = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


BLOCKS = python_blocks(TEXT)


def test_the_readme_has_python_blocks() -> None:
    # Guards the extraction itself: a fence the pattern missed would make the test below vacuous.
    assert len(BLOCKS) == TEXT.count("```python")
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line-{line}" for line, _ in BLOCKS])
def test_a_readme_block_runs(line: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "readme_block.py"
    script.write_text(code, encoding="utf-8")
    # A fresh environment: no settings left over from the shell or from other tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDB_", "IONQ_", "PINECONE_"))}
    env["PYTHONPATH"] = str(ROOT)
    try:
        out = subprocess.run(
            [sys.executable, "-W", "error", str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"README block at line {line} did not finish in {exc.timeout} s")
    assert out.returncode == 0, f"README block at line {line} failed:\n{out.stderr[-4000:]}"


def test_relative_links_point_to_files_that_exist() -> None:
    targets = _LINK.findall(_prose(TEXT))
    anchors = {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", _prose(TEXT), flags=re.M)}
    assert targets, "no links found: the pattern is broken"
    missing = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in anchors:
                missing.append(target)
        elif not (README.parent / unquote(path)).exists():
            missing.append(target)
    assert missing == []


def test_the_helpers_find_blocks_links_and_anchors() -> None:
    sample = (
        "# A `b` title\n[x](docs/a.md) `[y](no.md)`\n```python\nprint(1)\n```\n"
        "```bash\n[z](nope.md)\n```\n```python\n```\n"
    )
    assert python_blocks(sample) == [(4, "print(1)\n"), (10, "")]
    assert _LINK.findall(_prose(sample)) == ["docs/a.md"]
    assert _slug("Errors and the CLI") == "errors-and-the-cli"
    assert _slug("A `b` title, again!") == "a-b-title-again"


def _monitoring_commands() -> list[str]:
    """The lines of the bash block in "Monitoring a run"."""
    section = TEXT.split("## Monitoring a run", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash[ \t]*\n(.*?)^```", section, flags=re.M | re.S)
    assert block is not None, "the Monitoring section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_the_monitoring_commands_run(tmp_path: Path) -> None:
    """Each line of the CLI block, in order, in a fresh folder (`qdb ui` serves until
    stopped: tests/test_ui.py starts and loads it)."""
    import shutil

    commands = _monitoring_commands()
    assert commands[0] == "qdb demo" and commands[-1].startswith("qdb ui")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDB_", "IONQ_", "PINECONE_"))}
    env["PYTHONPATH"] = str(ROOT)
    # `qdb` is the installed console script; a checkout without it runs the module.
    qdb = shutil.which("qdb") or f"{sys.executable} -m quantum_ml.cli"
    for line in commands[:-1]:
        command = line.replace("qdb ", f"{qdb} ", 1)
        out = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert out.returncode == 0, f"{line!r} failed:\n{out.stderr[-3000:]}"
    assert (tmp_path / "dashboard" / "dashboard.html").is_file()
    assert list((tmp_path / "export").glob("*.parquet"))
    assert (tmp_path / "mlruns").is_dir()
