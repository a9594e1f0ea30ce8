"""The one way probe reads YAML a user wrote (configs, config copies, sweep specs, import maps).

PyYAML's safe loader builds aliases as shared references, so a kilobyte of nested anchors loads
at once into a structure that expands to billions of values the moment anything walks it
(validation, ``to_dict``, JSON); an anchor may even contain itself. :func:`load_yaml` refuses such
documents before building them: the text is bounded in bytes, and the composed node graph in
nesting depth and in the number of nodes it has once every alias is expanded
(docs/design.md, "One way to do each thing").
"""

from __future__ import annotations

from typing import Any

from probe.errors import ProbeError

MAX_BYTES = 8 * 2**20  # the largest YAML document read: a config is a few KB, a long explicit grid a few MB
MAX_NODES = 2_000_000  # values, lists and mappings once aliases are expanded
MAX_DEPTH = 64  # nested lists and mappings


def _expanded_size(root: Any, what: str) -> int:
    """How many nodes the composed document has with every alias expanded (raises past the bounds)."""
    import yaml

    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any, depth: int) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise ProbeError(f"{what}: an alias refers to a value that contains it")
        if depth > MAX_DEPTH:
            raise ProbeError(f"{what} nests lists and mappings more than {MAX_DEPTH} deep")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            active.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_NODES:
                    raise ProbeError(f"{what} expands to more than {MAX_NODES:,} values (through its aliases)")
            active.discard(key)
        memo[key] = total
        return total

    return size(root, 0)


def _check_depth(events: Any, what: str) -> None:
    """Refuse nesting past ``MAX_DEPTH`` from the parser's event stream (which does not recurse)."""
    import yaml

    depth = 0
    try:
        while events.check_event():
            event = events.get_event()
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ProbeError(f"{what} nests lists and mappings more than {MAX_DEPTH} deep")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    finally:
        events.dispose()


def load_yaml(text: str | bytes, what: str) -> Any:
    """Parse one YAML document safely; ``what`` names it in errors (``"config file x.yaml"``).

    Refused with one :class:`ProbeError` line: invalid YAML, more than ``MAX_BYTES``, nesting past
    ``MAX_DEPTH``, more than ``MAX_NODES`` values with aliases expanded, self-containing aliases.
    An empty document is ``None``.
    """
    import yaml

    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_BYTES:
        raise ProbeError(f"{what} is {size:,} bytes; at most {MAX_BYTES:,} are read")
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        _check_depth(loader_cls(text), what)  # before composing: composing recurses once per level
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, what)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "flow level" in first or "nesting" in first:  # libyaml's own nesting limit (PyYAML >= 6.0.4)
            raise ProbeError(f"{what} nests lists and mappings more than {MAX_DEPTH} deep") from None
        raise ProbeError(f"{what} is not valid YAML: {first}") from None
    except RecursionError:
        raise ProbeError(f"{what} nests lists and mappings more than {MAX_DEPTH} deep") from None
    except (ValueError, OverflowError, UnicodeError) as exc:  # e.g. a timestamp or number PyYAML cannot build
        raise ProbeError(f"{what} holds a value that cannot be read: {str(exc).splitlines()[0][:160]}") from None
    finally:
        loader.dispose()
