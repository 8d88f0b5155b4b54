"""Status-word table and the typed error hierarchy (ISO 7816-4 §5.6, GPCS 2.3.1 §11)."""

from __future__ import annotations

import pytest

from cardkit import sw
from cardkit.apdu import CommandApdu, ResponseApdu


@pytest.mark.parametrize(("code", "cls", "category"), [
    (0x6A82, sw.FileNotFound, "checking"),
    (0x6982, sw.SecurityStatusNotSatisfied, "security"),
    (0x6983, sw.AuthenticationBlocked, "security"),
    (0x6985, sw.ConditionsOfUseNotSatisfied, "checking"),
    (0x6A86, sw.WrongP1P2, "checking"),
    (0x6B00, sw.WrongP1P2, "checking"),
    (0x6D00, sw.InsNotSupported, "checking"),
    (0x6E00, sw.ClaNotSupported, "checking"),
    (0x6700, sw.WrongLength, "checking"),
    (0x6C10, sw.WrongLe, "checking"),
    (0x63C1, sw.InvalidPin, "security"),
    (0x6581, sw.MemoryFailure, "execution"),
    (0x6283, sw.WarningStatus, "warning"),
    (0x6988, sw.SmDataObjectsIncorrect, "security"),
    (0x6A83, sw.RecordNotFound, "checking"),
    (0x6F00, sw.CheckingError, "checking"),
])
def test_error_classes(code: int, cls: type[sw.StatusWordError], category: str) -> None:
    err = sw.error_for(code, "READ BINARY")
    assert type(err) is cls
    assert err.category == category
    assert err.sw == code
    assert f"{code:04X}" in str(err) and "READ BINARY" in str(err)


def test_specific_facts() -> None:
    pin = sw.error_for(0x63C2, "VERIFY")
    assert isinstance(pin, sw.InvalidPin) and pin.attempts_left == 2
    le = sw.error_for(0x6C00)
    assert isinstance(le, sw.WrongLe) and le.correct_le == 256
    sec = sw.SecurityStatusNotSatisfied(0x6982, "READ RECORD", needed="external authentication key 02")
    assert sec.needed and "needs external authentication key 02" in str(sec)


def test_check_passes_success_and_raises_with_context() -> None:
    ok = ResponseApdu.of(0x9000, b"\x01")
    assert sw.check(ok, "X") is ok
    assert sw.check(ResponseApdu.of(0x6105), "X").sw == 0x6105
    assert sw.check(ResponseApdu.of(0x6282), "X", allow_warnings=True).sw == 0x6282
    assert sw.check(ResponseApdu.of(0x6A82), "X", allow=(0x6A82,)).sw == 0x6A82
    with pytest.raises(sw.InvalidPin):
        sw.check(ResponseApdu.of(0x63C0), "VERIFY", allow_warnings=True)
    cmd = CommandApdu(0, 0xA4, 0, 0, b"\x3f\x00", name="SELECT")
    with pytest.raises(sw.FileNotFound) as ei:
        sw.check(ResponseApdu.of(0x6A82), cmd, context={"file": "3F00/EF05"})
    assert str(ei.value) == "SELECT failed: 6A82 file or application not found, file 3F00/EF05"


def test_describe_covers_patterns() -> None:
    assert "more bytes" in sw.describe(0x6110)
    assert "exactly 32" in sw.describe(0x6C20)
    assert "3 tries left" in sw.describe(0x63C3)
    assert sw.describe(0x1234).startswith("unknown")
    for code in range(0x6000, 0x7000, 7):
        assert sw.describe(code)
