"""The files ``export``, ``import``, ``review`` and ``eval`` write: checked before any work,
written atomically and only as regular files, JSON only as strict JSON.

A local target that exists must be a regular file: a device, a FIFO, a socket or a folder is
refused (an atomic rename over ``/dev/null`` would replace the device itself), and so is a
symbolic link unless the user passes ``--replace-symlink`` (the link is then replaced by the
file; its target is never written). Local files are written under a fresh temporary name in
the same folder and renamed into place; object stores get the whole object at once. Either
way a failed command leaves no file that looks whole.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any

from pipeline.errors import JobSetupError
from pipeline.store.storage import filesystem_for, is_s3, local_file_kind, storage_errors
from schemas.spec import LOCAL_SCHEMES, StorageSpec, uri_scheme

REPLACE_SYMLINK_FLAG = "--replace-symlink"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import (in the main thread): os.umask cannot be read without setting it.
_UMASK = _read_umask()


class OutputError(JobSetupError):
    """An output path that must not be written: the message names it and says why."""


def strict_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes ``NaN`` or ``Infinity`` (standard parsers, Label
    Studio's among them, reject both). Inputs are checked for non-finite numbers, so one
    reaching an output is a bug."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError as exc:
        raise RuntimeError(f"[internal] a non-finite number reached a JSON output: {exc}") from None


def _is_local(uri: str) -> bool:
    return uri_scheme(uri) in LOCAL_SCHEMES


def _file_problem(path: str, replace_symlink: bool) -> str | None:
    """Why the local ``path`` must not be replaced by a new file; None when it may be."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # the parent is checked on its own
        return None
    if stat.S_ISLNK(mode):
        if replace_symlink:
            return None
        return (
            f"is a symbolic link; pass {REPLACE_SYMLINK_FLAG} to replace the link with the "
            "written file (its target is left alone)"
        )
    if stat.S_ISDIR(mode):
        return "is a folder; expected the path of a file to write"
    kind = local_file_kind(mode)
    return None if kind == "regular file" else f"is a {kind}, not a regular file; refused"


def _parent_problem(path: str) -> str | None:
    """Why no file can be created at the local ``path``: its nearest existing ancestor is not
    a writable folder."""
    parent = os.path.dirname(path) or "."
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent) or "."
    if not os.path.isdir(parent):
        return f"cannot be created: {parent!r} is a {local_file_kind(os.stat(parent).st_mode)}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: folder {parent!r} is not writable"
    return None


def _remote_type(fs: Any, path: str, uri: str) -> str | None:
    """``file`` or ``directory`` for what an object store holds at ``path``; None for nothing.
    Asked with ``info``: ``isfile``/``isdir`` would take an unreachable store for an empty one."""
    with storage_errors(uri, "write"):
        try:
            return fs.info(path).get("type")
        except FileNotFoundError:
            return None


def check_output_file(uri: str, storage: StorageSpec, *, replace_symlink: bool = False) -> None:
    """Refuse, before any work, an output file that must not be written (see module doc).

    Raises:
        OutputError: naming ``uri`` and the reason; StorageError: the store is unreachable.
    """
    fs, path = filesystem_for(uri, storage)
    if _is_local(uri):
        problem = _file_problem(path, replace_symlink) or _parent_problem(path)
    else:
        is_dir = _remote_type(fs, path, uri) == "directory"
        problem = "is a folder; expected the path of a file to write" if is_dir else None
    if problem:
        raise OutputError(f"output {uri!r} {problem}")


