"""
A JSON API: blueprints with prefixes, JSON request bodies, and error handlers that answer in
JSON. Run from this folder with ``asphalt run config.yml``, then::

    curl -X POST -H 'Content-Type: application/json' -d '{"text": "milk"}' http://127.0.0.1:4444/api/notes/
    curl http://127.0.0.1:4444/api/notes/1
"""

import itertools

from werkzeug.exceptions import BadRequest, NotFound

from kyoukai import Blueprint, Kyoukai
from kyoukai.util import as_json

app = Kyoukai("json_api")

# /api/ and everything under it; the "notes" blueprint nests inside it, at /api/notes/.
api = Blueprint("api", prefix="/api")
notes = Blueprint("notes", parent=api, prefix="/notes")
app.register_blueprint(api)

# An in-memory store keeps the example self-contained.
NOTES: dict[int, dict] = {}
_next_id = itertools.count(1)


@api.route("/")
async def index(ctx):
    return as_json({"notes": ctx.url_for("notes.list_notes")})


@notes.route("/")
async def list_notes(ctx):
    return as_json([NOTES[key] for key in sorted(NOTES)])


@notes.route("/", methods=["POST"])
async def create_note(ctx):
    data = ctx.request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise BadRequest('A note is a JSON object with a string "text".')
    note = {"id": next(_next_id), "text": data["text"]}
    NOTES[note["id"]] = note
    location = ctx.url_for("notes.get_note", note_id=note["id"])
    return as_json(note, 201, {"Location": location})


@notes.route("/<int:note_id>")
async def get_note(ctx, note_id: int):
    if note_id not in NOTES:
        raise NotFound(f"There is no note {note_id}.")
    return as_json(NOTES[note_id])


@notes.route("/<int:note_id>", methods=["DELETE"])
async def delete_note(ctx, note_id: int):
    if NOTES.pop(note_id, None) is None:
        raise NotFound(f"There is no note {note_id}.")
    return None  # 204 No Content


@notes.route("/crash")
async def crash(ctx):
    raise RuntimeError("a bug in a handler")


# Every error under /api (4xx and 5xx) answers in JSON; the rest of the site keeps the
# default HTML error pages.
@api.errorhandler(400, 600)
async def json_error(ctx, exc):
    body = {"status": exc.code, "error": exc.name, "detail": exc.description}
    return as_json(body, exc.code)
