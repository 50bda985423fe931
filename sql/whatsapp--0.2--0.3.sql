/* whatsapp 0.2 -> 0.3 */
\echo Use "ALTER EXTENSION whatsapp UPDATE TO '0.3'" to load this file. \quit

/* ----------
 * The trust boundary: Odoo's tables are read in C, never by SQL
 * (src/odoo_read.c).  Odoo's role owns them and could attach code to them
 * that SQL run by these SECURITY DEFINER functions would call as the
 * extension's owner, a superuser.
 * ----------
 */

/* Does res_company have this id?  Raises for a view or a non-integer id. */
CREATE FUNCTION whatsapp._odoo_company_exists(company_id integer)
RETURNS boolean
AS 'MODULE_PATHNAME', 'wa_odoo_company_exists'
LANGUAGE C STABLE STRICT;
REVOKE ALL ON FUNCTION whatsapp._odoo_company_exists(integer) FROM PUBLIC;

/* The tables an event reads must be ordinary tables. */
CREATE OR REPLACE FUNCTION whatsapp._odoo_check_schema(event text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tbl text := whatsapp._odoo_table(event);
	t text;
	c text;
	k "char";
BEGIN
	FOREACH t IN ARRAY ARRAY[tbl, 'res_partner', 'res_company', 'res_country', 'res_currency']
	LOOP
		IF to_regclass(format('public.%I', t)) IS NULL THEN
			RAISE EXCEPTION 'Odoo table "public.%" does not exist', t
				USING ERRCODE = 'undefined_table',
					  DETAIL = format('Event %s needs Odoo''s tables %s, res_partner, res_company, res_country and res_currency in schema public.', event, tbl),
					  HINT = CASE WHEN t = 'sale_order'
								  THEN 'Run it in the database of an Odoo instance with the Sales app installed.'
								  ELSE 'Run it in the database of an Odoo instance with Invoicing or Accounting installed.' END;
		END IF;
		k := (SELECT r.relkind FROM pg_class r WHERE r.oid = to_regclass(format('public.%I', t)));
		IF k <> 'r' THEN
			RAISE EXCEPTION 'public.% is a %, not a table, so the whatsapp extension does not read it', t,
					CASE k WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
						   WHEN 'p' THEN 'partitioned table' WHEN 'f' THEN 'foreign table'
						   ELSE 'relation of another kind' END
				USING ERRCODE = 'wrong_object_type',
					  DETAIL = 'The extension reads Odoo''s tables only when they are ordinary tables, so that no code of their owner runs with the extension''s rights.',
					  HINT = format('Restore public.%s as the table Odoo creates.', t);
		END IF;
	END LOOP;
	FOREACH c IN ARRAY CASE tbl WHEN 'sale_order' THEN ARRAY['id', 'state']
							   ELSE ARRAY['id', 'state', 'move_type', 'is_move_sent'] END
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_attribute a
						WHERE a.attrelid = to_regclass(format('public.%I', tbl))
						  AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped) THEN
			RAISE EXCEPTION 'column "%" of Odoo table "public.%" does not exist', c, tbl
				USING ERRCODE = 'undefined_column',
					  HINT = 'The whatsapp extension supports the tables of Odoo 16 to 19.';
		END IF;
	END LOOP;
END
$$;

