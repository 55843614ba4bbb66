"""README's "Python API" snippet runs as written and prints what it says it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def api_snippet() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section holds one python block"
    return blocks[0]


def test_python_api_snippet_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(api_snippet(), str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[:3]] == ["1", "2", "3"]
    for line in printed[:3]:
        _, accuracy, up = line.split()
        assert 0.0 <= float(accuracy) <= 1.0 and int(up) > 0
    assert printed[3] == "True"
    assert namespace["summary"]["rounds"] == 3  # type: ignore[index]


def test_api_doc_blocks_run_in_order() -> None:
    doc = README.parent / "docs" / "api.md"
    namespace: dict[str, object] = {"__name__": "api_doc"}
    for block in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S):
        exec(compile(block, str(doc), "exec"), namespace)
    fed = namespace["fed"]
    rows = fed.rows()  # type: ignore[attr-defined]
    assert len(rows) == 3 and all("client_0" in row["rejected"] for row in rows)
    assert all("NaN" in row["rejected"]["client_0"] for row in rows)
