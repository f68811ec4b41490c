# gunicorn settings for prometheus_app.py, its Prometheus metrics summed over the workers.
# PROMETHEUS_MULTIPROC_DIR names a directory for this gunicorn alone (made if missing, emptied
# at start); run from this folder with
#   PROMETHEUS_MULTIPROC_DIR=/run/kyoukai-metrics gunicorn -c gunicorn_prometheus.conf.py prometheus_app:app
import os

from prometheus_client import multiprocess

worker_class = "kyoukai.backends.gunicorn.KyoukaiWorker"
workers = 2
bind = ["127.0.0.1:8000"]
http_protocols = "h1,h2"
http2_cleartext = "both"
graceful_timeout = 30
forwarded_allow_ips = "127.0.0.1,::1"

metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if not metrics_dir:
    raise RuntimeError("set PROMETHEUS_MULTIPROC_DIR to a directory for this gunicorn's metrics alone")


def on_starting(server):
    # The values of an earlier run would be added to this one's.
    os.makedirs(metrics_dir, exist_ok=True)
    for entry in os.scandir(metrics_dir):
        if entry.name.endswith(".db"):
            os.remove(entry.path)


def child_exit(server, worker):
    # What a dead worker counted still counts; its share of the gauges (open connections) ends.
    multiprocess.mark_process_dead(worker.pid)
