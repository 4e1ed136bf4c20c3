"""YAML file + ``key.sub=value`` overrides -> one frozen dataclass config, with every problem reported at once.

Each package owns a frozen dataclass config; ``RunConfig`` composes them. This module knows nothing about those
classes: it walks their type hints. Why not Hydra/OmegaConf: we want plain dataclasses the rest of the code can
construct in tests, and one error listing every bad field (name + fix) before any Ray actor starts, instead of
the first exception deep inside a worker.

A field's doc lives in ``field(default=..., metadata={"doc": "..."})``. A dataclass may define
``validate(self) -> list[str]`` returning ``"field: problem. Fix: ..."``; the loader prefixes the dotted path.
Validation runs only on sections whose types checked out, so it never sees a string where it expects a float.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "config_from_cli",
    "doc",
    "describe",
    "from_dict",
    "load_config",
    "merge",
    "parse_overrides",
    "save_config",
    "to_dict",
    "undocumented",
]

T = TypeVar("T")
_FAIL = object()  # sentinel: this value did not type-check (a problem was recorded)
_NULLS = {"null", "Null", "NULL", "~"}


def doc(default: Any, text: str) -> Any:
    """A dataclass field with a default and its one-line doc (unit and why the default), shown by ``describe``."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"doc": text})
    return dataclasses.field(default=default, metadata={"doc": text})


class ConfigError(ValueError):
    """Every problem found in a config, so the user fixes them in one go rather than one per launch."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config ({n} problem{'s' if n != 1 else ''}):\n{lines}")


# ---------------------------------------------------------------------------------------------------------------------
# YAML dialect: PyYAML follows YAML 1.1, where `1e-5` is a *string* (it wants `1.0e-5`). Learning rates are written
# that way, so both the loader and the dumper resolve exponent floats; the dumper then quotes a string "1e-5".

_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """Safe loader that also rejects duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # SafeLoader itself reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    pass


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def _yaml_error(source: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p) or str(exc)
    return f"{source}{where}: invalid YAML ({what}). Fix: correct the YAML syntax there (quote values containing ': ')"


# ---------------------------------------------------------------------------------------------------------------------
# Public entry points


