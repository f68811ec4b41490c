"""The HTTP/2 server core on h2, without I/O: bytes and a clock in, events and bytes out."""
