"""Server backends: ``httptools_`` (HTTP/1.1, and the way into HTTP/2) and ``http2``."""
