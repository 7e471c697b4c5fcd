"""Scrapes mcqd's --metrics endpoint with a real HTTP client (urllib) and
parses it with the Prometheus client library's own parser. Prints one JSON
object per sample, then the status of a request for another path.
Usage: python3 metrics.py HOST:PORT"""
import json
import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

base = "http://" + sys.argv[1]
with urllib.request.urlopen(base + "/metrics", timeout=60) as reply:
    assert reply.status == 200, reply.status
    content_type = reply.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    text = reply.read().decode("utf-8")
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        print(json.dumps({
            "family": family.name,
            "type": family.type,
            "name": sample.name,
            "labels": sample.labels,
            "value": sample.value,
        }, sort_keys=True))
try:
    urllib.request.urlopen(base + "/nothing-here", timeout=60)
    print(json.dumps({"status": 200}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code}))