/* The company is looked up by whatsapp._odoo_company_exists. */
CREATE OR REPLACE FUNCTION whatsapp.wa_odoo_enable(
	event text, template text, language text DEFAULT NULL,
	account text DEFAULT NULL, params jsonb DEFAULT NULL,
	company_id integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ev text := wa_odoo_enable.event;
	tbl text := whatsapp._odoo_table(ev);
	lang text := replace(btrim(wa_odoo_enable.language), '-', '_');
	acct text;
	k text;
	v jsonb;
	has_body boolean := false;
	has_named boolean := false;
	op text;
	trg text;
	found_company boolean;
BEGIN
	PERFORM whatsapp._odoo_check_schema(ev);

	IF wa_odoo_enable.template IS NULL OR wa_odoo_enable.template !~ '^[a-z0-9_]+$'
	   OR length(wa_odoo_enable.template) > 512 THEN
		RAISE EXCEPTION 'template % is not a Cloud API template name',
				coalesce(quote_literal(wa_odoo_enable.template), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Template names use only lower case letters, digits and underscores, as in "order_confirmation".';
	END IF;
	IF lang IS NOT NULL AND lang !~ '^[A-Za-z]{2,3}(_[A-Za-z0-9]{2,4})?$' THEN
		RAISE EXCEPTION 'language % is not a template language code', quote_literal(wa_odoo_enable.language)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a code such as ''es'', ''es_MX'' or ''pt_BR'', or NULL for each partner''s language.';
	END IF;

	IF wa_odoo_enable.account IS NULL THEN
		SELECT a.name INTO acct FROM whatsapp.account a
		 WHERE a.is_default AND a.dropped_at IS NULL;
		IF acct IS NULL THEN
			RAISE EXCEPTION 'there is no default whatsapp account'
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Pass the account argument, or create an account with whatsapp.wa_account_set().';
		END IF;
	ELSE
		SELECT a.name INTO acct FROM whatsapp.account a
		 WHERE a.name = wa_odoo_enable.account AND a.dropped_at IS NULL;
		IF acct IS NULL THEN
			RAISE EXCEPTION 'whatsapp account "%" does not exist', wa_odoo_enable.account
				USING ERRCODE = 'undefined_object',
					  HINT = 'Create it with whatsapp.wa_account_set(), or see whatsapp.accounts for the names.';
		END IF;
	END IF;

	IF wa_odoo_enable.params IS NOT NULL THEN
		CASE jsonb_typeof(wa_odoo_enable.params)
		WHEN 'array' THEN
			PERFORM whatsapp._odoo_check_words(ev, wa_odoo_enable.params, 'an element');
		WHEN 'object' THEN
			FOR k, v IN SELECT * FROM jsonb_each(wa_odoo_enable.params)
			LOOP
				IF k = 'header' THEN
					IF v IS DISTINCT FROM '"portal_pdf"'::jsonb THEN
						RAISE EXCEPTION 'header % of params is not supported', v::text
							USING ERRCODE = 'invalid_parameter_value',
								  HINT = '"header": "portal_pdf" adds the document''s PDF from Odoo''s portal as a document header.';
					END IF;
				ELSIF k = 'body' THEN
					IF jsonb_typeof(v) <> 'array' THEN
						RAISE EXCEPTION '"body" of params must be an array of parameter words'
							USING ERRCODE = 'invalid_parameter_value';
					END IF;
					PERFORM whatsapp._odoo_check_words(ev, v, 'an element of "body"');
					has_body := true;
				ELSE
					IF k !~ '^[a-z0-9_]+$' OR length(k) > 128 THEN
						RAISE EXCEPTION '% is not a template parameter name', quote_literal(k)
							USING ERRCODE = 'invalid_parameter_value',
								  HINT = 'Named template parameters use lower case letters, digits and underscores.';
					END IF;
					PERFORM whatsapp._odoo_check_words(ev, v, format('parameter %s', k));
					has_named := true;
				END IF;
			END LOOP;
			IF has_body AND has_named THEN
				RAISE EXCEPTION 'params mixes "body" (positional) with named parameters'
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'A template has either positional or named parameters.';
			END IF;
		ELSE
			RAISE EXCEPTION 'params of whatsapp.wa_odoo_enable has an unsupported form'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Pass an array of parameter words (positional), an object mapping template parameter names to words (named), optionally with "header": "portal_pdf" (then "body": [...] holds positional words), or NULL.';
		END CASE;
	END IF;

	IF wa_odoo_enable.company_id IS NOT NULL THEN
		/* read in C, never by SQL: Odoo's role owns res_company */
		found_company := whatsapp._odoo_company_exists(wa_odoo_enable.company_id);
		IF NOT found_company THEN
			RAISE EXCEPTION 'Odoo company % does not exist', wa_odoo_enable.company_id
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Pass an id of res_company, or NULL for every company without a rule of its own.';
		END IF;
	END IF;

	UPDATE whatsapp.odoo_rule r
	   SET template = wa_odoo_enable.template, language = lang, account = acct,
		   params = wa_odoo_enable.params, updated_at = now(), updated_by = session_user
	 WHERE r.event = ev AND r.company_id IS NOT DISTINCT FROM wa_odoo_enable.company_id;
	IF NOT FOUND THEN
		INSERT INTO whatsapp.odoo_rule (event, company_id, template, language, account, params)
		VALUES (ev, wa_odoo_enable.company_id, wa_odoo_enable.template, lang, acct,
				wa_odoo_enable.params);
	END IF;

	/* The triggers, when they are not there yet. */
	FOREACH op IN ARRAY ARRAY['insert', 'update']
	LOOP
		trg := format('whatsapp_%s_%s', ev, op);
		IF NOT EXISTS (SELECT 1 FROM pg_trigger t
						WHERE t.tgrelid = format('public.%I', tbl)::regclass
						  AND t.tgname = trg) THEN
			/*
			 * UPDATE OF the columns the condition reads: Odoo's other writes
			 * of the table skip the trigger without evaluating anything.
			 */
			EXECUTE format('CREATE CONSTRAINT TRIGGER %I AFTER %s ON public.%I'
						   ' DEFERRABLE INITIALLY DEFERRED FOR EACH ROW'
						   ' WHEN (%s AND pg_catalog.current_setting(''whatsapp.odoo_events'', true) IS DISTINCT FROM ''off'')'
						   ' EXECUTE FUNCTION whatsapp._odoo_trigger(%L)',
						   trg,
						   CASE op WHEN 'insert' THEN 'INSERT'
								   WHEN 'update' THEN 'UPDATE OF ' || CASE ev
									   WHEN 'sale_order_confirmed' THEN 'state'
									   WHEN 'invoice_sent' THEN 'state, move_type, is_move_sent'
									   ELSE 'state, move_type' END END,
						   tbl,
						   CASE op WHEN 'insert' THEN whatsapp._odoo_condition(ev, 'NEW')
								   ELSE whatsapp._odoo_condition(ev, 'NEW') || ' AND NOT coalesce('
										|| whatsapp._odoo_condition(ev, 'OLD') || ', false)' END,
						   ev);
		END IF;
	END LOOP;
END
$$;
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
