/*-------------------------------------------------------------------------
 *
 * odoo.c
 *	  What the rules on Odoo's tables and the four events share around the
 *	  one rendering of odoo_rules.c: the events' configuration
 *	  (whatsapp.odoo_rule, per company, written by wa_odoo_enable), the
 *	  rule's account and its template's languages, the pause, recording
 *	  the message (with the access_token written at commit), and
 *	  wa_odoo_preview.
 *
 * The four events are presets of the rules on any model: their
 * definitions, their trigger and the rendering are in odoo_rules.c, which
 * says why the definitions are code.  The other files behind the trigger
 * (odoo.h lists them): odoo_data.c reads Odoo's data, odoo_format.c
 * formats as Odoo prints, odoo_render.c makes the parameters, the
 * components, the recipient and the language.
 *
 * wa_odoo_enable (SQL) puts deferred constraint triggers on Odoo's
 * sale_order or account_move (INSERT and UPDATE, naming no column), or for
 * invoice_sent on mail_message (odoo_sent.c says why is_move_sent is not
 * the signal).  The events fire at commit, where the document is read
 * again as it stands then: Odoo's ORM writes a record in several UPDATEs
 * (the state first, then the name and the amounts), and only the
 * committed values are worth sending.
 *
 * Rules of the road:
 *
 * - Never raise into Odoo's transaction because of data or configuration.
 *	 Every problem the trigger can meet (the account dropped, a column gone
 *	 after an Odoo upgrade, a partner without a name or a usable phone, no
 *	 portal token) is checked before it could fail and becomes a message in
 *	 state "failed" whose error_title says why.  No subtransactions.
 * - Never write to Odoo's tables, but for a document's missing
 *	 access_token, which Odoo's own portal.mixin would create on sharing:
 *	 written at commit as the table's owner (write_token, odoo_read.c).
 * - Never assume Odoo's version (odoo_data.c reads it from the catalog).
 * - At most one message per document and event: the dedupe key
 *	 "sale.order:42:sale_order_confirmed" is taken by the first message,
 *	 whether it was queued or recorded as failed.
 *
 * Speed.  Odoo's rows and the extension's own tables are read in C by
 * index (odoo_data.c says why).  Only a few statements remain, through
 * SPI: the INSERT of the message, and recipient.c's checks (the opt-out
 * rule reads whatsapp.opt_out by index in C and asks SQL only about a
 * marketing opt-out; a paused template is one query).
 *
 *-------------------------------------------------------------------------
 */
#include "odoo.h"
#include "odoo_sent.h"
#include "spi_plans.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

static SPIPlanPtr plan_insert = NULL;
static bool plan_insert_writes_owner = false;
static bool plan_insert_sql_probe = false;	/* has the NOT EXISTS */
static SPIPlanPtr plan_existing = NULL;

/* the extension's own tables read here (see open_own_table) */
static Oid	own_relids[4];

/*
 * What odoo_already_recorded found out about whatsapp.message and its index
 * message_dedupe_key, until the next catalog invalidation.
 */
static struct
{
	bool		known;
	bool		shaped;
	Oid			relid;
	Oid			index;
	AttrNumber	account;
	AttrNumber	key;
	Oid			coll;
}			msg_shape;

/*
 * The column numbers of the extension's own tables, remembered until the
 * next catalog invalidation (odoo_own_tables_changed), as their oids are:
 * every firing reads a dozen of them.
 */
#define N_OWN_ATTS 24
static struct
{
	Oid			relid;
	const char *name;
	AttrNumber	attnum;
}			own_atts[N_OWN_ATTS];
static int	n_own_atts = 0;

/* Called by odoo_data.c's catalog invalidation callback. */
void
odoo_own_tables_changed(void)
{
	memset(own_relids, 0, sizeof(own_relids));
	n_own_atts = 0;
	msg_shape.known = false;
}

/* ----------
 * The extension's own tables: the rule, its account, the template's languages
 * ----------
 */
