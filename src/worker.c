/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delivery worker of one database: claim queued messages in short
 *	  transactions, send them through the HTTP engine, record the answers
 *	  in batches.
 *
 * The life of a message here:
 *
 *	  1. A claim transaction moves up to a batch of due messages from
 *		 queued to sending and commits with synchronous_commit on.  Only
 *		 then do the requests leave.  Per (account, recipient) only the
 *		 oldest unsent message is ever claimed, and only when none of that
 *		 pair is in flight, so a recipient gets messages in enqueue order.
 *	  2. Requests run concurrently in libcurl (http.c), up to
 *		 whatsapp.max_inflight, each account paced to its max_mps by a
 *		 token bucket.
 *	  3. Answers are classified (cloudapi.c) and recorded, many per
 *		 transaction, together with one whatsapp.log row per attempt.
 *
 * No transaction is ever open while the worker waits for the network.  A
 * message that was sending when the worker died is "in doubt": at start
 * the worker requeues it or fails it, as whatsapp.in_doubt says.  At most
 * max_inflight requests plus one batch of unrecorded answers can be in
 * doubt, since the worker claims only into free slots.
 *
 * The worker sleeps in one WaitEventSet: its latch (set at the commit of
 * an enqueue, by a NOTIFY whatsapp, or by a signal) and the HTTP engine's
 * event socket.  SIGTERM stops claiming and waits up to
 * whatsapp.shutdown_timeout for the answers in flight.
 *
 * Plans and statistics.  The worker keeps its plans for its whole life,
 * and the planner remakes them whenever autovacuum analyzes the outbox:
 * often while nothing is queued (statistics that put the partial indexes
 * at one row), or when the table was nearly empty.  So the claim and the
 * record are written so that the statistics cannot choose a plan that
 * reads more than the batch, rather than hoping they are right:
 *
 *	  - every scan of whatsapp.message has an index condition: the claim's
 *		candidates come from message_claim_idx (account, due time) in its
 *		order up to the LIMIT, each checked against message_pair_idx by a
 *		correlated probe; the rows to change are then reached through the
 *		primary key, "m.id = ANY (ids)", with the claimed ids (the claim)
 *		or the batch's own (record, block, requeue);
 *	  - the claim's UPDATE has no join: the ids are an InitPlan's array;
 *	  - the record's UPDATE joins the batch's arrays to the outbox with
 *		nested loops off for that statement (execute_batch_plan): a merge
 *		join of the sorted arrays with those ids, never a nested loop that
 *		scans the outbox once per answer;
 *	  - where the state must be checked on rows reached by id, it is
 *		tested with pg_catalog.texteq(), which no partial index predicate
 *		can be proven from, so no plan scans a partial index whole;
 *	  - sequential and bitmap scans and hash joins are off for the whole
 *		session, so a table the statistics call tiny is still read by
 *		index; JIT is off too, or the plans those settings price at
 *		disable_cost would be compiled at every run.
 *
 * test/t/110_steady_plans.pl reads the plans back (auto_explain) after
 * analyzing an empty outbox and one of delivered messages;
 * bench/throughput.sh measures a fresh outbox against one with 1,000,000
 * delivered messages.
 *
 * Errors.  A turn that raises is reported in full (EmitErrorReport), its
 * transaction aborted, and the worker goes on after a pause.  Requests
 * that were claimed, committed as sending, but never started because
 * starting one raised are queued again by the next turn, their attempt
 * given back, so that neither they nor the later messages of their
 * recipients wait for a restart.  Tokens live only in request headers,
 * which are wiped when their last user lets go, on every path.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"
#include "cloudapi.h"
#include "http.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

/* Record answers when this many wait, or when the oldest waited this long. */
#define WA_RECORD_BATCH_MIN		64
#define WA_RECORD_MAX_WAIT_MS	20
/*
 * Claims triggered by commits come at most this often: commits that arrive
 * close together share one durable claim.  A commit after a quiet spell is
 * claimed at once.
 */
#define WA_CLAIM_MIN_INTERVAL_MS 20
/* How often old log rows, and old content, are purged. */
#define WA_PURGE_INTERVAL_MS	60000
/* The next turn of a content purge that has more rows due. */
#define WA_CONTENT_PURGE_AGAIN_MS 200
/* Pause after an error in a cycle, so a persistent one does not spin. */
#define WA_ERROR_PAUSE_MS		1000

/*
 * WA_TRACE_TIMING (make COPT=-DWA_TRACE_TIMING): one LOG line per claim
 * that started requests, with the time of each stage from the commit that
 * rang the worker's doorbell to the requests' bytes leaving.  For
 * measurements only (bench/README.md, latency.sh); off in normal builds.
 */
#ifdef WA_TRACE_TIMING
#define WA_TRACE_STAGES 6
static TimestampTz trace_at[WA_TRACE_STAGES];	/* rung, woke, begin, claimed,
												 * committed, started */
static TimestampTz trace_woke = 0;	/* the latest return from the wait */
#define WA_TRACE(i) (trace_at[(i)] = GetCurrentTimestamp())
/* per second: microseconds in each part of the loop, and counts */
enum
{
	WA_TT_WAIT, WA_TT_HTTP, WA_TT_RECORD, WA_TT_CLAIM, WA_TT_OTHER, WA_TT_N
};
static int64 tt_us[WA_TT_N];
static int64 tt_turns, tt_records, tt_recorded, tt_claims, tt_claimed, tt_free;
static TimestampTz tt_since = 0, tt_mark = 0;
#define WA_TT(part) \
	do { \
		TimestampTz now_ = GetCurrentTimestamp(); \
		if (tt_mark) \
			tt_us[(part)] += now_ - tt_mark; \
		tt_mark = now_; \
	} while (0)
static void
tt_report(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (tt_since == 0)
		tt_since = now;
	if (now - tt_since < USECS_PER_SEC)
		return;
	if (tt_claimed > 0 || tt_recorded > 0)
		elog(LOG, "TPTRACE span_us=%ld turns=%ld wait=%ld http=%ld record=%ld claim=%ld other=%ld records=%ld recorded=%ld claims=%ld claimed=%ld free_at_claim=%ld running=%d",
			 (long) (now - tt_since), (long) tt_turns, (long) tt_us[WA_TT_WAIT],
			 (long) tt_us[WA_TT_HTTP], (long) tt_us[WA_TT_RECORD],
			 (long) tt_us[WA_TT_CLAIM], (long) tt_us[WA_TT_OTHER],
			 (long) tt_records, (long) tt_recorded, (long) tt_claims,
			 (long) tt_claimed, (long) (tt_claims ? tt_free / tt_claims : 0),
			 wa_http_running());
	memset(tt_us, 0, sizeof(tt_us));
	tt_turns = tt_records = tt_recorded = tt_claims = tt_claimed = tt_free = 0;
	tt_since = now;
}
#else
#define WA_TRACE(i) ((void) 0)
#define WA_TT(part) ((void) 0)
#endif

/* Headers of an account, shared by its running transfers. */
typedef struct WaHeaders
{
	struct curl_slist *list;
	int			refs;			/* running transfers + 1 while current */
} WaHeaders;

typedef struct WaAccount
{
	int32		id;
	char	   *name;
	char	   *url;
	WaHeaders  *headers;		/* NULL when the token cannot be used */
	bytea	   *sealed;			/* to notice a changed token */
	char	   *key_id;
	int			max_mps;
	bool		usable;
	TimestampTz backoff_until;
	double		tokens;			/* pacing bucket */
	TimestampTz refilled_at;
	bool		more;			/* claim again: the last claim was full */
	TimestampTz next_due;		/* earliest future retry, or 0 */
	bool		due_known;		/* next_due is current (see claim()) */
	uint64		claim_seq;		/* claim statements run for it so far */
} WaAccount;

/* A classified answer waiting to be recorded. */
typedef struct WaResult
{
	int64		message_id;
	int32		account_id;
	int32		attempt;
	long		http_status;
	double		latency_ms;
	bool		pair_waiting;	/* as the transfer had them */
	uint64		claim_seq;
	WaOutcome	outcome;
} WaResult;

static volatile sig_atomic_t got_sigterm = false;

static WaDbSlot *slot = NULL;
static MemoryContext account_context = NULL;
static MemoryContext result_context = NULL;
static MemoryContext cycle_context = NULL;

static WaAccount *accounts = NULL;
static int	naccounts = 0;
static bool accounts_loaded = false;
static uint32 seen_generation = 0;
static bool neutralized = false;

static WaResult *results = NULL;
static int	nresults = 0;
static int	results_cap = 0;
static TimestampTz oldest_result = 0;

static Oid	extension_oid = InvalidOid;
static Oid	message_relid = InvalidOid;	/* whatsapp.message of that extension */
static bool in_doubt_resolved = false;

/* A claim must follow in the next turn: set where no answer would ask. */
static bool claim_again = false;

/*
 * Messages committed as sending whose requests never started: queued
 * again by the next cycle.  Room is reserved before requests start, so
 * the catch block that fills this allocates nothing.
 */
static int64 *unstarted = NULL;
static int	nunstarted = 0;
static int	unstarted_cap = 0;
static char unstarted_reason[200];

static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_block = NULL;
static SPIPlanPtr plan_record = NULL;
static SPIPlanPtr plan_next_due = NULL;
static SPIPlanPtr plan_after_record = NULL;
/* The plans count in whatsapp.stats (the 0.3 objects were there). */
static bool plans_stats = false;

/*
 * Do they name whatsapp.message's phase column (0.3 on) beside state?  The
 * partial indexes on queued and sending messages name phase in their
 * predicates (so that a status update can be a HOT update); a statement
 * must name it too for the planner to use them.  Before ALTER EXTENSION
 * UPDATE the column is missing and the old indexes name state.
 */
static bool plans_phase = false;

#define PHASE_IF(cond) (plans_phase ? (cond) : "")

/* Sent-per-second ring for the status view's "last minute". */
static int64 sent_ring[60];
static int64 sent_ring_sec[60];

