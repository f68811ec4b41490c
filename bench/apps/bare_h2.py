"""
The ceiling for any server built on h2 in one process: a bare asyncio protocol around h2 that
answers every request with a fixed 14-byte body, no framework. Usage: python bare_h2.py PORT
"""

import asyncio
import sys

import h2.config
import h2.connection
import h2.events

BODY = b"Hello, world!\n"
HEADERS = [(":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(BODY)))]


class BareH2(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                conn.send_headers(event.stream_id, HEADERS)
                conn.send_data(event.stream_id, BODY, end_stream=True)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.transport.close()
        out = conn.data_to_send()
        if out:
            self.transport.write(out)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(BareH2, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
