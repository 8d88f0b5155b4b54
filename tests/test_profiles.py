"""The profile loader: every bad-profile case names file, line and key; references, operations, post-issuance."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardkit.errors import ProfileError
from cardkit.issuance.plan import describe_layout, minimum_apdus
from cardkit.profiles.model import find_profile, load_profile

ROOT = Path(__file__).resolve().parents[1]
SSC = ROOT / "applets/ssc/profile.toml"
TEXT = SSC.read_text(encoding="utf-8")


def mutate(old: str, new: str, occurrence: int = 1) -> tuple[str, int]:
    """The SSC profile with the ``occurrence``-th ``old`` replaced by ``new``, and the line of the change."""
    at = -1
    for _ in range(occurrence):
        at = TEXT.index(old, at + 1)
    return TEXT[:at] + new + TEXT[at + len(old):], TEXT[:at].count("\n") + 1


def header_line(header: str, occurrence: int = 1) -> int:
    at = -1
    for _ in range(occurrence):
        at = TEXT.index(header + "\n", at + 1)
    return TEXT[:at].count("\n") + 1


# (old, new, occurrence, key, message fragment, expected line: None = the changed line, or a header to find)
CASES = [
    ("format = 1", "format = 2", 1, "profile.format", "format 2 is not supported", None),
    ('algorithm = "sm4"', 'algorithm = "rsa"', 1, "profile.algorithm", "must be one of sm4, 3des", None),
    ('identity_field = "citizen_id"', 'identity_field = "passport"', 1, "profile.identity_field",
     "not a mapped field", None),
    ('channel = "iso-sm"', 'channel = "bluetooth"', 1, "personalization.channel", "must be one of", None),
    ('rotate_transport_key = "issuer"', 'rotate_transport_key = "nobody"', 1,
     "personalization.rotate_transport_key", "MF key with ref 0", None),
    ("ref = 0x82", "ref = 0xC2", 1, "keys[2].ref", "b7-b6", None),
    ("ref = 0x00", "ref = 0x80", 1, "keys[0].ref", "placed in the MF", None),
    ('usage = "external-auth"', 'usage = "sign"', 1, "keys[1].usage", "must be one of sm, external-auth", None),
    ('name = "rkssse"', 'name = "irk"', 1, "keys[2].name", "duplicate key name", None),
    ("max_tries = 3", "max_tries = 16", 1, "pins[0].max_tries", "1..15", None),
    ("min_length = 6", "min_length = 2", 1, "pins[0].min_length", "4 <= min_length", None),
    ("max_length = 8", "max_length = 7", 1, "pins[1].max_length", "4 <= min_length", None),
    ('initial = "generate"', 'initial = "random"', 1, "pins[0].initial", "'generate'", None),
    ('df = "SSSE"\nref = 0x81\nmax_tries = 3', 'df = "SSSX"\nref = 0x81\nmax_tries = 3', 1, "pins[0].df",
     "unknown DF 'SSSX'", None),
    ('unblocks = "pin"', 'unblocks = "pin2"', 1, "pins[1].unblocks", "unknown PIN 'pin2'", None),
    ('fid = "EF06"', 'fid = "EF6"', 1, "files[2].fid", "must be hex", None),
    ('fid = "DF01"', 'fid = "3F00"', 1, "files[5].fid", "reserved", None),
    ('fid = "EF06"\nsfi = 6', 'fid = "EF05"\nsfi = 6', 1, "files[2].fid", "already used by 'SSSE/EF05'", None),
    ("sfi = 6", "sfi = 5", 1, "files[2].sfi", "SFI 5 is already used", None),
    ("sfi = 6", "sfi = 31", 1, "files[2].sfi", "1..30", None),
    ("number = 2", "number = 1", 1, "files[1].record[1].number", "repeated", None),
    ('validators = ["gender"]', 'validators = ["sex"]', 1, "files[2].record[2].validators",
     "unknown validator 'sex'", None),
    ("max_length = 60", "max_length = 80", 1, "files[6].record[0].codec", "record_size is 64", None),
    ('kind = "an", charset = "ascii", length = 1 }', 'kind = "an", charset = "klingon", length = 1 }', 1,
     "files[1].record[1].codec", "charset", None),
    ('read = "key:02", update', 'read = "key:02 and", update', 1, "files[2].rules", "rule for 'read'", None),
    ('rules = { read = "always", update = "issuer", append = "issuer" }',
     'rules = { read = "always", create-ef = "issuer" }', 1, "files[1].rules", "does not apply to a EF", None),
    ('path = "SSSE/DF01/EF05"', 'path = "SSSE/DF09/EF05"', 1, "files[6].path", "must be declared before", None),
    ('path = "SSSE/EF06"', 'path = "SSSE/EF05"', 1, "files[2].path", "duplicate file path", None),
    ('type = "linear-variable"', 'type = "indexed"', 1, "files[1].type", "must be one of df, transparent", None),
    ("record_size = 20", "record_size = 300", 1, "files[1].record_size", "1..255", None),
    ("records = 7", "records = 5", 1, "files[1].records", "7 records mapped", None),
    ("size = 1024", "size = 40000", 1, "files[3].size", "1..32767", None),
    ('file = "SSSE/DF04/EF06"', 'file = "SSSE/DF04/EF09"', 1, "operations.bind-family.file",
     "unknown file 'SSSE/DF04/EF09'", None),
    ('needs = ["ssse-sm", "pin"]', 'needs = ["rkssse", "pin"]', 1, "operations.bind-family.needs",
     "usage 'external-auth'", None),
    ('codec = { kind = "cn", length = 1 } }', 'codec = { kind = "xx", length = 1 } }', 1,
     "operations.bind-family.fields[1].codec", "'kind' must be one of", None),
    ('charset = "gbk", max_length = 20 }', 'charset = "gbk", max_length = 30 }', 1, "operations.bind-family.fields",
     "records of", "fields = ["),
    ('sm_key = "ssse-sm"', 'sm_key = "nope"', 1, "post_issuance.sm_key", "not a key of usage 'sm'", None),
    ('block = "SSSE"', 'block = "SSSE/EF05"', 1, "post_issuance.block", "not a DF", None),
    ('fid = "DF04"\n', "", 1, "files[7].fid", "missing required key 'fid'", "[[files]]"),
    ("[post_issuance]", "[extras]", 1, "profile.extras", "unknown key 'extras'", None),
]


@pytest.mark.parametrize(("old", "new", "occ", "key", "fragment", "where"), CASES,
                         ids=[c[3] + ":" + c[4][:20] for c in CASES])
def test_bad_profile_names_file_line_and_key(tmp_path: Path, old: str, new: str, occ: int, key: str,
                                             fragment: str, where: str | None) -> None:
    text, changed = mutate(old, new, occ)
    bad = tmp_path / "profile.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as ei:
        load_profile(bad)
    err = ei.value
    assert err.file == str(bad)
    assert err.key == key, str(err)
    assert fragment in str(err)
    assert str(err).startswith(f"{bad}:{err.line}: [{key}] ")
    if where is None:
        expected = changed
    else:  # the table header the missing/invalid key belongs to, in the mutated text
        lines = text.splitlines()
        expected = max(i + 1 for i in range(changed) if lines[i].strip() == where)
    assert err.line == expected, (str(err), text.splitlines()[(err.line or 1) - 1])


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text, changed = mutate('title = "Social', 'title = = "Social')
    bad = tmp_path / "p.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError, match="not valid TOML") as ei:
        load_profile(bad)
    assert ei.value.line == changed


def test_unreadable_and_missing_profiles(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "none.toml")
    (tmp_path / "latin.toml").write_bytes("title = 'caf\xe9'".encode("latin-1"))
    with pytest.raises(ProfileError, match="not UTF-8"):
        load_profile(tmp_path / "latin.toml")
    with pytest.raises(ProfileError, match="no profile 'nosuch'"):
        find_profile("nosuch")


def test_references_are_numbers_with_p2_from_placement() -> None:
    p = load_profile(SSC)
    assert [(k.name, k.ref, k.p2) for k in p.keys] == [("issuer", 0, 0x00), ("irk", 1, 0x81), ("rkssse", 2, 0x82),
                                                       ("ssse-sm", 3, 0x83)]
    assert [(x.name, x.ref, x.p2) for x in p.pins] == [("pin", 1, 0x81), ("puk", 1, 0x81)]
    assert p.issuer_key is not None and p.issuer_key.name == "issuer"
    assert p.puk_for("pin") is not None and p.puk_for("puk") is None
    assert p.post_issuance.sm_key == "ssse-sm" and p.post_issuance.block == "SSSE"


def test_a_plain_number_and_the_b8_form_load_alike(tmp_path: Path) -> None:
    text = TEXT.replace("ref = 0x82", "ref = 0x02")
    (tmp_path / "p.toml").write_text(text, encoding="utf-8")
    assert load_profile(tmp_path / "p.toml").key("rkssse") == load_profile(SSC).key("rkssse")


def test_puk_must_share_the_pin_reference(tmp_path: Path) -> None:
    text, _ = mutate("ref = 0x81\nmax_tries = 10", "ref = 0x82\nmax_tries = 10")
    (tmp_path / "p.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError, match="reference number") as ei:
        load_profile(tmp_path / "p.toml")
    assert ei.value.key == "pins[1].ref"


def test_operation_spec_and_layout_description() -> None:
    p = load_profile(SSC, algorithm="3des")
    op = p.operation("bind-family")
    assert op.file == "SSSE/DF04/EF06" and op.action == "append" and op.needs == ("ssse-sm", "pin")
    assert [(f.field, f.number, f.optional) for f in op.fields] == [
        ("member_ssn", 1, False), ("relationship", 2, False), ("member_name", 3, True)]
    with pytest.raises(ProfileError, match="has no operation 'nope'"):
        p.operation("nope")
    d = describe_layout(p)
    assert d["algorithm"] == "3des"
    ef06 = next(f for f in d["files"] if f["path"] == "SSSE/DF04/EF06")
    assert ef06["rules"]["append"] == "pin:01 and sm" and ef06["rules"]["write"] == "pin:01 and sm"
    ssse = d["files"][0]
    assert ssse["name_text"] == "sx1.sh.社会保障" and ssse["fid"] == "DDF1"
    assert {k["name"]: k["diversify"] for k in d["keys"]}["rkssse"] == ["region", "serial"]
    assert all("value" not in k for k in d["keys"])
    schema = {s["field"]: s for s in d["record_schema"]}
    assert schema["citizen_id"]["file"] == "SSSE/EF06" and schema["citizen_id"]["record"] == 8
    assert schema["card_id_code"]["computed"] == "ssc-card-id"
    assert d["minimum_apdus"] == minimum_apdus(p).as_dict()


def test_profile_with_algorithm_rejects_unknown() -> None:
    with pytest.raises(ProfileError, match="offers algorithms sm4, 3des, not 'aes'"):
        load_profile(SSC, algorithm="aes")
