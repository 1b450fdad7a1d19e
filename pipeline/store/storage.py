"""Storage access: filesystems for URIs, listing image inputs, checking manifests, stable ids.

Local paths and ``s3://`` (s3fs) are first-class; any other fsspec protocol works
through fsspec. S3 settings come from the job spec, then the standard AWS environment.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Literal

import fsspec
from fsspec.core import url_to_fs

from pipeline.errors import JobSetupError
from schemas.spec import LOCAL_SCHEMES, StorageSpec, uri_scheme

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2"}
)
_S3_SCHEMES = {"s3", "s3a"}


def is_s3(uri: str) -> bool:
    """True for an ``s3://`` (or ``s3a://``) URI."""
    return uri_scheme(uri) in _S3_SCHEMES


class InputError(JobSetupError):
    """An input or manifest that cannot be listed; the message names it."""


class StorageError(JobSetupError):
    """Storage that cannot be reached or read or written: the message names the URI, what
    was tried and the storage library's own words."""


@functools.cache
def _storage_exceptions() -> tuple[type[BaseException], ...]:
    """What the storage libraries raise when a store cannot be reached or refuses a request:
    OS errors (local files, and what s3fs translates), botocore's and aiohttp's own."""
    found: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        found += [BotoCoreError, ClientError]
    except ImportError:  # no S3 support installed
        pass
    try:
        from aiohttp import ClientError as HttpClientError

        found.append(HttpClientError)
    except ImportError:
        pass
    return tuple(found)


def is_storage_failure(exc: BaseException) -> bool:
    """True for an error of the storage layer (unreachable endpoint, refused request, I/O)."""
    return isinstance(exc, _storage_exceptions())


def storage_failure(uri: str, action: str, exc: BaseException) -> StorageError:
    """The one line every command prints for a storage failure:
    ``cannot ACTION 'URI': ErrorType: what the library said``."""
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return StorageError(f"cannot {action} {uri!r}: {type(exc).__name__}: {text}")


@contextmanager
def storage_errors(uri: str, action: str) -> Iterator[None]:
    """Turn a storage failure inside the block into ``storage_failure(uri, action, ...)``;
    DetPose's own errors and anything else pass through unchanged."""
    try:
        yield
    except JobSetupError:
        raise
    except Exception as exc:
        if not is_storage_failure(exc):
            raise
        raise storage_failure(uri, action, exc) from exc


