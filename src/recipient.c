/*-------------------------------------------------------------------------
 *
 * recipient.c
 *	  The checks that sending makes about a recipient: the opt-out rule,
 *	  a template Meta paused or disabled, the 24-hour window; and the
 *	  identity forms of a number.  Enqueue (wa_send*), Odoo's triggers and
 *	  the worker's claim ask these; the receiving side (webhook*.c) only
 *	  records the consent they read.
 *
 * The opt-out rule is written once, here (wa_opt_out_reason): an
 * identifier is blocked when whatsapp.opt_out holds it with scope 'all'; or
 * with scope 'marketing' and the message is a template whose category for
 * the account is MARKETING (the account's own rows of that template, else
 * the rows for every account); or when Odoo's phone_blacklist has it
 * active (odoo_read.c).  whatsapp.opt_out is read by its key in C, so the
 * common case (no row) costs one index probe and no SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"
#include "jsonb_access.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(wa_identity_forms_sql);

/* The customer-service window. */
#define WA_WINDOW_USECS		(INT64CONST(24) * USECS_PER_HOUR)

static SPIPlanPtr plan_marketing = NULL;
static SPIPlanPtr plan_window = NULL;
static SPIPlanPtr plan_template_status = NULL;

/* whatsapp.opt_out and the index its rule reads, per backend */
static Oid	opt_out_relid = InvalidOid;
static Oid	opt_out_index = InvalidOid;
static Oid	opt_out_coll = InvalidOid;
static AttrNumber opt_out_identifier = InvalidAttrNumber;
static AttrNumber opt_out_scope = InvalidAttrNumber;
static AttrNumber opt_out_source = InvalidAttrNumber;

/*
 * SPI leaves CurrentMemoryContext at its procedure context after each call;
 * this puts the caller's back.
 */
static int
spi_run(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
		long count)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, count);

	MemoryContextSwitchTo(cxt);
	return rc;
}

/*
 * Is the template MARKETING for the account?  Its own rows of that name
 * decide when it has any, else the rows for every account.  Inside SPI.
 */
static bool
template_is_marketing(int32 account_id, const char *name)
{
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	bool		marketing;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(account_id);
	wa_spi_check(spi_run(wa_plan(&plan_marketing,
								 "WITH a AS (SELECT a.name FROM whatsapp.account a WHERE a.id = $2),"
								 " own AS (SELECT t.category FROM whatsapp.templates t, a"
								 "          WHERE t.name = $1 AND t.account = a.name)"
								 " SELECT 1 FROM own WHERE category = 'MARKETING'"
								 " UNION ALL"
								 " SELECT 1 FROM whatsapp.templates t"
								 "  WHERE t.name = $1 AND t.account IS NULL AND t.category = 'MARKETING'"
								 "    AND NOT EXISTS (SELECT 1 FROM own)"
								 " LIMIT 1", 2, types),
						 values, NULL, true, 1),
				 SPI_OK_SELECT, "template category lookup");
	marketing = SPI_processed > 0;
	SPI_freetuptable(SPI_tuptable);
	return marketing;
}

/*
 * Does whatsapp.opt_out hold any opt-out of an erased person (an identifier
 * that is a keyed hash, "erased:...") that snap sees?  One probe of the
 * partial index opt_out_erased_idx, which holds only those rows: in the
 * common case, no erasure ever, the index is empty and the probe ends at
 * its metapage, so the hashes are neither computed nor looked up.
 *
 * Nothing is cached: the probe reads with the same snapshot as the hash
 * probes it stands for, so an erasure committed by another session is
 * seen exactly when its hashed row would be.  Without the index (the
 * library is newer than the installed extension version), true.
 */
static bool
erased_opt_outs_exist(Relation rel, Oid nsp, Snapshot snap)
{
	Oid			index = get_relname_relid("opt_out_erased_idx", nsp);
	SysScanDesc scan;
	bool		found;

	if (!OidIsValid(index))
		return true;
	scan = systable_beginscan(rel, index, true, snap, 0, NULL);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	return found;
}

/*
 * One probe of whatsapp.opt_out by identifier: sets *all or *marketing to
 * the source of the row of that scope, when there is one.
 */
