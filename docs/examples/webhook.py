#!/usr/bin/env python3
# docs/examples/webhook.py: Meta's webhook without Odoo.
#
#   python3 docs/examples/webhook.py        (listens on 127.0.0.1:8080)
#
# Python's standard library and psycopg2 (Debian: python3-psycopg2).  Meta
# requires HTTPS with a valid certificate: put this behind nginx or Caddy.
# Environment:
#   WEBHOOK_DSN   libpq connection string (default 'dbname=shop user=webhook',
#                 a member of whatsapp_sender); PGHOST, PGPORT and the other
#                 libpq variables fill in what it leaves out
#   WEBHOOK_PORT  the port on 127.0.0.1 (default 8080)
#
# test/t/097_examples.pl runs this file against a real cluster.  See
# docs/webhooks.md, "Without Odoo".
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs
import psycopg2
from psycopg2.pool import ThreadedConnectionPool

pool = ThreadedConnectionPool(1, 8, os.environ.get('WEBHOOK_DSN', 'dbname=shop user=webhook'))


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, text=''):
        data = text.encode()
        self.send_response(status)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def call(self, sql, args):
        conn = pool.getconn()
        try:
            for attempt in range(5):
                try:
                    with conn, conn.cursor() as cur:        # one transaction
                        cur.execute(sql, args)
                        return cur.fetchone()[0]
                except psycopg2.errors.SerializationFailure:
                    continue                                # 40001: try again
            raise RuntimeError('still conflicting after 5 tries')
        finally:
            pool.putconn(conn)

    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        first = lambda k: q.get(k, [None])[0]
        challenge = self.call("SELECT whatsapp.wa_verify_webhook(%s, %s, %s)",
                              (first('hub.mode'), first('hub.verify_token'), first('hub.challenge')))
        self.answer(200, challenge) if challenge is not None else self.answer(403, 'Forbidden')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        try:
            self.call("SELECT whatsapp.wa_receive(%s, %s)",
                      (body.decode('utf-8'), self.headers.get('X-Hub-Signature-256')))
        except psycopg2.Error as e:
            if e.pgcode and e.pgcode.startswith('28'):
                return self.answer(403, 'Forbidden')
            if e.pgcode == '22P02':
                return self.answer(400, 'Bad Request')
            return self.answer(500, 'Error')              # Meta retries
        except UnicodeDecodeError:
            return self.answer(400, 'Bad Request')
        self.answer(200, 'OK')


ThreadingHTTPServer(('127.0.0.1', int(os.environ.get('WEBHOOK_PORT', '8080'))),
                    Handler).serve_forever()