enum
{
	OWN_RULE, OWN_ACCOUNT, OWN_TEMPLATES, OWN_PAUSE,
	N_OWN
};
static const char *const own_names[N_OWN] = {
	"odoo_rule", "account", "templates", "odoo_pause"
};

StaticAssertDecl(lengthof(own_relids) == N_OWN, "one cached oid per own table");

/*
 * Open one of them, AccessShareLock.  With missing_ok, NULL when it does
 * not exist (odoo_pause before ALTER EXTENSION UPDATE); a missing table is
 * looked up again next time.
 */
static Relation
open_own_table_extended(int which, bool missing_ok)
{
	/* the oid of the last lookup, until a catalog invalidation */
	if (OidIsValid(own_relids[which]))
	{
		LockRelationOid(own_relids[which], AccessShareLock);
		if (OidIsValid(own_relids[which]))
			return table_open(own_relids[which], NoLock);
	}
	own_relids[which] =
		RangeVarGetRelidExtended(makeRangeVar("whatsapp", (char *) own_names[which], -1),
								 AccessShareLock, missing_ok ? RVR_MISSING_OK : 0,
								 NULL, NULL);
	if (!OidIsValid(own_relids[which]))
		return NULL;
	return table_open(own_relids[which], NoLock);
}

static Relation
open_own_table(int which)
{
	return open_own_table_extended(which, false);
}

/*
 * Are the Odoo events of this database paused (a row in
 * whatsapp.odoo_pause, see wa_odoo_pause)?  Read with a fresh snapshot: an
 * upgrade's long transaction that started before the pause must see it.
 * Before ALTER EXTENSION UPDATE makes the table, nothing is paused.
 */
bool
odoo_paused(void)
{
	Relation	rel;
	Snapshot	snap;
	SysScanDesc scan;
	bool		paused;

	rel = open_own_table_extended(OWN_PAUSE, true);
	if (rel == NULL)
		return false;
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	paused = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return paused;
}

static AttrNumber
own_attnum(Relation rel, const char *name)
{
	Oid			relid = RelationGetRelid(rel);
	AttrNumber	a;

	for (int i = 0; i < n_own_atts; i++)
		if (own_atts[i].relid == relid && strcmp(own_atts[i].name, name) == 0)
			return own_atts[i].attnum;
	a = get_attnum(relid, name);
	if (a <= 0)
		elog(ERROR, "whatsapp: column %s of %s is missing", name, RelationGetRelationName(rel));
	if (n_own_atts < N_OWN_ATTS)
	{
		/* the names are the string constants of this file */
		own_atts[n_own_atts].relid = relid;
		own_atts[n_own_atts].name = name;
		own_atts[n_own_atts].attnum = a;
		n_own_atts++;
	}
	return a;
}

static char *
own_text(HeapTuple tup, Relation rel, AttrNumber a)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, a, RelationGetDescr(rel), &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * The configuration of preset ev (wa_odoo_enable's row of
 * whatsapp.odoo_rule) for the company, or failing that the one for all,
 * into rd; false when there is none.
 */
