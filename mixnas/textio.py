"""Reading user files at the input boundary: UTF-8 text, YAML and JSON with size and nesting limits.

Every reader takes the :class:`~mixnas.errors.MixnasError` subclass to raise, so a bad file becomes one line that
names it (``experiments/x.yaml: not UTF-8 text (byte 0xff at offset 6)``) instead of an ``OSError``,
``UnicodeDecodeError`` or ``RecursionError`` traceback. The limits are far above any real mixnas file and exist
so that ``/dev/zero``, a 10^5-deep ``[[[...]]]`` or a 5,000-digit integer fail fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import yaml

from mixnas.errors import MixnasError

logger = logging.getLogger(__name__)

MAX_TEXT_BYTES = 256 * 1024 * 1024
MAX_NESTING = 64
# Python refuses to convert integers of more than 4300 digits to and from text; no mixnas value needs 20.
MAX_INT_DIGITS = 100
MAX_VALUES = 5_000_000


def os_reason(exc: OSError) -> str:
    """The human part of an OSError (``File name too long``), without the repeated path."""
    return exc.strerror or exc.__class__.__name__


def path_kind(path: str | Path) -> str | None:
    """``"file"``, ``"dir"``, ``"other"`` (a device, a FIFO) or None when nothing can be there.

    None also covers a name the OS refuses (a component over 255 bytes, an embedded NUL): no such file can exist.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    return "dir" if stat.S_ISDIR(mode) else "other"


def read_bytes(path: str | Path, error: type[MixnasError], *, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The contents of a regular file, refusing folders, devices, FIFOs and files over ``max_bytes``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({os_reason(exc)})") from None
    except ValueError as exc:  # an embedded NUL byte in the name
        raise error(f"{path!r}: not a usable file name ({exc})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a folder, expected a file")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: not a regular file (a device or a pipe cannot be read as a mixnas file)")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read ({os_reason(exc)})") from None
    if len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes // (1024 * 1024)} MiB, too large for a mixnas text file")
    return data


