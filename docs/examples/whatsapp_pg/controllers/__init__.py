# docs/examples/whatsapp_pg/controllers: the webhook route.
from . import webhook
