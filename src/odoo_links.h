/*-------------------------------------------------------------------------
 *
 * odoo_links.h
 *	  The base URL of a document's portal links: its website's domain
 *	  (odoo_links.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ODOO_LINKS_H
#define ODOO_LINKS_H

#include "utils/snapshot.h"

extern char *wa_odoo_normalize_domain(const char *domain);
extern char *wa_odoo_website_base_url(const char *table, int64 res_id, bool company_null,
									  int64 company_id, Snapshot snap, int64 *website_id);
extern char *wa_odoo_website_warnings(void);

#endif							/* ODOO_LINKS_H */
