"""A second process for the ZeroMQ tests: echoes every INFER's tensors back through torch.

``python -m tests.helpers.zmq_echo`` binds a ROUTER on a random loopback port, prints the endpoint
on one line, and serves until SHUTDOWN.
"""

from __future__ import annotations

import sys

import torch
import zmq

from framestream.wire import Op, ProtocolError, decode, encode


def main() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"tcp://127.0.0.1:{port}", flush=True)
    while True:
        if not sock.poll(60_000):  # nobody talked for a minute: the test is gone
            break
        ident, *frames = sock.recv_multipart(copy=False)
        try:
            msg = decode(frames)
        except ProtocolError as exc:
            sock.send_multipart([ident, *encode_error(exc)], copy=False)
            continue
        if msg.op is Op.SHUTDOWN:
            sock.send_multipart([ident, *encode(msg.reply(Op.ACK))], copy=False)
            break
        # Through torch and back, as a rank's model input and output would go.
        echoed = [torch.from_numpy(t.copy()).numpy() for t in msg.tensors]
        sock.send_multipart([ident, *encode(msg.reply(Op.RESULT, echoed))], copy=False)
    sock.close(0)
    ctx.term()


def encode_error(exc: ProtocolError) -> list[object]:
    from framestream.wire import Message

    return encode(Message(Op.ERROR, 0, meta={"code": exc.code, "detail": exc.detail}))


if __name__ == "__main__":
    sys.exit(main())
