"""A tiny document model shared by the Markdown and HTML renderers.

Reports, comparisons and model cards are built once as a `Document` of plain-text blocks;
`render_md` and `render_html` turn it into text. Keeping content and markup apart means the two
formats cannot drift, and every user string is escaped in exactly one place per format.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells; `header` names the columns."""

    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""
    collapsed: bool = False
    summary: str = ""


@dataclass(frozen=True)
class Image:
    """A plot, referenced by key into the PNG images handed to the HTML renderer."""

    key: str
    caption: str


Block = Paragraph | Bullets | Table | Code | Image


@dataclass(frozen=True)
class Section:
    """A titled list of blocks; `html_only` sections (plots) are left out of Markdown."""

    title: str
    blocks: list[Block]
    html_only: bool = False


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)


def key_values(pairs: list[tuple[str, str]]) -> Table:
    """A two-column table, the form every summary (training, model, versions) takes."""
    return Table(header=["", ""], rows=[[key, value] for key, value in pairs])
