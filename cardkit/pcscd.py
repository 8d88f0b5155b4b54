"""Start and stop a private pcscd with vpcd virtual readers — the real PC/SC stack without hardware.

:class:`PcscDaemon` writes a reader configuration directory with ``readers / 2`` vpcd entries (each
vpcd entry gives two reader slots, on TCP ports ``P`` and ``P + 1``; entries are two ports apart), starts
``pcscd --foreground --info --config DIR`` as a child process and waits for its ``daemon ready`` log
line. Cards are then served into the slots with :class:`cardkit.transport.vpcd.VpcdCardServer`.

Measured facts this module is built on (pcsc-lite 1.9.9, vsmartcard-vpcd 3.3, Debian 12):

* pcscd reads every regular file of the ``--config`` directory as reader.conf (``FRIENDLYNAME``,
  ``DEVICENAME``, ``LIBPATH``, ``CHANNELID`` — pcsc-lite reader.conf(5)).
* vpcd keeps its two slots in *global* variables of the driver, and pcscd loads a driver once per
  ``LIBPATH``. Several entries sharing one ``LIBPATH`` therefore overwrite each other and only one entry
  works. Each entry here gets its own copy of ``libifdvpcd.so`` (a different file is a different
  ``dlopen`` object with its own globals).
* Entries need distinct ``FRIENDLYNAME`` s, otherwise pcscd names two readers alike. Entry 0 is
  ``Virtual PCD`` (readers ``Virtual PCD 00 00`` / ``00 01``, as with Debian's stock config); entry k
  is ``Virtual PCD k`` (readers ``Virtual PCD k 00 00`` / ``k 00 01``).
* pcscd serves at most 16 readers (PCSCLITE_MAX_READERS_CONTEXTS).
* Only one pcscd runs per machine: the daemon's socket is fixed at ``/run/pcscd/pcscd.comm``.

Policy when a pcscd that this object did not start is already running: if it already offers the vpcd
readers asked for (same names; e.g. Debian's stock pcscd offers ``Virtual PCD 00 00`` / ``00 01`` on
ports 35963 / 35964, which matches ``PcscDaemon(readers=2)``), it is reused and never stopped
(``owned`` is False); otherwise :class:`PcscdBusyError` explains what is running and what is missing.
Reuse assumes that foreign vpcd readers with these names listen on the same ports (true for the Debian
configuration). Pass ``reuse=False`` to refuse any foreign daemon.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from cardkit.errors import TransportError

__all__ = [
    "MAX_READERS", "PCSCD_PID", "PCSCD_SOCKET", "VPCD_DRIVER", "PcscDaemon", "PcscdBusyError", "PcscdError",
    "PcscdNotFoundError", "PcscdStartError", "find_pcscd", "foreign_pcscd_running",
]

log = logging.getLogger(__name__)

#: pcscd serves at most this many readers (pcsc-lite PCSCLITE_MAX_READERS_CONTEXTS).
MAX_READERS = 16
#: The daemon's client socket and pid file (pcsc-lite built with ipcdir=/run/pcscd, Debian 12).
PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
PCSCD_PID = Path("/run/pcscd/pcscd.pid")
#: The vpcd reader driver (Debian package vsmartcard-vpcd).
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
#: The log line pcscd prints when it accepts clients (pcscdaemon.c, "pcsc-lite X daemon ready.").
READY_MARK = "daemon ready"
#: Reader slots per vpcd entry (vpcd VPCDSLOTS = 2: slot n listens on the entry's port + n).
SLOTS_PER_ENTRY = 2
FRIENDLY_NAME = "Virtual PCD"


class PcscdError(TransportError):
    """The private pcscd could not be set up."""


class PcscdNotFoundError(PcscdError):
    """The ``pcscd`` binary or the vpcd driver is not installed."""


class PcscdBusyError(PcscdError):
    """A pcscd that cardkit did not start is running and does not offer the readers asked for."""


class PcscdStartError(PcscdError):
    """pcscd exited or did not become ready; the message ends with its last log lines."""


def find_pcscd() -> str | None:
    """Path of the ``pcscd`` binary (PATH, then /usr/sbin and /sbin, which users' PATH often lacks)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which("pcscd", path=path)


def _socket_alive(path: Path = PCSCD_SOCKET) -> bool:
    """True when something accepts connections on the pcscd socket."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pidfile_pid() -> int | None:
    try:
        return int(PCSCD_PID.read_text().strip())
    except (OSError, ValueError):
        return None


def foreign_pcscd_running() -> bool:
    """True if some pcscd answers on :data:`PCSCD_SOCKET`."""
    return _socket_alive()


def _remove_stale_files(expected_pid: int | None = None) -> None:
    """Remove pcscd's socket and pid file when no live pcscd owns them (after a hard kill)."""
    if _socket_alive():
        return
    pid = _pidfile_pid()
    if pid is not None and pid != expected_pid and _pid_alive(pid):
        return
    for stale in (PCSCD_SOCKET, PCSCD_PID):
        try:
            stale.unlink()
            log.info("removed stale %s", stale)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove stale %s: %s", stale, exc.strerror)


class PcscDaemon:
    """A pcscd with ``readers`` vpcd reader slots (rounded up to even), ports from ``base_port`` upwards.

    ``ports[i]`` is the TCP port of reader ``reader_names()[i]``. ``config_dir`` (created if needed,
    dedicated to this daemon: pcscd parses every file of its ``reader.conf.d`` subfolder) defaults to a
    temporary directory removed at :meth:`stop`. See the module docstring for the policy towards a
    pcscd that is already running.
    """

    def __init__(self, readers: int = 2, base_port: int = 35963, config_dir: str | os.PathLike[str] | None = None,
                 *, reuse: bool = True, ready_timeout: float = 10.0, pcscd: str | None = None,
                 driver: str | os.PathLike[str] = VPCD_DRIVER) -> None:
        if not 1 <= readers <= MAX_READERS:
            raise PcscdError(f"pcscd serves 1..{MAX_READERS} readers, {readers} asked for")
        entries = -(-readers // SLOTS_PER_ENTRY)
        if base_port < 1 or base_port + entries * SLOTS_PER_ENTRY - 1 > 0xFFFF:
            raise PcscdError(f"ports {base_port}..{base_port + entries * SLOTS_PER_ENTRY - 1} are not usable")
        self.entries = entries
        self.readers = entries * SLOTS_PER_ENTRY
        self.base_port = base_port
        #: TCP port of each reader slot, in slot order (aligned with :attr:`expected_names`).
        self.ports: tuple[int, ...] = tuple(base_port + i for i in range(self.readers))
        #: The names pcscd gives the readers, in slot order.
        self.expected_names: tuple[str, ...] = tuple(
            f"{self._friendly(e)} 00 {s:02X}" for e in range(entries) for s in range(SLOTS_PER_ENTRY)
        )
        self.reuse = reuse
        self.ready_timeout = ready_timeout
        self._pcscd = pcscd
        self._driver = Path(driver)
        self._user_dir = Path(config_dir) if config_dir is not None else None
        self.config_dir: Path | None = self._user_dir
        self._temp_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: int | None = None
        #: True when this object started the daemon (and will stop it); False when reusing a foreign one.
        self.owned = False
        self._reusing = False

    @staticmethod
    def _friendly(entry: int) -> str:
        return FRIENDLY_NAME if entry == 0 else f"{FRIENDLY_NAME} {entry}"

    # ---------------------------------------------------------------- properties
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.config_dir / "pcscd.log" if self.config_dir is not None else None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the daemon's log (for error messages)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._reusing and _socket_alive()

    def port_for(self, reader: str) -> int:
        """The vpcd TCP port that serves ``reader`` (one of :attr:`expected_names`)."""
        try:
            return self.ports[self.expected_names.index(reader)]
        except ValueError:
            raise PcscdError(f"{reader!r} is not a reader of this pcscd: {list(self.expected_names)}") from None

    def reader_names(self) -> list[str]:
        """The vpcd readers of this daemon that PC/SC lists (via pyscard), in slot order."""
        from cardkit.transport.pcsc import list_readers

        present = set(list_readers())
        return [name for name in self.expected_names if name in present]

    def slots(self) -> list[tuple[str, int]]:
        """(reader name, TCP port) of every slot, in slot order."""
        return list(zip(self.expected_names, self.ports, strict=True))

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> PcscDaemon:
        """Start pcscd (or adopt a running one, see the module docstring) and wait until it is ready."""
        if self.is_running():
            return self
        if foreign_pcscd_running():
            self._adopt()
            return self
        _remove_stale_files()
        binary = self._pcscd or find_pcscd()
        if binary is None:
            raise PcscdNotFoundError("pcscd is not installed (Debian: apt-get install pcscd)")
        if not self._driver.exists():
            raise PcscdNotFoundError(f"vpcd driver {self._driver} missing (Debian: apt-get install vsmartcard-vpcd)")
        conf = self._write_config()
        log_path = self.log_path
        if log_path is None:  # pragma: no cover - _write_config sets config_dir
            raise PcscdError("no configuration directory")
        self._log_file = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        cmd = [binary, "--foreground", "--info", "--config", str(conf)]
        log.info("starting %s", " ".join(cmd))
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._cleanup_files()
            raise PcscdStartError(f"cannot run {binary}: {exc.strerror}") from exc
        self.owned = True
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the daemon if this object started it (SIGTERM, then SIGKILL); clean up stale files."""
        proc, self._proc = self._proc, None
        self._reusing = False
        if proc is not None:
            hard = False
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("pcscd (pid %d) ignored SIGTERM for %.1f s; killing it", proc.pid, timeout)
                    proc.kill()
                    proc.wait()
                    hard = True
            if hard or proc.returncode not in (0, -signal.SIGTERM):
                _remove_stale_files(expected_pid=proc.pid)
            log.info("pcscd (pid %d) stopped", proc.pid)
        self.owned = False
        self._cleanup_files()

    def __enter__(self) -> PcscDaemon:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        who = "owned" if self.owned else ("reused" if self._reusing else "")
        return f"PcscDaemon(readers={self.readers}, base_port={self.base_port}, {state} {who})".replace(" )", ")")

    # ---------------------------------------------------------------- internals
    def _adopt(self) -> None:
        from cardkit.transport.pcsc import list_readers

        pid = _pidfile_pid()
        who = f"pid {pid}" if pid is not None else "unknown pid"
        existing = list_readers()
        missing = [name for name in self.expected_names if name not in existing]
        if not self.reuse or missing:
            reason = "reuse=False" if not self.reuse else f"it lacks {missing}"
            raise PcscdBusyError(
                f"a pcscd that cardkit did not start is running ({who}) with readers {existing}; {reason}. "
                "Only one pcscd can run per machine (/run/pcscd/pcscd.comm): stop it "
                "(systemctl stop pcscd.socket pcscd) or ask for fewer readers"
            )
        log.info("reusing the running pcscd (%s): it offers %s", who, list(self.expected_names))
        self._reusing = True

    def _write_config(self) -> Path:
        if self._user_dir is not None:
            base = self._user_dir
            base.mkdir(parents=True, exist_ok=True)
        else:
            base = Path(tempfile.mkdtemp(prefix="cardkit-pcscd-"))
            self._temp_dir = base
        self.config_dir = base
        conf = base / "reader.conf.d"
        drivers = base / "drivers"
        conf.mkdir(exist_ok=True)
        drivers.mkdir(exist_ok=True)
        for old in conf.iterdir():
            if old.is_file():
                old.unlink()
        blocks = []
        for entry in range(self.entries):
            # One driver file per entry: vpcd's slot state is global per loaded library (see above).
            lib = drivers / f"libifdvpcd-{entry}.so"
            shutil.copyfile(self._driver, lib)
            port = self.base_port + entry * SLOTS_PER_ENTRY
            # reader.conf(5): DEVICENAME /dev/null:PORT makes vpcd listen on PORT (slot 0) and PORT+1.
            blocks.append(
                f'FRIENDLYNAME "{self._friendly(entry)}"\n'
                f"DEVICENAME   /dev/null:0x{port:04X}\n"
                f"LIBPATH      {lib}\n"
                f"CHANNELID    0x{port:04X}\n"
            )
        (conf / "cardkit-vpcd.conf").write_text("\n".join(blocks))
        return conf

    def _wait_ready(self) -> None:
        proc, path = self._proc, self.log_path
        if proc is None or path is None:  # pragma: no cover - called right after Popen
            raise PcscdStartError("pcscd was not started")
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if path.exists() and READY_MARK in path.read_text(errors="replace"):
                break
            if proc.poll() is not None:
                raise PcscdStartError(f"pcscd exited with status {proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise PcscdStartError(f"pcscd not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.02)
        # The readers are added before "daemon ready"; check that every vpcd slot made it.
        while True:
            names = self.reader_names()
            if len(names) == self.readers:
                break
            if time.monotonic() > deadline:
                missing = sorted(set(self.expected_names) - set(names))
                raise PcscdStartError(
                    f"pcscd started but readers {missing} are missing (ports in use?):\n{self.log_tail()}"
                )
            time.sleep(0.05)
        log.info("pcscd (pid %d) ready with %d vpcd readers on ports %d..%d", proc.pid, self.readers,
                 self.ports[0], self.ports[-1])

    def _cleanup_files(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                os.close(self._log_file)
            self._log_file = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
            self.config_dir = self._user_dir
