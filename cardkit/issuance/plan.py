"""The personalization plan and layout analysis: traversal order, APDU budget, access-rule satisfaction.

Everything here is pure (no card I/O, no key material beyond what a :class:`Step` carries):

* :func:`traversal` — the order a card OS needs: each DF's keys and PINs right after its CREATE FILE (the
  new DF is then current), each EF's content right after its CREATE FILE (the new EF is current, so records
  are appended and binaries updated without any SELECT), child DFs after the EFs; a SELECT by path goes back
  to a DF only when another child DF follows (ISO 7816-9:2017 §8.3: a created file becomes the current file).
* :func:`minimum_apdus` — the smallest number of APDUs a profile's layout (and one record) can be written in
  with the card's command set and APDU size limits. The engine's plan is built to reach it; the manifest
  reports both numbers.
* :func:`satisfy` — which authentications (EXTERNAL AUTHENTICATE, VERIFY) meet an access rule under a given
  channel, or why it cannot be met.
* :func:`describe_layout` — a profile as data for ``cardkit layout show``.
* :class:`Plan` / :class:`Step` — the ordered commands of one card. Steps that load keys or PINs carry secret
  data; ``repr`` and :meth:`Plan.summary` never show it. Plans are built in memory at card time and are not
  stored (storing plans with their sensitive parts encrypted is not implemented).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cardkit.acl import AccessRules, Always, And, Issuer, Key, Never, Or, Pin, Rule, Sm, encode_expanded, parse_rule
from cardkit.apdu import CommandApdu
from cardkit.commands import iso
from cardkit.errors import ProfileError
from cardkit.profiles.model import FileSpec, KeySpec, PinSpec, Profile

if TYPE_CHECKING:
    from cardkit.issuance.prepare import PreparedRecord
    from cardkit.session import CardSession

__all__ = [
    "ApduBudget", "CardLimits", "Plan", "Step", "Visit", "describe_layout", "fcp_for", "layout_lines", "minimum_apdus",
    "satisfy", "sm_block", "traversal",
]

_STRUCT = {"transparent": "transparent", "linear-fixed": "linear-fixed", "linear-variable": "linear-variable",
           "cyclic": "cyclic"}
# ISO 7816-4:2020 §5.1: short Lc 1..255, extended Lc 1..65535.
SHORT_MAX = 255
EXTENDED_MAX = 65535
# ISO 7816-4:2020 §10.2 / ICAO 9303-11 §9.8.4: DO'8E' with an 8-byte MAC = 10 bytes; DO'97' = 3..4 bytes.
_MAC_DO = 10
# Mutual authentication = GET CHALLENGE + MUTUAL AUTHENTICATE (cardkit.sm.auth); SELECT MF before it.
_CHANNEL_APDUS = 3
_PROVE_APDUS = 2
# ISO 7816-4:2020 §12.1.1.9 (card capabilities, third software function byte): b7 = extended Lc and Le.
_CAP_TAG = 0x7
_CAP_EXTENDED = 0x40


def sm_block(profile: Profile) -> int | None:
    """Cipher block size of the personalization channel (None when the profile writes without SM)."""
    if profile.channel != "iso-sm":
        return None
    return 8 if profile.algorithm == "3des" else 16


def _do_size(n: int) -> int:
    """Bytes of a BER data object with ``n`` value bytes (one-byte tag; ISO 7816-4:2020 §6.3 lengths)."""
    return 1 + (1 if n < 0x80 else 2 if n < 0x100 else 3) + n


@dataclass(frozen=True)
class CardLimits:
    """How big one APDU may be on this session: extended lengths only when the session sends them **and**
    the card announces them in its ATR (ISO 7816-4:2020 §12.1.1.9)."""

    extended: bool = False

    @property
    def max_command(self) -> int:
        return EXTENDED_MAX if self.extended else SHORT_MAX

    @classmethod
    def of(cls, session: CardSession) -> CardLimits:
        return cls(extended=session.chaining.extended and card_announces_extended(session.atr))

    def wrapped_size(self, n: int, block: int | None, *, le: bool = False) -> int:
        """Lc of a command with ``n`` plain data bytes once secure messaging (block size ``block``) wraps it."""
        if block is None:
            return n
        body = _do_size(1 + (n // block + 1) * block) if n else 0
        return body + (4 if le else 0) + _MAC_DO

    def wire_apdus(self, n: int, block: int | None, *, le: bool = False) -> int:
        """APDUs one command of ``n`` plain data bytes takes (command chaining in pieces of 255 beyond)."""
        size = self.wrapped_size(n, block, le=le)
        return 1 if size <= self.max_command else math.ceil(size / SHORT_MAX)

    def chunk(self, block: int | None) -> int:
        """The largest plain data one UPDATE BINARY may carry in a single APDU."""
        limit = self.max_command
        if block is None:
            return limit
        for crypt in range(limit - limit % block, 0, -block):
            if _do_size(1 + crypt) + _MAC_DO <= limit:
                return crypt - 1  # method-2 padding takes at least one byte of the last block
        return 0

    def read_chunk(self, block: int | None) -> int:
        """The largest plain data one READ BINARY answers without 61xx (protected response ≤ 256 / 65536)."""
        limit = EXTENDED_MAX + 1 if self.extended else SHORT_MAX + 1
        if block is None:
            return limit
        best = 0
        for crypt in range(block, limit, block):
            if _do_size(1 + crypt) + 4 + _MAC_DO <= limit:
                best = crypt - 1  # method-2 padding takes at least one byte
        return best


def card_announces_extended(atr: bytes) -> bool:
    """True when the ATR's card capabilities (historical bytes, tag 7) announce extended Lc/Le."""
    from cardkit.atr import Atr
    from cardkit.errors import ParseError

    try:
        objects = Atr.parse(atr).historical_objects
    except ParseError:
        return False
    for tag, value in objects:
        if tag == _CAP_TAG and len(value) >= 3:
            return bool(value[2] & _CAP_EXTENDED)
    return False


