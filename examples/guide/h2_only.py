"""
An HTTP/2-only port added from code, as Kyoukai 2.x documented it: a container component
adding an H2KyoukaiComponent. Run it with ``python h2_only.py`` from this folder, then
``curl --http2-prior-knowledge http://127.0.0.1:4445/``.
"""

from asphalt.core import ContainerComponent, Context, run_application

from kyoukai import Kyoukai
from kyoukai.backends.http2 import H2KyoukaiComponent

app = Kyoukai("h2only")


@app.route("/")
async def index(ctx):
    return f"Hello over {ctx.environ['SERVER_PROTOCOL']}\n"


# [component]
class AppComponent(ContainerComponent):
    async def start(self, ctx: Context) -> None:
        # Without ssl_keyfile/ssl_certfile: cleartext HTTP/2 with prior knowledge (behind a
        # proxy); with them: TLS with ALPN h2.
        self.add_component("kyoukai", H2KyoukaiComponent, app=app, ip="127.0.0.1", port=4445)
        await super().start(ctx)


# [component-end]

if __name__ == "__main__":
    run_application(AppComponent())