def check_output_folder(
    uri: str,
    storage: StorageSpec,
    replaces: Callable[[str], bool],
    subfolders: Collection[str] = (),
    *,
    replace_symlink: bool = False,
) -> None:
    """Refuse, before any work, an output folder that is not a folder, or one holding an entry
    the command would replace that must not be replaced.

    Args:
        uri: the folder; it may not exist yet (a link to a folder is a folder).
        replaces: whether the command writes the entry of this path relative to ``uri``
            (``index.html``, ``thumbs/00001-….jpg``); each such entry that exists must be a
            regular file.
        subfolders: relative paths the command writes into; each must be a folder if it exists.
    """
    fs, root = filesystem_for(uri, storage)
    if not _is_local(uri):
        if _remote_type(fs, root, uri) == "file":
            raise OutputError(f"output {uri!r} is a file; expected a folder")
        return
    if os.path.lexists(root) and not os.path.isdir(root):
        kind = local_file_kind(os.stat(root).st_mode) if os.path.exists(root) else "broken link"
        raise OutputError(f"output {uri!r} is a {kind}; expected a folder")
    if not os.path.lexists(root):
        problem = _parent_problem(root)
        if problem:
            raise OutputError(f"output {uri!r} {problem}")
        return
    for sub in subfolders:
        path = os.path.join(root, sub)
        if os.path.islink(path) and not replace_symlink:
            raise OutputError(
                f"output {path!r} is a symbolic link; pass {REPLACE_SYMLINK_FLAG} to replace it"
            )
        if os.path.lexists(path) and not os.path.isdir(path):
            kind = local_file_kind(os.lstat(path).st_mode)
            raise OutputError(f"output {path!r} is a {kind}; expected a folder")
    for folder in ["", *(s for s in subfolders if os.path.isdir(os.path.join(root, s)))]:
        with os.scandir(os.path.join(root, folder)) as entries:
            for entry in entries:
                relative = f"{folder}/{entry.name}" if folder else entry.name
                if relative in subfolders or not replaces(relative):
                    continue
                problem = _file_problem(entry.path, replace_symlink)
                if problem:
                    raise OutputError(f"output {entry.path!r} {problem}")


@contextmanager
def open_atomic(
    uri: str, storage: StorageSpec, *, binary: bool = False, replace_symlink: bool = False
) -> Iterator[IO[Any]]:
    """A file at ``uri`` to write, moved into place only when the block completes.

    Local: a fresh temporary file beside the target (created exclusively, so no link or FIFO
    under a predictable name is ever opened), renamed over the target after checking it
    again. Elsewhere: ``uri.partial``, moved into place.
    """
    fs, path = filesystem_for(uri, storage)
    mode = "wb" if binary else "w"
    encoding = None if binary else "utf-8"
    if not _is_local(uri):
        partial = f"{path}.partial"
        try:
            with storage_errors(uri, "write"):
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                with fs.open(partial, mode, encoding=encoding) as fh:
                    yield fh
                fs.mv(partial, path)
        except BaseException:
            with suppress(Exception):
                fs.rm(partial)
            raise
        return
    check_output_file(uri, storage, replace_symlink=replace_symlink)
    folder, name = os.path.split(path)
    with storage_errors(uri, "write"):
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
    try:
        with storage_errors(uri, "write"):
            os.fchmod(fd, 0o666 & ~_UMASK)
            with open(fd, mode, encoding=encoding) as fh:
                yield fh
            # Checked again: something may have been put there while the file was written.
            check_output_file(uri, storage, replace_symlink=replace_symlink)
            os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(
    uri: str,
    data: bytes | str,
    storage: StorageSpec,
    *,
    content_type: str | None = None,
    replace_symlink: bool = False,
) -> None:
    """Write a small file whole (see ``open_atomic``); elsewhere one PUT is atomic on its own.
    ``content_type`` is given to S3, where it decides whether a browser shows a file."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if _is_local(uri):
        with open_atomic(uri, storage, binary=True, replace_symlink=replace_symlink) as fh:
            fh.write(payload)
        return
    fs, path = filesystem_for(uri, storage)
    with storage_errors(uri, "write"):
        extra = {"ContentType": content_type} if content_type and is_s3(uri) else {}
        fs.pipe_file(path, payload, **extra)


def write_json(
    uri: str, value: Any, storage: StorageSpec, *, indent: int = 1, replace_symlink: bool = False
) -> None:
    """Write ``value`` as strict, indented JSON (``strict_json``), whole."""
    text = strict_json(value, indent=indent) + "\n"
    write_atomic(uri, text, storage, replace_symlink=replace_symlink)


def reset_folder(uri: str, storage: StorageSpec) -> None:
    """Empty the output folder ``uri`` (a link there is removed, never followed) and create it."""
    fs, path = filesystem_for(uri, storage)
    with storage_errors(uri, "write"):
        if _is_local(uri) and os.path.islink(path):
            os.unlink(path)
        elif fs.exists(path):
            fs.rm(path, recursive=True)
        fs.makedirs(path, exist_ok=True)
