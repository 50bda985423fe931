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

/* ========================================================================
 * Issue 8, item 5: senders act on their own messages.
 *
 * message.queued_by names the role a message belongs to: the current_user
 * of the wa_send* call (inside a SECURITY DEFINER function of the
 * application, its owner), or for a message an Odoo trigger recorded, the
 * session's role at commit.  It is a role name, not an OID, so that it
 * keeps its meaning through pg_dump and pg_dumpall.  Messages queued
 * before 0.3 have NULL: only members of whatsapp_admin (and superusers)
 * may act on them.
 *
 * To know their caller, wa_send*, wa_cancel and wa_retry become SECURITY
 * INVOKER and take the rights of their owner themselves, in C, for their
 * work (src/ownership.c): what they can do is what it was.
 * ======================================================================== */
ALTER TABLE whatsapp.message ADD COLUMN queued_by pg_catalog.text;

ALTER FUNCTION whatsapp.wa_send(text, text, text, text, jsonb) SECURITY INVOKER;
ALTER FUNCTION whatsapp.wa_send_template(text, text, text, jsonb, text, text, jsonb)
	SECURITY INVOKER;
ALTER FUNCTION whatsapp.wa_send_message(text, jsonb, text, text, jsonb)
	SECURITY INVOKER;

CREATE OR REPLACE FUNCTION whatsapp.wa_cancel(id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'wa_cancel'
LANGUAGE C VOLATILE STRICT SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION whatsapp.wa_retry(id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'wa_retry'
LANGUAGE C VOLATILE STRICT SECURITY INVOKER
SET search_path = pg_catalog, pg_temp;

/* The view shows the owner, last (CREATE OR REPLACE VIEW only appends). */
CREATE OR REPLACE VIEW whatsapp.messages AS
SELECT m.id,
	   a.name AS account,
	   m.recipient,
	   m.wa_id,
	   m.kind,
	   m.state,
	   m.wamid,
	   m.attempts,
	   m.next_attempt_at,
	   m.failure_type,
	   m.http_status,
	   m.error_code,
	   m.error_title,
	   m.error_details,
	   m.fbtrace_id,
	   m.dedupe_key,
	   m.context,
	   m.payload,
	   m.created_at,
	   m.sent_at,
	   m.delivered_at,
	   m.read_at,
	   m.failed_at,
	   m.pricing,
	   m.conversation,
	   m.queued_by
  FROM whatsapp.message m
  LEFT JOIN whatsapp.account a ON a.id OPERATOR(pg_catalog.=) m.account_id;
