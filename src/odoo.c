/*-------------------------------------------------------------------------
 *
 * odoo.c
 *	  Messages from Odoo's own tables: the trigger behind wa_odoo_enable,
 *	  the rules (whatsapp.odoo_rule, the rule's account and its template's
 *	  languages), the rendering of one document for one event (whether the
 *	  event holds, then odoo_render.c), recording the message, and
 *	  wa_odoo_preview.
 *
 * The other files behind the trigger (odoo.h lists them): odoo_data.c
 * reads Odoo's data, odoo_format.c formats as Odoo prints, odoo_render.c
 * makes the message.
 *
 * wa_odoo_enable (SQL) puts two constraint triggers per event on Odoo's
 * sale_order or account_move, DEFERRABLE INITIALLY DEFERRED: one for
 * INSERT, one for UPDATE, each with a WHEN clause that queues an event only
 * when the row enters the event's state.  The events fire at commit, where
 * this file reads the document again as it stands then: Odoo's ORM writes
 * a record in several UPDATEs (the state first, then the name and the
 * amounts), and only the committed values are worth sending.
 * invoice_sent is the exception: its one trigger is AFTER INSERT on
 * mail_message, the message Odoo posts when it mails the invoice
 * (odoo_sent.c says why is_move_sent is not the signal).
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

/* ----------
 * Events
 * ----------
 */
static const OdooEvent odoo_events[] = {
	{"sale_order_confirmed", M_SALE_ORDER, NULL, false},
	{"invoice_posted", M_ACCOUNT_MOVE, "out_invoice", false},
	{"refund_posted", M_ACCOUNT_MOVE, "out_refund", false},
	{"invoice_sent", M_ACCOUNT_MOVE, "out_invoice", true},
};

/* Tables without which no message can be rendered at all. */
static const bool table_required[T_COUNT] = {
	true, true, true, true, true, false, false, false, false
};

static SPIPlanPtr plan_insert = NULL;
static bool plan_insert_writes_owner = false;
static SPIPlanPtr plan_existing = NULL;

/* the extension's own tables read here (see open_own_table) */
static Oid	own_relids[3];

/* Called by odoo_data.c's catalog invalidation callback. */
void
odoo_own_tables_changed(void)
{
	memset(own_relids, 0, sizeof(own_relids));
}

/* ----------
 * The extension's own tables: the rule, its account, the template's languages
 * ----------
 */
typedef struct OdooRule
{
	bool		found;
	bool		company_null;
	int32		company_id;
	char	   *template;
	char	   *language;
	char	   *account;
	Jsonb	   *params;
} OdooRule;

enum
{
	OWN_RULE, OWN_ACCOUNT, OWN_TEMPLATES,
	N_OWN
};
static const char *const own_names[N_OWN] = {"odoo_rule", "account", "templates"};

static Relation
open_own_table(int which)
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
								 AccessShareLock, 0, NULL, NULL);
	return table_open(own_relids[which], NoLock);
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
	Oid			relid;
	Relation	rel;
	Snapshot	snap;
	SysScanDesc scan;
	bool		paused;

	relid = RangeVarGetRelidExtended(makeRangeVar("whatsapp", "odoo_pause", -1),
									 AccessShareLock, RVR_MISSING_OK, NULL, NULL);
	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, NoLock);
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
	AttrNumber	a = get_attnum(RelationGetRelid(rel), name);

	if (a <= 0)
		elog(ERROR, "whatsapp: column %s of %s is missing", name, RelationGetRelationName(rel));
	return a;
}

static char *
own_text(HeapTuple tup, Relation rel, AttrNumber a)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, a, RelationGetDescr(rel), &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* The rule of event ev for the company (or, failing that, the one for all). */
static void
find_rule(const OdooEvent *ev, bool company_null, int64 company_id, Snapshot snap,
		  OdooRule *rule)
{
	Relation	rel = open_own_table(OWN_RULE);
	AttrNumber	a_event = own_attnum(rel, "event");
	AttrNumber	a_company = own_attnum(rel, "company_id");
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	HeapTuple	best = NULL;
	bool		best_is_company = false;

	memset(rule, 0, sizeof(*rule));
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

		rule->found = true;
		d = heap_getattr(best, a_company, RelationGetDescr(rel), &rule->company_null);
		rule->company_id = rule->company_null ? 0 : DatumGetInt32(d);
		rule->template = own_text(best, rel, own_attnum(rel, "template"));
		rule->language = own_text(best, rel, own_attnum(rel, "language"));
		rule->account = own_text(best, rel, own_attnum(rel, "account"));
		d = heap_getattr(best, own_attnum(rel, "params"), RelationGetDescr(rel), &isnull);
		rule->params = isnull ? NULL : DatumGetJsonbPCopy(d);
	}
	table_close(rel, NoLock);
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

