"""The batch runner in-process: virtual readers in parallel, faults (card pulled, power torn), remakes and
rejections, bad records at card time, cancel, stop-after-failures, recovery, the privacy of every output,
and PC/SC readers on the real stack (pcscd + vpcd)."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cardkit.batch import Ledger, Pseudonymizer, build_report, verify_journal, write_report
from cardkit.batch.runner import BatchRunner, PcscSlot, RunConfig, RunResult, TraceSink, VirtualSlot, make_feeder
from cardkit.batch.validate import load_batch
from cardkit.issuance.engine import verify
from cardkit.issuance.prepare import prepare
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import find_profile, load_profile
from cardkit.profiles.synthetic import SSC_FIELDS, csv_text, ssc_people
from cardkit.readers import TEST_KEYS, load_virtual_card
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.faults import power_loss_at, remove_at

KEYS = TestKeyFile(TEST_KEYS, allow_test_keys=True)
PROFILE = load_profile(find_profile("ssc"))
PZ = Pseudonymizer(b"runner tests pseudonym key 32 b!")


def load(tmp_path: Path, n: int, *, seed: int = 3, batch: str = "B", url: str | None = None,
         rows: list[dict[str, str]] | None = None, **kw: Any) -> tuple[str, list[dict[str, str]]]:
    rows = rows if rows is not None else list(ssc_people(n, seed=seed))
    src = tmp_path / f"{batch}.csv"
    src.write_text(csv_text(rows, SSC_FIELDS), encoding="utf-8")
    url = url or f"sqlite:///{tmp_path}/ledger.db"
    with Ledger.open(url) as ledger:
        load_batch(ledger, src, PROFILE, batch, PZ, **kw)
    return url, rows


def slots(tmp_path: Path, n: int, *, on_card: Any = None, latency_s: float = 0.0,
          trace: TraceSink | None = None) -> list[VirtualSlot]:
    feeder = make_feeder(PROFILE, KEYS, tmp_path / "feeder", latency_s=latency_s)
    return [VirtualSlot(f"virtual-{i}", feeder, on_card=on_card, trace=trace) for i in range(n)]


def run(url: str, out: Path, readers: list[Any], *, batch: str = "B", station: str = "st", **cfg: Any) -> RunResult:
    return BatchRunner(RunConfig(url, batch, station, out, **cfg), PROFILE, KEYS, readers).run()


def invariants(url: str, out: Path, batch: str = "B", *, images: bool = True) -> dict[str, Any]:
    """The ledger's exactly-once guarantees, the report's reconciliation and the journal's chain."""
    with Ledger.open(url) as ledger:
        report = build_report(ledger, batch, journal=out / "journal.jsonl")
        cards = ledger.cards(batch)
        records = list(ledger.records(batch))
    assert report["reconciliation"]["reconciles"], report["reconciliation"]
    assert report["journal"]["ok"], report["journal"]
    verified = [c for c in cards if c.state == "verified"]
    assert len({c.seq for c in verified}) == len(verified)  # no record issued twice
    assert len({c.chip_serial for c in cards}) == len(cards)  # no chip used twice
    done = {r.seq for r in records if r.state == "done"}
    assert {c.seq for c in verified} == done
    if images:  # cards/*.json are exactly the verified cards
        assert {p.stem for p in (out / "cards").glob("*.json")} == {c.chip_serial.hex().upper() for c in verified}
    return report


def reverify(out: Path, sample: int, rows: list[dict[str, str]], url: str, batch: str = "B") -> None:
    """Re-verify saved card images through a fresh session against the records and the ledger manifests."""
    with Ledger.open(url) as ledger:
        by_chip = {c.chip_serial.hex().upper(): c for c in ledger.cards(batch, state="verified")}
        lines = {r.seq: r.line for r in ledger.records(batch)}
    images = sorted((out / "cards").glob("*.json"))
    for path in random.Random(1).sample(images, min(sample, len(images))):
        card_row = by_chip[path.stem]
        row = rows[lines[card_row.seq] - 2]
        card = load_virtual_card(path)
        session = CardSession(VirtualTransport(card))
        manifest = verify(session, PROFILE, prepare(PROFILE, row), KEYS)
        assert card_row.manifest is not None and manifest["files"] == card_row.manifest["files"]
        assert manifest["chip_serial"] == path.stem


