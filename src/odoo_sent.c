/*-------------------------------------------------------------------------
 *
 * odoo_sent.c
 *	  When Odoo has sent an invoice to its customer: the signal behind the
 *	  invoice_sent event.
 *
 * account_move.is_move_sent does not say it.  Odoo 16's Print button sets
 * it (action_invoice_print), and from 17 on it is set as soon as the
 * official PDF is generated (account.move.send's _link_invoice_documents),
 * by Print as much as by Send, before any mail leaves.  What only sending
 * writes, in 16 to 19 alike, is the message that account.move.send (17+)
 * or the mail composer of account.invoice.send (16) posts on the invoice
 * with message_post():
 *
 *	 mail_message: model 'account.move', res_id the invoice, message_type
 *		 'comment' ('email_outgoing' for a mass mailing copy, 17+),
 *		 subtype_id mail.mt_comment, a subtype that is not internal (a
 *		 note's mt_note is);
 *	 mail_message_res_partner_rel: its recipients, the customer among them
 *		 (the template's partner_to, or the invoice's default recipients);
 *	 message_attachment_rel: the invoice PDF it carries.
 *
 * So the event's trigger is on mail_message (AFTER INSERT, deferred to
 * commit like the others, naming no column): the inserted row is tested
 * here first, in C and without reading anything, for the model and the
 * message type (most messages are about something else); at commit,
 * odoo.c renders the invoice and asks wa_odoo_sent_problem whether the
 * message, its subtype, its recipients and its attachments say that the
 * invoice went to its customer.
 *
 * Odoo's tables are read as odoo_read.c reads them: ordinary tables only,
 * columns of built-in types, rows by systable scans with built-in
 * comparisons.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "odoo_sent.h"

/*
 * The message types of a message sent out by Odoo: comment (message_post),
 * email_outgoing (17+: the copy of a mass mail) and email (16: the copy of
 * a mass mail, written with its mail_mail; also an incoming e-mail, told
 * apart at commit).
 */
static const char *const sent_message_types[] = {"comment", "email_outgoing", "email", NULL};
static const char *const mass_mail_types[] = {"email", NULL};
/* a mail_mail that is going out or went out (not cancel, exception, received) */
static const char *const mail_sent_states[] = {"outgoing", "sent", NULL};

static const Oid text_types[] = {TEXTOID, VARCHAROID, InvalidOid};
static const Oid id_types[] = {INT4OID, INT8OID, INT2OID, InvalidOid};
static const Oid bool_types[] = {BOOLOID, InvalidOid};

/* mail_message's columns, by number, until its next relcache invalidation */
typedef struct MessageCols
{
	Oid			relid;			/* InvalidOid: not computed */
	AttrNumber	id;
	AttrNumber	model;
	AttrNumber	res_id;
	AttrNumber	message_type;
} MessageCols;

static MessageCols msg_cols;
static bool callback_registered = false;

static void
msg_cols_changed(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || msg_cols.relid == relid)
		msg_cols.relid = InvalidOid;
}

static AttrNumber
desc_attnum(TupleDesc desc, const char *name, const Oid *types)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (a->attisdropped || strcmp(NameStr(a->attname), name) != 0)
			continue;
		for (const Oid *t = types; OidIsValid(*t); t++)
			if (a->atttypid == *t)
				return a->attnum;
		return 0;
	}
	return 0;
}

/* An integer column of tup; false when NULL or missing. */
static bool
tuple_int(HeapTuple tup, TupleDesc desc, AttrNumber att, int64 *value)
{
	bool		isnull;
	Datum		d;

	if (att == 0)
		return false;
	d = heap_getattr(tup, att, desc, &isnull);
	if (isnull)
		return false;
	switch (TupleDescAttr(desc, att - 1)->atttypid)
	{
		case INT2OID:
			*value = DatumGetInt16(d);
			return true;
		case INT4OID:
			*value = DatumGetInt32(d);
			return true;
		case INT8OID:
			*value = DatumGetInt64(d);
			return true;
	}
	return false;
}

