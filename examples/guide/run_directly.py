"""Serving without a config file: ``app.run()`` starts asphalt's runner with a KyoukaiComponent."""

import os

from kyoukai import Kyoukai

app = Kyoukai("direct")


@app.route("/")
async def index(ctx):
    return "Served by app.run()\n"


if __name__ == "__main__":
    # Ctrl+C (or SIGTERM) stops it gracefully.
    app.run("127.0.0.1", int(os.environ.get("PORT", "4444")))
