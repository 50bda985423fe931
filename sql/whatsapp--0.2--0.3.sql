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

/*
 * wa_odoo_enable looks the company up with whatsapp._odoo_company_exists:
 * see its definition in the section of issue 12 below, which replaces it
 * once for both changes.
 */

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

/* ========================================================================
 * Issue 12, item 4: Odoo's upgrades are never blocked by the extension.
 *
 * Until 0.3 the UPDATE trigger was "UPDATE OF state, move_type, ..." and
 * both triggers had a WHEN clause on those columns: PostgreSQL records a
 * dependency of the trigger on each column, so Odoo's own ALTER COLUMN
 * TYPE or DROP COLUMN of state, move_type or is_move_sent (an upgrade, a
 * migration script) failed because of us.  Now no trigger names a column:
 * the WHEN clause reads only the setting whatsapp.odoo_events, and the
 * trigger function checks in C, from the old and new rows it is handed,
 * whether the row entered the event's state (a comparison of two column
 * values per event queued; no SQL).
 *
 * wa_odoo_pause() and wa_odoo_resume() silence every event of the
 * database for "odoo -u" and migrations, whose bulk UPDATEs would
 * otherwise fire events for recent documents.
 *
 * Existing triggers are made again in the new form, below.
 * ======================================================================== */

/*
 * Put the two triggers of an event on its table; with recreate, drop and
 * make again the ones that are there (the 0.3 update).
 */
CREATE FUNCTION whatsapp._odoo_install_triggers(event text, recreate boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ev text := _odoo_install_triggers.event;
	tbl text := whatsapp._odoo_table(ev);
	rel regclass := to_regclass(format('public.%I', tbl));
	op text;
	trg text;
	there boolean;
BEGIN
	IF rel IS NULL THEN
		RETURN;
	END IF;
	FOREACH op IN ARRAY ARRAY['insert', 'update']
	LOOP
		trg := format('whatsapp_%s_%s', ev, op);
		there := EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = trg);
		IF there AND recreate THEN
			EXECUTE format('DROP TRIGGER %I ON public.%I', trg, tbl);
			there := false;
		END IF;
		IF NOT there THEN
			EXECUTE format('CREATE CONSTRAINT TRIGGER %I AFTER %s ON public.%I'
						   ' DEFERRABLE INITIALLY DEFERRED FOR EACH ROW'
						   ' WHEN (pg_catalog.current_setting(''whatsapp.odoo_events'', true) IS DISTINCT FROM ''off'')'
						   ' EXECUTE FUNCTION whatsapp._odoo_trigger(%L)',
						   trg, upper(op), tbl, ev);
		END IF;
	END LOOP;