/*
 * Could this inserted mail_message row be an invoice going out by mail?
 * Tested on the row the trigger is handed, reading nothing else: model
 * 'account.move' and a message type of outgoing mail.  Sets the invoice's
 * id and the message's.
 */
bool
wa_odoo_sent_candidate(Relation rel, HeapTuple tup, int64 *res_id, int64 *msg_id)
{
	TupleDesc	desc = RelationGetDescr(rel);
	static const char *const model[] = {"account.move", NULL};

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(msg_cols_changed, (Datum) 0);
		callback_registered = true;
	}
	if (msg_cols.relid != RelationGetRelid(rel))
	{
		msg_cols.id = desc_attnum(desc, "id", id_types);
		msg_cols.model = desc_attnum(desc, "model", text_types);
		msg_cols.res_id = desc_attnum(desc, "res_id", id_types);
		msg_cols.message_type = desc_attnum(desc, "message_type", text_types);
		msg_cols.relid = RelationGetRelid(rel);
	}
	return wa_tuple_text_in(tup, desc, msg_cols.model, model) &&
		wa_tuple_text_in(tup, desc, msg_cols.message_type, sent_message_types) &&
		tuple_int(tup, desc, msg_cols.res_id, res_id) &&
		tuple_int(tup, desc, msg_cols.id, msg_id);
}

/*
 * One of Odoo's tables, opened for reading rows by the integer column
 * key: InvalidOid when it is missing, not a table, or key is not an
 * integer column.
 */
typedef struct KeyedRel
{
	const char *name;
	Oid			relid;
	AttrNumber	key;
	Oid			keytype;
	Oid			index;
	Oid			coll;
} KeyedRel;

static bool
keyed_open(KeyedRel *k, const char *name, const char *keycol)
{
	memset(k, 0, sizeof(*k));
	k->name = name;
	k->relid = wa_odoo_table(name, LOG);
	if (!OidIsValid(k->relid))
		return false;
	k->key = wa_odoo_column(k->relid, keycol, id_types, &k->keytype, LOG);
	if (k->key == 0)
		return false;
	k->index = wa_key_index(k->relid, k->key, k->keytype, &k->coll);
	return true;
}

/*
 * Does table k have a row whose key is key and (when col is not NULL)
 * whose integer column col is one of the n values?  With boolcol, the
 * row's boolean column boolcol is returned in *flag (NULL counts as
 * false).
 */
static bool
keyed_find(KeyedRel *k, int64 key, const char *col, const int64 *values, int n,
		   const char *boolcol, bool *flag, Snapshot snap)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	AttrNumber	att = 0;
	AttrNumber	batt = 0;
	bool		found = false;

	if (col != NULL)
	{
		att = wa_odoo_column(k->relid, col, id_types, NULL, LOG);
		if (att == 0)
			return false;
	}
	if (boolcol != NULL)
		batt = wa_odoo_column(k->relid, boolcol, bool_types, NULL, LOG);
	rel = table_open(k->relid, NoLock);
	scan = wa_key_scan(rel, k->key, k->keytype, k->index, k->coll, key, NULL, snap);
	if (scan != NULL)
	{
		while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			int64		v;

			/* SnapshotAny: the rows this transaction inserted, deleted since or not */
			if (snap == SnapshotAny &&
				!TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tup->t_data)))
				continue;
			if (att == 0)
				found = true;
			else if (tuple_int(tup, RelationGetDescr(rel), att, &v))
			{
				for (int i = 0; i < n; i++)
					if (values[i] == v)
						found = true;
			}
			if (found && flag != NULL)
			{
				bool		isnull = true;
				Datum		d = batt != 0 ? heap_getattr(tup, batt, RelationGetDescr(rel), &isnull) : (Datum) 0;

				*flag = !isnull && DatumGetBool(d);
			}
		}
		systable_endscan(scan);
	}
	table_close(rel, NoLock);
	return found;
}

