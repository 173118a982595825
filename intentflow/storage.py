"""Where registries and checkpoints live: a local path, or an object-store URL read and written through fsspec.

A plain path and a ``file://`` URL are local files. ``s3://bucket/prefix`` goes through fsspec's s3fs backend
(``pip install 'intentflow[s3]'``), configured the way every AWS client is: ``AWS_ENDPOINT_URL`` for a store that is
not AWS, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE`` for credentials. Other fsspec schemes
are read (a checkpoint URL loads from anywhere fsspec reaches), but a registry in them is refused: its guarantees
need the store's conditional writes, which this code speaks only with S3 (docs/decisions.md#registry-in-a-bucket).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import unquote, urlsplit

from intentflow.errors import IntentflowError

Location = str | Path
INSTALL_S3 = "pip install 'intentflow[s3]'"
# Schemes whose stores give conditional writes (If-None-Match / If-Match) that the registry's lock, pointer and
# history rely on.
REGISTRY_SCHEMES = ("s3",)


def is_url(location: Location) -> bool:
    """An object-store URL (``s3://...``); a path or a ``file://`` URL is local."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def local_path(location: Location) -> Path:
    """The local path of a path or a ``file://`` URL."""
    if isinstance(location, str) and location.startswith("file://"):
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise IntentflowError(f"{location} names the host {parts.netloc!r}: a file:// URL is a file on this "
                                  "machine (fix: file:///absolute/path, or an s3:// URL for a shared store)")
        return Path(unquote(parts.path))
    return Path(location)


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def join(location: Location, *parts: str) -> Location:
    """``location/part/...``: a Path for a path, a URL for a URL."""
    if is_url(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return local_path(location).joinpath(*parts)


def name_of(location: Location) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1] if is_url(location) else local_path(location).name


def sibling(location: Location, name: str) -> Location:
    """The file called ``name`` in the same folder (or under the same prefix) as ``location``."""
    if is_url(location):
        return str(location).rstrip("/").rsplit("/", 1)[0] + "/" + name
    return local_path(location).with_name(name)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system for ``url`` and the path in it (``bucket/prefix`` for S3)."""
    try:
        import fsspec
    except ImportError:
        raise IntentflowError(f"{url}: reading an object-store URL needs fsspec (fix: {INSTALL_S3})") from None
    try:
        # No listing cache: s3fs answers a read's size from its last listing, so an object written since (by
        # another machine, or this one) would be "not found".
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except ImportError:
        raise IntentflowError(f"{url}: the {scheme(url)}:// scheme needs a package that is not installed "
                              f"(fix: {INSTALL_S3} for s3://, or the fsspec backend for {scheme(url)}://)") from None
    except ValueError as error:
        raise IntentflowError(f"{url}: not a URL fsspec knows ({error}) (fix: s3://bucket/prefix, a file:// URL "
                              "or a path)") from None


def read_bytes(location: Location, what: str = "file") -> bytes:
    """The content of a file or object; a missing one raises ``FileNotFoundError``, any other failure an
    ``IntentflowError`` naming the URL and what to check."""
    if not is_url(location):
        return local_path(location).read_bytes()
    fs, path = filesystem(str(location))
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - botocore and aiohttp raise many types for one failed request
        raise store_error(str(location), f"cannot read the {what}", error) from None


def is_file(location: Location) -> bool:
    if not is_url(location):
        return local_path(location).is_file()
    fs, path = filesystem(str(location))
    try:
        return bool(fs.isfile(path))
    except Exception as error:  # noqa: BLE001
        raise store_error(str(location), "cannot look up", error) from None


def store_error(url: str, doing: str, error: BaseException) -> IntentflowError:
    """A failed request to an object store as a message naming the URL and the settings to check."""
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = f"the endpoint {endpoint}" if endpoint else "AWS (AWS_ENDPOINT_URL is not set)"
    return IntentflowError(f"{url}: {doing} ({type(error).__name__}: {detail}) (fix: check that the bucket exists "
                           f"on {where} and that AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE give "
                           "access to it)")


def http_url(url: str) -> str | None:
    """An http(s) address of an ``s3://`` object that a browser can open, where the store serves one: the
    configured endpoint (path style), else AWS's virtual-hosted address. None for other schemes."""
    if not is_url(url) or scheme(url) != "s3":
        return None
    bucket, _, key = url.split("://", 1)[1].partition("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}/{url_quote(key)}"
    return f"https://{bucket}.s3.amazonaws.com/{url_quote(key)}"
