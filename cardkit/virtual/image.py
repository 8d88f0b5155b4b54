"""Card images (save / load a whole virtual card as JSON) and :class:`CardFeeder` (fresh blank cards).

Format (version 1)::

    {"format": "cardkit-virtual-card", "version": 1, "serial": "01020304", "terminated": false,
     "options": {...CardOptions...}, "data_objects": {"5F50": "..."}, "mf": NODE}
    NODE (DF) = {"type": "df", "fid": "3F00", "name": "A000..." | null, "lcs": 5, "rules": {"read": "always"},
                 "pins": [SECRET], "puks": [SECRET], "keys": [KEY], "children": [NODE, ...]}
    NODE (EF) = {"type": "ef", "fid": "2F00", "structure": "transparent" | "linear-fixed" | "linear-variable" |
                 "cyclic", "sfi": 1 | null, "size": n, "record_size": n, "record_count": n, "data": "hex",
                 "records": ["hex", ...], "lcs": 5, "rules": {...}}
    SECRET = {"ref": 1, "value": "hex", "max_tries": 3, "tries_left": 3, "rules": {...}}
    KEY    = SECRET + {"alg": "aes" | "3des" | "sm4", "usage": 1 | 2}

**An image of a personalized card holds its keys and PINs in clear hex.** :func:`save_image` creates the file
with mode 0600 (and replaces it atomically); treat images of test cards like key files. Registered applications,
the mutual-authentication handler and the random generator are code, not data: they are not saved.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cardkit.acl import AccessRules, AclError
from cardkit.crypto import Alg
from cardkit.errors import ParseError
from cardkit.fsutil import write_private
from cardkit.virtual.card import CardOptions, VirtualCard
from cardkit.virtual.fs import DF, EF, MF_FID, EfType, FileNode, Lcs, SwError, VirtualCardError
from cardkit.virtual.security import KeyObject, KeyUsage, PinObject

__all__ = ["FORMAT", "VERSION", "CardFeeder", "ImageError", "card_from_dict", "card_to_dict", "load_image",
           "save_image"]

log = logging.getLogger(__name__)

FORMAT = "cardkit-virtual-card"
VERSION = 1
_STRUCTURES = {EfType.TRANSPARENT: "transparent", EfType.LINEAR_FIXED: "linear-fixed",
               EfType.LINEAR_VARIABLE: "linear-variable", EfType.CYCLIC: "cyclic"}
_STRUCTURE_NAMES = {v: k for k, v in _STRUCTURES.items()}


class ImageError(ParseError):
    """A card image that is not valid (wrong format, version, or inconsistent content)."""


# ------------------------------------------------------------------------------------------- save


def _secret(obj: PinObject | KeyObject) -> dict[str, Any]:
    out: dict[str, Any] = {"ref": obj.ref, "value": obj.value.hex().upper(), "max_tries": obj.max_tries,
                           "tries_left": obj.tries_left, "rules": obj.rules.to_text()}
    if isinstance(obj, KeyObject):
        out["alg"] = obj.alg.value
        out["usage"] = int(obj.usage)
    return out


def _node(node: FileNode) -> dict[str, Any]:
    out: dict[str, Any] = {"fid": None if node.fid is None else f"{node.fid:04X}", "lcs": int(node.lcs),
                           "rules": node.rules.to_text()}
    if isinstance(node, DF):
        out.update(type="df", name=node.name.hex().upper() if node.name else None,
                   pins=[_secret(p) for p in node.pins.values()], puks=[_secret(p) for p in node.puks.values()],
                   keys=[_secret(k) for k in node.keys.values()], children=[_node(c) for c in node.children])
    elif isinstance(node, EF):
        out.update(type="ef", structure=_STRUCTURES[node.structure], sfi=node.sfi, size=node.size,
                   record_size=node.record_size, record_count=node.record_count, data=node.data.hex().upper(),
                   records=[r.hex().upper() for r in node.records])
    return out


def card_to_dict(card: VirtualCard) -> dict[str, Any]:
    """The image of ``card`` as plain JSON-ready data (holds secrets in hex)."""
    from cardkit.virtual.gp import gp_to_dict

    o = card.options
    out: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "serial": card.serial.hex().upper(),
        "terminated": card.terminated,
        "options": {"t0_style": o.t0_style, "extended_length": o.extended_length, "max_command": o.max_command,
                    "max_response": o.max_response, "apdu_latency_s": o.apdu_latency_s,
                    "write_latency_per_byte_s": o.write_latency_per_byte_s, "memory_size": o.memory_size},
        "data_objects": {f"{t:04X}": v.hex().upper() for t, v in sorted(card.data_objects.items())},
        "mf": _node(card.mf),
    }
    gp = gp_to_dict(card)
    if gp is not None:
        out["gp"] = gp  # the GlobalPlatform issuer security domain (cardkit/virtual/gp.py)
    return out


def save_image(card: VirtualCard, path: str | Path) -> None:
    """Write the image to ``path`` with mode 0600, atomically (temporary file + rename)."""
    text = json.dumps(card_to_dict(card), indent=1, sort_keys=True)
    target = write_private(path, text.encode("utf-8"), durable=False)
    log.info("saved card image %s (%d files)", target.name, len(card.files()))


# ------------------------------------------------------------------------------------------- load


def _hex(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ImageError(f"{what} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ImageError(f"{what} is not valid hex") from None


def _int(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ImageError(f"{key} must be an integer {lo}..{hi}, got {v!r}")
    return v


def _rules(d: dict[str, Any]) -> AccessRules:
    raw = d.get("rules", {})
    if not isinstance(raw, dict):
        raise ImageError("rules must be an object")
    try:
        return AccessRules.from_text(raw)
    except AclError as exc:
        raise ImageError(f"rules: {exc}") from None


def _load_secrets(df: DF, d: dict[str, Any]) -> None:
    for kind in ("pins", "puks", "keys"):
        items = d.get(kind, [])
        if not isinstance(items, list):
            raise ImageError(f"{kind} must be a list")
        for item in items:
            if not isinstance(item, dict):
                raise ImageError(f"{kind} entries must be objects")
            ref = _int(item, "ref", 0, 0x1F)
            max_tries = _int(item, "max_tries", 1, 15)
            tries_left = _int(item, "tries_left", 0, max_tries)
            value = _hex(item.get("value"), f"{kind} value")
            rules = _rules(item)
            if kind == "keys":
                try:
                    alg = Alg(item.get("alg"))
                except ValueError:
                    raise ImageError(f"unknown key algorithm {item.get('alg')!r}") from None
                usage = _int(item, "usage", 1, 2)
                key = df.set_key(ref, alg, KeyUsage(usage), value, max_tries=max_tries, rules=rules)
                key.tries_left = tries_left
            else:
                pin = df.set_pin(ref, value, max_tries=max_tries, rules=rules, puk=kind == "puks")
                pin.tries_left = tries_left


def _load_node(parent: DF, d: dict[str, Any], depth: int) -> None:
    if not isinstance(d, dict) or depth > 16:
        raise ImageError("file entries must be objects (nested at most 16 deep)")
    fid_raw = _hex(d.get("fid"), "fid")
    if len(fid_raw) != 2:
        raise ImageError("fid must be 2 bytes")
    fid = int.from_bytes(fid_raw, "big")
    try:
        lcs = Lcs.from_byte(_int(d, "lcs", 0, 0xFF))
    except SwError:
        raise ImageError(f"file {fid:04X}: bad life-cycle status") from None
    rules = _rules(d)
    if d.get("type") == "df":
        name = _hex(d["name"], "name") if d.get("name") else None
        df = parent.add_df(fid, name=name, rules=rules)
        df.lcs = lcs
        _fill_df(df, d, depth)
    elif d.get("type") == "ef":
        structure = _STRUCTURE_NAMES.get(d.get("structure", ""))
        if structure is None:
            raise ImageError(f"file {fid:04X}: unknown structure {d.get('structure')!r}")
        sfi = d.get("sfi")
        if sfi is not None and (not isinstance(sfi, int) or isinstance(sfi, bool)):
            raise ImageError(f"file {fid:04X}: sfi must be an integer or null")
        records = d.get("records", [])
        if not isinstance(records, list):
            raise ImageError(f"file {fid:04X}: records must be a list")
        ef = parent.add_ef(fid, structure, size=_int(d, "size", 0, 0x8000),
                           record_size=_int(d, "record_size", 0, 255), record_count=_int(d, "record_count", 0, 254),
                           sfi=sfi if sfi is not None else False, rules=rules,
                           data=_hex(d.get("data", ""), "data"),
                           records=[_hex(r, "record") for r in records])
        ef.lcs = lcs
    else:
        raise ImageError(f"file {fid:04X}: type must be 'df' or 'ef'")


def _fill_df(df: DF, d: dict[str, Any], depth: int) -> None:
    _load_secrets(df, d)
    children = d.get("children", [])
    if not isinstance(children, list):
        raise ImageError("children must be a list")
    for child in children:
        _load_node(df, child, depth + 1)


def card_from_dict(d: dict[str, Any]) -> VirtualCard:
    """Rebuild a card from :func:`card_to_dict` output."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ImageError(f"not a {FORMAT} image")
    if d.get("version") != VERSION:
        raise ImageError(f"image version {d.get('version')!r} is not supported (this cardkit reads {VERSION})")
    serial = _hex(d.get("serial"), "serial")
    opts = d.get("options", {})
    if not isinstance(opts, dict):
        raise ImageError("options must be an object")
    try:
        options = CardOptions(**opts)
        mf_d = d.get("mf")
        if not isinstance(mf_d, dict) or mf_d.get("type") != "df" or mf_d.get("fid") != f"{MF_FID:04X}":
            raise ImageError("the image has no MF")
        card = VirtualCard(serial, options=options, mf_rules=_rules(mf_d))
        card.mf.lcs = Lcs.from_byte(_int(mf_d, "lcs", 0, 0xFF))
        _fill_df(card.mf, mf_d, 0)
        card.terminated = bool(d.get("terminated", False))
        dos = d.get("data_objects", {})
        if not isinstance(dos, dict):
            raise ImageError("data_objects must be an object")
        for tag, value in dos.items():
            card.data_objects[int.from_bytes(_hex(tag, "data object tag"), "big")] = _hex(value, "data object")
        if "gp" in d:
            from cardkit.virtual.gp import gp_from_dict
            from cardkit.virtual.gp_registry import GpImageError

            try:
                gp_from_dict(card, d["gp"])
            except GpImageError as exc:
                raise ImageError(f"GlobalPlatform part: {exc}") from None
    except (TypeError, KeyError, SwError) as exc:
        raise ImageError(f"inconsistent image: {type(exc).__name__}") from None
    except VirtualCardError as exc:
        raise ImageError(f"inconsistent image: {exc}") from None
    return card


