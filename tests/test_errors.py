"""The exception hierarchy in pocketbatch._errors: tree, docs and pickling."""

from __future__ import annotations

import inspect
import pickle
import re

import pytest

import pocketbatch
from pocketbatch import _errors
from pocketbatch._errors import (
    FlowDefinitionError,
    MissingExtraError,
    NodeTimeoutError,
    PocketbatchError,
    UnknownActionError,
)

EXCEPTIONS = [
    obj
    for _, obj in inspect.getmembers(_errors, inspect.isclass)
    if issubclass(obj, BaseException) and obj.__module__ == _errors.__name__
]

TREE_LINE = re.compile(r"^(?P<prefix>[\s│├└─]*)(?P<name>[A-Z]\w+)(?: \((?P<extra>\w+)\))?")


def documented_tree() -> dict[str, tuple[str | None, str | None]]:
    """Parse the module docstring's tree: name -> (tree parent, extra base in parentheses)."""
    doc = _errors.__doc__ or ""
    lines = doc.split("The tree::", 1)[1].strip("\n").splitlines()
    tree: dict[str, tuple[str | None, str | None]] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name)
    for line in lines:
        if not line.strip():
            if tree:
                break
            continue
        m = TREE_LINE.match(line)
        assert m, f"unparsable tree line: {line!r}"
        column = len(m["prefix"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        parent = stack[-1][1] if stack else None
        tree[m["name"]] = (parent, m["extra"])
        stack.append((column, m["name"]))
    return tree


def test_found_exception_classes() -> None:
    """The module defines the nine documented exception classes (FlowWarning: issue 14)."""
    assert {cls.__name__ for cls in EXCEPTIONS} == {
        "PocketbatchError",
        "FlowDefinitionError",
        "UnknownActionError",
        "LoadError",
        "ComponentError",
        "NodeTimeoutError",
        "ObserverError",
        "MissingExtraError",
        "FlowWarning",
    }


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: c.__name__)
def test_every_exception_derives_from_pocketbatch_error(cls: type[BaseException]) -> None:
    """Every exception class in _errors is a PocketbatchError."""
    assert issubclass(cls, PocketbatchError)
    assert issubclass(cls, Exception)


def test_module_all_lists_every_exception() -> None:
    """_errors.__all__ names exactly its exception classes, all re-exported by pocketbatch."""
    assert set(_errors.__all__) == {cls.__name__ for cls in EXCEPTIONS}
    for name in _errors.__all__:
        assert getattr(pocketbatch, name) is getattr(_errors, name)


def test_tree_parses_as_expected() -> None:
    """The docstring's tree parses to the expected shape."""
    assert documented_tree() == {
        "PocketbatchError": (None, None),
        "FlowDefinitionError": ("PocketbatchError", "ValueError"),
        "UnknownActionError": ("FlowDefinitionError", None),
        "NodeTimeoutError": ("PocketbatchError", "TimeoutError"),
        "ObserverError": ("PocketbatchError", None),
        "LoadError": ("PocketbatchError", "ValueError"),
        "ComponentError": ("PocketbatchError", None),
        "MissingExtraError": ("PocketbatchError", "ImportError"),
        "FlowWarning": ("PocketbatchError", "UserWarning"),
    }


def test_tree_names_exist_and_cover_every_class() -> None:
    """Every name drawn in the tree is a class in _errors, and every class is drawn."""
    tree = documented_tree()
    for name in tree:
        assert isinstance(getattr(_errors, name, None), type), name
    assert set(tree) == {cls.__name__ for cls in EXCEPTIONS}


def test_tree_parents_are_real_parents() -> None:
    """Each class's documented parent (and extra builtin base) is among its real bases."""
    import builtins

    tree = documented_tree()
    for name, (parent, extra) in tree.items():
        cls = getattr(_errors, name)
        if parent is None:
            assert cls.__bases__ == (Exception,)
            continue
        bases = cls.__bases__
        assert bases[0] is getattr(_errors, parent), (name, bases)
        expected = [getattr(_errors, parent)] + ([getattr(builtins, extra)] if extra else [])
        assert list(bases) == expected, (name, bases)
        assert cls.__mro__.index(getattr(_errors, parent)) == 1


SAMPLES = [
    PocketbatchError("plain"),
    FlowDefinitionError("flow 'x' has no start node"),
    UnknownActionError("review", "maybe", ["approve", "reject"]),
    UnknownActionError("n", None, ()),
    NodeTimeoutError("fetch", 2, 0.5),
    MissingExtraError("pocketbatch serve", "server"),
]

ATTRS = {
    UnknownActionError: ("node", "action", "known"),
    NodeTimeoutError: ("node", "attempt", "timeout"),
    MissingExtraError: ("feature", "extra"),
}


@pytest.mark.parametrize("exc", SAMPLES, ids=lambda e: type(e).__name__)
def test_pickle_round_trip(exc: BaseException) -> None:
    """Each exception pickles and unpickles with its type, message and attributes intact."""
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(exc, protocol=protocol))
        assert type(back) is type(exc)
        assert str(back) == str(exc)
        assert back.args == exc.args
        for attr in ATTRS.get(type(exc), ()):
            assert getattr(back, attr) == getattr(exc, attr), attr


@pytest.mark.parametrize(
    "exc",
    [
        UnknownActionError("review", "maybe", ["approve"]),
        NodeTimeoutError("fetch", 2, 0.5),
        MissingExtraError("serve", "server"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_pickle_keeps_notes(exc: BaseException) -> None:
    """Notes added with add_note survive pickling, as for built-in exceptions."""
    exc.add_note("while loading config")
    back = pickle.loads(pickle.dumps(exc))
    assert getattr(back, "__notes__", None) == ["while loading config"]


@pytest.mark.parametrize(
    "exc", [PocketbatchError("x"), FlowDefinitionError("y")], ids=lambda e: type(e).__name__
)
def test_pickle_keeps_notes_plain(exc: BaseException) -> None:
    """Exceptions without custom state keep their notes through pickling."""
    exc.add_note("hint")
    back = pickle.loads(pickle.dumps(exc))
    assert back.__notes__ == ["hint"]


def test_messages() -> None:
    """The documented messages are produced."""
    assert str(NodeTimeoutError("fetch", 2, 0.5)) == "node 'fetch' attempt 2 timed out after 0.5 s"
    assert str(MissingExtraError("pocketbatch serve", "server")) == (
        "pocketbatch serve needs the 'server' extra: pip install 'pocketbatch[server]'"
    )
    assert str(UnknownActionError("review", "maybe", ["approve", "reject"])) == (
        "node 'review' returned action 'maybe', which has no successor "
        "(known actions: 'approve', 'reject')"
    )


def test_unknown_action_known_is_tuple() -> None:
    """UnknownActionError.known is normalised to a tuple."""
    assert UnknownActionError("n", "a", ["b", "c"]).known == ("b", "c")


def test_builtin_bases_catchable() -> None:
    """Each error is catchable through its built-in base."""
    with pytest.raises(ValueError, match="no successor"):
        raise UnknownActionError("n", "a", [])
    with pytest.raises(TimeoutError):
        raise NodeTimeoutError("n", 1, 1.0)
    with pytest.raises(ImportError):
        raise MissingExtraError("f", "e")
