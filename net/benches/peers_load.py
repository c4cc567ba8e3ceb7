"""Load and failover probes for net/benches/peers.sh: NATS JetStream (nats-py) and etcd (its
JSON gateway over plain HTTP/1.1, no client library). The same shapes as ringchat's benches:
N clients each keeping one write outstanding (throughput, p50/p99 write-to-ack), and the time
from kill -9 of the leader to the first acknowledged write through a survivor (a probe every
5 ms, each with its own 1 s timeout).

  python3 peers_load.py nats-load    URLS CLIENTS SECS PROCS
  python3 peers_load.py nats-leader  URLS            (prints the stream leader's server name)
  python3 peers_load.py nats-probe   URLS            (reads "go" on stdin after the kill)
  python3 peers_load.py etcd-load    URLS CLIENTS SECS PROCS
  python3 peers_load.py etcd-leader  URLS            (prints the leader's client URL)
  python3 peers_load.py etcd-probe   URLS

URLS is comma-separated. Prints one JSON line. Traffic goes only to the URLs given (loopback).
"""
import asyncio
import base64
import json
import multiprocessing as mp
import sys
import time

STREAM = "CHAT"


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, max(0, int(round((len(sorted_vals) - 1) * p))))
    return sorted_vals[i]


# ---- etcd over the JSON gateway -------------------------------------------------------------


class Http:
    def __init__(self, url):
        host, port = url.replace("http://", "").split(":")
        self.host, self.port = host, int(port)
        self.r = self.w = None

    async def open(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)

    async def post(self, path, obj):
        body = json.dumps(obj).encode()
        self.w.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), len(body), body)
        )
        head = await self.r.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdr = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        if "content-length" in hdr:
            data = await self.r.readexactly(int(hdr["content-length"]))
        else:  # chunked
            data = b""
            while True:
                n = int((await self.r.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.r.readexactly(n + 2)
                if n == 0:
                    break
                data += chunk[:-2]
        if status != 200:
            raise RuntimeError("HTTP %d: %s" % (status, data[:200]))
        return json.loads(data or b"{}")

    def close(self):
        if self.w:
            self.w.close()


def b64(s):
    return base64.b64encode(s.encode()).decode()


async def etcd_put(conn, key, val):
    await conn.post("/v3/kv/put", {"key": b64(key), "value": b64(val)})


# ---- load (both systems) ----------------------------------------------------------------------


async def load_part(kind, urls, clients, first, secs, start_at):
    lats, errors = [], 0
    end_at = start_at + secs
    if kind == "nats":
        import nats

        ncs = []
        for i in range(clients):
            nc = await nats.connect(servers=[urls[(first + i) % len(urls)]])
            ncs.append(nc)

        async def one(i):
            nonlocal errors
            js = ncs[i].jetstream()
            n = 0
            while time.time() < end_at:
                n += 1
                t0 = time.time()
                try:
                    await js.publish("chat.u%d" % (first + i), b"load %d" % n, timeout=5)
                except Exception:
                    errors += 1
                    continue
                if t0 >= start_at:
                    lats.append(time.time() - t0)

    else:
        conns = []
        for i in range(clients):
            c = Http(urls[(first + i) % len(urls)])
            await c.open()
            conns.append(c)

        async def one(i):
            nonlocal errors
            n = 0
            while time.time() < end_at:
                n += 1
                t0 = time.time()
                try:
                    await etcd_put(conns[i], "chat/u%d" % (first + i), "load %d" % n)
                except Exception:
                    errors += 1
                    await asyncio.sleep(0.01)
                    continue
                if t0 >= start_at:
                    lats.append(time.time() - t0)

    await asyncio.gather(*(one(i) for i in range(clients)))
    return lats, errors


def load_proc(kind, urls, clients, first, secs, start_at, q):
    q.put(asyncio.run(load_part(kind, urls, clients, first, secs, start_at)))


def load(kind, urls, clients, secs, procs):
    procs = max(1, min(procs, clients))
    start_at = time.time() + 2.0  # connect, then a warm-up
    q = mp.Queue()
    per = [clients // procs + (1 if p < clients % procs else 0) for p in range(procs)]
    ps, first = [], 0
    for p in range(procs):
        ps.append(mp.Process(target=load_proc, args=(kind, urls, per[p], first, secs, start_at, q)))
        first += per[p]
    for p in ps:
        p.start()
    lats, errors = [], 0
    for _ in ps:
        l, e = q.get()
        lats += l
        errors += e
    for p in ps:
        p.join()
    lats.sort()
    print(json.dumps({
        "system": kind, "clients": clients, "secs": secs, "procs": procs,
        "msgs_s": round(len(lats) / secs), "p50_ms": round(pct(lats, 0.5) * 1e3, 2),
        "p99_ms": round(pct(lats, 0.99) * 1e3, 2), "errors": errors,
    }))


# ---- leader and failover probe -------------------------------------------------------------------


async def nats_setup_leader(urls):
    import nats

    nc = await nats.connect(servers=urls)
    js = nc.jetstream()
    try:
        await js.stream_info(STREAM)
    except Exception:
        await js.add_stream(name=STREAM, subjects=["chat.>"], num_replicas=3, storage="file")
    for _ in range(200):
        info = await js.stream_info(STREAM)
        if info.cluster and info.cluster.leader:
            print(info.cluster.leader)
            break
        await asyncio.sleep(0.05)
    await nc.close()


async def etcd_leader(urls):
    for u in urls:
        c = Http(u)
        try:
            await c.open()
            st = await c.post("/v3/maintenance/status", {})
            if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                print(u)
                return
        except Exception:
            pass
        finally:
            c.close()


async def probe(kind, urls):
    """Waits for "go" on stdin (sent right after the kill), then a write every 5 ms through the
    survivors, each with its own 1 s timeout; prints the ms from "go" to the first acknowledged."""
    if kind == "nats":
        import nats

        nc = await nats.connect(servers=urls, reconnect_time_wait=0.05)
        js = nc.jetstream()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    t0 = time.time()
    done = asyncio.get_running_loop().create_future()

    async def one(k):
        try:
            if kind == "nats":
                await js.publish("chat.probe", b"probe %d" % k, timeout=1)
            else:
                c = Http(urls[k % len(urls)])
                await asyncio.wait_for(c.open(), 1)
                try:
                    await asyncio.wait_for(etcd_put(c, "chat/probe", "probe %d" % k), 1)
                finally:
                    c.close()
            if not done.done():
                done.set_result(time.time() - t0)
        except Exception:
            pass

    tasks, k = [], 0
    while not done.done() and time.time() - t0 < 30:
        k += 1
        tasks.append(asyncio.ensure_future(one(k)))
        await asyncio.sleep(0.005)
    ms = round(done.result() * 1e3, 1) if done.done() else None
    print(json.dumps({"system": kind, "first_ack_ms": ms, "probes": k}))
    for t in tasks:
        t.cancel()
    if kind == "nats":
        try:
            await asyncio.wait_for(nc.close(), 2)
        except Exception:
            pass


def main():
    cmd, urls = sys.argv[1], sys.argv[2].split(",")
    kind = cmd.split("-")[0]
    if cmd.endswith("-load"):
        load(kind, urls, int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "nats-leader":
        asyncio.run(nats_setup_leader(urls))
    elif cmd == "etcd-leader":
        asyncio.run(etcd_leader(urls))
    elif cmd.endswith("-probe"):
        asyncio.run(probe(kind, urls))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
