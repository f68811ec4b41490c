"""
The request context and asphalt resources: a container component publishes a resource, the
handlers find it through their context, and connection signals are counted.

Run it with ``python resources.py`` from this folder (http://127.0.0.1:4444/greet/you).
"""

from asphalt.core import ContainerComponent, Context, run_application

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.util import as_json

app = Kyoukai("resources")


# [resource]
class Greeter:
    """A resource: anything the handlers need that lives as long as the application."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}!"


class Stats:
    """Connections seen, counted from the Kyoukai component's signals."""

    def __init__(self) -> None:
        self.open = 0
        self.total = 0


class AppComponent(ContainerComponent):
    """The root component: publishes the resources, then starts the web server."""

    def __init__(self, components: dict | None = None, greeting: str = "Hello") -> None:
        super().__init__(components)
        self.greeting = greeting

    async def start(self, ctx: Context) -> None:
        ctx.add_resource(Greeter(self.greeting))
        stats = Stats()
        ctx.add_resource(stats)
        # Config under components: web: in a config file overrides these arguments.
        self.add_component("web", KyoukaiComponent, app=app, ip="127.0.0.1", port=4444)
        web = self.child_components["web"]
        web.connection_made.connect(lambda event: setattr(stats, "open", stats.open + 1))
        web.connection_made.connect(lambda event: setattr(stats, "total", stats.total + 1))
        web.connection_lost.connect(lambda event: setattr(stats, "open", stats.open - 1))
        await super().start(ctx)


@app.route("/greet/<name>")
async def greet(ctx, name: str):
    # The request context's parent is the component's context: its resources are found here.
    greeter = ctx.require_resource(Greeter)
    return greeter.greet(name)


@app.route("/stats")
async def stats(ctx):
    stats = ctx.require_resource(Stats)
    return as_json({"open": stats.open, "total": stats.total})


# [resource-end]


# [context]
@app.route("/inspect/<int:number>")
async def inspect(ctx, number: int):
    return as_json(
        {
            "endpoint": ctx.route.get_endpoint_name(),
            "blueprint": ctx.bp.name,
            "rule": ctx.rule.rule,
            "params": ctx.params,
            "method": ctx.request.method,
            "protocol": ctx.environ["SERVER_PROTOCOL"],
            "scheme": ctx.environ["wsgi.url_scheme"],
            "client": ctx.request.remote_addr,
            "url": ctx.url_for("resources.inspect", number=number + 1),
        }
    )


# [context-end]

if __name__ == "__main__":
    run_application(AppComponent(greeting="Welcome"))
