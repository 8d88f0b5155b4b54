"""Card application profiles: declarative data loaded from ``applets/<name>/profile.toml``.

A profile says what a personalized card holds: the DF/EF tree with access rules, the keys and PINs with
where their values come from, the secure channel to personalize under, and the mapping from record fields
to files and records through typed codecs and validators. :func:`load_profile` validates all of it with
precise errors (file, line, key, what is wrong) before any card is touched.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cardkit.errors import ParseError, ProfileError, RecordError
from cardkit.profiles.codecs import Codec, make_codec
from cardkit.profiles.validators import VALIDATORS

__all__ = [
    "FILE_TYPES", "FieldSpec", "FileSpec", "KeySpec", "OperationSpec", "PinSpec", "Profile", "find_profile",
    "load_profile",
]

#: File structures (ISO 7816-4:2020 §7.3.2) and "df".
FILE_TYPES = ("df", "transparent", "linear-fixed", "linear-variable", "cyclic")
CHANNELS = ("iso-sm", "scp03", "scp02", "none")
ALGORITHMS = ("sm4", "3des", "aes")
KEY_USAGES = ("sm", "external-auth")
LCS = ("creation", "initialization", "operational")
COMPUTED = ("ssc-card-id",)


@dataclass(frozen=True)
class FieldSpec:
    """One record field mapped to card bytes."""

    field: str
    codec: Codec
    validators: tuple[str, ...] = ()
    optional: bool = False
    default: str | None = None
    computed: str | None = None
    #: SIMPLE-TLV record number (= tag) for record files; None for transparent files and operations.
    number: int | None = None


@dataclass(frozen=True)
class FileSpec:
    path: str
    type: str
    fid: bytes
    name: bytes | None = None
    sfi: int | None = None
    size: int | None = None
    record_size: int | None = None
    records: int | None = None
    rules: Mapping[str, str] = field(default_factory=dict)
    fields: tuple[FieldSpec, ...] = ()
    optional: bool = False

    @property
    def is_df(self) -> bool:
        return self.type == "df"

    @property
    def parent(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else "MF"

    @property
    def depth(self) -> int:
        return self.path.count("/") + 1


@dataclass(frozen=True)
class KeySpec:
    name: str
    df: str
    ref: int
    usage: str
    master: str
    diversify: tuple[str, ...] = ()
    max_tries: int = 10


@dataclass(frozen=True)
class PinSpec:
    name: str
    df: str
    ref: int
    max_tries: int
    min_length: int
    max_length: int
    initial: str
    kind: str = "pin"
    unblocks: str | None = None


@dataclass(frozen=True)
class OperationSpec:
    name: str
    description: str
    file: str
    action: str
    needs: tuple[str, ...]
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    algorithm: str
    algorithms: tuple[str, ...]
    identity_field: str
    unique_fields: tuple[str, ...]
    channel: str
    transport_key: str
    final_lcs: str
    rotate_transport_key: str | None
    keys: tuple[KeySpec, ...]
    pins: tuple[PinSpec, ...]
    files: tuple[FileSpec, ...]
    operations: Mapping[str, OperationSpec]
    source: str = ""
    #: Name of a content hook computing file contents from the whole record (cardkit.issuance.hooks).
    content: str | None = None
    #: Free-form options for hooks and channel handlers ([personalization] table keys not known here).
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def record_fields(self) -> tuple[FieldSpec, ...]:
        """Every field a record supplies (computed fields excluded), in file order."""
        return tuple(f for fs in self.files for f in fs.fields if f.computed is None)

    def file(self, path: str) -> FileSpec:
        for fs in self.files:
            if fs.path == path:
                return fs
        raise ProfileError(f"no file {path!r} in profile {self.name!r}")

    def key(self, name: str) -> KeySpec:
        for k in self.keys:
            if k.name == name:
                return k
        raise ProfileError(f"no key {name!r} in profile {self.name!r}")

    def pin(self, name: str) -> PinSpec:
        for p in self.pins:
            if p.name == name:
                return p
        raise ProfileError(f"no PIN {name!r} in profile {self.name!r}")

    def with_algorithm(self, algorithm: str) -> Profile:
        if algorithm not in self.algorithms:
            raise ProfileError(f"profile {self.name!r} offers algorithms {', '.join(self.algorithms)}, "
                               f"not {algorithm!r}")
        return replace(self, algorithm=algorithm)


# ------------------------------------------------------------------------------------------- loading
class _Ctx:
    """Error context: the file and a best-effort line number for a table path like files[3].records[1]."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, where: str, key: str | None = None) -> int | None:
        # where: "files[3].records[1]" / "keys[0]" / "profile" / "operations.bind-family"
        start = 0
        for part in where.split("."):
            m = re.fullmatch(r"([\w-]+)\[(\d+)\]", part)
            if m:
                name, idx = m.group(1), int(m.group(2))
                prefix = where[: where.index(part)] + name
                header = "[[" + prefix.replace("]", "").split("[")[0] + "]]"
                header = "[[" + ".".join(re.sub(r"\[\d+\]", "", p) for p in prefix.split(".")) + "]]"
                count = -1
                for i in range(start, len(self.lines)):
                    if self.lines[i].strip() == header:
                        count += 1
                        if count == idx:
                            start = i
                            break
                else:
                    return None
            else:
                for i in range(start, len(self.lines)):
                    if self.lines[i].strip() in (f"[{part}]", f"[{where}]") or self.lines[i].startswith(part):
                        start = i
                        break
        if key:
            for i in range(start, min(start + 60, len(self.lines))):
                if re.match(rf"\s*{re.escape(key)}\s*=", self.lines[i]):
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