def load_image(path: str | Path) -> VirtualCard:
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImageError(f"cannot read card image {Path(path).name}: {type(exc).__name__}") from None
    return card_from_dict(data)


# ------------------------------------------------------------------------------------------ feeder


class CardFeeder:
    """Hands out fresh blank cards with unique serials for batches.

    The next serial number lives in ``directory/feeder.json`` and is advanced under an exclusive file lock, so
    feeders in several processes sharing the directory never hand out the same serial. Serials are
    ``prefix`` (1 byte) ‖ a 3-byte counter. The transport key is held in memory only.
    """

    STATE = "feeder.json"

    def __init__(self, directory: str | Path, transport_key: bytes, alg: Alg = Alg.AES, *, prefix: int = 0xC0,
                 options: CardOptions | None = None, seed: int | None = None, gp_keys: Any = None,
                 scp: int = 3) -> None:
        """``gp_keys`` (a :class:`~cardkit.sm.gp.GpKeySet`) gives every card a GlobalPlatform issuer security
        domain with that key set (``scp`` 3 for AES, 2 for 3DES)."""
        if not 0 <= prefix <= 0xFF:
            raise VirtualCardError("serial prefix must be a byte")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.transport_key = bytes(transport_key)
        self.alg = alg
        self.prefix = prefix
        self.options = options
        self.seed = seed
        self.gp_keys = gp_keys
        self.scp = scp
        self.issued = 0
        # fail early on a bad key rather than at the first card
        VirtualCard.blank(b"\x00\x00\x00\x00", self.transport_key, alg)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / ".feeder.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _take_number(self) -> int:
        state = self.directory / self.STATE
        with self._locked():
            try:
                nxt = json.loads(state.read_text(encoding="utf-8")).get("next", 1) if state.exists() else 1
            except (OSError, json.JSONDecodeError, AttributeError):
                raise ImageError(f"feeder state {state.name} is unreadable") from None
            if not isinstance(nxt, int) or not 1 <= nxt <= 0xFFFFFF:
                raise ImageError("feeder serial counter exhausted or invalid")
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps({"next": nxt + 1, "prefix": f"{self.prefix:02X}"}), encoding="utf-8")
            os.replace(tmp, state)
        return nxt

    def next_card(self) -> VirtualCard:
        """A new blank card with a serial never handed out from this directory before."""
        n = self._take_number()
        serial = bytes((self.prefix,)) + n.to_bytes(3, "big")
        seed = None if self.seed is None else self.seed + n
        self.issued += 1
        card = VirtualCard.blank(serial, self.transport_key, self.alg, options=self.options, seed=seed)
        if self.gp_keys is not None:
            from cardkit.virtual.gp import install_isd

            install_isd(card, self.gp_keys, self.scp)
        return card

    def take(self, count: int) -> list[VirtualCard]:
        return [self.next_card() for _ in range(count)]

    def __iter__(self) -> Iterator[VirtualCard]:
        while True:
            yield self.next_card()
