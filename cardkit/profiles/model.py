"""Card application profiles: declarative data loaded from ``applets/<name>/profile.toml``.

A profile says what a personalized card holds: the DF/EF tree with access rules, the keys and PINs with
where their values come from, the secure channel to personalize under, the mapping from record fields
to files and records through typed codecs and validators, and the post-issuance operations. :func:`load_profile`
(in :mod:`cardkit.profiles.loader`, re-exported here) validates all of it with precise errors (file, line, key,
what is wrong) before any card is touched.

Key and PIN references: ``ref`` is the reference *number* (ISO 7816-4:2020 §7.5.1, P2 b5-b1, 0..31). It may be
written with b8 set (``0x81``) for an object placed in a DF other than the MF; the loader stores the number and
:attr:`KeySpec.p2` / :attr:`PinSpec.p2` give the P2 byte a command uses (b8 = 1 "specific": the object of the
current DF, the virtual card then also searches the parents; b8 = 0 "global": the MF's object).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cardkit.errors import ProfileError
from cardkit.profiles.codecs import Codec

__all__ = [
    "FILE_TYPES", "FieldSpec", "FileSpec", "KeySpec", "OperationSpec", "PinSpec", "PostIssuance", "Profile",
    "find_profile", "load_profile",
]

#: File structures (ISO 7816-4:2020 §7.3.2) and "df".
FILE_TYPES = ("df", "transparent", "linear-fixed", "linear-variable", "cyclic")
RECORD_TYPES = ("linear-fixed", "linear-variable", "cyclic")
CHANNELS = ("iso-sm", "scp03", "scp02", "none")
ALGORITHMS = ("sm4", "3des", "aes")
KEY_USAGES = ("sm", "external-auth")
LCS = ("creation", "initialization", "operational")
COMPUTED = ("ssc-card-id",)
OPERATION_ACTIONS = ("append", "update")
#: ISO 7816-4:2020 §7.5.1: P2 b5-b1 is the reference number, b8 global (0) / specific (1), b7-b6 = 00.
_REF_NUMBER = 0x1F
_REF_SPECIFIC = 0x80


def _p2(df: str, number: int) -> int:
    return (_REF_SPECIFIC if df != "MF" else 0) | number


@dataclass(frozen=True)
class FieldSpec:
    """One record field mapped to card bytes."""

    field: str
    codec: Codec
    validators: tuple[str, ...] = ()
    optional: bool = False
    default: str | None = None
    computed: str | None = None
    #: SIMPLE-TLV record number (= tag) for record files; the tag inside an operation's record; None for
    #: transparent files.
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

    def __hash__(self) -> int:  # the rules mapping is not hashable; equal specs still hash alike
        return hash((self.path, self.type, self.fid, self.name, self.sfi, self.size, self.record_size, self.records,
                     tuple(sorted(self.rules.items()))))

    @property
    def is_df(self) -> bool:
        return self.type == "df"

    @property
    def is_record(self) -> bool:
        return self.type in RECORD_TYPES

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
    #: Reference number 0..31 (ISO 7816-4:2020 §7.5.1, P2 b5-b1).
    ref: int
    usage: str
    master: str
    diversify: tuple[str, ...] = ()
    max_tries: int = 10

    @property
    def p2(self) -> int:
        """P2 of EXTERNAL / MUTUAL AUTHENTICATE: b8 = 1 for a key placed in a DF other than the MF."""
        return _p2(self.df, self.ref)


@dataclass(frozen=True)
class PinSpec:
    name: str
    df: str
    #: Reference number 0..31 (ISO 7816-4:2020 §7.5.1). A PUK has the number of the PIN it unblocks.
    ref: int
    max_tries: int
    min_length: int
    max_length: int
    initial: str
    kind: str = "pin"
    unblocks: str | None = None

    @property
    def p2(self) -> int:
        """P2 of VERIFY / CHANGE REFERENCE DATA / RESET RETRY COUNTER for this PIN."""
        return _p2(self.df, self.ref)


@dataclass(frozen=True)
class OperationSpec:
    """A post-issuance operation declared by the profile (``[operations.NAME]``).

    ``needs`` names the PINs to verify and at most one key of usage "sm" to open secure messaging with,
    in order. ``fields`` are encoded as SIMPLE-TLV objects with tags 1, 2, ... and concatenated into one
    record (zero-padded for a fixed-size record file).
    """

    name: str
    description: str
    file: str
    action: str
    needs: tuple[str, ...]
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class PostIssuance:
    """``[post_issuance]``: how the card is served after issuance.

    ``sm_key`` — the key (usage "sm") that opens the cardholder-side secure channel for PIN changes,
    unblocking and profile operations; ``block`` — the DF that ``card block`` deactivates.
    """

    sm_key: str | None = None
    block: str | None = None


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
    post_issuance: PostIssuance = field(default_factory=PostIssuance)

    @property
    def record_fields(self) -> tuple[FieldSpec, ...]:
        """Every field a record supplies (computed fields excluded), in file order."""
        return tuple(f for fs in self.files for f in fs.fields if f.computed is None)

    @property
    def issuer_key(self) -> KeySpec | None:
        """The key that replaces the transport key (MF key 00) when ``rotate_transport_key`` is set."""
        if not self.rotate_transport_key:
            return None
        for k in self.keys:
            if k.df == "MF" and k.ref == 0:
                return k
        return None

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

    def puk_for(self, pin: str) -> PinSpec | None:
        """The PUK that unblocks PIN ``pin``, if the profile has one."""
        for p in self.pins:
            if p.kind == "puk" and p.unblocks == pin:
                return p
        return None

    def operation(self, name: str) -> OperationSpec:
        try:
            return self.operations[name]
        except KeyError:
            known = ", ".join(sorted(self.operations)) or "none"
            raise ProfileError(f"profile {self.name!r} has no operation {name!r} (has: {known})") from None

    def with_algorithm(self, algorithm: str) -> Profile:
        if algorithm not in self.algorithms:
            raise ProfileError(f"profile {self.name!r} offers algorithms {', '.join(self.algorithms)}, "
                               f"not {algorithm!r}")
        return replace(self, algorithm=algorithm)


# The TOML loader lives in cardkit.profiles.loader, which imports this module; these two entry points import it on
# first use, so either module can be imported first.


def load_profile(path: str | Path, *, algorithm: str | None = None) -> Profile:
    """Load and validate a profile TOML file (or a folder holding ``profile.toml``).

    See :func:`cardkit.profiles.loader.load_profile`.
    """
    from cardkit.profiles import loader

    return loader.load_profile(path, algorithm=algorithm)


def find_profile(name: str, search: Sequence[Path] = ()) -> Path:
    """Resolve a profile name ("ssc") or path to its profile.toml.

    See :func:`cardkit.profiles.loader.find_profile`.
    """
    from cardkit.profiles import loader

    return loader.find_profile(name, search)
