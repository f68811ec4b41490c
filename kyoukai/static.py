"""
Static files: a directory served under a URL prefix (:meth:`.Blueprint.add_static`), and
:func:`file_response` for a single file, with conditional and range requests, streamed from
disk in chunks.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import stat
from datetime import UTC, datetime
from urllib.parse import quote

from werkzeug.datastructures import Headers
from werkzeug.exceptions import NotFound, PreconditionFailed, RequestedRangeNotSatisfiable
from werkzeug.http import http_date, parse_range_header
from werkzeug.utils import get_content_type, redirect
from werkzeug.wrappers import Request, Response

from kyoukai.interfaces import RequestContext

#: Files are read and sent in pieces of this many bytes.
DEFAULT_CHUNK_SIZE = 64 * 1024
#: The ``Cache-Control`` of static files: caches may keep them but must revalidate (a cheap 304
#: thanks to ``ETag``), so a changed file is seen at once.
DEFAULT_CACHE_CONTROL = "no-cache"

# A file that is a symbolic link, a FIFO (which would block the open) or a device is refused
# by the open itself or by the check of its type that follows.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
# A compressed file is sent as it is: with a Content-Encoding the client would unpack it.
_ENCODED_TYPES = {"gzip": "application/gzip"}
_SAFE_METHODS = frozenset({"GET", "HEAD"})


class FileChunks:
    """
    The body of a file response: an async iterator over the next ``length`` bytes of the open
    file descriptor ``fd``, read ``chunk_size`` bytes at a time in a worker thread. It owns the
    descriptor and closes it at the end, on :meth:`aclose` or :meth:`close` (a client that goes
    away), or when it is garbage collected unsent. ``name`` is for error messages.
    """

    def __init__(self, fd: int, length: int, chunk_size: int = DEFAULT_CHUNK_SIZE, name: str = "") -> None:
        self._fd = fd
        self._remaining = length
        self._chunk_size = chunk_size
        self._name = name
        # The read running in a worker thread. A request cancelled mid-read cannot stop it: the
        # descriptor is closed once it returns, never under it.
        self._reading: asyncio.Future[bytes] | None = None

    @property
    def closed(self) -> bool:
        """Whether the file descriptor is closed."""
        return self._fd < 0

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._remaining <= 0 or self._fd < 0:
            self.close()
            raise StopAsyncIteration
        reading = self._reading = asyncio.ensure_future(
            asyncio.to_thread(self._read, min(self._chunk_size, self._remaining))
        )
        # Shielded: a cancelled request leaves the read to finish, and close() to follow it.
        data = await asyncio.shield(reading)
        self._reading = None
        if not data:
            self.close()
            # The length is already promised to the client: the response must not look complete.
            raise OSError(f"{self._name or 'the file'} became shorter while it was being sent")
        self._remaining -= len(data)
        return data

    def _read(self, size: int) -> bytes:
        # A method, not os.read itself: the running thread keeps this object (and so its
        # descriptor) alive.
        return os.read(self._fd, size)

    def close(self) -> None:
        """Close the file now, or as soon as a read running in its thread returns."""
        reading = self._reading
        if reading is not None and not reading.done():
            reading.add_done_callback(lambda _: self._close_now())
        else:
            self._close_now()

    def _close_now(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    async def aclose(self) -> None:
        """Close the file; returns once it is closed (after a read still running in its thread)."""
        reading = self._reading
        self.close()
        if reading is not None and not reading.done():
            await asyncio.wait([reading])

    def __del__(self) -> None:
        self._close_now()


def _last_modified(st: os.stat_result) -> datetime:
    # HTTP dates have whole seconds: compared with the client's copy at that precision.
    return datetime.fromtimestamp(int(st.st_mtime), UTC)


def _etag(st: os.stat_result) -> str:
    """A strong validator: any write changes the size or the modification time, a replaced file the inode."""
    return f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"


def _content_type(name: str) -> str:
    mimetype, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:
        mimetype = _ENCODED_TYPES.get(encoding)
    return get_content_type(mimetype or "application/octet-stream", "utf-8")


def _precondition_status(request: Request, etag: str, last_modified: datetime) -> int | None:
    """412 or 304 when a precondition of the request stops it (RFC 9110 section 13.2.2), else ``None``."""
    headers = request.headers
    if "If-Match" in headers:
        if_match = request.if_match
        if not (if_match.star_tag or if_match.is_strong(etag)):
            return 412
    elif request.if_unmodified_since is not None and last_modified > request.if_unmodified_since:
        return 412
    safe = request.method in _SAFE_METHODS
    if "If-None-Match" in headers:
        if_none_match = request.if_none_match
        if if_none_match.star_tag or if_none_match.contains_weak(etag):
            return 304 if safe else 412
    elif safe and request.if_modified_since is not None and last_modified <= request.if_modified_since:
        return 304
    return None


def _if_range_holds(request: Request, etag: str, last_modified: datetime) -> bool:
    """Whether a ``Range`` applies: no ``If-Range``, or one naming the current file exactly."""
    value = request.headers.get("If-Range")
    if value is None:
        return True
    if_range = request.if_range
    if if_range.etag is not None:
        # Strong comparison: a weak validator never matches.
        return not value.lstrip().startswith("W/") and if_range.etag == etag
    return if_range.date is not None and if_range.date == last_modified


def _byte_range(request: Request, size: int) -> tuple[int, int] | None:
    """
    The ``(start, stop)`` of a single satisfiable byte range the request asks for; ``None`` to
    send the whole file (no range, one not understood, or several).

    :raises RequestedRangeNotSatisfiable: the range starts past the end of the file.
    """
    parsed = parse_range_header(request.headers.get("Range"))
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return None
    start, stop = parsed.ranges[0]
    if start < 0:
        # A suffix longer than the file means the whole file.
        start, stop = max(size + start, 0), size
    else:
        stop = size if stop is None else min(stop, size)
    if start >= size:
        raise RequestedRangeNotSatisfiable(length=size, units="bytes")
    return start, stop


def _open_regular_file(path: str) -> tuple[int, os.stat_result] | None:
    """An open descriptor and the status of the regular file at ``path``, or ``None``."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def file_response(
    request: Request,
    path: str | os.PathLike[str],
    *,
    content_type: str | None = None,
    cache_control: str | None = DEFAULT_CACHE_CONTROL,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Response:
    """
    A response sending the file at ``path`` for ``request``: ``200`` with the file streamed in
    ``chunk_size`` pieces, or ``206`` for a single byte range (``GET`` only), ``304`` when the
    client's copy is current; ``HEAD`` gets the headers only. ``ETag``, ``Last-Modified``,
    ``Accept-Ranges`` and ``Cache-Control`` (unless ``None``) are set.

    The path is used as given (it is the caller's to check): a symbolic link as the last
    component is refused, and anything but a regular file is a 404.

    :param content_type: the ``Content-Type``; guessed from the file name when not given (text
        types are declared UTF-8, unknown ones are ``application/octet-stream``).
    :raises werkzeug.exceptions.NotFound: no regular file at ``path``.
    :raises werkzeug.exceptions.PreconditionFailed: ``If-Match`` or ``If-Unmodified-Since``
        fails.
    :raises werkzeug.exceptions.RequestedRangeNotSatisfiable: the range starts past the end.
    """
    path = os.fspath(path)
    opened = _open_regular_file(path)
    if opened is None:
        raise NotFound()
    fd, st = opened
    body: FileChunks | None = None
    try:
        etag, last_modified = _etag(st), _last_modified(st)
        headers = Headers()
        headers["ETag"] = f'"{etag}"'
        headers["Last-Modified"] = http_date(last_modified)
        if cache_control is not None:
            headers["Cache-Control"] = cache_control
        status = _precondition_status(request, etag, last_modified)
        if status == 412:
            raise PreconditionFailed()
        if status == 304:
            not_modified = Response(status=304, headers=headers)
            # A 304 describes the client's copy: no type of its own (werkzeug adds a default one).
            del not_modified.headers["Content-Type"]
            return not_modified
        headers["Accept-Ranges"] = "bytes"
        headers["Content-Type"] = content_type or _content_type(os.path.basename(path))
        headers["X-Content-Type-Options"] = "nosniff"
        size = st.st_size
        start, stop, status = 0, size, 200
        if (
            request.method == "GET"
            and "Range" in request.headers
            and size
            and _if_range_holds(request, etag, last_modified)
        ):
            byte_range = _byte_range(request, size)
            if byte_range is not None:
                start, stop = byte_range
                status = 206
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        if request.method == "HEAD" or stop == start:
            response = Response(status=status, headers=headers)
        else:
            os.lseek(fd, start, os.SEEK_SET)
            body = FileChunks(fd, stop - start, chunk_size, path)
            # werkzeug types bodies as sync iterables; Kyoukai sends async ones too (kyoukai.wsgi).
            response = Response(body, status=status, headers=headers)  # type: ignore[arg-type]
        # Set after the body: werkzeug gives an empty body its own length.
        response.headers["Content-Length"] = str(stop - start)
        return response
    finally:
        if body is None:
            os.close(fd)


