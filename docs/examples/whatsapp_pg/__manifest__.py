# docs/examples/whatsapp_pg/__manifest__.py
{
    'name': 'WhatsApp webhooks through PostgreSQL',
    'summary': "Hands Meta's WhatsApp webhooks to the whatsapp PostgreSQL extension",
    'version': '1.0',
    'depends': ['base', 'web'],
    'data': [],
    'installable': True,
}
