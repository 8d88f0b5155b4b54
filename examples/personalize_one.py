"""Personalize one social security card from Python, then read it back and verify it.

The card is cardkit's virtual card and the keys are the TEST keys of keys/test/ (never for real cards); for a
real card open a PC/SC reader with ``cardkit.readers.open_transport("READER NAME")`` and use a real keystore.

    python examples/personalize_one.py [IMAGE]

With IMAGE the personalized card is saved there (mode 0600) for ``cardkit --reader virtual:IMAGE ...`` and
``examples/read_ssc_sm.py``. The initial PIN is generated and sealed: it is never printed.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from cardkit.issuance.engine import personalize, verify
from cardkit.issuance.prepare import prepare
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.profiles.model import find_profile, load_profile
from cardkit.profiles.validators import mask_identifier
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    profile = load_profile(find_profile(str(ROOT / "applets" / "ssc")))
    keystore = TestKeyFile(TEST_KEYS, allow_test_keys=True)  # TEST keys: refused without the explicit flag
    with open(ROOT / "applets" / "ssc" / "sample-batch.csv", encoding="utf-8", newline="") as fh:
        record = next(csv.DictReader(fh))

    prepared = prepare(profile, record)  # validates every field first (GB 11643 check digit, dates, GBK ...)
    alg = alg_of(profile.algorithm)
    card = new_virtual_card(alg=alg, transport_key=keystore.key(profile.transport_key, alg).value)

    session = CardSession(VirtualTransport(card))
    result = personalize(session, profile, prepared, keystore)
    written = session.apdu_count
    manifest = verify(session, profile, prepared, keystore, result)
    session.close()

    print(f"person {mask_identifier(prepared.identity)}: chip {result.serial} personalized in {written} APDUs, "
          f"verified in {session.apdu_count - written} APDUs")
    for path, digest in manifest["files"].items():
        print(f"  {path:16} sha256 {digest[:16]}…")
    print(f"  initial PINs sealed for the PIN mailer ({len(result.pins)}), not shown")
    if len(argv) > 1:
        card.save(argv[1])
        print(f"card image: {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