/* ----------
 * Rendering one document for one event (the message itself: odoo_render.c)
 * ----------
 */
static const OdooEvent *
find_event(const char *name)
{
	for (int i = 0; i < (int) lengthof(odoo_events); i++)
		if (strcmp(odoo_events[i].name, name) == 0)
			return &odoo_events[i];
	return NULL;
}

/*
 * Render document res_id for event ev.  Inside an SPI connection; all
 * allocations in the current (SPI) context.  With for_preview false it
 * stops as soon as it knows nothing is to be recorded.
 */
static void render_rows(const OdooEvent *ev, OdooModelState *s, OdooRow *row,
						bool for_preview, OdooRender *r);

static void
render(const OdooEvent *ev, int64 res_id, bool for_preview, OdooRender *r,
	   int64 sent_msg_id)
{
	OdooModelState *s = odoo_prepare_model(ev->model);
	OdooRow		row;

	memset(r, 0, sizeof(*r));
	r->ev = ev;
	r->res_id = res_id;
	r->sent_msg_id = sent_msg_id;
	initStringInfo(&r->payload);
	initStringInfo(&r->values);
	appendStringInfoChar(&r->values, '{');
	initStringInfo(&r->context);

	/*
	 * A snapshot that sees the transaction's own latest writes: at the
	 * commit of a single-statement transaction no command counter
	 * increment has happened since the UPDATE that queued the event.
	 */
	CommandCounterIncrement();
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();

	memset(&row, 0, sizeof(row));
	row.m = ev->model;
	row.cat = &s->cat;
	row.snap = GetActiveSnapshot();
	row.res_id = res_id;
	row.lang_alias = -1;
	row.version = -1;
	render_rows(ev, s, &row, for_preview, r);
	odoo_row_close(&row);
	PopActiveSnapshot();
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

static void
render_rows(const OdooEvent *ev, OdooModelState *s, OdooRow *rowp, bool for_preview,
			OdooRender *r)
{
	OdooModel	m = ev->model;
	int64		res_id = r->res_id;
	OdooRow	   *row = rowp;
	OdooCtx		x;
	char	   *state;
	OdooRule	rule;
	List	   *avail;
	char	   *neutral;
	bool		live;

	r->found = odoo_row_load(row, A_D) != NULL;
	if (!r->found)
	{
		r->note = psprintf("%s %ld does not exist", odoo_model_table[m], (long) res_id);
		return;
	}
	r->company_id = odoo_row_int(row, A_D, DC_COMPANY, &r->company_null);
	find_rule(ev, r->company_null, r->company_id, row->snap, &rule);
	r->has_rule = rule.found;
	if (!r->has_rule)
	{
		r->note = r->company_null ?
			psprintf("no rule of event %s applies to %s %ld (it has no company)",
					 ev->name, odoo_model_table[m], (long) res_id) :
			psprintf("no rule of event %s applies to company %ld", ev->name,
					 (long) r->company_id);
		return;
	}

	/* Does the event hold now, as the transaction is about to commit? */
	r->fires = true;
	state = odoo_row_text(row, A_D, DC_STATE);
	if (m == M_SALE_ORDER)
	{
		if (state == NULL || (strcmp(state, "sale") != 0 && strcmp(state, "done") != 0))
		{
			r->fires = false;
			r->note = psprintf("sale_order %ld is in state %s, not sale", (long) res_id,
							   state ? state : "NULL");
		}
	}
	else
	{
		char	   *mt = odoo_row_text(row, A_D, DC_MOVE_TYPE);

		if (mt == NULL || strcmp(mt, ev->move_type) != 0)
		{
			r->fires = false;
			r->note = psprintf("account_move %ld is of move_type %s; %s fires for %s only",
							   (long) res_id, mt ? mt : "NULL", ev->name, ev->move_type);
		}
		else if (state == NULL || strcmp(state, "posted") != 0)
		{
			r->fires = false;
			r->note = psprintf("account_move %ld is in state %s, not posted", (long) res_id,
							   state ? state : "NULL");
		}
		else if (ev->needs_sent && r->sent_msg_id > 0)
		{
			/*
			 * Did the message that fired this mail the invoice to its
			 * customer?  (The preview has no message: it shows what the
			 * next one would send.)
			 */
			bool		no_partner,
						no_commercial;
			int64		pid = odoo_row_int(row, A_D, DC_PARTNER, &no_partner);
			int64		cpid = odoo_row_int(row, A_P, PC_COMMERCIAL, &no_commercial);
			char	   *why = no_partner ?
				psprintf("account_move %ld has no partner", (long) res_id) :
				wa_odoo_sent_problem(r->sent_msg_id, res_id, pid,
									 no_commercial ? 0 : cpid, row->snap);

			if (why != NULL)
			{
				r->fires = false;
				r->note = why;
			}
		}
	}
	if (r->fires && !wa_odoo_events)
	{
		r->fires = false;
		r->note = pstrdup("whatsapp.odoo_events is off");
	}
	if (r->fires && odoo_paused())
	{
		r->fires = false;
		r->note = pstrdup("the Odoo events of this database are paused (whatsapp.wa_odoo_pause); whatsapp.wa_odoo_resume() ends the pause");
	}
	/* Too old?  The document's own date: date_order, invoice_date, date. */
	if (r->fires && wa_odoo_max_age > 0)
	{
		int			col = DC_DATE;
		Timestamp	ts;
		bool		have = odoo_row_ts(row, A_D, DC_DATE, &ts);

		if (!have && m == M_ACCOUNT_MOVE)
		{
			col = DC_DATE2;
			have = odoo_row_ts(row, A_D, DC_DATE2, &ts);
		}
		if (have)
		{
			Timestamp	end = ts;
			TimestampTz limit = GetCurrentTransactionStartTimestamp() -
				(TimestampTz) wa_odoo_max_age * USECS_PER_MINUTE;

			/* a date counts until the end of its day */
			if (s->cat.atttype[col] == DATEOID)
				end += USECS_PER_DAY;
			if (end < limit)
			{
				r->fires = false;
				r->note = psprintf("%s %ld is older than whatsapp.odoo_max_age (%s is %s)",
								   odoo_model_table[m], (long) res_id, odoo_qcol(m, col),
								   DatumGetCString(DirectFunctionCall1(timestamp_out,
																	   TimestampGetDatum(ts))));
			}
		}
	}
	if (!r->fires && !for_preview)
		return;

	/* The rule, its account and its template's languages */
	r->template = rule.template;
	r->account = rule.account;
	r->rule_company_null = rule.company_null;
	r->rule_company = rule.company_id;
	avail = odoo_template_languages(rule.template, rule.account, row->snap);
	x.m = m;
	x.cat = &s->cat;
	x.row = row;
	x.r = r;
	x.base_url = NULL;			/* read when a portal link needs it */
	x.for_preview = for_preview;
	x.pdf_wait_us = 0;
	x.pdf_upload = false;
	if (rule.params != NULL && JB_ROOT_IS_OBJECT(rule.params))
	{
		JsonbValue *bu = getKeyJsonValueFromContainer(&rule.params->root, "base_url", 8, NULL);
		JsonbValue *pw = getKeyJsonValueFromContainer(&rule.params->root, "pdf_wait", 8, NULL);
		JsonbValue *pu = getKeyJsonValueFromContainer(&rule.params->root, "pdf_upload", 10, NULL);
		JsonbValue *nh = getKeyJsonValueFromContainer(&rule.params->root, "template_no_header", 18, NULL);

		if (nh != NULL && nh->type == jbvString)
			r->template_no_header = pnstrdup(nh->val.string.val, nh->val.string.len);

		if (bu != NULL && bu->type == jbvString)
		{
			x.base_url = pnstrdup(bu->val.string.val, bu->val.string.len);
			r->base_url_from_rule = true;
		}
		x.pdf_upload = pu != NULL && pu->type == jbvBool && pu->val.boolean;
		if (pw != NULL && pw->type == jbvString)
		{
			/* checked by wa_odoo_enable: from 0 to 7 days */
			Interval   *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
																  CStringGetDatum(pnstrdup(pw->val.string.val, pw->val.string.len)),
																  ObjectIdGetDatum(InvalidOid),
																  Int32GetDatum(-1)));

			x.pdf_wait_us = iv->time + (int64) iv->day * USECS_PER_DAY +
				(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
		}
	}

	r->document = odoo_nonempty(odoo_row_text(row, A_D, DC_NAME));
	r->dedupe_key = psprintf("%s:%ld:%s", odoo_model_name[m], (long) res_id, ev->name);
	appendStringInfoString(&r->context, "{\"model\": ");
	escape_json(&r->context, odoo_model_name[m]);
	appendStringInfo(&r->context, ", \"res_id\": %ld, \"event\": ", (long) res_id);
	escape_json(&r->context, ev->name);
	appendStringInfoChar(&r->context, '}');

	/* dropped: the failure is recorded under the last account of that name */
	r->account_id = odoo_find_account(rule.account, row->snap, &live);
	if (!live)
	{
		odoo_fail(r, "account",
				  "account \"%s\" of the rule for event %s was dropped; run whatsapp.wa_odoo_enable again with an account that exists",
				  r->account ? r->account : "", ev->name);
	}

	neutral = odoo_nonempty(odoo_config_value(row, "database.is_neutralized"));
	if (neutral != NULL && (pg_strcasecmp(neutral, "true") == 0 ||
							pg_strcasecmp(neutral, "t") == 0 ||
							strcmp(neutral, "1") == 0))
		odoo_fail(r, "account",
				  "not sent: Odoo marked this database neutralized (ir_config_parameter database.is_neutralized), as it does for copies");

	for (int t = 0; t < T_COUNT; t++)
		if (table_required[t] && !OidIsValid(s->cat.relid[t]))
			odoo_fail(r, "template", "Odoo table public.%s is missing", odoo_table_names[t]);

	/* The recipient, the language, the parameters */
	odoo_choose_recipient(&x);
	odoo_choose_language(&x, rule.language, avail);

	appendStringInfoString(&r->payload, "{\"type\": \"template\", \"template\": {\"name\": ");
	escape_json(&r->payload, r->template ? r->template : "");
	appendStringInfoString(&r->payload, ", \"language\": {\"code\": ");
	escape_json(&r->payload, r->language ? r->language : "");
	appendStringInfoChar(&r->payload, '}');
	odoo_append_components(&x, rule.params, &r->payload);
	appendStringInfoString(&r->payload, "}}");
	appendStringInfoChar(&r->values, '}');

	r->payload_jsonb = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->payload.data));
	if (r->header_dropped && r->template_no_header != NULL)
	{
		/* without its header at once: the rule's header-less template */
		r->template = r->template_no_header;
		r->payload_jsonb = wa_odoo_payload_template(r->payload_jsonb, r->template);
		resetStringInfo(&r->payload);
		appendStringInfoString(&r->payload,
							   DatumGetCString(DirectFunctionCall1(jsonb_out, r->payload_jsonb)));
	}
	if (r->state == NULL)
		odoo_check_recipient(r);
	if (r->state != NULL && strcmp(r->state, "failed") == 0 && r->details == NULL)
		r->details = psprintf("Recorded by the whatsapp trigger on %s at commit; the document was saved. wa_odoo_preview('%s', %ld) shows the message as it would be now.",
							  odoo_model_table[m], ev->name, (long) res_id);
	if (for_preview)
	{
		r->odoo_version = odoo_version(row);
		r->odoo_version_text = row->version_text;
		r->format_lang = odoo_row_text(row, A_L, LC_CODE);
	}
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

	/* Until ALTER EXTENSION UPDATE adds queued_by, write without it. */
	write_owner = wa_message_has_queued_by();
	if (plan_insert != NULL && write_owner != plan_insert_writes_owner)
	{
		SPI_freeplan(plan_insert);
		plan_insert = NULL;
	}
	if (plan_insert == NULL)
	{
		SPIPlanPtr	p;

		/*
		 * Once per document and event whatever the account: the rule may
		 * have moved to another account since the first confirmation, and
		 * message_dedupe_key is unique per account only.  One probe of
		 * that index per account (= ANY on its leading column: a join
		 * gets a generic plan that scans the outbox); the confirming
		 * transaction still holds the document's row lock, so two of them
		 * cannot race here.
		 */
		p = SPI_prepare_cursor(psprintf("INSERT INTO whatsapp.message (account_id, recipient, kind,"
										" payload, state, failure_type, error_title, error_details,"
										" error_code, dedupe_key, context, failed_at%s)"
										" SELECT $1, $2, 'template', $3, $4, $5, $6, $7, $8, $9, $10,"
										"  CASE WHEN $4 = 'failed' THEN now() END%s"
										"  WHERE NOT EXISTS (SELECT 1 FROM whatsapp.message d"
										"   WHERE d.account_id = ANY (ARRAY(SELECT a.id FROM whatsapp.account a))"
										"     AND d.dedupe_key = $9)"
										" ON CONFLICT (account_id, dedupe_key) WHERE dedupe_key IS NOT NULL"
										" DO NOTHING",
										write_owner ? ", queued_by" : "",
										write_owner ? ", $11" : ""),
							   11, types, CURSOR_OPT_GENERIC_PLAN);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "whatsapp: could not prepare the Odoo insert");
		plan_insert = p;
		plan_insert_writes_owner = write_owner;
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
			wa_odoo_pdf_wait_record(r->account_id, r->dedupe_key, r->res_id, r->pdf_until,
									r->pdf_base_url, r->document, r->pdf_upload,
									r->template_no_header);
		wa_wake_worker_at_commit();
	}
	else if (SPI_processed > 0)
		wa_stats_count_enqueue(r->account_id, r->state, r->failure_type);
}

/* ----------
 * The trigger
 *
 * Since 0.3 the triggers name no column (so that Odoo's own ALTER TABLE
 * of state, move_type or is_move_sent never fails because of them): every
 * INSERT and UPDATE of the table queues an event, and the check that the
 * row entered the event's state, which a WHEN clause made before, is
 * made here first, from the two row versions the trigger is handed, with
 * column numbers cached until the table's next relcache invalidation.
 * ----------
 */
typedef struct TrigCols
{
	Oid			relid;			/* InvalidOid: not computed */
	AttrNumber	state;			/* 0: missing or not text */
	AttrNumber	move_type;
} TrigCols;

static TrigCols trig_cols[N_MODELS];
static bool trig_callback_registered = false;

static void
trig_cols_changed(Datum arg, Oid relid)
{
	for (int m = 0; m < N_MODELS; m++)
		if (!OidIsValid(relid) || trig_cols[m].relid == relid)
			trig_cols[m].relid = InvalidOid;
}

static AttrNumber
trig_attnum(TupleDesc desc, const char *name, bool text)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
		{
			if (text ? (a->atttypid == TEXTOID || a->atttypid == VARCHAROID) :
				a->atttypid == BOOLOID)
				return a->attnum;
			return 0;
		}
	}
	return 0;
}

static const TrigCols *
trig_columns(OdooModel m, Relation rel)
{
	TrigCols   *tc = &trig_cols[m];

	if (!trig_callback_registered)
	{
		CacheRegisterRelcacheCallback(trig_cols_changed, (Datum) 0);
		trig_callback_registered = true;
	}
	if (tc->relid != RelationGetRelid(rel))
	{
		TupleDesc	desc = RelationGetDescr(rel);

		tc->state = trig_attnum(desc, "state", true);
		tc->move_type = trig_attnum(desc, "move_type", true);
		tc->relid = RelationGetRelid(rel);
	}
	return tc;
}

/* Does the row hold the event's state (the condition at commit, again)? */
static bool
trig_row_holds(const OdooEvent *ev, const TrigCols *tc, TupleDesc desc, HeapTuple tup)
{
	static const char *const sale_states[] = {"sale", "done", NULL};
	static const char *const posted[] = {"posted", NULL};
	const char *mt[2] = {ev->move_type, NULL};

	if (tup == NULL)
		return false;
	if (ev->model == M_SALE_ORDER)
		return wa_tuple_text_in(tup, desc, tc->state, sale_states);
	return wa_tuple_text_in(tup, desc, tc->state, posted) &&
		wa_tuple_text_in(tup, desc, tc->move_type, mt);
}

PG_FUNCTION_INFO_V1(wa_odoo_trigger);

Datum
wa_odoo_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	const OdooEvent *ev;
	char	   *nsp;
	HeapTuple	tup;
	int			attno;
	Datum		d;
	bool		isnull;
	int64		id;
	Oid			type;
	OdooRender	r;
	Relation	rel;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("whatsapp._odoo_trigger() may only be called as a trigger"),
				 errhint("Use whatsapp.wa_odoo_enable() to install it.")));
	td = (TriggerData *) fcinfo->context;
	rel = td->tg_relation;
	nsp = get_namespace_name(RelationGetNamespace(rel));

	/* A trigger made by hand, not by wa_odoo_enable: say so, never fail. */
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) ||
		td->tg_trigger->tgnargs < 1 ||
		(ev = find_event(td->tg_trigger->tgargs[0])) == NULL ||
		strcmp(RelationGetRelationName(rel),
			   ev->needs_sent ? WA_ODOO_SENT_TABLE : odoo_model_table[ev->model]) != 0 ||
		nsp == NULL || strcmp(nsp, "public") != 0)
	{
		ereport(WARNING,
				(errmsg("whatsapp: trigger \"%s\" on \"%s\" was not made by whatsapp.wa_odoo_enable(); it does nothing",
						td->tg_trigger->tgname, RelationGetRelationName(rel))));
		return PointerGetDatum(NULL);
	}
	if (!wa_odoo_events)
		return PointerGetDatum(NULL);

	/*
	 * invoice_sent: a message inserted on mail_message.  Is it about an
	 * invoice, of an outgoing kind?  Most messages end here; the rest is
	 * checked at rendering (odoo_sent.c).
	 */
	if (ev->needs_sent)
	{
		int64		msg_id;

		if (!TRIGGER_FIRED_BY_INSERT(td->tg_event) ||
			!wa_odoo_sent_candidate(rel, td->tg_trigtuple, &id, &msg_id))
			return PointerGetDatum(NULL);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "whatsapp: SPI_connect failed");
		render(ev, id, false, &r, msg_id);
		if (r.fires && r.state != NULL)
			odoo_record(&r);
		SPI_finish();
		return PointerGetDatum(NULL);
	}

	/* Did the row enter the event's state?  Most firings end here. */
	{
		const TrigCols *tc = trig_columns(ev->model, rel);
		TupleDesc	desc = RelationGetDescr(rel);

		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		{
			if (!trig_row_holds(ev, tc, desc, td->tg_newtuple) ||
				trig_row_holds(ev, tc, desc, td->tg_trigtuple))
				return PointerGetDatum(NULL);
		}
		else if (!trig_row_holds(ev, tc, desc, td->tg_trigtuple))
			return PointerGetDatum(NULL);
	}

	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	attno = SPI_fnumber(RelationGetDescr(rel), "id");
	if (attno <= 0)
		return PointerGetDatum(NULL);
	type = SPI_gettypeid(RelationGetDescr(rel), attno);
	d = heap_getattr(tup, attno, RelationGetDescr(rel), &isnull);
	if (isnull)
		return PointerGetDatum(NULL);
	if (type == INT4OID)
		id = DatumGetInt32(d);
	else if (type == INT8OID)
		id = DatumGetInt64(d);
	else
		return PointerGetDatum(NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "whatsapp: SPI_connect failed");
	render(ev, id, false, &r, 0);
	if (r.fires && r.state != NULL)
		odoo_record(&r);
	SPI_finish();
	return PointerGetDatum(NULL);
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

