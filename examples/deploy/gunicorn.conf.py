# gunicorn settings for the app in this folder, run from here with
#   gunicorn -c gunicorn.conf.py app:app
# (or with config.yml instead of app:app to start the asphalt components of that file).
worker_class = "kyoukai.backends.gunicorn.KyoukaiWorker"
workers = 2  # one per CPU core
bind = ["127.0.0.1:8000"]
# HTTP/2: ALPN with certfile/keyfile; on cleartext, prior knowledge and Upgrade: h2c.
http_protocols = "h1,h2"
# certfile = "/etc/letsencrypt/live/example.com/fullchain.pem"
# keyfile = "/etc/letsencrypt/live/example.com/privkey.pem"
# TERM, HUP and max_requests let requests in progress finish within this many seconds.
graceful_timeout = 30
# A worker whose event loop is blocked this long is killed and replaced.
timeout = 30
max_requests = 100000
max_requests_jitter = 10000
# The proxies whose X-Forwarded-* / Forwarded headers are believed (Kyoukai trusts none by default).
forwarded_allow_ips = "127.0.0.1,::1"
# Kyoukai's access log (kyoukai.access, Common Log Format) to stdout.
accesslog = "-"
# KyoukaiWorker serves cleartext HTTP/2 (prior knowledge and h2c upgrade) whenever h2 is in
# http_protocols; saying so here silences gunicorn's warning that it would not.
http2_cleartext = "both"
