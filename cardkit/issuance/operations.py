"""Post-issuance operations on a personalized card, each under the channel its access rules demand.

* cardholder side — ISO 7816-4 secure messaging after mutual authentication with the profile's
  ``[post_issuance] sm_key`` (SSC: ``ssse-sm``, SSSE key 03, diversified region → chip serial):
  :func:`change_pin` (CHANGE REFERENCE DATA, ISO 7816-4:2020 §11.5.7), :func:`unblock_pin` (RESET RETRY
  COUNTER with the PUK, §11.5.10), and the profile-declared record operations (:func:`run_operation`, e.g. the
  SSC ``bind-family``: VERIFY the cardholder PIN, APPEND RECORD to DF04/EF06 — §11.4.6);
* issuer side — the issuer channel (MF key 00 = the diversified issuer key): :func:`block_card` /
  :func:`unblock_card` (DEACTIVATE / ACTIVATE FILE of the ``[post_issuance] block`` DF, ISO 7816-9:2017 §8.6 /
  §8.5; while deactivated, the DF's files answer 6985 and its SELECT 6283) and :func:`terminate_card`
  (TERMINATE CARD USAGE, ISO 7816-9:2017 §8.9: irreversible);
* no keys — :func:`pin_status` (VERIFY without data answers 63Cx with the tries left, §11.5.6, no try spent).

Card keys are diversified with values read from the card itself: the chip serial (ATR) and, for the SSC, the
region from the card identification code (SSSE/EF05 record 01, free to read). :func:`read_card` decodes every file
with the profile's field names for ``cardkit dump``, reading what the available keys and PINs open and saying
for the rest which condition was not met; identifiers are masked unless asked otherwise.

PIN values are bytes (ASCII digits, as :mod:`cardkit.issuance.prepare` loads them); they never appear in logs,
errors or results.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cardkit.apdu import CommandApdu
from cardkit.commands import iso
from cardkit.errors import CardkitError, ProfileError, RecordError, SecureChannelError, TlvError
from cardkit.issuance.engine import card_key, chip_serial, open_issuer_channel
from cardkit.issuance.plan import satisfy
from cardkit.keys.store import Keystore, alg_of
from cardkit.profiles.codecs import parse_simple_tlv_record, simple_tlv_record
from cardkit.profiles.model import FieldSpec, FileSpec, OperationSpec, PinSpec, Profile
from cardkit.profiles.validators import VALIDATORS, mask_identifier
from cardkit.session import CardSession
from cardkit.sm.auth import external_authenticate, mutual_authenticate
from cardkit.sm.iso import IsoSmChannel
from cardkit.sm.seed import static_sm_keys
from cardkit.sw import RecordNotFound, StatusWordError
from cardkit.tlv import simple_decode

__all__ = [
    "OperationError", "PinStatus", "block_card", "card_fields_from_card", "change_pin", "decode_operation_record",
    "encode_operation", "open_holder_channel", "open_issuer", "pin_status", "read_card", "run_operation",
    "terminate_card", "unblock_card", "unblock_pin",
]

log = logging.getLogger(__name__)

# ISO 7816-4:2020 §5.6 Table 6.
_SW_OK = 0x9000
_SW_DEACTIVATED = 0x6283
_SW_BLOCKED = 0x6983
_SW_NOT_FOUND = 0x6A88
_SW_TERMINATED = 0x6A81  # this card OS answers every command after TERMINATE CARD USAGE with 6A81
#: Validators whose fields are identifiers: masked in dumps and results.
_IDENTIFIER_VALIDATORS = frozenset({"citizen-id", "ssc-card-number", "document-number"})


class OperationError(CardkitError, ValueError):
    """A post-issuance operation that cannot run as asked: the profile lacks what it needs, the card's state
    forbids it, or it would duplicate what the card holds (CLI exit code 6, bad input)."""


@dataclass(frozen=True)
class PinStatus:
    """A PIN's state as the card reports it without spending a try."""

    name: str
    df: str
    max_tries: int
    tries_left: int | None
    blocked: bool
    df_deactivated: bool = False


# ------------------------------------------------------------------------------------------ helpers


