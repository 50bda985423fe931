/* whatsapp--0.1.sql: first release of the whatsapp extension */

\echo Use "CREATE EXTENSION whatsapp CASCADE" to load this file. \quit

/*
 * Everything here is schema-qualified, so the script works under any
 * search_path.  The control file puts the extension in pg_catalog and this
 * script creates schema whatsapp itself, which makes the schema a member of
 * the extension: DROP EXTENSION removes it, and only the roles remain.
 */
CREATE SCHEMA whatsapp;
REVOKE ALL ON SCHEMA whatsapp FROM PUBLIC;
COMMENT ON SCHEMA whatsapp IS 'WhatsApp Business Cloud API messaging (extension whatsapp)';

/*
 * Roles.  They are cluster-wide and survive DROP EXTENSION.  A role of that
 * name that can log in, or is a superuser, is never adopted: granting it
 * access to every database's messages would be a surprise.
 */
DO $roles$
DECLARE
	r text;
	can_login boolean;
	is_super boolean;
BEGIN
	FOREACH r IN ARRAY ARRAY['whatsapp_admin', 'whatsapp_sender', 'whatsapp_reader']
	LOOP
		SELECT rolcanlogin, rolsuper INTO can_login, is_super
		  FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r;
		IF NOT FOUND THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		ELSIF can_login OR is_super THEN
			RAISE EXCEPTION 'role "%" already exists and can log in or is a superuser', r
				USING ERRCODE = 'duplicate_object',
					  DETAIL = 'The whatsapp extension adopts an existing role of that name only when it is NOLOGIN and not a superuser.',
					  HINT = pg_catalog.format('Rename or drop the existing role, or run ALTER ROLE %I NOLOGIN NOSUPERUSER, then create the extension again.', r);
		END IF;
	END LOOP;
END
$roles$;

GRANT USAGE ON SCHEMA whatsapp TO whatsapp_admin, whatsapp_sender, whatsapp_reader;

/* ------------------------------------------------------------------------
 * Accounts.  Secrets are sealed (see src/seal.c) and never leave in clear.
 * ------------------------------------------------------------------------ */
CREATE SEQUENCE whatsapp.account_id_seq AS integer;

CREATE TABLE whatsapp.account (
	id				integer NOT NULL DEFAULT pg_catalog.nextval('whatsapp.account_id_seq'::pg_catalog.regclass),
	name			text NOT NULL,
	phone_number_id	text NOT NULL,
	waba_id			text,
	max_mps			integer NOT NULL DEFAULT 80,
	is_default		boolean NOT NULL DEFAULT false,
	access_token	bytea,
	access_token_key text,
	app_secret		bytea,
	app_secret_key	text,
	verify_token	bytea,
	verify_token_key text,
	paused_kind		text,
	paused_reason	text,
	paused_at		timestamptz,
	backoff_until	timestamptz,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	dropped_at		timestamptz,
	CONSTRAINT account_pkey PRIMARY KEY (id),
	CONSTRAINT account_name_check CHECK (name OPERATOR(pg_catalog.<>) ''),
	CONSTRAINT account_max_mps_check CHECK (max_mps BETWEEN 1 AND 100000),
	CONSTRAINT account_paused_kind_check
		CHECK (paused_kind IN ('token', 'key', 'binding')),
	CONSTRAINT account_dropped_clean CHECK (dropped_at IS NULL OR
		(access_token IS NULL AND app_secret IS NULL AND verify_token IS NULL
		 AND NOT is_default))
);
ALTER SEQUENCE whatsapp.account_id_seq OWNED BY whatsapp.account.id;
CREATE UNIQUE INDEX account_name_key ON whatsapp.account (name)
	WHERE dropped_at IS NULL;
CREATE UNIQUE INDEX account_default_key ON whatsapp.account (is_default)
	WHERE is_default;

/* ------------------------------------------------------------------------
 * Messages: the durable outbox and the record of each message's fate.
 * ------------------------------------------------------------------------ */
CREATE SEQUENCE whatsapp.message_id_seq AS bigint;