bool
odoo_event_config(const OdooEvent *ev, bool company_null, int64 company_id, Snapshot snap,
				  OdooRuleDef *rule)
{
	Relation	rel = open_own_table(OWN_RULE);
	AttrNumber	a_event = own_attnum(rel, "event");
	AttrNumber	a_company = own_attnum(rel, "company_id");
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	HeapTuple	best = NULL;
	bool		best_is_company = false;

	ScanKeyInit(&skey, a_event, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(ev->name));
	scan = systable_beginscan(rel, InvalidOid, false, snap, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		c = heap_getattr(tup, a_company, RelationGetDescr(rel), &isnull);

		if (isnull && best == NULL)
			best = heap_copytuple(tup);
		else if (!isnull && !company_null && DatumGetInt32(c) == company_id &&
				 !best_is_company)
		{
			best = heap_copytuple(tup);
			best_is_company = true;
		}
	}
	systable_endscan(scan);
	if (best != NULL)
	{
		bool		isnull;
		Datum		d;

		d = heap_getattr(best, a_company, RelationGetDescr(rel), &rule->company_null);
		rule->company_id = rule->company_null ? 0 : DatumGetInt32(d);
		rule->template = own_text(best, rel, own_attnum(rel, "template"));
		rule->language = own_text(best, rel, own_attnum(rel, "language"));
		rule->account = own_text(best, rel, own_attnum(rel, "account"));
		d = heap_getattr(best, own_attnum(rel, "params"), RelationGetDescr(rel), &isnull);
		rule->params = isnull ? NULL : DatumGetJsonbPCopy(d);
	}
	table_close(rel, NoLock);
	return best != NULL;
}

/*
 * The id of the live account called name; with *live false, the id of the
 * last dropped one of that name, or 0 when there never was one.
 */