static void
wa_worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

static void
set_state(const char *state)
{
	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	strlcpy(slot->state, state, sizeof(slot->state));
	LWLockRelease(wa_shared->lock);
}

static void
set_last_error(const char *msg)
{
	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	strlcpy(slot->last_error, msg, sizeof(slot->last_error));
	LWLockRelease(wa_shared->lock);
}

static void
count_sent(int n)
{
	int64		sec = GetCurrentTimestamp() / USECS_PER_SEC;
	int			i = (int) (sec % 60);
	int64		total = 0;

	if (sent_ring_sec[i] != sec)
	{
		sent_ring_sec[i] = sec;
		sent_ring[i] = 0;
	}
	sent_ring[i] += n;
	for (int j = 0; j < 60; j++)
		if (sec - sent_ring_sec[j] < 60)
			total += sent_ring[j];
	pg_atomic_write_u64(&slot->sent_last_minute, (uint64) total);
	if (n > 0)
		pg_atomic_fetch_add_u64(&slot->sent_total, (uint64) n);
}

/* ----------
 * Secrets held in memory: wiped when an account is dropped or reloaded.
 * ----------
 */
static void
headers_release(WaHeaders *h)
{
	if (h == NULL || --h->refs > 0)
		return;
	for (struct curl_slist *s = h->list; s != NULL; s = s->next)
		explicit_bzero(s->data, strlen(s->data));
	curl_slist_free_all(h->list);
	free(h);
}

static void
transfer_released(WaTransfer *t)
{
	headers_release((WaHeaders *) t->headers_ref);
}

static WaHeaders *
headers_make(const char *token)
{
	WaHeaders  *h = calloc(1, sizeof(WaHeaders));
	char	   *auth;
	struct curl_slist *l;

	if (h == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	auth = psprintf("Authorization: Bearer %s", token);
	l = curl_slist_append(NULL, auth);
	explicit_bzero(auth, strlen(auth));
	pfree(auth);
	if (l == NULL ||
		(h->list = curl_slist_append(l, "Content-Type: application/json")) == NULL ||
		curl_slist_append(h->list, "Expect:") == NULL)
	{
		if (l != NULL)
		{
			h->list = l;
			h->refs = 1;
			headers_release(h);
		}
		else
			free(h);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("could not build request headers")));
	}
	h->refs = 1;
	return h;
}

/* headers_make(), and the token wiped whatever happens. */
static WaHeaders *
headers_from_token(char *token)
{
	WaHeaders  *volatile h = NULL;

	PG_TRY();
	{
		h = headers_make(token);
	}
	PG_CATCH();
	{
		wa_wipe(token);
		PG_RE_THROW();
	}
	PG_END_TRY();
	wa_wipe(token);
	return h;
}

static void
forget_accounts(void)
{
	for (int i = 0; i < naccounts; i++)
		headers_release(accounts[i].headers);
	accounts = NULL;
	naccounts = 0;
	accounts_loaded = false;
	if (account_context)
	{
		MemoryContextDelete(account_context);
		account_context = NULL;
	}
}

static WaAccount *
find_account(int32 id)
{
	for (int i = 0; i < naccounts; i++)
		if (accounts[i].id == id)
			return &accounts[i];
	return NULL;
}

static char *
build_url(const char *phone_number_id)
{
	const char *base = wa_api_url;
	size_t		len = strlen(base);

	while (len > 0 && base[len - 1] == '/')
		len--;
	return psprintf("%.*s/%s/%s/messages", (int) len, base, wa_api_version,
					phone_number_id);
}

/* ----------
 * Transactions.  Every unit of work follows the same skeleton.
 * ----------
 */
static void
begin_work(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

static void
free_plans(void)
{
	if (plan_claim)
		SPI_freeplan(plan_claim);
	if (plan_record)
		SPI_freeplan(plan_record);
	if (plan_next_due)
		SPI_freeplan(plan_next_due);
	if (plan_after_record)
		SPI_freeplan(plan_after_record);
	if (plan_block)
		SPI_freeplan(plan_block);
	plan_claim = plan_record = plan_next_due = plan_after_record = plan_block = NULL;
}

/*
 * The claim.  The candidates are chosen in a sub-SELECT whose result, an
 * array of ids, is computed once (an InitPlan) before the UPDATE reads the
 * table: the UPDATE has no join, and its only index condition is the
 * primary key against that array, so it touches the claimed rows and no
 * others whatever the statistics say.  The candidates come from
 * message_claim_idx, in its order, up to the LIMIT.  OFFSET 0 keeps the NOT
 * EXISTS a correlated subplan, an index probe of message_pair_idx on
 * (account, recipient, id) per candidate, whatever the statistics say.  As
 * an anti-join, a fresh outbox or stale statistics (a burst queued onto a
 * table of sent messages, estimated at one queued row) got a plan that
 * scans every queued and sending row of the account for each candidate:
 * quadratic, about 0.4 s per claim of 200 with 10,000 queued.  FOR UPDATE
 * SKIP LOCKED locks the candidates in the sub-SELECT and rechecks its
 * conditions on the locked rows, so the UPDATE needs no condition of its
 * own on the state.
 *
 * A recipient who opted out since enqueue, or whom Odoo's phone_blacklist
 * lists, is blocked, not sent: claim() asks the opt-out rule
 * (wa_opt_out_reason, recipient.c, the one copy of it) about each claimed
 * message and blocks those with block_opted_out(), in the claim's
 * transaction, before any request leaves.  (Odoo's role owns
 * phone_blacklist and could attach code to it, so no SQL reads it.)
 */
static SPIPlanPtr
prepare_claim(void)
{
	Oid			claim_types[2] = {INT4OID, INT4OID};
	char	   *sql;
	SPIPlanPtr	plan;

	sql = psprintf("UPDATE whatsapp.message m"
				   "    SET state = 'sending', attempts = m.attempts + 1,"
				   "        claimed_at = pg_catalog.now()"
				   "  WHERE m.id = ANY (ARRAY("
				   "   SELECT c.id"
				   "     FROM whatsapp.message c"
				   "    WHERE c.account_id = $1 AND c.state = 'queued'%s"
				   "      AND c.next_attempt_at <= pg_catalog.now()"
				   "      AND NOT EXISTS (SELECT 1 FROM whatsapp.message p"
				   "           WHERE p.account_id = c.account_id"
				   "             AND p.recipient = c.recipient"
				   "             AND p.state IN ('queued', 'sending')%s"
				   "             AND p.id < c.id OFFSET 0)"
				   "    ORDER BY c.next_attempt_at, c.id"
				   "    LIMIT $2"
				   "    FOR UPDATE OF c SKIP LOCKED))"
				   " RETURNING m.id, m.attempts,"
				   "  (pg_catalog.jsonb_build_object('messaging_product', 'whatsapp',"
				   "     'recipient_type', 'individual', 'to', m.recipient,"
				   "     'biz_opaque_callback_data', m.id::text) || m.payload)::text,"
				   "  m.recipient, m.kind, m.payload -> 'template' ->> 'name',"
				   "  EXISTS (SELECT 1 FROM whatsapp.message w"
				   "           WHERE w.account_id = m.account_id"
				   "             AND w.recipient = m.recipient"
				   "             AND w.state IN ('queued', 'sending')%s"
				   "             AND w.id > m.id)",
				   PHASE_IF(" AND c.phase = 'q'"),
				   PHASE_IF(" AND p.phase IS NOT NULL"),
				   PHASE_IF(" AND w.phase IS NOT NULL"));
	plan = wa_keep_plan(sql, 2, claim_types);
	pfree(sql);
	return plan;
}

/*
 * Run a kept plan that joins the batch's arrays to the outbox ("FROM r
 * WHERE m.id = r.id AND m.id = ANY ($1)") with nested loops off, for this
 * statement only: the planner then can only merge-join the array, sorted,
 * with the primary key scanned for exactly the batch's ids.  A nested loop
 * could put the outbox outside, scanned whole, when the statistics say it
 * is nearly empty (a fresh outbox, or one analyzed between bursts), and
 * keep that plan for the burst that follows.  The settings are put back
 * on return, and by the transaction's abort on error.
 */
static int
execute_batch_plan(SPIPlanPtr plan, Datum *args)
{
	int			nestlevel = NewGUCNestLevel();
	int			rc;

	(void) set_config_option("enable_nestloop", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	AtEOXact_GUC(true, nestlevel);
	return rc;
}

/*
 * Block claimed messages whose recipient the opt-out rule refuses, in the
 * claim's transaction, before any request leaves; reasons[i] says why.
 */
static void
block_opted_out(Datum *ids, Datum *reasons, int n)
{
	Oid			types[2] = {INT8ARRAYOID, TEXTARRAYOID};
	Datum		args[2];
	int			rc;

	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
											  TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(reasons, n, TEXTOID, -1, false,
											  TYPALIGN_INT));
	if (plan_block == NULL)
		plan_block = wa_keep_plan(psprintf("WITH r AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) r(id, reason)),"
										   " b AS (UPDATE whatsapp.message m SET state = 'blocked',"
										   "   attempts = m.attempts - 1, failure_type = 'opted_out',"
										   "   error_title = r.reason || ' by the time of the claim'"
										   "  FROM r WHERE m.id = r.id AND m.id = ANY ($1)"
										   "   AND pg_catalog.texteq(m.state, 'sending')"
										   "  RETURNING m.id, m.account_id, r.reason)%s"
										   " INSERT INTO whatsapp.log (message_id, event, message)"
										   " SELECT b.id, 'blocked', b.reason || ' by the time of the claim; not sent'"
										   " FROM b",
										   plans_stats ?
										   ", s AS (INSERT INTO whatsapp.stats_delta (account_id, blocked)"
										   "  SELECT b.account_id, pg_catalog.count(*) FROM b GROUP BY 1)" : ""),
								  2, types);
	rc = execute_batch_plan(plan_block, args);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "whatsapp: blocking opted-out messages failed: %s",
			 SPI_result_code_string(rc));
}

