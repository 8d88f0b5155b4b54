"""Load and validate a card application profile (``applets/<name>/profile.toml``) into a :class:`Profile`.

:func:`load_profile` checks every table, key and cross-reference before any card is touched and reports the
first problem as a :class:`~cardkit.errors.ProfileError` naming the file, the line, the key and what is wrong;
:func:`find_profile` resolves a profile name ("ssc") or path. The data model is in :mod:`cardkit.profiles.model`,
which re-exports both functions.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cardkit.errors import ParseError, ProfileError, RecordError
from cardkit.profiles.codecs import make_codec
from cardkit.profiles.model import (
    _REF_NUMBER,
    _REF_SPECIFIC,
    ALGORITHMS,
    CHANNELS,
    COMPUTED,
    FILE_TYPES,
    KEY_USAGES,
    LCS,
    OPERATION_ACTIONS,
    RECORD_TYPES,
    FieldSpec,
    FileSpec,
    KeySpec,
    OperationSpec,
    PinSpec,
    PostIssuance,
    Profile,
)
from cardkit.profiles.validators import VALIDATORS

__all__ = ["find_profile", "load_profile"]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


class _Ctx:
    """Error context: the file, and line numbers for table paths like ``files[3].record[1]``.

    tomllib keeps no positions, so the text is scanned once: every table header ``[a.b]`` / array-of-tables
    header ``[[a.b]]`` gets its canonical path (``files[3]``, ``files[3].record[0]``, ``operations.x``) and
    its span of lines up to the next header; entries of inline arrays of tables (``fields = [ {..}, {..} ]``)
    are found as the lines starting with ``{`` after the key.
    """

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.spans: dict[str, tuple[int, int]] = {}
        counts: dict[str, int] = {}
        last_index: dict[str, int] = {}
        headers: list[tuple[int, str]] = []
        for i, line in enumerate(self.lines):
            m = _HEADER.match(line)
            if not m:
                continue
            parts = [p.strip().strip('"') for p in m.group(2).split(".")]
            canon: list[str] = []
            for k, part in enumerate(parts):
                dotted = ".".join(parts[: k + 1])
                if k == len(parts) - 1 and m.group(1) == "[[":
                    parent = ".".join(canon)
                    key = f"{parent}.{part}" if parent else part
                    counts[key] = counts.get(key, -1) + 1
                    last_index[dotted] = counts[key]
                    canon.append(f"{part}[{counts[key]}]")
                elif dotted in last_index:
                    canon.append(f"{part}[{last_index[dotted]}]")
                else:
                    canon.append(part)
            headers.append((i, ".".join(canon)))
        for n, (i, path) in enumerate(headers):
            end = headers[n + 1][0] if n + 1 < len(headers) else len(self.lines)
            self.spans.setdefault(path, (i, end))

    def _span(self, where: str) -> tuple[int, int] | None:
        if where in self.spans:
            return self.spans[where]
        m = re.fullmatch(r"(.+)\.([\w-]+)\[(\d+)\]", where)
        if m:  # an inline array of tables: the idx-th "{" line after "name =" in the parent's span
            parent = self._span(m.group(1))
            if parent is None:
                return None
            start, end = parent
            for i in range(start, end):
                if re.match(rf"\s*{re.escape(m.group(2))}\s*=", self.lines[i]):
                    count = -1
                    for j in range(i, end):
                        if self.lines[j].lstrip().startswith("{") or (j == i and "{" in self.lines[j]):
                            count += 1
                            if count == int(m.group(3)):
                                return j, j + 1
                    return i, i + 1
            return None
        if where == "profile" and "profile" not in self.spans:
            return (0, len(self.lines))
        # "files" -> the first "files[0]"
        first = self.spans.get(f"{where}[0]")
        return first

    def line_of(self, where: str, key: str | None = None) -> int | None:
        span = self._span(where)
        if span is None:
            return None
        start, end = span
        if key:
            for i in range(start, max(end, start + 1)):
                if re.match(rf"\s*{re.escape(key)}\s*=", self.lines[i]) or (
                        end - start == 1 and re.search(rf"\b{re.escape(key)}\s*=", self.lines[i])):
                    return i + 1
            for path, (i, _) in self.spans.items():  # a table named like the key ("[extras]")
                if path == key or path.startswith((f"{key}.", f"{key}[")):
                    return i + 1
        return start + 1

    def error(self, message: str, where: str, key: str | None = None) -> ProfileError:
        return ProfileError(message, file=self.path, line=self.line_of(where, key),
                            key=f"{where}.{key}" if key else where)


def _get(tbl: Mapping[str, Any], key: str, typ: type | tuple[type, ...], ctx: _Ctx, where: str,
         default: Any = ..., choices: Sequence[object] | None = None) -> Any:
    if key not in tbl:
        if default is ...:
            raise ctx.error(f"missing required key {key!r}", where, key)
        return default
    value = tbl[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
        tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ctx.error(f"{key!r} must be {tname}, got {type(value).__name__}", where, key)
    if choices is not None and value not in choices:
        raise ctx.error(f"{key!r} must be one of {', '.join(map(str, choices))}, got {value!r}", where, key)
    return value


def _table(doc: Mapping[str, Any], key: str, ctx: _Ctx, where: str, default: Any = ...) -> Any:
    return _get(doc, key, dict, ctx, where, default)


def _hex(text: str, n: int | tuple[int, int], ctx: _Ctx, where: str, key: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ctx.error(f"{key!r} must be hex, got {text!r}", where, key) from None
    lo, hi = (n, n) if isinstance(n, int) else n
    if not lo <= len(raw) <= hi:
        raise ctx.error(f"{key!r} must be {lo}..{hi} bytes, got {len(raw)}", where, key)
    return raw


def _known(tbl: Mapping[str, Any], allowed: set[str], ctx: _Ctx, where: str) -> None:
    for k in tbl:
        if k not in allowed:
            raise ctx.error(f"unknown key {k!r} (allowed: {', '.join(sorted(allowed))})", where, k)


def _str_list(tbl: Mapping[str, Any], key: str, ctx: _Ctx, where: str) -> tuple[str, ...]:
    items = _get(tbl, key, list, ctx, where, [])
    for item in items:
        if not isinstance(item, str):
            raise ctx.error(f"{key!r} must be a list of strings, got an item of type {type(item).__name__}",
                            where, key)
    return tuple(items)


def _field(tbl: Mapping[str, Any], ctx: _Ctx, where: str, base: Path, number: int | None) -> FieldSpec:
    if not isinstance(tbl, dict):
        raise ctx.error(f"must be a table, got {type(tbl).__name__}", where)
    name = _get(tbl, "field", str, ctx, where)
    spec = _get(tbl, "codec", dict, ctx, where)
    try:
        codec = make_codec(spec, where=f"{where}.codec", base_dir=base)
    except ProfileError as exc:
        raise ctx.error(str(exc), where, "codec") from None
    validators = _str_list(tbl, "validators", ctx, where)
    for v in validators:
        if v not in VALIDATORS:
            raise ctx.error(f"unknown validator {v!r} (known: {', '.join(sorted(VALIDATORS))})", where,
                            "validators")
    computed = _get(tbl, "computed", str, ctx, where, None, COMPUTED)
    default = _get(tbl, "default", str, ctx, where, None)
    if default is not None:
        try:
            codec.encode(default, field=name)
        except (RecordError, ProfileError) as exc:
            raise ctx.error(f"default does not fit the codec: {exc}", where, "default") from None
    return FieldSpec(name, codec, validators, bool(_get(tbl, "optional", bool, ctx, where, False)), default,
                     computed, number)


def _rules(tbl: Mapping[str, Any], ctx: _Ctx, where: str, is_df: bool) -> dict[str, str]:
    from cardkit.acl import DF_OPS, EF_OPS, parse_rule

    rules = _get(tbl, "rules", dict, ctx, where, {})
    ops = sorted(str(o) for o in (DF_OPS if is_df else EF_OPS))
    # Life-cycle operations default to the issuer (the personalization ends by activating every file);
    # every other operation not named is denied by the card.
    out: dict[str, str] = {op: "issuer" for op in ("activate", "deactivate", "terminate")}
    for op, text in rules.items():
        if op not in ops:
            raise ctx.error(f"operation {op!r} does not apply to a {'DF' if is_df else 'EF'} "
                            f"(use: {', '.join(ops)})", where, "rules")
        if not isinstance(text, str):
            raise ctx.error(f"rule for {op!r} must be a string", where, "rules")
        try:
            out[op] = parse_rule(text).text
        except ParseError as exc:  # the rule parser's AclError, re-located
            raise ctx.error(f"rule for {op!r}: {exc}", where, "rules") from None
    return out


def _ref(tbl: Mapping[str, Any], ctx: _Ctx, where: str, what: str) -> int:
    """The reference number from ``ref`` (0..31, or 0x80|n for an object of a DF other than the MF)."""
    ref = _get(tbl, "ref", int, ctx, where)
    df = tbl.get("df")
    if not 0 <= ref <= 0xFF or ref & 0x60:
        raise ctx.error(f"{what} 'ref' must be a reference number 0..31, or 0x80|number for an object of a DF "
                        f"(ISO 7816-4 §7.5.1: P2 b7-b6 are 0), got {ref:#04x}", where, "ref")
    if ref & _REF_SPECIFIC and df == "MF":
        raise ctx.error(f"{what} 'ref' {ref:#04x} marks a DF-specific object (b8 = 1) but it is placed in the MF",
                        where, "ref")
    return int(ref) & _REF_NUMBER


def _load_keys(doc: Mapping[str, Any], ctx: _Ctx) -> list[KeySpec]:
    keys: list[KeySpec] = []
    for i, k in enumerate(_get(doc, "keys", list, ctx, "keys", [])):
        w = f"keys[{i}]"
        _known(k, {"name", "df", "ref", "usage", "master", "diversify", "max_tries"}, ctx, w)
        tries = _get(k, "max_tries", int, ctx, w, 10)
        if not 1 <= tries <= 15:
            raise ctx.error("'max_tries' must be 1..15 (the 63Cx counter is one nibble)", w, "max_tries")
        spec = KeySpec(_get(k, "name", str, ctx, w), _get(k, "df", str, ctx, w), _ref(k, ctx, w, "key"),
                       _get(k, "usage", str, ctx, w, choices=KEY_USAGES), _get(k, "master", str, ctx, w),
                       _str_list(k, "diversify", ctx, w), tries)
        for other in keys:
            if other.name == spec.name:
                raise ctx.error(f"duplicate key name {spec.name!r}", w, "name")
            if (other.df, other.ref) == (spec.df, spec.ref):
                raise ctx.error(f"key {spec.name!r} has the reference of key {other.name!r} in {spec.df}", w, "ref")
        keys.append(spec)
    return keys


def _load_pins(doc: Mapping[str, Any], ctx: _Ctx) -> list[PinSpec]:
    pins: list[PinSpec] = []
    for i, t in enumerate(_get(doc, "pins", list, ctx, "pins", [])):
        w = f"pins[{i}]"
        _known(t, {"name", "df", "ref", "max_tries", "min_length", "max_length", "initial", "kind", "unblocks"},
               ctx, w)
        initial = _get(t, "initial", str, ctx, w)
        if not (initial == "generate" or initial.startswith(("field:", "fixed:"))):
            raise ctx.error("'initial' must be 'generate', 'field:NAME' or 'fixed:DIGITS'", w, "initial")
        mn, mx = _get(t, "min_length", int, ctx, w, 4), _get(t, "max_length", int, ctx, w, 8)
        if not 4 <= mn <= mx <= 16:
            # The card OS stores reference data of 4..16 bytes (cardkit.virtual.security PIN_MIN/PIN_MAX).
            raise ctx.error("PIN lengths must satisfy 4 <= min_length <= max_length <= 16", w,
                            "min_length" if not 4 <= mn <= 16 else "max_length")
        if initial.startswith("fixed:"):
            digits = initial[6:]
            if not (digits.isdigit() and mn <= len(digits) <= mx):
                raise ctx.error(f"'fixed:' needs {mn}..{mx} digits", w, "initial")
        tries = _get(t, "max_tries", int, ctx, w)
        if not 1 <= tries <= 15:
            raise ctx.error("'max_tries' must be 1..15 (the 63Cx counter is one nibble)", w, "max_tries")
        kind = _get(t, "kind", str, ctx, w, "pin", ("pin", "puk"))
        spec = PinSpec(_get(t, "name", str, ctx, w), _get(t, "df", str, ctx, w), _ref(t, ctx, w, "PIN"),
                       tries, mn, mx, initial, kind, _get(t, "unblocks", str, ctx, w, None))
        if kind == "puk" and spec.unblocks is None:
            raise ctx.error("a PUK needs 'unblocks = \"PIN NAME\"'", w, "kind")
        for other in pins:
            if other.name == spec.name:
                raise ctx.error(f"duplicate PIN name {spec.name!r}", w, "name")
            if (other.df, other.ref, other.kind) == (spec.df, spec.ref, spec.kind):
                raise ctx.error(f"{kind.upper()} {spec.name!r} has the reference of {other.name!r} in {spec.df}",
                                w, "ref")
        pins.append(spec)
    return pins


def _load_files(doc: Mapping[str, Any], ctx: _Ctx, base: Path) -> list[FileSpec]:
    files: list[FileSpec] = []
    paths: set[str] = set()
    for i, f in enumerate(_get(doc, "files", list, ctx, "files")):
        w = f"files[{i}]"
        _known(f, {"path", "type", "fid", "name", "sfi", "size", "record_size", "records", "rules", "optional",
                   "field", "codec", "validators", "record"}, ctx, w)
        path_ = _get(f, "path", str, ctx, w)
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", path_) or path_.split("/")[0] == "MF":
            raise ctx.error(f"path {path_!r} must be names separated by '/', below the MF (no 'MF/' prefix)",
                            w, "path")
        if path_ in paths:
            raise ctx.error(f"duplicate file path {path_!r}", w, "path")
        parent = path_.rsplit("/", 1)[0] if "/" in path_ else None
        if parent is not None and parent not in paths:
            raise ctx.error(f"parent {parent!r} must be declared before {path_!r}", w, "path")
        if parent is not None and next(x for x in files if x.path == parent).type != "df":
            raise ctx.error(f"parent {parent!r} of {path_!r} is not a DF", w, "path")
        ftype = _get(f, "type", str, ctx, w, choices=FILE_TYPES)
        fid = _hex(_get(f, "fid", str, ctx, w), 2, ctx, w, "fid")
        if fid in (b"\x3f\x00", b"\x3f\xff", b"\xff\xff"):
            raise ctx.error("FID 3F00, 3FFF and FFFF are reserved (ISO 7816-4 §7.1.1)", w, "fid")
        for sib in files:
            if sib.parent == (parent or "MF") and sib.fid == fid:
                raise ctx.error(f"FID {fid.hex().upper()} is already used by {sib.path!r} in the same DF", w, "fid")
        name = _get(f, "name", str, ctx, w, None)
        if name is not None and ftype != "df":
            raise ctx.error("only a DF has a DF name ('name')", w, "name")
        sfi = _get(f, "sfi", int, ctx, w, None)
        if sfi is not None and not 1 <= sfi <= 30:
            raise ctx.error("'sfi' must be 1..30 (ISO 7816-4 §7.2.2)", w, "sfi")
        if sfi is not None and ftype == "df":
            raise ctx.error("a DF has no short EF identifier ('sfi')", w, "sfi")
        for sib in files:
            if sfi is not None and sib.parent == (parent or "MF") and sib.sfi == sfi:
                raise ctx.error(f"SFI {sfi} is already used by {sib.path!r} in the same DF", w, "sfi")
        fields: list[FieldSpec] = []
        if ftype in RECORD_TYPES:
            rs = _get(f, "record_size", int, ctx, w)
            rc = _get(f, "records", int, ctx, w)
            if not 1 <= rs <= 255:
                raise ctx.error(f"record_size must be 1..255, got {rs}", w, "record_size")
            if not 1 <= rc <= 254:
                raise ctx.error(f"records must be 1..254, got {rc}", w, "records")
            numbers: set[int] = set()
            for j, r in enumerate(_records_of(f)):
                rw = f"{w}.record[{j}]"
                _known(r, {"number", "field", "codec", "validators", "optional", "default", "computed"}, ctx, rw)
                num = _get(r, "number", int, ctx, rw)
                if not 1 <= num <= 254 or num in numbers:
                    raise ctx.error(f"record number {num} is out of range 1..254 or repeated", rw, "number")
                numbers.add(num)
                fs = _field(r, ctx, rw, base, num)
                mb = fs.codec.max_bytes
                if mb is not None and mb + 2 > rs:
                    raise ctx.error(f"record {num} needs {mb + 2} bytes (tag, length, value) but record_size is "
                                    f"{rs}", rw, "codec")
                fields.append(fs)
            if len(fields) > rc:
                raise ctx.error(f"{len(fields)} records mapped but the file has only {rc}", w, "records")
        elif ftype == "transparent":
            size = _get(f, "size", int, ctx, w)
            if not 1 <= size <= 32767:
                raise ctx.error("'size' must be 1..32767 (15-bit offsets, ISO 7816-4 §11.2)", w, "size")
            if ("field" in f) != ("codec" in f):
                raise ctx.error("a transparent file maps a record field with both 'field' and 'codec'", w,
                                "field" if "field" in f else "codec")
            if "field" in f:
                fs = _field(f, ctx, w, base, None)
                mb = fs.codec.max_bytes
                if mb is not None and mb > size:
                    raise ctx.error(f"field {fs.field!r} can take {mb} bytes but the file has {size}", w, "codec")
                fields.append(fs)
        else:
            for key in ("size", "record_size", "records", "field", "codec", "record"):
                if key in f:
                    raise ctx.error(f"a DF takes no {key!r}", w, key)
        if ftype != "transparent" and ("field" in f or "codec" in f) and ftype != "df":
            raise ctx.error("record files map fields with [[files.record]] tables", w, "field")
        files.append(FileSpec(
            path_, ftype, fid, _hex(name, (1, 16), ctx, w, "name") if name else None, sfi, f.get("size"),
            f.get("record_size"), f.get("records") if isinstance(f.get("records"), int) else None,
            _rules(f, ctx, w, ftype == "df"), tuple(fields), bool(_get(f, "optional", bool, ctx, w, False))))
        paths.add(path_)
    names = [fs.name for fs in files if fs.name]
    if len(names) != len(set(names)):
        raise ctx.error("two DFs have the same DF name (names are unique on a card, ISO 7816-4 §7.1.1)", "files")
    return files


def _load_operations(doc: Mapping[str, Any], ctx: _Ctx, base: Path, files: list[FileSpec], keys: list[KeySpec],
                     pins: list[PinSpec]) -> dict[str, OperationSpec]:
    operations: dict[str, OperationSpec] = {}
    by_path = {fs.path: fs for fs in files}
    for opname, o in _table(doc, "operations", ctx, "operations", {}).items():
        w = f"operations.{opname}"
        if not isinstance(o, dict):
            raise ctx.error("an operation is a table [operations.NAME]", w)
        _known(o, {"description", "file", "action", "needs", "fields"}, ctx, w)
        target = _get(o, "file", str, ctx, w)
        if target not in by_path:
            raise ctx.error(f"operation targets unknown file {target!r}", w, "file")
        action = _get(o, "action", str, ctx, w, choices=OPERATION_ACTIONS)
        fs = by_path[target]
        if not fs.is_record:
            raise ctx.error(f"operation action {action!r} needs a record file; {target!r} is {fs.type}", w, "file")
        needs = _str_list(o, "needs", ctx, w)
        sm_keys = []
        for n in needs:
            key = next((k for k in keys if k.name == n), None)
            if key is None and n not in {p.name for p in pins}:
                raise ctx.error(f"operation needs unknown key/PIN {n!r}", w, "needs")
            if key is not None:
                if key.usage != "sm":
                    raise ctx.error(f"operation needs key {n!r} of usage {key.usage!r}; only 'sm' keys open "
                                    "a channel here", w, "needs")
                sm_keys.append(n)
        if len(sm_keys) > 1:
            raise ctx.error("an operation opens at most one secure channel (one 'sm' key in needs)", w, "needs")
        ofields = tuple(_field(x, ctx, f"{w}.fields[{j}]", base, j + 1)
                        for j, x in enumerate(_get(o, "fields", list, ctx, w, [])))
        if not ofields:
            raise ctx.error("an operation writes at least one field", w, "fields")
        total = sum((f.codec.max_bytes or 255) + 2 for f in ofields)
        if fs.record_size is not None and total > fs.record_size:
            raise ctx.error(f"the fields take up to {total} bytes (SIMPLE-TLV) but records of {target!r} are "
                            f"{fs.record_size} bytes", w, "fields")
        operations[opname] = OperationSpec(opname, _get(o, "description", str, ctx, w, ""), target, action, needs,
                                           ofields)
    return operations


def load_profile(path: str | Path, *, algorithm: str | None = None) -> Profile:
    """Load and validate a profile TOML file (or a folder holding ``profile.toml``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "profile.toml"
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ProfileError("profile is not UTF-8 text", file=str(p)) from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile: {exc.strerror}", file=str(p)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ProfileError(f"not valid TOML: {exc}", file=str(p), line=int(m.group(1)) if m else None) from None
    ctx = _Ctx(str(p), text)
    base = p.parent
    _known(doc, {"profile", "personalization", "keys", "pins", "files", "operations", "post_issuance"}, ctx,
           "profile")
    head = _table(doc, "profile", ctx, "profile")
    _known(head, {"name", "title", "format", "algorithm", "algorithms", "identity_field", "unique_fields",
                  "content"}, ctx, "profile")
    fmt = _get(head, "format", int, ctx, "profile")
    if fmt != 1:
        raise ctx.error(f"profile format {fmt} is not supported (this cardkit reads format 1)", "profile", "format")
    algorithms = _str_list(head, "algorithms", ctx, "profile") or (str(head.get("algorithm", "aes")),)
    for a in algorithms:
        if a not in ALGORITHMS:
            raise ctx.error(f"unknown algorithm {a!r} (known: {', '.join(ALGORITHMS)})", "profile", "algorithms")
    alg = _get(head, "algorithm", str, ctx, "profile", algorithms[0], algorithms)
    perso = _table(doc, "personalization", ctx, "personalization", {})
    _known(perso, {"channel", "transport_key", "final_lcs", "rotate_transport_key", "options"}, ctx,
           "personalization")

    keys = _load_keys(doc, ctx)
    pins = _load_pins(doc, ctx)
    files = _load_files(doc, ctx, base)
    dfs = {fs.path for fs in files if fs.is_df} | {"MF"}
    for i, k in enumerate(keys):
        if k.df not in dfs:
            raise ctx.error(f"key {k.name!r} is placed in unknown DF {k.df!r}", f"keys[{i}]", "df")
    for i, pn in enumerate(pins):
        if pn.df not in dfs:
            raise ctx.error(f"PIN {pn.name!r} is placed in unknown DF {pn.df!r}", f"pins[{i}]", "df")
        if pn.unblocks is not None:
            target = next((x for x in pins if x.name == pn.unblocks), None)
            if target is None:
                raise ctx.error(f"PUK {pn.name!r} unblocks unknown PIN {pn.unblocks!r}", f"pins[{i}]", "unblocks")
            if (target.df, target.ref) != (pn.df, pn.ref):
                # The card finds the PUK with the PIN's number in the PIN's DF (cardkit.virtual.security).
                raise ctx.error(f"PUK {pn.name!r} must sit in the DF of PIN {target.name!r} ({target.df}) with its "
                                f"reference number ({target.ref})", f"pins[{i}]", "ref")
    all_fields = [f.field for fs in files for f in fs.fields]
    dup = {x for x in all_fields if all_fields.count(x) > 1}
    if dup:
        raise ctx.error(f"field(s) mapped twice: {', '.join(sorted(dup))}", "files")
    operations = _load_operations(doc, ctx, base, files, keys, pins)

    post = _table(doc, "post_issuance", ctx, "post_issuance", {})
    _known(post, {"sm_key", "block"}, ctx, "post_issuance")
    sm_key = _get(post, "sm_key", str, ctx, "post_issuance", None)
    if sm_key is not None and not any(k.name == sm_key and k.usage == "sm" for k in keys):
        raise ctx.error(f"sm_key {sm_key!r} is not a key of usage 'sm' in [[keys]]", "post_issuance", "sm_key")
    block = _get(post, "block", str, ctx, "post_issuance", None)
    if block is not None and block not in dfs - {"MF"}:
        raise ctx.error(f"block {block!r} is not a DF of the profile", "post_issuance", "block")

    content_name = _get(head, "content", str, ctx, "profile", None)
    if content_name is not None:
        from cardkit.issuance.hooks import content_fields

        try:
            all_fields = all_fields + list(content_fields(content_name))
        except ProfileError as exc:
            raise ctx.error(str(exc), "profile", "content") from None
    identity = _get(head, "identity_field", str, ctx, "profile", all_fields[0] if all_fields else "")
    if identity and identity not in all_fields:
        raise ctx.error(f"identity_field {identity!r} is not a mapped field", "profile", "identity_field")
    unique = _str_list(head, "unique_fields", ctx, "profile") or ((identity,) if identity else ())
    for u in unique:
        if u not in all_fields:
            raise ctx.error(f"unique field {u!r} is not a mapped field", "profile", "unique_fields")
    channel = _get(perso, "channel", str, ctx, "personalization", "iso-sm", CHANNELS)
    rotate = _get(perso, "rotate_transport_key", str, ctx, "personalization", None)
    if rotate is not None and channel == "iso-sm":
        mf0 = next((k for k in keys if k.df == "MF" and k.ref == 0), None)
        if mf0 is None or rotate not in (mf0.name, mf0.master):
            raise ctx.error("rotate_transport_key must name the MF key with ref 0 (or its master) of [[keys]]: "
                            "that key replaces the transport key", "personalization", "rotate_transport_key")
        if mf0.usage != "sm":
            raise ctx.error(f"the issuer key {mf0.name!r} (MF ref 0) must have usage 'sm'", "personalization",
                            "rotate_transport_key")
    profile = Profile(
        name=_get(head, "name", str, ctx, "profile"),
        title=_get(head, "title", str, ctx, "profile", ""),
        algorithm=alg, algorithms=algorithms, identity_field=identity, unique_fields=unique,
        channel=channel,
        transport_key=_get(perso, "transport_key", str, ctx, "personalization", ""),
        final_lcs=_get(perso, "final_lcs", str, ctx, "personalization", "operational", LCS),
        rotate_transport_key=rotate,
        keys=tuple(keys), pins=tuple(pins), files=tuple(files), operations=operations, source=str(p),
        content=_get(head, "content", str, ctx, "profile", None),
        options=dict(_get(perso, "options", dict, ctx, "personalization", {})),
        post_issuance=PostIssuance(sm_key, block),
    )
    if channel != "none" and not profile.transport_key:
        raise ctx.error(f"channel {channel!r} needs 'transport_key'", "personalization", "transport_key")
    return profile.with_algorithm(algorithm) if algorithm else profile


def _records_of(f: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # "records" is the record count; the record mapping is the array of tables [[files.record]].
    recs = f.get("record", [])
    return list(recs) if isinstance(recs, list) else []


def find_profile(name: str, search: Sequence[Path] = ()) -> Path:
    """Resolve a profile name ("ssc") or path to its profile.toml."""
    p = Path(name)
    if p.exists():
        return p / "profile.toml" if p.is_dir() else p
    roots = [*search, Path.cwd() / "applets", Path(__file__).resolve().parents[2] / "applets"]
    for root in roots:
        cand = root / name / "profile.toml"
        if cand.exists():
            return cand
    raise ProfileError(f"no profile {name!r} (looked for applets/{name}/profile.toml)")
