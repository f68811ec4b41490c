"""
An app whose traffic counters Prometheus scrapes at ``/metrics`` (``pip install
'Kyoukai[prometheus]'``). Under gunicorn with gunicorn_prometheus.conf.py, each scrape gives the
sum over the workers, whichever worker answers it.
"""

from kyoukai import Kyoukai
from kyoukai.metrics_prometheus import metrics_route

app = Kyoukai("prometheus_demo")


@app.route("/")
async def index(ctx):
    return "Hello from Kyoukai.\n"


metrics_route(app, "/metrics")
