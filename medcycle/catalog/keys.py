"""The de-identification key: 32 random bytes that make every pseudonym, UID and date shift.

The key is what links a later study of a patient to the earlier ones, so it is created once and then
never replaced: losing it breaks re-linking, leaking it lets anyone holding the original identifiers
recompute the pseudonyms. It lives apart from the data (default ``HOME/keys/deid.key``, see
``Settings.resolved_deid_key_file``) in a folder only the owner can read (0700), in a file only the
owner can read (0600).

File format: the key as 64 lowercase hexadecimal characters followed by a newline.

Creation is atomic and never overwrites: the key is written to a private temporary file, flushed,
then hard-linked to its final name. ``os.link`` fails when the name exists, so when two processes
create the key at the same time exactly one link wins and both return the winner's key.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from pathlib import Path

from medcycle.errors import ConfigError

KEY_BYTES = 32
_HEX_CHARS = 2 * KEY_BYTES
_HINT = (
    "The de-identification key must hold 64 hexadecimal characters. Restore it from your backup; "
    "do not replace it with a new key, or later studies will no longer re-link to their patients."
)


def load_or_create_key(path: Path) -> bytes:
    """Return the key stored at ``path``, creating it (and its 0700 folder) on first use.

    Args:
        path: the key file, usually ``Settings.resolved_deid_key_file``.

    Raises:
        ConfigError: the file exists but does not hold a key, or it cannot be read or created.
    """
    path = Path(path)
    data = _read(path)
    if data is None:
        return _create(path)
    return _parse(path, data)


def _read(path: Path) -> bytes | None:
    # A key that a concurrent creator made without hard links (see _create) may be seen half
    # written for a moment: wait for it briefly rather than calling it malformed.
    for _ in range(40):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(
                f"cannot read the de-identification key file {path} ({exc.strerror})",
                hint="Check the file's owner and permissions (it should be 0600, owned by you).",
            ) from None
        if len(data.strip()) >= _HEX_CHARS:
            return data
        time.sleep(0.05)
    return data


def _parse(path: Path, data: bytes) -> bytes:
    text = data.strip()
    try:
        if len(text) != _HEX_CHARS:
            raise ValueError
        key = bytes.fromhex(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"the de-identification key file {path} is malformed", hint=_HINT) from None
    return key


def _create(path: Path) -> bytes:
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(parents=True, exist_ok=True)
            os.chmod(parent, 0o700)
        key = secrets.token_bytes(KEY_BYTES)
        tmp = parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask may only narrow the mode; make it exact
            os.write(fd, key.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            won = _publish(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(parent)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the de-identification key file {path} ({exc.strerror})",
            hint="Make sure the folder is writable, or set `deid_key_file` to a writable path.",
        ) from None
    if won:
        return key
    data = _read(path)
    if data is None:  # pragma: no cover - the winner's file vanished between link and read
        raise ConfigError(f"the de-identification key file {path} disappeared while being created", hint=_HINT)
    return _parse(path, data)


def _publish(tmp: Path, path: Path) -> bool:
    """Give ``tmp`` the name ``path`` unless ``path`` exists; True when this call created it."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    # The filesystem has no hard links: create the name exclusively and copy the bytes in. A
    # concurrent reader can see the file before it is complete; _read waits for it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, tmp.read_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