int32
odoo_find_account(const char *name, Snapshot snap, bool *live)
{
	Relation	rel;
	AttrNumber	a_name;
	AttrNumber	a_id;
	AttrNumber	a_dropped;
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	int32		any = 0;
	int32		alive = 0;

	*live = false;
	if (name == NULL)
		return 0;
	rel = open_own_table(OWN_ACCOUNT);
	a_name = own_attnum(rel, "name");
	a_id = own_attnum(rel, "id");
	a_dropped = own_attnum(rel, "dropped_at");
	ScanKeyInit(&skey, a_name, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(name));
	scan = systable_beginscan(rel, InvalidOid, false, snap, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		int32		id = DatumGetInt32(heap_getattr(tup, a_id, RelationGetDescr(rel), &isnull));

		(void) heap_getattr(tup, a_dropped, RelationGetDescr(rel), &isnull);
		if (isnull)
			alive = id;
		if (id > any)
			any = id;
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	*live = alive != 0;
	return alive != 0 ? alive : any;
}

/*
 * The languages whatsapp.templates lists for the template, for this account
 * or every account, whose status is unknown or lets it be sent.
 */
List *
odoo_template_languages(const char *template, const char *account, Snapshot snap)
{
	Relation	rel;
	AttrNumber	a_name;
	AttrNumber	a_account;
	AttrNumber	a_language;
	AttrNumber	a_status;
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *langs = NIL;

	if (template == NULL)
		return NIL;
	rel = open_own_table(OWN_TEMPLATES);
	a_name = own_attnum(rel, "name");
	a_account = own_attnum(rel, "account");
	a_language = own_attnum(rel, "language");
	a_status = own_attnum(rel, "status");
	ScanKeyInit(&skey, a_name, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(template));
	scan = systable_beginscan(rel, InvalidOid, false, snap, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		char	   *acc = own_text(tup, rel, a_account);
		char	   *status = own_text(tup, rel, a_status);
		char	   *lang = own_text(tup, rel, a_language);

		if (acc != NULL && (account == NULL || strcmp(acc, account) != 0))
			continue;
		if (status != NULL && pg_strcasecmp(status, "APPROVED") != 0 &&
			pg_strcasecmp(status, "REINSTATED") != 0 && pg_strcasecmp(status, "FLAGGED") != 0)
			continue;
		if (lang != NULL)
			langs = lappend(langs, lang);
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	return langs;
}

/*
 * The state of a message nothing has failed yet: opted out or on Odoo's
 * phone_blacklist (the opt-out rule), or a template Meta paused, as
 * recipient.c decides for wa_send; else queued.
 */
void
odoo_check_recipient(OdooRender *r)
{
	WaRecipientVerdict v = {0};

	wa_recipient_check(r->account_id, r->recipient, "template", r->payload_jsonb, &v);
	if (v.state != NULL)
	{
		r->state = v.state;
		r->failure_type = v.failure_type;
		r->reason = v.error_title;
		r->error_code = v.error_code;
	}
	else
		r->state = "queued";
}

/*
 * Write the access_token render created to the document, as the table's
 * owner (odoo_read.c: wa_odoo_as_owner_begin): planned and run with that
 * role's rights, so that its own triggers and rules on the table run as
 * it, as for Odoo's own writes.  The confirming transaction holds the
 * row's lock already.  True when one row was updated.
 */
static SPIPlanPtr token_plan[N_MODELS];
static Oid	token_plan_rel[N_MODELS];

static bool
write_token(OdooRender *r)
{
	OdooModel	m = r->ev->model;
	WaOwnerContext oc;
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	int			rc;
	uint64		n;

	wa_odoo_as_owner_begin(r->doc_relid, &oc);

	/*
	 * Our own triggers on the table must not queue events for this write:
	 * PostgreSQL refuses to queue a deferred trigger inside a
	 * security-restricted operation, and the write enters no state anyway.
	 * Their WHEN clause reads this setting, reverted with the nest level.
	 */
	(void) set_config_option("whatsapp.odoo_events", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (token_plan[m] != NULL && token_plan_rel[m] != r->doc_relid)
	{
		SPI_freeplan(token_plan[m]);
		token_plan[m] = NULL;
	}
	if (token_plan[m] == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(psprintf("UPDATE public.%s SET access_token = $1"
											 " WHERE id = $2 AND (access_token IS NULL OR access_token = '')",
											 odoo_model_table[m]), 2, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "whatsapp: could not prepare the access_token write: %s",
				 SPI_result_code_string(SPI_result));
		token_plan[m] = p;
		token_plan_rel[m] = r->doc_relid;
	}
	values[0] = CStringGetTextDatum(r->token_new);
	values[1] = Int64GetDatum(r->res_id);
	rc = SPI_execute_plan(token_plan[m], values, NULL, false, 0);
	n = SPI_processed;
	wa_odoo_as_owner_end(&oc);
	return rc == SPI_OK_UPDATE && n == 1;
}

/*
 * Is a message already recorded under dedupe_key, in any account (dropped
 * ones too)?  One probe of message_dedupe_key per account, read in C with
 * the snapshot the rendering used, instead of a NOT EXISTS in the INSERT
 * (an InitPlan over whatsapp.account and a subplan on every confirmation).
 * Like that subquery it sees what this transaction recorded before (the
 * firing's snapshot follows a command counter increment) and what other
 * sessions had committed.  Returns false and sets *shaped to false when the
 * index is not the one the 0.1 script made; record then asks SQL.
 */
static bool
odoo_already_recorded(const char *dedupe_key, bool *shaped)
{
	Relation	msg;
	Relation	acc;
	AttrNumber	a_id;
	Snapshot	snap = GetActiveSnapshot();
	SysScanDesc ascan;
	HeapTuple	atup;
	Datum		key;
	bool		found = false;

	if (msg_shape.known && msg_shape.shaped)
	{
		LockRelationOid(msg_shape.relid, AccessShareLock);
		LockRelationOid(msg_shape.index, AccessShareLock);
	}
	if (!msg_shape.known)
	{
		Oid			nsp = get_namespace_oid("whatsapp", false);
		Oid			relid = get_relname_relid("message", nsp);
		Oid			index = get_relname_relid("message_dedupe_key", nsp);
		Relation	irel;

		msg_shape.shaped = false;
		if (OidIsValid(relid) && OidIsValid(index))
		{
			msg = table_open(relid, AccessShareLock);
			msg_shape.account = get_attnum(relid, "account_id");
			msg_shape.key = get_attnum(relid, "dedupe_key");
			irel = index_open(index, AccessShareLock);
			msg_shape.shaped = msg_shape.account > 0 && msg_shape.key > 0 &&
				irel->rd_index->indrelid == relid &&
				irel->rd_index->indisvalid && irel->rd_index->indisready &&
				irel->rd_index->indnkeyatts == 2 &&
				irel->rd_index->indkey.values[0] == msg_shape.account &&
				irel->rd_index->indkey.values[1] == msg_shape.key &&
				irel->rd_rel->relam == BTREE_AM_OID &&
				TupleDescAttr(RelationGetDescr(msg), msg_shape.account - 1)->atttypid == INT4OID &&
				TupleDescAttr(RelationGetDescr(msg), msg_shape.key - 1)->atttypid == TEXTOID;
			msg_shape.coll = OidIsValid(irel->rd_indcollation[1]) ?
				irel->rd_indcollation[1] : DEFAULT_COLLATION_OID;
			index_close(irel, NoLock);
			table_close(msg, NoLock);
		}
		msg_shape.relid = relid;
		msg_shape.index = index;
		msg_shape.known = true;
	}
	*shaped = msg_shape.shaped;
	if (!msg_shape.shaped)
		return false;

	msg = table_open(msg_shape.relid, NoLock);
	acc = open_own_table(OWN_ACCOUNT);
	a_id = own_attnum(acc, "id");
	key = CStringGetTextDatum(dedupe_key);
	ascan = systable_beginscan(acc, InvalidOid, false, snap, 0, NULL);
	while (!found && HeapTupleIsValid(atup = systable_getnext(ascan)))
	{
		bool		isnull;
		Datum		id = heap_getattr(atup, a_id, RelationGetDescr(acc), &isnull);
		ScanKeyData skey[2];
		SysScanDesc mscan;

		if (isnull)
			continue;
		ScanKeyInit(&skey[0], msg_shape.account, BTEqualStrategyNumber, F_INT4EQ, id);
		ScanKeyInit(&skey[1], msg_shape.key, BTEqualStrategyNumber, F_TEXTEQ, key);
		skey[1].sk_collation = msg_shape.coll;
		mscan = systable_beginscan(msg, msg_shape.index, true, snap, 2, skey);
		found = HeapTupleIsValid(systable_getnext(mscan));
		systable_endscan(mscan);
	}
	systable_endscan(ascan);
	table_close(acc, NoLock);
	table_close(msg, NoLock);
	return found;
}

/*
 * Record what render decided, once per dedupe key.  Inside SPI.
 *
 * The message belongs (queued_by, see ownership.c) to the role the session
 * acts as: the trigger fires at commit, outside any function of the
 * caller's.  The once-per-document probe looks at every role's messages:
 * nothing of them reaches the caller.
 */
void
odoo_record(OdooRender *r)
{
	Oid			types[11] = {INT4OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, TEXTOID, JSONBOID, TEXTOID};
	Datum		values[11];
	char		nulls[11];
	int			rc;
	bool		write_owner;
	bool		probed;
	bool		sql_probe;
	char	   *owner;

	if (r->account_id == 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("whatsapp: account \"%s\" of the rule for event %s does not exist; nothing recorded for %s %ld",
						r->account ? r->account : "", r->ev->name,
						r->model_label ? r->model_label : odoo_model_name[r->ev->model],
						(long) r->res_id),
				 errhint("Run whatsapp.wa_odoo_enable again with an account that exists.")));
		return;
	}
	/*
	 * The access_token the rendering created, written first: a message
	 * whose link would not work is recorded as failed instead.
	 */
	if (r->token_new != NULL && strcmp(r->state, "queued") == 0 && !write_token(r))
	{
		r->state = NULL;
		odoo_fail(r, "template",
				  "%s %ld has no access_token, and writing the new one changed no row (a rule or trigger of the table's owner)",
				  r->model_label ? r->model_label : odoo_model_name[r->ev->model],
				  (long) r->res_id);
		r->payload_jsonb = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->payload.data));
	}
	/* The same for the official PDF's attachment (odoo_pdf.c). */
	if (r->att_token_new != NULL && strcmp(r->state, "queued") == 0 &&
		!wa_odoo_attachment_token_write(r->att_relid, r->att_id, r->att_token_new))
	{
		r->state = NULL;
		odoo_fail(r, "template",
				  "the official PDF of %s %ld (ir_attachment %lld) has no access_token, and writing the new one changed no row (a rule or trigger of the table's owner)",
				  odoo_model_name[r->ev->model], (long) r->res_id, (long long) r->att_id);
		r->payload_jsonb = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->payload.data));
	}

	/*
	 * Once per document and event whatever the account: the rule may have
	 * moved to another account since the first confirmation, and
	 * message_dedupe_key is unique per account only.  The confirming
	 * transaction still holds the document's row lock, so two of them
	 * cannot race between this probe and the INSERT.
	 */
	if (odoo_already_recorded(r->dedupe_key, &probed))
		return;

	/* When the probe could not use the index, the INSERT asks SQL. */
	sql_probe = !probed;
	/* Until ALTER EXTENSION UPDATE adds queued_by, write without it. */
	write_owner = wa_message_has_queued_by();
	if (plan_insert != NULL &&
		(write_owner != plan_insert_writes_owner || plan_insert_sql_probe != sql_probe))
	{
		SPI_freeplan(plan_insert);
		plan_insert = NULL;
	}
	if (plan_insert == NULL)
	{
		SPIPlanPtr	p;

		/*
		 * When odoo_already_recorded could not use message_dedupe_key, the
		 * same probe in SQL: one probe of that index per account (= ANY on
		 * its leading column: a join gets a generic plan that scans the
		 * outbox).
		 */
		p = SPI_prepare_cursor(psprintf("INSERT INTO whatsapp.message (account_id, recipient, kind,"
										" payload, state, failure_type, error_title, error_details,"
										" error_code, dedupe_key, context, failed_at%s)"
										" SELECT $1, $2, 'template', $3, $4, $5, $6, $7, $8, $9, $10,"
										"  CASE WHEN $4 = 'failed' THEN now() END%s"
										"%s"
										" ON CONFLICT (account_id, dedupe_key) WHERE dedupe_key IS NOT NULL"
										" DO NOTHING",
										write_owner ? ", queued_by" : "",
										write_owner ? ", $11" : "",
										!sql_probe ? "" :
										"  WHERE NOT EXISTS (SELECT 1 FROM whatsapp.message d"
										"   WHERE d.account_id = ANY (ARRAY(SELECT a.id FROM whatsapp.account a))"
										"     AND d.dedupe_key = $9)"),
							   11, types, CURSOR_OPT_GENERIC_PLAN);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "whatsapp: could not prepare the Odoo insert");
		plan_insert = p;
		plan_insert_writes_owner = write_owner;
		plan_insert_sql_probe = sql_probe;
	}
	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(r->account_id);
	if (r->recipient)
		values[1] = CStringGetTextDatum(r->recipient);
	else
		nulls[1] = 'n';
	values[2] = r->payload_jsonb;
	values[3] = CStringGetTextDatum(r->state);
	if (r->failure_type)
		values[4] = CStringGetTextDatum(r->failure_type);
	else
		nulls[4] = 'n';
	if (r->reason)
		values[5] = CStringGetTextDatum(r->reason);
	else
		nulls[5] = 'n';
	if (r->details)
		values[6] = CStringGetTextDatum(r->details);
	else
		nulls[6] = 'n';
	values[7] = Int32GetDatum(r->error_code);
	if (r->error_code == 0)
		nulls[7] = 'n';
	values[8] = CStringGetTextDatum(r->dedupe_key);
	values[9] = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->context.data));
	owner = GetUserNameFromId(GetOuterUserId(), true);
	if (owner != NULL)
		values[10] = CStringGetTextDatum(owner);
	else
		nulls[10] = 'n';
	rc = SPI_execute_plan(plan_insert, values, nulls, false, 1);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "whatsapp: could not record the Odoo message: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed > 0 && strcmp(r->state, "queued") == 0)
	{
		/* no official PDF yet, and the rule waits for it */
		if (r->pdf_waits)
		{
			wa_odoo_pdf_wait_record(r->account_id, r->dedupe_key, r->res_id, r->pdf_until,
									r->pdf_base_url, r->document, r->pdf_upload,
									r->template_no_header);
			wa_pdf_wait_at_commit();
		}
		wa_wake_worker_at_commit();
	}
	else if (SPI_processed > 0)
		wa_stats_count_enqueue(r->account_id, r->state, r->failure_type);
}