def storage_options(
    uri: str, storage: StorageSpec, *, single_attempt: bool = False
) -> dict[str, Any]:
    """fsspec options for ``uri``: S3 endpoint, region, credentials and timeouts; nothing for
    other schemes.

    ``single_attempt``: botocore and aiohttp make one attempt per request, no retries of
    their own (see ``image_filesystem_for``).
    """
    if uri_scheme(uri) not in _S3_SCHEMES:
        return {}
    opts: dict[str, Any] = {}
    endpoint = (
        storage.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        opts["endpoint_url"] = endpoint
    region = storage.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    if storage.anonymous:
        opts["anon"] = True
    if storage.access_key_id is not None and storage.secret_access_key is not None:
        opts["key"] = storage.access_key_id.get_secret_value()
        opts["secret"] = storage.secret_access_key.get_secret_value()
        if storage.session_token is not None:
            opts["token"] = storage.session_token.get_secret_value()
    # Listings must see objects written by earlier tasks of the same job (resume).
    opts["use_listings_cache"] = False
    # botocore Config: finite timeouts, so a stalled request fails (and can be retried).
    config_kwargs: dict[str, Any] = {
        "connect_timeout": storage.connect_timeout_s,
        "read_timeout": storage.read_timeout_s,
    }
    if single_attempt:
        # total_max_attempts 1: botocore's own retry handler never resends (whatever
        # AWS_MAX_ATTEMPTS or ~/.aws/config say); mode standard is the one documented for it.
        config_kwargs["retries"] = {"total_max_attempts": 1, "mode": "standard"}
        config_kwargs["http_session_cls"] = _single_try_http_session()
    opts["config_kwargs"] = config_kwargs
    return opts


@functools.cache
def _single_try_http_session() -> type:
    """aiobotocore's HTTP session with aiohttp's silent resend switched off.

    aiohttp resends an idempotent request (GET, HEAD) once when the connection drops before
    the response headers arrive (RFC 9112 section 9.3.1). That resend is invisible to the
    caller: a reset connection would cost two requests but count as none. aiohttp's own test
    client switches it off the same way (``ClientSession._retry_connection``).
    """
    from aiobotocore.httpsession import AIOHTTPSession

    class SingleTryAIOHTTPSession(AIOHTTPSession):
        async def _get_session(self, proxy_url: str | None) -> Any:
            session = await super()._get_session(proxy_url)
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            return session

    return SingleTryAIOHTTPSession


def filesystem_for(uri: str, storage: StorageSpec) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path inside it."""
    if uri_scheme(uri) in LOCAL_SCHEMES:
        # Not through url_to_fs: it reads "::" in a local name ("a::b.jpg") as a URL chain.
        path = uri.split("://", 1)[1] if "://" in uri else uri
        return fsspec.filesystem("file"), os.path.abspath(path)
    fs, path = url_to_fs(uri, **storage_options(uri, storage))
    return fs, path


def image_filesystem_for(uri: str, storage: StorageSpec) -> tuple[fsspec.AbstractFileSystem, str]:
    """``filesystem_for`` for reading images: on S3 every call is a single attempt.

    ``pipeline.store.fetch.fetch_bytes`` retries, bounds and counts every retry of an image read
    itself, so none of the layers below may resend on its own: s3fs (``retries`` = attempts
    in its ``_error_wrapper``, default 5), botocore (``total_max_attempts``, default 5 in
    legacy mode) and aiohttp (one silent resend of a GET or HEAD). Left on, they multiply
    into up to 5 x 5 x 2 requests per attempt, unseen. The options differ from
    ``filesystem_for``'s, so fsspec caches a separate instance: listing and writing output
    keep the libraries' own retries.
    """
    if uri_scheme(uri) not in _S3_SCHEMES:
        return filesystem_for(uri, storage)
    fs, path = url_to_fs(uri, **storage_options(uri, storage, single_attempt=True))
    fs.retries = 1  # s3fs's "retries" is its number of attempts per call
    return fs, path


def local_file_kind(mode: int) -> str:
    """What a local ``st_mode`` is, in words: ``regular file``, ``folder``, ``character
    device``, ``FIFO`` …"""
    kinds = (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


@contextmanager
def open_input(uri: str, storage: StorageSpec, what: str = "") -> Iterator[BinaryIO]:
    """A file at ``uri`` (local or any fsspec URI), opened for reading after checking that it
    is a regular file: a folder, a device or a FIFO (which would block or never end) is
    refused, and so is a missing file, each naming ``uri`` (after ``what``, e.g. ``--annotations``).

    Raises:
        InputError: not a readable regular file; StorageError: the store cannot be reached.
    """
    label = f"{what} {uri!r}" if what else repr(uri)
    fs, path = filesystem_for(uri, storage)
    with storage_errors(uri, "read"):
        try:
            if uri_scheme(uri) in LOCAL_SCHEMES:
                kind = local_file_kind(os.stat(path).st_mode)
            else:
                kind = "folder" if fs.info(path).get("type") == "directory" else "regular file"
        except FileNotFoundError:
            raise InputError(f"{label} does not exist") from None
        if kind != "regular file":
            raise InputError(f"{label} is a {kind}; expected a file")
        with fs.open(path, "rb") as fh:
            yield fh


def read_input(uri: str, storage: StorageSpec, what: str = "") -> bytes:
    """The bytes of the regular file at ``uri`` (see ``open_input``)."""
    with open_input(uri, storage, what) as fh:
        return fh.read()


def absolute_if_local(uri: str, base_dir: str | None = None) -> str:
    """A relative local path made absolute against ``base_dir`` (default: this process's
    working directory).

    Workers run elsewhere (another folder, another node), so a relative path must be
    resolved against the folder where the user wrote it: the driver's, passed on to the
    tasks as ``base_dir``. URIs and absolute paths are kept as they are.
    """
    if uri_scheme(uri) == "" and not os.path.isabs(uri):
        return os.path.normpath(os.path.join(base_dir or os.getcwd(), uri))
    return uri


def image_id_for(uri: str) -> int:
    """A stable, non-negative 63-bit id for an image URI (same URI, same id, any machine)."""
    digest = hashlib.blake2b(uri.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def is_image_path(path: str) -> bool:
    """True when ``path`` has a known image extension (case-insensitive)."""
    return PurePosixPath(path).suffix.lower() in IMAGE_EXTENSIONS


def _unstrip(fs: fsspec.AbstractFileSystem, uri: str, path: str) -> str:
    """Turn a path returned by ``fs`` back into a URI with the input's scheme."""
    scheme = uri_scheme(uri)
    if scheme in LOCAL_SCHEMES:
        return path
    return fs.unstrip_protocol(path) if scheme not in _S3_SCHEMES else f"{scheme}://{path}"


@dataclass(frozen=True)
class Listing:
    """Image URIs found under the inputs, and the files a prefix held that are not images."""

    uris: list[str]
    skipped: list[str] = field(default_factory=list)


def list_inputs(inputs: Iterable[str], storage: StorageSpec) -> Listing:
    """Expand files and prefixes into a sorted, de-duplicated list of image URIs.

    A prefix (a directory, or an S3 key prefix) is listed recursively and filtered by
    image extension; what it holds besides images is reported in ``skipped``. A URI
    naming one object is kept whatever its extension, so a misnamed or missing file
    still yields an error row rather than vanishing.
    """
    found: list[str] = []
    skipped: list[str] = []
    for uri in inputs:
        fs, path = filesystem_for(uri, storage)
        with storage_errors(uri, "list input"):
            is_dir = fs.isdir(path)
        if is_dir:
            for file_path in sorted(fs.find(path)):
                (found if is_image_path(file_path) else skipped).append(
                    _unstrip(fs, uri, file_path)
                )
        else:
            found.append(absolute_if_local(uri))
    return Listing(sorted(dict.fromkeys(found)), sorted(dict.fromkeys(skipped)))


ManifestFormat = Literal["parquet", "csv", "text"]
# Manifests are told apart by their suffix; anything else is text, one URI per line.
_MANIFEST_FORMATS: dict[str, ManifestFormat] = {".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class Manifest:
    """A manifest checked on the driver without reading its URIs: where it is, its format,
    and its size (``rows`` and ``row_groups`` from a Parquet footer; for CSV and text the
    rows are unknown until read)."""

    uri: str
    path: str  # inside its filesystem (``filesystem_for(uri)``)
    format: ManifestFormat
    size_bytes: int
    rows: int | None = None
    row_groups: int = 0


def manifest_format(path: str) -> ManifestFormat:
    """``parquet`` or ``csv`` by suffix (any case); anything else is a text manifest."""
    return _MANIFEST_FORMATS.get(PurePosixPath(path).suffix.lower(), "text")


def is_uri_line(line: str) -> bool:
    """True for a text-manifest line that names a URI (not blank, not a ``#`` comment)."""
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _check_parquet_manifest(fh: Any, uri: str) -> tuple[int, int]:
    """Rows and row groups of a Parquet manifest, from its footer, after checking its ``uri``
    column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(fh)
    schema = parquet.schema_arrow
    if "uri" not in schema.names:
        raise InputError(f"manifest {uri!r} has no 'uri' column (columns: {schema.names})")
    uri_type = schema.field("uri").type
    if not pa.types.is_string(uri_type) and not pa.types.is_large_string(uri_type):
        raise InputError(f"manifest {uri!r}: the 'uri' column holds {uri_type}, not text")
    return parquet.metadata.num_rows, parquet.metadata.num_row_groups


def _check_csv_manifest(fh: Any, uri: str) -> int:
    """1 when a CSV manifest has a ``uri`` column and a first data row, else 0 (its header and
    first block are all that is read)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # URIs are text: '000123' must not become the integer 123.
    options = pacsv.ConvertOptions(column_types={"uri": pa.string()})
    reader = pacsv.open_csv(fh, convert_options=options)
    if "uri" not in reader.schema.names:
        raise InputError(f"manifest {uri!r} has no 'uri' column (columns: {reader.schema.names})")
    return int(any(batch.num_rows for batch in reader))


def _check_text_manifest(fh: Any) -> int:
    """1 when a text manifest names a URI (read up to its first one), else 0."""
    for raw in fh:
        if is_uri_line(raw.decode("utf-8")):
            return 1
    return 0


def check_manifest(uri: str, storage: StorageSpec) -> Manifest:
    """Check a manifest without reading its URIs: it exists, has a text ``uri`` column
    (Parquet: its footer; CSV: its header) and lists at least one URI.

    Raises:
        InputError: naming the manifest and what is wrong with it.
    """
    import pyarrow as pa

    fs, path = filesystem_for(uri, storage)
    fmt = manifest_format(path)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise InputError(f"manifest {uri!r} is a folder; expected a Parquet, CSV or text file")
        with fs.open(path, "rb") as fh:
            rows: int | None = None
            row_groups = 0
            if fmt == "parquet":
                rows, row_groups = _check_parquet_manifest(fh, uri)
                listed = rows
            elif fmt == "csv":
                listed = _check_csv_manifest(fh, uri)
            else:
                listed = _check_text_manifest(fh)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"manifest {uri!r} does not exist") from exc
    except (KeyError, ValueError, OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read manifest {uri!r}: {exc}") from exc
    if not listed:
        raise InputError(f"no images found in {uri}")
    return Manifest(uri, path, fmt, int(info.get("size") or 0), rows, row_groups)