def _select_df(session: CardSession, profile: Profile, path: str) -> int:
    """SELECT a DF (by DF name when it has one, else by path); returns 9000 or 6283 (deactivated)."""
    if path == "MF":
        cmd = iso.select_mf(p2_fci="none")
    else:
        fs = profile.file(path)
        cmd = (iso.select_aid(fs.name, p2_fci="none") if fs.name and len(fs.name) >= 5
               else iso.select_path(_fids(profile, path), p2_fci="none"))
    return session.send(cmd, context={"file": path}, allow=(_SW_DEACTIVATED,)).sw


def _plain(session: CardSession) -> None:
    """Drop the secure channels pushed on the session (a fresh, unprotected look at the card)."""
    for proc in session.processors:
        session.remove(proc)


def _fids(profile: Profile, path: str) -> bytes:
    parts = path.split("/")
    return b"".join(profile.file("/".join(parts[: i + 1])).fid for i in range(len(parts)))


def _read_records(session: CardSession, profile: Profile, fs: FileSpec) -> list[bytes]:
    """Every record of ``fs`` (its DF is current), until the card answers 6A83."""
    if not fs.sfi:
        session.send(iso.select_path(_fids(profile, fs.path), p2_fci="none"), context={"file": fs.path})
    out: list[bytes] = []
    for i in range(1, (fs.records or 254) + 1):
        try:
            out.append(session.send(iso.read_record(i, sfi=fs.sfi), context={"file": fs.path}).data)
        except RecordNotFound:
            break
    return out


def _read_binary(session: CardSession, profile: Profile, fs: FileSpec, chunk: int = 223) -> bytes:
    size = fs.size or 0
    out = b""
    if not fs.sfi:
        session.send(iso.select_path(_fids(profile, fs.path), p2_fci="none"), context={"file": fs.path})
    for off in range(0, size, chunk):
        n = min(chunk, size - off)
        cmd = iso.read_binary(0, n, sfi=fs.sfi) if off == 0 and fs.sfi else iso.read_binary(off, n)
        out += session.send(cmd, context={"file": fs.path}).data
    return out


def _record_value(data: bytes) -> tuple[int, bytes] | None:
    """(tag, value) of an SSC-style record (one SIMPLE-TLV object, padding allowed after it), else None."""
    try:
        return parse_simple_tlv_record(data)
    except TlvError:
        return None


def _tlv_objects(data: bytes) -> list[tuple[int, bytes]]:
    """SIMPLE-TLV objects up to the padding (a tag byte 00 or FF is never a tag, ISO 7816-4:2020 §6.3)."""
    end = 0
    while end < len(data) and data[end] not in (0x00, 0xFF):
        if end + 2 > len(data):
            raise TlvError("truncated SIMPLE-TLV object", offset=end)
        end += 2 + data[end + 1] if data[end + 1] != 0xFF else 4 + int.from_bytes(data[end + 2:end + 4], "big")
    if end > len(data):
        raise TlvError("SIMPLE-TLV object runs past the record", offset=len(data))
    return simple_decode(data[:end]) if end else []


def card_fields_from_card(session: CardSession, profile: Profile, names: tuple[str, ...]) -> dict[str, str]:
    """Values of diversification levels ``names`` read from the card (free-to-read files only).

    ``serial`` comes from the ATR; ``region`` from the SSC card identification code (its first three bytes,
    ssc.md "Identifiers"); any other level from a record field in a file whose read rule is ``always``.
    Raises :class:`OperationError` for a level the card does not give away.
    """
    out: dict[str, str] = {}
    for name in names:
        if name == "serial" or name in out:
            continue
        found = _level_from_card(session, profile, name)
        if found is None:
            raise OperationError(f"diversification level {name!r} cannot be read from the card (not in a "
                                 "free-to-read file): this operation cannot compute the card keys")
        out[name] = found
    return out


def _level_from_card(session: CardSession, profile: Profile, name: str) -> str | None:
    for fs in profile.files:
        if fs.rules.get("read") != "always" or not fs.is_record:
            continue
        for spec in fs.fields:
            wanted = (spec.computed == "ssc-card-id" and name == "region") or (spec.field == name and not spec.computed)
            if not wanted:
                continue
            if _select_df(session, profile, fs.parent) == _SW_DEACTIVATED:
                raise OperationError(f"{fs.parent} is deactivated (card blocked): unblock it first")
            for rec in _read_records(session, profile, fs):
                item = _record_value(rec)
                if item is None or item[0] != spec.number:
                    continue
                if spec.computed == "ssc-card-id":
                    return item[1][:3].hex()  # region code, 3 bytes BCD (ssc.md "Identifiers")
                return spec.codec.decode(item[1])
    return None


