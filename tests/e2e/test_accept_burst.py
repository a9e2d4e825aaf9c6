"""A burst of connections on a capturing listener (issue 9, section 4).

3,000 clients connect at once (socktap is stopped while they do, so the whole burst waits in its
backlog) to a listener that captures both sides: two trace files per connection, each an open(2)
(on the worker then; on the writer thread since issue 14), made as slow as measured on ext4
(0.7 ms) by an LD_PRELOAD shim. Before the fix the worker accepted the whole backlog
in one callback and armed each upstream connect timer from libevent's cached time, a second or
more stale by then: with connect_timeout 1 s most connections died as
upstream_cx_connect_timeout. Every connection must now be served and every byte echoed.
"""
import errno
import os
import resource
import selectors
import signal
import socket
import sys
import time

import harness
from harness import E2ETest, free_port, proxy_config
from test_faults import wait_until

N = 3000

ECHO_SERVER = r"""
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def echo(r, w):
    while True:
        b = await r.read(65536)
        if not b:
            break
        w.write(b)
        await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(echo, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""


def raise_nofile(need):
    """Soft descriptor limit up to the hard one (and the hard one too when we may)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def capture_ts(prefix, indent):
    pad = " " * indent
    return ("%stransport_socket:\n%s  name: envoy.transport_sockets.capture\n%s  config:\n"
            "%s    file_sink: {path_prefix: \"%s\", format: PROTO_BINARY}\n"
            "%s    transport_socket: {name: raw_buffer}\n" % (pad, pad, pad, pad, prefix, pad))


def burst(port, n, pid, timeout=300):
    """N connections at once: with socktap (PID) stopped, N clients connect (the kernel completes
    the handshakes into the listen backlog), each sends a distinct payload and half-closes; then
    socktap continues and finds the whole burst waiting. Returns the payloads and the replies
    read to their end, by connection index."""
    sel = selectors.DefaultSelector()
    payloads, replies, socks = {}, {}, {}
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(n):
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            assert err in (0, errno.EINPROGRESS), os.strerror(err)
            socks[i] = s
            payloads[i] = (b"connection %05d " % i) * 8
            replies[i] = bytearray()
            sel.register(s, selectors.EVENT_WRITE, i)
        unsent = set(range(n))
        deadline = time.time() + timeout  # a guard against a hang only, not a pass criterion
        while unsent and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                i, s = key.data, key.fileobj
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert err == 0, "connect %d: %s" % (i, os.strerror(err))
                s.sendall(payloads[i])  # small: fits the socket buffer at once
                s.shutdown(socket.SHUT_WR)
                sel.modify(s, selectors.EVENT_READ, i)
                unsent.discard(i)
        assert not unsent, "%d connections never completed" % len(unsent)
    finally:
        os.kill(pid, signal.SIGCONT)
    pending = set(range(n))
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            i, s = key.data, key.fileobj
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                b = b""
            if b:
                replies[i].extend(b)
            else:
                sel.unregister(s)
                pending.discard(i)
    for s in socks.values():
        s.close()
    sel.close()
    return payloads, replies


class AcceptBurstTest(E2ETest):
    def test_burst_with_capture_all_served(self):
        limit = raise_nofile(4 * N + 1000)
        if limit < 2 * N + 200:
            self.skipTest("descriptor hard limit %d is too low for %d connections" % (limit, N))
        up_port = free_port()
        up = self.procs.start([sys.executable, "-c", ECHO_SERVER, str(up_port)])
        harness.wait_port(up_port, proc=up)
        port, admin = free_port(), free_port()
        cfg = proxy_config(port, up_port, admin,
                           listener_ts=capture_ts(os.path.join(self.tmp, "down"), 6),
                           cluster_ts=capture_ts(os.path.join(self.tmp, "up"), 4))
        # one worker: the whole burst lands on one event loop; trace files take as long to create
        # as on an ext4 disk (slow_open.c), whatever this machine's disk
        shim = harness.tool("libslowopen.so")
        self.assertTrue(os.path.exists(shim), shim)
        env = {"LD_PRELOAD": shim, "SLOW_OPEN_PREFIX": self.tmp, "SLOW_OPEN_US": "700",
               "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0"}
        st = self.socktap(cfg, admin_port=admin, args=("--concurrency", "1"), env=env)
        t0 = time.time()
        payloads, replies = burst(port, N, st.pid)
        print("burst of %d: %.1f s" % (N, time.time() - t0))
        bad = [i for i in range(N) if bytes(replies[i]) != payloads[i]]
        stats = st.stats()
        self.assertEqual(stats.get("cluster.backend.upstream_cx_connect_timeout"), 0)
        self.assertEqual(bad, [], "%d of %d connections not echoed (first: %s)" % (
            len(bad), N, bad[:5]))
        lname = "listener.127.0.0.1_%d." % port
        wait_until(lambda: st.stats()[lname + "downstream_cx_destroy"] == N, timeout=60,
                   what="%d closed connections" % N)
        stats = st.stats()
        self.assertEqual(stats[lname + "downstream_cx_total"], N)
        self.assertEqual(stats["cluster.backend.upstream_cx_connect_fail"], 0)
        self.assertEqual(stats["cluster.backend.upstream_cx_rx_bytes_total"],
                         sum(len(p) for p in payloads.values()))
        # the writer thread creates the files, behind the traffic; a stop writes everything out
        self.assertEqual(st.stop(), 0)
        files = os.listdir(self.tmp)
        self.assertEqual(len([f for f in files if f.startswith("down_")]), N)
        self.assertEqual(len([f for f in files if f.startswith("up_")]), N)


if __name__ == "__main__":
    harness.main()
