"""Command and response APDUs (ISO/IEC 7816-3:2006 §12.1, ISO/IEC 7816-4:2020 §5.1).

Values are immutable and hold bytes. A :class:`CommandApdu` encodes itself in the short or the extended
form and parses from bytes, rejecting malformed input with :class:`~cardkit.errors.ApduFormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cardkit.errors import ApduFormatError

#: Le value meaning "as many bytes as available" in the short form (encoded 00) — ISO 7816-4 §5.1.
LE_MAX_SHORT = 256
#: Le value meaning "as many bytes as available" in the extended form (encoded 0000).
LE_MAX_EXTENDED = 65536

__all__ = ["LE_MAX_EXTENDED", "LE_MAX_SHORT", "CommandApdu", "ResponseApdu"]


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A command APDU: header CLA INS P1 P2, optional command data, optional Le.

    ``le`` is ``None`` when no response data is expected (cases 1 and 3), otherwise 1..65536
    (256 is short-form ``00``; 65536 is extended-form ``0000``). ``extended`` forces the extended
    encoding; it is chosen automatically when the data or Le does not fit the short form.
    """

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    le: int | None = None
    extended: bool = field(default=False, compare=False)
    #: A label for errors and traces, e.g. "SELECT", "READ RECORD". Not encoded.
    name: str = field(default="", compare=False)
    #: True when the command data is secret (PINs, keys, cryptograms): traces show only its length.
    sensitive: bool = field(default=False, compare=False)
    #: The encoding, computed once (the value is immutable).
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for label, v in (("CLA", self.cla), ("INS", self.ins), ("P1", self.p1), ("P2", self.p2)):
            if not isinstance(v, int) or not 0 <= v <= 0xFF:
                raise ApduFormatError(f"{label} must be a byte 00..FF, got {v!r}")
        if not isinstance(self.data, bytes | bytearray):
            raise ApduFormatError(f"command data must be bytes, got {type(self.data).__name__}")
        if isinstance(self.data, bytearray):
            object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > 65535:
            raise ApduFormatError(f"command data of {len(self.data)} bytes exceeds 65535 (ISO 7816-4 §5.1)")
        if self.le is not None and not 1 <= self.le <= LE_MAX_EXTENDED:
            raise ApduFormatError(f"Le must be 1..65536 or None, got {self.le}")
        if self.ins & 0xF0 in (0x60, 0x90):
            raise ApduFormatError(f"INS {self.ins:02X} is invalid (6X and 9X are reserved, ISO 7816-3 §10.3.2)")

    # ---------------------------------------------------------------- properties
    @property
    def case(self) -> int:
        """ISO 7816-3 §12.1.2 case: 1 (no data, no Le), 2 (Le only), 3 (data only), 4 (both)."""
        if self.data:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    @property
    def needs_extended(self) -> bool:
        return len(self.data) > 255 or (self.le is not None and self.le > LE_MAX_SHORT)

    @property
    def is_extended(self) -> bool:
        return self.extended or self.needs_extended

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    @property
    def label(self) -> str:
        return self.name or f"INS {self.ins:02X}"

    # ---------------------------------------------------------------- encoding
    def to_bytes(self) -> bytes:
        if self._raw is not None:
            return self._raw
        raw = self._encode()
        object.__setattr__(self, "_raw", raw)
        return raw

    def _encode(self) -> bytes:
        out = bytearray(self.header)
        ext = self.is_extended
        if self.data:
            n = len(self.data)
            out += b"\x00" + n.to_bytes(2, "big") if ext else bytes((n,))
            out += self.data
        if self.le is not None:
            if ext:
                le = 0 if self.le == LE_MAX_EXTENDED else self.le
                # Case 2E has a leading 00; case 4E carries Le in two bytes after the data.
                out += (b"" if self.data else b"\x00") + le.to_bytes(2, "big")
            else:
                out.append(0 if self.le == LE_MAX_SHORT else self.le)
        return bytes(out)

    __bytes__ = to_bytes

    def hex(self) -> str:
        return self.to_bytes().hex().upper()

    def replace(self, **changes: object) -> CommandApdu:
        """A copy with some fields changed (``dataclasses.replace`` that keeps the name)."""
        from dataclasses import replace as _replace

        return _replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray) -> CommandApdu:
        """Parse an encoded C-APDU (any of the cases 1, 2S, 3S, 4S, 2E, 3E, 4E)."""
        raw = bytes(raw)
        n = len(raw)
        if n < 4:
            raise ApduFormatError(f"a command APDU needs at least 4 header bytes, got {n}")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        body = raw[4:]
        b = len(body)
        if ins & 0xF0 in (0x60, 0x90):
            raise ApduFormatError(f"INS {ins:02X} is invalid (6X and 9X are reserved)", offset=1)
        if b == 0:  # case 1
            return cls(cla, ins, p1, p2)
        if b == 1:  # case 2S
            return cls(cla, ins, p1, p2, le=body[0] or LE_MAX_SHORT)
        if body[0] != 0:  # short form with Lc
            lc = body[0]
            if b == 1 + lc:  # case 3S
                return cls(cla, ins, p1, p2, data=body[1:])
            if b == 2 + lc:  # case 4S
                return cls(cla, ins, p1, p2, data=body[1 : 1 + lc], le=body[-1] or LE_MAX_SHORT)
            raise ApduFormatError(
                f"Lc={lc} announces {lc} data bytes but the body after Lc has {b - 1}", offset=4
            )
        # body[0] == 0 and b >= 2: extended form
        if b == 3:  # case 2E
            le = int.from_bytes(body[1:3], "big") or LE_MAX_EXTENDED
            return cls(cla, ins, p1, p2, le=le, extended=True)
        if b < 3:
            raise ApduFormatError(f"extended length field truncated ({b} body bytes)", offset=4)
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise ApduFormatError("extended Lc of 0 is invalid", offset=5)
        if b == 3 + lc:  # case 3E
            return cls(cla, ins, p1, p2, data=body[3:], extended=True)
        if b == 5 + lc:  # case 4E
            le = int.from_bytes(body[-2:], "big") or LE_MAX_EXTENDED
            return cls(cla, ins, p1, p2, data=body[3 : 3 + lc], le=le, extended=True)
        raise ApduFormatError(
            f"extended Lc={lc} does not match the {b - 3} bytes that follow it", offset=5
        )


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """A response APDU: response data and the status word SW1 SW2."""

    data: bytes
    sw1: int
    sw2: int

    def __post_init__(self) -> None:
        if not (0 <= self.sw1 <= 0xFF and 0 <= self.sw2 <= 0xFF):
            raise ApduFormatError(f"status bytes out of range: {self.sw1!r} {self.sw2!r}")
        if isinstance(self.data, bytearray):
            object.__setattr__(self, "data", bytes(self.data))

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    @property
    def ok(self) -> bool:
        """True for 9000 (and 61xx, which means success with more data waiting)."""
        return self.sw == 0x9000 or self.sw1 == 0x61

    def to_bytes(self) -> bytes:
        return self.data + bytes((self.sw1, self.sw2))

    __bytes__ = to_bytes

    def hex(self) -> str:
        return self.to_bytes().hex().upper()

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray) -> ResponseApdu:
        if len(raw) < 2:
            raise ApduFormatError(f"a response APDU needs at least SW1 SW2, got {len(raw)} bytes")
        # Fast path (one per APDU): the fields are valid by construction, skip __post_init__.
        obj = object.__new__(cls)
        object.__setattr__(obj, "data", bytes(raw[:-2]))
        object.__setattr__(obj, "sw1", raw[-2])
        object.__setattr__(obj, "sw2", raw[-1])
        return obj

    @classmethod
    def of(cls, sw: int, data: bytes = b"") -> ResponseApdu:
        return cls(data, (sw >> 8) & 0xFF, sw & 0xFF)
