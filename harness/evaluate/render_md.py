"""Render a `Document` as Markdown: plain tables and code blocks, readable as text and on GitHub.

Markdown passes raw HTML through, so `<` in user strings is escaped; `|` would end a table cell.
"""

from __future__ import annotations

from harness.evaluate.document import Block, Bullets, Code, Document, Image, Paragraph, Section, Table


def document_to_markdown(document: Document) -> str:
    """The whole document; sections marked `html_only` (plots) are left out."""
    parts = [f"# {md_text(document.title)}"]
    if document.subtitle:
        parts.append(md_text(document.subtitle))
    parts.extend(section_to_markdown(section) for section in document.sections if not section.html_only)
    return "\n\n".join(part for part in parts if part) + "\n"


def section_to_markdown(section: Section) -> str:
    blocks = [block_to_markdown(block) for block in section.blocks]
    return "\n\n".join([f"## {md_text(section.title)}", *(block for block in blocks if block)])


def block_to_markdown(block: Block) -> str:
    if isinstance(block, Paragraph):
        return md_text(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {md_text(item)}" for item in block.items)
    if isinstance(block, Table):
        return table_to_markdown(block)
    if isinstance(block, Code):
        return code_to_markdown(block)
    if isinstance(block, Image):
        return ""
    raise TypeError(f"unknown document block {type(block).__name__}")


def table_to_markdown(table: Table) -> str:
    width = max([len(table.header), *(len(row) for row in table.rows)])
    header = [*table.header, *[""] * (width - len(table.header))]
    lines = [_row(header), "|" + "|".join(["---"] * width) + "|"]
    lines.extend(_row([*row, *[""] * (width - len(row))]) for row in table.rows)
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(md_cell(cell) for cell in cells) + " |"


def code_to_markdown(code: Code) -> str:
    """A fenced block whose fence is longer than any backtick run inside, so it cannot close early."""
    fence = "```"
    while fence in code.text:
        fence += "`"
    lead = f"{md_text(code.summary)}:\n\n" if code.summary else ""
    return f"{lead}{fence}{code.language}\n{code.text.rstrip()}\n{fence}"


def md_text(text: str) -> str:
    return str(text).replace("<", "&lt;")


def md_cell(text: str) -> str:
    return md_text(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