def _card_key(session: CardSession, profile: Profile, keystore: Keystore, name: str) -> bytes:
    spec = profile.key(name)
    fields = card_fields_from_card(session, profile, spec.diversify)
    return card_key(keystore, profile, name, chip_serial(session.atr), fields)


def open_holder_channel(session: CardSession, profile: Profile, keystore: Keystore,
                        key_name: str | None = None) -> IsoSmChannel:
    """SELECT the key's DF and open secure messaging by mutual authentication with the cardholder SM key."""
    name = key_name or profile.post_issuance.sm_key
    if name is None:
        raise OperationError(f"profile {profile.name!r} names no [post_issuance] sm_key for the cardholder channel")
    spec = profile.key(name)
    if spec.usage != "sm":
        raise OperationError(f"key {name!r} has usage {spec.usage!r}; a secure channel needs usage 'sm'")
    _plain(session)
    value = _card_key(session, profile, keystore, name)
    if _select_df(session, profile, spec.df) == _SW_DEACTIVATED:
        raise OperationError(f"{spec.df} is deactivated (card blocked): unblock it first")
    suite, k_enc, k_mac = static_sm_keys(alg_of(profile.algorithm), value)
    state = mutual_authenticate(session.transmit, suite, k_enc, k_mac, key_ref=spec.p2)
    channel = IsoSmChannel(state)
    session.push(channel)
    return channel


def open_issuer(session: CardSession, profile: Profile, keystore: Keystore) -> IsoSmChannel:
    """The issuer channel: MF key 00 = the diversified issuer key (or the transport key if never rotated)."""
    alg = alg_of(profile.algorithm)
    issuer = profile.issuer_key
    _plain(session)
    value = (_card_key(session, profile, keystore, issuer.name) if issuer is not None
             else keystore.key(profile.transport_key, alg).value)
    return open_issuer_channel(session, alg, value)


def _pin(profile: Profile, name: str, kind: str = "pin") -> PinSpec:
    spec = profile.pin(name)
    if spec.kind != kind:
        raise OperationError(f"{name!r} is a {spec.kind.upper()}, not a {kind.upper()}")
    return spec


def _check_new_pin(spec: PinSpec, value: bytes, what: str) -> None:
    text = value.decode("ascii", "replace")
    if not text.isdigit() or not spec.min_length <= len(text) <= spec.max_length:
        raise RecordError(f"{what} must be {spec.min_length}..{spec.max_length} digits", field=spec.name)


# ------------------------------------------------------------------------------------------ PINs


def pin_status(session: CardSession, profile: Profile, name: str = "pin") -> PinStatus:
    """Tries left of PIN ``name`` from VERIFY without data (63Cx; 6983 blocked) — no try is spent."""
    spec = _pin(profile, name)
    _plain(session)
    sw = _select_df(session, profile, spec.df)
    resp = session.transmit(iso.verify(spec.p2, None))
    if resp.sw == _SW_BLOCKED:
        tries: int | None = 0
    elif resp.sw1 == 0x63 and resp.sw2 & 0xF0 == 0xC0:
        tries = resp.sw2 & 0x0F
    elif resp.sw == _SW_OK:
        tries = None  # already verified in this session: the card does not say how many tries are left
    else:
        from cardkit.sw import error_for

        raise error_for(resp.sw, "VERIFY", context={"PIN": name})
    return PinStatus(name, spec.df, spec.max_tries, tries, tries == 0, sw == _SW_DEACTIVATED)


def change_pin(session: CardSession, profile: Profile, keystore: Keystore, old: bytes, new: bytes, *,
               name: str = "pin") -> None:
    """CHANGE REFERENCE DATA (P1 00: old ‖ new) under the cardholder secure channel."""
    spec = _pin(profile, name)
    _check_new_pin(spec, old, "the current PIN")
    _check_new_pin(spec, new, "the new PIN")
    if old == new:
        raise RecordError("the new PIN equals the current one", field=name)
    open_holder_channel(session, profile, keystore)
    _select_df(session, profile, spec.df)
    session.send(iso.change_reference_data(spec.p2, old, new), context={"PIN": name})
    log.info("PIN %s changed", name)