# ------------------------------------------------------------------------------------------ FCP


@functools.lru_cache(maxsize=1024)
def fcp_for(fs: FileSpec) -> bytes:
    """The CREATE FILE data for ``fs``: FCP template with the expanded security attribute (ISO 7816-4 §7.4.3).

    Memoised: a profile's FCPs are computed once, not per card."""
    from cardkit.acl import parse_rule as _parse

    rules = AccessRules({op: _parse(text) for op, text in fs.rules.items()})
    security = encode_expanded(rules, fs.is_df)
    if fs.is_df:
        return iso.fcp_template(fid=fs.fid, df_name=fs.name, descriptor=iso.file_descriptor("df"), security=security)
    if fs.type == "transparent":
        return iso.fcp_template(fid=fs.fid, sfi=fs.sfi, size=fs.size, descriptor=iso.file_descriptor("transparent"),
                                security=security)
    return iso.fcp_template(fid=fs.fid, sfi=fs.sfi, descriptor=iso.file_descriptor(
        _STRUCT[fs.type], fs.record_size, fs.records), security=security)  # type: ignore[arg-type]


def path_fids(profile: Profile, path: str) -> bytes:
    """The concatenated FIDs from below the MF down to ``path`` (SELECT by path from the MF, P1 = 08)."""
    out = b""
    parts = path.split("/")
    for i in range(len(parts)):
        out += profile.file("/".join(parts[: i + 1])).fid
    return out


def select_command(profile: Profile, path: str) -> CommandApdu:
    """SELECT of a DF or EF of the profile without response data (MF by 3F00, else by path from the MF)."""
    if path == "MF":
        return iso.select_mf(p2_fci="none")
    return iso.select_path(path_fids(profile, path), p2_fci="none")


# ------------------------------------------------------------------------------------------ traversal

VisitKind = Literal["select", "create", "keys", "content"]


@dataclass(frozen=True)
class Visit:
    """One event of the personalization order: SELECT a DF, CREATE a file, load a DF's keys and PINs, write
    an EF's content (right after its creation)."""

    kind: VisitKind
    path: str


def _children(profile: Profile, parent: str) -> tuple[list[FileSpec], list[FileSpec]]:
    efs = [fs for fs in profile.files if fs.parent == parent and not fs.is_df]
    dfs = [fs for fs in profile.files if fs.parent == parent and fs.is_df]
    return efs, dfs


