"""Strict YAML reading for configs and cluster profiles.

PyYAML on its own keeps the last of two equal keys without a word, expands aliases without
bound (a few hundred bytes can stand for gigabytes: "billion laughs"), recurses until Python's
stack runs out on deep nesting, and raises `UnicodeDecodeError` on a file that is not UTF-8.
Everything here turns those into errors that say what and where, and records the line of every
key so later errors can point at it.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.config.messages import clip, echo
from harness.errors import ConfigError

MAX_NODES = 100_000  # values, keys and list items after expanding aliases; a real config has < 1000
MAX_DEPTH = 50  # nesting, after expanding aliases; a config nests 4 or 5 levels
MERGE_TAG = "tag:yaml.org,2002:merge"

Loc = tuple[str | int, ...]


class YamlProblem(Exception):
    """The text breaks one of the rules above; the message reads on after the name of its source."""


@dataclass(frozen=True)
class YamlDoc:
    """A parsed document and the 1-based line of every key and list item (dotted, list indices as numbers)."""

    data: Any
    lines: dict[str, int] = field(default_factory=dict)


def dotted(loc: Loc) -> str:
    """`training.callbacks[0]` from `("training", "callbacks", 0)`, as users write keys."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def line_key(loc: Loc) -> str:
    """The key of `YamlDoc.lines`: the location joined by dots, list indices as numbers."""
    return ".".join(str(part) for part in loc)


def read_yaml_file(path: Path, what: str = "config file") -> YamlDoc:
    """Parse a YAML file; every problem is a ConfigError that starts with `what` and the path."""
    text = read_text(path, what)
    try:
        return parse_yaml(text)
    except YamlProblem as err:
        raise ConfigError(f"{what} {path} {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML{syntax_error(err, text)}") from None


def read_text(path: Path, what: str) -> str:
    """The file as text, or an error that says why it cannot be read (not always 'missing')."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a file; give the path of a YAML file") from None
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} cannot be read: permission denied") from None
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"{what} {path} cannot be read: {reason}") from None
    return decode_utf8(data, f"{what} {path}")


def decode_utf8(data: bytes, source: str) -> str:
    """UTF-8 (a byte order mark is allowed); otherwise name the first bad byte by offset and line."""
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = data.count(b"\n", 0, offset) + 1
        raise ConfigError(
            f"{source} is not UTF-8 text: byte offset {offset} (line {line}) holds 0x{data[offset]:02x} "
            f"({err.reason}). Save the file as UTF-8"
        ) from None


def syntax_error(err: yaml.YAMLError, text: str) -> str:
    """` at line L, column C: problem` for a PyYAML error, short even when the problem quotes input."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{where}: {clip(str(err.problem))}"
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, err.position) + 1
        return f" at line {line}: character {echo(chr(err.character))} (U+{err.character:04X}) is not allowed"
    return f": {clip(str(err))}"


def parse_yaml(text: str, prefix: Loc = ()) -> YamlDoc:
    """Parse one YAML document under the rules above.

    `prefix` is where the text goes in the config (an override's key), so messages name full keys.
    Raises YamlProblem for broken rules and yaml.YAMLError for a syntax error.
    """
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(None)
        _check_expansion(node, loader.aliases)
        lines: dict[str, int] = {}
        _index(node, prefix, lines, first_seen={})
        return YamlDoc(loader.construct_document(node), lines)
    finally:
        loader.dispose()


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses to nest deeper than MAX_DEPTH while composing (before recursion fails)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        self.aliases += self.check_event(yaml.AliasEvent)
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlProblem(f"nests deeper than {MAX_DEPTH} levels (at line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield key_node
            yield value_node


def _check_expansion(root: yaml.Node, aliases: int) -> None:
    """Refuse a document whose aliases expand beyond MAX_NODES or MAX_DEPTH, or refer to themselves.

    Each distinct node is measured once (an alias reuses its target's measure), so this takes
    time in proportion to the text even when the expansion would be astronomically large.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        ident = id(node)
        if finished:
            open_nodes.discard(ident)
            kids = list(_children(node))
            size[ident] = 1 + sum(size[id(kid)] for kid in kids)
            depth[ident] = 1 + max((depth[id(kid)] for kid in kids), default=0)
            _check_measure(node, size[ident], depth[ident], aliases)
        elif ident in open_nodes:
            raise YamlProblem(
                f"has an alias that refers to a node containing it (anchor at line {node.start_mark.line + 1}); "
                "a config cannot hold a recursive structure"
            )
        elif ident not in size:
            open_nodes.add(ident)
            stack.append((node, True))
            stack.extend((kid, False) for kid in _children(node) if id(kid) not in size)


def _check_measure(node: yaml.Node, size: int, depth: int, aliases: int) -> None:
    line = node.start_mark.line + 1
    expanded = " once its aliases (*name) are expanded" if aliases else ""
    if size > MAX_NODES:
        raise YamlProblem(
            f"holds more than {MAX_NODES} values{expanded} (the value at line {line} alone holds {size}); "
            "a config needs far fewer" + ("; use fewer aliases" if aliases else "")
        )
    if depth > MAX_DEPTH:
        raise YamlProblem(f"nests deeper than {MAX_DEPTH} levels{expanded} (the value at line {line})")


def _index(node: yaml.Node, loc: Loc, lines: dict[str, int], first_seen: dict[int, Loc]) -> None:
    """Record the line of every key and list item, and refuse duplicate keys.

    A node reached again through an alias is not walked twice: its keys keep the first location.
    """
    if id(node) in first_seen:
        return
    first_seen[id(node)] = loc
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.setdefault(line_key((*loc, index)), item.start_mark.line + 1)
            _index(item, (*loc, index), lines, first_seen)
    elif isinstance(node, yaml.MappingNode):
        _check_duplicates(node, loc)
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                # `<<: *base` puts base's keys at this level; keys written here win over them.
                for merged in value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]:
                    _index(merged, loc, lines, first_seen)
                continue
            key = (*loc, _key_name(key_node))
            lines[line_key(key)] = key_node.start_mark.line + 1
            _index(value_node, key, lines, first_seen)


def _check_duplicates(node: yaml.MappingNode, loc: Loc) -> None:
    seen: dict[tuple[str, str], yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        ident = (key_node.tag, key_node.value)
        if ident not in seen:
            seen[ident] = key_node
            continue
        first, second = seen[ident].start_mark, key_node.start_mark
        if first.line != second.line:
            where = f"lines {first.line + 1} and {second.line + 1}"
        else:
            where = f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"
        name = clip(dotted((*loc, _key_name(key_node))))
        raise YamlProblem(
            f"has the key {name} twice, at {where}; YAML would silently keep only the last one. "
            "Remove or rename one of them"
        )


def _key_name(key_node: yaml.Node) -> str:
    return str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
