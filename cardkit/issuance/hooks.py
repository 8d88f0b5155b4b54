"""Extension points of the issuance engine, named from profiles.

* **content hooks** (``[profile] content = "NAME"``): compute file contents from the whole record at
  preparation time, e.g. the ICAO LDS data groups and the signed EF.SOD of an eMRTD. A hook returns
  ``{file path: bytes}`` for transparent files of the profile.
* **key hooks** (``master = "record:NAME"`` on a key): the key value comes from the record, e.g. the BAC key
  seed computed from the MRZ, instead of a diversified master key.
* **channel handlers** (``[personalization] channel = "scp03" | "scp02"``): personalization and
  verification through a GlobalPlatform security domain instead of the ISO issuer channel.

Hooks are looked up by name; the built-in ones live in the modules of :data:`BUILTIN_MODULES` and register
themselves when imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from cardkit.errors import ProfileError

if TYPE_CHECKING:
    from cardkit.keys.store import Keystore
    from cardkit.profiles.model import KeySpec, Profile

__all__ = ["BUILTIN_MODULES", "ContentHook", "KeyHook", "channel_handler", "content_fields", "content_hook",
           "content_validator", "key_hook",
           "register_channel", "register_content", "register_key"]

ContentHook = Callable[["Profile", Mapping[str, str], "Keystore | None"], dict[str, bytes]]
KeyHook = Callable[["Profile", "KeySpec", Mapping[str, str]], bytes]

#: hook name -> module that registers it when imported.
BUILTIN_MODULES: dict[str, str] = {
    "mrtd": "cardkit.apps.mrtd",
    "bac-seed": "cardkit.apps.mrtd",
    "scp03": "cardkit.issuance.gp",
    "scp02": "cardkit.issuance.gp",
}

_CONTENT: dict[str, ContentHook] = {}
#: content hook name -> (the record fields it consumes, a validator returning every problem of a record)
_CONTENT_FIELDS: dict[str, tuple[tuple[str, ...], Callable[..., list[Any]] | None]] = {}
_KEYS: dict[str, KeyHook] = {}
_CHANNELS: dict[str, Any] = {}


def register_content(name: str, hook: ContentHook, *, fields: tuple[str, ...] = (),
                     validate: Callable[..., list[Any]] | None = None) -> None:
    """Register a content hook with the record ``fields`` it consumes and an optional ``validate(fields, *,
    line)`` returning every :class:`~cardkit.errors.RecordError` of a record (batch validation runs it)."""
    _CONTENT[name] = hook
    _CONTENT_FIELDS[name] = (tuple(fields), validate)


def register_key(name: str, hook: KeyHook) -> None:
    _KEYS[name] = hook


def register_channel(name: str, handler: Any) -> None:
    """``handler`` has ``personalize(session, profile, prepared, keystore) -> CardResult`` and
    ``verify(session, profile, prepared, keystore, result) -> dict``."""
    _CHANNELS[name] = handler


def _load(name: str, table: dict[str, Any], what: str) -> Any:
    if name not in table and name in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[name])
    try:
        return table[name]
    except KeyError:
        raise ProfileError(f"unknown {what} {name!r}") from None


def content_hook(name: str) -> ContentHook:
    return _load(name, _CONTENT, "content hook")  # type: ignore[no-any-return]


def content_fields(name: str) -> tuple[str, ...]:
    """The record fields a content hook consumes (they count as mapped fields of the profile)."""
    content_hook(name)
    return _CONTENT_FIELDS.get(name, ((), None))[0]


def content_validator(name: str) -> Callable[..., list[Any]] | None:
    content_hook(name)
    return _CONTENT_FIELDS.get(name, ((), None))[1]


def key_hook(name: str) -> KeyHook:
    return _load(name, _KEYS, "key hook")  # type: ignore[no-any-return]


def channel_handler(name: str) -> Any:
    return _load(name, _CHANNELS, "personalization channel")