def traversal(profile: Profile) -> Iterator[Visit]:
    """The order of :func:`minimum_apdus`: depth first, EFs before child DFs, keys right after a DF's creation."""

    def walk(df: str) -> Iterator[Visit]:
        yield Visit("keys", df)
        efs, dfs = _children(profile, df)
        for ef in efs:
            yield Visit("create", ef.path)
            yield Visit("content", ef.path)
        for i, child in enumerate(dfs):
            if i:
                yield Visit("select", df)
            yield Visit("create", child.path)
            yield from walk(child.path)

    yield from walk("MF")


def keys_in(profile: Profile, df: str) -> tuple[list[KeySpec], list[PinSpec]]:
    """Keys and PINs the plan loads into ``df`` (the MF key 00 is the transport key, replaced separately)."""
    keys = [k for k in profile.keys if k.df == df and not (df == "MF" and k.ref == 0)]
    pins = [p for p in profile.pins if p.df == df]
    return keys, pins


# ------------------------------------------------------------------------------------------ budget


@dataclass(frozen=True)
class ApduBudget:
    """The minimum APDU count of one card, by kind. ``total`` is what :func:`minimum_apdus` reports."""

    channel: int
    rotation: int
    creates: int
    loads: int
    writes: int
    navigation: int

    @property
    def total(self) -> int:
        return self.channel + self.rotation + self.creates + self.loads + self.writes + self.navigation

    def as_dict(self) -> dict[str, int]:
        return {"channel": self.channel, "rotation": self.rotation, "create": self.creates, "keys_pins": self.loads,
                "write": self.writes, "navigation": self.navigation, "total": self.total}


def _record_lengths(profile: Profile, fs: FileSpec, prepared: PreparedRecord | None) -> list[int]:
    if prepared is not None:
        recs = prepared.records.get(fs.path, {})
        lengths = [len(v) for v in recs.values()]
        computed = [f for f in fs.fields if f.computed is not None and f.number not in recs]
        return lengths + [2 + (f.codec.max_bytes or 0) for f in computed]
    out = []
    for f in fs.fields:
        if f.computed is not None or f.default is not None or not (f.optional or fs.optional):
            out.append(2 + (f.codec.max_bytes or 0))
    return out


def _binary_length(fs: FileSpec, prepared: PreparedRecord | None) -> int:
    if prepared is not None:
        return len(prepared.binaries.get(fs.path, b""))
    return 0  # without a record, optional and hook-computed contents are not counted


def minimum_apdus(profile: Profile, prepared: PreparedRecord | None = None, *,
                  limits: CardLimits | None = None) -> ApduBudget:
    """The fewest APDUs that personalize ``profile`` (with ``prepared``'s contents) on an ISO 7816-4 card.

    Counted: the issuer channel (SELECT MF — the plan cannot assume the current DF — GET CHALLENGE and MUTUAL
    AUTHENTICATE), the transport-key replacement (one PUT KEY) and its proof (a fresh mutual authentication:
    2), one CREATE FILE per file, one PUT KEY per key and PIN, one APPEND RECORD per record and
    ⌈size / chunk⌉ UPDATE BINARY per transparent file (chunk = the largest data one APDU carries under the
    channel's secure messaging, :meth:`CardLimits.chunk`), each counted in wire APDUs (command chaining when a
    wrapped command exceeds the APDU size), and the SELECTs no order can avoid: a created DF becomes current,
    so each DF with k child DFs needs k − 1 SELECTs to come back to it. Without ``prepared``, required and
    computed records are counted at their largest size and transparent contents are not counted.

    Profiles personalized through a GlobalPlatform channel handler have no ISO layout budget: this raises
    :class:`ProfileError` for them.
    """
    if profile.channel in ("scp03", "scp02"):
        raise ProfileError(f"profile {profile.name!r} is personalized through a GlobalPlatform {profile.channel} "
                           "channel: no ISO layout budget")
    limits = limits or CardLimits()
    block = sm_block(profile)
    channel = _CHANNEL_APDUS if profile.channel == "iso-sm" else 1
    rotation = (1 + _PROVE_APDUS) if profile.issuer_key is not None else 0
    creates = sum(limits.wire_apdus(len(fcp_for(fs)), block) for fs in profile.files)
    loads = sum(len(k) + len(p) for k, p in (keys_in(profile, d) for d in ["MF", *(f.path for f in profile.files
                                                                                  if f.is_df)]))
    writes = 0
    chunk = limits.chunk(block)
    for fs in profile.files:
        if fs.is_record:
            fixed = fs.record_size if fs.type != "linear-variable" else None
            writes += sum(limits.wire_apdus(fixed or n, block) for n in _record_lengths(profile, fs, prepared))
        elif fs.type == "transparent":
            writes += math.ceil(_binary_length(fs, prepared) / chunk)
    navigation = sum(max(0, len(_children(profile, d)[1]) - 1)
                     for d in ["MF", *(f.path for f in profile.files if f.is_df)])
    return ApduBudget(channel, rotation, creates, loads, writes, navigation)


