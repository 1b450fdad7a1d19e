"""Storage access: filesystems for URIs, listing image inputs, stable image ids.

Local paths and ``s3://`` (s3fs) are first-class; any other fsspec protocol works
through fsspec. S3 settings come from the job spec, then the standard AWS environment.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from schemas.spec import StorageSpec, uri_scheme

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2"}
)
_S3_SCHEMES = {"s3", "s3a"}


class InputError(ValueError):
    """An input or manifest that cannot be listed; the message names it."""


def storage_options(uri: str, storage: StorageSpec) -> dict[str, Any]:
    """fsspec options for ``uri``: S3 endpoint, region and credentials; nothing for other schemes."""
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
    return opts


def filesystem_for(uri: str, storage: StorageSpec) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path inside it."""
    if uri_scheme(uri) == "local":
        uri = "file://" + uri.split("://", 1)[1]
    fs, path = url_to_fs(uri, **storage_options(uri, storage))
    return fs, path


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...`` keeping the scheme of ``base``."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


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
    if scheme in ("", "file", "local"):
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
        try:
            is_dir = fs.isdir(path)
        except Exception as exc:  # storage unreachable, credentials, ...
            raise InputError(f"cannot list input {uri!r}: {type(exc).__name__}: {exc}") from exc
        if is_dir:
            for file_path in sorted(fs.find(path)):
                (found if is_image_path(file_path) else skipped).append(
                    _unstrip(fs, uri, file_path)
                )
        else:
            found.append(uri)
    return Listing(sorted(dict.fromkeys(found)), sorted(dict.fromkeys(skipped)))


def read_manifest(uri: str, storage: StorageSpec) -> Listing:
    """URIs listed in a manifest (Parquet or CSV with a ``uri`` column, or text, one per line),
    sorted and de-duplicated."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    fs, path = filesystem_for(uri, storage)
    suffix = PurePosixPath(path).suffix.lower()
    try:
        with fs.open(path, "rb") as fh:
            if suffix == ".parquet":
                table = pq.read_table(fh, columns=["uri"])
            elif suffix == ".csv":
                table = pacsv.read_csv(fh)
            else:
                lines = fh.read().decode("utf-8").splitlines()
                uris = (s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#"))
                return Listing(sorted(dict.fromkeys(uris)))
    except FileNotFoundError as exc:
        raise InputError(f"manifest {uri!r} does not exist") from exc
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"cannot read manifest {uri!r}: {exc}") from exc
    if "uri" not in table.column_names:
        raise InputError(f"manifest {uri!r} has no 'uri' column (columns: {table.column_names})")
    return Listing(sorted(dict.fromkeys(u for u in table.column("uri").to_pylist() if u)))