def config_from_cli(cls: type[T], config: str | None, overrides: Sequence[str], list_fields: bool = False
                    ) -> tuple[T | None, int]:
    """What every job does with its command line: ``(config, 0)`` to go on, or ``(None, exit code)`` after printing
    the field list (0) or every config problem with its fix (2), before anything starts."""
    import sys

    if list_fields:
        print(describe(cls))
        return None, 0
    try:
        return load_config(cls, config, overrides), 0
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None, 2


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from defaults, then the YAML file, then overrides (later wins); raise one ConfigError for all."""
    problems: list[str] = []
    data: Any = {}
    if path is not None:
        data = _read_yaml(Path(path), problems)
    update = _parse_overrides(overrides, problems)
    if problems:  # building on a half-read config would bury the real problem under spurious ones
        raise ConfigError(problems)
    return from_dict(cls, merge(data, update))


def from_dict(cls: type[T], data: Mapping) -> T:
    """Type-check ``data`` against ``cls`` (recursively), run ``validate()`` hooks, return the frozen instance."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    ctx = _Ctx(cls)
    if not isinstance(data, Mapping):
        ctx.problems.append(
            f"<top level>: must be a mapping of section names to sections, got {_vdesc(data)}. "
            f"Fix: write the config as `section:` blocks, e.g. {_example_path(cls)}: ..."
        )
        raise ConfigError(ctx.problems)
    cfg = _build(cls, data, "", ctx)
    if ctx.problems or cfg is _FAIL:
        raise ConfigError(ctx.problems or ["<top level>: could not build the config"])
    return typing.cast(T, cfg)


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["a.b=1", "c=[x,y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}``; values are YAML. Raises ConfigError."""
    problems: list[str] = []
    out = _parse_overrides(overrides, problems)
    if problems:
        raise ConfigError(problems)
    return out


def merge(base: Mapping, update: Mapping) -> dict:
    """Deep merge returning a new dict; ``update`` wins, mappings merge key by key, lists are replaced whole."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(cfg: Any) -> Any:
    """Plain nested dicts, lists and scalars (tuples -> lists, Path -> str): what ``yaml.safe_dump`` can write."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (every field, defaults included) so a run can be reproduced from its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cls = type(cfg)
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    header = (
        f"# Resolved {cls.__name__} ({cls.__module__}.{cls.__qualname__}), written {stamp} by jobs.config_loader.\n"
        "# Every field is listed, defaults included. Reproduce with: "
        f"load_config({cls.__name__}, {str(path)!r})\n"
    )
    body = yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    path.write_text(header + body, encoding="utf-8")


def describe(cls: type) -> str:
    """Every field as ``dotted.name: type = default`` plus its doc line, sections recursed; used for ``--help``."""
    lines = [f"{cls.__name__} fields (YAML keys; override with dotted.name=value):", ""]
    _describe(cls, "", lines, instance=None)
    return "\n".join(lines).rstrip() + "\n"


def undocumented(cls: type) -> list[str]:
    """Dotted names of fields with no ``metadata["doc"]``, for a test that keeps every field documented."""
    return [name for f, _, name in _walk(cls, "") if not f.metadata.get("doc")]


# ---------------------------------------------------------------------------------------------------------------------
# Reading inputs


def _read_yaml(path: Path, problems: list[str]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"config file {path}: not found. Fix: check the path, or pass no file to use the defaults")
        return {}
    except OSError as exc:
        problems.append(f"config file {path}: cannot be read ({exc.strerror or exc}). Fix: pass a readable YAML file")
        return {}
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        problems.append(_yaml_error(f"config file {path}", exc))
        return {}
    if data is None:  # an empty file means "all defaults"
        return {}
    if not isinstance(data, Mapping):
        problems.append(
            f"config file {path}: top level must be a mapping of sections, got {_vdesc(data)}. "
            "Fix: write `section:` blocks with `key: value` lines under them"
        )
    return data


def _parse_overrides(overrides: Sequence[str], problems: list[str]) -> dict:
    if isinstance(overrides, str):  # a lone string would otherwise be iterated character by character
        overrides = [overrides]
    out: dict = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not p or p != p.strip() for p in parts):
            problems.append(f"override {item!r}: expected key.sub=value. Fix: write it like rollout.temperature=0.7")
            continue
        if text.strip() == "":
            value: Any = ""  # `run.name=` means the empty string, as in Hydra; write `=null` for None
        else:
            try:
                value = yaml.load(text, Loader=_Loader)
            except yaml.YAMLError as exc:
                problems.append(_yaml_error(f"override {item!r}", exc) + ", or quote the value")
                continue
            if value is None and text.strip() not in _NULLS:
                value = text  # e.g. `run.note=#3` would parse as a YAML comment: keep what was typed
        node = out
        for depth, part in enumerate(parts[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                problems.append(
                    f"override {item!r}: {'.'.join(parts[: depth + 1])} was already set to a value by an earlier "
                    "override, so it has no sub-keys. Fix: drop one of the two overrides"
                )
                break
            node = nxt
        else:
            last = parts[-1]
            both_maps = isinstance(node.get(last), dict) and isinstance(value, dict)
            node[last] = merge(node[last], value) if both_maps else value  # later overrides win
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Type checking and building


class _Ctx:
    """Problems found so far, plus every dotted field path of the root (for "did you mean" on misplaced keys).

    ``failures`` counts the problems that stop a section from being built (types, unknown keys); validate()
    problems do not, so an enclosing section's cross-field validate() still runs and reports too.
    """

    def __init__(self, root: type | None = None, paths: list[str] | None = None) -> None:
        self.problems: list[str] = []
        self.failures = 0
        self.paths = paths if paths is not None else [name for _, _, name in _walk(root, "")] if root else []

    def fail(self, problem: str) -> Any:
        self.problems.append(problem)
        self.failures += 1
        return _FAIL


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved annotations: config modules use ``from __future__ import annotations``, so they are strings."""
    return typing.get_type_hints(cls)


def _fields(cls: type, prefix: str) -> list[tuple[dataclasses.Field, Any, str]]:
    hints = _hints(cls)
    return [(f, hints.get(f.name, Any), _join(prefix, f.name)) for f in dataclasses.fields(cls) if f.init]


def _walk(cls: type, prefix: str, depth: int = 0) -> list[tuple[dataclasses.Field, Any, str]]:
    out = []
    for f, tp, name in _fields(cls, prefix):
        out.append((f, tp, name))
        sub = _section_type(tp)
        if sub is not None and depth < 10:  # depth guard: a self-referencing config must not hang --help
            out.extend(_walk(sub, name, depth + 1))
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _section_type(tp: Any) -> type | None:
    """The dataclass behind ``X`` or ``X | None``, else None."""
    if _is_union(tp):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = arms[0] if len(arms) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _build(cls: type, data: Mapping, prefix: str, ctx: _Ctx) -> Any:
    """Check ``data`` against dataclass ``cls``; return the instance (validated) or _FAIL with problems recorded."""
    failures_before = ctx.failures
    fields = _fields(cls, prefix)
    known = [f.name for f, _, _ in fields]
    for key in data:
        if key not in known:
            ctx.fail(_unknown_key(str(key), prefix, known, ctx))
    kwargs: dict[str, Any] = {}
    for f, tp, path in fields:
        default = _default(f)
        sub = _section_type(tp)
        if f.name in data:
            value = data[f.name]
            if sub is not None and isinstance(value, Mapping) and isinstance(default, sub):
                value = merge(to_dict(default), value)  # a partial section keeps the other values of its default
        elif sub is not None and (default is dataclasses.MISSING or isinstance(default, sub)):
            value = {} if default is dataclasses.MISSING else to_dict(default)  # rebuilt so validate() sees it too
        elif default is dataclasses.MISSING:
            ctx.fail(f"{path}: required, has no default. Fix: set {path} in the YAML file or as {path}=...")
            continue
        else:
            continue  # leave plain defaults to the dataclass itself
        converted = _convert(tp, value, path, ctx, example=default)
        if converted is not _FAIL:
            kwargs[f.name] = converted
    if ctx.failures > failures_before:
        return _FAIL  # types are wrong somewhere below: validate() would only add noise
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ check: still one problem among the others
        return ctx.fail(f"{prefix or '<top level>'}: {exc}")
    validate = getattr(obj, "validate", None)
    if callable(validate):
        ctx.problems.extend(_join(prefix, p) for p in validate() or [])
    return obj


def _unknown_key(key: str, prefix: str, known: list[str], ctx: _Ctx) -> str:
    path = _join(prefix, key)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{path}: unknown key. Did you mean {_join(prefix, close[0])}?"
    # A key put in the wrong section (`temperature:` at the top level) is a common slip: look through the whole tree.
    near = set(difflib.get_close_matches(key, {p.rsplit(".", 1)[-1] for p in ctx.paths}, n=3))
    elsewhere = [p for p in ctx.paths if p.rsplit(".", 1)[-1] in near]
    if elsewhere:
        return f"{path}: unknown key. Did you mean {' or '.join(elsewhere[:3])}?"
    where = prefix or "the top level"
    return f"{path}: unknown key. Known keys in {where}: {', '.join(known) or '(none)'}"


def _convert(tp: Any, value: Any, path: str, ctx: _Ctx, example: Any = dataclasses.MISSING) -> Any:
    """Return ``value`` converted to ``tp`` (tuple, float, nested dataclass) or _FAIL after recording why."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if tp is type(None):
        return None if value is None else _wrong(tp, value, path, ctx, example)
    if _is_union(tp):
        return _convert_union(tp, args, value, path, ctx, example)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        allowed = ", ".join(_fmt(a) for a in args)
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" Did you mean {close[0]!r}?" if close and isinstance(value, str) else ""
        return ctx.fail(
            f"{path}: must be one of {allowed}; got {_vdesc(value)}.{hint} Fix: set {path} to one of {allowed}"
        )
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            return ctx.fail(
                f"{path}: is a section ({tp.__name__}), got {_vdesc(value)}. "
                f"Fix: give {path} as a mapping of its keys, e.g. {_example_path(tp, path)}=..."
            )
        return _build(tp, value, path, ctx)
    if origin in (list, tuple) or tp in (list, tuple):
        return _convert_sequence(tp, origin or tp, args, value, path, ctx, example)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            return _wrong(tp, value, path, ctx, example)
        key_tp, val_tp = args if len(args) == 2 else (Any, Any)
        out, ok = {}, True
        for k, v in value.items():
            kc = _convert(key_tp, k, f"{path}[{k!r}]", ctx)
            vc = _convert(val_tp, v, f"{path}.{k}", ctx)
            ok = ok and kc is not _FAIL and vc is not _FAIL
            out[kc] = vc
        return out if ok else _FAIL
    return _convert_scalar(tp, value, path, ctx, example)


def _convert_union(tp: Any, args: tuple, value: Any, path: str, ctx: _Ctx, example: Any) -> Any:
    if value is None and type(None) in args:
        return None
    attempts = []
    for arm in (a for a in args if a is not type(None)):
        trial = _Ctx(paths=ctx.paths)
        converted = _convert(arm, value, path, trial)
        if converted is not _FAIL:
            ctx.problems.extend(trial.problems)  # validate() problems of a section arm still count
            return converted
        attempts.append((arm, trial))
    # When exactly one arm has the value's shape (a section, a list), its detailed problems say more than "expected X".
    shaped = [trial for arm, trial in attempts if _shape(arm) == _shape(value) != "scalar"]
    if len(shaped) == 1:
        ctx.problems.extend(shaped[0].problems)
        ctx.failures += shaped[0].failures
        return _FAIL
    return _wrong(tp, value, path, ctx, example)


def _convert_sequence(tp: Any, kind: type, args: tuple, value: Any, path: str, ctx: _Ctx, example: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        return _wrong(tp, value, path, ctx, example)
    if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            return ctx.fail(
                f"{path}: expected {len(args)} items ({_tname(tp)}), got {len(value)}. "
                f"Fix: set {path} to a list of exactly {len(args)} items"
            )
        item_types = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [_convert(t, v, f"{path}[{i}]", ctx) for i, (t, v) in enumerate(zip(item_types, value, strict=True))]
    if any(i is _FAIL for i in items):
        return _FAIL
    return tuple(items) if kind is tuple else items


def _convert_scalar(tp: Any, value: Any, path: str, ctx: _Ctx, example: Any) -> Any:
    if tp is bool:  # strict: 0/1 and "true" are almost always a mistake in a run config
        ok = type(value) is bool
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        ok = False
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is Path:
        return Path(value) if isinstance(value, (str, Path)) else _wrong(tp, value, path, ctx, example)
    elif isinstance(tp, type):
        ok = isinstance(value, tp)
    else:
        return value  # an annotation this loader does not understand: trust the dataclass
    return value if ok else _wrong(tp, value, path, ctx, example)


def _wrong(tp: Any, value: Any, path: str, ctx: _Ctx, example: Any) -> Any:
    eg = ""
    if example is not dataclasses.MISSING and example is not None and not dataclasses.is_dataclass(example):
        eg = f", e.g. {_fmt(to_dict(example))} (the default)"
    got = _vdesc(value)
    if isinstance(value, Mapping) and _shape(tp) == "scalar":
        got += " (a section where a single value belongs)"
    hint = ""
    if tp is str and isinstance(value, (bool, int, float)):
        hint = " (quote it: YAML reads yes/no/on/off as booleans and digits as numbers)"
    return ctx.fail(f"{path}: expected {_tname(tp)}, got {got}. Fix: set {path} to {_kind(tp)}{eg}{hint}")


# ---------------------------------------------------------------------------------------------------------------------
# Words for messages and --help


def _shape(x: Any) -> str:
    """'mapping', 'sequence' or 'scalar', for a value or for a type."""
    if isinstance(x, Mapping) or (isinstance(x, type) and dataclasses.is_dataclass(x)):
        return "mapping"
    if typing.get_origin(x) is dict or x is dict:
        return "mapping"
    if isinstance(x, (list, tuple)) or typing.get_origin(x) in (list, tuple) or x in (list, tuple):
        return "sequence"
    return "scalar"


def _tname(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if _is_union(tp):
        return " | ".join(_tname(a) for a in typing.get_args(tp))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "Literal[" + ", ".join(_fmt(a) for a in args) + "]"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _tname(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _kind(tp: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", Path: "a path string"}
    if tp in names:
        return names[tp]
    if _is_union(tp):
        return " or ".join(_kind(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(_fmt(a) for a in args)
    if origin in (list, tuple) or tp in (list, tuple):
        return f"a list of {_tname(args[0])} values" if args else "a list, e.g. [a, b]"
    if origin is dict or tp is dict:
        return f"a mapping of names to {_tname(args[1])} values" if len(args) == 2 else "a mapping"
    return f"a {_tname(tp)} value"


def _fmt(value: Any) -> str:
    """A value as the user would type it in YAML (so examples in messages can be pasted)."""
    try:
        text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=10**6).strip()
    except yaml.YAMLError:  # a default YAML cannot write (an Enum, say) must not break --help
        return repr(value)
    return text.removesuffix("\n...").removesuffix(" ...").strip()


def _vdesc(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        keys = ", ".join(map(str, list(value)[:5])) + (", ..." if len(value) > 5 else "")
        return f"a mapping with keys {keys}" if value else "an empty mapping"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _example_path(cls: type, prefix: str = "") -> str:
    first = next(iter(_fields(cls, prefix)), None)
    return first[2] if first else _join(prefix, "key")


def _describe(cls: type, prefix: str, lines: list[str], instance: Any, depth: int = 0) -> None:
    """``instance`` is the enclosing section's default, so a section default that differs from its class shows."""
    for f, tp, name in _fields(cls, prefix):
        doc = f.metadata.get("doc", "(undocumented)")
        value = getattr(instance, f.name) if isinstance(instance, cls) else _default(f)
        sub = _section_type(tp)
        if sub is not None:
            lines.append(f"{name}: section {_tname(tp)}" + (" = null" if value is None else ""))
            lines.append(f"    {doc}")
            if depth < 10:
                _describe(sub, name, lines, value, depth + 1)
            continue
        shown = "(required)" if value is dataclasses.MISSING else f"= {_fmt(to_dict(value))}"
        lines.append(f"{name}: {_tname(tp)} {shown}")
        lines.append(f"    {doc}")
