"""Card snapshots: everything readable on a card as one JSON document, and differences between two of them.

A snapshot is the diagnosis report of :func:`cardkit.apps.diagnose.diagnose` taken with ``contents=True``
(every readable record and transparent file in hex) plus a header. **It holds personal data** (names,
addresses, identifiers in the raw bytes): :func:`save_snapshot` writes it with mode 0600 and the header says
so. Decoded identifier fields inside are masked like everywhere else; the raw bytes are not, since a
difference in them must be found.

:func:`expected_snapshot` builds the *golden* card of a profile and record — the files, sizes and access rules
the profile creates and the contents :func:`cardkit.issuance.engine.expected_content` says they must hold —
for the chip serial of a real snapshot. :func:`diff_snapshots` compares two snapshots (or a snapshot and a
golden card): missing and extra files, FCP and access-rule differences, records and bytes that differ named
by file and field, and — between two real snapshots — the ATR, PIN counters and GlobalPlatform data. Values
are shown only for fields that do not identify a person (identifier fields are masked, unmapped bytes are
described by offset only).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardkit import __version__
from cardkit.apps.diagnose import DiagnoseOptions, diagnose, identifier_fields
from cardkit.errors import CardkitError, ParseError
from cardkit.fsutil import write_private
from cardkit.profiles.model import FileSpec, Profile
from cardkit.profiles.validators import mask_identifier
from cardkit.session import CardSession

if TYPE_CHECKING:
    from cardkit.issuance.prepare import PreparedRecord
    from cardkit.keys.store import Keystore

__all__ = ["FORMAT", "NOTICE", "DiffResult", "SnapshotError", "diff_snapshots", "expected_snapshot",
           "load_snapshot", "save_snapshot", "summarize", "take_snapshot"]

FORMAT = "cardkit-snapshot"
VERSION = 1
NOTICE = ("PERSONAL DATA: this snapshot holds the readable contents of a card (names, addresses, identifiers "
          "in the raw bytes). Keep it readable by you only (mode 0600) and delete it when the case is closed.")
# File attributes compared between two snapshots (FCP, ISO 7816-4:2020 §7.4.3).
_ATTRIBUTES = ("type", "fid", "df_name", "sfi", "size", "record_size", "record_count", "lcs")
_MAX_RANGES = 6  # byte ranges listed per difference before "and N more"


class SnapshotError(ParseError):
    """A snapshot file that cannot be read or is not a cardkit snapshot."""


def take_snapshot(session: CardSession, options: DiagnoseOptions | None = None) -> dict[str, Any]:
    """Diagnose with raw contents and add the snapshot header."""
    report = diagnose(session, replace(options or DiagnoseOptions(), contents=True))
    head = {"format": FORMAT, "version": VERSION, "notice": NOTICE, "cardkit": __version__,
            "taken": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    return {**head, **report}


def save_snapshot(snapshot: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``snapshot`` as JSON, mode 0600, atomically (a temporary file in the same folder, then rename)."""
    text = json.dumps(snapshot, ensure_ascii=False, indent=1) + "\n"
    return write_private(path, text.encode("utf-8"), durable=False)


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a snapshot written by :func:`save_snapshot`; :class:`SnapshotError` when it is not one."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {p}: {exc.strerror or type(exc).__name__}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{p} is not a JSON snapshot: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError(f"{p} is not a cardkit snapshot (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise SnapshotError(f"{p} is a snapshot of format version {doc.get('version')!r}; this cardkit reads "
                            f"version {VERSION}")
    if not isinstance(doc.get("files"), list):
        raise SnapshotError(f"{p}: the snapshot has no file list")
    return doc


# ------------------------------------------------------------------------------------------ golden card


def _expected_rules(fs: FileSpec) -> dict[str, str]:
    """The profile's rules as the card shows them after CREATE FILE (paired operations merged)."""
    from cardkit.acl import AccessRules, AclError, decode_expanded, encode_expanded, parse_rule

    try:
        rules = AccessRules({op: parse_rule(text) for op, text in fs.rules.items()})
        return decode_expanded(encode_expanded(rules, fs.is_df), fs.is_df).to_text()
    except AclError:
        return dict(fs.rules)


def _field_of(profile: Profile, fs: FileSpec, data: bytes) -> dict[str, Any]:
    """Field name and display value of one expected record (identifiers masked)."""
    from cardkit.profiles.codecs import parse_simple_tlv_record

    try:
        tag, value = parse_simple_tlv_record(data)
    except ParseError:
        return {}
    spec = next((f for f in fs.fields if f.number == tag), None)
    if spec is None:
        return {"tag": tag}
    try:
        text = spec.codec.decode(value)
    except (CardkitError, ValueError):
        return {"tag": tag, "field": spec.field}
    if spec.field in identifier_fields(profile):
        return {"tag": tag, "field": spec.field, "value": mask_identifier(text), "masked": True}
    return {"tag": tag, "field": spec.field, "value": text}


def expected_snapshot(profile: Profile, prepared: PreparedRecord, keystore: Keystore | None,
                      serial: bytes) -> dict[str, Any]:
    """The golden card for ``prepared`` on the chip ``serial``. Without a keystore the computed fields (the card
    identification code, a MAC under a card key) are left out and listed in ``not_computed``."""
    from cardkit.issuance.engine import expected_content

    not_computed: list[dict[str, Any]] = []
    if keystore is not None:
        records, binaries = expected_content(profile, prepared, keystore, serial)
    else:
        records = {k: dict(v) for k, v in prepared.records.items()}
        binaries = dict(prepared.binaries)
        not_computed = [{"path": fs.path, "tag": f.number, "field": f.field} for fs in profile.files
                        for f in fs.fields if f.computed is not None]
    lcs = "operational-activated" if profile.final_lcs == "operational" else profile.final_lcs
    files: list[dict[str, Any]] = [{"path": "MF", "present": True, "type": "df", "fid": "3F00"}]
    for fs in profile.files:
        entry: dict[str, Any] = {"path": fs.path, "present": True, "type": fs.type, "fid": fs.fid.hex().upper(),
                                 "lcs": lcs, "rules": _expected_rules(fs)}
        if fs.is_df:
            if fs.name is not None:
                entry["df_name"] = fs.name.hex().upper()
        else:
            entry["sfi"] = fs.sfi
        if fs.type == "transparent":
            entry["size"] = fs.size
            data = binaries.get(fs.path)
            if data is not None:
                raw = data + bytes(max(0, (fs.size or 0) - len(data)))
                entry["content"] = {"length": len(raw), "raw": raw.hex().upper()}
                if fs.fields:
                    entry["content"]["field"] = fs.fields[0].field
        elif not fs.is_df:
            entry.update(record_size=fs.record_size, record_count=fs.records)
            if fs.path in records:
                recs = records[fs.path]
                entry["records"] = [{"number": i, "length": len(recs[n]), "raw": recs[n].hex().upper(),
                                     **_field_of(profile, fs, recs[n])}
                                    for i, n in enumerate(sorted(recs), start=1)]
            elif any(not f.optional for f in fs.fields):
                entry["records"] = []
        files.append(entry)
    return {"format": FORMAT, "version": VERSION, "golden": True, "profile": {"name": profile.name},
            "atr": {"chip_serial": serial.hex().upper()}, "files": files, "not_computed": not_computed}


# ------------------------------------------------------------------------------------------ differences


@dataclass
class DiffResult:
    """What differs (``differences``) and what could not be compared (``not_compared``), as dicts with
    ``where``, ``what`` and, where they can be shown, the values ``a`` and ``b``."""

    a: str
    b: str
    differences: list[dict[str, Any]] = field(default_factory=list)
    not_compared: list[dict[str, str]] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences

    def add(self, where: str, what: str, a: Any = None, b: Any = None) -> None:
        item: dict[str, Any] = {"where": where, "what": what}
        if a is not None or b is not None:
            item.update(a=a, b=b)
        self.differences.append(item)

    def skip(self, where: str, why: str) -> None:
        self.not_compared.append({"where": where, "why": why})

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "same": self.same, "differences": self.differences,
                "not_compared": self.not_compared}


