"""Protocol rules and state kept free of I/O: bytes and values in, decisions out."""