# ------------------------------------------------------------------------------------------ plan


StepKind = Literal["channel", "command", "prove"]


@dataclass(frozen=True)
class Step:
    """One step of a plan: a command, or opening / proving the issuer channel with a key (secret)."""

    kind: StepKind
    label: str
    command: CommandApdu | None = None
    key: bytes = field(default=b"", repr=False)
    context: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"Step({self.kind}, {self.label!r})"


@dataclass
class Plan:
    """The ordered steps that personalize one card (secret data inside; never logged)."""

    profile: str
    serial: bytes
    steps: list[Step] = field(default_factory=list)

    def add(self, label: str, command: CommandApdu, **context: str) -> None:
        self.steps.append(Step("command", label, command, context=tuple(context.items())))

    def summary(self) -> list[str]:
        """One line per step, no data."""
        return [s.label for s in self.steps]

    def __repr__(self) -> str:
        return f"Plan({self.profile!r}, chip {self.serial.hex().upper()}, {len(self.steps)} steps)"


# ------------------------------------------------------------------------------------------ access rules

Action = tuple[Literal["external-auth", "mutual-auth", "verify"], str]


def _holder_chain(profile: Profile, df: str) -> list[str]:
    """``df`` and its parents up to the MF, nearest first (where the card looks for DF-specific objects)."""
    chain = [df]
    while chain[-1] != "MF":
        chain.append(profile.file(chain[-1]).parent)
    return chain


def satisfy(profile: Profile, rule_text: str, df: str, *, issuer: bool, sm: bool, keys: bool,
            pins: Mapping[str, bytes] | None, record_keys: bool = True) -> tuple[list[Action] | None, str]:
    """How to meet ``rule_text`` for a file of DF ``df``: (actions, "") or (None, why not).

    ``issuer`` / ``sm``: an issuer channel / secure messaging is open; ``keys``: card keys can be computed
    (a keystore is at hand; ``record_keys``: and keys computed from the record, e.g. a BAC key seed);
    ``pins``: known PIN values by name. Actions, in order: ("external-auth", key name), ("mutual-auth", key
    name) — a key of usage "sm": secure messaging under that key replaces the current channel — and
    ("verify", PIN name).
    """
    chain = _holder_chain(profile, df)

    def key_for(ref: int) -> KeySpec | None:
        for holder in chain:
            for k in profile.keys:
                if k.df == holder and k.ref == ref:
                    return k
        return None

    def pin_for(ref: int) -> PinSpec | None:
        for holder in chain:
            for p in profile.pins:
                if p.df == holder and p.ref == ref and p.kind == "pin":
                    return p
        return None

    def go(rule: Rule) -> tuple[list[Action] | None, str]:
        if isinstance(rule, Always):
            return [], ""
        if isinstance(rule, Never):
            return None, "never allowed"
        if isinstance(rule, Issuer):
            return ([], "") if issuer else (None, "needs the issuer channel (issuer keys)")
        if isinstance(rule, Sm):
            return ([], "") if sm else (None, "needs secure messaging")
        if isinstance(rule, Key):
            k = key_for(rule.ref)
            if k is None:
                return None, f"needs authentication with key {rule.ref:02X}, which the profile does not define"
            what = "external" if k.usage == "external-auth" else "mutual"
            if not keys:
                return None, f"needs {what} authentication with key {rule.ref:02X} ({k.name}): give --keys"
            if k.master.startswith("record:") and not record_keys:
                return None, f"needs {what} authentication with key {rule.ref:02X} ({k.name}), computed from the " \
                             "record"
            return [("external-auth" if what == "external" else "mutual-auth", k.name)], ""
        if isinstance(rule, Pin):
            p = pin_for(rule.ref)
            if p is None:
                return None, f"needs PIN {rule.ref:02X}, which the profile does not define"
            if pins is None or p.name not in pins:
                return None, f"needs PIN {rule.ref:02X} ({p.name})"
            return [("verify", p.name)], ""
        if isinstance(rule, And):
            acts: list[Action] = []
            for r in rule.rules:
                got, why = go(r)
                if got is None:
                    return None, why
                acts += [a for a in got if a not in acts]
            return acts, ""
        if isinstance(rule, Or):
            best: list[Action] | None = None
            reasons = []
            for r in rule.rules:
                got, why = go(r)
                if got is not None and (best is None or len(got) < len(best)):
                    best = got
                elif got is None:
                    reasons.append(why)
            return (best, "") if best is not None else (None, " or ".join(reasons))
        return None, f"unsupported condition {rule.text}"  # pragma: no cover - every Rule class is handled

    return go(parse_rule(rule_text))


