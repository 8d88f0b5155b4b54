"""Opening secure channels for scripts: GlobalPlatform SCP03/SCP02, ICAO BAC, cardkit's ISO mutual authentication.

Keys come from a :class:`~cardkit.keys.store.Keystore` by name, never from the script:

* a GP key set ``NAME`` is three keys ``NAME-enc``, ``NAME-mac``, ``NAME-dek`` or one key ``NAME`` used for
  all three (how the GlobalPlatform test keys are distributed); AES for SCP03, 3DES for SCP02;
* an SM key ``NAME`` (``open sm``) is one stored key (cardkit.sm.seed), optionally diversified level by level
  like the issuance engine does (``serial`` = the chip serial from the ATR, or hex values, each padded to 8
  bytes) — the same keys the engine loads onto the card.

GP diversification (EMV CPS, VISA2, KDF3) needs the key diversification data the card returns in INITIALIZE
UPDATE: the host sends one INITIALIZE UPDATE to read it, then opens the channel with the diversified keys (a
new INITIALIZE UPDATE restarts the handshake, GPCS 2.3.1 §11.5.1).

**Dry runs.** :class:`ReplayRandom` recovers the host's random values from a recorded transcript: the host
challenge from the recorded INITIALIZE UPDATE (GPCS 2.3.1 §11.5.2, in clear), and RND.IFD ‖ K.IFD of a mutual
authentication by decrypting the recorded EXTERNAL AUTHENTICATE cryptogram with the static K_enc (ICAO 9303-11
§4.3: E_IFD = E(K_enc, RND.IFD ‖ RND.ICC ‖ K.IFD)). With them the script reproduces the recorded session byte
for byte, so a replay transport can check every wire APDU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from cardkit.crypto import Alg, cbc_decrypt
from cardkit.errors import KeystoreError, SecureChannelError
from cardkit.keys.store import Keystore, alg_of
from cardkit.session import CardSession, Processor
from cardkit.sm.iso import IsoSmChannel, SmSuite
from cardkit.transport.replay import ReplayTransport

if TYPE_CHECKING:
    from cardkit.sm.gp import GpKeySet

__all__ = ["ReplayRandom", "diversify_levels", "gp_keyset", "open_bac", "open_gp", "open_sm", "sm_key"]

log = logging.getLogger(__name__)

# GPCS 2.3.1 §11.5.2 INITIALIZE UPDATE, §11.5.3 / ISO 7816-4:2020 §11.5.4 EXTERNAL AUTHENTICATE.
_INS_INITIALIZE_UPDATE = 0x50
_INS_EXTERNAL_AUTHENTICATE = 0x82
# ICAO 9303-11 §4.3: E_IFD is 32 bytes (RND.IFD 8 ‖ RND.ICC 8 ‖ K.IFD 16) followed by an 8-byte MAC.
_E_IFD = 32
_ALG_ORDER = ("sm4", "aes", "3des")


class ReplayRandom:
    """Host random values read back from the transcript a :class:`ReplayTransport` is replaying."""

    def __init__(self, replay: ReplayTransport) -> None:
        self.replay = replay

    def _next_data(self, ins: int, what: str) -> bytes:
        exchanges = self.replay.transcript.exchanges
        for command, _ in exchanges[self.replay.position:]:
            if command[1] == ins and not command[0] & 0x0C:
                from cardkit.apdu import CommandApdu

                return CommandApdu.from_bytes(command).data
        raise SecureChannelError(f"dry run: the recording holds no further {what} to take the host's random "
                                 "values from (was it recorded with this script?)")

    def host_challenge(self, n: int) -> bytes:
        data = self._next_data(_INS_INITIALIZE_UPDATE, "INITIALIZE UPDATE")
        if len(data) != n:
            raise SecureChannelError(f"dry run: the recorded host challenge is {len(data)} bytes, this script "
                                     f"sends {n}")
        return data

    def mutual(self, alg: Alg, k_enc: bytes) -> tuple[bytes, bytes]:
        """(RND.IFD, K.IFD) of the next recorded EXTERNAL AUTHENTICATE, decrypted with the static K_enc."""
        data = self._next_data(_INS_EXTERNAL_AUTHENTICATE, "EXTERNAL AUTHENTICATE")
        if len(data) < _E_IFD:
            raise SecureChannelError("dry run: the recorded EXTERNAL AUTHENTICATE is too short for E_IFD")
        s = cbc_decrypt(alg, k_enc, data[:_E_IFD])
        return s[:8], s[16:32]


def resolve_alg(keystore: Keystore, name: str, alg: str | None) -> Alg:
    """The algorithm of key ``name``: as given, else the only one the keystore holds it for."""
    if alg:
        return alg_of(alg.lower())
    found = []
    for candidate in _ALG_ORDER:
        try:
            keystore.key(name, alg_of(candidate))
        except KeystoreError:
            continue
        found.append(candidate)
    if not found:
        raise KeystoreError(f"key {name!r} is not in the keystore (for any of {', '.join(_ALG_ORDER)})")
    if len(found) > 1:
        raise KeystoreError(f"key {name!r} exists for {' and '.join(found)}: say which with alg=")
    return alg_of(found[0])


def diversify_levels(spec: str, atr: bytes) -> list[bytes]:
    """Diversification levels from ``serial,440300,...``: each 8 bytes, right-aligned, zero-padded (as the
    issuance engine pads its levels)."""
    from cardkit.issuance.engine import chip_serial

    levels: list[bytes] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part.lower() == "serial":
            raw = chip_serial(atr)
        else:
            try:
                raw = bytes.fromhex(part if len(part) % 2 == 0 else "0" + part)
            except ValueError:
                raise KeystoreError(f"diversification level {part!r} is neither 'serial' nor hex") from None
        levels.append(raw[-8:].rjust(8, b"\x00"))
    return levels


def sm_key(keystore: Keystore, name: str, alg: Alg, diversify: str, atr: bytes) -> bytes:
    """The value of stored key ``name``, diversified by ``diversify`` (may be empty)."""
    levels = diversify_levels(diversify, atr) if diversify else []
    return (keystore.derive(name, alg, levels) if levels else keystore.key(name, alg)).value


def gp_keyset(keystore: Keystore, name: str, alg: Alg, version: int) -> GpKeySet:
    """A :class:`~cardkit.sm.gp.GpKeySet` named ``name``: NAME-enc/-mac/-dek, or one key NAME for all three."""
    from cardkit.sm.gp import GpKeySet

    try:
        parts = [keystore.key(f"{name}-{k}", alg).value for k in ("enc", "mac", "dek")]
        return GpKeySet(parts[0], parts[1], parts[2], version, alg=alg)
    except KeystoreError:
        pass
    try:
        return GpKeySet.single(keystore.key(name, alg).value, alg=alg, version=version)
    except KeystoreError:
        raise KeystoreError(f"no {alg.value} GP key set {name!r} in the keystore (looked for {name}-enc, "
                            f"{name}-mac, {name}-dek and {name})") from None


def open_gp(session: CardSession, protocol: str, params: Mapping[str, str], keystore: Keystore,
            replay: ReplayRandom | None) -> tuple[Processor, str]:
    """SCP03 / SCP02 handshake with the parameters of ``open scp03|scp02``; returns the channel and a summary."""
    from cardkit.sm.gp import Diversification, diversify, initialize_update_command
    from cardkit.sm.scp02 import Scp02Host, Scp02InitResponse
    from cardkit.sm.scp03 import Scp03Host, Scp03InitResponse
    from cardkit.sw import check

    scp03 = protocol == "scp03"
    alg = Alg.AES if scp03 else Alg.DES3
    kvn = int(params.get("kvn", "00"), 16)
    level = int(params.get("level", "01"), 16)
    s16 = params.get("s16", "no").lower() in ("yes", "1", "true", "on")
    keys = gp_keyset(keystore, params["keyset"], alg, kvn)
    scheme_name = params.get("diversify", "none").lower()
    try:
        scheme = Diversification(scheme_name)
    except ValueError:
        raise SecureChannelError(f"diversify takes none, emv, visa2 or kdf3, got {scheme_name!r}") from None
    n = 16 if s16 else 8
    rng: Callable[[int], bytes] | None = replay.host_challenge if replay else None
    if scheme is not Diversification.NONE:
        import secrets

        challenge = rng(n) if rng else secrets.token_bytes(n)
        probe = initialize_update_command(kvn, challenge)
        data = check(session.transmit(probe), probe).data
        init = Scp03InitResponse.parse(data) if scp03 else Scp02InitResponse.parse(data)
        keys = diversify(keys, scheme, init.kdd)
    channel: Processor
    if scp03:
        sd = params.get("sd")
        channel = Scp03Host.open(session.transmit, keys, level=level, key_version=kvn, rng=rng, s16=s16,
                                 isd_aid=bytes.fromhex(sd) if sd else None,
                                 counter_quirk=params.get("counter-quirk", "no").lower() in ("yes", "1", "on"))
    else:
        channel = Scp02Host.open(session.transmit, keys, level=level, key_version=kvn, rng=rng,
                                 i=int(params.get("i", "55"), 16))
    session.push(channel)
    extra = f", diversified {scheme.value}" if scheme is not Diversification.NONE else ""
    return channel, f"{protocol.upper()} open: level {level:02X}, key set {params['keyset']!r}{extra}"


def open_bac(session: CardSession, mrz_information: str, replay: ReplayRandom | None) -> tuple[Processor, str]:
    """ICAO BAC with the MRZ information; pushes the 3DES secure messaging channel."""
    from cardkit.sm.bac import bac_authenticate, bac_keys

    kwargs: dict[str, bytes] = {}
    if replay is not None:
        k_enc, _ = bac_keys(mrz_information)
        kwargs["rnd_ifd"], kwargs["k_ifd"] = replay.mutual(Alg.DES3, k_enc)
    state = bac_authenticate(session.transmit, mrz_information, **kwargs)  # type: ignore[arg-type]
    channel = IsoSmChannel(state)
    session.push(channel)
    return channel, "BAC open: 3DES secure messaging (ICAO 9303-11)"


def open_sm(session: CardSession, params: Mapping[str, str], keystore: Keystore,
            replay: ReplayRandom | None) -> tuple[Processor, str]:
    """cardkit's ISO 7816-4 mutual authentication with a stored SM key; pushes the SM channel."""
    from cardkit.sm.auth import mutual_authenticate
    from cardkit.sm.seed import static_sm_keys

    name = params["key"]
    alg = resolve_alg(keystore, name, params.get("alg"))
    ref = int(params.get("ref", "00"), 16)
    value = sm_key(keystore, name, alg, params.get("diversify", ""), session.atr)
    suite, k_enc, k_mac = static_sm_keys(alg, value)
    kwargs: dict[str, bytes] = {}
    if replay is not None:
        kwargs["rnd_ifd"], kwargs["k_ifd"] = replay.mutual(suite.alg, k_enc)
    state = mutual_authenticate(session.transmit, suite, k_enc, k_mac, key_ref=ref, **kwargs)  # type: ignore[arg-type]
    channel = IsoSmChannel(state)
    session.push(channel)
    label = {SmSuite.DES3_RETAIL: "3DES", SmSuite.AES_CMAC: "AES", SmSuite.SM4_CMAC: "SM4"}[suite]
    return channel, f"SM open: {label} secure messaging, key {name!r} reference {ref:02X}"
