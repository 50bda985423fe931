/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The counters behind the whatsapp.stats view: per account, only
 *	  growing, like pg_stat_*.
 *
 * The design, and why.
 *
 * Every event the view counts (sent, delivered, read, failed by
 * failure_type, blocked, retried, requests and their time) is written as
 * a row of increments into whatsapp.stats_delta, by the same SQL statement
 * that changes the message, inside the same transaction:
 *
 *	  - the worker's record statement adds one row per account and
 *		failure_type of each batch it records (up to whatsapp.batch_size
 *		answers), computed from the rows its UPDATE actually changed;
 *	  - a webhook status adds one row when it moved a message (the
 *		"stats_events" column of whatsapp.message carries the transitions
 *		that the UPDATE made to its RETURNING: delivered_at or read_at set
 *		for the first time, sent -> failed);
 *	  - wa_send* and the Odoo triggers add one row only when they record a
 *		message as failed or blocked instead of queuing it (rare), and so
 *		do the worker's in-doubt, opted-out and dropped-credential paths.
 *
 * The worker folds the rows it can see into whatsapp.stats_total (one row
 * per account) at each safety poll (whatsapp.poll_interval), in one
 * transaction; the view adds stats_total and the rows not folded yet, so
 * it is exact at any time, not only after a fold.
 *
 * The alternative was counters in shared memory, written with atomics by
 * the worker and by wa_receive's backends and saved to a file at shutdown
 * and now and then.  It was not chosen because:
 *
 *	  - it needs shared_preload_libraries, while the SQL functions, and so
 *		wa_receive, also work without it (SPEC, "Loading"): webhooks
 *		applied then would not be counted;
 *	  - a crash loses what was counted since the last save, and a counter
 *		bumped by a transaction that then aborts is wrong for good.  Rows
 *		written in the changing transaction commit or vanish with the
 *		change they count: after a crash or an immediate shutdown the
 *		counters equal what the tables say happened, and lose nothing;
 *	  - with whatsapp.database = '*' one cluster serves many databases
 *		whose accounts come and go: per-database tables need no slot
 *		arithmetic and no cleanup when a database is dropped or copied.
 *
 * The cost is one heap insert per webhook status that changed something
 * and one per account per record batch, into a table without indexes; no
 * row is updated per message or per wa_receive call (the hot-row problem a
 * plain UPDATE of a counter row would have: every webhook backend would
 * queue on that row's lock).  The fold updates one row per account per
 * poll.
 *
 * One thing a crash can lose is not a counter error but the same as the
 * outbox loses: the worker commits its record batches asynchronously
 * (worker.c, flush_results), so the latest batch of answers, with its
 * "requests" and outcomes, may vanish in a crash.  Its messages are then
 * in doubt, resolved by whatsapp.in_doubt, and counted when they are sent
 * or failed again.  The requests that left before the crash and whose
 * answers were lost are not counted.
 *
 * A library newer than the installed SQL objects (before ALTER EXTENSION
 * UPDATE) counts nothing: wa_stats_present() tells.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

static SPIPlanPtr plan_count_enqueue = NULL;

/*
 * Are the 0.3 statistics objects installed (stats_delta, and the
 * stats_events column that the webhook statements set)?
 */
bool
wa_stats_present(void)
{
	Oid			nsp = get_namespace_oid("whatsapp", true);
	Oid			msg;

	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("stats_delta", nsp)))
		return false;
	msg = get_relname_relid("message", nsp);
	return OidIsValid(msg) && get_attnum(msg, "stats_events") != InvalidAttrNumber;
}

/*
 * Count a message that enqueue (wa_send*, an Odoo trigger) recorded as
 * "failed" or "blocked" instead of queuing it.  Inside the caller's SPI
 * connection; does nothing for any other state.
 */
void
wa_stats_count_enqueue(int32 account_id, const char *state,
					   const char *failure_type)
{
	Oid			types[3] = {INT4OID, TEXTOID, BOOLOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		failed;
	int			rc;

	if (state == NULL)
		return;
	failed = strcmp(state, "failed") == 0;
	if (!failed && strcmp(state, "blocked") != 0)
		return;
	if (!wa_stats_present())
		return;

	values[0] = Int32GetDatum(account_id);
	if (failure_type != NULL)
		values[1] = CStringGetTextDatum(failure_type);
	else
		nulls[1] = 'n';
	values[2] = BoolGetDatum(failed);
	rc = SPI_execute_plan(wa_plan(&plan_count_enqueue,
								  "INSERT INTO whatsapp.stats_delta"
								  " (account_id, failure_type, failed, blocked)"
								  " VALUES ($1, CASE WHEN $3 THEN $2 END,"
								  "  CASE WHEN $3 THEN 1 END, CASE WHEN NOT $3 THEN 1 END)",
								  3, types),
						  values, nulls, false, 0);
	wa_spi_check(rc, SPI_OK_INSERT, "count the message in whatsapp.stats");
}