# ------------------------------------------------------------------------------------------ description


def describe_layout(profile: Profile) -> dict[str, Any]:
    """The profile as plain data: tree, rules, keys (no values), PINs, record schema, operations, budget."""
    from cardkit.acl import DF_OPS, EF_OPS, decode_expanded

    def file_entry(fs: FileSpec) -> dict[str, Any]:
        ops = sorted(str(o) for o in (DF_OPS if fs.is_df else EF_OPS))
        # What the card enforces: operations sharing an access-mode bit share a rule (ISO 7816-4 §7.4.3.3).
        rules = decode_expanded(encode_expanded(AccessRules(dict(fs.rules)), fs.is_df), fs.is_df).to_text()
        entry: dict[str, Any] = {
            "path": fs.path, "fid": fs.fid.hex().upper(), "type": fs.type,
            "rules": {op: rules.get(op, "never") for op in ops},
        }
        if fs.name:
            entry["name"] = fs.name.hex().upper()
            try:
                entry["name_text"] = fs.name.decode("gbk")
            except UnicodeDecodeError:
                pass
        if fs.sfi is not None:
            entry["sfi"] = fs.sfi
        if fs.type == "transparent":
            entry["size"] = fs.size
        elif fs.is_record:
            entry["record_size"], entry["records"] = fs.record_size, fs.records
        if fs.optional:
            entry["optional"] = True
        return entry

    schema = []
    for fs in profile.files:
        for f in fs.fields:
            schema.append({
                "field": f.field, "file": fs.path, "record": f.number, "codec": _codec_text(f.codec),
                "validators": list(f.validators), "optional": f.optional or fs.optional,
                **({"default": f.default} if f.default is not None else {}),
                **({"computed": f.computed} if f.computed else {}),
            })
    out: dict[str, Any] = {
        "name": profile.name, "title": profile.title, "source": profile.source,
        "algorithm": profile.algorithm, "algorithms": list(profile.algorithms), "channel": profile.channel,
        "transport_key": profile.transport_key,
        "issuer_key": profile.issuer_key.name if profile.issuer_key else None,
        "files": [file_entry(fs) for fs in profile.files],
        "keys": [{"name": k.name, "df": k.df, "ref": f"{k.ref:02X}", "p2": f"{k.p2:02X}", "usage": k.usage,
                  "master": k.master, "diversify": list(k.diversify), "max_tries": k.max_tries}
                 for k in profile.keys],
        "pins": [{"name": p.name, "kind": p.kind, "df": p.df, "ref": f"{p.ref:02X}", "p2": f"{p.p2:02X}",
                  "max_tries": p.max_tries, "length": [p.min_length, p.max_length], "initial": _initial(p.initial),
                  **({"unblocks": p.unblocks} if p.unblocks else {})} for p in profile.pins],
        "record_schema": schema,
        "operations": [{"name": o.name, "description": o.description, "file": o.file, "action": o.action,
                        "needs": list(o.needs),
                        "fields": [{"field": f.field, "tag": f.number, "codec": _codec_text(f.codec),
                                    "validators": list(f.validators), "optional": f.optional} for f in o.fields]}
                       for o in profile.operations.values()],
        "post_issuance": {"sm_key": profile.post_issuance.sm_key, "block": profile.post_issuance.block},
    }
    try:
        out["minimum_apdus"] = minimum_apdus(profile).as_dict()
    except ProfileError:
        out["minimum_apdus"] = None
    return out


