"""
An app meant to run behind a reverse proxy (nginx.conf, haproxy.cfg) or under gunicorn
(gunicorn.conf.py). config.yml trusts the proxy on 127.0.0.1 (``forwarded_allow_ips``), so
``remote_addr`` and ``scheme`` are the client's; ``/metrics`` exports the traffic counters.
"""

import os

from kyoukai import Kyoukai
from kyoukai.util import as_json

app = Kyoukai("deploy")


@app.route("/")
async def index(ctx):
    return f"Hello {ctx.request.remote_addr}, you came over {ctx.request.scheme}.\n"


# [metrics]
@app.route("/metrics")
async def metrics(ctx):
    """The counters of the component serving this process (each gunicorn worker has its own)."""
    return as_json({"pid": os.getpid(), **ctx.app.component.metrics.snapshot()})


# [metrics-end]
