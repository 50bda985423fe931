/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  whatsapp.content_retention: the worker's purge of old content.
 *
 * After content_retention, what a message said and who it was to or from
 * is set to NULL; what happened to it stays.  Per table:
 *
 * - message: payload (the body, the template and its parameters, media
 *	 links and captions), recipient, wa_id, error_details (Meta's free
 *	 text, which can quote a parameter) and reaction.  A message still
 *	 queued or in flight is never touched, whatever its age.
 * - inbound_message: wa_id, phone, user_id, parent_user_id, username,
 *	 profile_name, body, raw and history.
 * - webhook: payload (the verbatim body).
 * - status_held: the rows themselves (a held status holds the number).
 *
 * Ids, states, times, error codes and titles, fbtrace_id, wamids,
 * dedupe keys, context, pricing and conversation stay.  wa_log has its
 * own whatsapp.log_retention, and opt-outs and consents stay: they are
 * what keeps an opted-out person from being messaged again.
 *
 * The purge runs in the worker, in a transaction of its own between
 * delivery turns.  Each turn changes at most WA_CONTENT_PURGE_BATCH rows
 * per table, found through partial indexes on the time column that hold
 * only rows not yet purged, so a turn stays cheap however much history
 * the tables keep.  Rows another transaction has locked are skipped
 * (SKIP LOCKED) and taken at a later turn: the purge waits for no one.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include "catalog/pg_type.h"
#include "spi_plans.h"

/*
 * "p.phase IS NULL" matches message_retention_idx's predicate (phase is
 * NULL unless a message is queued or sending; the index and the column
 * came in the same version, and schema_ready() looks for the index).
 */
static const char *const purge_statements[] = {
	"UPDATE whatsapp.message m"
	"   SET payload = NULL, recipient = NULL, wa_id = NULL,"
	"       error_details = NULL, reaction = NULL"
	" WHERE m.id IN (SELECT p.id FROM whatsapp.message p"
	"                 WHERE p.payload IS NOT NULL"
	"                   AND p.state NOT IN ('queued', 'sending') AND p.phase IS NULL"
	"                   AND p.created_at < pg_catalog.now() - pg_catalog.make_interval(mins => $1)"
	"                 ORDER BY p.created_at LIMIT $2"
	"                 FOR UPDATE SKIP LOCKED)"
	"   AND m.state NOT IN ('queued', 'sending')",

	"UPDATE whatsapp.inbound_message i"
	"   SET wa_id = NULL, phone = NULL, user_id = NULL, parent_user_id = NULL,"
	"       username = NULL, profile_name = NULL, body = NULL, raw = NULL,"
	"       history = NULL"
	" WHERE i.id IN (SELECT p.id FROM whatsapp.inbound_message p"
	"                 WHERE p.raw IS NOT NULL"
	"                   AND p.received_at < pg_catalog.now() - pg_catalog.make_interval(mins => $1)"
	"                 ORDER BY p.received_at LIMIT $2"
	"                 FOR UPDATE SKIP LOCKED)",

	"UPDATE whatsapp.webhook w SET payload = NULL"
	" WHERE w.id IN (SELECT p.id FROM whatsapp.webhook p"
	"                 WHERE p.payload IS NOT NULL"
	"                   AND p.received_at < pg_catalog.now() - pg_catalog.make_interval(mins => $1)"
	"                 ORDER BY p.received_at LIMIT $2"
	"                 FOR UPDATE SKIP LOCKED)",

	"DELETE FROM whatsapp.status_held h"
	" WHERE h.id IN (SELECT p.id FROM whatsapp.status_held p"
	"                 WHERE p.held_at < pg_catalog.now() - pg_catalog.make_interval(mins => $1)"
	"                 ORDER BY p.held_at LIMIT $2"
	"                 FOR UPDATE SKIP LOCKED)",
};

/*
 * Do the installed SQL objects allow the purge?  Before ALTER EXTENSION
 * UPDATE to 0.3 the content columns are NOT NULL and the indexes are
 * missing: the purge waits for the update rather than fail every turn.
 */
static bool
schema_ready(void)
{
	int			rc;
	bool		isnull;
	Datum		d;

	rc = SPI_execute("SELECT pg_catalog.count(*) = 3 FROM pg_catalog.pg_index x"
					 " JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid"
					 " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
					 " WHERE n.nspname = 'whatsapp' AND c.relname IN"
					 "  ('message_retention_idx', 'inbound_message_retention_idx',"
					 "   'webhook_retention_idx')", true, 1);
	wa_spi_check(rc, SPI_OK_SELECT, "look for the retention indexes");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && DatumGetBool(d);
}

/*
 * One turn of the content purge, inside the caller's transaction and SPI
 * connection.  Returns true when some table had more rows due than one
 * batch, so that the caller comes back soon.
 */
bool
wa_purge_content(void)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		args[2];
	bool		more = false;

	if (wa_content_retention <= 0 || !schema_ready())
		return false;
	args[0] = Int32GetDatum(wa_content_retention);
	args[1] = Int32GetDatum(WA_CONTENT_PURGE_BATCH);
	for (int i = 0; i < (int) lengthof(purge_statements); i++)
	{
		int			rc = SPI_execute_with_args(purge_statements[i], 2, types, args,
											   NULL, false, 0);

		if (rc != SPI_OK_UPDATE && rc != SPI_OK_DELETE)
			elog(ERROR, "whatsapp: purging old content failed: %s",
				 SPI_result_code_string(rc));
		if (SPI_processed >= WA_CONTENT_PURGE_BATCH)
			more = true;
	}
	return more;
}