# ------------------------------------------------------------------------------------------------ volume
def _volume(tmp_path: Path, n: int) -> None:
    url, rows = load(tmp_path, n)
    out = tmp_path / "out"
    result = run(url, out, slots(tmp_path, 8))
    assert (result.verified, result.failed, result.rejected, result.stopped) == (n, 0, 0, None)
    assert result.batch_state == "finished" and result.status["done"] == n
    report = invariants(url, out)
    assert report["records"]["done"] == n and len(report["throughput"]["per_reader"]) == 8
    reverify(out, 12, rows, url)
    assert (out / "cards").stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in (out / "cards").glob("*.json"))


def test_1000_records_on_8_virtual_readers(tmp_path: Path) -> None:
    """≈ 17 s on the 2-core development machine (under the 40 s that would make it a slow test)."""
    _volume(tmp_path, 1000)


# ------------------------------------------------------------------------------------------------ faults
def _armed(plan: dict[int, tuple[str, int]]) -> Any:
    """on_card: the k-th card handed out gets a fault (``remove`` or ``power``) at its n-th APDU."""
    count = [0]
    lock = threading.Lock()

    def on_card(card: Any) -> None:
        with lock:
            count[0] += 1
            k = count[0]
        if k in plan:
            kind, n = plan[k]
            (remove_at if kind == "remove" else power_loss_at)(card, n, seed=k)

    return on_card


def apdu_counts(tmp_path: Path) -> tuple[int, int]:
    """APDUs of one SSC personalization and of its verification (the engine decides; measure them)."""
    from cardkit.issuance.engine import personalize

    card = slots(tmp_path, 1)[0].next_card(threading.Event())
    assert card is not None
    prepared = prepare(PROFILE, next(ssc_people(1, seed=99)))
    result = personalize(card, PROFILE, prepared, KEYS)
    n = card.apdu_count
    verify(card, PROFILE, prepared, KEYS, result)
    return n, card.apdu_count - n


