"""Key ceremonies: generate, import by components under dual control, delete, wrap, unwrap, export a KCV.

Every step is appended to a hash-chained :class:`~cardkit.batch.journal.Journal` with who (``operator``,
``custodian``), when (the journal's timestamp), where (``store``) and which key (``key_id`` = the key name,
``key_version``, ``kcv`` with ``kcv_method``) — never a value. The journal refuses fact keys that look like
secrets (``key``, ``pin`` …), hence ``key_id``.

Import by components (ANSI X9.24-1 / PCI PIN practice): each custodian enters one component separately; its
KCV is shown and must be confirmed (against the KCV printed on the component form) before the next one; the
components are XORed into the key. Refused: fewer than two components, custodians who are not distinct,
components of the wrong length, all-zero components, and equal components (their XOR would be zero).
SoftHSM2 offers no ``CKM_XOR_BASE_AND_DATA``, so the XOR happens in host memory in ``bytearray``\\ s that are
overwritten after the import (best effort: Python may have copied them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cardkit.batch.journal import Journal
from cardkit.crypto import Alg, KcvMethod, check_key, kcv
from cardkit.crypto.kcv import default_kcv_method
from cardkit.errors import CryptoError, KeystoreError
from cardkit.keys.store import KeyAdmin, KeyCustody, KeyInfo, SignAlg, Usage, WrappedKey, kcv_methods_for

__all__ = ["Ceremony", "CeremonyError"]

log = logging.getLogger(__name__)

#: ``read_component(n)`` returns component ``n`` (1-based) as bytes.
ComponentReader = Callable[[int], bytes]
#: ``confirm_component(n, kcv_hex, method)`` returns True when the custodian confirms the shown KCV.
ComponentConfirm = Callable[[int, str, str], bool]


class CeremonyError(KeystoreError):
    """A ceremony refused or aborted (nothing was written to the keystore)."""


@dataclass
class Ceremony:
    """Journaled key operations on ``store`` by ``operator``."""

    store: KeyCustody
    journal: Journal
    operator: str

    def __post_init__(self) -> None:
        if not self.operator or not self.operator.strip():
            raise CeremonyError("a ceremony needs an operator (--operator NAME)")

    def _admin(self) -> KeyAdmin:
        if not isinstance(self.store, KeyAdmin):
            raise CeremonyError(f"{self.store.label} is read-only: ceremonies need an encrypted store or a "
                                "PKCS#11 token")
        return self.store

    def _record(self, event: str, **facts: Any) -> None:
        self.journal.append(event, operator=self.operator, store=self.store.label, **facts)

    def _key_facts(self, info: KeyInfo) -> dict[str, Any]:
        return {"key_id": info.name, "algorithm": info.alg, "key_version": info.version, "kcv": info.kcv,
                "kcv_method": info.kcv_method, "usage": info.usage, "extractable": info.extractable,
                "origin": info.origin}

    # ------------------------------------------------------------------------------------------ generate
    def generate(self, name: str, alg: Alg | SignAlg, *, bits: int | None = None, extractable: bool = False,
                 usage: Usage = Usage.MASTER, rotate: bool = False) -> KeyInfo:
        info = self._admin().generate(name, alg, bits=bits, extractable=extractable, usage=usage, rotate=rotate)
        self._record("keys.generated", **self._key_facts(info))
        return info

    # ----------------------------------------------------------------------------------- import (dual ctl)
    def import_components(self, name: str, alg: Alg, count: int, *, read_component: ComponentReader,
                          confirm_component: ComponentConfirm, custodians: Sequence[str],
                          expect_kcv: str | None = None, extractable: bool = False, usage: Usage = Usage.MASTER,
                          rotate: bool = False) -> KeyInfo:
        admin = self._admin()
        if count not in (2, 3):
            raise CeremonyError("a key is imported from 2 or 3 components (dual control)")
        people = [c.strip() for c in custodians]
        if len(people) != count or any(not p for p in people) or len(set(people)) != count:
            raise CeremonyError(f"dual control needs {count} distinct custodians, one per component "
                                f"(got {len([p for p in people if p])})")
        method = default_kcv_method(alg).value
        self._record("keys.import.started", key_id=name, algorithm=alg.value, components=count,
                     custodians=people)
        parts: list[bytearray] = []
        combined = bytearray()
        try:
            for n in range(1, count + 1):
                part = bytearray(read_component(n))
                parts.append(part)
                try:
                    check_key(alg, bytes(part))
                except CryptoError as exc:
                    raise CeremonyError(f"component {n}: {exc}") from None
                if parts and len(part) != len(parts[0]):
                    raise CeremonyError(f"component {n} has {len(part)} bytes; component 1 has {len(parts[0])}")
                if not any(part):
                    raise CeremonyError(f"component {n} is all zeros")
                if any(bytes(part) == bytes(p) for p in parts[:-1]):
                    raise CeremonyError(f"component {n} equals an earlier component (their XOR would be zero)")
                part_kcv = kcv(bytes(part), default_kcv_method(alg)).hex().upper()
                if not confirm_component(n, part_kcv, method):
                    raise CeremonyError(f"component {n}: KCV {part_kcv} not confirmed by custodian "
                                        f"{people[n - 1]}")
                self._record("keys.import.component", key_id=name, component=n, components=count,
                             custodian=people[n - 1], kcv=part_kcv, kcv_method=method)
            combined = bytearray(len(parts[0]))
            for part in parts:
                for i, b in enumerate(part):
                    combined[i] ^= b
            got = kcv(bytes(combined), default_kcv_method(alg)).hex().upper()
            if expect_kcv is not None and got != expect_kcv.strip().upper():
                raise CeremonyError(f"the combined key has KCV {got}, not the expected {expect_kcv.strip().upper()}")
            info = admin.import_key(name, alg, bytes(combined), extractable=extractable, usage=usage,
                                    origin="components", custodians=people, rotate=rotate)
        except BaseException as exc:
            self._record("keys.import.aborted", key_id=name, algorithm=alg.value,
                         reason=str(exc) or type(exc).__name__)
            raise
        finally:
            for buf in [*parts, combined]:
                buf[:] = bytes(len(buf))
        self._record("keys.imported", components=count, custodians=people, **self._key_facts(info))
        return info

    # ------------------------------------------------------------------------------------------- others
    def delete(self, name: str, alg: Alg | SignAlg | None, *, confirm: Callable[[KeyInfo], bool]) -> KeyInfo:
        admin = self._admin()
        info = admin.info(name, alg)
        if not confirm(info):
            self._record("keys.delete.declined", **self._key_facts(info))
            raise CeremonyError(f"deletion of {info.name!r} not confirmed; nothing deleted")
        admin.delete(name, alg)
        self._record("keys.deleted", **self._key_facts(info))
        return info

    def wrap(self, name: str, alg: Alg, kek: str, *, mechanism: str = "aes-kwp") -> WrappedKey:
        blob = self._admin().wrap(name, alg, kek, mechanism=mechanism)
        self._record("keys.wrapped", key_id=blob.name, algorithm=blob.alg, key_version=blob.version, kcv=blob.kcv,
                     kcv_method=blob.kcv_method, kek_id=blob.kek, kek_kcv=blob.kek_kcv, mechanism=mechanism)
        return blob

    def unwrap(self, blob: WrappedKey, kek: str, *, name: str | None = None, extractable: bool = False,
               rotate: bool = False) -> KeyInfo:
        try:
            info = self._admin().unwrap(blob, kek, name=name, extractable=extractable, rotate=rotate)
        except KeystoreError as exc:
            self._record("keys.unwrap.failed", key_id=name or blob.name, kek_id=kek, reason=str(exc))
            raise
        self._record("keys.unwrapped", kek_id=blob.kek, kek_kcv=blob.kek_kcv, mechanism=blob.mechanism,
                     **self._key_facts(info))
        return info

    def export_kcv(self, name: str, alg: Alg | None = None, method: KcvMethod | None = None) -> tuple[str, str]:
        """(KCV, method) of a key, from the keystore's record or computed where the key lives."""
        info = self.store.info(name, alg)
        if info.usage == "sign":
            value, used = info.kcv, info.kcv_method
        else:
            key_alg = Alg(info.alg)
            m = method or default_kcv_method(key_alg)
            if m not in kcv_methods_for(key_alg):
                raise CeremonyError(f"KCV method {m.value} does not apply to {key_alg.value} keys")
            used = m.value
            value = info.kcvs.get(m.value) or ""
            if not value:
                handle = self.store.handle(f"{info.name}@{info.version}", key_alg)
                try:
                    value = handle.kcv(m)
                finally:
                    handle.close()
        self._record("keys.kcv_exported", key_id=info.name, algorithm=info.alg, key_version=info.version,
                     kcv=value, kcv_method=used)
        return value, used
