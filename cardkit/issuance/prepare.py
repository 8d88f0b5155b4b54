"""Data preparation: validate a record against a profile and encode every field, with no card I/O.

Preparation is separable from personalization so that it runs ahead and in bulk (``cardkit batch``
validates a whole file before any card is touched). What depends on the card itself — the chip serial in
the card identification code, keys diversified with the serial — is finished at card time by the plan.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cardkit.errors import RecordError
from cardkit.profiles.codecs import simple_tlv_record
from cardkit.profiles.model import FieldSpec, Profile
from cardkit.profiles.validators import VALIDATORS, check_id_consistency

if TYPE_CHECKING:
    from cardkit.keys.store import Keystore

__all__ = ["PreparedRecord", "RecordProblems", "known_fields", "prepare", "validate_record"]


class RecordProblems(RecordError):
    """Every problem of one record at once (``problems`` holds each :class:`RecordError`)."""

    def __init__(self, problems: list[RecordError], *, line: int | None = None) -> None:
        self.problems = problems
        first = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        super().__init__(f"{len(problems)} problem(s): {first}{more}", line=line)


@dataclass(frozen=True)
class PreparedRecord:
    """A record encoded for one profile: bytes per file, ready to be planned onto a card.

    ``records`` maps a record-file path to {record number: SIMPLE-TLV record bytes}; ``binaries`` maps a
    transparent-file path to its content. ``pins`` holds the initial PIN/PUK values (secret; never logged).
    ``card_fields`` are the field values needed at card time (diversification levels, computed fields).
    """

    profile: str
    algorithm: str
    identity: str
    records: Mapping[str, Mapping[int, bytes]]
    binaries: Mapping[str, bytes]
    pins: Mapping[str, bytes] = field(repr=False)
    card_fields: Mapping[str, str] = field(repr=False)
    #: Key values computed from the record (key hooks, e.g. the BAC key seed) — secret.
    record_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # never show personal data or PINs
        return f"PreparedRecord(profile={self.profile!r}, files={len(self.records) + len(self.binaries)})"


def _value(spec: FieldSpec, fields: Mapping[str, str]) -> str | None:
    raw = fields.get(spec.field)
    if raw is None or raw == "":
        return spec.default
    return raw


def validate_record(profile: Profile, fields: Mapping[str, str], *, line: int | None = None,
                    check_unknown: bool = True) -> list[RecordError]:
    """All problems of one record (empty list = valid). Never raises for bad data."""
    return _check(profile, fields, line, check_unknown, None)


def _check(profile: Profile, fields: Mapping[str, str], line: int | None, check_unknown: bool,
           encoded: dict[tuple[str, str], bytes] | None) -> list[RecordError]:
    """Every problem of one record; with ``encoded``, also keep each field's encoding ((path, field) -> bytes)
    so :func:`prepare` does not encode twice."""
    problems: list[RecordError] = []
    known = {f.field for f in profile.record_fields}
    for fs in profile.files:
        for spec in fs.fields:
            if spec.computed is not None:
                continue
            value = _value(spec, fields)
            if value is None:
                if not (spec.optional or fs.optional):
                    problems.append(RecordError("required field is missing or empty", field=spec.field, line=line))
                continue
            for name in spec.validators:
                try:
                    VALIDATORS[name](value)
                except RecordError as exc:
                    problems.append(RecordError(_strip(exc), field=spec.field, line=line))
            try:
                data = spec.codec.encode(value, field=spec.field)
            except RecordError as exc:
                problems.append(RecordError(_strip(exc), field=spec.field, line=line))
            else:
                if encoded is not None:
                    encoded[(fs.path, spec.field)] = data
    if _has_id_checks(profile) and not any(p.field == profile.identity_field for p in problems):
        try:
            check_id_consistency(fields, profile.identity_field,
                                 "birth_date" if "birth_date" in known else None,
                                 "gender" if "gender" in known else None)
        except RecordError as exc:
            problems.append(RecordError(_strip(exc), field=exc.field or profile.identity_field, line=line))
    for pin in profile.pins:
        if pin.initial.startswith("field:"):
            name = pin.initial[6:]
            v = fields.get(name, "")
            if not (v.isdigit() and pin.min_length <= len(v) <= pin.max_length):
                problems.append(RecordError(f"initial {pin.kind.upper()} must be {pin.min_length}..{pin.max_length} "
                                            "digits", field=name, line=line))
    if profile.content:
        from cardkit.issuance.hooks import content_validator

        validate = content_validator(profile.content)
        if validate is not None:
            problems.extend(validate(fields, line=line))
    if fields.get("region"):
        # Not stored as a field but used at card time: the card identification code and key diversification.
        try:
            VALIDATORS["region-code"](fields["region"])
        except RecordError as exc:
            problems.append(RecordError(_strip(exc), field="region", line=line))
    if check_unknown:
        every = known_fields(profile)
        for name in fields:
            if name not in every:
                problems.append(RecordError("unknown column (not mapped by the profile)", field=name, line=line))
    return problems


# Columns that are not stored on the card but are used at card time (diversification levels).
_EXTRA_FIELDS = frozenset({"region", "phone"})


def known_fields(profile: Profile) -> set[str]:
    """Every record column the profile uses: mapped fields, content-hook fields, PIN fields, card-time fields."""
    known = {f.field for f in profile.record_fields} | set(_EXTRA_FIELDS)
    known |= {p.initial[6:] for p in profile.pins if p.initial.startswith("field:")}
    if profile.content:
        from cardkit.issuance.hooks import content_fields

        known |= set(content_fields(profile.content))
    return known


def _strip(exc: RecordError) -> str:
    """The message of a RecordError without its own 'line/field' prefix (it is re-attached)."""
    text = str(exc)
    if exc.field is not None or exc.line is not None:
        _, _, rest = text.partition(": ")
        return rest or text
    return text


def _has_id_checks(profile: Profile) -> bool:
    for spec in profile.record_fields:
        if spec.field == profile.identity_field and "citizen-id" in spec.validators:
            return True
    return False


def _generate_pin(length: int, rng: Callable[[int], int]) -> bytes:
    return "".join(str(rng(10)) for _ in range(length)).encode("ascii")


def prepare(profile: Profile, fields: Mapping[str, str], *, line: int | None = None,
            rng: Callable[[int], int] = secrets.randbelow, keystore: Keystore | None = None) -> PreparedRecord:
    """Validate and encode one record; raise :class:`RecordProblems` listing every problem.

    ``keystore`` is needed only by profiles whose content hook signs data (e.g. the eMRTD EF.SOD).
    """
    encoded: dict[tuple[str, str], bytes] = {}
    problems = _check(profile, fields, line, True, encoded)
    if problems:
        raise RecordProblems(problems, line=line)
    records: dict[str, dict[int, bytes]] = {}
    binaries: dict[str, bytes] = {}
    for fs in profile.files:
        for spec in fs.fields:
            data = encoded.get((fs.path, spec.field))
            if data is None:  # computed at card time, or an absent optional field
                continue
            if spec.number is None:
                binaries[fs.path] = data
            else:
                records.setdefault(fs.path, {})[spec.number] = simple_tlv_record(spec.number, data)
    pins: dict[str, bytes] = {}
    for pin in profile.pins:
        if pin.initial == "generate":
            pins[pin.name] = _generate_pin(pin.max_length, rng)
        elif pin.initial.startswith("field:"):
            pins[pin.name] = fields[pin.initial[6:]].encode("ascii")
        else:
            pins[pin.name] = pin.initial[6:].encode("ascii")
    if profile.content:
        from cardkit.issuance.hooks import content_hook

        binaries.update(content_hook(profile.content)(profile, fields, keystore))
    record_keys: dict[str, bytes] = {}
    for spec_key in profile.keys:
        if spec_key.master.startswith("record:"):
            from cardkit.issuance.hooks import key_hook

            record_keys[spec_key.name] = key_hook(spec_key.master[7:])(profile, spec_key, fields)
    card_fields = {k: v for k, v in fields.items() if k in _EXTRA_FIELDS or k == profile.identity_field}
    return PreparedRecord(profile.name, profile.algorithm, fields.get(profile.identity_field, ""), records, binaries,
                          pins, card_fields, record_keys)
