"""The HTTP/1.1 server core on httptools, without I/O: bytes and a clock in, events and bytes out."""
