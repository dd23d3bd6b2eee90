#!/usr/bin/env python3
"""Creates one tenant and N keys on a running keyward, writing the secrets to
a file (one per line). Test data for load runs; the file lives in a temp dir.

usage: mint_keys.py BASE_URL ROOT_KEY N OUT_FILE [SCOPE ...]

Prints the new tenant's id on stdout.
"""
import http.client
import json
import sys
import threading
from urllib.parse import urlparse

base, root, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
scopes = sys.argv[5:]
u = urlparse(base)
headers = {"Authorization": f"Bearer {root}", "Content-Type": "application/json"}


def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 201:
        raise SystemExit(f"{path} answered {r.status}: {data[:200]!r}")
    return json.loads(data)


conn = http.client.HTTPConnection(u.hostname, u.port)
tenant = post(conn, "/v1/tenants", {"name": "load"})["id"]
secrets = [None] * n


def worker(start, step):
    c = http.client.HTTPConnection(u.hostname, u.port)
    for i in range(start, n, step):
        secrets[i] = post(c, "/v1/keys", {"tenant_id": tenant, "name": f"k{i}", "environment": "test", "scopes": scopes})["secret"]


threads = [threading.Thread(target=worker, args=(i, 4)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(out, "w") as f:
    f.write("\n".join(secrets) + "\n")
print(tenant)
