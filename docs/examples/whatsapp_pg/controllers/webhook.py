# docs/examples/whatsapp_pg/controllers/webhook.py: Meta's webhook in Odoo.
#
# The Odoo module docs/examples/whatsapp_pg: copy that directory into an
# addons path (as addons/whatsapp_pg), install the module, and point Meta's
# callback URL at https://<your Odoo>/whatsapp/webhook.  Odoo's database
# role needs GRANT whatsapp_sender TO odoo.  See docs/webhooks.md, "In Odoo".
#
# The test suite only compiles this file (test/t/097_examples.pl): it was
# not run inside Odoo there.
import psycopg2

from odoo import http
from odoo.http import request, Response


class WhatsAppWebhook(http.Controller):

    @http.route('/whatsapp/webhook', type='http', auth='public', csrf=False,
                methods=['GET', 'POST'], save_session=False)
    def webhook(self, **kwargs):
        httprequest = request.httprequest
        cr = request.env.cr
        if httprequest.method == 'GET':
            args = httprequest.args
            cr.execute("SELECT whatsapp.wa_verify_webhook(%s, %s, %s)",
                       (args.get('hub.mode'), args.get('hub.verify_token'),
                        args.get('hub.challenge')))
            challenge = cr.fetchone()[0]
            if challenge is None:
                return Response('Forbidden', status=403)
            return Response(challenge, status=200, content_type='text/plain')

        body = httprequest.get_data()          # the exact bytes Meta signed
        signature = httprequest.headers.get('X-Hub-Signature-256')
        try:
            with cr.savepoint():
                cr.execute("SELECT whatsapp.wa_receive(%s, %s)",
                           (body.decode('utf-8'), signature))
        except UnicodeDecodeError:
            return Response('Bad Request', status=400)
        except psycopg2.Error as e:
            if e.pgcode and e.pgcode.startswith('28'):   # not signed by a known app
                return Response('Forbidden', status=403)
            if e.pgcode == '22P02':                      # not JSON
                return Response('Bad Request', status=400)
            raise    # 40001 and 40P01: Odoo retries the whole request
        return Response('OK', status=200)