def _field(tbl: Mapping[str, Any], ctx: _Ctx, where: str, base: Path, number: int | None) -> FieldSpec:
    name = _get(tbl, "field", str, ctx, where)
    spec = _get(tbl, "codec", dict, ctx, where)
    try:
        codec = make_codec(spec, where=f"{where}.codec", base_dir=base)
    except ProfileError as exc:
        raise ctx.error(str(exc), where, "codec") from None
    validators = tuple(_get(tbl, "validators", list, ctx, where, []))
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


def load_profile(path: str | Path, *, algorithm: str | None = None) -> Profile:
    """Load and validate a profile TOML file (or a folder holding ``profile.toml``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "profile.toml"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile: {exc.strerror}", file=str(p)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ProfileError(f"not valid TOML: {exc}", file=str(p), line=int(m.group(1)) if m else None) from None
    ctx = _Ctx(str(p), text)
    base = p.parent
    _known(doc, {"profile", "personalization", "keys", "pins", "files", "operations"}, ctx, "profile")
    head = _get(doc, "profile", dict, ctx, "profile")
    _known(head, {"name", "title", "format", "algorithm", "algorithms", "identity_field", "unique_fields",
                  "content"}, ctx, "profile")
    fmt = _get(head, "format", int, ctx, "profile")
    if fmt != 1:
        raise ctx.error(f"profile format {fmt} is not supported (this cardkit reads format 1)", "profile", "format")
    algorithms = tuple(_get(head, "algorithms", list, ctx, "profile", [head.get("algorithm", "aes")]))
    for a in algorithms:
        if a not in ALGORITHMS:
            raise ctx.error(f"unknown algorithm {a!r} (known: {', '.join(ALGORITHMS)})", "profile", "algorithms")
    alg = _get(head, "algorithm", str, ctx, "profile", algorithms[0], algorithms)
    perso = _get(doc, "personalization", dict, ctx, "personalization", {})
    _known(perso, {"channel", "transport_key", "final_lcs", "rotate_transport_key", "options"}, ctx,
           "personalization")

    keys: list[KeySpec] = []
    for i, k in enumerate(_get(doc, "keys", list, ctx, "keys", [])):
        w = f"keys[{i}]"
        _known(k, {"name", "df", "ref", "usage", "master", "diversify", "max_tries"}, ctx, w)
        ref = _get(k, "ref", int, ctx, w)
        if not 0 <= ref <= 0x7F:
            raise ctx.error("key 'ref' must be 0..127", w, "ref")
        keys.append(KeySpec(_get(k, "name", str, ctx, w), _get(k, "df", str, ctx, w), ref,
                            _get(k, "usage", str, ctx, w, choices=KEY_USAGES), _get(k, "master", str, ctx, w),
                            tuple(_get(k, "diversify", list, ctx, w, [])), _get(k, "max_tries", int, ctx, w, 10)))
    pins: list[PinSpec] = []
    for i, t in enumerate(_get(doc, "pins", list, ctx, "pins", [])):
        w = f"pins[{i}]"
        _known(t, {"name", "df", "ref", "max_tries", "min_length", "max_length", "initial", "kind", "unblocks"},
               ctx, w)
        initial = _get(t, "initial", str, ctx, w)
        if not (initial == "generate" or initial.startswith(("field:", "fixed:"))):
            raise ctx.error("'initial' must be 'generate', 'field:NAME' or 'fixed:DIGITS'", w, "initial")
        mn, mx = _get(t, "min_length", int, ctx, w, 4), _get(t, "max_length", int, ctx, w, 8)
        if not 2 <= mn <= mx <= 16:
            raise ctx.error("PIN lengths must satisfy 2 <= min_length <= max_length <= 16", w, "max_length")
        tries = _get(t, "max_tries", int, ctx, w)
        if not 1 <= tries <= 15:
            raise ctx.error("'max_tries' must be 1..15 (the 63Cx counter is one nibble)", w, "max_tries")
        pins.append(PinSpec(_get(t, "name", str, ctx, w), _get(t, "df", str, ctx, w), _get(t, "ref", int, ctx, w),
                            tries, mn, mx, initial, _get(t, "kind", str, ctx, w, "pin", ("pin", "puk")),
                            _get(t, "unblocks", str, ctx, w, None)))

    files: list[FileSpec] = []
    paths: set[str] = set()
    for i, f in enumerate(_get(doc, "files", list, ctx, "files")):
        w = f"files[{i}]"
        _known(f, {"path", "type", "fid", "name", "sfi", "size", "record_size", "records", "rules", "optional",
                   "field", "codec", "validators", "record"}, ctx, w)
        path_ = _get(f, "path", str, ctx, w)
        if path_ in paths:
            raise ctx.error(f"duplicate file path {path_!r}", w, "path")
        parent = path_.rsplit("/", 1)[0] if "/" in path_ else None
        if parent is not None and parent not in paths:
            raise ctx.error(f"parent {parent!r} must be declared before {path_!r}", w, "path")
        ftype = _get(f, "type", str, ctx, w, choices=FILE_TYPES)
        fid = _hex(_get(f, "fid", str, ctx, w), 2, ctx, w, "fid")
        if fid in (b"\x3f\x00", b"\x3f\xff", b"\xff\xff"):
            raise ctx.error("FID 3F00, 3FFF and FFFF are reserved (ISO 7816-4 §7.1.1)", w, "fid")
        name = _get(f, "name", str, ctx, w, None)
        sfi = _get(f, "sfi", int, ctx, w, None)
        if sfi is not None and not 1 <= sfi <= 30:
            raise ctx.error("'sfi' must be 1..30 (ISO 7816-4 §7.2.2)", w, "sfi")
        fields: list[FieldSpec] = []
        if ftype in ("linear-fixed", "linear-variable", "cyclic"):
            rs = _get(f, "record_size", int, ctx, w)
            rc = _get(f, "records", int, ctx, w)
            if not 1 <= rs <= 255 or not 1 <= rc <= 254:
                raise ctx.error("record_size must be 1..255 and records 1..254", w, "record_size")
            numbers = set()
            for j, r in enumerate(_records_of(f)):
                rw = f"{w}.records[{j}]"
                _known(r, {"number", "field", "codec", "validators", "optional", "default", "computed"}, ctx, rw)
                num = _get(r, "number", int, ctx, rw)
                if not 1 <= num <= 254 or num in numbers:
                    raise ctx.error(f"record number {num} is out of range or repeated", rw, "number")
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
                raise ctx.error("'size' must be 1..32767", w, "size")
            if "field" in f and "codec" in f:
                fs = _field(f, ctx, w, base, None)
                mb = fs.codec.max_bytes
                if mb is not None and mb > size:
                    raise ctx.error(f"field {fs.field!r} can take {mb} bytes but the file has {size}", w, "codec")
                fields.append(fs)
        files.append(FileSpec(
            path_, ftype, fid, _hex(name, (1, 16), ctx, w, "name") if name else None, sfi, f.get("size"),
            f.get("record_size"), f.get("records") if isinstance(f.get("records"), int) else None,
            _rules(f, ctx, w, ftype == "df"), tuple(fields), bool(_get(f, "optional", bool, ctx, w, False))))
        paths.add(path_)

    dfs = {fs.path for fs in files if fs.is_df} | {"MF"}
    for i, k in enumerate(keys):
        if k.df not in dfs:
            raise ctx.error(f"key {k.name!r} is placed in unknown DF {k.df!r}", f"keys[{i}]", "df")
    for i, pn in enumerate(pins):
        if pn.df not in dfs:
            raise ctx.error(f"PIN {pn.name!r} is placed in unknown DF {pn.df!r}", f"pins[{i}]", "df")
        if pn.unblocks is not None and pn.unblocks not in {x.name for x in pins}:
            raise ctx.error(f"PUK {pn.name!r} unblocks unknown PIN {pn.unblocks!r}", f"pins[{i}]", "unblocks")
    all_fields = [f.field for fs in files for f in fs.fields]
    dup = {x for x in all_fields if all_fields.count(x) > 1}
    if dup:
        raise ctx.error(f"field(s) mapped twice: {', '.join(sorted(dup))}", "files")

    operations: dict[str, OperationSpec] = {}
    for opname, o in _get(doc, "operations", dict, ctx, "operations", {}).items():
        w = f"operations.{opname}"
        _known(o, {"description", "file", "action", "needs", "fields"}, ctx, w)
        target = _get(o, "file", str, ctx, w)
        if target not in paths:
            raise ctx.error(f"operation targets unknown file {target!r}", w, "file")
        needs = tuple(_get(o, "needs", list, ctx, w, []))
        known_names = {k.name for k in keys} | {p.name for p in pins}
        for n in needs:
            if n not in known_names:
                raise ctx.error(f"operation needs unknown key/PIN {n!r}", w, "needs")
        ofields = tuple(_field(x, ctx, f"{w}.fields[{j}]", base, j + 1)
                        for j, x in enumerate(_get(o, "fields", list, ctx, w, [])))
        operations[opname] = OperationSpec(opname, _get(o, "description", str, ctx, w, ""), target,
                                           _get(o, "action", str, ctx, w, choices=("append", "update")), needs,
                                           ofields)

    identity = _get(head, "identity_field", str, ctx, "profile", all_fields[0] if all_fields else "")
    if identity and identity not in all_fields:
        raise ctx.error(f"identity_field {identity!r} is not a mapped field", "profile", "identity_field")
    channel = _get(perso, "channel", str, ctx, "personalization", "iso-sm", CHANNELS)
    profile = Profile(
        name=_get(head, "name", str, ctx, "profile"),
        title=_get(head, "title", str, ctx, "profile", ""),
        algorithm=alg, algorithms=algorithms, identity_field=identity,
        unique_fields=tuple(_get(head, "unique_fields", list, ctx, "profile", [identity] if identity else [])),
        channel=channel,
        transport_key=_get(perso, "transport_key", str, ctx, "personalization", ""),
        final_lcs=_get(perso, "final_lcs", str, ctx, "personalization", "operational", LCS),
        rotate_transport_key=_get(perso, "rotate_transport_key", str, ctx, "personalization", None),
        keys=tuple(keys), pins=tuple(pins), files=tuple(files), operations=operations, source=str(p),
        content=_get(head, "content", str, ctx, "profile", None),
        options=dict(_get(perso, "options", dict, ctx, "personalization", {})),
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
