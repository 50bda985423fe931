/* whatsapp 0.2 -> 0.3 */
\echo Use "ALTER EXTENSION whatsapp UPDATE TO '0.3'" to load this file. \quit

/* ========================================================================
 * Issue 8, item 2: setting secrets without putting them in a statement.
 *
 * whatsapp.account_input is a view that stores nothing.  An INSTEAD OF
 * INSERT trigger hands each row to the C code of wa_account_set (the same
 * checks, the same NULL and '' rules, the same errors), which seals the
 * secrets; the row returned (for RETURNING and the row count) has the
 * secrets removed.  It is meant for
 *
 *		COPY whatsapp.account_input (name, phone_number_id, access_token)
 *			FROM STDIN
 *
 * whose data is never part of a statement's text, so neither
 * log_statement, log_min_duration_statement, log_min_error_statement nor
 * pg_stat_activity ever sees it.  Every column is text, max_mps included:
 * no type input function can fail on a value and quote it.  Errors raised
 * for a row carry the COPY line number, never the line (src/accounts.c).
 * ======================================================================== */
CREATE FUNCTION whatsapp._account_input_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'wa_account_input_trigger'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION whatsapp._account_input_trigger() FROM PUBLIC;

CREATE VIEW whatsapp.account_input AS
SELECT NULL::pg_catalog.text AS name,
	   NULL::pg_catalog.text AS phone_number_id,
	   NULL::pg_catalog.text AS access_token,
	   NULL::pg_catalog.text AS app_secret,
	   NULL::pg_catalog.text AS verify_token,
	   NULL::pg_catalog.text AS waba_id,
	   NULL::pg_catalog.text AS max_mps
 WHERE false;
/* A column left out of the COPY column list gets wa_account_set's default. */
ALTER VIEW whatsapp.account_input ALTER COLUMN max_mps SET DEFAULT '80';

CREATE TRIGGER account_input INSTEAD OF INSERT ON whatsapp.account_input
	FOR EACH ROW EXECUTE FUNCTION whatsapp._account_input_trigger();

COMMENT ON VIEW whatsapp.account_input IS
	'Write-only: COPY whatsapp.account_input (name, phone_number_id, access_token, ...) FROM STDIN sets accounts as whatsapp.wa_account_set() does, without the secrets in any statement text';

REVOKE ALL ON whatsapp.account_input FROM PUBLIC;
GRANT INSERT ON whatsapp.account_input TO whatsapp_admin;
