#!/usr/bin/env python3
"""A TCP relay on loopback that counts the bytes flowing each way.

    count-proxy.py LISTEN_PORT UPSTREAM_PORT COUNTS_FILE

Every second (and at exit) it writes "to_upstream from_upstream" to
COUNTS_FILE. Used by tools/bench-transfer.sh to measure bytes on the wire.
"""
import socket
import sys
import threading
import time

listen_port, upstream_port, counts_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
counts = [0, 0]
lock = threading.Lock()


def pump(src, dst, idx):
    try:
        while True:
            data = src.recv(1 << 20)
            if not data:
                break
            dst.sendall(data)
            with lock:
                counts[idx] += len(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def writer():
    while True:
        time.sleep(0.2)
        with lock:
            line = f"{counts[0]} {counts[1]}\n"
        with open(counts_file, "w") as f:
            f.write(line)


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen_port))
srv.listen(64)
threading.Thread(target=writer, daemon=True).start()
while True:
    c, _ = srv.accept()
    u = socket.create_connection(("127.0.0.1", upstream_port))
    threading.Thread(target=pump, args=(c, u, 0), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, 1), daemon=True).start()
