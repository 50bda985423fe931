/*-------------------------------------------------------------------------
 *
 * odoo_sent.h
 *	  The signal of the invoice_sent event: an invoice mailed to its
 *	  customer (odoo_sent.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ODOO_SENT_H
#define ODOO_SENT_H

#include "access/htup.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* The table the invoice_sent trigger is on. */
#define WA_ODOO_SENT_TABLE "mail_message"

extern bool wa_odoo_sent_candidate(Relation rel, HeapTuple tup, int64 *res_id,
								   int64 *msg_id);
extern char *wa_odoo_sent_problem(int64 msg_id, int64 res_id, int64 partner_id,
								  int64 commercial_id, Snapshot snap);

#endif							/* ODOO_SENT_H */
