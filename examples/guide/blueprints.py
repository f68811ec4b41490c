"""Blueprints: route trees with prefixes, inherited hooks and error handlers, host matching."""

from werkzeug.exceptions import Forbidden

from kyoukai import Blueprint, Kyoukai

app = Kyoukai("shop")

# [define]
catalog = Blueprint("catalog", prefix="/catalog")


@catalog.route("/")
async def index(ctx):
    return "All products"


@catalog.route("/<slug>")
async def product(ctx, slug: str):
    back = ctx.url_for("catalog.index")
    return f"Product {slug} (back to {back})"


app.register_blueprint(catalog)
# [define-end]

# [nested]
admin = Blueprint("admin", prefix="/admin")
reports = Blueprint("reports", parent=admin, prefix="/reports")


@reports.route("/sales")
async def sales(ctx):
    return f"Sales report, served by {ctx.route.get_endpoint_name()} under {ctx.bp.computed_prefix}"


app.register_blueprint(admin)
# [nested-end]


# [inherited]
@admin.before_request
async def require_token(ctx):
    # Runs before every route of "admin" and of its children ("reports").
    if ctx.request.headers.get("X-Token") != "let-me-in":
        raise Forbidden()


@admin.errorhandler(403)
async def forbidden(ctx, exc):
    return "Administrators only.", 403


# [inherited-end]

# [hosts]
api = Blueprint("api", host="api.example.com")


@api.route("/status")
async def api_status(ctx):
    return "The API host is up"


app.register_blueprint(api)
# [hosts-end]