/* The text of column att of tup (text or varchar), or NULL. */
static char *
tuple_text(HeapTuple tup, TupleDesc desc, AttrNumber att)
{
	bool		isnull;
	Datum		d;

	if (att == 0)
		return NULL;
	d = heap_getattr(tup, att, desc, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

#define MAX_MASS_MAILS 16

/*
 * NULL when the mail_mail that Odoo 16's mail composer wrote for
 * mail_message msg_id in mass_mail mode went (or is going) to the
 * customer; otherwise why not.
 *
 * In that mode the composer creates one mail.mail per record: the
 * mail_message (message_type 'email', no subtype, the attachments) and
 * its mail_mail, whose recipients are on mail_mail_res_partner_rel, not
 * on the message.  Then it sends the mails in the same transaction, and
 * deletes each one whose auto_delete is set (the invoice templates set
 * it) with its recipients, before the commit at which this runs.  So the
 * mail and its recipients are read with SnapshotAny, keeping the rows
 * this transaction inserted, deleted since or not.  A mail cancelled
 * before sending (no e-mail address, blacklisted: state 'cancel' at its
 * creation) or that failed ('exception') does not count.
 */
static char *
mass_mail_problem(int64 msg_id, const int64 *partners, int npartners, Snapshot snap)
{
	KeyedRel	k;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	AttrNumber	a_id,
				a_state;
	int64		mails[MAX_MASS_MAILS];
	int			nmails = 0;
	char	   *bad_state = NULL;
	bool		to_customer = false;

	if (!keyed_open(&k, "mail_mail", "mail_message_id"))
		return psprintf("mail_message %ld is an e-mail without subtype, and table public.mail_mail, where Odoo 16 writes the mass-mail copy's mail, is missing",
						(long) msg_id);
	a_id = wa_odoo_column(k.relid, "id", id_types, NULL, LOG);
	a_state = wa_odoo_column(k.relid, "state", text_types, NULL, LOG);
	rel = table_open(k.relid, NoLock);
	for (int pass = 0; pass < 2; pass++)
	{
		/* every version this transaction wrote, then the row as it stands */
		Snapshot	s = pass == 0 ? SnapshotAny : snap;

		scan = wa_key_scan(rel, k.key, k.keytype, k.index, k.coll, msg_id, NULL, s);
		if (scan == NULL)
			continue;
		while (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			TupleDesc	desc = RelationGetDescr(rel);
			int64		id;
			bool		known = false;

			if (pass == 0 &&
				!TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tup->t_data)))
				continue;
			if (!tuple_int(tup, desc, a_id, &id))
				continue;
			if (!wa_tuple_text_in(tup, desc, a_state, mail_sent_states) && bad_state == NULL)
			{
				char	   *st = tuple_text(tup, desc, a_state);

				bad_state = psprintf("mail_mail %ld of mail_message %ld is %s, not sent",
									 (long) id, (long) msg_id, st ? st : "without state");
			}
			for (int i = 0; i < nmails; i++)
				if (mails[i] == id)
					known = true;
			if (!known && pass == 0 && nmails < MAX_MASS_MAILS)
				mails[nmails++] = id;
		}
		systable_endscan(scan);
	}
	table_close(rel, NoLock);
	if (bad_state != NULL)
		return bad_state;
	if (nmails == 0)
		return psprintf("mail_message %ld is an e-mail without subtype and without a mail_mail written with it: an incoming or imported e-mail, not a mass-mail send",
						(long) msg_id);

	/* the customer among the mail's recipients */
	if (!keyed_open(&k, "mail_mail_res_partner_rel", "mail_mail_id"))
		return pstrdup("table public.mail_mail_res_partner_rel (the recipients of a mass mail) is missing or has no integer mail_mail_id");
	for (int i = 0; i < nmails && !to_customer; i++)
		to_customer = keyed_find(&k, mails[i], "res_partner_id", partners, npartners,
								 NULL, NULL, SnapshotAny);
	if (!to_customer)
		return psprintf("the customer (res_partner %ld) is not among the recipients of the mail of mail_message %ld",
						(long) partners[0], (long) msg_id);
	return NULL;
}

/*
 * NULL when mail_message msg_id, as it stands in snap, sends invoice
 * res_id to its customer: a message on that invoice of an outgoing type,
 * of a subtype that is not internal, with partner_id or commercial_id
 * among its recipients, carrying at least one attachment.  Otherwise why
 * not, for the note of the rendering.
 */
