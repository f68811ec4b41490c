"""Route groups: a class whose methods are the routes, hooks and error handlers of a blueprint."""

from werkzeug.exceptions import NotFound

from kyoukai import Kyoukai, RouteGroup, routegroup

app = Kyoukai("counters")


# [group]
class Counters(RouteGroup, prefix="/counters"):
    """Named counters; each instance keeps its own."""

    def __init__(self, start: int = 0) -> None:
        self.start = start
        self.counts: dict[str, int] = {}
        self.requests = 0

    @routegroup.before_request
    async def count_requests(self, ctx):
        self.requests += 1

    @routegroup.route("/<name>")
    async def get(self, ctx, name: str):
        if name not in self.counts:
            raise NotFound()
        return str(self.counts[name])

    @routegroup.route("/<name>", methods=["POST"])
    async def increment(self, ctx, name: str):
        self.counts[name] = self.counts.get(name, self.start) + 1
        return str(self.counts[name])

    @routegroup.errorhandler(404)
    async def no_counter(self, ctx, exc):
        return "No such counter; POST to create it.", 404


counters = Counters(start=10)
app.add_route_group(counters)
# [group-end]
