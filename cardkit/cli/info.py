"""Technician commands: ``info`` (diagnose a card), ``snapshot`` (everything readable, as JSON) and ``diff``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cardkit.cli.main import Options

if TYPE_CHECKING:
    from cardkit.apps.diagnose import DiagnoseOptions
    from cardkit.keys.store import Keystore
    from cardkit.profiles.model import Profile

F = TypeVar("F", bound=Callable[..., Any])


def _card_options(fn: F) -> F:
    """The options ``info`` and ``snapshot`` share: profile, keys, PINs, GP key set."""
    for deco in reversed([
        click.option("--profile", "profile_name", metavar="P",
                     help="Profile (name under applets/ or a path). Default: recognised from the card."),
        click.option("--algorithm", type=click.Choice(["sm4", "3des", "aes"]),
                     help="Algorithm of the card's keys (default: the profile's)."),
        click.option("--keys", "keys", metavar="FILE",
                     help="Keystore (a key file or key URI) for external authentication and the GP key set."),
        click.option("--allow-test-keys", is_flag=True, help="Accept a TEST key file (never for real cards)."),
        click.option("--pin", "pin_specs", multiple=True, metavar="NAME=ENV",
                     help="Verify the profile's PIN NAME with the value of environment variable ENV "
                          "(repeatable; never the value itself on the command line)."),
        click.option("--gp-keyset", metavar="NAME",
                     help="GlobalPlatform key set in --keys (NAME, or NAME-enc/-mac/-dek) to list the registry."),
    ]):
        fn = deco(fn)
    return fn


def open_keys(keys: str | None, allow_test_keys: bool) -> Keystore | None:
    """The keystore named by ``--keys``: a key URI (``file:``, ``store:``, ``pkcs11:``) or a TEST key file."""
    if keys is None:
        if allow_test_keys:
            raise click.UsageError("--allow-test-keys needs --keys FILE")
        return None
    if keys.split(":", 1)[0] in ("file", "store", "pkcs11"):
        try:
            from cardkit.keys.uri import open_keystore
        except ImportError as exc:  # pragma: no cover - key URIs come with cardkit.keys.uri
            raise click.BadParameter(f"key URIs are not supported by this installation ({exc})",
                                     param_hint="--keys") from None
        return open_keystore(keys, allow_test_keys=allow_test_keys)
    from cardkit.keys.store import TestKeyFile

    return TestKeyFile(keys, allow_test_keys=allow_test_keys)


def _load_profile(name: str | None, algorithm: str | None) -> Profile | None:
    if name is None:
        return None
    from cardkit.profiles.model import find_profile, load_profile

    return load_profile(find_profile(name), algorithm=algorithm)


def _pins(specs: tuple[str, ...], profile: Profile | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for spec in specs:
        name, sep, env = spec.partition("=")
        if not sep or not name or not env:
            raise click.BadParameter(f"expected NAME=ENV (a PIN name and an environment variable), got {spec!r}",
                                     param_hint="--pin")
        if profile is not None and name not in {p.name for p in profile.pins}:
            known = ", ".join(p.name for p in profile.pins) or "none"
            raise click.BadParameter(f"profile {profile.name!r} has no PIN {name!r} (PINs: {known})",
                                     param_hint="--pin")
        value = os.environ.get(env)
        if value is None:
            raise click.BadParameter(f"environment variable {env} (value of PIN {name!r}) is not set",
                                     param_hint="--pin")
        if not value:
            raise click.BadParameter(f"environment variable {env} (value of PIN {name!r}) is empty",
                                     param_hint="--pin")
        out[name] = value.encode("utf-8")
    return out


def _options(profile_name: str | None, algorithm: str | None, keys: str | None, allow_test_keys: bool,
             pin_specs: tuple[str, ...], gp_keyset: str | None) -> DiagnoseOptions:
    from cardkit.apps.diagnose import DiagnoseOptions

    if gp_keyset is not None and keys is None:
        raise click.UsageError("--gp-keyset needs --keys (the keystore that holds the key set)")
    profile = _load_profile(profile_name, algorithm)
    return DiagnoseOptions(profile=profile, keystore=open_keys(keys, allow_test_keys),
                           pins=_pins(pin_specs, profile), gp_keyset=gp_keyset, algorithm=algorithm)


# ------------------------------------------------------------------------------------------ rendering


def _rules_text(rules: Mapping[str, str]) -> str:
    """Operations grouped by rule: ``read=always; update,append=issuer``."""
    groups: dict[str, list[str]] = {}
    for op, text in rules.items():
        groups.setdefault(text, []).append(op)
    return "; ".join(f"{','.join(ops)}={text}" for text, ops in groups.items())


def _gp_lines(g: Mapping[str, Any]) -> list[str]:
    if not g.get("isd"):
        return [f"GlobalPlatform: {g.get('error', 'no issuer security domain')}"]
    lines = [f"GlobalPlatform: issuer security domain {g['isd']['aid']}"]
    if g["isd"].get("card_life_cycle"):
        lines.append(f"  card life cycle (FCI): {g['isd']['card_life_cycle']}")
    cd = g.get("card_data")
    if isinstance(cd, dict) and "error" not in cd:
        lines.append(f"  GP {cd.get('gp_version') or '?'}; secure channels: {', '.join(cd.get('scp', [])) or '?'}")
    for name, label in (("iin", "IIN"), ("cin", "CIN"), ("sequence_counter", "sequence counter")):
        if isinstance(g.get(name), str):
            lines.append(f"  {label}: {g[name]}")
    cplc = g.get("cplc")
    if isinstance(cplc, dict) and "error" not in cplc:
        fab = cplc.get("ic_fabricator_name") or cplc.get("ic_fabricator")
        lines.append(f"  CPLC: IC fabricator {fab}, IC type {cplc.get('ic_type')}, IC serial "
                     f"{cplc.get('ic_serial_number')}, OS {cplc.get('os_id')} release "
                     f"{cplc.get('os_release_date_text') or cplc.get('os_release_date')}")
    if isinstance(g.get("key_info"), list):
        for k in g["key_info"]:
            lines.append(f"  key {k['id']:02X} version {k['version']:02X}: {', '.join(k['components'])}")
    for name in ("cplc", "card_data", "key_info", "iin", "cin", "sequence_counter"):
        item = g.get(name)
        if isinstance(item, dict) and ("error" in item or "absent" in item):
            lines.append(f"  {name.replace('_', ' ')}: {item.get('error') or item.get('absent')}")
    reg = g.get("registry") or {}
    if "secure_channel" in g:
        lines.append(f"  secure channel: {g['secure_channel']}")
    if "error" in reg:
        lines.append(f"  registry: {reg['error']}")
    if "card_life_cycle" in reg:
        lines.append(f"  card life cycle: {reg['card_life_cycle']}")
    for subset, label in (("apps", "application/SD"), ("load-files", "load file")):
        items = reg.get(subset)
        if isinstance(items, list):
            if not items:
                lines.append(f"  {label}s: none")
            for e in items:
                priv = f" [{', '.join(e['privileges'])}]" if e.get("privileges") else ""
                lines.append(f"  {label} {e['aid']}: {e['life_cycle']}{priv}")
        elif isinstance(items, dict):
            lines.append(f"  {label}s: {items['error']}")
    return lines


def _value_line(rec: Mapping[str, Any]) -> str:
    head = f"{rec.get('tag', rec['number']):02X}"
    if "field" in rec and "value" in rec:
        text = f"{head} {rec['field']}: {rec['value']}"
        parts = rec.get("parts")
        if isinstance(parts, dict):
            match = rec.get("matches_chip")
            ok = "" if match is None else ", matches this chip" if match else ", NOT this chip"
            text += f"  (region {parts['region']}, chip serial {parts['chip_serial']}{ok})"
        return text
    if "decode_error" in rec:
        return f"{head} {rec.get('field', 'record')}: {rec['decode_error']}"
    return f"record {rec['number']}: {rec['length']} bytes, sha256 {rec.get('sha256', '')[:16]}…"


def _file_lines(f: Mapping[str, Any]) -> list[str]:
    path = f["path"]
    depth = 0 if path == "MF" else path.count("/") + 1
    pad = "  " * depth
    if not f.get("present"):
        return [f"{pad}{path}: {f.get('error', 'not present')}"]
    bits = [f.get("fid") or "", f.get("type") or ""]
    if f.get("label"):
        bits.insert(0, f["label"])
    if f.get("df_name_text"):
        bits.append(f"\"{f['df_name_text']}\"")
    if f.get("record_count") is not None:
        bits.append(f"{f['record_count']}×{f['record_size']} bytes")
    elif f.get("size") is not None:
        bits.append(f"{f['size']} bytes")
    if f.get("sfi"):
        bits.append(f"SFI {f['sfi']}")
    if f.get("lcs"):
        bits.append(str(f["lcs"]))
    lines = [f"{pad}{path}  " + "  ".join(b for b in bits if b)]
    inner = pad + "    "
    if isinstance(f.get("rules"), dict):
        lines.append(f"{inner}rules: {_rules_text(f['rules'])}")
    for key in ("rules_note", "select_warning", "fcp_error", "read_note"):
        if f.get(key):
            lines.append(f"{inner}{key.replace('_', ' ')}: {f[key]}")
    if f.get("read_error"):
        lines.append(f"{inner}{f['read_error']}")
    for rec in f.get("records", []):
        lines.append(f"{inner}{_value_line(rec)}")
    if "records" in f and not f["records"]:
        lines.append(f"{inner}(no records)")
    c = f.get("content")
    if isinstance(c, dict):
        label = f"{c['field']}: " if c.get("field") else ""
        if "value" in c:
            lines.append(f"{inner}{label}{c['value']}")
        elif c.get("all_zero"):
            lines.append(f"{inner}{label}{c['length']} bytes, all 00 (empty)")
        else:
            lines.append(f"{inner}{label}{c['length']} bytes, sha256 {c['sha256'][:16]}…")
        if c.get("raw") and len(c["raw"]) <= 128 and f.get("label"):
            lines.append(f"{inner}{c['raw']}")
    return lines


def render(report: Mapping[str, Any]) -> list[str]:
    """The readable report (what `cardkit info` prints without --json)."""
    r, a = report["reader"], report["atr"]
    lines = [f"Reader: {r['name']} ({r.get('protocol') or '?'})", f"ATR: {a.get('atr')}"]
    for name in a.get("names", []):
        lines.append(f"  matches: {name}")
    if a.get("error"):
        lines.append(f"  {a['error']}")
    lines.append(f"  chip serial: {a.get('chip_serial') or a.get('chip_serial_note')}")
    lines += _gp_lines(report.get("gp") or {})
    apps = report.get("applications") or []
    lines.append("Applications:" if apps else "Applications: none recognised (EF.DIR and known AIDs probed)")
    for app in apps:
        prof = f" → profile {app['profile']}" if app.get("profile") else ""
        lines.append(f"  {app['aid']}  {app.get('label') or ''} (found by {app['found_by']}){prof}")
    p = report.get("profile") or {}
    lines.append(f"Profile: {p['name']} ({p.get('algorithm')}), {p.get('how')}" if p.get("name")
                 else f"Profile: none — {p.get('note')}")
    if report.get("pins"):
        lines.append("PINs:")
        for pin in report["pins"]:
            lines.append(f"  {pin['name']} ({pin['kind']}, {pin['df']}, ref {pin['ref']}): {pin['state']}")
    lines.append("Files:")
    for f in report.get("files", []):
        lines += ["  " + x for x in _file_lines(f)]
    problems = report.get("problems") or []
    lines.append(f"Problems ({len(problems)}):" if problems else "Problems: none")
    lines += [f"  - {x['step']}: {x['reason']}" for x in problems]
    return lines


# ------------------------------------------------------------------------------------------ commands


@click.command()
@_card_options
@click.pass_obj
def info(opts: Options, profile_name: str | None, algorithm: str | None, keys: str | None, allow_test_keys: bool,
         pin_specs: tuple[str, ...], gp_keyset: str | None) -> None:
    """Diagnose the card: reader, ATR, GlobalPlatform data, applications, files with their access rules,
    PIN counters (no try spent), and why anything refuses.

    Files are read where their read rule can be met with the keys (--keys) and PINs (--pin NAME=ENV) given;
    each key and PIN is tried at most once. Citizen IDs and other identifiers are masked.

    \b
    Examples:
      cardkit --reader virtual info
      cardkit --json info --profile ssc --keys keys/test/ssc.toml --allow-test-keys --pin pin=SSC_PIN
    """
    from cardkit.apps.diagnose import diagnose
    from cardkit.readers import open_session

    dopts = _options(profile_name, algorithm, keys, allow_test_keys, pin_specs, gp_keyset)
    with open_session(opts.reader, trace=opts.trace) as session:
        report = diagnose(session, dopts)
    if opts.json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for line in render(report):
            click.echo(line)


@click.command()
@click.option("--out", "out", required=True, metavar="FILE", help="Where to write the snapshot (JSON, mode 0600).")
@_card_options
@click.pass_obj
def snapshot(opts: Options, out: str, profile_name: str | None, algorithm: str | None, keys: str | None,
             allow_test_keys: bool, pin_specs: tuple[str, ...], gp_keyset: str | None) -> None:
    """Write everything readable on the card as JSON: the diagnosis plus every record and file in hex.

    The file holds PERSONAL DATA (names, addresses, identifiers in the raw bytes): it is created with mode
    0600; delete it when the case is closed. Compare snapshots with `cardkit diff`.

    \b
    Examples:
      cardkit --reader virtual snapshot --out card.json
      cardkit snapshot --out card.json --keys keys/test/ssc.toml --allow-test-keys
    """
    from cardkit.apps.snapshot import NOTICE, save_snapshot, summarize, take_snapshot
    from cardkit.readers import open_session

    dopts = _options(profile_name, algorithm, keys, allow_test_keys, pin_specs, gp_keyset)
    if Path(out).is_dir():
        raise click.BadParameter(f"{out} is a directory; give a file name", param_hint="--out")
    if not Path(out).absolute().parent.is_dir():
        raise click.BadParameter(f"the folder of {out} does not exist", param_hint="--out")
    with open_session(opts.reader, trace=opts.trace) as session:
        snap = take_snapshot(session, dopts)
    path = save_snapshot(snap, out)
    files, records = summarize(snap["files"])
    serial = (snap.get("atr") or {}).get("chip_serial") or "unknown"
    if opts.json:
        click.echo(json.dumps({"snapshot": str(path), "chip_serial": serial, "files": files, "records": records,
                               "problems": len(snap["problems"]), "notice": NOTICE}, indent=2))
        return
    click.echo(f"snapshot of chip {serial} written to {path} ({files} files, {records} records, "
               f"{len(snap['problems'])} problems)")
    click.echo(NOTICE)


def _record(path: str, index: int) -> dict[str, str]:
    """Record ``index`` (1-based) of a CSV / JSON Lines file, or a JSON object (or list of objects) file."""
    from cardkit.errors import RecordError

    p = Path(path)
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecordError(f"cannot read {p}: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(f"{p} is not JSON: {exc}") from None
        items = doc if isinstance(doc, list) else [doc]
        if not 1 <= index <= len(items) or not isinstance(items[index - 1], dict):
            raise RecordError(f"{p} has no record object number {index}")
        return {str(k): str(v) for k, v in items[index - 1].items()}
    from cardkit.batch.sources import iter_records

    for rec in iter_records(p):
        if rec.index == index - 1:
            return rec.fields
    raise RecordError(f"{p} has fewer than {index} records")


@click.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="[B]", required=False)
@click.option("--profile", "profile_name", metavar="P", help="Compare A with the golden card of this profile...")
@click.option("--record", "record_file", metavar="FILE", help="... and this record (CSV, JSON Lines or JSON).")
@click.option("--index", type=click.IntRange(min=1), default=1, show_default=True,
              help="Which record of FILE (1 = the first).")
@click.option("--algorithm", type=click.Choice(["sm4", "3des", "aes"]), help="Algorithm of the card's keys.")
@click.option("--keys", "keys", metavar="FILE", help="Keystore, to compute keyed fields (card identification code).")
@click.option("--allow-test-keys", is_flag=True, help="Accept a TEST key file (never for real cards).")
@click.option("--strict", is_flag=True, help="Count contents one side could not read as differences.")
@click.pass_obj
def diff(opts: Options, a: str, b: str | None, profile_name: str | None, record_file: str | None, index: int,
         algorithm: str | None, keys: str | None, allow_test_keys: bool, strict: bool) -> None:
    """Compare two snapshots, or a snapshot with the golden card of a profile and record.

    Reports missing and extra files, size/structure/life-cycle and access-rule differences, and records or
    bytes that differ, named by file and field. Identifier values are never shown. Exit code 8 when anything
    differs.

    \b
    Examples:
      cardkit diff before.json after.json
      cardkit diff card.json --profile ssc --record person.json --keys keys/test/ssc.toml --allow-test-keys
    """
    from cardkit.apps.snapshot import diff_snapshots, expected_snapshot, load_snapshot
    from cardkit.cli.errors import VerificationFailed

    if b is not None and (profile_name or record_file):
        raise click.UsageError("give either a second snapshot B or --profile with --record, not both")
    if b is not None:
        first, second, b_name = load_snapshot(a), load_snapshot(b), b
    else:
        if profile_name is None or record_file is None:
            raise click.UsageError("give a second snapshot B, or --profile P and --record FILE")
        first = load_snapshot(a)
        from cardkit.issuance.prepare import prepare
        from cardkit.profiles.model import find_profile, load_profile

        profile = load_profile(find_profile(profile_name), algorithm=algorithm)
        keystore = open_keys(keys, allow_test_keys)
        serial = (first.get("atr") or {}).get("chip_serial")
        if not serial:
            raise click.UsageError(f"{a} carries no chip serial, which the golden card needs")
        prepared = prepare(profile, _record(record_file, index), keystore=keystore)
        second = expected_snapshot(profile, prepared, keystore, bytes.fromhex(serial))
        b_name = f"{profile.name} + {Path(record_file).name}#{index}"
    result = diff_snapshots(first, second, a_name=a, b_name=b_name, strict=strict)
    if opts.json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(f"A: {a}\nB: {b_name}")
        click.echo(f"{len(result.differences)} difference(s)" + (":" if result.differences else ""))
        for d in result.differences:
            values = f": {d['a']!r} → {d['b']!r}" if "a" in d else ""
            click.echo(f"  {d['where']}: {d['what']}{values}")
        if result.not_compared:
            click.echo(f"not compared ({len(result.not_compared)}):")
            for n in result.not_compared:
                click.echo(f"  {n['where']}: {n['why']}")
    if not result.same:
        raise VerificationFailed(f"{len(result.differences)} difference(s) between {a} and {b_name}")