END
$$;
REVOKE ALL ON FUNCTION whatsapp._odoo_install_triggers(text, boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION whatsapp.wa_odoo_enable(
	event text, template text, language text DEFAULT NULL,
	account text DEFAULT NULL, params jsonb DEFAULT NULL,
	company_id integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	link_warning text;
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
				ELSIF k = 'base_url' THEN
					IF jsonb_typeof(v) <> 'string'
					   OR (v #>> '{}') !~ '^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^?#[:space:]]*)?$' THEN
						RAISE EXCEPTION '"base_url" of params must be an https URL such as "https://erp.example.com"'
							USING ERRCODE = 'invalid_parameter_value',
								  HINT = 'It is the public address of Odoo for this rule''s links; without it the links use web.base.url.';
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

	/* Links: will customers and Meta reach them? */
	IF wa_odoo_enable.params::text ~ '"(portal_url|portal_pdf)"' THEN
		link_warning := whatsapp._odoo_link_warning(wa_odoo_enable.params ->> 'base_url');
		IF link_warning IS NOT NULL THEN
			RAISE WARNING 'the links of event % may not work: %', ev, link_warning
				USING HINT = 'Set web.base.url to Odoo''s public https address and web.base.url.freeze to True in Odoo''s system parameters, or give the rule "base_url" in params.';
		END IF;
	END IF;

	/* The triggers, when they are not there yet (no column in them). */
	PERFORM whatsapp._odoo_install_triggers(ev, false);
END
$$;

/*
 * Issue 12, item 3 (links): why links on base_url (NULL: web.base.url,
 * and then also web.base.url.freeze) may not reach customers and Meta;
 * NULL when they look public.  Reads ir_config_parameter in C
 * (odoo_read.c), never by SQL.
 */
CREATE FUNCTION whatsapp._odoo_link_warning(base_url text)
RETURNS text
AS 'MODULE_PATHNAME', 'wa_odoo_link_warnings'
LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION whatsapp._odoo_link_warning(text) FROM PUBLIC;

/* The triggers of 0.2 and before, made again without their columns. */
DO $$
DECLARE
	ev text;
BEGIN
	FOR ev IN SELECT DISTINCT substring(t.tgname FROM '^whatsapp_(.*)_(insert|update)$')
				FROM pg_trigger t
			   WHERE t.tgfoid = 'whatsapp._odoo_trigger()'::regprocedure
				 AND t.tgrelid IN (SELECT c.oid FROM pg_class c
									WHERE c.relnamespace = 'public'::regnamespace
									  AND c.relname IN ('sale_order', 'account_move'))
	LOOP
		IF ev IN ('sale_order_confirmed', 'invoice_posted', 'refund_posted', 'invoice_sent') THEN
			PERFORM whatsapp._odoo_install_triggers(ev, true);
		END IF;
	END LOOP;
END
$$;

/*
 * A pause of every Odoo event of this database: at most one row, while
 * paused.  The trigger function reads it (in C, with a fresh snapshot, so
 * that a long transaction started before the pause sees it) for each row
 * that entered an event's state; a document committed while paused
 * records nothing, then or later.
 */
CREATE TABLE whatsapp.odoo_pause (
	paused			boolean NOT NULL DEFAULT true PRIMARY KEY CHECK (paused),
	paused_at		timestamptz NOT NULL DEFAULT now(),
	paused_by		text NOT NULL DEFAULT session_user,
	reason			text
);
SELECT pg_catalog.pg_extension_config_dump('whatsapp.odoo_pause', '');
REVOKE ALL ON whatsapp.odoo_pause FROM PUBLIC;

CREATE FUNCTION whatsapp.wa_odoo_pause(reason text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO whatsapp.odoo_pause (reason) VALUES (wa_odoo_pause.reason)
	ON CONFLICT (paused) DO UPDATE SET reason = coalesce(EXCLUDED.reason, whatsapp.odoo_pause.reason);
	RAISE NOTICE 'Odoo events are paused in database %: documents committed from now on send nothing, until whatsapp.wa_odoo_resume()',
		current_database();
END
$$;

CREATE FUNCTION whatsapp.wa_odoo_resume()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM whatsapp.odoo_pause;
	IF NOT FOUND THEN
		RAISE NOTICE 'Odoo events were not paused in database %', current_database();
	END IF;
END
$$;

/* Whether and since when the events are paused (whatsapp_admin). */
CREATE VIEW whatsapp.odoo_paused AS
SELECT p.paused_at, p.paused_by, p.reason FROM whatsapp.odoo_pause p;

REVOKE ALL ON FUNCTION whatsapp.wa_odoo_pause(text), whatsapp.wa_odoo_resume() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whatsapp.wa_odoo_pause(text), whatsapp.wa_odoo_resume()
	TO whatsapp_admin;
REVOKE ALL ON whatsapp.odoo_paused FROM PUBLIC;
GRANT SELECT ON whatsapp.odoo_paused TO whatsapp_admin;





/* ========================================================================
 * Webhooks you can trust (src/webhook*.c)
 *
 * A payload changes only the accounts that share the app secret that
 * verified it; consent events apply in the order of their own timestamps;
 * Meta's account and template events act.
 * ======================================================================== */


/*
 * Redeliveries.  Meta retries a payload for days; one of the same bytes as
 * a payload stored before is stored again, marked duplicate_of that one,
 * and applies nothing.  digest is the SHA-256 of the exact bytes.
 */
ALTER TABLE whatsapp.webhook
	ADD COLUMN digest bytea,
	ADD COLUMN duplicate_of bigint;
CREATE INDEX webhook_digest_idx ON whatsapp.webhook (digest)
	WHERE digest IS NOT NULL;

CREATE OR REPLACE VIEW whatsapp.webhooks AS
SELECT w.id,
	   w.received_at,
	   a.name AS account,
	   w.applied,
	   w.ignored,
	   w.payload,
	   w.duplicate_of
  FROM whatsapp.webhook w
  LEFT JOIN whatsapp.account a ON a.id = w.account_id;

/* A status is held once per number, wamid and kind, however often it comes. */
DELETE FROM whatsapp.status_held h
 USING whatsapp.status_held k
 WHERE k.phone_number_id = h.phone_number_id AND k.wamid = h.wamid
   AND k.status ->> 'status' IS NOT DISTINCT FROM h.status ->> 'status'
   AND k.id < h.id;
CREATE UNIQUE INDEX status_held_once ON whatsapp.status_held
	(phone_number_id, wamid, (status ->> 'status'));

/*
 * Consent in time order.  Meta delivers out of order and retries for
 * days, so consent events (keywords, buttons, user_preferences, 131050,
 * wa_opt_out, wa_opt_in) apply in the order of their own timestamps, per
 * identifier and scope: consent_latest keeps, for each, the time and kind
 * of the newest event applied there.  An event applies where it is newer;
 * at the same second an opt-out wins over an opt-in; a replay (the same
 * time again) changes nothing.
 */
CREATE TABLE whatsapp.consent_latest (
	identifier		text NOT NULL,
	scope			text NOT NULL,
	event_at		timestamptz NOT NULL,	/* the event's own time */
	action			text NOT NULL,
	CONSTRAINT consent_latest_pkey PRIMARY KEY (identifier, scope),
	CONSTRAINT consent_latest_action_check CHECK (action IN ('opt_out', 'opt_in')),
	CONSTRAINT consent_latest_scope_check CHECK (scope IN ('all', 'marketing'))
);
SELECT pg_catalog.pg_extension_config_dump('whatsapp.consent_latest', '');
INSERT INTO whatsapp.consent_latest (identifier, scope, event_at, action)
SELECT identifier, scope, since, 'opt_out' FROM whatsapp.opt_out;

/* The consent log shows each event's own time too. */
ALTER TABLE whatsapp.consent ADD COLUMN event_at timestamptz;
UPDATE whatsapp.consent SET event_at = at;

CREATE OR REPLACE VIEW whatsapp.consents AS
SELECT c.id,
	   c.at,
	   c.identifier,
	   c.action,
	   c.scope,
	   c.source,
	   c.reason,
	   a.name AS account,
	   c.wamid,
	   c.recorded_by,
	   (SELECT pg_catalog.array_agg(o.scope ORDER BY o.scope)
		  FROM whatsapp.opt_out o
		 WHERE o.identifier = c.identifier) AS opted_out_now,
	   c.event_at
  FROM whatsapp.consent c
  LEFT JOIN whatsapp.account a ON a.id = c.account_id;

/*
 * Every identifier of the people behind ids.  Since 0.3 an identifier that
 * cannot be normalized but is a wa_id ('+' and digits) is kept as it is,
 * so that an opt-out from it is recorded and blocks sends to it.
 */
CREATE OR REPLACE FUNCTION whatsapp._identities(ids text[])
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH f AS (
		SELECT DISTINCT x AS id
		  FROM pg_catalog.unnest($1) i,
			   pg_catalog.unnest(COALESCE(whatsapp._identity_forms(i),
				   CASE WHEN i ~ '^\+[0-9]{1,20}$' THEN ARRAY[i] END)) x
	), users AS (
		SELECT id FROM f WHERE id NOT LIKE '+%'
		UNION
		SELECT im.user_id FROM whatsapp.inbound_message im
		 WHERE im.phone IN (SELECT id FROM f) AND im.user_id IS NOT NULL
	), phones AS (
		SELECT id FROM f WHERE id LIKE '+%'
		UNION
		SELECT x FROM whatsapp.inbound_message im,
			   pg_catalog.unnest(whatsapp._identity_forms(im.phone)) x
		 WHERE im.user_id IN (SELECT id FROM users) AND im.phone IS NOT NULL
	)
	SELECT pg_catalog.array_agg(id ORDER BY id)
	  FROM (SELECT id FROM users UNION SELECT id FROM phones) s
$$;

/*
 * Apply one consent event of time p_at to every identifier of the person:
 * p_action 'opt_out' records an opt-out of p_scope; 'opt_in' lifts one
 * (scope 'all' lifts both scopes).  Only where the event is newer than
 * the newest one applied to that identifier and scope (consent_latest).
 * changed: the opt_out rows added or removed; stale: the (identifier,
 * scope) pairs where a newer event is in force.  The consent log gets the
 * identifiers that changed, or all of them with p_always (explicit SQL
 * calls).
 */
CREATE FUNCTION whatsapp._consent_apply(
	p_action text, p_account_id integer, p_ids text[], p_scope text,
	p_source text, p_reason text, p_wamid text, p_at timestamptz,
	p_always boolean DEFAULT false,
	OUT changed integer, OUT stale integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	all_ids text[] := whatsapp._identities(p_ids);
	scopes text[] := CASE WHEN p_action = 'opt_in' AND p_scope = 'all'
						  THEN ARRAY['all', 'marketing'] ELSE ARRAY[p_scope] END;
	news_ids text[];
	news_scopes text[];
	changed_ids text[];
BEGIN
	changed := 0;
	stale := 0;
	IF all_ids IS NULL OR p_at IS NULL THEN
		RETURN;
	END IF;
	SELECT count(*) INTO stale
	  FROM whatsapp.consent_latest l
	 WHERE l.identifier = ANY (all_ids) AND l.scope = ANY (scopes) AND l.event_at > p_at;
	WITH news AS (
		INSERT INTO whatsapp.consent_latest AS l (identifier, scope, event_at, action)
		SELECT x, s, p_at, p_action FROM unnest(all_ids) x, unnest(scopes) s
		ON CONFLICT (identifier, scope) DO UPDATE
		   SET event_at = EXCLUDED.event_at, action = EXCLUDED.action
		 WHERE l.event_at < EXCLUDED.event_at
			OR (l.event_at = EXCLUDED.event_at AND EXCLUDED.action = 'opt_out'
				AND l.action = 'opt_in')
		RETURNING l.identifier, l.scope)
	SELECT array_agg(identifier), array_agg(scope) INTO news_ids, news_scopes FROM news;
	IF news_ids IS NOT NULL THEN
		IF p_action = 'opt_out' THEN
			WITH ins AS (
				INSERT INTO whatsapp.opt_out (identifier, scope, since, source, reason, account_id)
				SELECT n.i, n.s, p_at, p_source, p_reason, p_account_id
				  FROM unnest(news_ids, news_scopes) n(i, s)
				ON CONFLICT (identifier, scope) DO NOTHING
				RETURNING identifier)
			SELECT array_agg(identifier) INTO changed_ids FROM ins;
		ELSE
			WITH del AS (
				DELETE FROM whatsapp.opt_out o
				 USING unnest(news_ids, news_scopes) n(i, s)
				 WHERE o.identifier = n.i AND o.scope = n.s
				RETURNING o.identifier)
			SELECT array_agg(identifier) INTO changed_ids FROM del;
		END IF;
	END IF;
	changed := coalesce(cardinality(changed_ids), 0);
	INSERT INTO whatsapp.consent (identifier, action, scope, source, reason, account_id,
								  wamid, event_at)
	SELECT x, p_action, p_scope, p_source, p_reason, p_account_id, p_wamid, p_at
	  FROM unnest(all_ids) x
	 WHERE p_always OR x = ANY (changed_ids);
END
$$;
REVOKE ALL ON FUNCTION whatsapp._consent_apply(text, integer, text[], text, text, text, text, timestamptz, boolean) FROM PUBLIC;

/* The 0.1 entry points, now in time order: their event is now(). */
CREATE OR REPLACE FUNCTION whatsapp._opt_out_apply(
	p_account_id integer, p_ids text[], p_scope text, p_source text,
	p_reason text DEFAULT NULL, p_wamid text DEFAULT NULL,
	p_always boolean DEFAULT false)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT changed FROM whatsapp._consent_apply('opt_out', p_account_id, p_ids, p_scope,
		p_source, p_reason, p_wamid, pg_catalog.now(), p_always)
$$;

CREATE OR REPLACE FUNCTION whatsapp._opt_in_apply(
	p_account_id integer, p_ids text[], p_scope text, p_source text,
	p_wamid text DEFAULT NULL, p_always boolean DEFAULT false)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT changed FROM whatsapp._consent_apply('opt_in', p_account_id, p_ids, p_scope,
		p_source, NULL, p_wamid, pg_catalog.now(), p_always)
$$;

/*
 * Identifiers seen together: an opt-out of one extends to the others, with
 * the time of the event it came from, where no newer event is in force.
 */
CREATE OR REPLACE FUNCTION whatsapp._link_identities(p_account_id integer, p_ids text[],
													 p_source text, p_wamid text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	forms text[];
	n integer;
BEGIN
	SELECT array_agg(DISTINCT x) INTO forms
	  FROM unnest(p_ids) i, unnest(whatsapp._identity_forms(i)) x;
	IF forms IS NULL OR NOT EXISTS (
		SELECT 1 FROM whatsapp.opt_out o WHERE o.identifier = ANY (forms)) THEN
		RETURN 0;
	END IF;
	WITH src AS (
		SELECT DISTINCT ON (x, o.scope) x, o.scope, o.identifier AS via,
			   coalesce(l.event_at, o.since) AS at
		  FROM whatsapp.opt_out o
		  LEFT JOIN whatsapp.consent_latest l
			ON l.identifier = o.identifier AND l.scope = o.scope,
			   unnest(forms) x
		 WHERE o.identifier = ANY (forms)
		 ORDER BY x, o.scope, at DESC),
	clock AS (
		INSERT INTO whatsapp.consent_latest AS l (identifier, scope, event_at, action)
		SELECT x, scope, at, 'opt_out' FROM src
		ON CONFLICT (identifier, scope) DO UPDATE
		   SET event_at = EXCLUDED.event_at, action = 'opt_out'
		 WHERE l.event_at < EXCLUDED.event_at
		RETURNING l.identifier, l.scope),
	ins AS (
		INSERT INTO whatsapp.opt_out (identifier, scope, since, source, reason, account_id)
		SELECT src.x, src.scope, src.at, p_source, 'same person as ' || src.via, p_account_id
		  FROM src JOIN clock ON clock.identifier = src.x AND clock.scope = src.scope
		ON CONFLICT (identifier, scope) DO NOTHING
		RETURNING identifier, scope, reason, since),
	c AS (
		INSERT INTO whatsapp.consent (identifier, action, scope, source, reason, account_id,
									  wamid, event_at)
		SELECT identifier, 'opt_out', scope, p_source, reason, p_account_id, p_wamid, since
		  FROM ins
		RETURNING 1)
	SELECT count(*) INTO n FROM c;
	RETURN n;
END
$$;

/*
 * Meta's account events act.  An account_update that bans (DISABLED_UPDATE
 * with DISABLE), restricts messaging (ACCOUNT_RESTRICTION) or offboards
 * (ACCOUNT_OFFBOARDED, ACCOUNT_DELETED) the WABA pauses its accounts with
 * paused_kind 'meta' and says why; REINSTATE and ACCOUNT_RECONNECTED, or
 * wa_account_set, resume them.  meta_status is the last account event;
 * quality and messaging_limit come from phone_number_quality_update.
 */
ALTER TABLE whatsapp.account
	DROP CONSTRAINT account_paused_kind_check,
	ADD CONSTRAINT account_paused_kind_check
		CHECK (paused_kind IN ('token', 'key', 'binding', 'meta')),
	ADD COLUMN display_phone_number text,	/* as Meta's webhooks show it */
	ADD COLUMN meta_status text,			/* the last account_update */
	ADD COLUMN meta_status_at timestamptz,
	ADD COLUMN quality text,				/* the last phone_number_quality_update event */
	ADD COLUMN messaging_limit text,
	ADD COLUMN quality_at timestamptz;

CREATE OR REPLACE VIEW whatsapp.accounts AS
SELECT a.name,
	   a.phone_number_id,
	   a.waba_id,
	   a.max_mps,
	   a.is_default,
	   a.access_token IS NOT NULL AS has_access_token,
	   a.app_secret IS NOT NULL AS has_app_secret,
	   a.verify_token IS NOT NULL AS has_verify_token,
	   a.access_token_key AS key_id,
	   a.paused_kind IS NOT NULL AS paused,
	   a.paused_reason,
	   a.paused_at,
	   a.backoff_until,
	   a.created_at,
	   a.updated_at,
	   a.display_phone_number,
	   a.meta_status,
	   a.meta_status_at,
	   a.quality,
	   a.messaging_limit,
	   a.quality_at
  FROM whatsapp.account a
 WHERE a.dropped_at IS NULL;

/*
 * Templates: Meta's quality score (message_template_quality_update).  A
 * template whose status is PAUSED or DISABLED fails new sends at enqueue
 * (failure_type 'template') until Meta approves it again.
 */
ALTER TABLE whatsapp.templates ADD COLUMN quality text;
CREATE INDEX templates_blocked_idx ON whatsapp.templates (name)
	WHERE status IN ('PAUSED', 'DISABLED');

/*
 * A template status, category or quality update from Meta, for the
 * accounts of the WABA it came from (p_accounts, account names).  Their
 * own rows are updated.  A row listed for every account (account NULL) is updated only
 * when p_every (those accounts are all the active ones); otherwise each of
 * them gets a row of its own, a copy of the shared one with the new value,
 * which takes precedence over the shared row for that account.  Returns
 * the rows changed or added.
 */
CREATE FUNCTION whatsapp._template_update(p_accounts text[], p_every boolean,
										  p_name text, p_language text,
										  p_column text, p_value text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n integer;
	m integer := 0;
BEGIN
	IF p_column NOT IN ('status', 'category', 'quality') THEN
		RAISE EXCEPTION 'whatsapp._template_update: unknown column %', p_column
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	UPDATE whatsapp.templates t
	   SET status = CASE WHEN p_column = 'status' THEN p_value ELSE t.status END,
		   category = CASE WHEN p_column = 'category' THEN p_value ELSE t.category END,
		   quality = CASE WHEN p_column = 'quality' THEN p_value ELSE t.quality END
	 WHERE t.name = p_name
	   AND (p_language IS NULL OR t.language = p_language)
	   AND (t.account = ANY (p_accounts) OR (p_every AND t.account IS NULL))
	   AND CASE p_column WHEN 'status' THEN t.status WHEN 'category' THEN t.category
						 ELSE t.quality END IS DISTINCT FROM p_value;
	GET DIAGNOSTICS n = ROW_COUNT;
	IF NOT p_every THEN
		INSERT INTO whatsapp.templates (account, name, language, category, status, quality)
		SELECT a.name, t.name, t.language,
			   CASE WHEN p_column = 'category' THEN p_value ELSE t.category END,
			   CASE WHEN p_column = 'status' THEN p_value ELSE t.status END,
			   CASE WHEN p_column = 'quality' THEN p_value ELSE t.quality END
		  FROM whatsapp.templates t, unnest(p_accounts) a(name)
		 WHERE t.account IS NULL AND t.name = p_name
		   AND (p_language IS NULL OR t.language = p_language)
		   AND CASE p_column WHEN 'status' THEN t.status WHEN 'category' THEN t.category
							 ELSE t.quality END IS DISTINCT FROM p_value
		   AND NOT EXISTS (SELECT 1 FROM whatsapp.templates o
							WHERE o.account = a.name AND o.name = t.name
							  AND o.language = t.language);
		GET DIAGNOSTICS m = ROW_COUNT;
	END IF;
	RETURN n + m;
END
$$;
REVOKE ALL ON FUNCTION whatsapp._template_update(text[], boolean, text, text, text, text) FROM PUBLIC;

/*
 * Edits, revokes and reactions.  An edit replaces the text of the inbound
 * message it names and keeps the previous text in history; a revoke marks
 * it revoked and clears its text; a reaction is recorded on the message it
 * reacts to.
 */
ALTER TABLE whatsapp.inbound_message
	ADD COLUMN edited_at timestamptz,
	ADD COLUMN revoked_at timestamptz,
	ADD COLUMN history jsonb;		/* [{text, replaced_at, by}], oldest first */
ALTER TABLE whatsapp.message
	ADD COLUMN reaction text,		/* the customer's emoji, NULL when removed */
	ADD COLUMN reacted_at timestamptz;

CREATE OR REPLACE VIEW whatsapp.inbound AS
SELECT i.id,
	   a.name AS account,
	   i.wamid,
	   i.wa_id,
	   i.phone,
	   i.user_id,
	   i.parent_user_id,
	   i.username,
	   i.profile_name AS name,
	   i.type,
	   i.body AS text,
	   i.context_wamid,
	   i.in_reply_to,
	   i.raw -> 'referral' AS referral,
	   i.sent_at,
	   i.received_at,
	   i.raw,
	   i.edited_at,
	   i.revoked_at,
	   i.history
  FROM whatsapp.inbound_message i
  LEFT JOIN whatsapp.account a ON a.id = i.account_id;

/* The messages view shows the reaction too (appended after queued_by). */
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
	   m.queued_by,
	   m.reaction,
	   m.reacted_at
  FROM whatsapp.message m
  LEFT JOIN whatsapp.account a ON a.id OPERATOR(pg_catalog.=) m.account_id;

/* ========================================================================
 * Issue 12, item 2: invoice_sent means sent to the customer.
 *
 * account_move.is_move_sent does not say it: Odoo 16's Print sets it,
 * and from 17 on it is set whenever the official PDF is generated (Print
 * included), before any mail leaves.  What only sending writes, in 16 to
 * 19, is the message posted on the invoice (src/odoo_sent.c): a
 * mail_message on model 'account.move' of type 'comment' (or
 * 'email_outgoing'), of a subtype that is not internal, with the customer
 * among its recipients (mail_message_res_partner_rel) and the invoice
 * attached (message_attachment_rel).  So invoice_sent has one trigger,
 * AFTER INSERT on mail_message, deferred to commit and naming no column;
 * the other events keep theirs on sale_order and account_move.  The
 * invoice_sent triggers of 0.2 on account_move go.
 * ======================================================================== */

/* The Odoo table an event's triggers are on. */
CREATE FUNCTION whatsapp._odoo_trigger_table(event text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF event = 'invoice_sent' THEN
		RETURN 'mail_message';
	END IF;
	RETURN whatsapp._odoo_table(event);
END
$$;

/* The operations an event's triggers fire on. */
CREATE FUNCTION whatsapp._odoo_trigger_ops(event text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN $1 = 'invoice_sent' THEN ARRAY['insert'] ELSE ARRAY['insert', 'update'] END
$$;
REVOKE ALL ON FUNCTION whatsapp._odoo_trigger_table(text), whatsapp._odoo_trigger_ops(text)
	FROM PUBLIC;

/*
 * Put the triggers of an event on its table; with recreate, drop and make
 * again the ones that are there, and drop the event's triggers left on
 * another table by an older version (invoice_sent's on account_move).
 */
CREATE OR REPLACE FUNCTION whatsapp._odoo_install_triggers(event text, recreate boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ev text := _odoo_install_triggers.event;
	tbl text := whatsapp._odoo_trigger_table(ev);
	rel regclass := to_regclass(format('public.%I', tbl));
	old_tbl text := whatsapp._odoo_table(ev);
	op text;
	trg text;
	there boolean;
BEGIN
	IF recreate AND old_tbl <> tbl AND to_regclass(format('public.%I', old_tbl)) IS NOT NULL THEN
		FOREACH op IN ARRAY ARRAY['insert', 'update']
		LOOP
			trg := format('whatsapp_%s_%s', ev, op);
			IF EXISTS (SELECT 1 FROM pg_trigger t
						WHERE t.tgrelid = to_regclass(format('public.%I', old_tbl)) AND t.tgname = trg) THEN
				EXECUTE format('DROP TRIGGER %I ON public.%I', trg, old_tbl);
			END IF;
		END LOOP;
	END IF;
	IF rel IS NULL THEN
		RETURN;
	END IF;
	FOREACH op IN ARRAY whatsapp._odoo_trigger_ops(ev)
	LOOP
		trg := format('whatsapp_%s_%s', ev, op);
		there := EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = trg);
		IF there AND recreate THEN
			EXECUTE format('DROP TRIGGER %I ON public.%I', trg, tbl);
			there := false;
		END IF;
		IF NOT there THEN
			EXECUTE format('CREATE CONSTRAINT TRIGGER %I AFTER %s ON public.%I'
						   ' DEFERRABLE INITIALLY DEFERRED FOR EACH ROW'
						   ' WHEN (pg_catalog.current_setting(''whatsapp.odoo_events'', true) IS DISTINCT FROM ''off'')'
						   ' EXECUTE FUNCTION whatsapp._odoo_trigger(%L)',
						   trg, upper(op), tbl, ev);
		END IF;
	END LOOP;
END
$$;
REVOKE ALL ON FUNCTION whatsapp._odoo_install_triggers(text, boolean) FROM PUBLIC;

/* The tables an event reads must be ordinary tables with its columns. */
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
	tables text[] := ARRAY[tbl, 'res_partner', 'res_company', 'res_country', 'res_currency'];
	cols text[][];
BEGIN
	IF event = 'invoice_sent' THEN
		tables := tables || ARRAY['mail_message', 'mail_message_subtype',
								  'mail_message_res_partner_rel', 'message_attachment_rel'];
	END IF;
	FOREACH t IN ARRAY tables
	LOOP
		IF to_regclass(format('public.%I', t)) IS NULL THEN
			RAISE EXCEPTION 'Odoo table "public.%" does not exist', t
				USING ERRCODE = 'undefined_table',
					  DETAIL = format('Event %s needs Odoo''s tables %s in schema public.', event,
									  array_to_string(tables, ', ')),
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
	cols := CASE event
			WHEN 'sale_order_confirmed' THEN ARRAY[['sale_order', 'id'], ['sale_order', 'state']]
			WHEN 'invoice_sent' THEN ARRAY[['account_move', 'id'], ['account_move', 'state'],
										   ['account_move', 'move_type'],
										   ['mail_message', 'id'], ['mail_message', 'model'],
										   ['mail_message', 'res_id'], ['mail_message', 'message_type'],
										   ['mail_message', 'subtype_id']]
			ELSE ARRAY[['account_move', 'id'], ['account_move', 'state'], ['account_move', 'move_type']] END;
	FOR i IN 1 .. array_length(cols, 1)
	LOOP
		t := cols[i][1];
		c := cols[i][2];
		IF NOT EXISTS (SELECT 1 FROM pg_attribute a
						WHERE a.attrelid = to_regclass(format('public.%I', t))
						  AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped) THEN
			RAISE EXCEPTION 'column "%" of Odoo table "public.%" does not exist', c, t
				USING ERRCODE = 'undefined_column',
					  HINT = 'The whatsapp extension supports the tables of Odoo 16 to 19.';
		END IF;
	END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION whatsapp.wa_odoo_disable(event text, company_id integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ev text := wa_odoo_disable.event;
	tbl text;
	op text;
	trg text;
BEGIN
	PERFORM whatsapp._odoo_table(ev);	/* 22023 for what is not an event */
	DELETE FROM whatsapp.odoo_rule r
	 WHERE r.event = ev AND r.company_id IS NOT DISTINCT FROM wa_odoo_disable.company_id;
	IF NOT FOUND THEN
		RAISE NOTICE 'event % was not enabled%', ev,
			CASE WHEN wa_odoo_disable.company_id IS NULL THEN ' for all companies'
				 ELSE format(' for company %s', wa_odoo_disable.company_id) END;
	END IF;
	/* Its triggers go when no company has a rule for the event any more. */
	IF NOT EXISTS (SELECT 1 FROM whatsapp.odoo_rule r WHERE r.event = ev) THEN
		FOREACH tbl IN ARRAY ARRAY[whatsapp._odoo_trigger_table(ev), whatsapp._odoo_table(ev)]
		LOOP
			CONTINUE WHEN to_regclass(format('public.%I', tbl)) IS NULL;
			FOREACH op IN ARRAY ARRAY['insert', 'update']
			LOOP
				trg := format('whatsapp_%s_%s', ev, op);
				IF EXISTS (SELECT 1 FROM pg_trigger t
							WHERE t.tgrelid = format('public.%I', tbl)::regclass
							  AND t.tgname = trg) THEN
					EXECUTE format('DROP TRIGGER %I ON public.%I', trg, tbl);
				END IF;
			END LOOP;
		END LOOP;
	END IF;
END
$$;

/* The rules, and whether their triggers are in place (whatsapp_admin). */
CREATE OR REPLACE VIEW whatsapp.odoo_rules AS
SELECT r.event,
	   r.company_id,
	   r.template,
	   r.language,
	   r.account,
	   r.params,
	   (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger t
		 WHERE t.tgrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(CASE r.event
				 WHEN 'sale_order_confirmed' THEN 'public.sale_order'
				 WHEN 'invoice_sent' THEN 'public.mail_message'
				 ELSE 'public.account_move' END)
		   AND t.tgname IN ('whatsapp_' OPERATOR(pg_catalog.||) r.event OPERATOR(pg_catalog.||) '_insert',
							'whatsapp_' OPERATOR(pg_catalog.||) r.event OPERATOR(pg_catalog.||) '_update'))
		 OPERATOR(pg_catalog.=) CASE r.event WHEN 'invoice_sent' THEN 1 ELSE 2 END AS triggers_installed,
	   r.created_at,
	   r.updated_at,
	   r.updated_by
  FROM whatsapp.odoo_rule r;

/* invoice_sent of 0.2: its triggers move from account_move to mail_message. */
DO $$
BEGIN
	IF EXISTS (SELECT 1 FROM whatsapp.odoo_rule WHERE event = 'invoice_sent') THEN
		PERFORM whatsapp._odoo_install_triggers('invoice_sent', true);
		IF to_regclass('public.mail_message') IS NULL THEN
			RAISE WARNING 'event invoice_sent has no trigger now: public.mail_message does not exist'
				USING HINT = 'Since 0.3 invoice_sent fires on the message Odoo posts when it mails the invoice; run whatsapp.wa_odoo_enable(''invoice_sent'', ...) again in the Odoo database.';
		END IF;
	END IF;
END
$$;

/* ------------------------------------------------------------------------
 * Issue 12, item 1: the official PDF as an invoice's document header
 * (src/odoo_pdf.c, docs/odoo-documents.md).
 *
 * From Odoo 17 on, the portal's PDF of an invoice is a pro-forma until
 * the official PDF exists, and a ZIP when an EDI XML exists beside it.  An
 * invoice's "portal_pdf" header is therefore the official PDF itself
 * (ir_attachment, by /web/content), or no header.  "pdf_wait" in params
 * lets the message wait for that PDF: it is queued with next_attempt_at
 * at the deadline, and a row here says what it waits for.  The worker
 * adds the header when the PDF appears, or lets the message go without
 * it at the deadline, and deletes the row in the same transaction.
 * ------------------------------------------------------------------------ */
CREATE TABLE whatsapp.odoo_pdf_wait (
	message_id		bigint PRIMARY KEY,		-- whatsapp.message (no foreign key:
											-- TRUNCATE and purges stay as they are)
	res_id			bigint NOT NULL,		-- the account_move
	until			timestamptz NOT NULL,	-- then without the header
	base_url		text NOT NULL,			-- of the link, as at commit
	document		text,					-- account_move.name, for the file name
	upload			boolean NOT NULL DEFAULT false,	-- by media id ("pdf_upload")
	created_at		timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('whatsapp.odoo_pdf_wait', '');
REVOKE ALL ON whatsapp.odoo_pdf_wait FROM PUBLIC;

CREATE OR REPLACE FUNCTION whatsapp.wa_odoo_enable(
	event text, template text, language text DEFAULT NULL,
	account text DEFAULT NULL, params jsonb DEFAULT NULL,
	company_id integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	link_warning text;
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
	wait interval;
	has_wait boolean := false;
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
								  HINT = '"header": "portal_pdf" adds the document''s PDF as a document header: an invoice''s official PDF, an order''s report.';
					END IF;
				ELSIF k = 'pdf_wait' THEN
					/* how long an invoice's message waits for its official PDF */
					IF jsonb_typeof(v) <> 'string' THEN
						wait := NULL;
					ELSE
						BEGIN
							wait := (v #>> '{}')::interval;
						EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
								   OR interval_field_overflow THEN
							wait := NULL;
						END;
					END IF;
					IF wait IS NULL OR wait < interval '0' OR wait > interval '7 days' THEN
						RAISE EXCEPTION '"pdf_wait" of params must be an interval from "0" to "7 days", such as "30 minutes"'
							USING ERRCODE = 'invalid_parameter_value',
								  HINT = 'An invoice''s message waits up to that long for the invoice''s official PDF, then goes without the header; "0" or no "pdf_wait" sends it without the header at once.';
					END IF;
					has_wait := true;
				ELSIF k = 'pdf_upload' THEN
					/* the worker uploads the invoice's PDF to Meta, and sends its media id */
					IF jsonb_typeof(v) <> 'boolean' THEN
						RAISE EXCEPTION '"pdf_upload" of params must be true or false'
							USING ERRCODE = 'invalid_parameter_value',
								  HINT = 'true: the worker uploads an invoice''s official PDF to Meta and sends its media id, for an Odoo that Meta cannot reach.';
					END IF;
					has_wait := true;
				ELSIF k = 'base_url' THEN
					IF jsonb_typeof(v) <> 'string'
					   OR (v #>> '{}') !~ '^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^?#[:space:]]*)?$' THEN
						RAISE EXCEPTION '"base_url" of params must be an https URL such as "https://erp.example.com"'
							USING ERRCODE = 'invalid_parameter_value',
								  HINT = 'It is the public address of Odoo for this rule''s links; without it the links use web.base.url.';
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
			IF has_wait AND NOT (wa_odoo_enable.params ? 'header') THEN
				RAISE EXCEPTION '"pdf_wait" and "pdf_upload" of params need "header": "portal_pdf"'
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
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

	/* Links: will customers and Meta reach them? */
	IF wa_odoo_enable.params::text ~ '"(portal_url|portal_pdf)"' THEN
		link_warning := whatsapp._odoo_link_warning(wa_odoo_enable.params ->> 'base_url');
		IF link_warning IS NOT NULL THEN
			RAISE WARNING 'the links of event % may not work: %', ev, link_warning
				USING HINT = 'Set web.base.url to Odoo''s public https address and web.base.url.freeze to True in Odoo''s system parameters, or give the rule "base_url" in params.';
		END IF;
	END IF;

	/* The triggers, when they are not there yet (no column in them). */
	PERFORM whatsapp._odoo_install_triggers(ev, false);
END
$$;

/* ========================================================================
 * Issue 13, items 2 to 4: access and erasure on request, and the audit
 * (src/subject.c, src/audit.c).
 *
 * whatsapp.audit gets one row per admin action: wa_account_set, COPY
 * whatsapp.account_input, wa_account_drop, wa_rotate_key and wa_rebind
 * write theirs in C; wa_opt_in, wa_opt_out, wa_subject_export and
 * wa_subject_erase below; wa_odoo_enable, wa_odoo_disable, wa_odoo_pause
 * and wa_odoo_resume through triggers on the tables they change, which
 * write a row only when one of these functions is on the call stack (a
 * restore of those tables writes none).  A row names the function and its
 * target (an account name, a key id, an Odoo rule, the last four digits of
 * a number), never a secret or a message body.
 * ======================================================================== */
CREATE SEQUENCE whatsapp.audit_id_seq AS bigint;

CREATE TABLE whatsapp.audit (
	id				bigint NOT NULL DEFAULT pg_catalog.nextval('whatsapp.audit_id_seq'::pg_catalog.regclass),
	at				timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	session_role	text NOT NULL DEFAULT session_user,	/* session_user of the call */
	function		text NOT NULL,	/* the SQL function, or account_input */
	target			text,			/* what it acted on; never a secret */
	CONSTRAINT audit_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE whatsapp.audit_id_seq OWNED BY whatsapp.audit.id;
CREATE INDEX audit_at_idx ON whatsapp.audit USING brin (at);
SELECT pg_catalog.pg_extension_config_dump('whatsapp.audit', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.audit_id_seq', '');

/* Append-only, for its owner too (a superuser can still drop the trigger). */
CREATE FUNCTION whatsapp._audit_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'whatsapp.audit is append-only: % is refused', TG_OP
		USING ERRCODE = 'insufficient_privilege',
			  HINT = 'Rows are only ever added, by the extension''s admin functions.';
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON whatsapp.audit
	FOR EACH ROW EXECUTE FUNCTION whatsapp._audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON whatsapp.audit
	FOR EACH STATEMENT EXECUTE FUNCTION whatsapp._audit_append_only();

/* One row, from the SQL functions (which run as the extension's owner). */
CREATE FUNCTION whatsapp._audit(function text, target text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO whatsapp.audit (function, target) VALUES ($1, $2)
$$;

/* How the audit names a person: the last four characters, never more. */
CREATE FUNCTION whatsapp._audit_person(phone text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN $1 IS NULL THEN NULL
				WHEN $1 ~ '[A-Za-z]' THEN 'user id ending ' || right(btrim($1), 4)
				ELSE 'number ending ' || right(regexp_replace($1, '[^0-9]', '', 'g'), 4) END
$$;

/*
 * The Odoo functions' rows: the rule or pause row they changed.  Only when
 * the function is on the call stack (GET DIAGNOSTICS PG_CONTEXT), so that
 * a pg_restore of these tables, which runs CREATE EXTENSION's triggers,
 * audits nothing.
 */
CREATE FUNCTION whatsapp._audit_odoo_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stack text;
	fn text;
	r record;
BEGIN
	GET DIAGNOSTICS stack = PG_CONTEXT;
	fn := substring(stack FROM 'function whatsapp\.(wa_odoo_[a-z]+)\(');
	IF fn IS NULL THEN
		RETURN NULL;
	END IF;
	IF TG_TABLE_NAME = 'odoo_rule' THEN
		r := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
		PERFORM whatsapp._audit(fn, format('event %s, %s, rule %s, template %s',
			r.event, CASE WHEN r.company_id IS NULL THEN 'every company'
						  ELSE 'company ' || r.company_id END, r.id, r.template));
	ELSE
		PERFORM whatsapp._audit(fn, 'every Odoo event of database ' || current_database());
	END IF;
	RETURN NULL;
END
$$;
CREATE TRIGGER odoo_rule_audit AFTER INSERT OR UPDATE OR DELETE ON whatsapp.odoo_rule
	FOR EACH ROW EXECUTE FUNCTION whatsapp._audit_odoo_trigger();
CREATE TRIGGER odoo_pause_audit AFTER INSERT OR UPDATE OR DELETE ON whatsapp.odoo_pause
	FOR EACH ROW EXECUTE FUNCTION whatsapp._audit_odoo_trigger();

/* ------------------------------------------------------------------------
 * Keyed hashes of erased people (src/subject.c).  Not granted to anyone.
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp._subject_hash(identifier text)
RETURNS text
AS 'MODULE_PATHNAME', 'wa_subject_hash_sql'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION whatsapp._subject_hashes(identifiers text[])
RETURNS text[]
AS 'MODULE_PATHNAME', 'wa_subject_hashes_sql'
LANGUAGE C VOLATILE STRICT;

/*
 * Every identifier of the person phone names (a number in any form, or a
 * business-scoped user id): its forms, and what inbound messages linked to
 * them.  Raises 22004 for NULL and 22023 for what is neither.
 */
CREATE FUNCTION whatsapp._subject_ids(phone text)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN whatsapp._identities(whatsapp._check_consent_args(phone, 'all'));
END
$$;

/*
 * The strings under which the person may appear inside text (webhook
 * payloads, log lines, statuses): each number's digits, with Mexico's
 * mobile "521" form too, and each user id.
 */
CREATE FUNCTION whatsapp._subject_strings(ids text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT array_agg(DISTINCT s) FROM (
		SELECT CASE WHEN i LIKE '+%' THEN substr(i, 2) ELSE i END AS s FROM unnest($1) i
		UNION ALL
		SELECT '521' || substr(i, 4) FROM unnest($1) i
		 WHERE i LIKE '+52%' AND i NOT LIKE '+521%') x
$$;

/* Is value (a recipient, or a wa_id without "+") one of ids? */
CREATE FUNCTION whatsapp._subject_match(value text, ids text[])
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT $1 IS NOT NULL AND $1 NOT LIKE 'erased:%'
	   AND ($1 = ANY ($2) OR '+' || $1 = ANY ($2)
			OR coalesce(whatsapp._identity_forms($1) && $2, false)
			OR ($1 ~ '^[0-9]{6,20}$'
				AND coalesce(whatsapp._identity_forms('+' || $1) && $2, false)))
$$;

REVOKE ALL ON FUNCTION whatsapp._audit(text, text), whatsapp._audit_person(text),
	whatsapp._subject_hash(text), whatsapp._subject_hashes(text[]),
	whatsapp._subject_ids(text), whatsapp._subject_strings(text[]),
	whatsapp._subject_match(text, text[]) FROM PUBLIC;

/* ------------------------------------------------------------------------
 * wa_subject_export(phone) RETURNS jsonb (whatsapp_admin)
 *
 * Everything the extension holds about one person, under every identifier
 * known for them: the rows of each table, whole, as jsonb.  Webhook
 * payloads and held statuses are the stored payloads in which one of the
 * identifiers appears.  erased_records counts what an earlier
 * wa_subject_erase kept of them under keyed hashes.
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp.wa_subject_export(phone text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids text[] := whatsapp._subject_ids(wa_subject_export.phone);
	strs text[] := whatsapp._subject_strings(ids);
	pats text[];
	hashes text[] := whatsapp._subject_hashes(ids);
	msg_ids bigint[];
	result jsonb;
BEGIN
	SELECT array_agg('%' || s || '%') INTO pats FROM unnest(strs) s;
	SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') INTO msg_ids
	  FROM whatsapp.message m
	 WHERE whatsapp._subject_match(m.recipient, ids) OR whatsapp._subject_match(m.wa_id, ids);

	result := jsonb_build_object(
		'identifiers', to_jsonb(ids),
		'exported_at', now(),
		'messages', (SELECT coalesce(jsonb_agg((to_jsonb(m) - 'stats_events')
											   || jsonb_build_object('account', a.name)
											   ORDER BY m.id), '[]')
					   FROM whatsapp.message m LEFT JOIN whatsapp.account a ON a.id = m.account_id
					  WHERE m.id = ANY (msg_ids)),
		'inbound', (SELECT coalesce(jsonb_agg(to_jsonb(i) || jsonb_build_object('account', a.name)
											  ORDER BY i.id), '[]')
					  FROM whatsapp.inbound_message i LEFT JOIN whatsapp.account a ON a.id = i.account_id
					 WHERE i.phone = ANY (ids) OR i.user_id = ANY (ids)
						OR i.parent_user_id = ANY (ids) OR whatsapp._subject_match(i.wa_id, ids)),
		'log', (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.at, l.message_id), '[]')
				  FROM whatsapp.log l
				 WHERE l.message_id = ANY (msg_ids) OR l.message LIKE ANY (pats)),
		'opt_outs', (SELECT coalesce(jsonb_agg(to_jsonb(o) ORDER BY o.identifier, o.scope), '[]')
					   FROM whatsapp.opt_out o WHERE o.identifier = ANY (ids)),
		'consents', (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.id), '[]')
					   FROM whatsapp.consent c
					  WHERE c.identifier = ANY (ids) OR c.reason LIKE ANY (pats)),
		'consent_latest', (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.identifier, l.scope), '[]')
							 FROM whatsapp.consent_latest l WHERE l.identifier = ANY (ids)),
		'webhooks', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', w.id,
									 'received_at', w.received_at, 'payload', w.payload)
									 ORDER BY w.id), '[]')
					   FROM whatsapp.webhook w WHERE w.payload LIKE ANY (pats)),
		'statuses_held', (SELECT coalesce(jsonb_agg(to_jsonb(h) ORDER BY h.id), '[]')
							FROM whatsapp.status_held h WHERE h.status::text LIKE ANY (pats)),
		'erased_records', (SELECT count(*) FROM whatsapp.opt_out o WHERE o.identifier = ANY (hashes))
						  + (SELECT count(*) FROM whatsapp.message m WHERE m.recipient = ANY (hashes)));
	PERFORM whatsapp._audit('wa_subject_export', whatsapp._audit_person(wa_subject_export.phone));
	RETURN result;
END
$$;

/* ------------------------------------------------------------------------
 * wa_subject_erase(phone) RETURNS integer (whatsapp_admin)
 *
 * Removes the person's content and identifiers from every table of the
 * extension, and returns the number of rows changed or deleted:
 * - messages: queued ones are cancelled first; every one keeps its
 *   skeleton (id, account, kind, state, times, codes, pricing, wamid,
 *   dedupe_key, so that the same dedupe_key still dedupes), with the
 *   recipient replaced by its keyed hash, the payload reduced to its type
 *   (and a template's name and language), and wa_id, context, reaction
 *   and any error text that names the person removed;
 * - inbound messages, statuses held and the newest-consent clock: deleted;
 * - opt-outs: kept, under the keyed hash of each identifier, so that the
 *   erased number stays blocked on every send path (recipient.c);
 * - the consent log: identifiers replaced by their hashes, reasons removed;
 * - log lines and stored webhook payloads that name the person: the line
 *   is removed, the payload emptied (for everyone else it names too).
 * A message being sent to the person (state sending) makes it refuse with
 * 55006: the worker records the answer within whatsapp.http_timeout, and
 * then the erasure can run.  Odoo's tables are never touched.
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp.wa_subject_erase(phone text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids text[] := whatsapp._subject_ids(wa_subject_erase.phone);
	strs text[] := whatsapp._subject_strings(ids);
	pats text[];
	msg_ids bigint[];
	in_flight bigint;
	total integer := 0;
	n integer;
BEGIN
	SELECT array_agg('%' || s || '%') INTO pats FROM unnest(strs) s;
	/* Lock them: the worker's claim of one waits, or has happened. */
	SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') INTO msg_ids
	  FROM (SELECT m.id FROM whatsapp.message m
			 WHERE whatsapp._subject_match(m.recipient, ids) OR whatsapp._subject_match(m.wa_id, ids)
			 ORDER BY m.id FOR UPDATE) m;
	SELECT min(m.id) INTO in_flight FROM whatsapp.message m
	 WHERE m.id = ANY (msg_ids) AND m.state = 'sending';
	IF in_flight IS NOT NULL THEN
		RAISE EXCEPTION 'message % to this person is being sent right now', in_flight
			USING ERRCODE = 'object_in_use',
				  DETAIL = 'Nothing was erased. The worker records Meta''s answer within whatsapp.http_timeout; until then the message is in flight.',
				  HINT = 'Run whatsapp.wa_subject_erase() again in a few seconds.';
	END IF;

	/* Queued messages are cancelled: nothing more goes to this person. */
	WITH c AS (
		UPDATE whatsapp.message m SET state = 'cancelled'
		 WHERE m.id = ANY (msg_ids) AND m.state = 'queued'
		RETURNING m.id)
	INSERT INTO whatsapp.log (message_id, event, message)
	SELECT c.id, 'cancel', 'cancelled by wa_subject_erase (' || session_user || ')' FROM c;

	UPDATE whatsapp.message m
	   SET recipient = CASE WHEN m.recipient IS NULL THEN NULL
							ELSE whatsapp._subject_hash(m.recipient) END,
		   wa_id = NULL,
		   payload = jsonb_strip_nulls(jsonb_build_object(
				'type', m.payload -> 'type',
				'template', CASE WHEN m.payload ? 'template' THEN jsonb_strip_nulls(jsonb_build_object(
								'name', m.payload -> 'template' -> 'name',
								'language', m.payload -> 'template' -> 'language')) END,
				'erased', true)),
		   context = NULL,
		   reaction = NULL,
		   error_title = CASE WHEN m.error_title LIKE ANY (pats) THEN NULL ELSE m.error_title END,
		   error_details = CASE WHEN m.error_details LIKE ANY (pats) THEN NULL ELSE m.error_details END
	 WHERE m.id = ANY (msg_ids);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;

	UPDATE whatsapp.log l SET message = NULL WHERE l.message LIKE ANY (pats);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;

	DELETE FROM whatsapp.inbound_message i
	 WHERE i.phone = ANY (ids) OR i.user_id = ANY (ids)
		OR i.parent_user_id = ANY (ids) OR whatsapp._subject_match(i.wa_id, ids);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;

	/* The opt-outs stay, as hashes. */
	INSERT INTO whatsapp.opt_out (identifier, scope, since, source)
	SELECT whatsapp._subject_hash(o.identifier), o.scope, o.since, 'wa_subject_erase'
	  FROM whatsapp.opt_out o WHERE o.identifier = ANY (ids)
	ON CONFLICT (identifier, scope) DO NOTHING;
	DELETE FROM whatsapp.opt_out o WHERE o.identifier = ANY (ids);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;

	UPDATE whatsapp.consent c
	   SET identifier = CASE WHEN c.identifier = ANY (ids)
							 THEN whatsapp._subject_hash(c.identifier) ELSE c.identifier END,
		   reason = NULL
	 WHERE c.identifier = ANY (ids) OR c.reason LIKE ANY (pats);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;

	DELETE FROM whatsapp.consent_latest l WHERE l.identifier = ANY (ids);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;

	UPDATE whatsapp.webhook w SET payload = '' WHERE w.payload LIKE ANY (pats);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;

	DELETE FROM whatsapp.status_held h WHERE h.status::text LIKE ANY (pats);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;

	PERFORM whatsapp._audit('wa_subject_erase',
		whatsapp._audit_person(wa_subject_erase.phone) || ', ' || total || ' rows');
	RETURN total;
END
$$;

/* wa_opt_out and wa_opt_in are audited; wa_opt_in also lifts the hashed
 * opt-outs an erasure kept of the person. */
CREATE OR REPLACE FUNCTION whatsapp.wa_opt_out(phone text, scope text DEFAULT 'all', reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	forms text[] := whatsapp._check_consent_args(wa_opt_out.phone, wa_opt_out.scope);
	changed boolean;
BEGIN
	changed := whatsapp._opt_out_apply(NULL, forms, wa_opt_out.scope, 'wa_opt_out',
									   wa_opt_out.reason, NULL, true) > 0;
	PERFORM whatsapp._audit('wa_opt_out', whatsapp._audit_person(wa_opt_out.phone)
							|| ', scope ' || wa_opt_out.scope);
	RETURN changed;
END
$$;

CREATE OR REPLACE FUNCTION whatsapp.wa_opt_in(phone text, scope text DEFAULT 'all')
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	forms text[] := whatsapp._check_consent_args(wa_opt_in.phone, wa_opt_in.scope);
	changed boolean;
	n integer;
BEGIN
	changed := whatsapp._opt_in_apply(NULL, forms, wa_opt_in.scope, 'wa_opt_in', NULL, true) > 0;
	DELETE FROM whatsapp.opt_out o
	 WHERE o.identifier = ANY (whatsapp._subject_hashes(whatsapp._identities(forms)))
	   AND (wa_opt_in.scope = 'all' OR o.scope = wa_opt_in.scope);
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM whatsapp._audit('wa_opt_in', whatsapp._audit_person(wa_opt_in.phone)
							|| ', scope ' || wa_opt_in.scope);
	RETURN changed OR n > 0;
END
$$;

REVOKE ALL ON whatsapp.audit FROM PUBLIC;
REVOKE ALL ON SEQUENCE whatsapp.audit_id_seq FROM PUBLIC;
GRANT SELECT ON whatsapp.audit TO whatsapp_admin;
REVOKE ALL ON FUNCTION whatsapp._audit_append_only(), whatsapp._audit_odoo_trigger(),
	whatsapp.wa_subject_export(text), whatsapp.wa_subject_erase(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whatsapp.wa_subject_export(text), whatsapp.wa_subject_erase(text)
	TO whatsapp_admin;





/* ========================================================================
 * Content retention (src/retention.c, whatsapp.content_retention)
 *
 * After content_retention (default 90 days) the worker sets what a message
 * said, and who it was to or from, to NULL: message.payload, recipient,
 * wa_id, error_details and reaction; inbound_message's numbers, ids,
 * names, text, raw message and edit history; webhook.payload.  Held
 * statuses that old are deleted.  What happened stays: ids, states, times,
 * codes, wamids, dedupe keys, pricing.  So the content columns become
 * nullable, and each table gets a partial index on its time column that
 * holds only the rows not purged yet: a turn of the purge finds its next
 * batch there however long the history is, and a purged row leaves it.
 * Messages queued or in flight are never purged, and are not in it.
 * ======================================================================== */
ALTER TABLE whatsapp.message ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE whatsapp.inbound_message ALTER COLUMN raw DROP NOT NULL;
ALTER TABLE whatsapp.webhook ALTER COLUMN payload DROP NOT NULL;

/* A message to be sent has its content: a purged one is never queued again. */
ALTER TABLE whatsapp.message ADD CONSTRAINT message_payload_check
	CHECK (payload IS NOT NULL OR state NOT IN ('queued', 'sending')) NOT VALID;
ALTER TABLE whatsapp.message VALIDATE CONSTRAINT message_payload_check;

CREATE INDEX message_retention_idx ON whatsapp.message (created_at)
	WHERE payload IS NOT NULL AND state NOT IN ('queued', 'sending');
CREATE INDEX inbound_message_retention_idx ON whatsapp.inbound_message (received_at)
	WHERE raw IS NOT NULL;
CREATE INDEX webhook_retention_idx ON whatsapp.webhook (received_at)
	WHERE payload IS NOT NULL;

/*
 * An argument of wa_opt_out or wa_opt_in that is not a number is named in
 * the error by its last four digits only: errors reach the server log, and
 * a near-miss of a real number is that person's number all the same.
 */
CREATE OR REPLACE FUNCTION whatsapp._check_consent_args(phone text, scope text)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	forms text[];
	digits text;
BEGIN
	IF phone IS NULL THEN
		RAISE EXCEPTION 'phone must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass a phone number such as ''+52 55 1234 5678'', or a business-scoped user id such as ''MX.1502576394655843''.';
	END IF;
	IF scope IS NULL OR scope NOT IN ('all', 'marketing') THEN
		RAISE EXCEPTION 'scope must be ''all'' or ''marketing'', not %', coalesce(quote_literal(scope), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = '''all'' blocks every message, ''marketing'' only templates whose category in whatsapp.templates is MARKETING.';
	END IF;
	forms := whatsapp._identity_forms(phone);
	IF forms IS NULL THEN
		digits := regexp_replace(phone, '[^0-9]', '', 'g');
		RAISE EXCEPTION 'phone (%) is neither a phone number that can be made E.164 nor a business-scoped user id',
			CASE WHEN digits = '' THEN 'a value without digits'
				 ELSE 'ending in ' || right(digits, 4) END
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Write the number with its country code, such as ''+52 55 1234 5678'', or set whatsapp.default_country_code for national numbers.';
	END IF;
	RETURN forms;
END
$$;

/* ========================================================================
 * Statistics: whatsapp.stats (issue 10, item 5; src/stats.c says why so)
 *
 * Counters per account that only grow, like pg_stat_*.  Whatever changes a
 * message's state appends a row of increments to whatsapp.stats_delta in
 * the same statement and transaction: the worker one row per account and
 * record batch, wa_receive one row per status that moved a message.  No row
 * is updated per message.  The worker folds the increments into
 * whatsapp.stats_total at its safety poll; the view adds both, so it is
 * exact between folds, and as durable as the states it counts.
 * ========================================================================
 */

/* Increments not folded yet.  NULL stands for 0 (a smaller row). */
CREATE TABLE whatsapp.stats_delta (
	account_id integer NOT NULL,
	failure_type text,			/* of the failed ones in this row */
	sent bigint,
	delivered bigint,
	read bigint,
	failed bigint,
	blocked bigint,
	retried bigint,
	requests bigint,
	request_time double precision	/* milliseconds */
);
REVOKE ALL ON whatsapp.stats_delta FROM PUBLIC;

/* The folded counters, one row per account. */
CREATE TABLE whatsapp.stats_total (
	account_id integer PRIMARY KEY,
	sent bigint NOT NULL DEFAULT 0,
	delivered bigint NOT NULL DEFAULT 0,
	read bigint NOT NULL DEFAULT 0,
	failed bigint NOT NULL DEFAULT 0,
	failed_phone_invalid bigint NOT NULL DEFAULT 0,
	failed_opted_out bigint NOT NULL DEFAULT 0,
	failed_account bigint NOT NULL DEFAULT 0,
	failed_template bigint NOT NULL DEFAULT 0,
	failed_whatsapp_recoverable bigint NOT NULL DEFAULT 0,
	failed_whatsapp_unrecoverable bigint NOT NULL DEFAULT 0,
	failed_network bigint NOT NULL DEFAULT 0,
	blocked bigint NOT NULL DEFAULT 0,
	retried bigint NOT NULL DEFAULT 0,
	requests bigint NOT NULL DEFAULT 0,
	request_time double precision NOT NULL DEFAULT 0,
	stats_reset timestamptz
);
REVOKE ALL ON whatsapp.stats_total FROM PUBLIC;

/*
 * The transitions that a webhook status statement made, for its own
 * RETURNING (1 delivered, 2 read, 4 failed): RETURNING sees only the new
 * row, and this is how the old one speaks.  Meaningless elsewhere.
 */
ALTER TABLE whatsapp.message ADD COLUMN stats_events smallint;

/* Increments grouped as the view and the fold need them. */
CREATE VIEW whatsapp._stats_pending AS
SELECT d.account_id,
	   pg_catalog.sum(d.sent)::bigint AS sent,
	   pg_catalog.sum(d.delivered)::bigint AS delivered,
	   pg_catalog.sum(d.read)::bigint AS read,
	   pg_catalog.sum(d.failed)::bigint AS failed,
	   pg_catalog.sum(d.failed) FILTER (WHERE d.failure_type = 'phone_invalid')::bigint AS failed_phone_invalid,
	   pg_catalog.sum(d.failed) FILTER (WHERE d.failure_type = 'opted_out')::bigint AS failed_opted_out,
	   pg_catalog.sum(d.failed) FILTER (WHERE d.failure_type = 'account')::bigint AS failed_account,
	   pg_catalog.sum(d.failed) FILTER (WHERE d.failure_type = 'template')::bigint AS failed_template,
	   pg_catalog.sum(d.failed) FILTER (WHERE d.failure_type = 'whatsapp_recoverable')::bigint AS failed_whatsapp_recoverable,
	   pg_catalog.sum(d.failed) FILTER (WHERE d.failure_type = 'whatsapp_unrecoverable')::bigint AS failed_whatsapp_unrecoverable,
	   pg_catalog.sum(d.failed) FILTER (WHERE d.failure_type = 'network')::bigint AS failed_network,
	   pg_catalog.sum(d.blocked)::bigint AS blocked,
	   pg_catalog.sum(d.retried)::bigint AS retried,
	   pg_catalog.sum(d.requests)::bigint AS requests,
	   pg_catalog.sum(d.request_time) AS request_time
  FROM whatsapp.stats_delta d
 GROUP BY d.account_id;
REVOKE ALL ON whatsapp._stats_pending FROM PUBLIC;

CREATE VIEW whatsapp.stats AS
SELECT a.name AS account,
	   COALESCE(t.sent, 0) + COALESCE(p.sent, 0) AS sent,
	   COALESCE(t.delivered, 0) + COALESCE(p.delivered, 0) AS delivered,
	   COALESCE(t.read, 0) + COALESCE(p.read, 0) AS read,
	   COALESCE(t.failed, 0) + COALESCE(p.failed, 0) AS failed,
	   COALESCE(t.failed_phone_invalid, 0) + COALESCE(p.failed_phone_invalid, 0) AS failed_phone_invalid,
	   COALESCE(t.failed_opted_out, 0) + COALESCE(p.failed_opted_out, 0) AS failed_opted_out,
	   COALESCE(t.failed_account, 0) + COALESCE(p.failed_account, 0) AS failed_account,
	   COALESCE(t.failed_template, 0) + COALESCE(p.failed_template, 0) AS failed_template,
	   COALESCE(t.failed_whatsapp_recoverable, 0) + COALESCE(p.failed_whatsapp_recoverable, 0) AS failed_whatsapp_recoverable,
	   COALESCE(t.failed_whatsapp_unrecoverable, 0) + COALESCE(p.failed_whatsapp_unrecoverable, 0) AS failed_whatsapp_unrecoverable,
	   COALESCE(t.failed_network, 0) + COALESCE(p.failed_network, 0) AS failed_network,
	   COALESCE(t.blocked, 0) + COALESCE(p.blocked, 0) AS blocked,
	   COALESCE(t.retried, 0) + COALESCE(p.retried, 0) AS retried,
	   COALESCE(t.requests, 0) + COALESCE(p.requests, 0) AS requests,
	   COALESCE(t.request_time, 0) + COALESCE(p.request_time, 0) AS request_time,
	   t.stats_reset
  FROM whatsapp.account a
  LEFT JOIN whatsapp.stats_total t ON t.account_id = a.id
  LEFT JOIN whatsapp._stats_pending p ON p.account_id = a.id
 WHERE a.dropped_at IS NULL;
REVOKE ALL ON whatsapp.stats FROM PUBLIC;
GRANT SELECT ON whatsapp.stats TO whatsapp_reader, whatsapp_admin;

/*
 * The worker's fold: the increments it can see move into stats_total, in
 * one transaction.  Increments committed meanwhile wait for the next fold.
 * The lock orders folds and resets.  The worker runs with enable_seqscan
 * off, which prices the scan of stats_delta (it has no index, and needs
 * none: the fold takes every row) as huge, and JIT would then compile the
 * statement at every fold, seconds of CPU for a millisecond of work: no JIT.
 */
CREATE FUNCTION whatsapp._stats_fold()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
	n bigint;
BEGIN
	LOCK TABLE whatsapp.stats_total IN SHARE ROW EXCLUSIVE MODE;
	WITH d AS (DELETE FROM whatsapp.stats_delta RETURNING *),
	p AS (
		SELECT d.account_id,
			   COALESCE(sum(d.sent), 0) AS sent,
			   COALESCE(sum(d.delivered), 0) AS delivered,
			   COALESCE(sum(d.read), 0) AS read,
			   COALESCE(sum(d.failed), 0) AS failed,
			   COALESCE(sum(d.failed) FILTER (WHERE d.failure_type = 'phone_invalid'), 0) AS f1,
			   COALESCE(sum(d.failed) FILTER (WHERE d.failure_type = 'opted_out'), 0) AS f2,
			   COALESCE(sum(d.failed) FILTER (WHERE d.failure_type = 'account'), 0) AS f3,
			   COALESCE(sum(d.failed) FILTER (WHERE d.failure_type = 'template'), 0) AS f4,
			   COALESCE(sum(d.failed) FILTER (WHERE d.failure_type = 'whatsapp_recoverable'), 0) AS f5,
			   COALESCE(sum(d.failed) FILTER (WHERE d.failure_type = 'whatsapp_unrecoverable'), 0) AS f6,
			   COALESCE(sum(d.failed) FILTER (WHERE d.failure_type = 'network'), 0) AS f7,
			   COALESCE(sum(d.blocked), 0) AS blocked,
			   COALESCE(sum(d.retried), 0) AS retried,
			   COALESCE(sum(d.requests), 0) AS requests,
			   COALESCE(sum(d.request_time), 0) AS request_time,
			   count(*) AS nrows
		  FROM d GROUP BY d.account_id),
	i AS (
		INSERT INTO whatsapp.stats_total AS t
			(account_id, sent, delivered, read, failed, failed_phone_invalid,
			 failed_opted_out, failed_account, failed_template,
			 failed_whatsapp_recoverable, failed_whatsapp_unrecoverable,
			 failed_network, blocked, retried, requests, request_time)
		SELECT p.account_id, p.sent, p.delivered, p.read, p.failed, p.f1, p.f2,
			   p.f3, p.f4, p.f5, p.f6, p.f7, p.blocked, p.retried, p.requests,
			   p.request_time
		  FROM p
		ON CONFLICT (account_id) DO UPDATE SET
			sent = t.sent + excluded.sent,
			delivered = t.delivered + excluded.delivered,
			read = t.read + excluded.read,
			failed = t.failed + excluded.failed,
			failed_phone_invalid = t.failed_phone_invalid + excluded.failed_phone_invalid,
			failed_opted_out = t.failed_opted_out + excluded.failed_opted_out,
			failed_account = t.failed_account + excluded.failed_account,
			failed_template = t.failed_template + excluded.failed_template,
			failed_whatsapp_recoverable = t.failed_whatsapp_recoverable + excluded.failed_whatsapp_recoverable,
			failed_whatsapp_unrecoverable = t.failed_whatsapp_unrecoverable + excluded.failed_whatsapp_unrecoverable,
			failed_network = t.failed_network + excluded.failed_network,
			blocked = t.blocked + excluded.blocked,
			retried = t.retried + excluded.retried,
			requests = t.requests + excluded.requests,
			request_time = t.request_time + excluded.request_time)
	SELECT COALESCE(sum(p.nrows), 0) INTO n FROM p;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION whatsapp._stats_fold() FROM PUBLIC;

/*
 * Set the counters of one account (NULL: of every account) to zero, as
 * pg_stat_reset() does, and record when in stats_reset.
 */
CREATE FUNCTION whatsapp.wa_stats_reset(account text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids integer[];
BEGIN
	SELECT array_agg(a.id) INTO ids FROM whatsapp.account a
	 WHERE a.dropped_at IS NULL AND (wa_stats_reset.account IS NULL OR a.name = wa_stats_reset.account);
	IF wa_stats_reset.account IS NOT NULL AND ids IS NULL THEN
		RAISE EXCEPTION 'account "%" does not exist', wa_stats_reset.account
			USING ERRCODE = 'undefined_object',
				  HINT = 'The view whatsapp.accounts lists the accounts; NULL resets every account.';
	END IF;
	LOCK TABLE whatsapp.stats_total IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM whatsapp.stats_delta d WHERE d.account_id = ANY (ids);
	INSERT INTO whatsapp.stats_total AS t (account_id, stats_reset)
	SELECT x, now() FROM unnest(ids) x
	ON CONFLICT (account_id) DO UPDATE SET
		sent = 0, delivered = 0, read = 0, failed = 0, failed_phone_invalid = 0,
		failed_opted_out = 0, failed_account = 0, failed_template = 0,
		failed_whatsapp_recoverable = 0, failed_whatsapp_unrecoverable = 0,
		failed_network = 0, blocked = 0, retried = 0, requests = 0,
		request_time = 0, stats_reset = excluded.stats_reset;
END
$$;
REVOKE ALL ON FUNCTION whatsapp.wa_stats_reset(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whatsapp.wa_stats_reset(text) TO whatsapp_admin;

/* ========================================================================
 * Rules on any Odoo model (issue 12, item 5; docs/odoo-rules.md).
 *
 * A rule names a table in public (the model), what fires it (a field,
 * or a many2one path such as stage_id.name, entering a value; or a
 * boolean SQL expression over the row that was not true on the row
 * before), the partner field and parameters from field paths.  Its
 * trigger, whatsapp_rule_<name>, is a deferred constraint trigger that
 * names no column.  Rows are read in C (src/odoo_rules.c); the
 * condition runs with the rights of the table's owner, never the
 * extension's.
 * ======================================================================== */

CREATE TABLE whatsapp.odoo_model_rule (
	name			text PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,40}$'),
	model			text NOT NULL,
	template		text NOT NULL,
	language		text,
	account			text NOT NULL,
	partner_field	text NOT NULL,
	params			jsonb,
	state_field		text,
	state_value		text,
	condition		text,
	company_id		integer,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	updated_by		text NOT NULL DEFAULT session_user,
	CHECK ((state_value IS NULL) <> (condition IS NULL)),
	CHECK (state_value IS NULL OR state_field IS NOT NULL)
);
SELECT pg_catalog.pg_extension_config_dump('whatsapp.odoo_model_rule', '');
REVOKE ALL ON whatsapp.odoo_model_rule FROM PUBLIC;

CREATE FUNCTION whatsapp._odoo_rule_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'wa_odoo_rule_trigger'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION whatsapp._odoo_rule_trigger() FROM PUBLIC;

CREATE FUNCTION whatsapp._odoo_rule_check(model text, partner_field text,
	state_field text, condition text, paths text[])
RETURNS void
AS 'MODULE_PATHNAME', 'wa_odoo_rule_check'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION whatsapp._odoo_rule_check(text, text, text, text, text[]) FROM PUBLIC;

/*
 * Make or replace rule name.  Exactly one of state_value (with
 * state_field) and condition.  params: field paths, an array
 * (positional) or an object of named parameters.
 */
CREATE FUNCTION whatsapp.wa_odoo_rule(
	name text, model text, template text,
	state_value text DEFAULT NULL, state_field text DEFAULT 'state',
	condition text DEFAULT NULL,
	partner_field text DEFAULT 'partner_id',
	params jsonb DEFAULT NULL,
	language text DEFAULT NULL, account text DEFAULT NULL,
	company_id integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rn text := wa_odoo_rule.name;
	tbl text := wa_odoo_rule.model;
	lang text := replace(btrim(wa_odoo_rule.language), '-', '_');
	acct text;
	paths text[] := ARRAY[]::text[];
	v jsonb;
	trg text;
BEGIN
	IF rn IS NULL OR rn !~ '^[a-z0-9_]{1,40}$' THEN
		RAISE EXCEPTION 'rule name % is not a name of lower case letters, digits and underscores (up to 40)',
				coalesce(quote_literal(rn), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the rule after what it sends, as in delivery_done.';
	END IF;
	IF rn IN ('sale_order_confirmed', 'invoice_posted', 'refund_posted', 'invoice_sent') THEN
		RAISE EXCEPTION 'rule name % is the name of an Odoo event', quote_literal(rn)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use whatsapp.wa_odoo_enable() for the four events, or give the rule another name.';
	END IF;
	IF tbl IS NULL OR tbl !~ '^[a-z0-9_]+$' THEN
		RAISE EXCEPTION 'model % is not the name of an Odoo table', coalesce(quote_literal(tbl), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the table of the model, as in stock_picking for stock.picking.';
	END IF;
	IF wa_odoo_rule.template IS NULL OR wa_odoo_rule.template !~ '^[a-z0-9_]+$'
	   OR length(wa_odoo_rule.template) > 512 THEN
		RAISE EXCEPTION 'template % is not a Cloud API template name',
				coalesce(quote_literal(wa_odoo_rule.template), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Template names use only lower case letters, digits and underscores, as in "delivery_done".';
	END IF;
	IF lang IS NOT NULL AND lang !~ '^[A-Za-z]{2,3}(_[A-Za-z0-9]{2,4})?$' THEN
		RAISE EXCEPTION 'language % is not a template language code', quote_literal(wa_odoo_rule.language)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a code such as ''es'', ''es_MX'' or ''pt_BR'', or NULL for each partner''s language.';
	END IF;
	IF (wa_odoo_rule.state_value IS NULL) = (wa_odoo_rule.condition IS NULL) THEN
		RAISE EXCEPTION 'a rule fires on state_value or on condition, and on exactly one of them'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass state_value => ''done'' (with state_field, ''state'' by default), or condition => ''...''.';
	END IF;
	IF wa_odoo_rule.partner_field IS NULL THEN
		RAISE EXCEPTION 'partner_field must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Name the many2one to res_partner, as in partner_id.';
	END IF;
	IF wa_odoo_rule.params IS NOT NULL THEN
		IF jsonb_typeof(wa_odoo_rule.params) = 'array' THEN
			FOR v IN SELECT e FROM jsonb_array_elements(wa_odoo_rule.params) e
			LOOP
				IF jsonb_typeof(v) <> 'string' THEN
					RAISE EXCEPTION 'params must hold field paths as strings, not %', v
						USING ERRCODE = 'invalid_parameter_value',
							  HINT = 'As in ''["partner_id.name", "name"]''.';
				END IF;
				paths := paths || (v #>> '{}');
			END LOOP;
		ELSIF jsonb_typeof(wa_odoo_rule.params) = 'object' THEN
			FOR v IN SELECT e FROM jsonb_each(wa_odoo_rule.params) AS t(k, e)
			LOOP
				IF jsonb_typeof(v) <> 'string' THEN
					RAISE EXCEPTION 'params must hold field paths as strings, not %', v
						USING ERRCODE = 'invalid_parameter_value',
							  HINT = 'As in ''{"customer": "partner_id.name"}''.';
				END IF;
				paths := paths || (v #>> '{}');
			END LOOP;
		ELSE
			RAISE EXCEPTION 'params must be an array or an object of field paths'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'As in ''["partner_id.name", "name"]'' or ''{"customer": "partner_id.name"}''.';
		END IF;
	END IF;

	IF wa_odoo_rule.account IS NULL THEN
		SELECT a.name INTO acct FROM whatsapp.account a WHERE a.is_default AND a.dropped_at IS NULL;
		IF acct IS NULL THEN
			RAISE EXCEPTION 'there is no default whatsapp account'
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Pass the account argument, or create an account with whatsapp.wa_account_set().';
		END IF;
	ELSE
		SELECT a.name INTO acct FROM whatsapp.account a
		 WHERE a.name = wa_odoo_rule.account AND a.dropped_at IS NULL;
		IF acct IS NULL THEN
			RAISE EXCEPTION 'whatsapp account "%" does not exist', wa_odoo_rule.account
				USING ERRCODE = 'undefined_object',
					  HINT = 'Create it with whatsapp.wa_account_set(), or see whatsapp.accounts for the names.';
		END IF;
	END IF;

	/* the table, the paths and the condition, checked in C */
	PERFORM whatsapp._odoo_rule_check(tbl, wa_odoo_rule.partner_field,
		CASE WHEN wa_odoo_rule.state_value IS NOT NULL THEN wa_odoo_rule.state_field END,
		wa_odoo_rule.condition, paths);

	INSERT INTO whatsapp.odoo_model_rule AS r (name, model, template, language, account,
		partner_field, params, state_field, state_value, condition, company_id)
	VALUES (rn, tbl, wa_odoo_rule.template, lang, acct, wa_odoo_rule.partner_field,
		wa_odoo_rule.params,
		CASE WHEN wa_odoo_rule.state_value IS NOT NULL THEN wa_odoo_rule.state_field END,
		wa_odoo_rule.state_value, wa_odoo_rule.condition, wa_odoo_rule.company_id)
	ON CONFLICT ON CONSTRAINT odoo_model_rule_pkey DO UPDATE
	   SET model = EXCLUDED.model, template = EXCLUDED.template, language = EXCLUDED.language,
		   account = EXCLUDED.account, partner_field = EXCLUDED.partner_field,
		   params = EXCLUDED.params, state_field = EXCLUDED.state_field,
		   state_value = EXCLUDED.state_value, condition = EXCLUDED.condition,
		   company_id = EXCLUDED.company_id, updated_at = now(), updated_by = session_user;

	/* the trigger: on this table only, naming no column */
	trg := 'whatsapp_rule_' || rn;
	PERFORM whatsapp._odoo_rule_drop_triggers(rn);
	EXECUTE format('CREATE CONSTRAINT TRIGGER %I AFTER INSERT OR UPDATE ON public.%I'
				   ' DEFERRABLE INITIALLY DEFERRED FOR EACH ROW'
				   ' WHEN (pg_catalog.current_setting(''whatsapp.odoo_events'', true) IS DISTINCT FROM ''off'')'
				   ' EXECUTE FUNCTION whatsapp._odoo_rule_trigger(%L)', trg, tbl, rn);
	PERFORM whatsapp._audit('wa_odoo_rule', format('rule %s on %s, %s, template %s', rn, tbl,
		CASE WHEN wa_odoo_rule.company_id IS NULL THEN 'every company'
			 ELSE 'company ' || wa_odoo_rule.company_id END, wa_odoo_rule.template));
END
$$;

/* Drop the triggers of rule name, on whatever table of public they are. */
CREATE FUNCTION whatsapp._odoo_rule_drop_triggers(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t record;
BEGIN
	FOR t IN SELECT c.relname, g.tgname FROM pg_trigger g
			   JOIN pg_class c ON c.oid = g.tgrelid
			   JOIN pg_namespace n ON n.oid = c.relnamespace
			  WHERE n.nspname = 'public' AND g.tgname = 'whatsapp_rule_' || _odoo_rule_drop_triggers.name
	LOOP
		EXECUTE format('DROP TRIGGER %I ON public.%I', t.tgname, t.relname);
	END LOOP;
END
$$;
REVOKE ALL ON FUNCTION whatsapp._odoo_rule_drop_triggers(text) FROM PUBLIC;

CREATE FUNCTION whatsapp.wa_odoo_rule_drop(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM whatsapp._odoo_rule_drop_triggers(wa_odoo_rule_drop.name);
	DELETE FROM whatsapp.odoo_model_rule r WHERE r.name = wa_odoo_rule_drop.name;
	IF FOUND THEN
		PERFORM whatsapp._audit('wa_odoo_rule_drop', 'rule ' || wa_odoo_rule_drop.name);
		RETURN true;
	END IF;
	RETURN false;
END
$$;

/* What rule name would record for a record now, without recording it. */
CREATE FUNCTION whatsapp.wa_odoo_rule_preview(name text, record_id bigint)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'wa_odoo_rule_preview'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION whatsapp.wa_odoo_rule(text, text, text, text, text, text, text, jsonb, text, text, integer),
	whatsapp.wa_odoo_rule_drop(text), whatsapp.wa_odoo_rule_preview(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whatsapp.wa_odoo_rule(text, text, text, text, text, text, text, jsonb, text, text, integer),
	whatsapp.wa_odoo_rule_drop(text), whatsapp.wa_odoo_rule_preview(text, bigint) TO whatsapp_admin;

/* The rules on any model, and whether their trigger is in place (whatsapp_admin). */
CREATE VIEW whatsapp.odoo_model_rules AS
SELECT r.name,
	   r.model,
	   r.template,
	   r.language,
	   r.account,
	   r.partner_field,
	   r.params,
	   r.state_field,
	   r.state_value,
	   r.condition,
	   r.company_id,
	   EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
				WHERE t.tgrelid OPERATOR(pg_catalog.=)
					  pg_catalog.to_regclass(pg_catalog.quote_ident('public') OPERATOR(pg_catalog.||) '.'
											 OPERATOR(pg_catalog.||) pg_catalog.quote_ident(r.model))
				  AND t.tgname OPERATOR(pg_catalog.=) ('whatsapp_rule_' OPERATOR(pg_catalog.||) r.name))
		   AS trigger_installed,
	   r.created_at,
	   r.updated_at,
	   r.updated_by
  FROM whatsapp.odoo_model_rule r;
REVOKE ALL ON whatsapp.odoo_model_rules FROM PUBLIC;
GRANT SELECT ON whatsapp.odoo_model_rules TO whatsapp_admin;

/* ========================================================================
 * 0.3: the four Odoo events are presets of the rules on any model (issue
 * 12, item 5).  One rendering and one firing path in C
 * (src/odoo_rules.c) serve the rules and the events; the events'
 * definitions are fixed in C, and wa_odoo_enable keeps writing their
 * configuration to whatsapp.odoo_rule.  What a rule gains here are the
 * events' capabilities, as parameter kinds and options of params:
 *
 *   {"amount": "amount"}        a number as money in the record's
 *                               currency (its currency_id), as Odoo prints
 *                               it in the partner's language;
 *   {"word": "portal_url"}      a word of wa_odoo_enable's vocabulary
 *                               (amounts, dates, the portal link with its
 *                               access_token), on sale_order and
 *                               account_move;
 *   "header", "base_url", "pdf_wait", "pdf_upload",
 *   "template_no_header"         the events' options (the official PDF as
 *                               the document header, and the template for
 *                               a message without it), on sale_order and
 *                               account_move.
 * ======================================================================== */

/*
 * One parameter of a rule: a field path, or a parameter kind.  Returns
 * the field path to check (the path, or the amount's), or NULL for a word.
 */
CREATE FUNCTION whatsapp._odoo_rule_param(model text, v jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF jsonb_typeof(v) = 'string' THEN
		RETURN v #>> '{}';
	END IF;
	IF jsonb_typeof(v) = 'object' AND (SELECT count(*) FROM jsonb_object_keys(v)) = 1 THEN
		IF jsonb_typeof(v -> 'amount') = 'string' THEN
			RETURN v ->> 'amount';
		END IF;
		IF jsonb_typeof(v -> 'word') = 'string' THEN
			IF model NOT IN ('sale_order', 'account_move') THEN
				RAISE EXCEPTION '% of params: the word % is for rules on sale_order and account_move',
						what, v -> 'word'
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'On other models, use field paths, and {"amount": "<path>"} for money.';
			END IF;
			PERFORM whatsapp._odoo_check_words(CASE model WHEN 'sale_order' THEN 'sale_order_confirmed'
												ELSE 'invoice_posted' END, v -> 'word', what);
			RETURN NULL;
		END IF;
	END IF;
	RAISE EXCEPTION '% of params is neither a field path nor a parameter kind: %', what, v::text
		USING ERRCODE = 'invalid_parameter_value',
			  HINT = 'A field path as in "partner_id.name", {"amount": "amount_total"} for money in the record''s currency, or {"word": "portal_url"} on sale_order and account_move.';
END
$$;

/* One of the events' options in a rule's params; raises when it is wrong. */
CREATE FUNCTION whatsapp._odoo_rule_option(model text, k text, v jsonb, params jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	wait interval;
BEGIN
	IF model NOT IN ('sale_order', 'account_move') THEN
		RAISE EXCEPTION '"%" of params is for rules on sale_order and account_move', k
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The document header and the portal links exist for orders and invoices only.';
	END IF;
	IF k = 'header' AND v IS DISTINCT FROM '"portal_pdf"'::jsonb THEN
		RAISE EXCEPTION 'header % of params is not supported', v::text
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = '"header": "portal_pdf" adds the document''s PDF as a document header: an invoice''s official PDF, an order''s report.';
	END IF;
	IF k = 'pdf_wait' THEN
		IF jsonb_typeof(v) = 'string' THEN
			BEGIN
				wait := (v #>> '{}')::interval;
			EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
					   OR interval_field_overflow THEN
				wait := NULL;
			END;
		END IF;
		IF wait IS NULL OR wait < interval '0' OR wait > interval '7 days' THEN
			RAISE EXCEPTION '"pdf_wait" of params must be an interval from "0" to "7 days", such as "30 minutes"'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'An invoice''s message waits up to that long for the invoice''s official PDF, then goes without the header; "0" or no "pdf_wait" sends it without the header at once.';
		END IF;
	END IF;
	IF k = 'pdf_upload' AND jsonb_typeof(v) <> 'boolean' THEN
		RAISE EXCEPTION '"pdf_upload" of params must be true or false'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'true: the worker uploads an invoice''s official PDF to Meta and sends its media id, for an Odoo that Meta cannot reach.';
	END IF;
	IF k = 'template_no_header' AND (jsonb_typeof(v) <> 'string'
		OR (v #>> '{}') !~ '^[a-z0-9_]+$' OR length(v #>> '{}') > 512) THEN
		RAISE EXCEPTION '"template_no_header" of params must be a Cloud API template name'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The template with the same text and no header, used when the message goes without the PDF header.';
	END IF;
	IF k IN ('pdf_wait', 'pdf_upload', 'template_no_header') AND NOT (params ? 'header') THEN
		RAISE EXCEPTION '"pdf_wait", "pdf_upload" and "template_no_header" of params need "header": "portal_pdf"'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF k = 'base_url' AND (jsonb_typeof(v) <> 'string'
		OR (v #>> '{}') !~ '^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^?#[:space:]]*)?$') THEN
		RAISE EXCEPTION '"base_url" of params must be an https URL such as "https://erp.example.com"'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'It is the public address of Odoo for this rule''s links; without it the links use web.base.url.';
	END IF;
END
$$;
REVOKE ALL ON FUNCTION whatsapp._odoo_rule_param(text, jsonb, text),
	whatsapp._odoo_rule_option(text, text, jsonb, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION whatsapp.wa_odoo_rule(
	name text, model text, template text,
	state_value text DEFAULT NULL, state_field text DEFAULT 'state',
	condition text DEFAULT NULL,
	partner_field text DEFAULT 'partner_id',
	params jsonb DEFAULT NULL,
	language text DEFAULT NULL, account text DEFAULT NULL,
	company_id integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rn text := wa_odoo_rule.name;
	tbl text := wa_odoo_rule.model;
	lang text := replace(btrim(wa_odoo_rule.language), '-', '_');
	acct text;
	paths text[] := ARRAY[]::text[];
	k text;
	v jsonb;
	trg text;
BEGIN
	IF rn IS NULL OR rn !~ '^[a-z0-9_]{1,40}$' THEN
		RAISE EXCEPTION 'rule name % is not a name of lower case letters, digits and underscores (up to 40)',
				coalesce(quote_literal(rn), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the rule after what it sends, as in delivery_done.';
	END IF;
	IF rn IN ('sale_order_confirmed', 'invoice_posted', 'refund_posted', 'invoice_sent') THEN
		RAISE EXCEPTION 'rule name % is the name of an Odoo event', quote_literal(rn)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use whatsapp.wa_odoo_enable() for the four events, or give the rule another name.';
	END IF;
	IF tbl IS NULL OR tbl !~ '^[a-z0-9_]+$' THEN
		RAISE EXCEPTION 'model % is not the name of an Odoo table', coalesce(quote_literal(tbl), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the table of the model, as in stock_picking for stock.picking.';
	END IF;
	IF wa_odoo_rule.template IS NULL OR wa_odoo_rule.template !~ '^[a-z0-9_]+$'
	   OR length(wa_odoo_rule.template) > 512 THEN
		RAISE EXCEPTION 'template % is not a Cloud API template name',
				coalesce(quote_literal(wa_odoo_rule.template), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Template names use only lower case letters, digits and underscores, as in "delivery_done".';
	END IF;
	IF lang IS NOT NULL AND lang !~ '^[A-Za-z]{2,3}(_[A-Za-z0-9]{2,4})?$' THEN
		RAISE EXCEPTION 'language % is not a template language code', quote_literal(wa_odoo_rule.language)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a code such as ''es'', ''es_MX'' or ''pt_BR'', or NULL for each partner''s language.';
	END IF;
	IF (wa_odoo_rule.state_value IS NULL) = (wa_odoo_rule.condition IS NULL) THEN
		RAISE EXCEPTION 'a rule fires on state_value or on condition, and on exactly one of them'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass state_value => ''done'' (with state_field, ''state'' by default), or condition => ''...''.';
	END IF;
	IF wa_odoo_rule.partner_field IS NULL THEN
		RAISE EXCEPTION 'partner_field must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Name the many2one to res_partner, as in partner_id.';
	END IF;
	IF wa_odoo_rule.params IS NOT NULL THEN
		IF jsonb_typeof(wa_odoo_rule.params) = 'array' THEN
			FOR v IN SELECT e FROM jsonb_array_elements(wa_odoo_rule.params) e
			LOOP
				paths := paths || whatsapp._odoo_rule_param(tbl, v, 'an element');
			END LOOP;
		ELSIF jsonb_typeof(wa_odoo_rule.params) = 'object' THEN
			FOR k, v IN SELECT * FROM jsonb_each(wa_odoo_rule.params)
			LOOP
				IF k IN ('header', 'base_url', 'pdf_wait', 'pdf_upload', 'template_no_header') THEN
					PERFORM whatsapp._odoo_rule_option(tbl, k, v, wa_odoo_rule.params);
				ELSE
					IF k !~ '^[a-z0-9_]+$' OR length(k) > 128 THEN
						RAISE EXCEPTION '% is not a template parameter name', quote_literal(k)
							USING ERRCODE = 'invalid_parameter_value',
								  HINT = 'Named template parameters use lower case letters, digits and underscores.';
					END IF;
					paths := paths || whatsapp._odoo_rule_param(tbl, v, format('parameter %s', k));
				END IF;
			END LOOP;
		ELSE
			RAISE EXCEPTION 'params must be an array or an object of field paths'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'As in ''["partner_id.name", "name"]'' or ''{"customer": "partner_id.name"}''.';
		END IF;
	END IF;

	IF wa_odoo_rule.account IS NULL THEN
		SELECT a.name INTO acct FROM whatsapp.account a WHERE a.is_default AND a.dropped_at IS NULL;
		IF acct IS NULL THEN
			RAISE EXCEPTION 'there is no default whatsapp account'
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Pass the account argument, or create an account with whatsapp.wa_account_set().';
		END IF;
	ELSE
		SELECT a.name INTO acct FROM whatsapp.account a
		 WHERE a.name = wa_odoo_rule.account AND a.dropped_at IS NULL;
		IF acct IS NULL THEN
			RAISE EXCEPTION 'whatsapp account "%" does not exist', wa_odoo_rule.account
				USING ERRCODE = 'undefined_object',
					  HINT = 'Create it with whatsapp.wa_account_set(), or see whatsapp.accounts for the names.';
		END IF;
	END IF;

	/* the table, the paths and the condition, checked in C */
	PERFORM whatsapp._odoo_rule_check(tbl, wa_odoo_rule.partner_field,
		CASE WHEN wa_odoo_rule.state_value IS NOT NULL THEN wa_odoo_rule.state_field END,
		wa_odoo_rule.condition, paths);

	INSERT INTO whatsapp.odoo_model_rule AS r (name, model, template, language, account,
		partner_field, params, state_field, state_value, condition, company_id)
	VALUES (rn, tbl, wa_odoo_rule.template, lang, acct, wa_odoo_rule.partner_field,
		wa_odoo_rule.params,
		CASE WHEN wa_odoo_rule.state_value IS NOT NULL THEN wa_odoo_rule.state_field END,
		wa_odoo_rule.state_value, wa_odoo_rule.condition, wa_odoo_rule.company_id)
	ON CONFLICT ON CONSTRAINT odoo_model_rule_pkey DO UPDATE
	   SET model = EXCLUDED.model, template = EXCLUDED.template, language = EXCLUDED.language,
		   account = EXCLUDED.account, partner_field = EXCLUDED.partner_field,
		   params = EXCLUDED.params, state_field = EXCLUDED.state_field,
		   state_value = EXCLUDED.state_value, condition = EXCLUDED.condition,
		   company_id = EXCLUDED.company_id, updated_at = now(), updated_by = session_user;

	/* the trigger: on this table only, naming no column */
	trg := 'whatsapp_rule_' || rn;
	PERFORM whatsapp._odoo_rule_drop_triggers(rn);
	EXECUTE format('CREATE CONSTRAINT TRIGGER %I AFTER INSERT OR UPDATE ON public.%I'
				   ' DEFERRABLE INITIALLY DEFERRED FOR EACH ROW'
				   ' WHEN (pg_catalog.current_setting(''whatsapp.odoo_events'', true) IS DISTINCT FROM ''off'')'
				   ' EXECUTE FUNCTION whatsapp._odoo_rule_trigger(%L)', trg, tbl, rn);
	PERFORM whatsapp._audit('wa_odoo_rule', format('rule %s on %s, %s, template %s', rn, tbl,
		CASE WHEN wa_odoo_rule.company_id IS NULL THEN 'every company'
			 ELSE 'company ' || wa_odoo_rule.company_id END, wa_odoo_rule.template));
END
$$;


/* ========================================================================
 * Issue 12 leftovers: a header-less template for invoice messages that
 * go without their PDF header (src/odoo_pdf.c, docs/odoo-documents.md).
 *
 * Meta refuses a message whose template declares a DOCUMENT header when
 * the message has no header component.  An invoice rule with "header":
 * "portal_pdf" sends without the header when no official PDF exists (at
 * once, or at the end of "pdf_wait").  "template_no_header" in the rule's
 * params names a second template, the same text without the header, that
 * such a message uses instead.  The waiting row keeps it for the worker.
 * ------------------------------------------------------------------------ */
ALTER TABLE whatsapp.odoo_pdf_wait ADD COLUMN template_no_header text;

CREATE FUNCTION whatsapp.wa_odoo_no_header_template(
	event text, template text, company_id integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p jsonb;
	found_rule boolean := false;
BEGIN
	IF wa_odoo_no_header_template.template IS NOT NULL
	   AND (wa_odoo_no_header_template.template !~ '^[a-z0-9_]+$'
			OR length(wa_odoo_no_header_template.template) > 512) THEN
		RAISE EXCEPTION 'template % is not a Cloud API template name',
				quote_literal(wa_odoo_no_header_template.template)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Template names use only lower case letters, digits and underscores, as in "invoice_posted_text".';
	END IF;
	SELECT r.params, true INTO p, found_rule
	  FROM whatsapp.odoo_rule r
	 WHERE r.event = wa_odoo_no_header_template.event
	   AND r.company_id IS NOT DISTINCT FROM wa_odoo_no_header_template.company_id
	   FOR UPDATE;
	IF NOT coalesce(found_rule, false) THEN
		RAISE EXCEPTION 'there is no rule for event % and company %', quote_literal(wa_odoo_no_header_template.event),
				coalesce(wa_odoo_no_header_template.company_id::text, 'NULL')
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create the rule first with whatsapp.wa_odoo_enable(), with "header": "portal_pdf" in params.';
	END IF;
	IF p IS NULL OR jsonb_typeof(p) <> 'object' OR p -> 'header' IS DISTINCT FROM '"portal_pdf"'::jsonb THEN
		RAISE EXCEPTION 'the rule for event % has no "header": "portal_pdf"', quote_literal(wa_odoo_no_header_template.event)
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'A header-less template is only used by a rule whose messages may go without the PDF header.';
	END IF;
	IF wa_odoo_no_header_template.template IS NULL THEN
		p := p - 'template_no_header';
	ELSE
		p := p || jsonb_build_object('template_no_header', wa_odoo_no_header_template.template);
	END IF;
	UPDATE whatsapp.odoo_rule r
	   SET params = p, updated_at = now(), updated_by = session_user
	 WHERE r.event = wa_odoo_no_header_template.event
	   AND r.company_id IS NOT DISTINCT FROM wa_odoo_no_header_template.company_id;
END
$$;
REVOKE ALL ON FUNCTION whatsapp.wa_odoo_no_header_template(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whatsapp.wa_odoo_no_header_template(text, text, integer) TO whatsapp_admin;

/*
 * The audit's trigger on odoo_rule (issue 13 above) names the Odoo
 * function on the call stack; its pattern now also takes names with more
 * than one word after wa_odoo_, so that wa_odoo_no_header_template's
 * change of a rule is audited like wa_odoo_enable's.
 */
CREATE OR REPLACE FUNCTION whatsapp._audit_odoo_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stack text;
	fn text;
	r record;
BEGIN
	GET DIAGNOSTICS stack = PG_CONTEXT;
	fn := substring(stack FROM 'function whatsapp\.(wa_odoo_[a-z_]+)\(');
	IF fn IS NULL THEN
		RETURN NULL;
	END IF;
	IF TG_TABLE_NAME = 'odoo_rule' THEN
		r := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
		PERFORM whatsapp._audit(fn, format('event %s, %s, rule %s, template %s',
			r.event, CASE WHEN r.company_id IS NULL THEN 'every company'
						  ELSE 'company ' || r.company_id END, r.id, r.template));
	ELSE
		PERFORM whatsapp._audit(fn, 'every Odoo event of database ' || current_database());
	END IF;
	RETURN NULL;
END
$$;

/* ========================================================================
 * Enqueue cost (issue 11)
 *
 * The opt-out rule (recipient.c) probes the keyed hashes of a number only
 * when whatsapp.opt_out holds any hashed identifier, which it learns from
 * one probe of opt_out_erased_idx; without any erasure the index is empty,
 * and no send computes an HMAC.
 *
 * message_payload_check calls a C function instead of "state NOT IN
 * (...)", for the reason given for the two other CHECKs in 0.1--0.2:
 * PostgreSQL reads and plans a table's CHECK expressions again for every
 * INSERT or UPDATE statement, and the text[] constant made this one the
 * longest of the three.  Same rule; NOT VALID then VALIDATE, as there.
 * ======================================================================== */
CREATE INDEX opt_out_erased_idx ON whatsapp.opt_out (identifier)
	WHERE identifier OPERATOR(pg_catalog.~~) 'erased:%';

CREATE FUNCTION whatsapp._message_payload_valid(text, jsonb)
RETURNS boolean
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'wa_message_payload_valid';
REVOKE ALL ON FUNCTION whatsapp._message_payload_valid(text, jsonb) FROM PUBLIC;

ALTER TABLE whatsapp.message
	DROP CONSTRAINT message_payload_check,
	ADD CONSTRAINT message_payload_check
		CHECK (whatsapp._message_payload_valid(state, payload)) NOT VALID;
ALTER TABLE whatsapp.message VALIDATE CONSTRAINT message_payload_check;

/* ========================================================================
 * Status updates without index entries (issue 11)
 *
 * A status (sent, delivered, read) changes a message's state and times.
 * PostgreSQL can make such an UPDATE a HOT update, which adds no entry to
 * any index, only when no column that an index names, in its keys or its
 * predicate, changes.  The worker's partial indexes named state in their
 * predicates, so every status added an entry to every index of the
 * outbox.  They now name phase, which says where a message is in the
 * worker's hands: 'q' queued, 's' sending, NULL for every other state.
 * phase is computed from state by PostgreSQL itself (a stored generated
 * column, by the C function _message_phase: its expression is read and
 * planned again for every statement, as the CHECKs' are), so it can never
 * disagree with state; a status leaves it NULL, and the update can be HOT.  Every statement that should use one of these
 * indexes names phase beside state.
 *
 * A HOT update also needs room for the new version in the same page, and
 * the first status of a message adds its pricing and conversation (about
 * 190 bytes to a row of about 250): fillfactor 60 leaves that room.  In
 * bench/webhook.sh's steady state 99% of the status updates were HOT with
 * it, 62% with 85.  Messages fill their pages as they grow, so the table
 * of delivered messages is hardly larger for it.  Adding the column
 * rewrites the table once, under an exclusive lock.
 * ======================================================================== */
CREATE FUNCTION whatsapp._message_phase(text)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'wa_message_phase';
REVOKE ALL ON FUNCTION whatsapp._message_phase(text) FROM PUBLIC;

ALTER TABLE whatsapp.message
	SET (fillfactor = 60),
	ADD COLUMN phase text GENERATED ALWAYS AS (whatsapp._message_phase(state)) STORED;

DROP INDEX whatsapp.message_claim_idx;
DROP INDEX whatsapp.message_pair_idx;
DROP INDEX whatsapp.message_retention_idx;
/* What the worker claims next, per account, in order. */
CREATE INDEX message_claim_idx ON whatsapp.message
	(account_id, next_attempt_at, id) WHERE phase OPERATOR(pg_catalog.=) 'q';
/* Per-recipient order: the head of each (account, recipient) queue. */
CREATE INDEX message_pair_idx ON whatsapp.message
	(account_id, recipient, id) WHERE phase IS NOT NULL;
/* What the content purge takes next (retention.c). */
CREATE INDEX message_retention_idx ON whatsapp.message (created_at)
	WHERE payload IS NOT NULL AND phase IS NULL;

CREATE OR REPLACE VIEW whatsapp.status AS
SELECT w.datname AS database,
	   w.pid IS NOT NULL AS worker_running,
	   w.pid AS worker_pid,
	   w.state AS worker_state,
	   CASE WHEN w.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
			THEN (SELECT pg_catalog.count(*) FROM whatsapp.message m
				   WHERE m.state OPERATOR(pg_catalog.=) 'queued'
					 AND m.phase OPERATOR(pg_catalog.=) 'q')
			ELSE w.queue_depth END AS queue_depth,
	   CASE WHEN w.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
			THEN pg_catalog.now() OPERATOR(pg_catalog.-)
				 (SELECT pg_catalog.min(m.created_at) FROM whatsapp.message m
				   WHERE m.state OPERATOR(pg_catalog.=) 'queued'
					 AND m.phase OPERATOR(pg_catalog.=) 'q')
			ELSE pg_catalog.now() OPERATOR(pg_catalog.-) w.oldest_queued END AS oldest_queued_age,
	   w.inflight AS requests_in_flight,
	   w.sent_last_minute,
	   CASE WHEN w.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
			THEN (SELECT pg_catalog.array_agg(a.name OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) a.paused_reason ORDER BY a.name)
				    FROM whatsapp.account a
				   WHERE a.paused_kind IS NOT NULL AND a.dropped_at IS NULL) END AS paused_accounts,
	   w.last_error,
	   w.started_at AS worker_started_at
  FROM whatsapp._worker_status() w;

/*
 * A person's export leaves phase out, as it leaves out stats_events: both
 * are the extension's bookkeeping, and phase repeats state.  The same
 * function otherwise.
 */
CREATE OR REPLACE FUNCTION whatsapp.wa_subject_export(phone text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids text[] := whatsapp._subject_ids(wa_subject_export.phone);
	strs text[] := whatsapp._subject_strings(ids);
	pats text[];
	hashes text[] := whatsapp._subject_hashes(ids);
	msg_ids bigint[];
	result jsonb;
BEGIN
	SELECT array_agg('%' || s || '%') INTO pats FROM unnest(strs) s;
	SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') INTO msg_ids
	  FROM whatsapp.message m
	 WHERE whatsapp._subject_match(m.recipient, ids) OR whatsapp._subject_match(m.wa_id, ids);

	result := jsonb_build_object(
		'identifiers', to_jsonb(ids),
		'exported_at', now(),
		'messages', (SELECT coalesce(jsonb_agg((to_jsonb(m) - 'stats_events' - 'phase')
											   || jsonb_build_object('account', a.name)
											   ORDER BY m.id), '[]')
					   FROM whatsapp.message m LEFT JOIN whatsapp.account a ON a.id = m.account_id
					  WHERE m.id = ANY (msg_ids)),
		'inbound', (SELECT coalesce(jsonb_agg(to_jsonb(i) || jsonb_build_object('account', a.name)
											  ORDER BY i.id), '[]')
					  FROM whatsapp.inbound_message i LEFT JOIN whatsapp.account a ON a.id = i.account_id
					 WHERE i.phone = ANY (ids) OR i.user_id = ANY (ids)
						OR i.parent_user_id = ANY (ids) OR whatsapp._subject_match(i.wa_id, ids)),
		'log', (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.at, l.message_id), '[]')
				  FROM whatsapp.log l
				 WHERE l.message_id = ANY (msg_ids) OR l.message LIKE ANY (pats)),
		'opt_outs', (SELECT coalesce(jsonb_agg(to_jsonb(o) ORDER BY o.identifier, o.scope), '[]')
					   FROM whatsapp.opt_out o WHERE o.identifier = ANY (ids)),
		'consents', (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.id), '[]')
					   FROM whatsapp.consent c
					  WHERE c.identifier = ANY (ids) OR c.reason LIKE ANY (pats)),
		'consent_latest', (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.identifier, l.scope), '[]')
							 FROM whatsapp.consent_latest l WHERE l.identifier = ANY (ids)),
		'webhooks', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', w.id,
									 'received_at', w.received_at, 'payload', w.payload)
									 ORDER BY w.id), '[]')
					   FROM whatsapp.webhook w WHERE w.payload LIKE ANY (pats)),
		'statuses_held', (SELECT coalesce(jsonb_agg(to_jsonb(h) ORDER BY h.id), '[]')
							FROM whatsapp.status_held h WHERE h.status::text LIKE ANY (pats)),
		'erased_records', (SELECT count(*) FROM whatsapp.opt_out o WHERE o.identifier = ANY (hashes))
						  + (SELECT count(*) FROM whatsapp.message m WHERE m.recipient = ANY (hashes)));
	PERFORM whatsapp._audit('wa_subject_export', whatsapp._audit_person(wa_subject_export.phone));
	RETURN result;
END
$$;
