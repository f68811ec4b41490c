"""
File uploads: a ``multipart/form-data`` form, files saved under safe names, and served back
as downloads. The body is limited by the server's ``max_body_size`` (16 MiB unless set);
a larger upload is answered with 413 before the handler runs. Run with
``kyoukai run examples.recipes.uploads:app`` from the repository root, then::

    curl -F file=@notes.txt http://127.0.0.1:4444/upload
"""

import asyncio
from pathlib import Path

from werkzeug.exceptions import BadRequest
from werkzeug.utils import secure_filename

from kyoukai import Kyoukai
from kyoukai.static import file_response
from kyoukai.util import as_html, as_json

app = Kyoukai("uploads")

FORM = """<!doctype html>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input type="file" name="file" multiple> <button>Upload</button>
</form>
"""


# [storage]
def upload_folder(ctx) -> Path:
    """The ``upload_dir`` key of the app's configuration (a component key in config.yml)."""
    folder = Path(ctx.app.config.get("upload_dir", "uploads"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# [storage-end]


@app.route("/")
async def form(ctx):
    return as_html(FORM)


# [upload]
@app.route("/upload", methods=["POST"])
async def upload(ctx):
    uploads = ctx.request.files.getlist("file")
    if not uploads:
        raise BadRequest("Send the files in a multipart/form-data field called 'file'.")
    folder = upload_folder(ctx)
    saved = []
    for upload in uploads:
        # The client chose the name: "../../etc/passwd" becomes "etc_passwd".
        name = secure_filename(upload.filename or "")
        if not name:
            raise BadRequest(f"{upload.filename!r} is not a usable file name.")
        # Large parts are spooled to a temporary file: copy it without blocking the server.
        await asyncio.to_thread(upload.save, folder / name)
        saved.append({"name": name, "size": (folder / name).stat().st_size})
    return as_json({"saved": saved}, 201)


# [upload-end]


# [download]
@app.route("/uploads/<name>")
async def download(ctx, name: str):
    response = file_response(ctx.request, upload_folder(ctx) / secure_filename(name))
    # Uploaded HTML must not run as a page of this site: make the browser save it instead.
    response.headers["Content-Disposition"] = "attachment"
    return response


# [download-end]