static void
probe_opt_out(Relation rel, const char *identifier, Snapshot snap,
			  char **all, char **marketing)
{
	SysScanDesc scan;
	HeapTuple	tup;

	scan = wa_key_scan(rel, opt_out_identifier, TEXTOID, opt_out_index, opt_out_coll,
					   0, identifier, snap);
	while (*all == NULL && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		scope = heap_getattr(tup, opt_out_scope, RelationGetDescr(rel), &isnull);
		Datum		source = heap_getattr(tup, opt_out_source, RelationGetDescr(rel), &isnull);
		char	   *s = TextDatumGetCString(scope);
		char	   *src = isnull ? pstrdup("unknown source") : TextDatumGetCString(source);

		if (strcmp(s, "all") == 0)
			*all = src;
		else if (strcmp(s, "marketing") == 0)
			*marketing = src;
	}
	systable_endscan(scan);
}

/*
 * The opt-out rule (see the header).  identifier is an E.164 number, or
 * the raw "+digits" of a wa_id that cannot be normalized; template_name is
 * the template of a template message (NULL otherwise); snap NULL reads
 * with the running statement's snapshot, or a fresh one.  Returns NULL, or
 * the reason to record (palloc'd).  The marketing part, rare, asks SQL:
 * the caller is inside SPI.
 *
 * The opt-outs of people erased on request (wa_subject_erase) are kept
 * under the keyed hash of each identifier (subject.c): when the identifier
 * itself has no opt-out of scope 'all' and any such hashed opt-out exists
 * (erased_opt_outs_exist), its hash under each key of the key file is
 * probed too.  Without a usable key file there is nothing to
 * probe; the worker, which cannot send without one, probes again at claim.
 */
char *
wa_opt_out_reason(int32 account_id, const char *identifier, const char *kind,
				  const char *template_name, Snapshot snap)
{
	Oid			nsp = get_namespace_oid("whatsapp", false);
	Oid			relid = get_relname_relid("opt_out", nsp);
	Relation	rel;
	char	   *all = NULL;
	char	   *marketing = NULL;
	char	  **hashes;
	int			nhashes;
	Snapshot	probe_snap;

	if (!OidIsValid(relid))
		elog(ERROR, "whatsapp.opt_out is missing");
	rel = table_open(relid, AccessShareLock);
	if (relid != opt_out_relid)
	{
		opt_out_identifier = get_attnum(relid, "identifier");
		opt_out_scope = get_attnum(relid, "scope");
		opt_out_source = get_attnum(relid, "source");
		opt_out_index = wa_key_index(relid, opt_out_identifier, TEXTOID, &opt_out_coll);
		opt_out_relid = relid;
	}
	probe_snap = snap ? snap : ActiveSnapshotSet() ? GetActiveSnapshot() : GetLatestSnapshot();
	probe_opt_out(rel, identifier, probe_snap, &all, &marketing);
	if (all == NULL && erased_opt_outs_exist(rel, nsp, probe_snap) &&
		(nhashes = wa_subject_hashes(identifier, &hashes)) > 0)
	{
		for (int i = 0; i < nhashes && all == NULL; i++)
			probe_opt_out(rel, hashes[i], probe_snap, &all, &marketing);
	}
	table_close(rel, AccessShareLock);

	if (all == NULL && wa_odoo_blacklisted(identifier, snap))
		all = "Odoo phone_blacklist";
	if (all != NULL)
		return psprintf("recipient opted out of all messages (%s)", all);
	if (marketing != NULL && strcmp(kind, "template") == 0 && template_name != NULL &&
		template_is_marketing(account_id, template_name))
		return psprintf("recipient opted out of marketing messages, and template \"%s\" is MARKETING (%s)",
						template_name, marketing);
	return NULL;
}

/*
 * The opt-out rule for a message about to be recorded: true, with *v set
 * (blocked, opted_out), when the recipient may not get it.
 */
bool
wa_recipient_opted_out(int32 account_id, const char *e164, const char *kind,
					   Datum payload, WaRecipientVerdict *v)
{
	char	   *tname = NULL;
	char	   *reason;

	memset(v, 0, sizeof(*v));
	if (strcmp(kind, "template") == 0)
	{
		Jsonb	   *j = DatumGetJsonbP(payload);

		tname = wa_json_string(wa_json_object(&j->root, "template"), "name");
	}
	reason = wa_opt_out_reason(account_id, e164, kind, tname, NULL);
	if (reason == NULL)
		return false;
	v->state = "blocked";
	v->failure_type = "opted_out";
	v->error_title = reason;
	return true;
}

/*
 * Does whatsapp.templates hold any PAUSED or DISABLED row of template name,
 * for any account and language?  One probe of templates_blocked_idx, the
 * partial index of those rows, with the statement's snapshot: usually
 * there is none, and the query of wa_template_check, which decides
 * between the account's row and the row for every account, is not run.
 * Without the index, true.
 */