static void
prepare_plans(void)
{
	Oid			due_types[1] = {INT4OID};
	Oid			record_types[15] = {INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
		INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID, INT4ARRAYOID, FLOAT8ARRAYOID,
	TEXTARRAYOID, INT4ARRAYOID};
	bool		stats = wa_stats_present();
	bool		phase = wa_message_has_phase();

	SPIPlanPtr	record_plan;

	if (plan_next_due != NULL && stats == plans_stats && phase == plans_phase)
		return;
	free_plans();
	plans_stats = stats;
	plans_phase = phase;

	/*
	 * The record: one UPDATE joining the batch's arrays to the outbox, run
	 * by execute_batch_plan() (a merge join on the primary key, limited to
	 * the batch's ids by "m.id = ANY ($1)"), and one INSERT of the log
	 * rows.  The state is tested with pg_catalog.texteq(), not "=", so that
	 * no partial index can be proven to hold the rows: message_pair_idx
	 * covers queued and sending, and statistics taken when nothing was
	 * queued put it at one row, so the planner scanned all of it (every
	 * queued message) once per answer in the batch.
	 *
	 * With the statistics objects, the same statement counts in
	 * whatsapp.stats (stats.c): per account and failure_type, each answer
	 * ($15 holds the accounts) is one request and its latency, and the
	 * messages the UPDATE moved from sending are sent, failed or retried
	 * (queued again).
	 */
	record_plan = wa_keep_plan(psprintf(
							   "WITH r AS ("
							   " SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							   "   pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
							   "   pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
							   "   pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11),"
							   "   pg_catalog.unnest($12), pg_catalog.unnest($13), pg_catalog.unnest($14),"
							   "   pg_catalog.unnest($15))"
							   "  AS r(id, new_state, http_status, code, title, details, fbtrace_id,"
							   "       wamid, wa_id, failure_type, delay_s, attempt, latency_ms, note,"
							   "       account_id)"
							   "), u AS ("
							   " UPDATE whatsapp.message m SET"
							   "   state = r.new_state,"
							   "   http_status = r.http_status,"
							   "   error_code = r.code, error_title = r.title,"
							   "   error_details = r.details, fbtrace_id = r.fbtrace_id,"
							   "   wamid = COALESCE(r.wamid, m.wamid),"
							   "   wa_id = COALESCE(r.wa_id, m.wa_id),"
							   "   failure_type = r.failure_type,"
							   "   attempts = CASE WHEN r.delay_s < 0 THEN m.attempts - 1 ELSE m.attempts END,"
							   "   next_attempt_at = CASE WHEN r.new_state = 'queued'"
							   "     THEN pg_catalog.now() + pg_catalog.make_interval(secs => abs(r.delay_s))"
							   "     ELSE m.next_attempt_at END,"
							   "   sent_at = CASE WHEN r.new_state = 'sent' THEN pg_catalog.now() ELSE m.sent_at END,"
							   "   failed_at = CASE WHEN r.new_state = 'failed' THEN pg_catalog.now() ELSE m.failed_at END"
							   "  FROM r WHERE m.id = r.id AND m.id = ANY ($1)"
							   "   AND pg_catalog.texteq(m.state, 'sending')"
							   "  RETURNING m.id, m.state, m.failure_type)%s"
							   " INSERT INTO whatsapp.log (message_id, attempt, event, http_status,"
							   "   code, message, fbtrace_id, latency_ms)"
							   " SELECT r.id, r.attempt, 'http', NULLIF(r.http_status, 0), r.code,"
							   "   r.note, r.fbtrace_id, r.latency_ms FROM r",
							   stats ?
							   ", s AS ("
							   " INSERT INTO whatsapp.stats_delta (account_id, failure_type, sent,"
							   "   failed, retried, requests, request_time)"
							   " SELECT x.account_id, x.failure_type,"
							   "   NULLIF(pg_catalog.count(*) FILTER (WHERE x.state = 'sent'), 0),"
							   "   NULLIF(pg_catalog.count(*) FILTER (WHERE x.state = 'failed'), 0),"
							   "   NULLIF(pg_catalog.count(*) FILTER (WHERE x.state = 'queued'), 0),"
							   "   pg_catalog.count(*), pg_catalog.sum(x.latency_ms)"
							   "  FROM (SELECT r.account_id, r.latency_ms, u.state,"
							   "          CASE WHEN u.state = 'failed' THEN u.failure_type END AS failure_type"
							   "         FROM r LEFT JOIN u ON u.id = r.id) x"
							   " GROUP BY x.account_id, x.failure_type)" : ""),
							   15, record_types);

	{
		Oid			hook_types[2] = {INT8ARRAYOID, INT4ARRAYOID};

		plan_after_record = wa_keep_plan("SELECT whatsapp._after_record($1, $2)",
										 2, hook_types);
	}
	plan_claim = prepare_claim();
	plan_record = record_plan;
	/* assigned last: it marks the set as complete */
	plan_next_due = wa_keep_plan(
								 psprintf("SELECT pg_catalog.min(next_attempt_at) FROM whatsapp.message"
										  " WHERE account_id = $1 AND state = 'queued'%s"
										  "   AND next_attempt_at > pg_catalog.now()",
										  PHASE_IF(" AND phase = 'q'")),
								 1, due_types);
}

/* ----------
 * Accounts
 * ----------
 */