def test_card_pulled_and_power_torn_mid_write_are_spoiled_remade_and_reported(tmp_path: Path) -> None:
    url, _ = load(tmp_path, 6)
    out = tmp_path / "out"
    writing, reading = apdu_counts(tmp_path)
    plan = {2: ("remove", writing // 2), 4: ("power", writing + reading // 2)}
    result = run(url, out, slots(tmp_path, 1, on_card=_armed(plan)))
    assert (result.verified, result.failed, result.rejected) == (6, 2, 0)
    report = invariants(url, out)
    assert report["remakes"]["total"] == 2 and report["cards"]["spoiled"] == 2
    reasons = [s["reason"] for s in report["spoiled_cards"]]
    assert sorted(r.split(":")[0] for r in reasons) == ["personalize", "verify"]
    assert "card removed" in reasons[0] and "power lost" in reasons[1]
    spoiled = {s["chip_serial"] for s in report["spoiled_cards"]}
    assert {p.stem for p in (out / "cards" / "spoiled").glob("*.json")} == spoiled
    events = [json.loads(line)["event"] for line in (out / "journal.jsonl").read_text().splitlines()]
    assert events.count("card.failed") == 2 and events.count("card.verified") == 6


def test_remake_limit_rejects_the_record_and_the_run_says_so(tmp_path: Path) -> None:
    url, _ = load(tmp_path, 3)
    out = tmp_path / "out"
    result = run(url, out, slots(tmp_path, 1, on_card=_armed({1: ("power", 10)})), max_remakes=0)
    assert (result.verified, result.failed, result.rejected) == (2, 1, 1)
    report = invariants(url, out)
    (rej,) = report["rejected_records"]
    assert rej["seq"] == 1 and "remake limit reached (0)" in rej["reason"]
    assert report["reconciliation"]["input"] == 3 == report["records"]["done"] + report["records"]["rejected"]


def test_stop_after_failures(tmp_path: Path) -> None:
    url, _ = load(tmp_path, 5)
    out = tmp_path / "out"
    result = run(url, out, slots(tmp_path, 1, on_card=lambda card: power_loss_at(card, 20, seed=1)),
                 stop_after_failures=2, max_remakes=5)
    assert result.failed == 2 and result.verified == 0 and result.stopped is not None
    assert "--stop-after-failures 2" in result.stopped and result.batch_state == "running"
    with Ledger.open(url) as ledger:
        assert ledger.status("B")["pending"] == 5  # both failed records went back to the queue
    invariants(url, out)


def test_invalid_record_at_card_time_is_rejected(tmp_path: Path) -> None:
    rows = list(ssc_people(4, seed=8))
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger.open(url) as ledger:  # bypass validation: what a changed profile or a raw load would give
        bad = dict(rows[1], birth_date="20230230")
        ledger.create_batch("B", "ssc", "0" * 64, [(i + 2, r) for i, r in enumerate([rows[0], bad, *rows[2:]])],
                            identity_of=lambda f: PZ.of(f["citizen_id"]))
    out = tmp_path / "out"
    result = run(url, out, slots(tmp_path, 1), on_bad_record="skip")
    assert (result.verified, result.rejected, result.failed) == (3, 1, 0)
    report = invariants(url, out)
    assert "invalid record" in report["rejected_records"][0]["reason"] and report["cards"]["spoiled"] == 0
    url2 = f"sqlite:///{tmp_path}/l2.db"
    with Ledger.open(url2) as ledger:
        ledger.create_batch("B", "ssc", "0" * 64, [(2, bad), (3, rows[0])], identity_of=lambda f: PZ.of(f["name"]))
    result = run(url2, tmp_path / "out2", slots(tmp_path, 1), on_bad_record="stop")
    assert result.rejected == 1 and result.verified == 0 and "--on-bad-record stop" in (result.stopped or "")


def test_cancel_stops_handing_out_records(tmp_path: Path) -> None:
    url, _ = load(tmp_path, 60)
    out = tmp_path / "out"
    readers = slots(tmp_path, 2, latency_s=0.002)
    runner = BatchRunner(RunConfig(url, "B", "st", out), PROFILE, KEYS, readers)
    thread = threading.Thread(target=runner.run)
    thread.start()
    deadline = time.monotonic() + 30
    with Ledger.open(url) as ledger:
        while ledger.status("B")["done"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        ledger.cancel("B")
    thread.join(30)
    assert not thread.is_alive()
    with Ledger.open(url) as ledger:
        status = ledger.status("B")
        assert ledger.batch("B").state == "cancelled"
    assert status["claimed"] == status["written"] == 0 and status["pending"] > 0
    assert runner.result.stopped is None and runner.result.batch_state == "cancelled"


def test_a_restarted_station_spoils_its_half_written_card_and_goes_on(tmp_path: Path) -> None:
    url, _ = load(tmp_path, 3)
    out = tmp_path / "out"
    with Ledger.open(url) as ledger:  # the state a crash mid-card leaves
        claim = ledger.claim("B", "st", "virtual-0")
        assert claim is not None
        ledger.card_started(claim, bytes.fromhex("AB000001"))
    result = run(url, out, slots(tmp_path, 2))
    assert [r.spoiled_chip for r in result.recovered] == [bytes.fromhex("AB000001")]
    report = invariants(url, out)
    assert report["spoiled_cards"][0]["reason"] == "unknown state after crash" and report["records"]["done"] == 3
    lines = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    assert any(x["event"] == "card.spoiled" and x["chip_serial"] == "AB000001" for x in lines)


def test_station_lock_refuses_a_second_process_with_the_same_station(tmp_path: Path) -> None:
    from cardkit.batch.runner import StationBusyError, _station_lock

    with _station_lock(tmp_path, "st"), pytest.raises(StationBusyError, match="already running"), \
            _station_lock(tmp_path, "st"):
        pass


# ------------------------------------------------------------------------------------------------ privacy
def test_no_secret_or_identifier_in_any_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url, rows = load(tmp_path, 12)
    out = tmp_path / "out"
    with open(tmp_path / "trace.jsonl", "w", encoding="utf-8") as fh:
        run(url, out, slots(tmp_path, 3, on_card=_armed({3: ("remove", 25)}), trace=TraceSink(fh)))
    with Ledger.open(url) as ledger:
        write_report(build_report(ledger, "B", journal=out / "journal.jsonl"), out)
    texts = {p.name: p.read_text(encoding="utf-8") for p in out.iterdir() if p.is_file() and p.suffix in
             (".jsonl", ".json", ".csv", ".txt", ".html")}
    assert set(texts) >= {"journal.jsonl", "report.json", "records.csv", "summary.txt", "report.html"}
    texts["trace"] = (tmp_path / "trace.jsonl").read_text(encoding="utf-8")
    assert texts["trace"].count("\n") > 12 * 60  # every APDU of every card, one whole line each
    assert all(json.loads(line)["sw"] for line in texts["trace"].splitlines())
    texts["log"] = caplog.text
    secrets = [v for r in rows for v in (r["citizen_id"], r["name"], r["household_registration"], r["phone"])]
    secrets += [v for r in rows for v in (r["citizen_id"].encode().hex().upper(),
                                          r["name"].encode("gbk").hex().upper())]
    keys = [k.value.hex() for n, a in KEYS.names() for k in [KEYS.key(n, a)]]
    for name, text in texts.items():
        low = text.lower()
        for s in secrets:
            assert s not in text, f"a cardholder value leaked into {name}"
        for k in keys:
            assert k.lower() not in low, f"a key value leaked into {name}"
    images = [p.read_text() for p in (out / "cards").rglob("*.json")]
    assert images and not any(k.upper() in img for img in images for k in keys)  # master keys never on a card


# ------------------------------------------------------------------------------------------------ PC/SC
@pytest.mark.pcsc
def test_pcsc_readers_wait_for_cards_and_refuse_an_issued_one(tmp_path: Path, pcscd: Any, vpcd_card: Any) -> None:
    from cardkit.transport.pcsc import list_readers

    url, _ = load(tmp_path, 3)
    out = tmp_path / "out"
    names = [n for n in list_readers() if "Virtual PCD" in n]
    readers = [PcscSlot(n, poll_s=0.1) for n in names]
    runner = BatchRunner(RunConfig(url, "B", "pcsc-st", out, poll_s=0.1), PROFILE, KEYS, readers)
    thread = threading.Thread(target=runner.run)
    thread.start()
    feeder = make_feeder(PROFILE, KEYS, tmp_path / "feeder")
    blank = []
    for _ in range(3):
        card = feeder.next_card()
        from cardkit.virtual.isoauth import mutual_auth_handler

        card.mutual_auth_handler = mutual_auth_handler
        blank.append(card)

    def wait_done(n: int) -> None:
        deadline = time.monotonic() + 60
        with Ledger.open(url) as ledger:
            while ledger.status("B")["done"] < n:
                assert time.monotonic() < deadline, ledger.status("B")
                time.sleep(0.05)

    try:
        _, first = vpcd_card(blank[0])
        _, second = vpcd_card(blank[1])
        wait_done(2)
        first.remove()  # the operator takes the first card out ...
        _, again = vpcd_card(blank[0])  # ... and puts it into another reader by mistake: refused
        deadline = time.monotonic() + 30
        while "card.refused" not in (out / "journal.jsonl").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        _, third = vpcd_card(blank[2])
        wait_done(3)
        for server in (second, again, third):
            server.remove()
        thread.join(30)
        assert not thread.is_alive()
    finally:
        runner.stop("test over")
        thread.join(10)
    report = invariants(url, out, images=False)
    chips = {c.serial.hex().upper() for c in blank}
    assert {s["chip_serial"] for s in report["record_list"]} == chips and report["cards"]["spoiled"] == 0
    assert verify_journal(out / "journal.jsonl").ok


# ------------------------------------------------------------------------------------------------ prepare, limits
def test_a_given_prepare_is_used_for_every_claim_and_may_reject_a_record(tmp_path: Path) -> None:
    """What a batch loaded from a stored plan does: the ledger holds a reference, ``prepare`` finds the data."""
    from cardkit.batch.ledger_model import Claim
    from cardkit.errors import RecordError
    from cardkit.issuance.prepare import PreparedRecord, RecordProblems

    rows = list(ssc_people(6, seed=12))
    store = {str(i): prepare(PROFILE, row, keystore=KEYS) for i, row in enumerate(rows)}
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger.open(url) as ledger:
        ledger.create_batch("B", "ssc", "1" * 64, [(i + 2, {"ref": str(i)}) for i in range(len(rows))],
                            identity_of=lambda f: PZ.of(rows[int(f["ref"])]["citizen_id"]))
    asked: list[str] = []
    lock = threading.Lock()

    def from_store(claim: Claim) -> PreparedRecord:
        with lock:
            asked.append(claim.fields["ref"])
        if claim.fields["ref"] == "4":
            raise RecordProblems([RecordError("not in the store", line=claim.line)], line=claim.line)
        return store[claim.fields["ref"]]

    out = tmp_path / "out"
    runner = BatchRunner(RunConfig(url, "B", "st", out, on_bad_record="skip", facts={"plan": "P-1"}), PROFILE, KEYS,
                         slots(tmp_path, 3), prepare=from_store)
    result = runner.run()
    assert (result.verified, result.rejected, result.failed) == (5, 1, 0)
    assert sorted(asked) == [str(i) for i in range(6)]  # once per claim, never from the ledger's fields
    report = invariants(url, out)
    assert "not in the store" in report["rejected_records"][0]["reason"]
    with Ledger.open(url) as ledger:
        cards = ledger.cards("B")
    assert {c.seq for c in cards} == {1, 2, 3, 4, 6} and all(c.manifest and c.manifest["plan"] == "P-1" for c in cards)
    for card in cards:  # the card holds the record the reference names
        assert card.manifest is not None
        image = load_virtual_card(out / "cards" / f"{card.chip_serial.hex().upper()}.json")
        verify(CardSession(VirtualTransport(image)), PROFILE, store[str(card.seq - 1)], KEYS, None)
    lines = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    assert all(x["plan"] == "P-1" for x in lines)


def test_max_cards_claims_exactly_that_many_on_parallel_readers_then_a_run_finishes(tmp_path: Path) -> None:
    url, rows = load(tmp_path, 20)
    out = tmp_path / "out"
    first = run(url, out, slots(tmp_path, 4, latency_s=0.0005), max_cards=7)
    assert (first.verified, first.failed, first.rejected) == (7, 0, 0)
    assert first.max_cards_reached and first.stopped is not None and "7 record(s) claimed" in first.stopped
    assert first.batch_state == "running" and first.status["pending"] == 13
    invariants(url, out)
    # a limit counts claims, remakes included: a torn card uses one of the 3
    second = run(url, out, slots(tmp_path, 1, on_card=_armed({1: ("power", 10)})), max_cards=3)
    assert (second.verified, second.failed) == (2, 1) and second.max_cards_reached
    third = run(url, out, slots(tmp_path, 4))
    assert third.stopped is None and not third.max_cards_reached and third.batch_state == "finished"
    assert third.verified == 11
    report = invariants(url, out)
    assert report["records"]["done"] == 20 and report["cards"]["spoiled"] == 1
    reverify(out, 4, rows, url)
    # a limit larger than the batch is no stop
    url2, _ = load(tmp_path, 2, batch="C", seed=4, url=f"sqlite:///{tmp_path}/l2.db")
    assert run(url2, tmp_path / "out2", slots(tmp_path, 2), batch="C", max_cards=5).stopped is None


def test_run_config_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_cards"):
        RunConfig("sqlite:///x", "B", "st", tmp_path, max_cards=-1)
    with pytest.raises(ValueError, match="on_bad_record"):
        RunConfig("sqlite:///x", "B", "st", tmp_path, on_bad_record="ignore")
    with pytest.raises(ValueError, match="record, station"):
        RunConfig("sqlite:///x", "B", "st", tmp_path, facts={"station": "x", "record": "1"})