def unblock_pin(session: CardSession, profile: Profile, keystore: Keystore, puk: bytes, new: bytes, *,
                name: str = "pin") -> None:
    """RESET RETRY COUNTER (P1 00: PUK ‖ new PIN) under the cardholder secure channel."""
    spec = _pin(profile, name)
    puk_spec = profile.puk_for(name)
    if puk_spec is None:
        raise OperationError(f"profile {profile.name!r} has no PUK for PIN {name!r}")
    _check_new_pin(puk_spec, puk, "the PUK")
    _check_new_pin(spec, new, "the new PIN")
    open_holder_channel(session, profile, keystore)
    _select_df(session, profile, spec.df)
    session.send(iso.reset_retry_counter(spec.p2, puk, new), context={"PIN": name, "with": puk_spec.name})
    log.info("PIN %s unblocked with %s", name, puk_spec.name)


# ------------------------------------------------------------------------------------------ life cycle


def _block_target(profile: Profile) -> FileSpec:
    path = profile.post_issuance.block
    if path is None:
        raise OperationError(f"profile {profile.name!r} names no [post_issuance] block DF")
    return profile.file(path)


def _lifecycle(session: CardSession, profile: Profile, keystore: Keystore, cmd: CommandApdu, what: str) -> None:
    target = _block_target(profile)
    open_issuer(session, profile, keystore)
    _select_df(session, profile, target.parent)
    session.send(cmd, context={"file": target.path, "step": what})
    log.info("%s %s", what, target.path)


def block_card(session: CardSession, profile: Profile, keystore: Keystore) -> None:
    """DEACTIVATE FILE of the block DF (issuer channel); reversible with :func:`unblock_card`."""
    _lifecycle(session, profile, keystore, iso.deactivate_file(_block_target(profile).fid), "block")


def unblock_card(session: CardSession, profile: Profile, keystore: Keystore) -> None:
    """ACTIVATE FILE of the block DF (issuer channel)."""
    _lifecycle(session, profile, keystore, iso.activate_file(_block_target(profile).fid), "unblock")


def terminate_card(session: CardSession, profile: Profile, keystore: Keystore) -> None:
    """TERMINATE CARD USAGE (issuer channel). Irreversible: the card answers 6A81 to everything afterwards."""
    open_issuer(session, profile, keystore)
    session.send(iso.terminate_card_usage(), context={"step": "terminate"})
    log.warning("card %s terminated", chip_serial(session.atr).hex().upper())


# ------------------------------------------------------------------------------------------ operations


def encode_operation(op: OperationSpec, values: Mapping[str, str], record_size: int | None = None) -> bytes:
    """The record an operation writes: each given field as SIMPLE-TLV (tag = its position), zero-padded to
    ``record_size``. Raises :class:`~cardkit.errors.RecordError` listing the field (never its value)."""
    unknown = sorted(set(values) - {f.field for f in op.fields})
    if unknown:
        raise RecordError(f"operation {op.name!r} takes no such field", field=unknown[0])
    out = b""
    for spec in op.fields:
        value = values.get(spec.field, "")
        if not value:
            if spec.optional:
                continue
            raise RecordError("required field is missing or empty", field=spec.field)
        for v in spec.validators:
            try:
                VALIDATORS[v](value)
            except RecordError as exc:
                raise RecordError(str(exc), field=spec.field) from None
        assert spec.number is not None
        out += simple_tlv_record(spec.number, spec.codec.encode(value, field=spec.field))
    return out.ljust(record_size, b"\x00") if record_size else out


def decode_operation_record(op: OperationSpec, data: bytes) -> dict[str, str]:
    """The field values of one operation record (padding ignored)."""
    by_tag = {f.number: f for f in op.fields}
    out: dict[str, str] = {}
    try:
        items = _tlv_objects(data)
    except TlvError as exc:
        raise RecordError(f"record is not SIMPLE-TLV: {exc}") from None
    for tag, value in items:
        spec = by_tag.get(tag)
        out[spec.field if spec else f"tag {tag:02X}"] = spec.codec.decode(value) if spec else value.hex().upper()
    return out


@dataclass(frozen=True)
class OperationResult:
    operation: str
    file: str
    #: Record numbers holding the first field's value after the operation (SEARCH RECORD).
    records: tuple[int, ...] = ()


