"""Power loss at every APDU of an SSC personalization (card tearing), in-process.

For each position n, a fresh card loses power on the n-th APDU of the personalization (the write that
command makes is torn as :mod:`cardkit.virtual.faults` models it), power comes back, and the card is verified
with a new session. The property: the card either verifies completely *and* then holds exactly what an
uninterrupted personalization writes (files, records, keys, PINs, rules), or verification raises a typed
cardkit error — never a card that reads back as complete but holds wrong data.

The record carries a 1000-byte fingerprint (EF07, written in several UPDATE BINARY pieces), so torn
non-atomic writes are part of the run, not only the atomic small-record and key updates. What to expect at each
position is derived from an uninterrupted reference run (which APDU last changes the card), not from the
engine's current write order.
"""

from __future__ import annotations

import csv
import dataclasses
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from cardkit.errors import SecureChannelError
from cardkit.issuance.engine import VerificationError, personalize, verify
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.profiles.model import Profile, load_profile
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.sw import StatusWordError
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual import CardGone, VirtualCard, card_to_dict, power_loss_at, remove_at

ROOT = Path(__file__).resolve().parents[1]
SERIAL = bytes.fromhex("7EA2C0DE")
#: What "verify raises" may be: a refused command, a read-back difference, a failed secure channel.
DETECTED = (StatusWordError, VerificationError, SecureChannelError)


@dataclasses.dataclass(frozen=True)
class Case:
    profile: Profile
    prepared: PreparedRecord
    keystore: TestKeyFile
    total: int                      # APDUs of an uninterrupted personalization
    instructions: tuple[int, ...]   # INS of each of them, as sent
    last_write: int                 # the last APDU that changed what the card holds
    reference: Any                  # card content after an uninterrupted personalization

    def fresh_card(self) -> VirtualCard:
        alg = alg_of(self.profile.algorithm)
        card: VirtualCard = new_virtual_card(SERIAL, alg=alg, seed=3,
                                             transport_key=self.keystore.key(self.profile.transport_key, alg).value)
        return card


def _content(card: VirtualCard) -> Any:
    """The card image without retry counters (those legitimately differ after interrupted authentications)."""
    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "tries_left"}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(card_to_dict(card))


