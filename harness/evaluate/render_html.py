"""Render a `Document` as one self-contained HTML file: inline CSS, plots as base64 PNG, no scripts.

A report is mailed around, attached to tickets and opened from cluster file systems, so it must
not depend on anything outside the file. Every user string passes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping

from harness.evaluate.document import Block, Bullets, Code, Document, Image, Paragraph, Section, Table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem; margin-top: 2rem; }
.subtitle { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; border-radius: 4px; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #59636e; font-size: 0.85rem; }
details summary { cursor: pointer; color: #0969da; }
""".strip()

_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?( s.*)?$")


def document_to_html(document: Document, images: Mapping[str, bytes]) -> str:
    """The whole page; Image blocks whose key has no PNG in `images` are left out."""
    title = html.escape(document.title)
    body = [f"<h1>{title}</h1>"]
    if document.subtitle:
        body.append(f'<p class="subtitle">{html.escape(document.subtitle)}</p>')
    body.extend(section_to_html(section, images) for section in document.sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


def section_to_html(section: Section, images: Mapping[str, bytes]) -> str:
    blocks = [block_to_html(block, images) for block in section.blocks]
    heading = f"<section>\n<h2>{html.escape(section.title)}</h2>"
    return "\n".join([heading, *(block for block in blocks if block), "</section>"])


def block_to_html(block: Block, images: Mapping[str, bytes]) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Table):
        return table_to_html(block)
    if isinstance(block, Code):
        return code_to_html(block)
    if isinstance(block, Image):
        return image_to_html(block, images.get(block.key))
    raise TypeError(f"unknown document block {type(block).__name__}")


def table_to_html(table: Table) -> str:
    head = ""
    if any(table.header):
        cells = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
        head = f"<thead><tr>{cells}</tr></thead>"
    align = any(table.header)
    rows = "\n".join("<tr>" + "".join(_cell(cell, align) for cell in row) + "</tr>" for row in table.rows)
    return f"<table>{head}\n<tbody>\n{rows}\n</tbody></table>"


def _cell(text: str, align_numbers: bool) -> str:
    """In data tables numbers are right-aligned so digits line up down a column."""
    css = ' class="num"' if align_numbers and _NUMBER.match(text.strip()) else ""
    return f"<td{css}>{html.escape(text)}</td>"


def code_to_html(code: Code) -> str:
    block = f"<pre><code>{html.escape(code.text.rstrip())}</code></pre>"
    if code.collapsed:
        return f"<details><summary>{html.escape(code.summary or 'show')}</summary>\n{block}\n</details>"
    if code.summary:
        return f"<p>{html.escape(code.summary)}:</p>\n{block}"
    return block


def image_to_html(image: Image, png: bytes | None) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    caption = html.escape(image.caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )
