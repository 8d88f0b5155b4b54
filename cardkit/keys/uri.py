"""Key references: one URI syntax for every keystore, and :func:`open_keystore`.

* ``file:PATH`` — a TEST key file (refused unless ``allow_test_keys``);
* ``store:PATH`` — an encrypted keystore file (passphrase from ``CARDKIT_KEYSTORE_PASSPHRASE`` or a prompt);
* ``pkcs11:token=LABEL;object=NAME;module-path=/path/lib.so;pin-source=FILE`` — a PKCS#11 token in the
  spirit of RFC 7512: path attributes separated by ``;``, values percent-encoded (RFC 3986 §2.1). The module
  comes from ``module-path`` or ``CARDKIT_PKCS11_MODULE``; the user PIN from ``pin-source`` (a file, RFC 7512
  §2.3), ``CARDKIT_PKCS11_PIN`` or a prompt. ``pin-value`` is refused: a PIN never goes on a command line.

``file:`` and ``store:`` name one key with a fragment: ``store:/srv/bureau.cks#ssc-issuer``; ``pkcs11:``
with ``object=``. A version may follow the name: ``ssc-issuer@2``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote

from cardkit.errors import KeystoreError
from cardkit.keys.entry import PASSPHRASE_ENV, PIN_ENV, Prompt, obtain_secret, read_secret_file
from cardkit.keys.store import KeyCustody, TestKeyFile, split_version

__all__ = ["MODULE_ENV", "KeyUri", "open_keystore", "parse_key_uri"]

MODULE_ENV = "CARDKIT_PKCS11_MODULE"
# RFC 7512 §2.3 path attributes cardkit understands (others are refused so typos do not pass silently).
_PKCS11_ATTRS = frozenset({"token", "object", "module-path", "pin-source", "type", "id", "serial",
                           "manufacturer", "model", "library-description", "library-manufacturer"})
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class KeyUri:
    """A parsed key reference. ``location`` is the path (file/store) or the token label (pkcs11)."""

    scheme: str
    location: str
    object: str | None = None
    module_path: str | None = None
    pin_source: str | None = None

    @property
    def keystore(self) -> str:
        """The keystore part, without the key name and without any secret."""
        if self.scheme == "pkcs11":
            return f"pkcs11:token={self.location}"
        return f"{self.scheme}:{self.location}"

    def __str__(self) -> str:
        if self.scheme == "pkcs11":
            return self.keystore + (f";object={self.object}" if self.object else "")
        return self.keystore + (f"#{self.object}" if self.object else "")


def parse_key_uri(text: str) -> KeyUri:
    """Parse a key URI; errors say what is wrong and what the forms are."""
    if not isinstance(text, str) or ":" not in text:
        raise KeystoreError(f"not a key URI: {text!r} (expected file:PATH, store:PATH or "
                            "pkcs11:token=LABEL[;object=NAME])")
    scheme, _, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme in ("file", "store"):
        path, _, frag = rest.partition("#")
        if path.startswith("//"):
            path = path[2:]  # tolerate file:///abs/path
        if not path:
            raise KeystoreError(f"{scheme}: URI without a path")
        obj = None
        if frag:
            split_version(frag)
            obj = frag
        return KeyUri(scheme, path, obj)
    if scheme != "pkcs11":
        raise KeystoreError(f"unknown key URI scheme {scheme!r} (file:, store:, pkcs11:)")
    path_part, _, query = rest.partition("?")
    attrs: dict[str, str] = {}
    for part in [p for p in path_part.split(";") if p] + [p for p in query.split("&") if p]:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not eq:
            raise KeystoreError(f"pkcs11 URI attribute {name!r} has no value")
        if name == "pin-value":
            raise KeystoreError("pkcs11 URI with pin-value refused: give the PIN in CARDKIT_PKCS11_PIN, a "
                                "pin-source file or at the prompt — never on the command line")
        if name not in _PKCS11_ATTRS:
            raise KeystoreError(f"unknown pkcs11 URI attribute {name!r} (known: {', '.join(sorted(_PKCS11_ATTRS))})")
        if _PCT.search(value):
            raise KeystoreError(f"pkcs11 URI attribute {name!r}: bad percent-encoding")
        if name in attrs:
            raise KeystoreError(f"pkcs11 URI attribute {name!r} is given twice")
        attrs[name] = unquote(value)
    if not attrs.get("token"):
        raise KeystoreError("pkcs11 URI needs token=LABEL")
    obj = attrs.get("object")
    if obj:
        split_version(obj)
    return KeyUri("pkcs11", attrs["token"], obj or None, attrs.get("module-path"), attrs.get("pin-source"))


def open_keystore(uri: str | KeyUri, *, allow_test_keys: bool = False, prompt: Prompt | None = None,
                  create: bool = False) -> KeyCustody:
    """Open the keystore a key URI points to (the ``object`` part is ignored here).

    ``prompt`` asks for the passphrase / PIN when the environment does not hold it. ``create=True`` creates
    an encrypted store that does not exist yet (the passphrase is asked twice when prompting).
    """
    ref = uri if isinstance(uri, KeyUri) else parse_key_uri(uri)
    if ref.scheme == "file":
        return TestKeyFile(ref.location, allow_test_keys=allow_test_keys)
    if ref.scheme == "store":
        from cardkit.keys.encrypted import EncryptedKeystore

        exists = os.path.exists(ref.location)
        if create and exists:
            raise KeystoreError(f"keystore {ref.location} already exists")
        if not create and not exists:
            raise KeystoreError(f"keystore {ref.location} does not exist (create it with 'cardkit keys init "
                                f"store:{ref.location}')")
        if create:
            passphrase = obtain_secret("new keystore passphrase", PASSPHRASE_ENV, prompt)
            if os.environ.get(PASSPHRASE_ENV) is None and prompt is not None:
                again = obtain_secret("new keystore passphrase (again)", None, prompt)
                if again != passphrase:
                    raise KeystoreError("the two passphrases differ; nothing was created")
            return EncryptedKeystore.create(ref.location, passphrase)
        passphrase = obtain_secret(f"passphrase for keystore {os.path.basename(ref.location)}", PASSPHRASE_ENV, prompt)
        return EncryptedKeystore.open(ref.location, passphrase)
    from cardkit.keys.pkcs11 import Pkcs11Keystore

    module = ref.module_path or os.environ.get(MODULE_ENV)
    if not module:
        raise KeystoreError(f"no PKCS#11 module: set {MODULE_ENV} or add module-path=/path/to/module.so to the URI")
    if not os.path.exists(module):
        raise KeystoreError(f"PKCS#11 module {module} does not exist")
    if ref.pin_source:
        pin = read_secret_file(ref.pin_source.removeprefix("file:"), "PIN")
    else:
        pin = obtain_secret(f"user PIN for token {ref.location}", PIN_ENV, prompt)
    return Pkcs11Keystore(module, ref.location, pin)
