"""Plugin states on disk: which field types can be stored, why one could not be, and reading
old states back across a plugin's state versions.

Snapshots and checkpoints store a state as ``orjson.dumps(converter.unstructure(state))`` and read
it with ``converter.structure``. Registration checks every field type of a state class, recursively,
so that a class which could never be stored is refused before any event (not at the first
snapshot); a state that still cannot be encoded at run time is named by plugin, field and actor
(:class:`UnencodableState`). A snapshot records each plugin's state version; :class:`StateReader`
reads a recorded state through the plugin's ``herald_migrate_state`` when its version is older,
and refuses, in one line naming the plugin, the field and the fix, what it cannot read.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from datetime import date, datetime
from typing import Any, Callable

import attrs
import cattrs
import orjson

from ._event import converter
from ._plugin_error import PluginError

__all__ = ["StateReader", "UnencodableState", "field_type_problem", "unencodable_field", "shown"]

#: Leaf types the converter turns into JSON and back without help.
_LEAVES = (type(None), bool, int, float, str, bytes, datetime, date)
_UNIONS = (typing.Union, types.UnionType)
_FIX = 'docs/plugins.md, "Evolving a state"'


def shown(tp: Any) -> str:
    """A type as a plugin author wrote it (``Day | None``, not ``mymodule.Day | None``)."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", str(tp)).replace("NoneType", "None")


def _reason(exc: BaseException) -> str:
    """An exception's message without cattrs' hook advice (a plugin cannot register a hook)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).replace(" Register a structure hook for it.", "").replace("Register a structure hook for it.", "")
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text).strip()  # A, not <class 'mypkg.hooks.A'>
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- registration: every field type, recursively ---------------------------------------------------


def field_type_problem(state_type: type) -> tuple[str, Any, str] | None:
    """The first field of ``state_type`` (an attrs class) whose declared type cannot go through
    cattrs and JSON: ``(dotted path, its declared type, why)``, or None. Optional and other unions,
    containers and nested attrs classes are looked into; an annotation that cannot be resolved
    (a forward reference) is left to the round trip of the initial state."""
    return _class_problem(state_type, ())


def _class_problem(cls: type, seen: tuple[type, ...]) -> tuple[str, Any, str] | None:
    if cls in seen:  # a recursive class: its fields are being checked already
        return None
    try:
        attrs.resolve_types(cls)
    except Exception:
        return None
    for field in attrs.fields(cls):
        found = _type_problem(field.type, (*seen, cls))
        if found is not None:
            path, declared, why = found
            return (f"{field.name}.{path}" if path else field.name), declared or field.type, why
    return None


def _type_problem(tp: Any, seen: tuple[type, ...]) -> tuple[str, Any, str] | None:
    """``(path inside, the declared type there or None, why)`` if values of ``tp`` cannot round-trip, else None."""
    if tp is None or tp is Any or isinstance(tp, (str, typing.TypeVar, typing.ForwardRef)):
        return None  # None, anything (checked when encoded), or an unresolved annotation
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_problem(args[0], seen)
    if origin is typing.Literal:
        try:
            orjson.dumps([converter.unstructure(a) for a in args])
        except Exception as exc:
            return "", None, f"a value of {shown(tp)} is not JSON ({_reason(exc)})"
        return None
    if origin is not None:  # a union or a container: each part, then the whole (e.g. a union cattrs cannot tell apart)
        for arg in args:
            if arg is not Ellipsis:
                found = _type_problem(arg, seen)
                if found is not None:
                    return found
        if origin in _UNIONS:
            # cattrs passes JSON's own types through and tells the others apart only when one is
            # structured (attrs classes by their unique fields): ask for that hook now.
            others = [a for a in args if a not in (type(None), bool, int, float, str)
                      and typing.get_origin(a) is not typing.Literal]
            if len(others) > 1:
                found = _hook_problem(typing.Union[tuple(others)])
                if found is not None:
                    return found
        return _hook_problem(tp)
    if isinstance(tp, type):
        if attrs.has(tp):
            return _class_problem(tp, seen)
        if issubclass(tp, enum.Enum):
            for member in tp:
                try:
                    if converter.structure(orjson.loads(orjson.dumps(converter.unstructure(member))), tp) is not member:
                        raise ValueError(f"{member!r} comes back as another member")
                except Exception as exc:
                    return "", None, (f"{tp.__qualname__}.{member.name}'s value {member.value!r} is not JSON "
                                      f"({_reason(exc)})")
            return None
        if tp in _LEAVES:
            return None
        found = _hook_problem(tp)
        if found is not None:
            return "", None, (f"{tp.__qualname__} is a plain class: cattrs cannot restore it and JSON cannot hold it "
                        f"(make it an attrs class, or hold its parts in types they know)")
        return None
    return _hook_problem(tp)


def _hook_problem(tp: Any) -> tuple[str, Any, str] | None:
    try:
        converter.get_structure_hook(tp)
    except Exception as exc:
        return "", None, _reason(exc)
    return None


# -- run time: which field of a state could not be encoded -------------------------------------------


class UnencodableState(ValueError):
    """A plugin's state that cannot be encoded (a value its field type let through, e.g. under Any)."""

    def __init__(self, plugin: str, field: str, key: str, reason: str, others: int = 0) -> None:
        self.plugin, self.field, self.key, self.reason, self.others = plugin, field, key, reason, others
        more = f" (and {others} other state{'s' * (others != 1)})" if others else ""
        super().__init__(f"plugin {plugin}: the state of actor {key!r} cannot be encoded: field {field or '(the state)'}: "
                         f"{reason}{more}; no snapshot is written until it can be (the journal keeps every event: "
                         f"nothing is lost); the plugin must hold only types cattrs and JSON know there")


