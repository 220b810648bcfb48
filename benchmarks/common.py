"""Shared pieces of the benchmark scripts: the environment header and the markdown table writer."""

from __future__ import annotations

import datetime as _dt
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, str]:
    """Device, library versions and date, recorded with every table."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    env = {"device": device, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = "not installed"
    env["date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return env


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], notes: str = "") -> Path:
    """Print the table and write ``benchmarks/results/<name>.md`` with the environment header."""
    env = environment()
    table = markdown_table(headers, rows)
    header = "\n".join(f"- {k}: {v}" for k, v in env.items())
    text = f"# {title}\n\n{header}\n\n{table}\n" + (f"\n{notes.strip()}\n" if notes else "")
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(f"wrote {path}")
    return path