/* ----------
 * wa_odoo_preview(event text, record_id integer) RETURNS jsonb
 * ----------
 */

/* Append ", \"key\": value" to a preview's JSON; JSON null for NULL. */
void
odoo_json_kv_str(StringInfo b, const char *key, const char *val)
{
	appendStringInfoString(b, ", ");
	escape_json(b, key);
	appendStringInfoString(b, ": ");
	if (val)
		escape_json(b, val);
	else
		appendStringInfoString(b, "null");
}

/*
 * What both previews (wa_odoo_preview, wa_odoo_rule_preview) say about the
 * message itself: its outcome, account, recipient, template, language,
 * values, payload and dedupe key.
 */
void
odoo_preview_message(StringInfo b, const OdooRender *r)
{
	odoo_json_kv_str(b, "outcome", r->state);
	odoo_json_kv_str(b, "failure_type", r->failure_type);
	odoo_json_kv_str(b, "reason", r->reason);
	odoo_json_kv_str(b, "account", r->account);
	odoo_json_kv_str(b, "recipient", r->recipient);
	odoo_json_kv_str(b, "template", r->template);
	odoo_json_kv_str(b, "language", r->language);
	appendStringInfoString(b, ", \"values\": ");
	appendStringInfoString(b, r->values.len > 1 ? r->values.data : "{}");
	appendStringInfoString(b, ", \"message\": ");
	appendStringInfoString(b, r->payload.len ? r->payload.data : "null");
	odoo_json_kv_str(b, "dedupe_key", r->dedupe_key);
}

