#!/usr/bin/env python3
"""A minimal controller for the daemon footprint benchmark: the protocol's enroll, spec (ETag/304)
and reports (dedup by report_id, fsync'd count) endpoints on loopback, plain HTTP.
usage: fake_controller.py PORT SPEC.json STATS.json"""
import hashlib, http.server, json, sys, threading

port, spec_path, stats_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
spec_text = json.dumps(json.load(open(spec_path)), sort_keys=True, separators=(",", ":"))
etag = '"sha256:' + hashlib.sha256(spec_text.encode()).hexdigest() + '"'
seen, stats, lock = set(), {"specs": 0, "not_modified": 0, "reports": 0, "duplicates": 0}, threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            stats["specs"] += 1
            if self.headers.get("If-None-Match") == etag:
                stats["not_modified"] += 1
                return self.reply(304, b"", [("ETag", etag)])
        self.reply(200, spec_text.encode(), [("ETag", etag)])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/v1/enroll":
            return self.reply(200, json.dumps({"identity": "bench-01", "credential": "bench-credential"}).encode())
        report = json.loads(body)
        with lock:
            if report["report_id"] in seen:
                stats["duplicates"] += 1
                status = 200
            else:
                seen.add(report["report_id"])
                stats["reports"] += 1
                status = 201
            if stats["reports"] % 100 == 0 or status == 200:
                json.dump(stats, open(stats_path, "w"))
        self.reply(status, b'{"stored":true}')


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
try:
    server.serve_forever()
finally:
    json.dump(stats, open(stats_path, "w"))
