"""Single-card issuance commands: layout, personalize, verify, dump (pin, card, ssc: :mod:`cardkit.cli.issue_ops`).

Secrets never come from argv: PINs and PUKs from the environment (``CARDKIT_PIN``, ``CARDKIT_NEW_PIN``,
``CARDKIT_PUK``) or a hidden prompt; keys from ``--keys FILE`` (TEST key files only with ``--allow-test-keys``).
Personal data given as options (``ssc bind-family --member-ssn``) is not secret but is never echoed in full.
``personalize`` defaults to the virtual reader (writing whatever card sits in a PC/SC reader is never a
default); the other commands follow the global ``--reader`` default. The option decorators and helpers here
(``_profile_option``, ``_keys_options``, ``open_keystore``, ``_secret``, ``_session``, ``_out``) are shared with
:mod:`cardkit.cli.issue_ops`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cardkit.cli.main import Options

if TYPE_CHECKING:
    from cardkit.keys.store import Keystore
    from cardkit.profiles.model import Profile
    from cardkit.session import CardSession

log = logging.getLogger(__name__)

_ALGS = click.Choice(["sm4", "3des", "aes"])


def _keys_options(f: Any) -> Any:
    f = click.option("--allow-test-keys", is_flag=True,
                     help="Allow TEST key files (well-known values; virtual cards and tests only).")(f)
    return click.option("--keys", "keys", metavar="FILE|URI",
                        help="Keystore with the master keys (a TEST key file needs --allow-test-keys; without "
                             "--keys, --allow-test-keys uses keys/test/ssc.toml).")(f)


def _profile_option(f: Any) -> Any:
    return click.option("--profile", "profile_name", default="ssc", show_default=True, metavar="NAME|PATH",
                        help="Profile (applets/NAME/profile.toml or a path).")(f)


def _profile(name: str, algorithm: str | None = None) -> Profile:
    from cardkit.profiles.model import find_profile, load_profile

    return load_profile(find_profile(name), algorithm=algorithm)


def open_keystore(keys: str | None, allow_test_keys: bool) -> Keystore:
    """The keystore of ``--keys`` (one place, so new keystore kinds plug in here)."""
    from cardkit.errors import KeystoreError
    from cardkit.keys.store import TestKeyFile

    if keys is None:
        if not allow_test_keys:
            raise KeystoreError("no keystore: give --keys FILE (or --allow-test-keys for the TEST keys of "
                                "keys/test/, virtual cards only)")
        from cardkit.readers import TEST_KEYS

        return TestKeyFile(TEST_KEYS, allow_test_keys=True)
    try:
        from cardkit.keys.uri import open_keystore as _open
    except ImportError:  # pragma: no cover - key URIs not installed
        return TestKeyFile(keys, allow_test_keys=allow_test_keys)
    uri = keys if keys.split(":", 1)[0] in ("file", "store", "pkcs11") else f"file:{keys}"
    return _open(uri, allow_test_keys=allow_test_keys,
                 prompt=lambda text: click.prompt(text, hide_input=True, err=True))


def _secret(env: str, prompt: str, *, confirm: bool = False) -> bytes:
    value = os.environ.get(env)
    if value is None:
        value = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    return value.strip().encode("ascii", "replace")


@contextmanager
def _session(opts: Options, reader: str | None = None, *, extended: bool | None = None) -> Iterator[CardSession]:
    from cardkit.issuance.plan import card_announces_extended
    from cardkit.readers import open_session

    with open_session(reader if reader is not None else opts.reader, trace=opts.trace) as session:
        if extended is None:
            extended = card_announces_extended(session.atr)
        session.chaining.extended = extended
        yield session


def _is_virtual(spec: str | None) -> bool:
    return spec is not None and (spec == "virtual" or spec.startswith("virtual:"))


def _out(opts: Options, data: Any, lines: list[str]) -> None:
    if opts.json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for line in lines:
            click.echo(line)


def _verification_failed(exc: Exception) -> Exception:
    from cardkit.cli.errors import VerificationFailed

    return VerificationFailed(str(exc))


# ------------------------------------------------------------------------------------------ record input


def read_record(source: str, encoding: str = "utf-8") -> dict[str, str]:
    """One record from a CSV file (header + one row), a JSON object file, or a JSON object on stdin (``-``)."""
    from cardkit.errors import RecordError

    try:
        if source == "-":
            text, kind = sys.stdin.read(), "json"
        else:
            text = Path(source).read_text(encoding=encoding).removeprefix("\ufeff")  # a BOM is not a column
            kind = "json" if source.lower().endswith(".json") or text.lstrip().startswith(("{", "[")) else "csv"
    except UnicodeDecodeError:
        raise RecordError(f"record file is not {encoding} text (try --encoding gb18030)") from None
    except OSError as exc:
        raise RecordError(f"cannot read the record file: {exc.strerror}") from None
    if kind == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"record is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        if isinstance(doc, list) and len(doc) == 1:
            doc = doc[0]
        if not isinstance(doc, dict):
            raise RecordError("a JSON record is one object {\"field\": \"value\", ...}")
        for k, v in doc.items():
            if not isinstance(v, str):
                raise RecordError(f"JSON values must be strings (got {type(v).__name__})", field=str(k))
        return dict(doc)
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) != 1:
        raise RecordError(f"the CSV file holds {len(rows)} records; one card takes one (use `cardkit batch` for "
                          "more)")
    row = rows[0]
    if None in row or any(v is None for v in row.values()):
        raise RecordError("CSV row and header have different numbers of columns", line=2)
    return {k: v for k, v in row.items() if k is not None}


# ------------------------------------------------------------------------------------------ layout


@click.group()
def layout() -> None:
    """Validate a profile, or show its file tree, access rules, keys, PINs and record schema.

    \b
    Examples:
      cardkit layout validate ssc
      cardkit layout show applets/ssc/profile.toml
      cardkit --json layout show ssc
    """


@layout.command("validate")
@click.argument("profile_name", metavar="PROFILE")
@click.pass_obj
def layout_validate(opts: Options, profile_name: str) -> None:
    """Load PROFILE and report every problem with file:line and key (exit 6), or a one-line summary.

    \b
    Example:
      cardkit layout validate applets/ssc/profile.toml
    """
    p = _profile(profile_name)
    summary = {"profile": p.name, "source": p.source, "files": len(p.files), "keys": len(p.keys),
               "pins": len(p.pins), "fields": len(p.record_fields), "operations": sorted(p.operations)}
    _out(opts, summary, [f"ok: {p.name} ({p.source}): {len(p.files)} files, {len(p.keys)} keys, {len(p.pins)} "
                         f"PINs, {len(p.record_fields)} record fields, operations: "
                         f"{', '.join(sorted(p.operations)) or 'none'}"])


@layout.command("show")
@click.argument("profile_name", metavar="PROFILE")
@click.option("--algorithm", type=_ALGS, help="Show the profile with this algorithm.")
@click.pass_obj
def layout_show(opts: Options, profile_name: str, algorithm: str | None) -> None:
    """Show PROFILE: the DF/EF tree (FID, DF name, SFI, structure, size), access rules per operation, keys
    (name, reference, usage, diversification — never values), PINs, the record schema and operations.

    \b
    Example:
      cardkit layout show ssc
    """
    from cardkit.issuance.plan import describe_layout, layout_lines

    d = describe_layout(_profile(profile_name, algorithm))
    lines = layout_lines(d)
    _out(opts, d, lines)


# ------------------------------------------------------------------------------------------ personalize


def _write_pins(path: str, serial: str, profile: str, pins: dict[str, bytes]) -> None:
    doc = {"profile": profile, "chip_serial": serial, "pins": {k: v.decode("ascii") for k, v in pins.items()}}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.UsageError(f"--pins-out {path} exists: PIN files are never overwritten") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")


def _signer(station_key: str | None, allow_test_keys: bool) -> Any:
    from cardkit.issuance.engine import EcdsaSigner

    if station_key:
        try:
            return EcdsaSigner(Path(station_key).read_bytes())
        except OSError as exc:
            raise click.BadParameter(f"cannot read {station_key}: {exc.strerror}", param_hint="--station-key") from None
    if allow_test_keys:
        return EcdsaSigner.test_station(allow_test_keys=True)
    return None


def _blank_virtual_card(spec: str, profile: Profile, keystore: Keystore) -> None:
    from cardkit.keys.store import alg_of
    from cardkit.readers import cardkit_home, new_virtual_card

    path = cardkit_home() / "virtual-card.json" if spec == "virtual" else Path(spec[len("virtual:"):])
    alg = alg_of(profile.algorithm)
    card = new_virtual_card(alg=alg, transport_key=keystore.key(profile.transport_key, alg).value)
    card.save(path)
    log.warning("new blank virtual card %s (%s transport key) in %s", card.serial.hex().upper(), alg.value, path)


@click.command()
@_profile_option
@click.option("--record", "record_src", required=True, metavar="FILE|-",
              help="The cardholder record: CSV (header + one row), JSON object, or '-' for a JSON object on stdin.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the record file.")
@click.option("--algorithm", type=_ALGS, help="Card algorithm (default: the profile's).")
@_keys_options
@click.option("--pins-out", metavar="FILE", help="Sealed PIN file (created 0600, never overwritten): the only "
              "place the initial PIN and PUK appear. Required when the profile generates PINs.")
@click.option("--manifest", "manifest_out", metavar="FILE", help="Write the manifest (JSON) and FILE.sig.")
@click.option("--station-key", metavar="PEM", help="ECDSA P-256 station key signing the manifest (default with "
              "--allow-test-keys: the TEST station key).")
@click.option("--new-card", is_flag=True, help="Virtual reader: start from a fresh blank card (replaces the image).")
@click.option("--extended/--no-extended", default=None, help="Extended-length APDUs (default: when the ATR "
              "announces them).")
@click.pass_obj
def personalize(opts: Options, profile_name: str, record_src: str, encoding: str, algorithm: str | None,
                keys: str | None, allow_test_keys: bool, pins_out: str | None, manifest_out: str | None,
                station_key: str | None, new_card: bool, extended: bool | None) -> None:
    """Personalize ONE card from a record, then read every file back and compare (exit 8 on a difference).

    The reader is the virtual card unless --reader names another. Initial PINs go only to --pins-out.

    \b
    Examples:
      cardkit --reader virtual:card.json personalize --record person.csv --allow-test-keys \\
          --new-card --pins-out pins.json --manifest card.manifest.json
      echo '{"citizen_id": "...", ...}' | cardkit personalize --record - --keys keys.toml --pins-out p.json
    """
    from cardkit.errors import AuthenticationError
    from cardkit.issuance.engine import VerificationError, write_manifest
    from cardkit.issuance.engine import personalize as personalize_card
    from cardkit.issuance.engine import verify as verify_card
    from cardkit.issuance.prepare import prepare
    from cardkit.profiles.validators import mask_identifier
    from cardkit.sw import StatusWordError, error_for

    profile = _profile(profile_name, algorithm)
    fields = read_record(record_src, encoding)
    prepared = prepare(profile, fields)
    if profile.pins and not pins_out:
        raise click.UsageError("the profile loads PINs: give --pins-out FILE (the sealed PIN output)")
    keystore = open_keystore(keys, allow_test_keys)
    signer = _signer(station_key, allow_test_keys) if manifest_out else None
    reader = opts.reader or "virtual"
    if _is_virtual(reader):
        image = None if reader == "virtual" else Path(reader[len("virtual:"):])
        if new_card or (image is not None and not image.exists()):
            _blank_virtual_card(reader, profile, keystore)
    elif allow_test_keys:
        log.warning("TEST keys on reader %r: never use them for a real card", reader)
    with _session(opts, reader, extended=extended) as session:
        try:
            result = personalize_card(session, profile, prepared, keystore)
        except StatusWordError as exc:
            if exc.sw in (0x6A89, 0x6A8A):
                raise error_for(exc.sw, exc.command, context={**exc.context, "hint": "the card is already "
                                "personalized (virtual reader: --new-card)"}) from None
            raise
        except AuthenticationError as exc:
            raise AuthenticationError(f"{exc} — the card does not open with the transport key: already "
                                      "personalized, or another transport key (virtual reader: --new-card)") from None
        if pins_out:
            _write_pins(pins_out, result.serial, profile.name, result.pins)
        try:
            manifest = verify_card(session, profile, prepared, keystore, result)
        except VerificationError as exc:
            raise _verification_failed(exc) from None
    sig = write_manifest(manifest_out, manifest, signer) if manifest_out else None
    apdus = manifest["apdus"]
    out = {"chip_serial": result.serial, "profile": profile.name, "algorithm": profile.algorithm,
           "record": mask_identifier(prepared.identity), "apdus": apdus, "files": manifest["files"],
           "pins_out": pins_out, "manifest": manifest_out, "signature": str(sig) if sig else None,
           "signed_by": signer.key_id if signer else None}
    lines = [f"personalized chip {result.serial} ({profile.name}, {profile.algorithm}) for record "
             f"{mask_identifier(prepared.identity)}: {apdus['personalize']} APDUs (minimum {apdus['minimum']})",
             f"verified {len(manifest['files'])} files in {apdus['verify']} APDUs"]
    if pins_out:
        lines.append(f"initial PINs sealed in {pins_out} (mode 0600)")
    if manifest_out:
        signed = f", signature {sig} (key {signer.key_id})" if sig and signer is not None else " (unsigned)"
        lines.append(f"manifest {manifest_out}{signed}")
    _out(opts, out, lines)


# ------------------------------------------------------------------------------------------ verify


def _verify_manifest(opts: Options, manifest_path: str, signature: str | None, public_keys: tuple[str, ...],
                     allow_test_keys: bool) -> None:
    from cardkit.issuance.engine import (
        TEST_STATION_KEY,
        EcdsaSigner,
        ManifestSignatureError,
        verify_manifest_signature,
    )

    sig_path = signature or manifest_path + ".sig"
    try:
        manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
        sig = json.loads(Path(sig_path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise _verification_failed(ManifestSignatureError(f"not JSON: {exc.msg}")) from None
    trusted = []
    for path in public_keys:
        try:
            trusted.append(Path(path).read_bytes())
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--public-key") from None
    if allow_test_keys:
        trusted.append(EcdsaSigner.test_station(TEST_STATION_KEY, allow_test_keys=True).public_key_pem())
    if not trusted:
        raise click.UsageError("give --public-key PEM (the station's public key), or --allow-test-keys")
    try:
        kid = verify_manifest_signature(manifest, sig, trusted)
    except ManifestSignatureError as exc:
        raise _verification_failed(exc) from None
    _out(opts, {"manifest": manifest_path, "signature": sig_path, "key_id": kid, "valid": True,
                "chip_serial": manifest.get("chip_serial"), "files": len(manifest.get("files", {}))},
         [f"manifest signature valid: key {kid}, chip {manifest.get('chip_serial')}, profile "
          f"{manifest.get('profile')}, {len(manifest.get('files', {}))} files"])


@click.command("verify")
@_profile_option
@click.option("--record", "record_src", metavar="FILE|-", help="The record the card was personalized from.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--algorithm", type=_ALGS)
@_keys_options
@click.option("--pins-file", metavar="FILE", help="The sealed PIN file (to read PIN-protected files).")
@click.option("--manifest", "manifest_path", metavar="FILE", help="Check the detached signature of a manifest "
              "instead of reading a card.")
@click.option("--signature", metavar="FILE", help="Signature file (default: MANIFEST.sig).")
@click.option("--public-key", "public_keys", multiple=True, metavar="PEM", help="Trusted station public key.")
@click.pass_obj
def verify(opts: Options, profile_name: str, record_src: str | None, encoding: str, algorithm: str | None,
               keys: str | None, allow_test_keys: bool, pins_file: str | None, manifest_path: str | None,
               signature: str | None, public_keys: tuple[str, ...]) -> None:
    """Read a card back and compare it with PROFILE + RECORD (exit 8 on a difference), or check a signed
    manifest with --manifest.

    \b
    Examples:
      cardkit --reader virtual:card.json verify --record person.csv --allow-test-keys --pins-file pins.json
      cardkit verify --manifest card.manifest.json --public-key station.pub.pem
    """
    if manifest_path:
        _verify_manifest(opts, manifest_path, signature, public_keys, allow_test_keys)
        return
    if not record_src:
        raise click.UsageError("give --record FILE (or --manifest FILE to check a manifest signature)")
    from cardkit.issuance.engine import VerificationError
    from cardkit.issuance.engine import verify as verify_card
    from cardkit.issuance.prepare import prepare

    profile = _profile(profile_name, algorithm)
    prepared = prepare(profile, read_record(record_src, encoding))
    pins = None
    if pins_file:
        try:
            pins = {k: str(v).encode("ascii") for k, v in
                    json.loads(Path(pins_file).read_text(encoding="utf-8"))["pins"].items()}
        except (OSError, KeyError, ValueError, AttributeError):
            raise click.BadParameter("not a readable PIN file written by personalize", param_hint="--pins-file") \
                from None
    keystore = open_keystore(keys, allow_test_keys)
    with _session(opts) as session:
        try:
            manifest = verify_card(session, profile, prepared, keystore, pins=pins)
        except VerificationError as exc:
            raise _verification_failed(exc) from None
    _out(opts, manifest, [f"verified chip {manifest['chip_serial']}: {len(manifest['files'])} files match "
                          f"({manifest['apdus']['verify']} APDUs)"] +
         [f"  {path}  sha256 {digest}" for path, digest in manifest["files"].items()])


# ------------------------------------------------------------------------------------------ dump


@click.command()
@_profile_option
@_keys_options
@click.option("--pin", "ask_pin", is_flag=True, help="Open PIN-protected files (PIN from $CARDKIT_PIN or a prompt).")
@click.option("--unmask", is_flag=True, help="Show identifiers in full (virtual readers only).")
@click.pass_obj
def dump(opts: Options, profile_name: str, keys: str | None, allow_test_keys: bool, ask_pin: bool,
         unmask: bool) -> None:
    """Decode every file of the card with the profile's field names.

    Files are read through their access rules: with keys the cardholder secure channel is opened and
    external authentication done; with --pin PIN-protected files open. What cannot be read says why.
    Identifiers (citizen ID, card number, family members' IDs) are always masked, except with --unmask on a
    virtual reader.

    \b
    Examples:
      cardkit --reader virtual:card.json dump
      CARDKIT_PIN=123456 cardkit --json dump --keys keys.toml --pin
    """
    from cardkit.issuance.operations import read_card

    if unmask and not _is_virtual(opts.reader):
        raise click.UsageError("--unmask is allowed on virtual readers only (--reader virtual[:IMAGE])")
    profile = _profile(profile_name)
    keystore = open_keystore(keys, allow_test_keys) if keys or allow_test_keys else None
    pins = {"pin": _secret("CARDKIT_PIN", "PIN")} if ask_pin else None
    with _session(opts) as session:
        d = read_card(session, profile, keystore=keystore, pins=pins, unmask=unmask)
    _out(opts, d.as_dict(), d.lines())