CREATE TABLE whatsapp.message (
	id				bigint NOT NULL DEFAULT pg_catalog.nextval('whatsapp.message_id_seq'::pg_catalog.regclass),
	account_id		integer NOT NULL,
	recipient		text,
	wa_id			text,
	kind			text NOT NULL,
	payload			jsonb NOT NULL,
	state			text NOT NULL DEFAULT 'queued',
	attempts		integer NOT NULL DEFAULT 0,
	next_attempt_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	failure_type	text,
	http_status		integer,
	error_code		integer,
	error_title		text,
	error_details	text,
	fbtrace_id		text,
	wamid			text,
	dedupe_key		text,
	context			jsonb,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	claimed_at		timestamptz,
	sent_at			timestamptz,
	delivered_at	timestamptz,
	read_at			timestamptz,
	failed_at		timestamptz,
	pricing			jsonb,
	conversation	jsonb,
	CONSTRAINT message_pkey PRIMARY KEY (id),
	CONSTRAINT message_state_check CHECK (state IN
		('queued', 'sending', 'sent', 'delivered', 'read', 'failed',
		 'cancelled', 'blocked')),
	CONSTRAINT message_failure_type_check CHECK (failure_type IN
		('phone_invalid', 'opted_out', 'account', 'template',
		 'whatsapp_recoverable', 'whatsapp_unrecoverable', 'network'))
) WITH (autovacuum_vacuum_scale_factor = 0.02,
		autovacuum_analyze_scale_factor = 0.02);
ALTER SEQUENCE whatsapp.message_id_seq OWNED BY whatsapp.message.id;

/* What the worker claims next, per account, in order. */
CREATE INDEX message_claim_idx ON whatsapp.message
	(account_id, next_attempt_at, id) WHERE state = 'queued';
/* Per-recipient order: the head of each (account, recipient) queue. */
CREATE INDEX message_pair_idx ON whatsapp.message
	(account_id, recipient, id) WHERE state IN ('queued', 'sending');