def decode_utf8(data: bytes, source: str, error: type[MixnasError]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def read_text(path: str | Path, error: type[MixnasError], *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file (a leading BOM is dropped), with errors that name it."""
    text = decode_utf8(read_bytes(path, error, max_bytes=max_bytes), str(path), error)
    return text[1:] if text.startswith("\ufeff") else text


def _children(node: list | tuple | dict) -> list:
    return [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)


def check_nesting(data: Any, source: str, error: type[MixnasError], *, limit: int = MAX_NESTING) -> Any:
    """Refuse data nested deeper than ``limit``, expanding to more than MAX_VALUES values, referring to itself,
    or holding an integer of more than MAX_INT_DIGITS digits.

    YAML aliases share one object in several places, so depth and size are of the data *as later code walks it*
    (a "billion laughs" file is a few lines); the walk is iterative and visits each shared object once.
    """
    big = 10**MAX_INT_DIGITS
    done: dict[int, tuple[int, int] | None] = {}  # id -> (depth, values), None while its children are walked
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, finished = stack.pop()
        if not isinstance(node, (list, tuple, dict)):
            if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= big:
                raise error(f"{source}: an integer of more than {MAX_INT_DIGITS} digits")
            continue
        if not finished:
            if id(node) in done:
                continue
            done[id(node)] = None
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
            continue
        depth, values = 1, 1
        for child in _children(node):
            if isinstance(child, (list, tuple, dict)):
                walked = done[id(child)]
                if walked is None:
                    raise error(f"{source}: a value contains itself (a recursive YAML alias)")
                depth, values = max(depth, walked[0] + 1), values + walked[1]
            else:
                values += 1
        if depth > limit:
            raise error(f"{source}: nested deeper than {limit} levels")
        if values > MAX_VALUES:
            raise error(f"{source}: expands to more than {MAX_VALUES:,} values (YAML aliases repeat their anchor)")
        done[id(node)] = (depth, values)
    return data


class _DepthLimitedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops composing past MAX_NESTING levels (PyYAML's composer recurses) and refuses a
    mapping that gives one key twice (plain PyYAML keeps the last value silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": its keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the base constructor says so
                    continue
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (lines {first.line + 1} and "
                        f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_NESTING} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """``at line L, column C: problem`` of a PyYAML error, on one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or exc.__class__.__name__
    return f"{where}: " + " ".join(str(problem).split())


def _value_problem(exc: Exception) -> str:
    """Why a parser could not turn a scalar into a value, in words for the user."""
    text = " ".join(str(exc).split())
    if "integer string conversion" in text:
        return "a number has more than 4300 digits"
    return text[:200]


def parse_yaml(text: str, source: str, error: type[MixnasError]) -> Any:
    """Parse YAML text with the safe loader (no Python objects), a nesting limit and errors that name ``source``."""
    try:
        data = yaml.load(text, Loader=_DepthLimitedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML{yaml_error_text(exc)}") from None
    except (ValueError, OverflowError) as exc:  # a 5,000-digit integer, a timestamp like 2024-13-45
        raise error(f"{source}: not valid YAML: a value cannot be read ({_value_problem(exc)})") from None
    except RecursionError:
        raise error(f"{source}: not valid YAML: nested too deeply") from None
    return check_nesting(data, source, error)


def parse_json(text: str | bytes, source: str, error: type[MixnasError]) -> Any:
    """Parse JSON with a nesting limit and errors that name ``source``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not UTF-8 text (offset {exc.start})") from None
    except RecursionError:
        raise error(f"{source}: not valid JSON: nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # a 5,000-digit integer
        raise error(f"{source}: not valid JSON: a value cannot be read ({_value_problem(exc)})") from None
    return check_nesting(data, source, error)


def read_yaml(path: str | Path, error: type[MixnasError], *, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """:func:`read_text` then :func:`parse_yaml`."""
    return parse_yaml(read_text(path, error, max_bytes=max_bytes), str(path), error)


def read_json(path: str | Path, error: type[MixnasError], *, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """:func:`read_text` then :func:`parse_json`."""
    return parse_json(read_text(path, error, max_bytes=max_bytes), str(path), error)


@contextlib.contextmanager
def exclusive_lock(file: str | os.PathLike[str], doing: str = "writing it") -> Iterator[None]:
    """Hold an exclusive lock on ``<file>.lock`` for the block (processes on one machine, one at a time).

    The lock file stays (empty); removing it would let a third process lock a different file of the same name.
    Without ``fcntl`` (not a POSIX system) there is no lock. ``doing`` completes the log line shown while this
    process waits ("another process is <doing>").
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        yield
        return
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file.with_name(file.name + ".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("%s: another process is %s; waiting for it", file, doing)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def output_folder(path: str | os.PathLike[str], error: type[MixnasError]) -> Path:
    """``path`` as a folder to write into, made when missing; one-line ``error`` when something else (a file, a
    device, a FIFO) is there or it cannot be made. The one way the tool makes an output folder."""
    folder = Path(path)
    kind = path_kind(folder)
    if kind not in (None, "dir"):
        what = "a file" if kind == "file" else "a device, FIFO or socket"
        raise error(f"{folder}: is {what}, expected a folder to write into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"{folder}: cannot make the folder ({os_reason(exc)})") from None
    return folder


def file_mode(path: str | os.PathLike[str]) -> int:
    """The permission bits for a file written at ``path``: an existing regular file's own, else those ``open()``
    gives a new file (0666 less the process's umask; a temporary file from :mod:`tempfile` is 0600, which kept
    tables, exports and reports from the other users of a shared machine and from a web server)."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``os.umask`` can only set it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w") -> Iterator[Any]:
    """A file handle whose content replaces ``path`` only when the block ends without an error: readers (and a
    crash) see the old content or the new, never a mix (a temporary file in the same folder, flushed to disk,
    then ``os.replace``). ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``.

    The new file gets the permissions ``open()`` would give it (:func:`file_mode`), not the temporary file's 0600.
    Only a regular file (or nothing) at ``path`` is replaced: ``os.replace`` would swap a device node, a FIFO or
    a socket for the new file (run as root, ``--out /dev/full`` turned the device into a JSON file), so those
    raise an ``OSError`` ("not a regular file") before anything is written; a folder raises ``IsADirectoryError``.
    """
    import errno
    import tempfile

    path = Path(path)
    kind = path_kind(path)
    if kind == "dir":
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file", str(path))
    if kind == "other":
        raise OSError(errno.EINVAL, "is a device, FIFO or socket, not a regular file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode(path))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file with :func:`atomic_file`."""
    with atomic_file(path) as fh:
        fh.write(text)


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = None,
                      sort_keys: bool = True) -> None:
    """Strict JSON (no NaN) written with :func:`write_text_atomic`; compact unless ``indent`` is given."""
    separators = (",", ":") if indent is None else None
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, separators=separators, allow_nan=False)
    write_text_atomic(path, text + ("\n" if indent is not None else ""))
