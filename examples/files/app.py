"""
File upload and download: a multipart form upload, a streaming upload (``stream_body=True``)
and a streaming download from an async generator. Run from this folder with
``asphalt run config.yml`` and open http://127.0.0.1:4444/, or::

    curl -F file=@notes.txt http://127.0.0.1:4444/upload
    curl -T big.iso http://127.0.0.1:4444/files/big.iso
    curl -O http://127.0.0.1:4444/files/big.iso
"""

import asyncio
import html
import mimetypes
from pathlib import Path

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.utils import redirect, secure_filename
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.util import as_html, as_json

app = Kyoukai("files")

CHUNK_SIZE = 64 * 1024

FORM = """<!doctype html>
<title>Files</title>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input type="file" name="file"> <button>Upload</button>
</form>
<ul>{items}</ul>
"""


def storage(ctx) -> Path:
    """The upload folder: the ``upload_dir`` key of the component's config."""
    folder = Path(ctx.app.config.get("upload_dir", "uploads"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stored_path(ctx, name: str) -> Path:
    safe = secure_filename(name)
    if not safe:
        raise BadRequest(f"{name!r} is not a usable file name.")
    return storage(ctx) / safe


@app.route("/")
async def index(ctx):
    names = sorted(p.name for p in storage(ctx).iterdir() if p.is_file())
    items = "".join(f'<li><a href="/files/{html.escape(n)}">{html.escape(n)}</a></li>' for n in names)
    return as_html(FORM.format(items=items))


# A form upload: the body arrives complete (up to max_body_size), werkzeug parses it.
@app.route("/upload", methods=["POST"])
async def upload(ctx):
    upload = ctx.request.files.get("file")
    if upload is None or not upload.filename:
        raise BadRequest("Choose a file to upload.")
    upload.save(stored_path(ctx, upload.filename))
    return redirect("/", code=303)


# A streaming upload: the handler runs as soon as the head arrives and reads the body as the
# client sends it, so the file can be larger than max_body_size and never sits in memory.
@app.route("/files/<name>", methods=["PUT"], stream_body=True)
async def put_file(ctx, name: str):
    path = stored_path(ctx, name)
    size = 0
    with path.open("wb") as out:
        async for chunk in ctx.request.stream:
            await asyncio.to_thread(out.write, chunk)
            size += len(chunk)
    return as_json({"name": path.name, "size": size}, 201)


# A streaming download: the body comes from an async generator, one chunk at a time, at the
# pace the client reads (flow control on HTTP/2, the socket buffer on HTTP/1.1).
@app.route("/files/<name>")
async def download(ctx, name: str):
    path = stored_path(ctx, name)
    if not path.is_file():
        raise NotFound(f"There is no file {path.name!r}.")

    async def chunks():
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK_SIZE):
                yield chunk

    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {
        "Content-Length": str(path.stat().st_size),
        "Content-Disposition": f'attachment; filename="{path.name}"',
    }
    return Response(chunks(), content_type=content_type, headers=headers)