static bool
blocked_template_rows_exist(const char *name)
{
	Oid			nsp = get_namespace_oid("whatsapp", false);
	Oid			relid = get_relname_relid("templates", nsp);
	Oid			index = get_relname_relid("templates_blocked_idx", nsp);
	Relation	rel;
	Relation	irel;
	Oid			coll;
	AttrNumber	att;
	SysScanDesc scan;
	bool		found;

	if (!OidIsValid(relid) || !OidIsValid(index))
		return true;
	rel = table_open(relid, AccessShareLock);
	irel = index_open(index, AccessShareLock);
	att = irel->rd_index->indnkeyatts == 1 ? irel->rd_index->indkey.values[0] : 0;
	coll = irel->rd_indcollation[0];
	index_close(irel, AccessShareLock);
	if (att <= 0 || TupleDescAttr(RelationGetDescr(rel), att - 1)->atttypid != TEXTOID)
	{
		table_close(rel, AccessShareLock);
		return true;
	}
	scan = wa_key_scan(rel, att, TEXTOID, index, coll, 0, name,
					   ActiveSnapshotSet() ? GetActiveSnapshot() : GetLatestSnapshot());
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * A template Meta paused or disabled (status PAUSED or DISABLED in
 * whatsapp.templates: the account's own row, else the row for every
 * account) fails at enqueue, failure_type 'template', until Meta approves
 * it again.  Sets *v and returns true then.
 */
bool
wa_template_check(int32 account_id, Datum payload, WaRecipientVerdict *v)
{
	Jsonb	   *j = DatumGetJsonbP(payload);
	JsonbContainer *t = wa_json_object(&j->root, "template");
	char	   *name = wa_json_string(t, "name");
	char	   *language = wa_json_string(wa_json_object(t, "language"), "code");
	Oid			types[3] = {TEXTOID, TEXTOID, INT4OID};
	Datum		values[3];
	bool		blocked = false;

	if (name == NULL || language == NULL)
		return false;
	if (!blocked_template_rows_exist(name))
		return false;
	for (char *c = language; *c; c++)
		if (*c == '-')
			*c = '_';
	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(language);
	values[2] = Int32GetDatum(account_id);
	wa_spi_check(spi_run(wa_plan(&plan_template_status,
								 "SELECT t.status, t.updated_at FROM whatsapp.templates t"
								 " WHERE t.name = $1 AND t.language = $2"
								 "   AND (t.account IS NULL OR t.account ="
								 "     (SELECT a.name FROM whatsapp.account a WHERE a.id = $3))"
								 "   AND EXISTS (SELECT 1 FROM whatsapp.templates b"
								 "                WHERE b.name = $1 AND b.status IN ('PAUSED', 'DISABLED'))"
								 " ORDER BY t.account IS NULL LIMIT 1", 3, types),
						 values, NULL, true, 1),
				 SPI_OK_SELECT, "template status lookup");
	if (SPI_processed > 0)
	{
		char	   *status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (status != NULL && (strcmp(status, "PAUSED") == 0 || strcmp(status, "DISABLED") == 0))
		{
			v->state = "failed";
			v->failure_type = "template";
			v->error_title = psprintf("template \"%s\" (%s) is %s by Meta since %s; not sent until Meta approves it again",
									  name, language, status,
									  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
			blocked = true;
		}
	}
	SPI_freetuptable(SPI_tuptable);
	return blocked;
}

void
wa_recipient_check(int32 account_id, const char *e164, const char *kind,
				   Datum payload, WaRecipientVerdict *v)
{
	bool		is_template = strcmp(kind, "template") == 0;
	Datum		values[2];

	if (wa_recipient_opted_out(account_id, e164, kind, payload, v))
		return;
	if (is_template && wa_template_check(account_id, payload, v))
		return;

	/* The 24-hour window, for free-form messages. */
	if (wa_window_check != WA_WINDOW_OFF && !is_template)
	{
		char		forms[4][WA_E164_MAXLEN + 1];
		Datum		elems[4];
		int			n = wa_phone_forms(e164, forms);
		Oid			t3[2] = {TEXTARRAYOID, INT4OID};
		bool		isnull;
		Datum		last;
		TimestampTz now = GetCurrentTransactionStartTimestamp();

		for (int i = 0; i < n; i++)
			elems[i] = CStringGetTextDatum(forms[i]);
		values[0] = PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[1] = Int32GetDatum(account_id);
		wa_spi_check(spi_run(wa_plan(&plan_window,
								   "SELECT pg_catalog.max(i.sent_at) FROM whatsapp.inbound_message i"
								   " WHERE i.phone = ANY ($1) AND i.account_id = $2", 2, t3),
						  values, NULL, true, 1),
				  SPI_OK_SELECT, "window lookup");
		last = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		SPI_freetuptable(SPI_tuptable);
		if (isnull || DatumGetTimestampTz(last) + WA_WINDOW_USECS <= now)
		{
			const char *when = isnull ? "never wrote to this account" :
				psprintf("last wrote to this account at %s",
						 timestamptz_to_str(DatumGetTimestampTz(last)));

			if (wa_window_check == WA_WINDOW_BLOCK)
			{
				v->state = "failed";
				v->failure_type = "whatsapp_unrecoverable";
				v->error_code = 131047;
				v->error_title = psprintf("outside the 24-hour customer service window (the recipient %s); only templates may be sent there, so it was not sent (whatsapp.window_check = block)",
										  when);
			}
			else
				ereport(WARNING,
						(errcode(ERRCODE_WARNING),
						 errmsg("the recipient (%s) is outside the 24-hour customer service window",
								wa_phone_for_log(e164)),
						 errdetail("The recipient %s. Meta refuses free-form messages outside the window with error 131047.",
								   when),
						 errhint("Send a template with whatsapp.wa_send_template() instead, or set whatsapp.window_check to block to record such messages as failed without sending them.")));
		}
	}
}

/* ----------
 * Identity forms
 * ----------
 */

/*
 * The E.164 forms under which one number may be known: itself, and for
 * Brazil the mobile with and without the ninth digit, for Argentina the
 * mobile with and without the 9.  Mexico's "521" form is normalized away.
 */
int
wa_phone_forms(const char *e164, char forms[][WA_E164_MAXLEN + 1])
{
	int			n = 0;
	size_t		len = strlen(e164);

	strlcpy(forms[n++], e164, WA_E164_MAXLEN + 1);
	if (strncmp(e164, "+55", 3) == 0)
	{
		const char *nsn = e164 + 3;
		size_t		l = len - 3;

		if (l == 11 && nsn[2] == '9' && nsn[3] >= '6' && nsn[3] <= '9')
			snprintf(forms[n++], WA_E164_MAXLEN + 1, "+55%.2s%s", nsn, nsn + 3);
		else if (l == 10 && nsn[2] >= '6' && nsn[2] <= '9')
			snprintf(forms[n++], WA_E164_MAXLEN + 1, "+55%.2s9%s", nsn, nsn + 2);
	}
	else if (strncmp(e164, "+54", 3) == 0)
	{
		const char *nsn = e164 + 3;
		size_t		l = len - 3;

		if (l == 11 && nsn[0] == '9')
			snprintf(forms[n++], WA_E164_MAXLEN + 1, "+54%s", nsn + 1);
		else if (l == 10)
			snprintf(forms[n++], WA_E164_MAXLEN + 1, "+549%s", nsn);
	}
	return n;
}

/* A business-scoped user id: "CC.digits" and the like; no spaces. */
static bool
looks_like_bsuid(const char *s)
{
	size_t		len = strlen(s);
	bool		letter = false;

	if (len < 3 || len > 128)
		return false;
	for (const char *p = s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
			letter = true;
		else if (!((*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
			return false;
	}
	return letter;
}

/*
 * Is s (possibly NULL) a business-scoped user id in the form that
 * _identity_forms, and so wa_opt_in and the identity links, take?  The
 * webhook takes user ids only in this form.
 */
bool
wa_is_bsuid(const char *s)
{
	return s != NULL && looks_like_bsuid(s);
}

Datum
wa_identity_forms_sql(PG_FUNCTION_ARGS)
{
	char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *start = s;
	char	   *end;
	char		e164[WA_E164_MAXLEN + 1];
	char		forms[4][WA_E164_MAXLEN + 1];
	Datum		elems[4];
	int			n;
	bool		letter = false;

	while (*start == ' ' || *start == '\t')
		start++;
	end = start + strlen(start);
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	if (*start == '\0' || strlen(start) > 256)
		PG_RETURN_NULL();
	for (char *p = start; *p; p++)
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
			letter = true;
	if (letter)
	{
		if (!looks_like_bsuid(start))
			PG_RETURN_NULL();
		elems[0] = CStringGetTextDatum(start);
		PG_RETURN_ARRAYTYPE_P(construct_array(elems, 1, TEXTOID, -1, false, TYPALIGN_INT));
	}
	if (!wa_normalize_phone(start, wa_default_country_code, e164))
		PG_RETURN_NULL();
	n = wa_phone_forms(e164, forms);
	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(forms[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}
