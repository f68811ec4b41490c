"""
The ceiling for any server built on h2 in one process: a bare asyncio protocol around h2 that
answers every request with a fixed 14-byte body, no framework. Cleartext HTTP/2 (prior
knowledge), or TLS with ALPN ``h2`` when given a certificate and key. It prints the address it
serves once it listens (``PORT`` 0 picks a free port).

    python bare_h2.py PORT [--certfile FILE --keyfile FILE]
"""

import argparse
import asyncio
import ssl

import h2.config
import h2.connection
import h2.events
import h2.exceptions

BODY = b"Hello, world!\n"
HEADERS = [(":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(BODY)))]
#: TLS 1.2 cipher suites RFC 9113 section 9.2.2 allows (as Kyoukai's servers configure them).
HTTP2_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


class BareH2(asyncio.Protocol):
    """One connection: every request gets the fixed answer, sent from the read that brought it."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.conn.initiate_connection()
        #: Streams whose body waits for the client to open a flow-control window.
        self.blocked: list[int] = []
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # A frame h2 rejects, such as any but GOAWAY after the client's GOAWAY: h2 queued
            # its GOAWAY (the events of this read are dropped with the connection).
            self.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                try:
                    conn.send_headers(event.stream_id, HEADERS)
                    conn.send_data(event.stream_id, BODY, end_stream=True)
                except h2.exceptions.FlowControlError:
                    self.blocked.append(event.stream_id)
                except h2.exceptions.ProtocolError:
                    # The stream is gone (reset by the client later in this read), or the
                    # connection is (the client's GOAWAY later in this read: h2 sends nothing
                    # more, and its event below closes the connection). Nothing to answer.
                    pass
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.close()
                return
        if self.blocked:
            self.send_blocked()
        out = conn.data_to_send()
        if out:
            self.transport.write(out)

    def send_blocked(self) -> None:
        """Send the bodies that wait for a window, those the windows now allow."""
        waiting = []
        for stream_id in self.blocked:
            try:
                self.conn.send_data(stream_id, BODY, end_stream=True)
            except h2.exceptions.FlowControlError:
                waiting.append(stream_id)
            except h2.exceptions.ProtocolError:
                pass  # reset by the client meanwhile
        self.blocked = waiting

    def close(self) -> None:
        """Write what h2 queued (its GOAWAY, if any), then close the connection."""
        out = self.conn.data_to_send()
        if out:
            self.transport.write(out)
        self.transport.close()


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """TLS 1.2 or newer, RFC 9113 ciphers, no compression or renegotiation, ALPN ``h2`` only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(HTTP2_TLS12_CIPHERS)
    context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    context.set_alpn_protocols(["h2"])
    return context


async def main(port: int, context: ssl.SSLContext | None = None) -> None:
    """Serve on 127.0.0.1:``port`` (over TLS with ``context``) until stopped."""
    # The backlog Kyoukai listens with: 500 clients connecting at once are not left to SYN retries.
    server = await asyncio.get_running_loop().create_server(BareH2, "127.0.0.1", port, ssl=context, backlog=1024)
    host, bound = server.sockets[0].getsockname()[:2]
    print(f"serving {'https' if context else 'http'}://{host}:{bound}/", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int, help="the port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--certfile", help="the certificate chain (PEM): serve TLS with ALPN h2")
    parser.add_argument("--keyfile", help="the certificate's private key (PEM)")
    args = parser.parse_args()
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together: give both for TLS, or neither for cleartext")
    asyncio.run(main(args.port, server_context(args.certfile, args.keyfile) if args.certfile else None))