char *
wa_odoo_sent_problem(int64 msg_id, int64 res_id, int64 partner_id, int64 commercial_id,
					 Snapshot snap)
{
	KeyedRel	k;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	AttrNumber	a_model,
				a_res,
				a_type,
				a_subtype;
	int64		subtype = 0;
	bool		have_subtype = false;
	bool		ok = false;
	bool		internal = true;
	bool		mass_copy = false;
	int64		partners[2];
	static const char *const model[] = {"account.move", NULL};

	/* the message, read again at commit */
	if (!keyed_open(&k, "mail_message", "id"))
		return pstrdup("table public.mail_message is missing or has no integer id");
	a_model = wa_odoo_column(k.relid, "model", text_types, NULL, LOG);
	a_res = wa_odoo_column(k.relid, "res_id", id_types, NULL, LOG);
	a_type = wa_odoo_column(k.relid, "message_type", text_types, NULL, LOG);
	a_subtype = wa_odoo_column(k.relid, "subtype_id", id_types, NULL, LOG);
	rel = table_open(k.relid, NoLock);
	scan = wa_key_scan(rel, k.key, k.keytype, k.index, k.coll, msg_id, NULL, snap);
	if (scan != NULL)
	{
		if (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			TupleDesc	desc = RelationGetDescr(rel);
			int64		r;

			ok = wa_tuple_text_in(tup, desc, a_model, model) &&
				wa_tuple_text_in(tup, desc, a_type, sent_message_types) &&
				tuple_int(tup, desc, a_res, &r) && r == res_id;
			have_subtype = tuple_int(tup, desc, a_subtype, &subtype);
			mass_copy = wa_tuple_text_in(tup, desc, a_type, mass_mail_types);
		}
		systable_endscan(scan);
	}
	table_close(rel, NoLock);
	if (!ok)
		return psprintf("mail_message %ld is not an outgoing message on account_move %ld",
						(long) msg_id, (long) res_id);

	partners[0] = partner_id;
	partners[1] = commercial_id;

	/*
	 * Odoo 16's mass_mail copy: an e-mail without subtype, its recipients
	 * on its mail_mail.  An e-mail with a subtype is an incoming one
	 * (the mail gateway posts it as mail.mt_comment).
	 */
	if (mass_copy)
	{
		char	   *why;

		if (have_subtype)
			return psprintf("mail_message %ld is an e-mail with a subtype: an incoming e-mail, not a mail Odoo sent",
							(long) msg_id);
		why = mass_mail_problem(msg_id, partners, commercial_id > 0 ? 2 : 1, snap);
		if (why != NULL)
			return why;
		goto attachments;
	}

	/* a discussion, not an internal note */
	if (!have_subtype)
		return psprintf("mail_message %ld has no subtype (an outgoing mail has mail.mt_comment)",
						(long) msg_id);
	if (!keyed_open(&k, "mail_message_subtype", "id") ||
		!keyed_find(&k, subtype, NULL, NULL, 0, "internal", &internal, snap))
		return psprintf("the subtype %ld of mail_message %ld is not in public.mail_message_subtype",
						(long) subtype, (long) msg_id);
	if (internal)
		return psprintf("mail_message %ld is an internal note (its subtype %ld is internal), not a mail to the customer",
						(long) msg_id, (long) subtype);

	/* the customer among its recipients */
	if (!keyed_open(&k, "mail_message_res_partner_rel", "mail_message_id") ||
		!keyed_find(&k, msg_id, "res_partner_id", partners, commercial_id > 0 ? 2 : 1,
					NULL, NULL, snap))
		return psprintf("the customer (res_partner %ld) is not among the recipients of mail_message %ld",
						(long) partner_id, (long) msg_id);

attachments:
	/* with the invoice attached */
	if (!keyed_open(&k, "message_attachment_rel", "message_id") ||
		!keyed_find(&k, msg_id, NULL, NULL, 0, NULL, NULL, snap))
		return psprintf("mail_message %ld carries no attachment, so it is not the invoice being sent",
						(long) msg_id);
	return NULL;
}