static void
mark_paused(int32 id, const char *kind, const char *reason)
{
	Datum		args[3] = {Int32GetDatum(id), CStringGetTextDatum(kind),
	CStringGetTextDatum(reason)};
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};

	if (SPI_execute_with_args("UPDATE whatsapp.account SET paused_kind = $2,"
							  " paused_reason = $3, paused_at = pg_catalog.now()"
							  " WHERE id = $1 AND paused_kind IS DISTINCT FROM $2",
							  3, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not pause whatsapp account");
}

static void
clear_key_pause(int32 id)
{
	Datum		args[1] = {Int32GetDatum(id)};
	Oid			types[1] = {INT4OID};

	if (SPI_execute_with_args("UPDATE whatsapp.account SET paused_kind = NULL,"
							  " paused_reason = NULL, paused_at = NULL"
							  " WHERE id = $1 AND paused_kind IN ('key', 'binding')",
							  1, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not resume whatsapp account");
}

static void
fail_queued_of_account(int32 id, const char *why)
{
	Datum		args[2] = {Int32GetDatum(id), CStringGetTextDatum(why)};
	Oid			types[2] = {INT4OID, TEXTOID};

	if (SPI_execute_with_args(psprintf("WITH f AS (UPDATE whatsapp.message SET state = 'failed',"
									   "   failure_type = 'account', error_title = $2,"
									   "   failed_at = pg_catalog.now()"
									   "  WHERE account_id = $1 AND state = 'queued'%s RETURNING id)%s"
									   " INSERT INTO whatsapp.log (message_id, event, message)"
									   " SELECT id, 'account', $2 FROM f",
									   PHASE_IF(" AND phase = 'q'"),
									   plans_stats ?
									   ", s AS (INSERT INTO whatsapp.stats_delta (account_id, failure_type, failed)"
									   "  SELECT $1, 'account', pg_catalog.count(*) FROM f HAVING pg_catalog.count(*) > 0)" : ""),
							  2, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not fail the messages of a whatsapp account");
}

/*
 * Is this an Odoo database that Odoo marked neutralized (a copy)?  Read
 * without SQL: Odoo's role owns ir_config_parameter (see odoo_read.c).
 */
static bool
database_is_neutralized(void)
{
	char	   *v = wa_odoo_config_param("database.is_neutralized");

	return v != NULL &&
		(pg_strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0 || pg_strcasecmp(v, "t") == 0);
}

/*
 * While load_accounts_guts() builds the new account array: the array (all
 * zero at first) and the contexts, for discard_partial_accounts().
 */
static bool building_accounts = false;
static WaAccount *partial_accounts = NULL;
static int	npartial_accounts = 0;
static MemoryContext partial_prev_context = NULL;

/*
 * Load the accounts, unsealing tokens.  Keeps the pacing state of accounts
 * that stay, abandons the transfers of accounts that are gone.
 */
static void
load_accounts_guts(void)
{
	WaAccount  *old = accounts;
	int			nold = naccounts;
	WaAccount  *fresh;
	int			nfresh = 0;
	int			rc;
	MemoryContext oldcxt;
	MemoryContext new_context;
	MemoryContext old_context;
	SPITupleTable *tt;
	uint64		n;
	TimestampTz now = GetCurrentTimestamp();

	seen_generation = pg_atomic_read_u32(&slot->accounts_generation);
	neutralized = database_is_neutralized();

	rc = SPI_execute("SELECT id, name, phone_number_id, max_mps, access_token,"
					 "  access_token_key, paused_kind, backoff_until"
					 " FROM whatsapp.account WHERE dropped_at IS NULL ORDER BY id",
					 false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read whatsapp accounts");
	tt = SPI_tuptable;
	n = SPI_processed;

	/* Build in a new context; the old one goes once the switch is done. */
	new_context = AllocSetContextCreate(TopMemoryContext, "whatsapp accounts",
										ALLOCSET_SMALL_SIZES);
	old_context = account_context;
	account_context = new_context;
	building_accounts = true;
	partial_prev_context = old_context;
	oldcxt = MemoryContextSwitchTo(account_context);
	fresh = palloc0(sizeof(WaAccount) * Max(n, 1));
	MemoryContextSwitchTo(oldcxt);
	partial_accounts = fresh;
	npartial_accounts = (int) n;

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = tt->vals[i];
		TupleDesc	desc = tt->tupdesc;
		bool		isnull;
		bool		tok_null;
		bool		key_null;
		bool		pause_null;
		bool		backoff_null;
		int32		id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		Datum		tok = SPI_getbinval(tup, desc, 5, &tok_null);
		Datum		key = SPI_getbinval(tup, desc, 6, &key_null);
		Datum		pause = SPI_getbinval(tup, desc, 7, &pause_null);
		Datum		backoff = SPI_getbinval(tup, desc, 8, &backoff_null);
		WaAccount  *prev = NULL;
		WaAccount  *a = &fresh[nfresh++];
		char	   *key_id = key_null ? NULL : TextDatumGetCString(key);

		for (int j = 0; j < nold; j++)
			if (old[j].id == id)
				prev = &old[j];

		oldcxt = MemoryContextSwitchTo(account_context);
		a->id = id;
		a->name = SPI_getvalue(tup, desc, 2);
		a->url = build_url(SPI_getvalue(tup, desc, 3));
		a->max_mps = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		a->sealed = tok_null ? NULL : DatumGetByteaPCopy(tok);
		a->key_id = key_id ? pstrdup(key_id) : NULL;
		MemoryContextSwitchTo(oldcxt);
		a->backoff_until = backoff_null ? 0 : DatumGetTimestampTz(backoff);
		a->tokens = prev ? prev->tokens : Min(a->max_mps, wa_batch_size);
		a->refilled_at = prev ? prev->refilled_at : now;
		a->more = true;
		a->next_due = 0;
		a->due_known = false;
		/* kept: the answers of transfers in flight compare with it */
		a->claim_seq = prev ? prev->claim_seq : 0;

		if (tok_null)
		{
			fail_queued_of_account(id, "account has no access token");
			continue;
		}
		if (!pause_null && (strcmp(TextDatumGetCString(pause), "token") == 0 ||
							strcmp(TextDatumGetCString(pause), "meta") == 0))
			continue;			/* waits for wa_account_set (or Meta's word) */

		/* Same ciphertext as before: keep the headers. */
		if (prev && prev->headers && prev->sealed && a->key_id && prev->key_id &&
			VARSIZE_ANY(prev->sealed) == VARSIZE_ANY(a->sealed) &&
			memcmp(prev->sealed, a->sealed, VARSIZE_ANY(a->sealed)) == 0 &&
			strcmp(prev->key_id, a->key_id) == 0)
		{
			a->headers = prev->headers;
			prev->headers->refs++;
			a->usable = true;
		}
		else
		{
			char	   *token = NULL;
			WaUnsealResult ur;

			ur = wa_unseal(a->sealed, a->key_id ? a->key_id : "", id,
						   WA_FIELD_TOKEN, true, &token);
			if (ur == WA_UNSEAL_OK)
			{
				a->headers = headers_from_token(token);
				a->usable = true;
			}
			else
			{
				const char *kind = (ur == WA_UNSEAL_BINDING) ? "binding" : "key";
				const char *reason = wa_unseal_result_text(ur);
				const char *hint = wa_unseal_result_hint(ur);

				mark_paused(id, kind, reason);
				ereport(WARNING,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("whatsapp account \"%s\" is paused: its access token cannot be unsealed",
								a->name),
						 errdetail("%s Its messages stay queued.", reason),
						 hint ? errhint("%s", hint) : 0));
				continue;
			}
		}
		if (!pause_null)
			clear_key_pause(id);
	}

	/* The new set is complete: from here on nothing is partial. */
	accounts = fresh;
	naccounts = nfresh;
	accounts_loaded = true;
	building_accounts = false;
	partial_accounts = NULL;

	/* Accounts that are gone: abandon what they have in flight. */
	for (int j = 0; j < nold; j++)
		headers_release(old[j].headers);
	for (int j = 0; j < nold; j++)
	{
		bool		kept = false;

		for (int i = 0; i < nfresh; i++)
			if (fresh[i].id == old[j].id)
				kept = true;
		if (!kept)
			wa_http_abandon(old[j].id);
	}
	if (old_context)
		MemoryContextDelete(old_context);
}

/*
 * load_accounts_guts() raised: drop the headers it made or shared (which
 * wipes tokens no one else holds) and its context; the previous accounts
 * stay as they were.
 */
static void
discard_partial_accounts(void)
{
	if (!building_accounts)
		return;
	building_accounts = false;
	for (int i = 0; i < npartial_accounts && partial_accounts != NULL; i++)
		headers_release(partial_accounts[i].headers);
	partial_accounts = NULL;
	npartial_accounts = 0;
	if (account_context != NULL)
		MemoryContextDelete(account_context);
	account_context = partial_prev_context;
	partial_prev_context = NULL;
}

static void
load_accounts(void)
{
	PG_TRY();
	{
		load_accounts_guts();
	}
	PG_CATCH();
	{
		discard_partial_accounts();
		/* seen_generation moved on: make the next cycle try again */
		accounts_loaded = false;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* Refill an account's pacing bucket; at most one second of burst. */
static void
refill(WaAccount *a, TimestampTz now)
{
	double		elapsed = (double) (now - a->refilled_at) / USECS_PER_SEC;
	double		cap = Max(1.0, (double) Min(a->max_mps, wa_batch_size));

	if (elapsed > 0)
	{
		a->tokens = Min(cap, a->tokens + elapsed * a->max_mps);
		a->refilled_at = now;
	}
}

/* ----------
 * Claiming
 * ----------
 */

typedef struct WaPending
{
	WaTransfer *t;
	WaAccount  *a;
} WaPending;

/*
 * Claim for every account that may send now.  Returns the claimed
 * transfers in *out (started by the caller after commit).
 */
static int
claim(WaPending *out, int free_slots, TimestampTz now)
{
	int			n = 0;
	Datum	   *blocked = NULL; /* ids, in SPI's context */
	Datum	   *reasons = NULL;

	for (int i = 0; i < naccounts && free_slots > 0; i++)
	{
		WaAccount  *a = &accounts[i];
		int			quota;
		int			rc;
		Datum		args[2];
		uint64		claimed;
		int			nblocked;
		SPITupleTable *tt;

		if (!a->usable || !a->more || neutralized)
			continue;
		if (a->backoff_until > now)
			continue;
		refill(a, now);
		quota = Min((int) a->tokens, Min(free_slots, wa_batch_size));
		if (quota <= 0)
			continue;

		args[0] = Int32GetDatum(a->id);
		args[1] = Int32GetDatum(quota);
		a->claim_seq++;
		rc = SPI_execute_plan(plan_claim, args, NULL, false, 0);
		if (rc != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "whatsapp claim failed: %s", SPI_result_code_string(rc));
		claimed = SPI_processed;
		nblocked = 0;
		if (claimed > 0 && blocked == NULL)
		{
			blocked = palloc(sizeof(Datum) * Max(free_slots, 1));
			reasons = palloc(sizeof(Datum) * Max(free_slots, 1));
		}

		/* tt: the opt-out rule may run SPI queries and replace SPI_tuptable */
		tt = SPI_tuptable;
		for (uint64 r = 0; r < claimed; r++)
		{
			HeapTuple	tup = tt->vals[r];
			bool		isnull;
			WaTransfer *t;
			char	   *body;
			Datum		d;
			char	   *recipient = SPI_getvalue(tup, tt->tupdesc, 4);
			char	   *kind = SPI_getvalue(tup, tt->tupdesc, 5);
			char	   *tname = SPI_getvalue(tup, tt->tupdesc, 6);
			char	   *reason;

			/* opted out since enqueue (the opt-out rule): never sent */
			reason = recipient ? wa_opt_out_reason(a->id, recipient, kind, tname,
												   GetLatestSnapshot()) : NULL;
			if (reason != NULL)
			{
				reasons[nblocked] = CStringGetTextDatum(reason);
				blocked[nblocked++] = SPI_getbinval(tup, tt->tupdesc, 1, &isnull);
				continue;
			}
			t = wa_http_new_transfer();
			t->message_id = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 1, &isnull));
			t->attempt = DatumGetInt32(SPI_getbinval(tup, tt->tupdesc, 2, &isnull));
			t->account_id = a->id;
			t->claim_seq = a->claim_seq;
			d = SPI_getbinval(tup, tt->tupdesc, 7, &isnull);
			t->pair_waiting = isnull || DatumGetBool(d);
			d = SPI_getbinval(tup, tt->tupdesc, 3, &isnull);
			/* message_payload_check keeps content in every queued message */
			if (isnull)
				elog(ERROR, "whatsapp message " INT64_FORMAT " was claimed without a payload",
					 t->message_id);
			body = TextDatumGetCString(d);
			appendStringInfoString(&t->request, body);
			out[n].t = t;
			out[n].a = a;
			n++;
		}
		if (nblocked > 0)
			block_opted_out(blocked, reasons, nblocked);
		a->tokens -= claimed;
		free_slots -= claimed;
		a->more = ((int) claimed == quota);
		/*
		 * A blocked message's recipient may have the next one queued, and
		 * no answer will announce it: claim again in the next turn.
		 */
		if (nblocked > 0)
		{
			a->more = true;
			claim_again = true;
		}

		/*
		 * The earliest future due time, for the wake-up.  Only the
		 * worker's own record (a retry), an Odoo PDF wait, or SQL outside
		 * the extension's functions queue a message for later; enqueues
		 * queue it due at once.  So the value read last stays current
		 * until a record requeues, a PDF wait is added, a NOTIFY whatsapp
		 * or a poll comes (each marks it unknown), or the time it named
		 * passes.  A claim that finds the queue empty, one message per
		 * transaction, then skips this query.
		 */
		if (!a->more &&
			(!a->due_known || (a->next_due != 0 && a->next_due <= now)))
		{
			bool		isnull;
			Datum		due;
			Datum		arg[1] = {Int32GetDatum(a->id)};

			rc = SPI_execute_plan(plan_next_due, arg, NULL, true, 1);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "whatsapp next-due query failed");
			due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			a->next_due = isnull ? 0 : DatumGetTimestampTz(due);
			a->due_known = true;
		}
	}
	return n;
}

/* Requeue or fail what a dead worker left in flight. */
static void
resolve_in_doubt(void)
{
	int			rc;

	if (wa_in_doubt == WA_IN_DOUBT_RETRY)
		rc = SPI_execute(psprintf("WITH d AS (UPDATE whatsapp.message SET state = 'queued',"
								  "   next_attempt_at = pg_catalog.now()"
								  "  WHERE state = 'sending'%s RETURNING id, attempts)"
								  " INSERT INTO whatsapp.log (message_id, attempt, event, message)"
								  " SELECT id, attempts, 'in_doubt',"
								  "   'in flight when the worker stopped; queued again (whatsapp.in_doubt = retry)'"
								  " FROM d", PHASE_IF(" AND phase = 's'")),
						 false, 0);
	else
		rc = SPI_execute(psprintf("WITH d AS (UPDATE whatsapp.message SET state = 'failed',"
								  "   failure_type = 'network', failed_at = pg_catalog.now(),"
								  "   error_title = 'in doubt: in flight when the worker stopped'"
								  "  WHERE state = 'sending'%s RETURNING id, attempts, account_id)%s"
								  " INSERT INTO whatsapp.log (message_id, attempt, event, message)"
								  " SELECT id, attempts, 'in_doubt',"
								  "   'in flight when the worker stopped; failed (whatsapp.in_doubt = fail)'"
								  " FROM d",
								  PHASE_IF(" AND phase = 's'"),
								  plans_stats ?
								  ", s AS (INSERT INTO whatsapp.stats_delta (account_id, failure_type, failed)"
								  "  SELECT account_id, 'network', pg_catalog.count(*) FROM d GROUP BY 1)" : ""),
						 false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not resolve in-doubt whatsapp messages");
	if (SPI_processed > 0 && wa_in_doubt == WA_IN_DOUBT_RETRY)
		ereport(LOG,
				(errmsg("whatsapp worker found %llu messages in doubt and queued them again",
						(unsigned long long) SPI_processed)));
	else if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("whatsapp worker found %llu messages in doubt and failed them",
						(unsigned long long) SPI_processed)));
	in_doubt_resolved = true;
}

static void
report_queue(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute(psprintf("SELECT pg_catalog.count(*), pg_catalog.min(created_at)"
							 " FROM whatsapp.message WHERE state = 'queued'%s",
							 PHASE_IF(" AND phase = 'q'")),
					true, 1) != SPI_OK_SELECT)
		return;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	pg_atomic_write_u64(&slot->queue_depth, (uint64) DatumGetInt64(d));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	slot->oldest_queued = isnull ? 0 : DatumGetTimestampTz(d);
	LWLockRelease(wa_shared->lock);
}

/*
 * Move the counters' increments into whatsapp.stats_total (stats.c).  In
 * the cycle's transaction, at each safety poll.
 */
static void
fold_stats(void)
{
	if (!plans_stats)
		return;
	if (SPI_execute("SELECT whatsapp._stats_fold()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not fold the increments of whatsapp.stats");
}

static void
purge_log(void)
{
	Datum		args[1] = {Int32GetDatum(wa_log_retention)};
	Oid			types[1] = {INT4OID};

	if (wa_log_retention <= 0)
		return;
	if (SPI_execute_with_args("DELETE FROM whatsapp.log WHERE ctid = ANY (ARRAY("
							  " SELECT ctid FROM whatsapp.log"
							  "  WHERE at < pg_catalog.now() - pg_catalog.make_interval(mins => $1)"
							  "  LIMIT 10000))",
							  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not purge whatsapp.log");
}

/*
 * Make room to remember n more claimed messages, before their requests
 * start (the catch block that remembers them must not allocate).
 */
static void
reserve_unstarted(int n)
{
	int			want = nunstarted + n;

	if (want <= unstarted_cap)
		return;
	want = Max(want, 64);
	if (unstarted == NULL)
		unstarted = MemoryContextAlloc(TopMemoryContext, sizeof(int64) * want);
	else
		unstarted = repalloc(unstarted, sizeof(int64) * want);
	unstarted_cap = want;
}

/*
 * Starting the requests raised (or the claim did): the transfers that did
 * not start go back to the engine, which drops their headers, and the
 * messages among them that the claim committed as sending are remembered
 * for requeue_unstarted().  Runs in a catch block.
 */
static void
give_back_unstarted(WaPending *pending, int nslots, int nstarted, int npending)
{
	MemoryContext old = MemoryContextSwitchTo(cycle_context);
	ErrorData  *edata = CopyErrorData();

	strlcpy(unstarted_reason, edata->message ? edata->message : "unknown error",
			sizeof(unstarted_reason));
	FreeErrorData(edata);
	MemoryContextSwitchTo(old);

	for (int i = nstarted; i < nslots; i++)
	{
		WaTransfer *t = pending[i].t;

		if (t == NULL)
			continue;
		/* a claim that did not commit leaves its messages queued */
		if (i < npending && nunstarted < unstarted_cap)
			unstarted[nunstarted++] = t->message_id;
		pending[i].t = NULL;
		wa_http_release(t);
	}
}

/*
 * Queue again the messages whose requests never started.  The claim
 * counted an attempt that never happened: it is given back.  Messages no
 * longer sending (a claim that did not commit, say) are left alone.
 */
static void
requeue_unstarted(void)
{
	Datum	   *ids = palloc(sizeof(Datum) * nunstarted);
	Datum		args[2];
	Oid			types[2] = {INT8ARRAYOID, TEXTOID};
	int			rc;

	for (int i = 0; i < nunstarted; i++)
		ids[i] = Int64GetDatum(unstarted[i]);
	args[0] = PointerGetDatum(construct_array(ids, nunstarted, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = CStringGetTextDatum(psprintf("request not started: %s; queued again, the attempt not counted",
										   unstarted_reason));
	rc = SPI_execute_with_args("WITH r AS (UPDATE whatsapp.message"
							   "   SET state = 'queued', attempts = attempts - 1,"
							   "       next_attempt_at = pg_catalog.now()"
							   "  WHERE id = ANY ($1) AND pg_catalog.texteq(state, 'sending')"
							   "  RETURNING id, attempts)"
							   " INSERT INTO whatsapp.log (message_id, attempt, event, message)"
							   " SELECT id, attempts + 1, 'not_started', $2 FROM r",
							   2, types, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not queue again whatsapp messages whose requests did not start: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("whatsapp worker queued %llu messages again: their requests could not be started",
						(unsigned long long) SPI_processed)));
	nunstarted = 0;
}

/* ----------
 * Recording
 * ----------
 */

static Datum
text_array(text **vals, bool *nulls, int n)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return PointerGetDatum(construct_md_array((Datum *) vals, nulls, 1, dims, lbs,
											  TEXTOID, -1, false, TYPALIGN_INT));
}

#define TXT(s) ((s) ? (text *) cstring_to_text(s) : NULL)

static void
record_results(void)
{
	int			n = nresults;
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *http = palloc(sizeof(Datum) * n);
	Datum	   *codes = palloc(sizeof(Datum) * n);
	Datum	   *delays = palloc(sizeof(Datum) * n);
	Datum	   *attempts = palloc(sizeof(Datum) * n);
	Datum	   *latency = palloc(sizeof(Datum) * n);
	bool	   *code_nulls = palloc0(sizeof(bool) * n);
	text	  **tx[8];
	bool	   *tn[8];
	Datum		args[15];
	Datum	   *account_ids = palloc(sizeof(Datum) * n);
	int			rc;
	int			nsent = 0;

	for (int k = 0; k < 8; k++)
	{
		tx[k] = palloc0(sizeof(text *) * n);
		tn[k] = palloc0(sizeof(bool) * n);
	}

	for (int i = 0; i < n; i++)
	{
		WaResult   *r = &results[i];
		WaOutcome  *o = &r->outcome;
		const char *state;
		double		delay = 0;
		const char *vals[8];

		switch (o->kind)
		{
			case WA_OUT_SENT:
				state = "sent";
				nsent++;
				break;
			case WA_OUT_FAIL:
				state = "failed";
				break;
			case WA_OUT_RETRY:
				state = "queued";
				delay = o->delay_s;
				break;
			default:
				/* paused or backed-off account: requeue, give the attempt back */
				state = "queued";
				delay = o->delay_s;
				break;
		}
		/* a negative delay tells the query to give the attempt back */
		if (!o->counts_attempt)
			delay = -Max(delay, 0.001);

		ids[i] = Int64GetDatum(r->message_id);
		http[i] = Int32GetDatum((int32) r->http_status);
		codes[i] = Int32GetDatum(o->code);
		code_nulls[i] = !o->has_code;
		delays[i] = Float8GetDatum(delay);
		attempts[i] = Int32GetDatum(r->attempt);
		latency[i] = Float8GetDatum(r->latency_ms);
		account_ids[i] = Int32GetDatum(r->account_id);
		vals[0] = state;
		vals[1] = o->kind == WA_OUT_SENT ? NULL : o->title;
		vals[2] = o->kind == WA_OUT_SENT ? NULL : o->details;
		vals[3] = o->fbtrace_id;
		vals[4] = o->wamid;
		vals[5] = o->wa_id;
		vals[6] = o->kind == WA_OUT_FAIL ? o->failure_type : NULL;
		vals[7] = o->log_message;
		for (int k = 0; k < 8; k++)
		{
			tx[k][i] = TXT(vals[k]);
			tn[k][i] = (vals[k] == NULL);
		}
	}

	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = text_array(tx[0], tn[0], n);
	args[2] = PointerGetDatum(construct_array(http, n, INT4OID, 4, true, TYPALIGN_INT));
	{
		int			dims[1] = {n};
		int			lbs[1] = {1};

		args[3] = PointerGetDatum(construct_md_array(codes, code_nulls, 1, dims, lbs,
													 INT4OID, 4, true, TYPALIGN_INT));
	}
	args[4] = text_array(tx[1], tn[1], n);
	args[5] = text_array(tx[2], tn[2], n);
	args[6] = text_array(tx[3], tn[3], n);
	args[7] = text_array(tx[4], tn[4], n);
	args[8] = text_array(tx[5], tn[5], n);
	args[9] = text_array(tx[6], tn[6], n);
	args[10] = PointerGetDatum(construct_array(delays, n, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[11] = PointerGetDatum(construct_array(attempts, n, INT4OID, 4, true, TYPALIGN_INT));
	args[12] = PointerGetDatum(construct_array(latency, n, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[13] = text_array(tx[7], tn[7], n);
	args[14] = PointerGetDatum(construct_array(account_ids, n, INT4OID, 4, true, TYPALIGN_INT));

	rc = execute_batch_plan(plan_record, args);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "whatsapp record failed: %s", SPI_result_code_string(rc));

	/* Webhooks (webhook_status.c): apply held statuses; 131050 is an opt-out. */
	{
		Datum		hook_args[2] = {args[0], args[3]};

		rc = SPI_execute_plan(plan_after_record, hook_args, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "whatsapp could not apply held webhook statuses: %s",
				 SPI_result_code_string(rc));
	}

	/* Account-wide consequences. */
	for (int i = 0; i < n; i++)
	{
		WaResult   *r = &results[i];
		WaAccount  *a = find_account(r->account_id);
		bool		requeued = r->outcome.kind != WA_OUT_SENT &&
			r->outcome.kind != WA_OUT_FAIL;

		/*
		 * The pair's next message may go now: claim again when the
		 * recipient had more queued at the claim, or when a claim ran
		 * since (it skipped the pair, whose message was in flight, and
		 * may have been woken by a commit that queued another), or when
		 * this message itself is queued again.  Otherwise nothing of this
		 * pair waits for this answer, and a claim now would find only
		 * what the next commit's wake will claim anyway: one message per
		 * transaction then costs one claim transaction, not two.
		 */
		if (a && (r->pair_waiting || a->claim_seq != r->claim_seq || requeued))
			a->more = true;
		/* queued again, for later: the next due time may be earlier */
		if (a && requeued)
			a->due_known = false;
		if (r->outcome.kind == WA_OUT_PAUSE_ACCOUNT && a && a->usable)
		{
			char	   *reason = psprintf("access token rejected by Meta (code %d)",
										  r->outcome.code);

			mark_paused(a->id, "token", reason);
			a->usable = false;
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("whatsapp account \"%s\" is paused: %s", a->name, reason),
					 errhint("Store a valid token with whatsapp.wa_account_set(); queued messages wait until then.")));
		}
		else if (r->outcome.kind == WA_OUT_BACKOFF_ACCOUNT && a)
		{
			TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															(int64) (r->outcome.delay_s * 1000));
			Datum		bargs[2] = {Int32GetDatum(a->id), TimestampTzGetDatum(until)};
			Oid			btypes[2] = {INT4OID, TIMESTAMPTZOID};

			if (until > a->backoff_until)
			{
				a->backoff_until = until;
				if (SPI_execute_with_args("UPDATE whatsapp.account SET backoff_until = $2"
										  " WHERE id = $1", 2, btypes, bargs,
										  NULL, false, 0) != SPI_OK_UPDATE)
					elog(ERROR, "could not record whatsapp account backoff");
			}
		}
	}
	if (nsent > 0)
		count_sent(nsent);
}

/* Classify a finished transfer, then give it back (dropping its headers). */
static void
classify_and_release(WaTransfer *t, WaOutcome *out)
{
	PG_TRY();
	{
		wa_classify(t, wa_max_attempts, out);
	}
	PG_CATCH();
	{
		wa_http_release(t);
		PG_RE_THROW();
	}
	PG_END_TRY();
	wa_http_release(t);
}

/* Take finished transfers from the engine and classify them. */
static void
collect_results(void)
{
	WaTransfer *t;
	MemoryContext old = MemoryContextSwitchTo(result_context);

	while ((t = wa_http_next_done()) != NULL)
	{
		WaResult   *r;

		if (results == NULL)
		{
			results_cap = Max(wa_max_inflight, 16);
			results = palloc(sizeof(WaResult) * results_cap);
		}
		else if (nresults >= results_cap)
		{
			results_cap *= 2;
			results = repalloc(results, sizeof(WaResult) * results_cap);
		}
		r = &results[nresults++];
		r->message_id = t->message_id;
		r->account_id = t->account_id;
		r->attempt = t->attempt;
		r->http_status = t->http_status;
		r->latency_ms = t->latency_ms;
		r->pair_waiting = t->pair_waiting;
		r->claim_seq = t->claim_seq;
		classify_and_release(t, &r->outcome);
		if (nresults == 1)
			oldest_result = GetCurrentTimestamp();
	}
	MemoryContextSwitchTo(old);
	pg_atomic_write_u32(&slot->inflight, (uint32) wa_http_running());
}

/* ----------
 * The cycle: one transaction of claim (and housekeeping), then start.
 * ----------
 */
static bool
extension_present(void)
{
	Oid			oid;

	/*
	 * Every transaction of the worker asks this, two per message when
	 * messages come one at a time.  get_extension_oid() is an index scan
	 * of pg_extension; the outbox table's entry in the relation cache is a
	 * hash probe.  DROP EXTENSION drops the table with it (and a new
	 * CREATE EXTENSION makes a table with a new OID), so while the table
	 * the extension was found with is still there, the extension is the
	 * same.
	 */
	if (OidIsValid(extension_oid) && OidIsValid(message_relid) &&
		SearchSysCacheExists1(RELOID, ObjectIdGetDatum(message_relid)))
		return true;

	oid = get_extension_oid("whatsapp", true);
	if (oid != extension_oid)
	{
		/* dropped, or dropped and created again: start over */
		if (OidIsValid(extension_oid))
		{
			int			n = wa_http_abandon_all();

			if (n > 0)
				ereport(LOG,
						(errmsg("whatsapp extension was dropped: %d requests in flight abandoned", n)));
			forget_accounts();
			MemoryContextReset(result_context);
			results = NULL;
			nresults = 0;
			/* those message ids are gone with the extension */
			nunstarted = 0;
		}
		free_plans();
		extension_oid = oid;
		in_doubt_resolved = false;
	}
	message_relid = InvalidOid;
	if (OidIsValid(oid))
	{
		Oid			nsp = get_namespace_oid("whatsapp", true);

		if (OidIsValid(nsp))
			message_relid = get_relname_relid("message", nsp);
	}
	return OidIsValid(oid);
}

/* The extension is installed here: the status view shows this database. */
static void
set_confirmed(void)
{
	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	slot->confirmed = true;
	LWLockRelease(wa_shared->lock);
}

/*
 * With whatsapp.database = '*', a database without the extension is not
 * served: say so in the slot, for the launcher, and leave the database
 * (exit code 0: the launcher, not the postmaster, decides what is next).
 * "was_serving" tells a DROP EXTENSION from a first look.  While serving,
 * this only sets leave_now: the main loop leaves outside its PG_TRY.
 */
static volatile bool leave_now = false;

static void
leave_without_extension(bool was_serving)
{
	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	slot->extension_missing = true;
	slot->confirmed = false;
	LWLockRelease(wa_shared->lock);
	ereport(was_serving ? LOG : DEBUG1,
			(errmsg("whatsapp worker for database \"%s\" leaves: the extension is not installed there",
					slot->datname)));
	if (was_serving)
		leave_now = true;
	else
		proc_exit(0);
}

typedef struct WaCycle
{
	bool		wake;			/* a commit or NOTIFY: anything may be due */
	bool		pdf;			/* a commit added an Odoo PDF wait */
	bool		notify;			/* a NOTIFY whatsapp: anything may have changed */
	bool		reload;
	bool		poll;
	bool		purge;
	bool		claim;
} WaCycle;

/*
 * Errors a cycle meets when the extension's objects disappear under it,
 * which a DROP EXTENSION committing meanwhile causes.
 */
static bool
extension_object_vanished(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_UNDEFINED_TABLE ||
		sqlerrcode == ERRCODE_UNDEFINED_FUNCTION ||
		sqlerrcode == ERRCODE_UNDEFINED_SCHEMA ||
		sqlerrcode == ERRCODE_UNDEFINED_OBJECT;
}

/*
 * Messages of Odoo invoices waiting for the official PDF (odoo_pdf.c):
 * looked at in a transaction of their own before each claim while there
 * are any, at every poll, and after a commit that added one (the commit
 * sets pdf_wait_pending).  A plain wake skips this transaction: it would
 * stand between an enqueue's commit and its request.  An error here (Odoo's role's own
 * code on ir_attachment, say) is logged and costs only the header: the
 * waiting messages fall due at their deadline anyway.
 */
static int	odoo_pdf_waits = -1;		/* -1: not looked yet */

/*
 * Upload a file for account_id to Meta's media endpoint (the account's
 * messages URL with /media for /messages), with the account's token: the
 * media id, or NULL with *why.  Synchronous: the worker sends nothing
 * meanwhile, for at most four times whatsapp.http_timeout.
 */
static char *
upload_media(int32 account_id, const char *filename, const char *mime,
			 const char *data, size_t len, char **why)
{
	WaAccount  *a = find_account(account_id);
	size_t		ulen;

	if (a == NULL || !a->usable || a->headers == NULL || a->headers->list == NULL)
	{
		*why = psprintf("account %d cannot send now", (int) account_id);
		return NULL;
	}
	ulen = strlen(a->url);
	if (ulen < 9 || strcmp(a->url + ulen - 9, "/messages") != 0)
	{
		*why = pstrdup("the account's URL does not end in /messages");
		return NULL;
	}
	/* the list's first entry is the Authorization header (headers_make) */
	return wa_http_upload_media(psprintf("%.*s/media", (int) (ulen - 9), a->url),
								a->headers->list->data, filename, mime, data, len, why);
}

static void
release_odoo_pdf_waits(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner;

	begin_work("whatsapp: Odoo PDF waits");
	if (!extension_present())
	{
		end_work();
		return;
	}
	/* an upload needs the accounts as they are now */
	prepare_plans();
	if (!accounts_loaded ||
		pg_atomic_read_u32(&slot->accounts_generation) != seen_generation)
		load_accounts();
	owner = CurrentResourceOwner;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		odoo_pdf_waits = wa_odoo_pdf_release(upload_media);
		ReleaseCurrentSubTransaction();
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		CurrentResourceOwner = owner;
		ereport(WARNING,
				(errcode(e->sqlerrcode),
				 errmsg("whatsapp: could not look for the official PDF of waiting Odoo invoices: %s",
						e->message),
				 errhint("The waiting messages are sent without the header at their deadline.")));
		FreeErrorData(e);
		odoo_pdf_waits = 1;
	}
	PG_END_TRY();
	end_work();
}

static void
run_cycle(WaCycle *what)
{
	WaPending  *volatile pending;
	volatile int npending = 0;
	volatile int nstarted = 0;
	int			nslots;
	int			free_slots;
	TimestampTz now = GetCurrentTimestamp();

	if (what->claim && !got_sigterm && (what->poll || what->pdf || odoo_pdf_waits != 0))
		release_odoo_pdf_waits();
#ifdef WA_TRACE_TIMING
	trace_at[1] = trace_woke;
#endif
	WA_TRACE(2);
	begin_work("whatsapp: claim");
	if (!extension_present())
	{
		end_work();
		set_state("idle: extension whatsapp is not installed in this database");
		if (wa_serve_all())
			leave_without_extension(true);
		return;
	}
	if (!slot->confirmed)
		set_confirmed();
	prepare_plans();
	if (!in_doubt_resolved)
		resolve_in_doubt();
	if (nunstarted > 0)
	{
		requeue_unstarted();
		/* those messages are due again, and no answer will announce them */
		claim_again = true;
	}
	if (what->reload || !accounts_loaded ||
		pg_atomic_read_u32(&slot->accounts_generation) != seen_generation)
		load_accounts();
	if (what->poll)
	{
		report_queue();
		fold_stats();
	}
	if (what->poll || what->wake)
		for (int i = 0; i < naccounts; i++)
			accounts[i].more = true;
	if (what->poll || what->pdf || what->notify)
		for (int i = 0; i < naccounts; i++)
			accounts[i].due_known = false;
	if (what->purge)
		purge_log();

	free_slots = wa_max_inflight - wa_http_running() - nresults;
	nslots = Max(free_slots, 1);
	/* not in SPI's context: the transfers start after SPI_finish() */
	pending = MemoryContextAllocZero(cycle_context, sizeof(WaPending) * nslots);
	reserve_unstarted(nslots);
	PG_TRY();
	{
		if (what->claim && free_slots > 0 && !got_sigterm)
		{
			npending = claim(pending, free_slots, now);
#ifdef WA_TRACE_TIMING
			tt_claims++;
			tt_claimed += npending;
			tt_free += free_slots;
#endif
		}
		WA_TRACE(3);
		end_work();
		WA_TRACE(4);

		/* The claims are durable: now the requests may leave. */
		for (; nstarted < npending; nstarted++)
		{
			WaPending  *p = &pending[nstarted];

			p->a->headers->refs++;
			p->t->headers_ref = p->a->headers;
			wa_http_start(p->t, p->a->url, p->a->headers->list);
		}
		WA_TRACE(5);
	}
	PG_CATCH();
	{
		give_back_unstarted(pending, nslots, nstarted, npending);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/*
	 * Hand the new requests to libcurl now: their bytes leave in this turn
	 * rather than after another pass through the wait.  What that finished
	 * at once (a refused connection, a quick answer) is taken here too: no
	 * socket event would announce it again.
	 */
	if (npending > 0)
	{
		wa_http_perform();
		collect_results();
	}
#ifdef WA_TRACE_TIMING
	if (npending > 0)
	{
		TimestampTz sent = GetCurrentTimestamp();

		/* the doorbell's time is only meaningful for a wake */
		elog(LOG, "LATTRACE n=%d rung_to_woke=%ld woke_to_begin=%ld claim_sql=%ld commit=%ld curl_add=%ld to_sent=%ld total_from_woke=%ld",
			 (int) npending,
			 trace_at[0] ? (long) (trace_at[1] - trace_at[0]) : -1L,
			 (long) (trace_at[2] - trace_at[1]),
			 (long) (trace_at[3] - trace_at[2]),
			 (long) (trace_at[4] - trace_at[3]),
			 (long) (trace_at[5] - trace_at[4]),
			 (long) (sent - trace_at[5]),
			 (long) (sent - trace_at[1]));
		trace_at[0] = 0;
	}
#endif
	pg_atomic_write_u32(&slot->inflight, (uint32) wa_http_running());
	if (neutralized)
		set_state("idle: database is marked neutralized by Odoo");
	else
		set_state(wa_http_running() > 0 ? "delivering" : "waiting");
}

/*
 * Record the answers that came back.  The record transaction commits
 * asynchronously, which spares a WAL flush per batch, but the previous
 * record's commit is flushed first: a crash can lose at most the latest
 * batch of records, whose messages are then in doubt, which keeps the
 * bound of max_inflight plus one result batch.
 */
static XLogRecPtr last_record_lsn = InvalidXLogRecPtr;

static void
flush_results(void)
{
	if (!XLogRecPtrIsInvalid(last_record_lsn))
	{
		XLogFlush(last_record_lsn);
		last_record_lsn = InvalidXLogRecPtr;
	}
	/*
	 * Asynchronous for this transaction only.  Set and reset explicitly at
	 * session level: every claim must stay synchronous, and a claim that a
	 * crash loses would send its messages twice without a trace.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	PG_TRY();
	{
		begin_work("whatsapp: record");
		if (extension_present())
		{
			prepare_plans();
			record_results();
		}
		end_work();
	}
	PG_FINALLY();
	{
		SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
	}
	PG_END_TRY();
	last_record_lsn = XactLastCommitEnd;
	MemoryContextReset(result_context);
	results = NULL;
	nresults = 0;
}

/*
 * One turn of the content purge (retention.c), in a transaction of its
 * own, between delivery turns.  True when more rows are due.
 */
static bool
purge_content_turn(void)
{
	bool		more = false;

	begin_work("whatsapp: content purge");
	if (extension_present())
		more = wa_purge_content();
	end_work();
	return more;
}

/* When must the loop wake up next, in milliseconds (-1: only on events)? */
static long
next_timeout(TimestampTz now, TimestampTz next_poll, TimestampTz next_purge)
{
	TimestampTz wake = next_poll;
	long		curl_ms = wa_http_next_timeout();
	long		ms;

	if (next_purge < wake)
		wake = next_purge;
	for (int i = 0; i < naccounts; i++)
	{
		WaAccount  *a = &accounts[i];

		if (!a->usable)
			continue;
		if (a->backoff_until > now && a->backoff_until < wake)
			wake = a->backoff_until;
		if (a->next_due > 0 && a->next_due < wake)
			wake = a->next_due;
		if (a->more && a->tokens < 1.0 && a->max_mps > 0)
		{
			TimestampTz t = a->refilled_at +
				(TimestampTz) ((1.0 - a->tokens) * USECS_PER_SEC / a->max_mps);

			if (t < wake)
				wake = t;
		}
	}
	ms = (wake <= now) ? 0 : (long) ((wake - now + 999) / 1000);
	/* finished transfers not yet taken: no event will announce them */
	if (wa_http_done_count() > 0)
		ms = 0;
	if (nresults > 0)
		ms = Min(ms, WA_RECORD_MAX_WAIT_MS);
	if (curl_ms >= 0 && curl_ms < ms)
		ms = curl_ms;
	return ms;
}

/* Is there an account that could claim right now? */
static bool
claim_possible(TimestampTz now)
{
	for (int i = 0; i < naccounts; i++)
	{
		WaAccount  *a = &accounts[i];

		if (!a->usable || a->backoff_until > now)
			continue;
		if (a->next_due > 0 && a->next_due <= now)
			a->more = true;
		if (a->more)
		{
			refill(a, now);
			if (a->tokens >= 1.0)
				return true;
		}
	}
	return false;
}

static void
worker_exit(int code, Datum arg)
{
	wa_http_shutdown();
	for (int i = 0; i < naccounts; i++)
		headers_release(accounts[i].headers);
	naccounts = 0;
	if (slot != NULL)
	{
		LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
		if (slot->pid == MyProcPid)
		{
			slot->pid = 0;
			slot->latch = NULL;
			strlcpy(slot->state, "stopped", sizeof(slot->state));
			pg_atomic_write_u32(&slot->inflight, 0);
		}
		LWLockRelease(wa_shared->lock);
	}
}

/*
 * Take the slot: one worker per database.  A launcher that was itself
 * terminated and restarted does not know the workers of its predecessor,
 * which may still run or drain; a second worker would requeue their
 * messages in flight as "in doubt" and send them twice.  So a worker that
 * finds another one alive in its slot leaves before it connects.
 */
static void
take_slot(void)
{
	pid_t		other;

	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	other = slot->pid;
	if (other == 0 || other == MyProcPid || kill(other, 0) != 0)
	{
		slot->pid = MyProcPid;
		slot->latch = NULL;
		other = 0;
	}
	LWLockRelease(wa_shared->lock);
	if (other != 0)
	{
		ereport(LOG,
				(errmsg("whatsapp worker for database \"%s\" not started: PID %d still serves it",
						slot->datname, (int) other)));
		slot = NULL;
		proc_exit(0);
	}
	/* from here on, worker_exit gives the slot back, also after a FATAL */
	before_shmem_exit(worker_exit, (Datum) 0);
}

void
wa_worker_main(Datum main_arg)
{
	int			slotno = DatumGetInt32(main_arg);
	WaitEventSet *set;
	volatile TimestampTz next_poll = 0;
	volatile TimestampTz next_purge = 0;
	volatile TimestampTz next_content_purge = 0;
	volatile TimestampTz drain_deadline = 0;
	volatile bool wake = true;
	volatile bool pdf_wake = false;
	volatile bool notify_wake = false;
	volatile bool claim_deferred = false;
	volatile TimestampTz last_claim_at = 0;
	volatile bool stop = false;
	uint32		generation;
	Oid			dboid;
	bool		installed;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, wa_worker_sigterm);
	BackgroundWorkerUnblockSignals();

	if (wa_shared == NULL || slotno < 0 || slotno >= wa_shared->nslots)
		proc_exit(0);
	slot = &wa_shared->slots[slotno];
	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(uint32));
	LWLockAcquire(wa_shared->lock, LW_SHARED);
	dboid = (slot->in_use && slot->generation == generation) ? slot->dboid : InvalidOid;
	LWLockRelease(wa_shared->lock);
	if (!OidIsValid(dboid))
	{
		/* the launcher gave the slot away before this worker ran */
		slot = NULL;
		proc_exit(0);
	}
	take_slot();

	/* By OID: a database renamed meanwhile is still the one meant. */
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("whatsapp worker");

	/* DROP DATABASE or the like began meanwhile: make room at once. */
	if (wa_database_held(MyDatabaseId, GetCurrentTimestamp()))
		proc_exit(0);

	/* With "*", a database without the extension is left at once. */
	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid("whatsapp", true));
	CommitTransactionCommand();
	if (installed)
		set_confirmed();
	else if (wa_serve_all())
		leave_without_extension(false);

	/* The worker's own transactions: short, durable, read committed. */
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The worker runs as the bootstrap superuser.  Its names are all
	 * schema-qualified, but an operator or function that pg_catalog lacks
	 * for the exact argument types would be looked up along the search
	 * path, where the owner of the database's public schema (Odoo's role,
	 * say) could have put one of its own.  So: pg_catalog only, whatever
	 * the database or role settings say.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Its queries all have an index that fits: no plan of the worker's may
	 * read a table whole because the statistics call it small (see "Plans
	 * and statistics" at the top of this file).
	 */
	SetConfigOption("enable_seqscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_bitmapscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_hashjoin", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Its statements are short.  A plan the settings above price at
	 * disable_cost (a table with no other path, like the log purge's)
	 * passes jit_above_cost and would be compiled by LLVM at every run:
	 * 53 ms for one purge, and 2-3% of the worker's CPU in a profile of
	 * a steady-state run.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	result_context = AllocSetContextCreate(TopMemoryContext, "whatsapp results",
										   ALLOCSET_DEFAULT_SIZES);
	cycle_context = AllocSetContextCreate(TopMemoryContext, "whatsapp worker loop",
										  ALLOCSET_DEFAULT_SIZES);

	wa_http_init();
	wa_http_on_release = transfer_released;

	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	slot->dboid = MyDatabaseId;
	slot->latch = MyLatch;
	slot->started_at = GetCurrentTimestamp();
	slot->last_error[0] = '\0';
	strlcpy(slot->state, "starting", sizeof(slot->state));
	LWLockRelease(wa_shared->lock);

	/* NOTIFY whatsapp is a doorbell: drained on every wake, never read. */
	StartTransactionCommand();
	Async_Listen("whatsapp");
	CommitTransactionCommand();

	set = WA_CREATE_PROCESS_WAIT_EVENT_SET(3);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(set, WL_SOCKET_READABLE, wa_http_event_socket(), NULL, NULL);

	ereport(LOG, (errmsg("whatsapp worker started for database \"%s\"", slot->datname)));

	for (;;)
	{
		WaitEvent	events[4];
		TimestampTz now = GetCurrentTimestamp();
		WaCycle		what = {0};
		long		timeout;

		MemoryContextSwitchTo(cycle_context);

		/* The work of one turn, errors caught so the worker goes on. */
		PG_TRY();
		{
			WA_TT(WA_TT_OTHER);
			wa_http_perform();
			collect_results();
			WA_TT(WA_TT_HTTP);

			if (nresults > 0 &&
				(nresults >= WA_RECORD_BATCH_MIN || nresults >= wa_batch_size ||
				 wa_http_running() == 0 || got_sigterm ||
				 now - oldest_result >= WA_RECORD_MAX_WAIT_MS * 1000L))
			{
#ifdef WA_TRACE_TIMING
				tt_records++;
				tt_recorded += nresults;
#endif
				flush_results();
				WA_TT(WA_TT_RECORD);
			}

			if (got_sigterm)
			{
				if (drain_deadline == 0)
				{
					drain_deadline = TimestampTzPlusMilliseconds(now, wa_shutdown_timeout);
					set_state("stopping");
				}
				if ((wa_http_running() == 0 && nresults == 0) || now >= drain_deadline)
				{
					int			left = wa_http_running();

					if (left > 0)
						ereport(LOG,
								(errmsg("whatsapp worker stopping with %d requests in flight; they will be in doubt",
										left)));
					/* leaves below, outside PG_TRY */
					stop = true;
				}
			}
			else
			{
				what.poll = (now >= next_poll);
				what.purge = (now >= next_purge);
				what.reload = false;
				what.wake = wake;
				what.pdf = pdf_wake;
				what.notify = notify_wake;
				what.claim = wake || what.poll || claim_possible(now);

				/*
				 * Busy: let commits that arrive close together share one
				 * claim, instead of one durable claim per commit.  After a
				 * quiet spell, a commit is claimed at once.
				 */
				if (what.claim && !what.poll &&
					now < TimestampTzPlusMilliseconds(last_claim_at, WA_CLAIM_MIN_INTERVAL_MS))
				{
					what.claim = false;
					claim_deferred = true;
				}
				if (what.claim || what.purge || nunstarted > 0 ||
					pg_atomic_read_u32(&slot->accounts_generation) != seen_generation)
				{
					WA_TT(WA_TT_OTHER);
					claim_again = false;
					run_cycle(&what);
					WA_TT(WA_TT_CLAIM);
					if (what.claim)
					{
						last_claim_at = now;
						claim_deferred = false;
						wake = false;
						pdf_wake = false;
						notify_wake = false;
					}
					/* a wake: every account claims in the next turn */
					if (claim_again)
						wake = true;
					if (what.poll)
						next_poll = TimestampTzPlusMilliseconds(now, wa_poll_interval);
					if (what.purge)
						next_purge = TimestampTzPlusMilliseconds(now, WA_PURGE_INTERVAL_MS);
				}

				/*
				 * Content past whatsapp.content_retention, a bounded batch
				 * per turn, after this turn's claim; when more is due, the
				 * next batch comes after the next turn's.
				 */
				if (now >= next_content_purge && !leave_now)
				{
					bool		more;

					next_content_purge = TimestampTzPlusMilliseconds(now, WA_PURGE_INTERVAL_MS);
					more = purge_content_turn();
					if (more)
						next_content_purge = TimestampTzPlusMilliseconds(now, WA_CONTENT_PURGE_AGAIN_MS);
				}
			}
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			HOLD_INTERRUPTS();
			MemoryContextSwitchTo(cycle_context);
			edata = CopyErrorData();
			if (extension_object_vanished(edata->sqlerrcode))
			{
				/*
				 * A DROP EXTENSION committed while the cycle ran: the next
				 * cycle sees the extension gone.  Logged, whole, as LOG.
				 */
				FlushErrorState();
				edata->elevel = LOG;
				edata->message = psprintf("whatsapp worker cycle failed, as an object of the extension is gone (DROP EXTENSION?): %s",
										  edata->message ? edata->message : "error");
				ThrowErrorData(edata);
			}
			else
			{
				/* the whole report: message, detail, hint, context */
				EmitErrorReport();
				FlushErrorState();
			}
			AbortCurrentTransaction();
			/* an error outside a transaction may have left a lock held */
			LWLockReleaseAll();
			set_last_error(edata->message ? edata->message : "error");
			FreeErrorData(edata);
			RESUME_INTERRUPTS();
			pgstat_report_activity(STATE_IDLE, NULL);
			/* pause so a persistent error does not spin */
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 WA_ERROR_PAUSE_MS, PG_WAIT_EXTENSION);
			next_poll = 0;
		}
		PG_END_TRY();
		MemoryContextReset(cycle_context);
		if (stop)
			proc_exit(1);
		if (leave_now)
			proc_exit(0);

		now = GetCurrentTimestamp();
		timeout = got_sigterm ? 100 :
			next_timeout(now, next_poll, Min(next_purge, next_content_purge));
		if (claim_deferred)
		{
			/* rounded up, so that the last millisecond is not spun away */
			long		ms = (long) ((TimestampTzPlusMilliseconds(last_claim_at, WA_CLAIM_MIN_INTERVAL_MS) - now + 999) / 1000);

			timeout = Min(timeout, Max(ms, 0));
		}
		else if (wake)
			timeout = 0;
		WA_TT(WA_TT_OTHER);
		if (WaitEventSetWait(set, timeout, events, lengthof(events),
							 PG_WAIT_EXTENSION) > 0)
		{
			/* the latch is reset on every turn below */
		}
		WA_TT(WA_TT_WAIT);
#ifdef WA_TRACE_TIMING
		tt_turns++;
		tt_report();
#endif
#ifdef WA_TRACE_TIMING
		trace_woke = GetCurrentTimestamp();
#endif
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (notifyInterruptPending)
		{
			ProcessNotifyInterrupt(false);
			wake = true;
			notify_wake = true;
		}
		if (pg_atomic_exchange_u32(&slot->pdf_wait_pending, 0) != 0)
		{
			pdf_wake = true;
			wake = true;
		}
		if (pg_atomic_exchange_u32(&slot->wake_pending, 0) != 0)
		{
			wake = true;
#ifdef WA_TRACE_TIMING
			trace_at[0] = slot->trace_rung_at;
#endif
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			PG_TRY();
			{
				wa_http_apply_settings();
			}
			PG_CATCH();
			{
				EmitErrorReport();
				FlushErrorState();
			}
			PG_END_TRY();
			/* URLs depend on settings: rebuild them with the accounts */
			accounts_loaded = false;
			wake = true;
			/* a retention just changed applies now */
			next_purge = 0;
			next_content_purge = 0;
		}
	}
}
