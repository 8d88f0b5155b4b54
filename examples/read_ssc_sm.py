"""Open a secure-messaging channel to a social security card and read its data.

    python examples/read_ssc_sm.py IMAGE      # a card image written by examples/personalize_one.py
    python examples/read_ssc_sm.py "READER"   # a card in a PC/SC reader

Steps (facts: applets/ssc/README.md): SELECT the SSSE application by DF name; read EF05 record 1
(the card identification code: region ‖ D156000005 ‖ chip serial ‖ MAC) in clear; derive the card's SM key
from the master key ``ssc-sm`` (region, then chip serial) and run cardkit's ISO 7816-4 mutual authentication
with key reference 83 (the SSSE key 03); then read the rest under secure messaging. The cardholder data
(EF06) also needs external authentication with the RKSSSE key. Identifiers are printed masked.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cardkit.commands import iso
from cardkit.issuance.engine import chip_serial
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.profiles.model import find_profile, load_profile
from cardkit.profiles.validators import mask_identifier
from cardkit.readers import TEST_KEYS, open_session
from cardkit.sm.auth import external_authenticate, mutual_authenticate
from cardkit.sm.iso import IsoSmChannel
from cardkit.sm.seed import static_sm_keys

ROOT = Path(__file__).resolve().parents[1]
SSSE = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")  # "sx1.sh.社会保障" in GBK


def level(value: bytes) -> bytes:
    """A diversification level as the issuance engine pads it: 8 bytes, right-aligned."""
    return value[-8:].rjust(8, b"\x00")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    reader = argv[1] if not Path(argv[1]).is_file() else f"virtual:{argv[1]}"
    profile = load_profile(find_profile(str(ROOT / "applets" / "ssc")))
    keystore = TestKeyFile(TEST_KEYS, allow_test_keys=True)  # TEST keys (virtual cards only)
    alg = alg_of(profile.algorithm)
    masked = {profile.identity_field, *profile.unique_fields}

    def show(path: str, number: int, data: bytes) -> None:
        spec = next(f for f in profile.file(path).fields if f.number == number)
        value = spec.codec.decode(data[2:2 + data[1]])  # SIMPLE-TLV: tag = record number, length, value
        print(f"  {path} record {number:2} {spec.field:14} {mask_identifier(value) if spec.field in masked else value}")

    with open_session(reader) as session:
        session.send(iso.select_aid(SSSE, p2_fci="none"))
        session.send(iso.select_child_ef(bytes.fromhex("EF05"), p2_fci="none"))
        card_id = session.send(iso.read_record(1)).data
        region, serial = card_id[2:5], chip_serial(session.atr)

        sm_key = keystore.derive("ssc-sm", alg, [level(region), level(serial)]).value
        suite, k_enc, k_mac = static_sm_keys(alg, sm_key)
        state = mutual_authenticate(session.transmit, suite, k_enc, k_mac, key_ref=0x83)
        session.push(IsoSmChannel(state))  # from here on every APDU is protected; the code below is unchanged
        print(f"secure messaging open ({suite.name}) on chip {serial.hex().upper()}")

        for number in range(1, 8):
            show("SSSE/EF05", number, session.send(iso.read_record(number)).data)

        rkssse = keystore.derive("ssc-rkssse", alg, [level(region), level(serial)]).value
        external_authenticate(session.transmit, alg, rkssse, 0x82)  # 82: key 02 of the current DF
        session.send(iso.select_child_ef(bytes.fromhex("EF06"), p2_fci="none"))
        for i, number in enumerate(range(8, 14), start=1):
            show("SSSE/EF06", number, session.send(iso.read_record(i)).data)
        print(f"{session.apdu_count} APDUs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
