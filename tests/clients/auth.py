"""memcached's ASCII authentication through pymemcache: the first request
of a connection is a `set` whose value is "user password".
Usage: python3 auth.py PORT USER PASSWORD"""
import sys

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]

# A wrong password: CLIENT_ERROR, which pymemcache raises.
c = Client(("127.0.0.1", port), default_noreply=False)
try:
    c.set("auth", f"{user} wrong-{password}")
    raise SystemExit("a wrong password was accepted")
except MemcacheClientError as e:
    assert b"authentication failure" in str(e).encode(), e
c.close()

# Before authenticating: refused.
c = Client(("127.0.0.1", port), default_noreply=False)
try:
    c.get("pyauth")
    raise SystemExit("a get before authenticating was served")
except MemcacheClientError as e:
    assert "unauthenticated" in str(e), e
c.close()

# The handshake, then an ordinary session on the same connection.
c = Client(("127.0.0.1", port), default_noreply=False)
assert c.set("auth", f"{user} {password}") is True
assert c.set("pyauth", b"hello") is True
assert c.set("pyauth", b"world") is True
assert c.stats("queue")[b"pyauth"] == b"2/0"
assert c.get("pyauth") == b"hello"
assert c.get("pyauth") == b"world"
assert c.get("pyauth") is None
print("session ok")
