"""The MemcacheQ session through pymemcache. Usage: python3 session.py PORT"""
import sys
import time

from pymemcache.client.base import Client

port = int(sys.argv[1])

# pymemcache sends `noreply` by default; check both ways.
for noreply in (True, False):
    c = Client(("127.0.0.1", port), default_noreply=noreply)
    q = "pyq-noreply" if noreply else "pyq"
    assert c.set(q, b"hello") is True
    assert c.set(q, b"world") is True
    stats = c.stats("queue")
    assert stats[q.encode()] == b"2/0", stats
    assert c.get(q) == b"hello"
    assert c.stats("queue")[q.encode()] == b"2/1"
    assert c.get(q) == b"world"
    assert c.get(q) is None
    body = b"\x00\r\nEND\r\n\xff" * 100
    c.set(q, body, noreply=False)
    assert c.get(q) == body
    # get_many pops one message from each named queue.
    c.set(q + "a", b"1", noreply=False)
    c.set(q + "b", b"2", noreply=False)
    assert c.get_many([q + "a", q + "b", q + "missing"]) == {q + "a": b"1", q + "b": b"2"}
    assert c.delete(q, noreply=False) is True
    assert c.delete(q, noreply=False) is False
    # Kestrel-style blocking get: the key carries the option, and the
    # reply echoes the key, so pymemcache matches it.
    assert c.get(q + "w/t=50") is None
    c.set(q + "w", b"later", noreply=False)
    assert c.get(q + "w/t=5000") == b"later"
    # Kestrel-style reliable reads: open, abort (back at the head), open
    # again, confirm and open the next in one request, confirm.
    r = q + "r"
    for body in (b"first", b"second"):
        c.set(r, body, noreply=False)
    assert c.get(r + "/open") == b"first"
    assert c.get(r + "/peek") == b"second"
    assert c.get(r + "/abort") is None
    assert c.get(r + "/open") == b"first"
    assert c.get(r + "/close/open") == b"second"
    assert c.stats("queue")[r.encode()] == b"2/1"
    assert c.get(r + "/close") is None
    assert c.stats("queue")[r.encode()] == b"2/2"
    # Kestrel's flush is not in pymemcache; memcached's flush_all is, and
    # empties every queue (counters stay).
    c.set(r, b"doomed", noreply=False)
    assert c.flush_all(noreply=False) is True
    assert c.get(r) is None
    assert c.stats("queue")[r.encode()] == b"3/3"
    # exptime: a message past its deadline is never handed out.
    e = q + "e"
    c.set(e, b"brief", expire=1, noreply=False)
    c.set(e, b"lasting", expire=3600, noreply=False)
    time.sleep(2.1)
    assert c.get(e) == b"lasting"
    assert c.get(e) is None
    # Fan-out: the child exists from its first get, then gets every copy.
    f = q + "f"
    assert c.get(f + "+audit") is None
    c.set(f, b"copied", noreply=False)
    assert c.get(f) == b"copied"
    assert c.get(f + "+audit") == b"copied"
    version = c.version()
    assert version, version
    c.close()
print("pymemcache session ok")
