"""Storage retries: which errors are retried as which kind, how fetch_bytes bounds and counts
them, and the single-attempt S3 filesystem it relies on."""

from __future__ import annotations

import io
from collections import Counter

import aiohttp
import botocore.exceptions as boto
import pytest
from botocore.parsers import ResponseParserError
from s3fs.errors import translate_boto_error

from pipeline.store import fetch
from pipeline.store.fetch import ImageError, fetch_bytes, retry_kind
from pipeline.store.storage import filesystem_for, image_filesystem_for, storage_options
from schemas.output import RETRY_KINDS
from schemas.spec import DecodeSpec, StorageSpec


def client_error(status: int, code: str, message: str = "from the server") -> boto.ClientError:
    """The error botocore raises for an S3 error response."""
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return boto.ClientError(response, "GetObject")  # type: ignore[arg-type]


def s3fs_error(status: int, code: str) -> BaseException:
    """What s3fs raises for it: a translated OSError with the ClientError as its cause."""
    return translate_boto_error(client_error(status, code))


URL = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error(503, "SlowDown"), "throttled"),
        (s3fs_error(503, "SlowDown"), "throttled"),
        (client_error(429, "TooManyRequests"), "throttled"),
        (client_error(400, "ThrottlingException"), "throttled"),
        (s3fs_error(500, "InternalError"), "server_error"),
        (s3fs_error(503, "ServiceUnavailable"), "server_error"),
        (client_error(503, "503"), "server_error"),  # a HEAD's 503 has no body, so no code
        (client_error(502, "BadGateway"), "server_error"),
        (client_error(400, "RequestTimeout"), "timeout"),
        (boto.ReadTimeoutError(endpoint_url=URL), "timeout"),
        (boto.ConnectTimeoutError(endpoint_url=URL), "timeout"),
        (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), "timeout"),
        (TimeoutError(), "timeout"),
        (boto.EndpointConnectionError(endpoint_url=URL), "connection"),
        (boto.ConnectionClosedError(endpoint_url=URL), "connection"),
        (boto.ResponseStreamingError(error="Connection reset by peer"), "connection"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), "connection"),
        (aiohttp.ServerDisconnectedError(), "connection"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection"),
        (ResponseParserError("Unable to parse response, invalid XML"), "server_error"),
    ],
)
def test_transient_errors_are_classified_by_type_and_status(exc, kind):
    assert kind in RETRY_KINDS
    assert retry_kind(exc) == kind


@pytest.mark.parametrize(
    "exc",
    [
        s3fs_error(403, "AccessDenied"),
        s3fs_error(404, "NoSuchKey"),
        client_error(400, "InvalidArgument", "503 appears in this text but the code decides"),
        ValueError("bad"),
        OSError("disk full"),
    ],
)
def test_permanent_errors_are_not_retried(exc):
    assert retry_kind(exc) is None


def test_a_wrapped_error_is_classified_by_its_cause():
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as inner:
            raise RuntimeError("read failed") from inner
    except RuntimeError as outer:
        assert retry_kind(outer) == "connection"


def test_unknown_types_fall_back_to_names_and_text():
    class GatewayTimeoutError(Exception):
        pass

    assert retry_kind(GatewayTimeoutError("x")) == "timeout"
    assert retry_kind(Exception("HTTP 503 from the backend")) == "server_error"


class ScriptedFS:
    """A stand-in filesystem: ``open`` raises the scripted errors in turn, then serves ``data``."""

    def __init__(self, errors: list[BaseException], data: bytes = b"image bytes") -> None:
        self.errors, self.data, self.opens = list(errors), data, 0

    def size(self, path: str) -> int:
        return len(self.data)

    def open(self, path: str, mode: str = "rb") -> io.BytesIO:
        self.opens += 1
        if self.errors:
            raise self.errors.pop(0)
        return io.BytesIO(self.data)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(fetch.time, "sleep", slept.append)
    return slept


def test_each_retry_is_counted_by_kind_with_doubling_backoff(sleeps):
    fs = ScriptedFS(
        [s3fs_error(503, "SlowDown"), boto.ReadTimeoutError(endpoint_url=URL), ConnectionError()]
    )
    retries: Counter[str] = Counter()
    data = fetch_bytes(fs, "b/k", DecodeSpec(retries=3, retry_backoff_s=0.05), retries)
    assert data == b"image bytes" and fs.opens == 4
    assert retries == {"throttled": 1, "timeout": 1, "connection": 1}
    assert sleeps == [0.05, 0.1, 0.2]


def test_giving_up_is_bounded_and_says_how_many_retries(sleeps):
    fs = ScriptedFS([s3fs_error(503, "ServiceUnavailable")] * 10)
    retries: Counter[str] = Counter()
    result = fetch_bytes(fs, "b/k", DecodeSpec(retries=2, retry_backoff_s=0.0), retries)
    assert isinstance(result, ImageError) and result.kind == "storage"
    assert fs.opens == 3 and retries == {"server_error": 2}
    assert result.message.startswith("gave up after 2 retries (server_error 2); last error: ")


def test_no_retries_allowed_means_one_attempt(sleeps):
    fs = ScriptedFS([ConnectionError("reset")] * 3)
    retries: Counter[str] = Counter()
    result = fetch_bytes(fs, "b/k", DecodeSpec(retries=0), retries)
    assert isinstance(result, ImageError) and fs.opens == 1 and not retries and not sleeps
    assert result.message.startswith("gave up after 0 retries; last error: ConnectionError")


def test_a_permanent_error_after_retries_keeps_its_kind_and_the_count(sleeps):
    fs = ScriptedFS([s3fs_error(500, "InternalError"), FileNotFoundError("gone")])
    retries: Counter[str] = Counter()
    result = fetch_bytes(fs, "b/k", DecodeSpec(retries=3, retry_backoff_s=0.0), retries)
    assert isinstance(result, ImageError) and result.kind == "missing"
    assert fs.opens == 2 and retries == {"server_error": 1}
    fs = ScriptedFS([s3fs_error(503, "SlowDown"), s3fs_error(403, "AccessDenied")])
    result = fetch_bytes(fs, "b/k", DecodeSpec(retries=3, retry_backoff_s=0.0))
    assert isinstance(result, ImageError) and result.kind == "storage" and fs.opens == 2
    assert "access denied" in result.message


def test_timeouts_reach_botocore_for_every_s3_filesystem():
    storage = StorageSpec(endpoint_url=URL, connect_timeout_s=3, read_timeout_s=7)
    config = storage_options("s3://b/k", storage)["config_kwargs"]
    assert config == {"connect_timeout": 3.0, "read_timeout": 7.0}
    assert storage_options("/local/k.jpg", storage) == {}


def test_image_reads_make_one_attempt_per_call_below_fetch_bytes():
    storage = StorageSpec(endpoint_url=URL, connect_timeout_s=3, read_timeout_s=7)
    fs, path = image_filesystem_for("s3://bucket/photos/a.jpg", storage)
    assert path == "bucket/photos/a.jpg"
    assert fs.retries == 1  # s3fs: attempts per call
    config = fs.s3.meta.config  # the botocore client s3fs built (no request is made)
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (3.0, 7.0)
    assert config.http_session_cls.__name__ == "SingleTryAIOHTTPSession"
    # Listing and writing use another instance that keeps the libraries' own retries.
    other, _ = filesystem_for("s3://bucket/photos/a.jpg", storage)
    assert other is not fs and "retries" not in vars(other)
    local, _ = image_filesystem_for("/tmp/x.jpg", storage)
    assert local.protocol[0] in ("file", "local")