def _initial(text: str) -> str:
    return "fixed (value in the profile)" if text.startswith("fixed:") else text


def _codec_text(codec: object) -> str:
    """``an(gbk, 30)``-style summary of a codec's parameters."""
    kind = getattr(codec, "kind", type(codec).__name__)
    params = []
    for name in ("charset", "length", "max_length", "format", "list", "encoding", "input"):
        value = getattr(codec, name, None)
        if value not in (None, 0, ""):
            params.append(f"{name}={value}")
    return f"{kind}({', '.join(params)})" if params else str(kind)


def layout_lines(d: Mapping[str, Any]) -> list[str]:
    """:func:`describe_layout` as text lines (``cardkit layout show``)."""
    lines = [f"{d['name']}: {d['title']}", f"  algorithm {d['algorithm']} (offers {', '.join(d['algorithms'])}), "
             f"channel {d['channel']}, transport key {d['transport_key']!r}, issuer key {d['issuer_key']!r}", "",
             "files:", "  MF 3F00"]
    for f in d["files"]:
        depth = f["path"].count("/") + 2
        what = f["type"] + (f" size {f['size']}" if "size" in f else "") + (
            f" {f['records']} x {f['record_size']} bytes" if "records" in f else "")
        extra = (f" name {f['name']}" + (f" ({f['name_text']})" if "name_text" in f else "")) if "name" in f else ""
        sfi = f" SFI {f['sfi']:02X}" if "sfi" in f else ""
        lines.append(f"{'  ' * depth}{f['path'].rsplit('/', 1)[-1]} {f['fid']}{sfi} {what}{extra}"
                     f"{' (optional)' if f.get('optional') else ''}")
        rules = ", ".join(f"{op}: {rule}" for op, rule in f["rules"].items() if rule != "never")
        lines.append(f"{'  ' * (depth + 1)}rules: {rules or 'never'}")
    lines += ["", "keys:"] + [f"  {k['name']}: {k['df']} ref {k['ref']} (P2 {k['p2']}), usage {k['usage']}, master "
                              f"{k['master']!r}, diversified by {' -> '.join(k['diversify']) or 'nothing'}"
                              for k in d["keys"]]
    lines += ["", "PINs:"] + [f"  {p['name']} ({p['kind']}): {p['df']} ref {p['ref']} (P2 {p['p2']}), "
                              f"{p['length'][0]}..{p['length'][1]} digits, {p['max_tries']} tries, initial "
                              f"{p['initial']}" + (f", unblocks {p['unblocks']}" if "unblocks" in p else "")
                              for p in d["pins"]]
    lines += ["", "record schema (field -> file/record, codec, validators):"]
    for s in d["record_schema"]:
        where = f"{s['file']}" + (f" record {s['record']:02X}" if s["record"] is not None else "")
        flags = [*s["validators"], *(["optional"] if s["optional"] else []),
                 *([f"default {s['default']!r}"] if "default" in s else []),
                 *([f"computed {s['computed']}"] if "computed" in s else [])]
        lines.append(f"  {s['field']:<24} -> {where:<24} {s['codec']}  {', '.join(flags)}")
    for o in d["operations"]:
        lines += ["", f"operation {o['name']}: {o['action']} {o['file']}, needs {', '.join(o['needs'])}",
                  f"  {o['description']}"]
        lines += [f"  tag {f['tag']:02X} {f['field']}: {f['codec']} {' '.join(f['validators'])}"
                  f"{' optional' if f['optional'] else ''}" for f in o["fields"]]
    if d["minimum_apdus"]:
        m = d["minimum_apdus"]
        lines += ["", f"minimum APDUs per card (required fields, short APDUs): {m['total']} = "
                  + ", ".join(f"{k} {v}" for k, v in m.items() if k != "total")]
    return lines
