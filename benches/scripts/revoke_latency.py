#!/usr/bin/env python3
"""Revocation propagation: time from the start of a token-revoke API call until the
proxy answers 401 to that token, N times, against a running `gatehouse up --demo`
(gateway URL from $GATEHOUSE_GATEWAY, default http://127.0.0.1:18080).

Usage (release binaries, fresh data dir):
  export GATEHOUSE_CLI_CONFIG=$(mktemp -d)/cli.json
  target/release/gatehouse up --demo --data-dir $(mktemp -d) --api-listen 127.0.0.1:17070 \
      --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090 &
  python3 benches/scripts/revoke_latency.py 100

It reads the API URL and the admin login from the CLI config `gatehouse up` writes.
The benchmark issue's scenario 5 should fold this into gatehouse-bench.
"""
import json, os, sys, time, urllib.request, statistics
GATEWAY = os.environ.get("GATEHOUSE_GATEWAY", "http://127.0.0.1:18080") + "/ws/demo"
cfg=json.load(open(os.environ["GATEHOUSE_CLI_CONFIG"]))
api=cfg["api"]; jwt=cfg["token"]
def call(url, data, headers):
    req=urllib.request.Request(url, data=json.dumps(data).encode(), headers=headers)
    try:
        r=urllib.request.urlopen(req); return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
auth={"Authorization":"Bearer "+jwt,"Content-Type":"application/json"}
lat=[]
for i in range(int(sys.argv[1])):
    _, body = call(api+"/v1/workspaces/demo/tokens", {"name": f"t{i}"}, auth)
    tok=json.loads(body)["secret"]
    h={"Authorization":"Bearer "+tok,"Accept":"application/json, text/event-stream","Content-Type":"application/json"}
    ping={"jsonrpc":"2.0","id":1,"method":"ping"}
    # wait until the proxy knows the new token (400 = authenticated, no session)
    while call(GATEWAY, ping, h)[0]==401: pass
    t0=time.monotonic()
    call(api+"/v1/workspaces/demo/tokens/revoke", {"name": f"t{i}"}, auth)
    while call(GATEWAY, ping, h)[0]!=401: pass
    lat.append(1000*(time.monotonic()-t0))
lat.sort()
print(f"n={len(lat)} p50={statistics.median(lat):.1f}ms p99={lat[int(len(lat)*0.99)-1]:.1f}ms max={lat[-1]:.1f}ms")
