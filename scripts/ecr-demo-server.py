#!/usr/bin/env python3
"""A small Amazon ECR endpoint for `make demo`: GetAuthorizationToken with realistic tokens.

moto's server answers GetAuthorizationToken with a fixed token that expired in 2015, so the
operator's first run would show a schedule in the past. This server speaks the same wire
protocol as ECR (AWS JSON 1.1, `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.*`,
SigV4-signed requests) and answers like ECR does: a fresh password per call, `expiresAt` 12
hours from now, the proxy endpoint of the account and region the request was signed for.
https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html

Usage: ecr-demo-server.py PORT   (binds 127.0.0.1; point AWS_ENDPOINT_URL_ECR at it)
"""
import base64
import json
import re
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
LIFETIME = 12 * 3600
DEFAULT_ACCOUNT = "123456789012"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one short line per request, never a token
        sys.stderr.write("ecr-demo-server: %s %s\n" % (self.command, self.headers.get("X-Amz-Target")))

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-RequestId", secrets.token_hex(16))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, kind, message):
        self.answer(status, {"__type": kind, "message": message})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        auth = self.headers.get("Authorization", "")
        scope = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/ecr/aws4_request", auth)
        if not auth.startswith("AWS4-HMAC-SHA256 ") or not scope:
            return self.error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        if self.headers.get("X-Amz-Target") != TARGET:
            return self.error(400, "UnknownOperationException", "only GetAuthorizationToken is served")
        if not (self.headers.get("Content-Type") or "").startswith("application/x-amz-json-1.1"):
            return self.error(400, "SerializationException", "expected application/x-amz-json-1.1")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.error(400, "SerializationException", "the body is not JSON")
        region = scope.group(1)
        accounts = body.get("registryIds") or [DEFAULT_ACCOUNT]
        expires = int(time.time()) + LIFETIME
        data = []
        for account in accounts:
            if not re.fullmatch(r"[0-9]{12}", str(account)):
                return self.error(400, "InvalidParameterException", "registryIds must be 12-digit account IDs")
            password = base64.b64encode(secrets.token_bytes(1024)).decode()
            data.append({
                "authorizationToken": base64.b64encode(("AWS:" + password).encode()).decode(),
                "expiresAt": expires,
                "proxyEndpoint": "https://%s.dkr.ecr.%s.amazonaws.com" % (account, region),
            })
        self.answer(200, {"authorizationData": data})


if __name__ == "__main__":
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ecr-demo-server listening on 127.0.0.1:%d" % port, flush=True)
    server.serve_forever()