def _objects(node: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Flatten an image: {"3F00/DDF1/EF05": its attributes, "3F00/DDF1 key 01": ..., ...}."""
    here = f"{path}/{node['fid']}" if path else node["fid"]
    out: dict[str, Any] = {here: {k: v for k, v in node.items() if k not in ("children", "pins", "puks", "keys")}}
    for kind in ("keys", "pins", "puks"):
        for obj in node.get(kind, []):
            out[f"{here} {kind[:-1]} {obj['ref']:02X}"] = obj
    for child in node.get("children", []):
        out.update(_objects(child, here))
    return out


def differences(got: Any, want: Any) -> str:
    """What a card lacks or holds differently, by file path / key / PIN (no values)."""
    a, b = _objects(got["mf"]), _objects(want["mf"])
    missing = sorted(set(b) - set(a))
    extra = sorted(set(a) - set(b))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    other = [k for k in got if k != "mf" and got[k] != want.get(k)]
    return f"missing {missing}, unexpected {extra}, different {changed}, other {other}"


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SSC profile next to a fingerprint file (file codecs read only inside the profile's folder)."""
    folder = tmp_path_factory.mktemp("ssc")
    shutil.copy(ROOT / "applets/ssc/profile.toml", folder / "profile.toml")
    rng = random.Random(1)
    # no zero byte: a torn piece always differs from what was meant (the EF starts out as zeros)
    (folder / "fingerprint.bin").write_bytes(bytes(rng.randrange(1, 256) for _ in range(1000)))
    return folder


@pytest.fixture(scope="module")
def keystore() -> TestKeyFile:
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


_CASES: dict[tuple[str, bool], Case] = {}


def make_case(profile_dir: Path, keystore: TestKeyFile, algorithm: str, rotate: bool) -> Case:
    key = (algorithm, rotate)
    if key in _CASES:
        return _CASES[key]
    profile = load_profile(profile_dir, algorithm=algorithm)
    if not rotate:
        profile = dataclasses.replace(profile, rotate_transport_key=None)
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        row = dict(next(csv.DictReader(fh)))
    row["fingerprint"] = "fingerprint.bin"
    prepared = prepare(profile, row)
    assert "SSSE/EF07" in prepared.binaries
    card = Case(profile, prepared, keystore, 0, (), 0, None).fresh_card()
    seen: list[int] = []
    contents = [_content(card)]
    inner_transmit = card.transmit

    def spy(apdu: bytes) -> bytes:
        seen.append(apdu[1])
        out = inner_transmit(apdu)
        contents.append(_content(card))
        return out

    card.transmit = spy  # type: ignore[method-assign]
    personalize(CardSession(VirtualTransport(card)), profile, prepared, keystore)
    del card.transmit
    last_write = max(n for n in range(1, len(contents)) if contents[n] != contents[n - 1])
    case = Case(profile, prepared, keystore, len(seen), tuple(seen), last_write, contents[-1])
    verify(CardSession(VirtualTransport(card)), profile, prepared, keystore)  # the uninterrupted card verifies
    _CASES[key] = case
    return case


def cut_and_verify(case: Case, n: int, seed: int, *, removed: bool = False) -> str:
    """Cut the n-th APDU of the personalization; return "complete" or "incomplete" (see the module doc)."""
    card = case.fresh_card()
    (remove_at if removed else power_loss_at)(card, n, seed=seed)
    with pytest.raises(CardGone):
        personalize(CardSession(VirtualTransport(card)), case.profile, case.prepared, case.keystore)
    assert card.apdu_count == n and not card.powered
    if removed:
        assert not card.present
        card.insert()
    try:
        verify(CardSession(VirtualTransport(card)), case.profile, case.prepared, case.keystore)
    except DETECTED as exc:
        text = str(exc)
        assert case.prepared.identity not in text
        assert not any(pin.hex() in text.lower() or pin.decode(errors="ignore") in text
                       for pin in case.prepared.pins.values() if len(pin) >= 4)
        return "incomplete"
    content = _content(card)
    assert content == case.reference, (f"cut at APDU {n}: the card verified but differs from a good card: "
                                       f"{differences(content, case.reference)}")
    return "complete"


def expected(case: Case, n: int) -> set[str]:
    """What a cut at APDU n may give, whatever order the engine writes in.

    Before the last APDU that changes the card, the card lacks at least that change, so it must not verify
    (if it did, :func:`cut_and_verify` reports it as verified-but-different). The last change itself is torn or
    atomic (either outcome). After it only authentications remain (e.g. proving the new issuer key), so the
    card holds everything and must verify.
    """
    if n < case.last_write:
        return {"incomplete"}
    return {"incomplete", "complete"} if n == case.last_write else {"complete"}


@pytest.mark.parametrize("rotate", [True, False], ids=["rotate-transport-key", "keep-transport-key"])
def test_power_loss_at_every_apdu(profile_dir: Path, keystore: TestKeyFile, rotate: bool) -> None:
    case = make_case(profile_dir, keystore, "sm4", rotate)
    assert case.total > 30 and case.last_write > 20  # channel, tree, keys, PINs, 14 records, the fingerprint
    outcomes = {n: cut_and_verify(case, n, seed=n) for n in range(1, case.total + 1)}
    wrong = {n: o for n, o in outcomes.items() if o not in expected(case, n)}
    assert not wrong, f"unexpected outcomes at APDU positions {wrong}"
    assert outcomes[1] == "incomplete"


def test_torn_pieces_are_caught_by_read_back(profile_dir: Path, keystore: TestKeyFile) -> None:
    """Cuts inside the fingerprint writes: whatever prefix was torn, verify names EF07."""
    case = make_case(profile_dir, keystore, "sm4", False)
    pieces = [i for i, ins in enumerate(case.instructions, start=1) if ins == 0xD6]
    assert len(pieces) >= 4  # 1000 bytes in pieces of at most one short APDU under SM
    for n in pieces:
        for prefix in (0, 1, 200):
            card = case.fresh_card()
            power_loss_at(card, n, prefix=prefix)
            with pytest.raises(CardGone):
                personalize(CardSession(VirtualTransport(card)), case.profile, case.prepared, case.keystore)
            with pytest.raises(VerificationError, match="SSSE/EF07"):
                verify(CardSession(VirtualTransport(card)), case.profile, case.prepared, case.keystore)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["sm4", "3des"])
@pytest.mark.parametrize("rotate", [True, False], ids=["rotate-transport-key", "keep-transport-key"])
@pytest.mark.parametrize("removed", [False, True], ids=["power-loss", "card-pulled"])
def test_power_loss_exhaustive(profile_dir: Path, keystore: TestKeyFile, algorithm: str, rotate: bool,
                               removed: bool) -> None:
    case = make_case(profile_dir, keystore, algorithm, rotate)
    for seed in range(4):
        for n in range(1, case.total + 1):
            outcome = cut_and_verify(case, n, seed=1000 * seed + n, removed=removed)
            assert outcome in expected(case, n), (seed, n, outcome)