class StaticFiles:
    """
    The handler serving the files of ``directory`` (what :meth:`.Blueprint.add_static`
    registers), called with the path below the prefix as ``filename``.

    Rules: a path with an empty, ``.`` or ``..`` segment, a backslash or a NUL, a hidden
    segment (starting with ``.``, unless ``allow_hidden``), or one that resolves (symbolic links
    followed) outside the directory is a 404; so is anything but a regular file. A directory is
    a 404 too, unless ``index`` names the file to serve for it (a request for the directory
    without the final slash is redirected to it with 308).

    :param directory: the folder to serve (resolved once, here; relative to the current
        directory).
    :param index: the file served for a directory (e.g. ``"index.html"``), or ``None``.
    :param cache_control: the ``Cache-Control`` value of every file, or ``None`` for none.
    :param allow_hidden: serve files and folders whose names start with ``.``.
    :param chunk_size: the size of the pieces files are read and sent in.
    :raises ValueError: ``directory`` is not a directory, or an option has an unusable value.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        index: str | None = None,
        cache_control: str | None = DEFAULT_CACHE_CONTROL,
        allow_hidden: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        root = os.path.realpath(directory)
        if not os.path.isdir(root):
            raise ValueError(f"the static directory {os.fspath(directory)!r} ({root}) is not a directory")
        if index is not None and not self._is_plain_name(index, allow_hidden):
            raise ValueError(f"index must be a file name without a folder (e.g. 'index.html'), not {index!r}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive number of bytes, not {chunk_size!r}")
        #: The served directory, absolute and with symbolic links resolved.
        self.root = root
        self.index = index
        self.cache_control = cache_control
        self.allow_hidden = allow_hidden
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"<StaticFiles {self.root!r}>"

    @staticmethod
    def _is_plain_name(segment: str, allow_hidden: bool) -> bool:
        return (
            segment not in ("", ".", "..")
            and "\\" not in segment
            and "\x00" not in segment
            and "/" not in segment
            and (allow_hidden or not segment.startswith("."))
        )

    def resolve(self, filename: str) -> str | None:
        """
        The real path of ``filename`` (a ``/``-separated path below the directory, a final
        ``/`` ignored) if the rules allow it and it stays inside the directory, else ``None``.
        """
        segments = filename.removesuffix("/").split("/") if filename else []
        if not all(self._is_plain_name(segment, self.allow_hidden) for segment in segments):
            return None
        return self._inside(os.path.join(self.root, *segments))

    def _inside(self, path: str) -> str | None:
        """The real path of ``path`` if it is the directory or below it, else ``None``."""
        real = os.path.realpath(path)
        if real == self.root or real.startswith(os.path.join(self.root, "")):
            return real
        return None

    async def __call__(self, ctx: RequestContext, filename: str = "") -> Response:
        request = ctx.request
        real = self.resolve(filename)
        if real is None:
            raise NotFound()
        if os.path.isdir(real):
            return self._directory(request, real, filename)
        if filename.endswith("/"):
            raise NotFound()
        return file_response(
            request,
            real,
            content_type=_content_type(filename.rpartition("/")[2]),
            cache_control=self.cache_control,
            chunk_size=self.chunk_size,
        )

    def _directory(self, request: Request, real: str, filename: str) -> Response:
        if self.index is None:
            raise NotFound()
        if filename and not filename.endswith("/"):
            # Relative links in the index page resolve against the directory only with the slash.
            location = quote(request.script_root + request.path + "/")
            if request.query_string:
                location += "?" + request.query_string.decode("latin-1")
            return redirect(location, 308)
        index = self._inside(os.path.join(real, self.index))
        if index is None:
            raise NotFound()
        return file_response(
            request,
            index,
            content_type=_content_type(self.index),
            cache_control=self.cache_control,
            chunk_size=self.chunk_size,
        )