def _ranges(a: bytes, b: bytes) -> str:
    """Byte offsets where ``a`` and ``b`` differ, as ranges ("bytes 3, 10-12"); lengths when they differ."""
    n = min(len(a), len(b))
    diffs = [i for i in range(n) if a[i] != b[i]]
    spans: list[tuple[int, int]] = []
    for i in diffs:
        if spans and spans[-1][1] == i - 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    parts = [f"{s}" if s == e else f"{s}-{e}" for s, e in spans[:_MAX_RANGES]]
    text = ("byte" + ("s " if len(diffs) > 1 else " ") + ", ".join(parts)) if parts else ""
    if len(spans) > _MAX_RANGES:
        text += f" and {len(spans) - _MAX_RANGES} more ranges"
    if len(a) != len(b):
        text += ("; " if text else "") + f"length {len(a)} vs {len(b)}"
    return text


def _raw(item: Mapping[str, Any]) -> bytes | None:
    raw = item.get("raw")
    return bytes.fromhex(raw) if isinstance(raw, str) else None


def _label(rec: Mapping[str, Any], other: Mapping[str, Any] | None) -> str:
    name = rec.get("field") or (other or {}).get("field")
    return f"record {rec['number']}" + (f" ({name})" if name else "")


def _values(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """Decoded values to show, or (None, None) when either side is masked or not decoded."""
    if a is None or b is None or a.get("masked") or b.get("masked") or "value" not in a or "value" not in b:
        return None, None
    return a["value"], b["value"]


def _pairs(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """Records matched by SIMPLE-TLV tag when every record has a distinct one (SSC-style files), else by position."""
    tags_a, tags_b = [r.get("tag") for r in ra], [r.get("tag") for r in rb]
    by_tag = all(t is not None for t in tags_a + tags_b) and len(set(tags_a)) == len(ra) and \
        len(set(tags_b)) == len(rb)
    if not by_tag:
        return [(ra[i] if i < len(ra) else None, rb[i] if i < len(rb) else None) for i in range(max(len(ra), len(rb)))]
    ia, ib = {r["tag"]: r for r in ra}, {r["tag"]: r for r in rb}
    return [(ia.get(t), ib.get(t)) for t in sorted(set(ia) | set(ib))]


def _compare_records(res: DiffResult, path: str, ra: list[dict[str, Any]], rb: list[dict[str, Any]],
                     skip_tags: set[int]) -> None:
    for a, b in _pairs(ra, rb):
        if a is None or b is None:
            only, side = (b, res.b) if a is None else (a, res.a)
            if only is not None and only.get("tag") not in skip_tags:
                res.add(path, f"{_label(only, None)} only in {side}")
            continue
        xa, xb = _raw(a), _raw(b)
        if xa is None or xb is None:
            if a.get("sha256") != b.get("sha256") or a.get("value") != b.get("value"):
                res.add(path, f"{_label(a, b)} differs", *_values(a, b))
            continue
        if xa != xb:
            va, vb = _values(a, b)
            res.add(path, f"{_label(a, b)} differs: {_ranges(xa, xb)}", va, vb)


def _compare_content(res: DiffResult, path: str, ca: Mapping[str, Any], cb: Mapping[str, Any]) -> None:
    xa, xb = _raw(ca), _raw(cb)
    name = ca.get("field") or cb.get("field")
    label = f"content ({name})" if name else "content"
    if xa is not None and xb is not None:
        if xa != xb:
            res.add(path, f"{label} differs: {_ranges(xa, xb)}", *_values(ca, cb))
    elif ca.get("sha256") and cb.get("sha256") and ca["sha256"] != cb["sha256"]:
        res.add(path, f"{label} differs (SHA-256)")


def _compare_file(res: DiffResult, fa: Mapping[str, Any], fb: Mapping[str, Any], strict: bool,
                  skip_tags: set[int]) -> None:
    path = fa["path"]
    for key in _ATTRIBUTES:
        if key in fa and key in fb and fa[key] != fb[key]:
            res.add(path, key.replace("_", " "), fa[key], fb[key])
    rules_a, rules_b = fa.get("rules"), fb.get("rules")
    if isinstance(rules_a, dict) and isinstance(rules_b, dict):
        for op in sorted(set(rules_a) | set(rules_b)):
            ta, tb = rules_a.get(op, "never (not set)"), rules_b.get(op, "never (not set)")
            if ta != tb:
                res.add(path, f"access rule '{op}'", ta, tb)
    for kind in ("records", "content"):
        in_a, in_b = kind in fa, kind in fb
        if in_a and in_b:
            if kind == "records":
                _compare_records(res, path, fa["records"], fb["records"], skip_tags)
            else:
                _compare_content(res, path, fa["content"], fb["content"])
        elif in_a != in_b:
            side, why = (res.b, fb.get("read_error")) if in_a else (res.a, fa.get("read_error"))
            if why or strict:
                text = f"{kind} not compared: {side} could not read them" + (f" ({why})" if why else "")
                if strict:
                    res.add(path, text)
                else:
                    res.skip(path, text)


def _files(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {f["path"]: f for f in doc.get("files", []) if isinstance(f, dict) and f.get("present", True)}


def _compare_top(res: DiffResult, a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    atr_a, atr_b = a.get("atr") or {}, b.get("atr") or {}
    for key in ("atr", "chip_serial"):
        if atr_a.get(key) != atr_b.get(key):
            res.add("card", key.replace("_", " "), atr_a.get(key), atr_b.get(key))
    pins_a = {p["name"]: p for p in a.get("pins", [])}
    pins_b = {p["name"]: p for p in b.get("pins", [])}
    for name in sorted(set(pins_a) | set(pins_b)):
        pa, pb = pins_a.get(name, {}), pins_b.get(name, {})
        if pa.get("state") != pb.get("state"):
            res.add(f"PIN {name}", "state", pa.get("state"), pb.get("state"))
    gp_a, gp_b = a.get("gp") or {}, b.get("gp") or {}
    for key in ("isd", "cplc", "card_data", "key_info", "iin", "cin"):
        va, vb = gp_a.get(key), gp_b.get(key)
        if va != vb and not (_is_error(va) and _is_error(vb)):
            res.add("GlobalPlatform", key.replace("_", " "), json.dumps(va, sort_keys=True),
                    json.dumps(vb, sort_keys=True))
    reg_a, reg_b = gp_a.get("registry") or {}, gp_b.get("registry") or {}
    for subset in ("isd", "apps", "load-files"):
        la, lb = reg_a.get(subset), reg_b.get(subset)
        if isinstance(la, list) and isinstance(lb, list):
            ea, eb = {e["aid"]: e for e in la}, {e["aid"]: e for e in lb}
            for aid in sorted(set(ea) | set(eb)):
                if ea.get(aid) != eb.get(aid):
                    res.add(f"GlobalPlatform {subset} {aid}", "registry entry",
                            (ea.get(aid) or {}).get("life_cycle", "absent"),
                            (eb.get(aid) or {}).get("life_cycle", "absent"))
        elif isinstance(la, list) != isinstance(lb, list):
            res.skip(f"GlobalPlatform {subset}", "listed in only one snapshot (the other had no GP keys)")


def _is_error(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and "error" in value)


def diff_snapshots(a: Mapping[str, Any], b: Mapping[str, Any], *, a_name: str = "A", b_name: str = "B",
                   strict: bool = False) -> DiffResult:
    """Compare two snapshots (either may be a golden card from :func:`expected_snapshot`).

    ``strict`` counts contents one side could not read as differences (default: listed as not compared).
    """
    res = DiffResult(a_name, b_name)
    golden = bool(a.get("golden") or b.get("golden"))
    files_a, files_b = _files(a), _files(b)
    for path in [p for p in files_a if p not in files_b] + [p for p in files_b if p not in files_a]:
        where = res.b if path in files_a else res.a
        entry = files_a.get(path) or files_b[path]
        if golden and entry.get("label"):
            res.skip(path, f"{entry['label']} is not part of the profile")
            continue
        res.add(path, f"missing in {where}")
    skipped: dict[str, set[int]] = {}
    for doc in (a, b):
        for item in doc.get("not_computed", []):
            skipped.setdefault(item["path"], set()).add(item["tag"])
            res.skip(f"{item['path']} record {item['tag']} ({item['field']})",
                     "expected value not computed: give the keys (--keys) to compute it")
    for path, fa in files_a.items():
        if path in files_b:
            _compare_file(res, fa, files_b[path], strict, skipped.get(path, set()))
    if golden:
        for doc, other in ((a, b), (b, a)):
            if not doc.get("golden") and other.get("golden"):
                _golden_notes(res, doc, other)
    else:
        _compare_top(res, a, b)
    return res


def _golden_notes(res: DiffResult, doc: Mapping[str, Any], golden: Mapping[str, Any]) -> None:
    name = (doc.get("profile") or {}).get("name")
    want = (golden.get("profile") or {}).get("name")
    if name is None:
        res.skip("profile", "the snapshot was taken without recognising a profile; paths may not match")
    elif name != want:
        res.skip("profile", f"the snapshot was read with profile {name!r}, the golden card is {want!r}")


def summarize(files: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(files present, records read) of a snapshot's file list, for one-line messages."""
    present = [f for f in files if f.get("present")]
    return len(present), sum(len(f.get("records", [])) for f in present)