def unencodable_field(state: Any) -> tuple[str, str] | None:
    """``(dotted field path, why)`` if ``state`` cannot be encoded as a snapshot encodes it, else None."""
    try:
        orjson.dumps(converter.unstructure(state))
        return None
    except Exception as exc:
        reason = _reason(exc)
    if attrs.has(type(state)):
        for field in attrs.fields(type(state)):
            found = unencodable_field(getattr(state, field.name))
            if found is not None:
                path, why = found
                return (f"{field.name}.{path}" if path else field.name), why
    return "", reason


# -- reading states back, across versions --------------------------------------------------------


class StateReader:
    """Reads one plugin's states of a snapshot: migrated first when the snapshot recorded an older
    state version (the plugin's ``herald_migrate_state``), then structured. Whatever it cannot
    read raises a PluginError in one line naming the plugin, the field and the fix."""

    def __init__(self, plugin: str, state_type: type, version: int, recorded: int,
                 migrate: Callable[[Any, int], Any] | None) -> None:
        self.plugin, self.state_type, self.version, self.recorded = plugin, state_type, version, recorded
        self.migrate = migrate if recorded < version else None
        self.names = frozenset(f.name for f in attrs.fields(state_type))
        #: Fields the recorded states held that the class no longer has (dropped, and said so once).
        self.dropped: set[str] = set()
        if recorded > version:
            raise PluginError(f"plugin {plugin}: the snapshot holds {plugin} states of version {recorded}, written "
                              f"by a newer {plugin}; this one declares version {version} (herald_state_version): "
                              f"run the newer plugin (states are never migrated backwards)")

    def read(self, key: str, data: Any) -> Any:
        if self.migrate is not None:
            try:
                data = self.migrate(data, self.recorded)
            except Exception as exc:
                raise PluginError(f"plugin {self.plugin}: herald_migrate_state failed on actor {key!r}'s state of "
                                  f"version {self.recorded} ({_reason(exc)}); fix the migration ({_FIX})") from None
        try:
            state = converter.structure(data, self.state_type)
        except Exception as exc:
            raise PluginError(self._unreadable(key, exc)) from None
        if type(data) is dict and not data.keys() <= self.names:
            self.dropped.update(data.keys() - self.names)
        return state

    def _unreadable(self, key: str, exc: Exception) -> str:
        field, problem = _first_error(exc)
        cls = self.state_type.__qualname__
        where = f"{cls}.{field}" if field else cls
        head = (f"plugin {self.plugin}: a snapshot's {self.plugin} state (version {self.recorded}) of actor {key!r} "
                f"cannot be read as {cls} (version {self.version}): field {field or '(the state)'}: {problem}")
        if self.recorded < self.version and self.migrate is None:
            fix = (f"declare herald_migrate_state(state, version) turning version-{self.recorded} states into "
                   f"version {self.version}")
        elif self.recorded < self.version:
            fix = f"make herald_migrate_state return a {cls} (as a dict) for version-{self.recorded} states"
        else:
            fix = (f"declare herald_state_version() -> {self.version + 1} and herald_migrate_state(state, version) "
                   f"turning version-{self.version} states into the new {cls}")
            if "missing" in problem:
                fix = f"give {where} a default, or {fix}"
        return f"{head}; fix: {fix} ({_FIX})"


def _first_error(exc: Exception) -> tuple[str, str]:
    """The first failing field's path and what is wrong with it, from a cattrs structuring error."""
    try:
        messages = cattrs.transform_error(exc)
    except Exception:
        messages = []
    for message in messages:
        problem, _, path = message.rpartition(" @ ")
        if problem:
            return path.removeprefix("$").removeprefix(".").replace("[", ".").replace("]", ""), problem
    return "", _reason(exc)