/*
 * The links the customer gets (page and PDF, or null), and whether the
 * commit would create the access_token they carry.
 */
void
odoo_preview_links(StringInfo b, const OdooRender *r)
{
	appendStringInfoString(b, ", \"links\": {\"page\": ");
	if (r->link_page)
		escape_json(b, r->link_page);
	else
		appendStringInfoString(b, "null");
	appendStringInfoString(b, ", \"pdf\": ");
	if (r->link_pdf)
		escape_json(b, r->link_pdf);
	else
		appendStringInfoString(b, "null");
	appendStringInfoChar(b, '}');
	appendStringInfo(b, ", \"access_token_created_at_commit\": %s",
					 (r->token_new || r->att_token_new) ? "true" : "false");
}

PG_FUNCTION_INFO_V1(wa_odoo_preview);

Datum
wa_odoo_preview(PG_FUNCTION_ARGS)
{
	char	   *event;
	const OdooEvent *ev;
	OdooRuleDef rd;
	int64		id;
	OdooRender	r;
	StringInfoData b;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext old;
	Datum		result;
	Oid			nsp;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event and record_id must not be NULL")));
	event = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ev = odoo_preset(event);
	if (ev == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not an Odoo event", event),
				 errhint("The events are sale_order_confirmed, invoice_posted, refund_posted and invoice_sent.")));
	id = PG_GETARG_INT32(1);
	nsp = get_namespace_oid("public", true);
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid(odoo_model_table[ev->model], nsp)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("Odoo table \"public.%s\" does not exist", odoo_model_table[ev->model]),
				 errhint("Run wa_odoo_preview in the database of an Odoo instance.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "whatsapp: SPI_connect failed");
	odoo_preset_rule(ev, &rd);
	CommandCounterIncrement();
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	(void) odoo_render_rule(&rd, NULL, id, true, &r, 0);
	PopActiveSnapshot();
	if (!r.found)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("%s %ld does not exist", odoo_model_table[ev->model], (long) id)));
	if (!r.has_rule)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s", r.note),
				 errhint("Enable it with whatsapp.wa_odoo_enable('%s', ...).", ev->name)));

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"event\": ");
	escape_json(&b, ev->name);
	odoo_json_kv_str(&b, "model", odoo_model_name[ev->model]);
	appendStringInfo(&b, ", \"res_id\": %ld", (long) id);
	odoo_json_kv_str(&b, "document", r.document);
	if (r.company_null)
		appendStringInfoString(&b, ", \"company_id\": null");
	else
		appendStringInfo(&b, ", \"company_id\": %ld", (long) r.company_id);
	if (r.rule_company_null)
		appendStringInfoString(&b, ", \"rule_company_id\": null");
	else
		appendStringInfo(&b, ", \"rule_company_id\": %ld", (long) r.rule_company);
	appendStringInfo(&b, ", \"fires\": %s", r.fires ? "true" : "false");
	odoo_json_kv_str(&b, "why_not", r.fires ? NULL : r.note);

	/* already recorded under this dedupe key, in any account (see record)? */
	if (r.account_id != 0)
	{
		Oid			types[1] = {TEXTOID};
		Datum		args[1] = {CStringGetTextDatum(r.dedupe_key)};

		wa_plan(&plan_existing,
				"SELECT id, state FROM whatsapp.message"
				" WHERE account_id = ANY (ARRAY(SELECT a.id FROM whatsapp.account a))"
				"   AND dedupe_key = $1 ORDER BY id LIMIT 1", 1, types);
		if (SPI_execute_plan(plan_existing, args, NULL, false, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
			appendStringInfo(&b, ", \"already_recorded\": {\"id\": %s, \"state\": \"%s\"}",
							 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
							 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
		else
			appendStringInfoString(&b, ", \"already_recorded\": null");
	}
	odoo_preview_message(&b, &r);
	appendStringInfoString(&b, ", \"context\": ");
	appendStringInfoString(&b, r.context.len ? r.context.data : "null");
	odoo_json_kv_str(&b, "odoo_schema", odoo_schema_guess(ev->model));
	if (r.odoo_version > 0)
		appendStringInfo(&b, ", \"odoo_version\": %d", r.odoo_version);
	else
		appendStringInfoString(&b, ", \"odoo_version\": null");
	odoo_json_kv_str(&b, "odoo_version_source", r.odoo_version > 0 ?
				psprintf("ir_module_module: base %s", r.odoo_version_text) :
				"unknown: ir_module_module has no installed base module; see odoo_schema");
	odoo_json_kv_str(&b, "format_language", r.format_lang);
	odoo_json_kv_str(&b, "fires_on", ev->needs_sent ?
				"the invoice mailed to its customer: a mail_message on account.move of type comment or email_outgoing, of a subtype that is not internal, with the customer among its recipients and an attachment (Odoo's Send)" :
				NULL);
	odoo_json_kv_str(&b, "base_url_source", r.base_url_source);
	/* a website's domain does not move: only web.base.url needs its freeze */
	odoo_json_kv_str(&b, "link_warning", (r.link_page || r.link_pdf) ?
				wa_odoo_link_warning(r.base_url_used,
									 r.base_url_source != NULL &&
									 strcmp(r.base_url_source, "web.base.url") == 0) : NULL);
	odoo_json_kv_str(&b, "pdf_source", r.pdf_source);
	odoo_preview_links(&b, &r);
	appendStringInfoChar(&b, '}');

	old = MemoryContextSwitchTo(outer);
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(b.data)));
	MemoryContextSwitchTo(old);
	SPI_finish();
	PG_RETURN_DATUM(result);
}