def run_operation(session: CardSession, profile: Profile, keystore: Keystore, name: str,
                  values: Mapping[str, str], pins: Mapping[str, bytes]) -> OperationResult:
    """Run the profile operation ``name``: open the channel of its ``needs``, VERIFY its PINs, write the record.

    Appending refuses a record whose first field already is on the card (SEARCH RECORD, ISO 7816-4:2020
    §11.4.7), so running an operation twice never duplicates it.
    """
    op = profile.operation(name)
    fs = profile.file(op.file)
    data = encode_operation(op, values, fs.record_size if fs.type != "linear-variable" else None)
    sm_keys = [n for n in op.needs if n in {k.name for k in profile.keys}]
    needed_pins = [n for n in op.needs if n not in sm_keys]
    for p in needed_pins:
        if p not in pins:
            raise OperationError(f"operation {name!r} needs PIN {p!r}")
    if sm_keys:
        open_holder_channel(session, profile, keystore, sm_keys[0])
    for p in needed_pins:
        spec = profile.pin(p)
        _select_df(session, profile, spec.df)
        session.send(iso.verify(spec.p2, pins[p]), context={"PIN": p})
    if _select_df(session, profile, fs.parent) == _SW_DEACTIVATED:
        raise OperationError(f"{fs.parent} is deactivated (card blocked)")
    first = simple_tlv_record(1, op.fields[0].codec.encode(values[op.fields[0].field], field=op.fields[0].field))
    if op.action == "append":
        found = session.send(iso.search_record(first, sfi=fs.sfi), context={"file": fs.path}).data
        if found:
            raise OperationError(f"{op.fields[0].field} is already on the card ({fs.path} record "
                                 f"{', '.join(str(b) for b in found)}): not added twice")
        session.send(iso.append_record(data, sfi=fs.sfi), context={"file": fs.path, "operation": name})
    else:
        session.send(iso.update_record(1, data, sfi=fs.sfi), context={"file": fs.path, "operation": name})
    found = session.send(iso.search_record(first, sfi=fs.sfi), context={"file": fs.path}).data
    log.info("operation %s done on %s", name, fs.path)
    return OperationResult(name, fs.path, tuple(found))


# ------------------------------------------------------------------------------------------ dump


def _identifier(profile: Profile, spec: FieldSpec) -> bool:
    return (spec.field == profile.identity_field or spec.field in profile.unique_fields
            or bool(_IDENTIFIER_VALIDATORS & set(spec.validators)))


@dataclass
class CardDump:
    """What ``cardkit dump`` shows: per file, the decoded fields or why the file was not read."""

    profile: str
    chip_serial: str
    atr: str
    state: str = "operational"
    channel: str = "none"
    files: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "chip_serial": self.chip_serial, "atr": self.atr, "state": self.state,
                "channel": self.channel, "files": self.files}

    def lines(self) -> list[str]:
        """The dump as text (``cardkit dump``)."""
        out = [f"chip {self.chip_serial}  profile {self.profile}  state {self.state}  channel {self.channel}"]
        for f in self.files:
            head = f"{f['path']} ({f['fid']}, {f['type']})"
            if "not_read" in f:
                out.append(f"{head}: not read — {f['not_read']}")
            elif "error" in f:
                out.append(f"{head}: {f['error']}")
            else:
                out.append(head + (" — deactivated" if f.get("state") == "deactivated" else "")
                           + (" — empty" if f.get("size") == 0 or f.get("records") == [] else ""))
            for r in f.get("records", []):
                if "fields" in r:
                    out.append(f"  {r['record']:>3}: " + ", ".join(f"{k}={v}" for k, v in r["fields"].items()))
                else:
                    out.append(f"  {r['record']:>3}: " + (f"{r['field']} = {r['value']}" if "field" in r
                                                          else str(r.get("raw", ""))))
            out += [f"  {k} = {v}" for k, v in f.get("fields", {}).items()]
        return out


def _show(profile: Profile, spec: FieldSpec, raw: bytes, unmask: bool) -> str:
    try:
        value = spec.codec.decode(raw)
    except (RecordError, ProfileError):
        return f"<undecodable {len(raw)} bytes>"
    if spec.codec.kind == "file":
        return f"<{len(raw)} bytes sha256:{hashlib.sha256(raw).hexdigest()[:16]}>"
    return value if unmask or not _identifier(profile, spec) else mask_identifier(value)


