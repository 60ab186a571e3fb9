"""Plain-text and markdown tables for the benchmark scripts (no dependencies)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

Row = Sequence[object]


def _cells(headers: Sequence[str], rows: Sequence[Row]) -> list[list[str]]:
    return [list(headers), *([str(c) for c in row] for row in rows)]


def text_table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    """A table aligned with spaces; numbers right-aligned, text left-aligned."""
    cells = _cells(headers, rows)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        padded = zip(row, widths, numeric, strict=True)
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def markdown_table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    cells = _cells(headers, rows)
    numeric = [all(_is_number(r[i]) for r in cells[1:]) for i in range(len(headers))]
    out = ["| " + " | ".join(cells[0]) + " |"]
    out.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells[1:]]
    return "\n".join(out)


def _is_number(text: str) -> bool:
    try:
        float(text.replace("x", "").replace("±", "").split()[0])
    except (ValueError, IndexError):
        return False
    return True


class Report:
    """Collects sections; prints them as plain text and can write a markdown copy."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._text: list[str] = []
        self._markdown: list[str] = [f"# {title}", ""]

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self._text.append(text)
        self._markdown += [text, ""] if text else []

    def table(self, headers: Sequence[str], rows: Sequence[Row], *, caption: str = "") -> None:
        if caption:
            print(f"\n{caption}", flush=True)
            self._markdown += [f"**{caption}**", ""]
        text = text_table(headers, rows)
        print(text, flush=True)
        self._text.append(text)
        self._markdown += [markdown_table(headers, rows), ""]

    def mark(self) -> int:
        """A position in the markdown, for :meth:`since`."""
        return len(self._markdown)

    def since(self, mark: int) -> list[str]:
        """The markdown lines written after ``mark``."""
        return list(self._markdown[mark:])

    def paste(self, markdown: Sequence[str]) -> None:
        """Lines of markdown saved from an earlier run, as they were."""
        print("\n".join(markdown), flush=True)
        self._markdown += list(markdown)

    def write_markdown(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self._markdown).rstrip() + "\n", encoding="utf-8")


def code_version() -> str:
    """The kubetune commit the run used, with '+dirty' when trial_runner/ has local edits."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "trial_runner")
    return commit + ("+dirty" if dirty else "")