CREATE UNIQUE INDEX message_dedupe_key ON whatsapp.message
	(account_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX message_wamid_idx ON whatsapp.message (wamid)
	WHERE wamid IS NOT NULL;

/* ------------------------------------------------------------------------
 * Log: one row per HTTP attempt and per event.  Never holds a secret.
 * ------------------------------------------------------------------------ */
CREATE TABLE whatsapp.log (
	at				timestamptz NOT NULL DEFAULT pg_catalog.now(),
	message_id		bigint,
	attempt			integer,
	event			text NOT NULL,
	http_status		integer,
	code			integer,
	message			text,
	fbtrace_id		text,
	latency_ms		double precision
);
CREATE INDEX log_message_idx ON whatsapp.log (message_id);
CREATE INDEX log_at_idx ON whatsapp.log USING brin (at);

/* pg_dump keeps the rows and the counters, not just the definitions. */
SELECT pg_catalog.pg_extension_config_dump('whatsapp.account', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.account_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.message', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.log', '');

/* ------------------------------------------------------------------------
 * Internal C helpers.  Not granted to anyone; the SECURITY DEFINER
 * functions below call them as the extension's owner.
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp._wake_at_commit(accounts_changed boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'wa_wake_at_commit_sql'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION whatsapp._worker_status(
	OUT datname name, OUT pid integer, OUT state text, OUT inflight integer,
	OUT sent_last_minute bigint, OUT queue_depth bigint,
	OUT oldest_queued timestamptz, OUT started_at timestamptz,
	OUT last_error text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'wa_worker_status'
LANGUAGE C VOLATILE;

/* ------------------------------------------------------------------------
 * Accounts (whatsapp_admin)
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp.wa_account_set(
	name text, phone_number_id text, access_token text,
	app_secret text DEFAULT NULL, verify_token text DEFAULT NULL,
	waba_id text DEFAULT NULL, max_mps integer DEFAULT 80)
RETURNS void
AS 'MODULE_PATHNAME', 'wa_account_set'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION whatsapp.wa_account_drop(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'wa_account_drop'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION whatsapp.wa_rotate_key()
RETURNS integer
AS 'MODULE_PATHNAME', 'wa_rotate_key'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION whatsapp.wa_rebind()
RETURNS integer
AS 'MODULE_PATHNAME', 'wa_rebind'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE VIEW whatsapp.accounts AS
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
	   a.updated_at
  FROM whatsapp.account a
 WHERE a.dropped_at IS NULL;

/* ------------------------------------------------------------------------
 * Phone numbers
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp.normalize_phone(phone text, country_code text DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'wa_normalize_phone_sql'
LANGUAGE C STABLE PARALLEL SAFE;

/* ------------------------------------------------------------------------
 * Sending (whatsapp_sender)
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp.wa_send(
	recipient text, body text, account text DEFAULT NULL,
	dedupe_key text DEFAULT NULL, context jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'wa_send'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION whatsapp.wa_send_template(
	recipient text, template text, language text, params jsonb DEFAULT NULL,
	account text DEFAULT NULL, dedupe_key text DEFAULT NULL,
	context jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'wa_send_template'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION whatsapp.wa_send_message(
	recipient text, message jsonb, account text DEFAULT NULL,
	dedupe_key text DEFAULT NULL, context jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'wa_send_message'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION whatsapp.wa_cancel(id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE whatsapp.message m
	   SET state = 'cancelled'
	 WHERE m.id OPERATOR(pg_catalog.=) wa_cancel.id
	   AND m.state OPERATOR(pg_catalog.=) 'queued';
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	INSERT INTO whatsapp.log (message_id, event, message)
	VALUES (wa_cancel.id, 'cancel', 'cancelled by ' OPERATOR(pg_catalog.||) session_user);
	RETURN true;
END
$$;

CREATE FUNCTION whatsapp.wa_retry(id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE whatsapp.message m
	   SET state = 'queued', attempts = 0, next_attempt_at = pg_catalog.now(),
		   failure_type = NULL, http_status = NULL, error_code = NULL,
		   error_title = NULL, error_details = NULL, fbtrace_id = NULL,
		   failed_at = NULL
	 WHERE m.id OPERATOR(pg_catalog.=) wa_retry.id
	   AND m.state OPERATOR(pg_catalog.=) 'failed'
	   AND m.failure_type IS DISTINCT FROM 'phone_invalid'
	   AND m.failure_type IS DISTINCT FROM 'opted_out';
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	INSERT INTO whatsapp.log (message_id, event, message)
	VALUES (wa_retry.id, 'retry', 'queued again by ' OPERATOR(pg_catalog.||) session_user);
	PERFORM whatsapp._wake_at_commit(false);
	RETURN true;
END
$$;

/* ------------------------------------------------------------------------
 * Statuses, log and health (whatsapp_reader)
 * ------------------------------------------------------------------------ */
CREATE VIEW whatsapp.messages AS
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
	   m.conversation
  FROM whatsapp.message m
  LEFT JOIN whatsapp.account a ON a.id OPERATOR(pg_catalog.=) m.account_id;

CREATE FUNCTION whatsapp.wa_log(
	message_id bigint DEFAULT NULL, since timestamptz DEFAULT NULL,
	max_rows integer DEFAULT 100)
RETURNS TABLE (at timestamptz, message_id bigint, attempt integer,
			   event text, http_status integer, code integer,
			   message text, fbtrace_id text, latency_ms double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT l.at, l.message_id, l.attempt, l.event, l.http_status, l.code,
		   l.message, l.fbtrace_id, l.latency_ms
	  FROM whatsapp.log l
	 WHERE ($1 IS NULL OR l.message_id OPERATOR(pg_catalog.=) $1)
	   AND ($2 IS NULL OR l.at OPERATOR(pg_catalog.>=) $2)
	 ORDER BY l.at DESC
	 LIMIT GREATEST($3, 0)
$$;

CREATE VIEW whatsapp.status AS
SELECT w.datname AS database,
	   w.pid IS NOT NULL AS worker_running,
	   w.pid AS worker_pid,
	   w.state AS worker_state,
	   CASE WHEN w.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
			THEN (SELECT pg_catalog.count(*) FROM whatsapp.message m
				   WHERE m.state OPERATOR(pg_catalog.=) 'queued')
			ELSE w.queue_depth END AS queue_depth,
	   CASE WHEN w.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
			THEN pg_catalog.now() OPERATOR(pg_catalog.-)
				 (SELECT pg_catalog.min(m.created_at) FROM whatsapp.message m
				   WHERE m.state OPERATOR(pg_catalog.=) 'queued')
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

/* ------------------------------------------------------------------------
 * Privileges.  Nothing is open to PUBLIC.
 * ------------------------------------------------------------------------ */
REVOKE ALL ON ALL TABLES IN SCHEMA whatsapp FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA whatsapp FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA whatsapp FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
	whatsapp.wa_account_set(text, text, text, text, text, text, integer),
	whatsapp.wa_account_drop(text),
	whatsapp.wa_rotate_key(),
	whatsapp.wa_rebind()
	TO whatsapp_admin;
GRANT SELECT ON whatsapp.accounts TO whatsapp_admin;

GRANT EXECUTE ON FUNCTION
	whatsapp.wa_send(text, text, text, text, jsonb),
	whatsapp.wa_send_template(text, text, text, jsonb, text, text, jsonb),
	whatsapp.wa_send_message(text, jsonb, text, text, jsonb),
	whatsapp.wa_cancel(bigint),
	whatsapp.wa_retry(bigint),
	whatsapp.normalize_phone(text, text)
	TO whatsapp_sender;

GRANT EXECUTE ON FUNCTION
	whatsapp.wa_log(bigint, timestamptz, integer),
	whatsapp.normalize_phone(text, text),
	whatsapp._worker_status()
	TO whatsapp_reader;
GRANT SELECT ON whatsapp.messages, whatsapp.status TO whatsapp_reader;
