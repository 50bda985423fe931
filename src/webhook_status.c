/*-------------------------------------------------------------------------
 *
 * webhook_status.c
 *	  Statuses from Meta's webhooks, and the statuses held until the worker
 *	  records their message (whatsapp._after_record).
 *
 * Statuses.  Each is matched by biz_opaque_callback_data (our message id,
 * with the wamid, when the message has one, agreeing), then by wamid, among
 * the messages of the accounts with the change's phone_number_id.  One
 * statement per status finds the message, moves it forward if the status
 * is news, and logs it.  States never move backwards:
 *
 *	  sent		logged; pricing and conversation recorded
 *	  delivered sent -> delivered; delivered_at is Meta's time (the earliest)
 *	  read		sent, delivered -> read; read_at set (the earliest), and
 *				delivered_at set to the read time when empty or later
 *	  played	as read (voice messages)
 *	  failed	sent -> failed with Meta's error; after delivered or read
 *				only logged
 *
 * A status for a message the worker has not recorded yet (still queued or
 * sending, or its wamid unknown) is held in whatsapp.status_held.  The
 * worker calls whatsapp._after_record() after each batch it records, which
 * applies what was held for those messages.  A transaction-level lock
 * (advisory tag, this database, WA_HOLD_KEY) closes the race: a webhook
 * takes it exclusively and looks again with the newest snapshot before
 * holding; the worker takes it shared after its record statement and
 * before it reads the held rows.  At REPEATABLE READ, a message the worker
 * recorded after the caller's snapshot raises 40001 instead of being held.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"
#include "jsonb_access.h"
#include "webhook.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(wa_after_record);

/* Held statuses nobody claimed are dropped after this long. */
#define WA_HELD_MAX_AGE		"7 days"

/* The lock that orders holding a status against the worker's record. */
#define WA_HOLD_KEY1		0x77687473	/* "whts" */
#define WA_HOLD_KEY2		0x686f6c64	/* "hold" */
#define WA_HOLD_KEY4		4

/* Status kinds; "played" is applied as "read". */
typedef enum StatusKind
{
	ST_SENT = 0,
	ST_DELIVERED,
	ST_READ,
	ST_FAILED,
	ST_NKINDS
} StatusKind;

typedef enum MatchBy
{
	MATCH_ID = 0,
	MATCH_WAMID,
	MATCH_NKINDS
} MatchBy;

/* What happened to one status. */
typedef enum StatusOutcome
{
	SO_CHANGED,					/* the message moved or got new data */
	SO_NO_CHANGE,				/* duplicate or out of order: logged */
	SO_HELD,					/* waits for the worker */
	SO_NOT_FOUND,				/* (held statuses only) nothing to apply to */
	SO_IN_FLIGHT				/* (held statuses only) still waits */
} StatusOutcome;

/* One status, extracted. */
typedef struct StatusIn
{
	StatusKind	kind;
	const char *status;			/* as Meta wrote it */
	char	   *wamid;
	int64		message_id;		/* 0 when no usable callback data */
	TimestampTz ts;
	Jsonb	   *pricing;
	Jsonb	   *conversation;
	bool		has_code;
	int32		code;
	char	   *title;
	char	   *details;
	const char *failure_type;
	char	   *recipient_id;	/* wa_id digits */
	char	   *recipient_user_id;
	JsonbValue *raw;			/* the status object as received */
} StatusIn;

static SPIPlanPtr plan_status[ST_NKINDS][MATCH_NKINDS][2][2];
static SPIPlanPtr plan_find[MATCH_NKINDS];
static SPIPlanPtr plan_find_latest[MATCH_NKINDS];
static SPIPlanPtr plan_msg_identities = NULL;
static SPIPlanPtr plan_msg_identities_old = NULL;
static SPIPlanPtr plan_have_function = NULL;
static SPIPlanPtr plan_hold = NULL;
static SPIPlanPtr plan_purge_held = NULL;
static SPIPlanPtr plan_held_any = NULL;
static SPIPlanPtr plan_held_for = NULL;
static SPIPlanPtr plan_held_delete = NULL;
static const char *const status_set[ST_NKINDS] = {
	/* sent: the worker recorded it; only Meta's pricing is news */
	"",
	/* delivered */
	"state = CASE WHEN m.state = 'sent' THEN 'delivered' ELSE m.state END,"
	" delivered_at = CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   THEN LEAST(COALESCE(m.delivered_at, $4), $4) ELSE m.delivered_at END,",
	/* read (and played): delivered no later than read */
	"state = CASE WHEN m.state IN ('sent', 'delivered') THEN 'read' ELSE m.state END,"
	" delivered_at = CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   THEN LEAST(COALESCE(m.delivered_at, $4), $4) ELSE m.delivered_at END,"
	" read_at = CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   THEN LEAST(COALESCE(m.read_at, $4), $4) ELSE m.read_at END,",
	/* failed: from sent only; after delivered or read it is only logged */
	"state = CASE WHEN m.state = 'sent' THEN 'failed' ELSE m.state END,"
	" failed_at = CASE WHEN m.state = 'sent' THEN $4 ELSE m.failed_at END,"
	" failure_type = CASE WHEN m.state = 'sent' THEN $10 ELSE m.failure_type END,"
	" error_code = CASE WHEN m.state = 'sent' THEN $7 ELSE m.error_code END,"
	" error_title = CASE WHEN m.state = 'sent' THEN $8 ELSE m.error_title END,"
	" error_details = CASE WHEN m.state = 'sent' THEN $9 ELSE m.error_details END,"
};

/*
 * For whatsapp.stats (stats.c): which transitions the update makes, from
 * the old row (1: delivered_at set for the first time, 2: read_at set for
 * the first time, 4: sent -> failed).  RETURNING shows only the new row,
 * so the update writes them into stats_events for it.  A status that
 * changes nothing, or only pricing, makes none: exact under redeliveries,
 * reorders and concurrent webhooks (the SET sees the row it replaces).
 */
static const char *const status_events[ST_NKINDS] = {
	NULL,
	"stats_events = CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   AND m.delivered_at IS NULL THEN 1 ELSE 0 END,",
	"stats_events = CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   AND m.delivered_at IS NULL THEN 1 ELSE 0 END"
	" + CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   AND m.read_at IS NULL THEN 2 ELSE 0 END,",
	"stats_events = CASE WHEN m.state = 'sent' THEN 4 ELSE 0 END,",
};

/* When is the status news for the message (besides pricing)? */
static const char *const status_change[ST_NKINDS] = {
	"false",
	"m.state = 'sent' OR (m.state IN ('delivered', 'read')"
	"  AND (m.delivered_at IS NULL OR m.delivered_at > $4))",
	"m.state IN ('sent', 'delivered') OR (m.state = 'read'"
	"  AND (m.delivered_at IS NULL OR m.read_at IS NULL OR m.read_at > $4"
	"       OR m.delivered_at > $4))",
	"m.state = 'sent'",
};

static const char *const match_sql[MATCH_NKINDS] = {
	"m.id = $1 AND (m.wamid IS NULL OR m.wamid = $2)",
	"m.wamid = $2",
};

static Oid	status_types[14] = {INT8OID, TEXTOID, INT4ARRAYOID, TIMESTAMPTZOID,
	JSONBOID, JSONBOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID,
BYTEAOID};

/*
 * The statement that applies one status: move the message if the status
 * is news, and log it.  Returns the message id, or no row when there was
 * nothing to do (see run_status).  With store, a payload that is this one
 * status is stored by the same statement when it applied ($12, $13): the
 * common case takes one statement.
 */
static SPIPlanPtr
status_plan(StatusKind kind, MatchBy by, bool store, bool stats)
{
	if (stats && status_events[kind] == NULL)
		stats = false;
	if (plan_status[kind][by][store][stats] == NULL)
	{
		char	   *sql = psprintf(
								   "WITH u AS ("
								   "  UPDATE whatsapp.message m SET %s%s"
								   "     pricing = COALESCE($5, m.pricing),"
								   "     conversation = COALESCE($6, m.conversation)"
								   "   WHERE %s AND m.account_id = ANY ($3)"
								   "     AND m.state NOT IN ('queued', 'sending')"
								   "     AND ((%s)"
								   "       OR ($5 IS NOT NULL AND m.pricing IS DISTINCT FROM $5)"
								   "       OR ($6 IS NOT NULL AND m.conversation IS DISTINCT FROM $6))"
								   "  RETURNING m.id, m.state%s)%s%s"
								   " INSERT INTO whatsapp.log (message_id, event, code, message)"
								   " SELECT u.id, 'webhook', $7, $11 || '; message is ' || u.state FROM u"
								   " RETURNING message_id",
								   status_set[kind], stats ? status_events[kind] : "",
								   match_sql[by], status_change[kind],
								   stats ? ", m.account_id, m.stats_events, m.failure_type" : "",
								   store ? ","
								   " w AS ("
								   "  INSERT INTO whatsapp.webhook (account_id, payload, applied, digest)"
								   "  SELECT $12, $13, 1, $14 FROM u)" : "",
								   stats ? ","
								   " s AS ("
								   "  INSERT INTO whatsapp.stats_delta"
								   "   (account_id, failure_type, delivered, read, failed)"
								   "  SELECT u.account_id,"
								   "   CASE WHEN u.stats_events & 4 <> 0 THEN u.failure_type END,"
								   "   NULLIF(u.stats_events & 1, 0), NULLIF(u.stats_events & 2, 0) / 2,"
								   "   NULLIF(u.stats_events & 4, 0) / 4"
								   "  FROM u WHERE u.stats_events <> 0)" : "");

		plan_status[kind][by][store][stats] = wa_keep_plan(sql, store ? 14 : 11, status_types);
		pfree(sql);
	}
	return plan_status[kind][by][store][stats];
}

/* The message a status names, and its state. */
static SPIPlanPtr
find_plan(MatchBy by)
{
	static const char *const sql[MATCH_NKINDS] = {
		"SELECT m.id, m.state FROM whatsapp.message m WHERE m.id = $1"
		" AND (m.wamid IS NULL OR m.wamid = $2) AND m.account_id = ANY ($3)",
		"SELECT m.id, m.state FROM whatsapp.message m WHERE m.wamid = $2"
		" AND m.account_id = ANY ($3) LIMIT 1",
	};

	return wa_plan(&plan_find[by], sql[by], 3, status_types);
}

static void
status_args(HookCtx *ctx, StatusIn *st, Datum accounts, const char *logmsg,
			Datum *values, char *nulls)
{
	memset(nulls, ' ', 14);
	values[0] = Int64GetDatum(st->message_id);
	if (st->message_id == 0)
		nulls[0] = 'n';
	values[1] = CStringGetTextDatum(st->wamid);
	values[2] = accounts;
	values[3] = TimestampTzGetDatum(st->ts);
	values[4] = st->pricing ? JsonbPGetDatum(st->pricing) : (Datum) 0;
	nulls[4] = st->pricing ? ' ' : 'n';
	values[5] = st->conversation ? JsonbPGetDatum(st->conversation) : (Datum) 0;
	nulls[5] = st->conversation ? ' ' : 'n';
	values[6] = Int32GetDatum(st->code);
	nulls[6] = (st->kind == ST_FAILED && st->has_code) ? ' ' : 'n';
	values[7] = st->title ? CStringGetTextDatum(st->title) : (Datum) 0;
	nulls[7] = st->title ? ' ' : 'n';
	values[8] = st->details ? CStringGetTextDatum(st->details) : (Datum) 0;
	nulls[8] = st->details ? ' ' : 'n';
	values[9] = st->failure_type ? CStringGetTextDatum(st->failure_type) : (Datum) 0;
	nulls[9] = st->failure_type ? ' ' : 'n';
	values[10] = CStringGetTextDatum(logmsg);
	values[11] = Int32GetDatum(ctx->verified_by);
	values[12] = ctx->payload ? PointerGetDatum(ctx->payload) : (Datum) 0;
	nulls[12] = ctx->payload ? ' ' : 'n';
	values[13] = ctx->digest ? PointerGetDatum(ctx->digest) : (Datum) 0;
	nulls[13] = ctx->digest ? ' ' : 'n';
}

typedef struct RunResult
{
	bool		found;
	int64		id;
	bool		in_flight;
	bool		changed;
	char		state[16];
} RunResult;

/*
 * Apply a status to the message it names by one key.  The common case is
 * one statement.  When it changed nothing, look: no such message, still in
 * flight (the caller holds the status), or truly nothing new (logged).
 */
static void
run_status(HookCtx *ctx, StatusIn *st, MatchBy by, Datum *values, char *nulls,
		   RunResult *res)
{
	bool		isnull;
	char	   *state;
	bool		store = ctx->single_status && !ctx->stored && ctx->nnotes == 0 &&
		ctx->payload != NULL;

	memset(res, 0, sizeof(*res));
	wa_spi_check(wh_spi_run(status_plan(st->kind, by, store, ctx->stats), values, nulls, false, 0),
			  SPI_OK_INSERT_RETURNING, "status update");
	if (SPI_processed > 0)
	{
		ctx->stored |= store;
		res->found = res->changed = true;
		res->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_freetuptable(SPI_tuptable);
		return;
	}
	SPI_freetuptable(SPI_tuptable);

	wa_spi_check(wh_spi_run(find_plan(by), values, nulls, false, 1), SPI_OK_SELECT,
			  "message lookup");
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return;
	}
	res->found = true;
	res->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	strlcpy(res->state, state ? state : "", sizeof(res->state));
	SPI_freetuptable(SPI_tuptable);
	res->in_flight = (strcmp(res->state, "queued") == 0 ||
					  strcmp(res->state, "sending") == 0);
	if (res->in_flight)
		return;

	/* At READ COMMITTED the lookup may have seen a newer state: once more. */
	wa_spi_check(wh_spi_run(status_plan(st->kind, by, false, ctx->stats), values, nulls, false, 0),
			  SPI_OK_INSERT_RETURNING, "status update");
	res->changed = SPI_processed > 0;
	SPI_freetuptable(SPI_tuptable);
	if (!res->changed)
		wh_log_event(res->id, "webhook", st->kind == ST_FAILED && st->has_code, st->code,
				  psprintf("%s; no change, message is %s",
						   TextDatumGetCString(values[10]), res->state));
}

/* By callback data, then by wamid. */
static void
run_status_both(HookCtx *ctx, StatusIn *st, Datum *values, char *nulls,
				RunResult *res)
{
	if (st->message_id != 0)
	{
		run_status(ctx, st, MATCH_ID, values, nulls, res);
		if (res->found)
			return;
	}
	run_status(ctx, st, MATCH_WAMID, values, nulls, res);
}

/*
 * At REPEATABLE READ: does the newest committed state of the message
 * differ from what this transaction's snapshot showed?  Then the worker
 * recorded it meanwhile, and holding the status would lose it.  The
 * message is looked up as run_status_both does: a message found by the
 * callback data decides, and the wamid is tried only when there is none.
 */
static bool
recorded_since_snapshot(StatusIn *st, Datum accounts)
{
	static const char *const sql[MATCH_NKINDS] = {
		"SELECT m.state NOT IN ('queued', 'sending') FROM whatsapp.message m WHERE m.id = $1"
		" AND (m.wamid IS NULL OR m.wamid = $2) AND m.account_id = ANY ($3)",
		"SELECT m.state NOT IN ('queued', 'sending') FROM whatsapp.message m WHERE m.wamid = $2"
		" AND m.account_id = ANY ($3)",
	};
	Oid			types[3] = {INT8OID, TEXTOID, INT4ARRAYOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		found = false;
	bool		recorded = false;

	values[0] = Int64GetDatum(st->message_id);
	values[1] = CStringGetTextDatum(st->wamid);
	values[2] = accounts;
	for (int by = (st->message_id != 0 ? MATCH_ID : MATCH_WAMID); by < MATCH_NKINDS && !found; by++)
	{
		int			rc;
		bool		isnull;

		MemoryContext cxt = CurrentMemoryContext;

		rc = SPI_execute_snapshot(wa_plan(&plan_find_latest[by], sql[by], 3, types),
								  values, nulls, GetLatestSnapshot(),
								  InvalidSnapshot, true, false, 1);
		MemoryContextSwitchTo(cxt);
		wa_spi_check(rc, SPI_OK_SELECT, "message lookup");
		found = SPI_processed > 0;
		if (found)
			recorded = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
		SPI_freetuptable(SPI_tuptable);
	}
	return recorded;
}

static void
lock_hold(LOCKMODE mode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, WA_HOLD_KEY1, WA_HOLD_KEY2, WA_HOLD_KEY4);
	(void) LockAcquire(&tag, mode, false, false);
}

/* Is there a function whatsapp.name (the 0.3 objects)?  Inside SPI. */
static bool
have_function(const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(psprintf("whatsapp.%s", name))};
	bool		isnull;
	bool		found;

	wa_spi_check(wh_spi_run(wa_plan(&plan_have_function,
									"SELECT pg_catalog.to_regproc($1) IS NOT NULL", 1, types),
							values, NULL, true, 1),
				 SPI_OK_SELECT, "function lookup");
	found = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return found;
}

static void
record_131050(int64 message_id, StatusIn *st)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(message_id);
	values[1] = st->recipient_id ? CStringGetTextDatum(psprintf("+%s", st->recipient_id)) : (Datum) 0;
	nulls[1] = st->recipient_id ? ' ' : 'n';
	values[2] = st->recipient_user_id ? CStringGetTextDatum(st->recipient_user_id) : (Datum) 0;
	nulls[2] = st->recipient_user_id ? ' ' : 'n';
	values[3] = TimestampTzGetDatum(st->ts);

	/*
	 * In the order of the status's own time, like every consent event.
	 * Before ALTER EXTENSION UPDATE to 0.3 (the worker applying a held
	 * status with the older objects) there is no _consent_apply: the
	 * opt-out is recorded at the time of receipt.
	 */
	if (!have_function("_consent_apply"))
	{
		wa_spi_check(wh_spi_run(wa_plan(&plan_msg_identities_old,
										"SELECT whatsapp._opt_out_apply(m.account_id,"
										"  ARRAY[m.recipient, '+' || m.wa_id, $2, $3],"
										"  'marketing', 'error 131050', m.error_title, m.wamid)"
										" FROM whatsapp.message m WHERE m.id = $1 AND $4 IS NOT NULL",
										4, types),
								values, nulls, false, 0),
					 SPI_OK_SELECT, "131050 opt-out");
		SPI_freetuptable(SPI_tuptable);
		return;
	}
	wa_spi_check(wh_spi_run(wa_plan(&plan_msg_identities,
										"SELECT whatsapp._consent_apply('opt_out', m.account_id,"
										"  ARRAY[m.recipient, '+' || m.wa_id, $2, $3],"
										"  'marketing', 'error 131050', m.error_title, m.wamid, $4)"
										" FROM whatsapp.message m WHERE m.id = $1",
										4, types),
							   values, nulls, false, 0),
			  SPI_OK_SELECT, "131050 opt-out");
	SPI_freetuptable(SPI_tuptable);
}

static char *
status_logmsg(StatusIn *st)
{
	if (st->kind == ST_FAILED)
		return psprintf("status %s %s: %s%s%s", st->status, st->wamid,
						st->has_code ? psprintf("%d ", st->code) : "",
						st->title ? st->title : "",
						st->details ? psprintf(" (%s)", st->details) : "");
	return psprintf("status %s %s", st->status, st->wamid);
}

/*
 * Apply one status.  from_held: it comes from whatsapp.status_held, so it
 * is not held again (SO_IN_FLIGHT, SO_NOT_FOUND tell the caller).
 */
static StatusOutcome
apply_status(HookCtx *ctx, StatusIn *st, const char *phone_number_id,
			 bool from_held)
{
	Datum		values[14];
	char		nulls[14];
	int			naccounts;
	Datum		accounts = wh_account_ids_for(ctx, phone_number_id, &naccounts);
	char	   *logmsg = status_logmsg(st);
	RunResult	res;

	status_args(ctx, st, accounts, logmsg, values, nulls);
	run_status_both(ctx, st, values, nulls, &res);

	if (res.found && !res.in_flight)
	{
		if (res.changed && st->kind == ST_FAILED && st->has_code && st->code == 131050)
			record_131050(res.id, st);
		return res.changed ? SO_CHANGED : SO_NO_CHANGE;
	}
	if (from_held)
		return res.found ? SO_IN_FLIGHT : SO_NOT_FOUND;

	/*
	 * Not recorded yet, in this transaction's view.  Take the hold lock and
	 * look again with what has committed since.
	 */
	lock_hold(ExclusiveLock);
	if (recorded_since_snapshot(st, accounts))
	{
		if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent update of a whatsapp message"),
					 errdetail("The delivery worker recorded the message of status \"%s\" after this transaction's snapshot was taken.",
							   st->status),
					 errhint("Retry the transaction.")));
		/* READ COMMITTED: this statement sees what the worker committed */
		run_status_both(ctx, st, values, nulls, &res);
		if (res.found && !res.in_flight)
		{
			if (res.changed && st->kind == ST_FAILED && st->has_code && st->code == 131050)
				record_131050(res.id, st);
			return res.changed ? SO_CHANGED : SO_NO_CHANGE;
		}
	}

	/*
	 * Hold it for the worker, once: a redelivered status of the same kind
	 * for the same wamid adds no second row (status_held_once).
	 */
	{
		Oid			types[4] = {TEXTOID, INT8OID, TEXTOID, JSONBOID};
		Datum		hv[4];
		char		hn[4] = {' ', ' ', ' ', ' '};
		int64		mid = res.found ? res.id : 0;

		hv[0] = CStringGetTextDatum(phone_number_id);
		hv[1] = Int64GetDatum(mid);
		hn[1] = mid ? ' ' : 'n';
		hv[2] = CStringGetTextDatum(st->wamid);
		hv[3] = JsonbPGetDatum(JsonbValueToJsonb(st->raw));
		wa_spi_check(wh_spi_run(wa_plan(&plan_hold,
									 "INSERT INTO whatsapp.status_held"
									 " (phone_number_id, message_id, wamid, status)"
									 " VALUES ($1, $2, $3, $4)"
									 " ON CONFLICT (phone_number_id, wamid, (status OPERATOR(pg_catalog.->>) 'status'))"
									 " DO NOTHING", 4, types),
							 hv, hn, false, 0),
					 SPI_OK_INSERT, "holding a status");
		if (SPI_processed == 0)
			return SO_NO_CHANGE;	/* held already */
		wh_log_event(mid, "webhook", st->kind == ST_FAILED && st->has_code, st->code,
				  psprintf("%s; held until the worker records the message", logmsg));
		/* statuses nobody claimed: for messages this database never sent */
		wa_spi_check(wh_spi_run(wa_plan(&plan_purge_held,
									 "DELETE FROM whatsapp.status_held"
									 " WHERE held_at < pg_catalog.now() - interval '" WA_HELD_MAX_AGE "'",
									 0, NULL),
							 NULL, NULL, false, 0),
					 SPI_OK_DELETE, "purging held statuses");
	}
	return SO_HELD;
}

/* Which failure_type a failed status records, by Meta's code. */
static const char *
webhook_failure_type(bool has_code, int32 code)
{
	static const int recoverable[] = {131049, 131000, 131016, 131056, 130429,
	131057, 133004, 133015, 80007, 4, 1, 2};

	if (!has_code)
		return "whatsapp_unrecoverable";
	if (code >= 132000 && code < 133000)
		return "template";
	for (int i = 0; i < (int) lengthof(recoverable); i++)
		if (recoverable[i] == code)
			return "whatsapp_recoverable";
	return "whatsapp_unrecoverable";
}

/* Our message id, from biz_opaque_callback_data; 0 when it is none. */
static int64
callback_message_id(const char *s)
{
	char	   *end;
	long long	v;

	if (s == NULL || *s < '1' || *s > '9' || strlen(s) > 19)
		return 0;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0)
		return 0;
	return (int64) v;
}

/* Read one status object; false (with a note) when it cannot be applied. */
static bool
extract_status(HookCtx *ctx, JsonbValue *v, StatusIn *st, const char *where)
{
	JsonbContainer *o = wa_json_container(v, true);
	char	   *status;

	memset(st, 0, sizeof(*st));
	if (o == NULL)
	{
		wh_note(ctx, "%s is not an object", where);
		return false;
	}
	st->raw = v;
	st->wamid = wh_jstrict(o, "id");
	if (!wh_usable_id(st->wamid))
	{
		wh_note(ctx, "%s has no message id (wamid) of at most %d characters",
			 where, WA_MAX_ID_LEN);
		return false;
	}
	status = wh_jstrict(o, "status");
	if (status == NULL)
	{
		wh_note(ctx, "%s (%s) has no status", where, st->wamid);
		return false;
	}
	if (strcmp(status, "sent") == 0)
		st->kind = ST_SENT;
	else if (strcmp(status, "delivered") == 0)
		st->kind = ST_DELIVERED;
	else if (strcmp(status, "read") == 0 || strcmp(status, "played") == 0)
		st->kind = ST_READ;
	else if (strcmp(status, "failed") == 0)
		st->kind = ST_FAILED;
	else
	{
		wh_note(ctx, "%s (%s): status \"%.40s\" is not handled", where, st->wamid, status);
		return false;
	}
	st->status = status;
	st->message_id = callback_message_id(wa_json_string(o, "biz_opaque_callback_data"));
	if (!wh_jtimestamp(o, "timestamp", &st->ts))
	{
		st->ts = ctx->now;
		wh_note(ctx, "%s (%s): timestamp is missing or not Unix seconds; the time of receipt was used",
			 where, st->wamid);
	}
	st->pricing = wh_jsub(o, "pricing");
	if (st->pricing == NULL && wa_json_member(o, "pricing") != NULL)
		wh_note(ctx, "%s (%s): pricing is not an object", where, st->wamid);
	st->conversation = wh_jsub(o, "conversation");
	if (st->conversation == NULL && wa_json_member(o, "conversation") != NULL)
		wh_note(ctx, "%s (%s): conversation is not an object", where, st->wamid);
	st->recipient_id = wa_json_string(o, "recipient_id");
	if (st->recipient_id && strspn(st->recipient_id, "0123456789") != strlen(st->recipient_id))
		st->recipient_id = NULL;
	st->recipient_user_id = wa_json_string(o, "recipient_user_id");
	if (!wa_is_bsuid(st->recipient_user_id))
		st->recipient_user_id = NULL;
	if (st->kind == ST_FAILED)
	{
		JsonbContainer *errs = wa_json_array(o, "errors");
		JsonbContainer *e = (errs && JsonContainerSize(errs) > 0) ? wh_jelem_object(errs, 0) : NULL;

		st->has_code = wa_json_int(e, "code", &st->code);
		st->title = wa_json_string(e, "title");
		if (st->title == NULL)
			st->title = wa_json_string(e, "message");
		st->details = wa_json_string(wa_json_object(e, "error_data"), "details");
		if (e == NULL)
			wh_note(ctx, "%s (%s): a failed status without errors", where, st->wamid);
		st->failure_type = webhook_failure_type(st->has_code, st->code);
	}
	return true;
}

void
wh_apply_statuses(HookCtx *ctx, JsonbContainer *value, const char *pnid,
			   const char *where)
{
	JsonbValue *sv = wa_json_member(value, "statuses");
	JsonbContainer *arr = wa_json_container(sv, false);

	if (sv == NULL)
		return;
	if (arr == NULL)
	{
		wh_note(ctx, "%s: statuses is not an array", where);
		return;
	}
	for (uint32 i = 0; i < JsonContainerSize(arr); i++)
	{
		StatusIn	st;
		char	   *w = psprintf("%s statuses[%u]", where, i);

		if (!extract_status(ctx, getIthJsonbValueFromContainer(arr, i), &st, w))
			continue;
		switch (apply_status(ctx, &st, pnid, false))
		{
			case SO_CHANGED:
			case SO_HELD:
				ctx->applied++;
				break;
			default:
				break;
		}
	}
}

/*
 * _after_record(ids bigint[], codes integer[]): the worker's hook after it
 * recorded answers for the messages ids (codes: Meta's error codes, NULL
 * where none).  Records a marketing opt-out for 131050 and applies the
 * statuses held for these messages.
 */
Datum
wa_after_record(PG_FUNCTION_ARGS)
{
	ArrayType  *ids_a;
	Datum	   *ids;
	bool	   *id_nulls;
	int			nids;
	Datum	   *codes = NULL;
	bool	   *code_nulls = NULL;
	int			ncodes = 0;
	Datum	   *stopped;
	int			nstopped = 0;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	bool		isnull;
	bool		any_held;
	MemoryContext call_cxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	ids_a = PG_GETARG_ARRAYTYPE_P(0);
	deconstruct_array(ids_a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &ids, &id_nulls, &nids);
	if (!PG_ARGISNULL(1))
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), INT4OID, 4, true, TYPALIGN_INT,
						  &codes, &code_nulls, &ncodes);
	if (nids == 0)
		PG_RETURN_VOID();

	stopped = palloc(sizeof(Datum) * nids);
	for (int i = 0; i < ncodes && i < nids; i++)
		if (!code_nulls[i] && !id_nulls[i] && DatumGetInt32(codes[i]) == 131050)
			stopped[nstopped++] = ids[i];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(call_cxt);

	/* 131050: the user stopped marketing messages. */
	if (nstopped > 0)
	{
		values[0] = PointerGetDatum(construct_array(stopped, nstopped, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		wa_spi_check(SPI_execute_with_args("SELECT whatsapp._opt_out_apply(m.account_id,"
										"  ARRAY[m.recipient, '+' || m.wa_id], 'marketing',"
										"  'error 131050', m.error_title, m.wamid)"
										" FROM whatsapp.message m"
										" WHERE m.id = ANY ($1) AND m.state = 'failed'",
										1, types, values, NULL, false, 0),
				  SPI_OK_SELECT, "131050 opt-out");
		MemoryContextSwitchTo(call_cxt);
	}

	/* Statuses held for these messages: see the header comment. */
	lock_hold(ShareLock);
	wa_spi_check(wh_spi_run(wa_plan(&plan_held_any,
							   "SELECT EXISTS (SELECT 1 FROM whatsapp.status_held)", 0, NULL),
					  NULL, NULL, false, 1),
			  SPI_OK_SELECT, "held status lookup");
	any_held = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (any_held)
	{
		HookCtx		ctx;
		SPITupleTable *tt;
		uint64		nheld;
		Datum	   *done;
		int			ndone = 0;

		wh_begin(&ctx);
		wh_load_accounts(&ctx);
		values[0] = PointerGetDatum(ids_a);
		wa_spi_check(wh_spi_run(wa_plan(&plan_held_for,
								   "SELECT h.id, h.phone_number_id, h.status FROM whatsapp.status_held h"
								   " WHERE h.id IN ("
								   "   SELECT h1.id FROM whatsapp.status_held h1"
								   "    WHERE h1.message_id = ANY ($1)"
								   "   UNION"
								   "   SELECT h2.id FROM whatsapp.status_held h2"
								   "     JOIN whatsapp.message m ON m.wamid = h2.wamid"
								   "    WHERE m.id = ANY ($1))"
								   " ORDER BY h.id", 1, types),
						  values, NULL, false, 0),
				  SPI_OK_SELECT, "held status lookup");
		tt = SPI_tuptable;
		nheld = SPI_processed;
		done = palloc(sizeof(Datum) * Max(nheld, 1));
		for (uint64 i = 0; i < nheld; i++)
		{
			Datum		hid = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);
			char	   *pnid = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
			Jsonb	   *j = DatumGetJsonbP(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
			JsonbValue	v;
			StatusIn	st;
			StatusOutcome o;

			v.type = jbvBinary;
			v.val.binary.data = &j->root;
			v.val.binary.len = VARSIZE(j) - VARHDRSZ;
			if (!extract_status(&ctx, &v, &st, "held status"))
			{
				done[ndone++] = hid;
				continue;
			}
			o = apply_status(&ctx, &st, pnid, true);
			if (o == SO_IN_FLIGHT)
				continue;		/* queued again: wait for its next record */
			if (o == SO_NOT_FOUND)
				wh_log_event(0, "webhook", false, 0,
						  psprintf("%s: held, but its message now has another wamid; discarded",
								   status_logmsg(&st)));
			done[ndone++] = hid;
		}
		if (ndone > 0)
		{
			values[0] = PointerGetDatum(construct_array(done, ndone, INT8OID, 8,
														FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			wa_spi_check(wh_spi_run(wa_plan(&plan_held_delete,
									   "DELETE FROM whatsapp.status_held WHERE id = ANY ($1)",
									   1, types),
							  values, NULL, false, 0),
					  SPI_OK_DELETE, "deleting applied held statuses");
		}
	}
	SPI_finish();
	PG_RETURN_VOID();
}