PG_FUNCTION_INFO_V1(wa_odoo_preview);

Datum
wa_odoo_preview(PG_FUNCTION_ARGS)
{
	char	   *event;
	const OdooEvent *ev;
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
	ev = find_event(event);
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
	render(ev, id, true, &r, 0);
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
	odoo_json_kv_str(&b, "outcome", r.state);
	odoo_json_kv_str(&b, "failure_type", r.failure_type);
	odoo_json_kv_str(&b, "reason", r.reason);
	odoo_json_kv_str(&b, "account", r.account);
	odoo_json_kv_str(&b, "recipient", r.recipient);
	odoo_json_kv_str(&b, "template", r.template);
	odoo_json_kv_str(&b, "language", r.language);
	appendStringInfoString(&b, ", \"values\": ");
	appendStringInfoString(&b, r.values.len > 1 ? r.values.data : "{}");
	appendStringInfoString(&b, ", \"message\": ");
	appendStringInfoString(&b, r.payload.len ? r.payload.data : "null");
	odoo_json_kv_str(&b, "dedupe_key", r.dedupe_key);
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
	appendStringInfo(&b, ", \"access_token_created_at_commit\": %s",
					 (r.token_new || r.att_token_new) ? "true" : "false");
	odoo_json_kv_str(&b, "pdf_source", r.pdf_source);
	appendStringInfoString(&b, ", \"links\": {\"page\": ");
	if (r.link_page)
		escape_json(&b, r.link_page);
	else
		appendStringInfoString(&b, "null");
	appendStringInfoString(&b, ", \"pdf\": ");
	if (r.link_pdf)
		escape_json(&b, r.link_pdf);
	else
		appendStringInfoString(&b, "null");
	appendStringInfoChar(&b, '}');
	appendStringInfoChar(&b, '}');

	old = MemoryContextSwitchTo(outer);
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(b.data)));
	MemoryContextSwitchTo(old);
	SPI_finish();
	PG_RETURN_DATUM(result);
}
