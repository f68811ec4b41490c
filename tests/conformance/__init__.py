"""Our conformance suite for RFC 9113 (HTTP/2) and RFC 7541 (HPACK), in the spirit of h2spec."""