def read_card(session: CardSession, profile: Profile, *, keystore: Keystore | None = None,
              pins: Mapping[str, bytes] | None = None, unmask: bool = False) -> CardDump:
    """Decode every file of the profile on the card, through its access rules.

    With ``keystore`` the cardholder secure channel is opened first (so "sm" conditions hold and PINs travel
    protected) and external authentications are done; ``pins`` opens PIN-protected files.
    """
    serial = chip_serial(session.atr)
    dump = CardDump(profile.name, serial.hex().upper(), session.atr.hex().upper())
    _plain(session)
    probe = session.transmit(iso.select_mf(p2_fci="none"))
    if probe.sw == _SW_TERMINATED:
        dump.state = "terminated"
        return dump
    top = [fs for fs in profile.files if fs.parent == "MF"]
    if top and all(session.transmit(iso.select_path(fs.fid, p2_fci="none")).sw == 0x6A82 for fs in top):
        dump.state = "not personalized (no file of the profile)"
        return dump
    sm = False
    if keystore is not None and profile.post_issuance.sm_key:
        try:
            open_holder_channel(session, profile, keystore)
            sm = True
            dump.channel = f"secure messaging ({profile.post_issuance.sm_key})"
        except (OperationError, StatusWordError, SecureChannelError) as exc:
            dump.channel = f"none ({profile.post_issuance.sm_key}: {exc})"
            _plain(session)
    done: set[tuple[str, str]] = set()
    ops_by_file = {o.file: o for o in profile.operations.values()}
    for fs in profile.files:
        entry: dict[str, Any] = {"path": fs.path, "fid": fs.fid.hex().upper(), "type": fs.type}
        dump.files.append(entry)
        if fs.is_df:
            try:
                if _select_df(session, profile, fs.path) == _SW_DEACTIVATED:
                    entry["state"] = "deactivated"
                    dump.state = "blocked"
            except StatusWordError as exc:
                entry["error"] = f"{exc.sw:04X} {exc.meaning}"
            continue
        actions, why = satisfy(profile, fs.rules.get("read", "never"), fs.parent, issuer=False, sm=sm,
                               keys=keystore is not None, pins=pins, record_keys=False)
        if actions is None:
            entry["not_read"] = f"read {why}"
            continue
        try:
            _select_df(session, profile, fs.parent)
            for action in actions:
                if action in done:
                    continue
                if action[0] == "mutual-auth":  # pragma: no cover - record keys are never offered here
                    raise OperationError(f"{fs.path}: needs a channel under key {action[1]!r}")
                if action[0] == "external-auth":
                    assert keystore is not None
                    key = profile.key(action[1])
                    value = _card_key(session, profile, keystore, action[1])
                    _select_df(session, profile, fs.parent)
                    external_authenticate(session.transmit, alg_of(profile.algorithm), value, key.p2)
                else:
                    assert pins is not None
                    pin = profile.pin(action[1])
                    session.send(iso.verify(pin.p2, pins[action[1]]), context={"PIN": action[1]})
                done.add(action)
            if fs.is_record:
                entry["records"] = _decode_records(profile, fs, _read_records(session, profile, fs),
                                                   ops_by_file.get(fs.path), unmask)
            else:
                data = _read_binary(session, profile, fs)
                spec = fs.fields[0] if fs.fields else None
                content = data.rstrip(b"\x00")
                entry["size"] = len(content)
                if spec is not None and content:
                    entry["fields"] = {spec.field: _show(profile, spec, content, unmask)}
        except StatusWordError as exc:
            entry["error"] = f"{exc.sw:04X} {exc.meaning}"
    return dump


def _decode_records(profile: Profile, fs: FileSpec, records: list[bytes], op: OperationSpec | None,
                    unmask: bool) -> list[dict[str, Any]]:
    by_number = {f.number: f for f in fs.fields}
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(records, start=1):
        row: dict[str, Any] = {"record": i}
        if op is not None:
            try:
                values = decode_operation_record(op, rec)
            except RecordError:
                row["raw"] = f"<{len(rec)} bytes, not SIMPLE-TLV>"
            else:
                specs = {f.field: f for f in op.fields}
                row["fields"] = {k: (v if unmask or k not in specs or not _identifier(profile, specs[k])
                                     else mask_identifier(v)) for k, v in values.items()}
            out.append(row)
            continue
        item = _record_value(rec)
        if item is None:
            row["raw"] = f"<{len(rec)} bytes, not one SIMPLE-TLV object>"
        else:
            tag, value = item
            spec = by_number.get(tag)
            row["tag"] = tag
            if spec is None:
                row["raw"] = value.hex().upper()
            else:
                row["field"] = spec.field
                row["value"] = _show(profile, spec, value, unmask)
        out.append(row)
    return out
