# docs/examples/whatsapp_pg: an Odoo module that passes Meta's webhooks
# to the whatsapp extension (docs/webhooks.md, "In Odoo").
from . import controllers
