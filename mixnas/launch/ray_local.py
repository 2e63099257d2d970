"""Start or join the Ray instance a search runs on, with Ray's token authentication and, locally, loopback only.

A local search (``execution.address: local``) gets a private Ray:

* **Token authentication on.** A fresh 256-bit token per session, written to ``auth_token`` (mode 0600) in a
  private folder (mode 0700) that also holds Ray's temp folder; ``RAY_AUTH_MODE=token`` and
  ``RAY_AUTH_TOKEN_PATH`` point this process and every Ray process it starts at it. Every gRPC server of Ray (GCS,
  raylet, object manager, core workers) and the runtime-env agent's HTTP server then refuse a request without the
  token. mixnas never switches authentication off: with ``RAY_AUTH_MODE=disabled`` in the environment a local
  search is refused (:class:`~mixnas.errors.RunError`).
* **Loopback only.** Ray turns ``_node_ip_address="127.0.0.1"`` into the machine's network address unless
  "clusters are disabled" (``ray_constants.ENABLE_RAY_CLUSTER``, the macOS / Windows default, read at call time
  by ``ray._private.services.get_node_ip_address``). With it off during ``ray.init`` the node address is
  127.0.0.1, and Ray's servers, which bind to the node address when it is a loopback one, listen on 127.0.0.1
  only. The dashboard is off (so there is no dashboard agent and no metrics port). The session checks the
  address Ray ended up with and refuses to run on anything else.
* **Workers at the search's priority**, not Ray's nice 15 (:func:`_worker_niceness`; ``RAY_worker_niceness``
  in the environment is obeyed).
* **Nothing left behind.** Ray's temp folder (sockets, logs, ``session_*``) lives in the private folder, which
  :meth:`RaySession.close` removes after ``ray.shutdown()``. Ray makes its temp folder world-writable (0777); the
  0700 folder above it keeps other users out. A SIGKILLed search cannot remove its folder, so the folder names
  its driver's process id (``driver``), and a new local Ray first removes this user's folders whose driver is
  gone (:func:`remove_stale_dirs`). Ray's own processes die with the driver that started them; any that a
  killed session leaves (a process whose command line names that session's folder, owned by this user) are ended
  first (:func:`reap_processes`).

Joining a cluster (any other address) uses the token the user provides (``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, see ``docs/distributed.md``): with one present and
``RAY_AUTH_MODE`` unset, token mode is switched on for the connection; an explicit ``RAY_AUTH_MODE`` is obeyed.

``ray.init`` installs a SIGTERM handler that calls ``sys.exit``; both functions here put back the handler that
was there before, so ``mixnas search`` keeps treating SIGTERM like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from mixnas.errors import RunError

logger = logging.getLogger(__name__)

AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
TOKEN_FILE = "auth_token"
DRIVER_FILE = "driver"
NICENESS_ENV = "RAY_worker_niceness"
RAY_TEMP = "ray"
PREFIX = "mixnas-ray-"
# Ray puts AF_UNIX sockets at <temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store (about 64 bytes
# below <temp>); the kernel's limit on such a path is 107 bytes.
_SOCKET_TAIL = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class RaySession:
    """A Ray connection this process opened; :meth:`close` undoes everything :func:`connect_ray` did.

    Attributes:
        address: the GCS address (``HOST:PORT``) of the Ray instance.
        private_dir: the 0700 folder with the token and Ray's temp folder (local sessions only).
        saved_env: the values of ``RAY_AUTH_*`` before the session, put back at close (None: nothing changed).
    """

    address: str
    private_dir: Path | None = None
    saved_env: Mapping[str, str | None] | None = None

    @property
    def token_path(self) -> Path | None:
        return None if self.private_dir is None else self.private_dir / TOKEN_FILE

    @property
    def temp_dir(self) -> Path | None:
        return None if self.private_dir is None else self.private_dir / RAY_TEMP

    def close(self) -> None:
        """``ray.shutdown()``, then (local) restore the environment and remove the private folder."""
        import ray

        try:
            ray.shutdown()
        finally:
            if self.saved_env is not None:
                _set_auth_env(self.saved_env)
            if self.private_dir is not None:
                shutil.rmtree(self.private_dir, ignore_errors=True)


def connect_ray(address: str, *, num_cpus: int | None = None) -> RaySession | None:
    """Start a private local Ray (``address == "local"``) or join a running one.

    Returns the session to close at the end, or None when Ray was already initialised in this process (by a
    caller that owns it).
    """
    import ray

    if ray.is_initialized():
        return None
    if address == "local":
        return start_local_ray(num_cpus=num_cpus)
    saved = {name: os.environ.get(name) for name in AUTH_ENV}
    if saved["RAY_AUTH_MODE"] is None and _token_available():
        # Ray itself turns token mode on for a found-automatically cluster only; with an explicit HOST:PORT and
        # no RAY_AUTH_MODE it would send no token and retry for minutes against a cluster that requires one.
        _set_auth_env({"RAY_AUTH_MODE": "token"})
    # A Ray on this machine's loopback (another process's local Ray) has its node at 127.0.0.1: the driver must
    # look for its raylet there, not at the network address Ray would pick.
    on_loopback = _is_loopback_address(address)
    try:
        with _keep_sigterm_handler(), (_loopback_node_address() if on_loopback else contextlib.nullcontext()):
            ray.init(address=address, log_to_driver=False, configure_logging=False,
                     _node_ip_address="127.0.0.1" if on_loopback else None)
    except BaseException:
        _set_auth_env(saved)
        raise
    return RaySession(address=ray.get_runtime_context().gcs_address, saved_env=saved)


def start_local_ray(*, num_cpus: int | None = None) -> RaySession:
    """A new Ray on this machine: token authentication, servers on 127.0.0.1, its own temp folder."""
    import ray

    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise RunError("RAY_AUTH_MODE=disabled is set, but mixnas starts a local Ray only with token "
                       "authentication; unset RAY_AUTH_MODE (or set it to 'token')")
    removed = remove_stale_dirs()
    if removed:
        logger.info("removed %d private Ray folder(s) of searches that were killed: %s", len(removed),
                    ", ".join(str(p) for p in removed))
    private = Path(tempfile.mkdtemp(prefix=PREFIX, dir=_temp_base()))  # mode 0700
    saved = {name: os.environ.get(name) for name in AUTH_ENV}
    try:
        (private / DRIVER_FILE).write_text(f"{os.getpid()} {_process_namespace()}\n")
        token = write_token(private / TOKEN_FILE)
        _set_auth_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": str(token)})
        with _keep_sigterm_handler(), _loopback_node_address(), _worker_niceness():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     _temp_dir=str(private / RAY_TEMP), log_to_driver=False, configure_logging=False)
        session = RaySession(address=ray.get_runtime_context().gcs_address, private_dir=private, saved_env=saved)
    except BaseException:
        with contextlib.suppress(Exception):
            ray.shutdown()
        _set_auth_env(saved)
        shutil.rmtree(private, ignore_errors=True)
        raise
    if not _is_loopback_address(session.address):
        session.close()
        raise RunError(f"the local Ray came up on {session.address}, not on 127.0.0.1 (this Ray version binds "
                       "differently); refusing to run a search that listens on the network")
    logger.debug("local Ray at %s, token %s, temp %s", session.address, session.token_path, session.temp_dir)
    return session


def remove_stale_dirs(base: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove this user's private Ray folders (``PREFIX*`` in ``base``, default the temp folder local Rays use)
    whose driver process is gone; returns what was removed.

    A folder without a readable ``driver`` file (being created right now, or from an older mixnas) is left
    alone, and so is one whose process id is in use, even if by another program since (the conservative side
    of a reused id), and one written in another host or process namespace (a container sharing the temp
    folder), where the id means nothing here.
    """
    removed = []
    here = _process_namespace()
    for path in sorted(Path(base if base is not None else _temp_base()).glob(PREFIX + "*")):
        try:
            if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
                continue
            pid_text, _, namespace = (path / DRIVER_FILE).read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if namespace != here or pid <= 0 or pid == os.getpid() or _process_exists(pid):
            continue
        reap_processes(path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def processes_of(folder: Path) -> list[int]:
    """This user's processes whose command line names ``folder`` (Ray's servers, agents and workers of a session
    started there all carry its temp, session or log folder); Linux ``/proc`` only, else none."""
    text, found = str(folder), []
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in command and "/ray/" in command:  # Ray's programs, not a shell that names the folder
            found.append(int(entry.name))
    return found


def reap_processes(folder: Path, *, grace: float = 2.0) -> list[int]:
    """End what a killed search's Ray left running from ``folder`` (its driver is gone, so nothing else will):
    SIGTERM, then SIGKILL after ``grace`` seconds; returns the process ids found."""
    import signal
    import time

    pids = processes_of(folder)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline and any(_process_exists(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        logger.info("ended %d process(es) left by the killed search of %s", len(pids), folder)
    return pids


def _process_namespace() -> str:
    """Where a process id is meaningful: the host name and (Linux) the process-id namespace, without spaces."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}".replace(" ", "_")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user's process
        return True
    return True


@contextlib.contextmanager
def _worker_niceness() -> Iterator[None]:
    """Ray's workers at this process's priority, unless ``RAY_worker_niceness`` says otherwise.

    Ray starts workers at nice 15 so that a cluster node's own services stay responsive. For a local search the
    workers *are* the work: at nice 15, on a machine shared with anything else, each trial got a small share of
    the CPU (a case-study trial took ~80 s instead of ~27 s) and a trial's on-device latency measurement was
    interrupted by every other process. The raylet reads the variable when ``ray.init`` starts it.
    """
    if NICENESS_ENV in os.environ:
        yield
        return
    os.environ[NICENESS_ENV] = "0"
    try:
        yield
    finally:
        os.environ.pop(NICENESS_ENV, None)


def _is_loopback_address(address: str) -> bool:
    """Whether ``HOST:PORT`` names a loopback IP address (``localhost`` too)."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, "auto", "ray://..."
        return False


def _token_available() -> bool:
    """Whether the user provides a token: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    from ray._raylet import AuthenticationTokenLoader

    return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))


def _temp_base() -> str:
    """The system temp folder, or /tmp when Ray's socket paths below it would be too long."""
    base = tempfile.gettempdir()
    if len(base) + len(f"/{PREFIX}XXXXXXXX/{RAY_TEMP}") + _SOCKET_TAIL > _MAX_SOCKET_PATH:
        return "/tmp"
    return base


def _set_auth_env(values: Mapping[str, str | None]) -> None:
    """Set (or unset, for None) the ``RAY_AUTH_*`` variables and make this process's Ray core read them again.

    The RayConfig is refreshed before the token cache is dropped, so that a core-worker thread still draining
    after a shutdown never reloads a token in token mode from a file that is about to be removed (Ray's own test
    helper ``reset_auth_token_state`` does the same, for the same reason).
    """
    from ray._raylet import AuthenticationTokenLoader, Config

    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def token_auth(token_path: Path) -> Iterator[None]:
    """Within the block this process, and every process it starts, uses token authentication with the token in
    ``token_path`` (e.g. to start or join a cluster from a test); the previous ``RAY_AUTH_*`` come back after."""
    saved = {name: os.environ.get(name) for name in AUTH_ENV}
    _set_auth_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": str(token_path)})
    try:
        yield
    finally:
        _set_auth_env(saved)


def write_token(path: Path) -> Path:
    """A new random 256-bit token (hex) in a new file only its owner can read (0600); returns ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Put back the SIGTERM handler that ``ray.init`` replaces with its own ``sys.exit``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def _loopback_node_address() -> Iterator[None]:
    """Let ``_node_ip_address="127.0.0.1"`` stand during ``ray.init`` (see the module docstring).

    Ray maps a loopback node address to the machine's network address "to be reachable from other nodes" unless
    clusters are disabled; a local search has no other nodes. The flag is Ray's own switch
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``), read at import, so it is set on the imported constant for the
    duration of the call and restored after.
    """
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
