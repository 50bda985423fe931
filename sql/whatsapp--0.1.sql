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

/* ========================================================================
 * Webhooks, opt-out, window
 *
 * wa_receive (src/webhook.c) checks the signature of each payload Meta
 * posts, stores it verbatim in whatsapp.webhook and applies what it knows:
 * statuses to whatsapp.message, replies to whatsapp.inbound_message,
 * opt-outs and opt-ins to whatsapp.opt_out and whatsapp.consent, template
 * updates to whatsapp.templates.  A status whose message the worker has not
 * recorded yet waits in whatsapp.status_held until it has.
 * ======================================================================== */

/* Every correctly signed payload, verbatim. */
CREATE SEQUENCE whatsapp.webhook_id_seq AS bigint;

CREATE TABLE whatsapp.webhook (
	id				bigint NOT NULL DEFAULT pg_catalog.nextval('whatsapp.webhook_id_seq'::pg_catalog.regclass),
	received_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	account_id		integer,		/* the account whose app secret verified it */
	payload			text NOT NULL,	/* the exact body */
	applied			integer NOT NULL DEFAULT 0,	/* events applied */
	ignored			text[],			/* parts logged as ignored */
	CONSTRAINT webhook_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE whatsapp.webhook_id_seq OWNED BY whatsapp.webhook.id;

/*
 * Statuses that arrived before the worker recorded their message (Meta's
 * "sent" often beats the worker's commit).  The worker applies them when it
 * records the message (whatsapp._after_record); rows nobody claims are
 * purged after seven days.
 */
CREATE SEQUENCE whatsapp.status_held_id_seq AS bigint;

CREATE TABLE whatsapp.status_held (
	id				bigint NOT NULL DEFAULT pg_catalog.nextval('whatsapp.status_held_id_seq'::pg_catalog.regclass),
	held_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	phone_number_id	text NOT NULL,	/* metadata.phone_number_id of the change */
	message_id		bigint,			/* from biz_opaque_callback_data */
	wamid			text NOT NULL,
	status			jsonb NOT NULL,	/* the status object, as received */
	CONSTRAINT status_held_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE whatsapp.status_held_id_seq OWNED BY whatsapp.status_held.id;
CREATE INDEX status_held_message_idx ON whatsapp.status_held (message_id)
	WHERE message_id IS NOT NULL;
CREATE INDEX status_held_wamid_idx ON whatsapp.status_held (wamid);
CREATE INDEX status_held_at_idx ON whatsapp.status_held (held_at);

/* Messages customers sent, once per wamid. */
CREATE SEQUENCE whatsapp.inbound_message_id_seq AS bigint;

CREATE TABLE whatsapp.inbound_message (
	id				bigint NOT NULL DEFAULT pg_catalog.nextval('whatsapp.inbound_message_id_seq'::pg_catalog.regclass),
	account_id		integer NOT NULL,
	wamid			text NOT NULL,
	wa_id			text,			/* "from"; absent when the number is withheld */
	phone			text,			/* wa_id as E.164, the form messages are sent to */
	user_id			text,			/* business-scoped user id (BSUID) */
	parent_user_id	text,
	username		text,
	profile_name	text,
	type			text NOT NULL,
	body			text,			/* the text, caption, title or emoji */
	context_wamid	text,			/* the message replied or reacted to */
	in_reply_to		bigint,			/* whatsapp.message id of that message */
	sent_at			timestamptz NOT NULL,	/* Meta's timestamp */
	received_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	raw				jsonb NOT NULL,
	CONSTRAINT inbound_message_pkey PRIMARY KEY (id),
	CONSTRAINT inbound_message_wamid_key UNIQUE (wamid)
);
ALTER SEQUENCE whatsapp.inbound_message_id_seq OWNED BY whatsapp.inbound_message.id;
/* The 24-hour window of (recipient, account), and identities by number. */
CREATE INDEX inbound_message_phone_idx ON whatsapp.inbound_message
	(phone, account_id, sent_at) WHERE phone IS NOT NULL;
CREATE INDEX inbound_message_user_idx ON whatsapp.inbound_message (user_id)
	WHERE user_id IS NOT NULL;

/*
 * Opt-outs in force, one row per identifier and scope.  An identifier is
 * an E.164 number with its "+" (every form the number takes: Brazil with
 * and without the ninth digit, Argentina with and without the 9) or a
 * business-scoped user id.  Scope "all" blocks every message, "marketing"
 * the templates whose category in whatsapp.templates is MARKETING.
 */
CREATE TABLE whatsapp.opt_out (
	identifier		text NOT NULL,
	scope			text NOT NULL,
	since			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	source			text NOT NULL,
	reason			text,
	account_id		integer,		/* the account it came through, if any */
	CONSTRAINT opt_out_pkey PRIMARY KEY (identifier, scope),
	CONSTRAINT opt_out_scope_check CHECK (scope IN ('all', 'marketing'))
);

/* Every opt-out and opt-in ever recorded, per identifier. */
CREATE SEQUENCE whatsapp.consent_id_seq AS bigint;

CREATE TABLE whatsapp.consent (
	id				bigint NOT NULL DEFAULT pg_catalog.nextval('whatsapp.consent_id_seq'::pg_catalog.regclass),
	at				timestamptz NOT NULL DEFAULT pg_catalog.now(),
	identifier		text NOT NULL,
	action			text NOT NULL,
	scope			text NOT NULL,
	source			text NOT NULL,
	reason			text,
	account_id		integer,
	wamid			text,			/* the inbound message or status it came from */
	recorded_by		text NOT NULL DEFAULT session_user,
	CONSTRAINT consent_pkey PRIMARY KEY (id),
	CONSTRAINT consent_action_check CHECK (action IN ('opt_out', 'opt_in')),
	CONSTRAINT consent_scope_check CHECK (scope IN ('all', 'marketing'))
);
ALTER SEQUENCE whatsapp.consent_id_seq OWNED BY whatsapp.consent.id;
CREATE INDEX consent_identifier_idx ON whatsapp.consent (identifier);

/*
 * Opt-out and opt-in words.  A word counts only when it is the whole
 * message after folding (whatsapp.fold_keyword: lower case, accents,
 * punctuation and emoji removed).  The rows marked builtin come with the
 * extension and cannot be changed; a row of your own for the same keyword
 * overrides one (action 'none' disables it).  Only your rows are dumped.
 */
CREATE TABLE whatsapp.keywords (
	keyword			text NOT NULL,
	action			text NOT NULL,
	scope			text NOT NULL DEFAULT 'all',
	language		text,
	builtin			boolean NOT NULL DEFAULT false,
	CONSTRAINT keywords_pkey PRIMARY KEY (keyword, builtin),
	CONSTRAINT keywords_keyword_check CHECK (keyword <> ''),
	CONSTRAINT keywords_action_check CHECK (action IN ('stop', 'start', 'none')),
	CONSTRAINT keywords_scope_check CHECK (scope IN ('all', 'marketing'))
);

/*
 * Approved templates: their languages, and their category for the
 * marketing scope.  account is an account name, or NULL for every account.
 * status follows message_template_status_update webhooks.
 */
CREATE TABLE whatsapp.templates (
	account			text,
	name			text NOT NULL,
	language		text NOT NULL,
	category		text NOT NULL,
	status			text,
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT templates_category_check
		CHECK (category IN ('MARKETING', 'UTILITY', 'AUTHENTICATION')),
	CONSTRAINT templates_name_check CHECK (name <> ''),
	CONSTRAINT templates_language_check CHECK (language <> '')
);
CREATE UNIQUE INDEX templates_key ON whatsapp.templates
	((COALESCE(account, '')), name, language);
CREATE INDEX templates_marketing_idx ON whatsapp.templates (name)
	WHERE category = 'MARKETING';

SELECT pg_catalog.pg_extension_config_dump('whatsapp.webhook', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.webhook_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.status_held', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.status_held_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.inbound_message', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.inbound_message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.opt_out', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.consent', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.consent_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.keywords', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.templates', '');

/* ------------------------------------------------------------------------
 * Helpers in C (src/webhook.c)
 * ------------------------------------------------------------------------ */

/* The form keywords are compared in: 'Cancelar Suscripción!' → 'cancelar suscripcion'. */
CREATE FUNCTION whatsapp.fold_keyword(message text)
RETURNS text
AS 'MODULE_PATHNAME', 'wa_fold_keyword_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

/*
 * Every identifier form of a number, wa_id (with a leading '+') or
 * business-scoped user id; NULL when it is none of these.
 */
CREATE FUNCTION whatsapp._identity_forms(identifier text)
RETURNS text[]
AS 'MODULE_PATHNAME', 'wa_identity_forms_sql'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

/*
 * Called by the worker after it recorded answers: applies the statuses held
 * for those messages, and records a marketing opt-out for 131050.
 */
CREATE FUNCTION whatsapp._after_record(ids bigint[], codes integer[])
RETURNS void
AS 'MODULE_PATHNAME', 'wa_after_record'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

/*
 * The webhook functions keep the account list in each backend; this
 * statement trigger tells every backend when whatsapp.account changed.
 */
CREATE FUNCTION whatsapp._account_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'wa_account_changed'
LANGUAGE C;
CREATE TRIGGER account_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON whatsapp.account
	FOR EACH STATEMENT EXECUTE FUNCTION whatsapp._account_changed();

/* The signature check of wa_receive and nothing else (for the benchmark). */
CREATE FUNCTION whatsapp._verify_signature(payload text, signature text)
RETURNS integer
AS 'MODULE_PATHNAME', 'wa_verify_signature_sql'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

/* ------------------------------------------------------------------------
 * Opt-out internals.  Not granted to anyone.
 * ------------------------------------------------------------------------ */

/*
 * Every identifier of the people behind ids: each number's forms, and the
 * numbers and business-scoped user ids that inbound messages showed
 * together with any of them.
 */
CREATE FUNCTION whatsapp._identities(ids text[])
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH f AS (
		SELECT DISTINCT x AS id
		  FROM pg_catalog.unnest($1) i,
			   pg_catalog.unnest(whatsapp._identity_forms(i)) x
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
 * Record an opt-out of every identifier of the person; returns how many
 * (identifier, scope) rows are new.  The consent log gets the identifiers
 * that changed, or all of them with p_always (explicit SQL calls), so that
 * Meta's retries of one event are not recorded twice.
 */
CREATE FUNCTION whatsapp._opt_out_apply(
	p_account_id integer, p_ids text[], p_scope text, p_source text,
	p_reason text DEFAULT NULL, p_wamid text DEFAULT NULL,
	p_always boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	all_ids text[] := whatsapp._identities(p_ids);
	n integer;
BEGIN
	IF all_ids IS NULL THEN
		RETURN 0;
	END IF;
	WITH ins AS (
		INSERT INTO whatsapp.opt_out (identifier, scope, source, reason, account_id)
		SELECT x, p_scope, p_source, p_reason, p_account_id
		  FROM unnest(all_ids) x
		ON CONFLICT (identifier, scope) DO NOTHING
		RETURNING identifier),
	c AS (
		INSERT INTO whatsapp.consent (identifier, action, scope, source, reason, account_id, wamid)
		SELECT x, 'opt_out', p_scope, p_source, p_reason, p_account_id, p_wamid
		  FROM unnest(all_ids) x
		 WHERE p_always OR x IN (SELECT identifier FROM ins))
	SELECT count(*) INTO n FROM ins;
	RETURN n;
END
$$;

/*
 * Lift the opt-outs of every identifier of the person: scope 'all' lifts
 * both scopes, 'marketing' only that one.  Returns the rows lifted.
 */
CREATE FUNCTION whatsapp._opt_in_apply(
	p_account_id integer, p_ids text[], p_scope text, p_source text,
	p_wamid text DEFAULT NULL, p_always boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	all_ids text[] := whatsapp._identities(p_ids);
	n integer;
BEGIN
	IF all_ids IS NULL THEN
		RETURN 0;
	END IF;
	WITH del AS (
		DELETE FROM whatsapp.opt_out o
		 WHERE o.identifier = ANY (all_ids)
		   AND (p_scope = 'all' OR o.scope = p_scope)
		RETURNING o.identifier),
	c AS (
		INSERT INTO whatsapp.consent (identifier, action, scope, source, account_id, wamid)
		SELECT x, 'opt_in', p_scope, p_source, p_account_id, p_wamid
		  FROM unnest(all_ids) x
		 WHERE p_always OR x IN (SELECT identifier FROM del))
	SELECT count(*) INTO n FROM del;
	RETURN n;
END
$$;

/*
 * Identifiers seen together (a number and a business-scoped user id in one
 * message, or an old and a new number): an opt-out of one extends to the
 * others.
 */
CREATE FUNCTION whatsapp._link_identities(p_account_id integer, p_ids text[],
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
	WITH ins AS (
		INSERT INTO whatsapp.opt_out (identifier, scope, source, reason, account_id)
		SELECT DISTINCT ON (x, o.scope) x, o.scope, p_source,
			   'same person as ' || o.identifier, p_account_id
		  FROM whatsapp.opt_out o, unnest(forms) x
		 WHERE o.identifier = ANY (forms)
		ON CONFLICT (identifier, scope) DO NOTHING
		RETURNING identifier, scope, reason)
	, c AS (
		INSERT INTO whatsapp.consent (identifier, action, scope, source, reason, account_id, wamid)
		SELECT identifier, 'opt_out', scope, p_source, reason, p_account_id, p_wamid FROM ins
		RETURNING 1)
	SELECT count(*) INTO n FROM c;
	RETURN n;
END
$$;

/* Keywords are stored folded; the extension's own rows stay as shipped. */
CREATE FUNCTION whatsapp._keywords_trigger()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.builtin THEN
		RAISE EXCEPTION 'keyword "%" comes with the whatsapp extension and cannot be changed', OLD.keyword
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Insert a row of your own for the same keyword: it overrides this one, and action ''none'' disables it.';
	END IF;
	IF TG_OP = 'DELETE' THEN
		RETURN OLD;
	END IF;
	NEW.builtin := false;
	NEW.keyword := whatsapp.fold_keyword(NEW.keyword);
	IF NEW.keyword IS NULL OR NEW.keyword = '' THEN
		RAISE EXCEPTION 'keyword is empty after folding'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A keyword needs letters or digits; case, accents and punctuation are ignored.';
	END IF;
	RETURN NEW;
END
$$;

/* Template rows: category in upper case, "-" in the language becomes "_". */
CREATE FUNCTION whatsapp._templates_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NEW.category := upper(NEW.category);
	NEW.language := replace(NEW.language, '-', '_');
	NEW.updated_at := now();
	RETURN NEW;
END
$$;

INSERT INTO whatsapp.keywords (keyword, action, scope, language, builtin) VALUES
	('stop', 'stop', 'all', 'en', true),
	('unsubscribe', 'stop', 'all', 'en', true),
	('stop promotions', 'stop', 'marketing', 'en', true),
	('baja', 'stop', 'all', 'es', true),
	('darme de baja', 'stop', 'all', 'es', true),
	('alto', 'stop', 'all', 'es', true),
	('parar', 'stop', 'all', 'es pt', true),
	('detener', 'stop', 'all', 'es', true),
	('cancelar suscripcion', 'stop', 'all', 'es', true),
	('sair', 'stop', 'all', 'pt', true),
	('descadastrar', 'stop', 'all', 'pt', true),
	('cancelar inscricao', 'stop', 'all', 'pt', true),
	('start', 'start', 'all', 'en', true),
	('unstop', 'start', 'all', 'en', true),
	('resume promotions', 'start', 'marketing', 'en', true),
	('alta', 'start', 'all', 'es', true),
	('darme de alta', 'start', 'all', 'es', true),
	('reanudar', 'start', 'all', 'es', true),
	('voltar', 'start', 'all', 'pt', true),
	('cadastrar', 'start', 'all', 'pt', true);

CREATE TRIGGER keywords_fold BEFORE INSERT OR UPDATE OR DELETE ON whatsapp.keywords
	FOR EACH ROW EXECUTE FUNCTION whatsapp._keywords_trigger();
CREATE TRIGGER templates_normalize BEFORE INSERT OR UPDATE ON whatsapp.templates
	FOR EACH ROW EXECUTE FUNCTION whatsapp._templates_trigger();

/* ------------------------------------------------------------------------
 * Webhook functions (whatsapp_sender; the application's endpoint calls them)
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp.wa_verify_webhook(mode text, verify_token text, challenge text)
RETURNS text
AS 'MODULE_PATHNAME', 'wa_verify_webhook'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION whatsapp.wa_receive(payload text, signature text)
RETURNS integer
AS 'MODULE_PATHNAME', 'wa_receive'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

/* ------------------------------------------------------------------------
 * Opt-out (whatsapp_sender) and opt-in (whatsapp_admin)
 * ------------------------------------------------------------------------ */
CREATE FUNCTION whatsapp._check_consent_args(phone text, scope text)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	forms text[];
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
		RAISE EXCEPTION '% is neither a phone number that can be made E.164 nor a business-scoped user id', quote_literal(phone)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Write the number with its country code, such as ''+52 55 1234 5678'', or set whatsapp.default_country_code for national numbers.';
	END IF;
	RETURN forms;
END
$$;

CREATE FUNCTION whatsapp.wa_opt_out(phone text, scope text DEFAULT 'all', reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	forms text[] := whatsapp._check_consent_args(wa_opt_out.phone, wa_opt_out.scope);
BEGIN
	RETURN whatsapp._opt_out_apply(NULL, forms, wa_opt_out.scope, 'wa_opt_out',
								   wa_opt_out.reason, NULL, true) > 0;
END
$$;

CREATE FUNCTION whatsapp.wa_opt_in(phone text, scope text DEFAULT 'all')
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	forms text[] := whatsapp._check_consent_args(wa_opt_in.phone, wa_opt_in.scope);
BEGIN
	RETURN whatsapp._opt_in_apply(NULL, forms, wa_opt_in.scope, 'wa_opt_in', NULL, true) > 0;
END
$$;

/* ------------------------------------------------------------------------
 * Views (whatsapp_reader)
 * ------------------------------------------------------------------------ */
CREATE VIEW whatsapp.inbound AS
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
	   i.raw
  FROM whatsapp.inbound_message i
  LEFT JOIN whatsapp.account a ON a.id = i.account_id;

/*
 * The customer-service window: 24 hours from the last message a customer
 * sent to an account.  Only customers open it; templates and Coexistence
 * echoes do not.
 */
CREATE VIEW whatsapp.windows AS
SELECT a.name AS account,
	   w.recipient,
	   w.wa_id,
	   w.user_id,
	   w.last_inbound_at,
	   w.last_inbound_at + interval '24 hours' AS open_until,
	   w.last_inbound_at + interval '24 hours' > pg_catalog.now() AS open
  FROM (SELECT i.account_id,
			   i.phone AS recipient,
			   (pg_catalog.array_agg(i.wa_id ORDER BY i.sent_at DESC))[1] AS wa_id,
			   (pg_catalog.array_agg(i.user_id ORDER BY i.sent_at DESC)
				  FILTER (WHERE i.user_id IS NOT NULL))[1] AS user_id,
			   pg_catalog.max(i.sent_at) AS last_inbound_at
		  FROM whatsapp.inbound_message i
		 GROUP BY i.account_id, i.phone, CASE WHEN i.phone IS NULL THEN i.user_id END) w
  LEFT JOIN whatsapp.account a ON a.id = w.account_id;

CREATE VIEW whatsapp.consents AS
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
		 WHERE o.identifier = c.identifier) AS opted_out_now
  FROM whatsapp.consent c
  LEFT JOIN whatsapp.account a ON a.id = c.account_id;

CREATE VIEW whatsapp.webhooks AS
SELECT w.id,
	   w.received_at,
	   a.name AS account,
	   w.applied,
	   w.ignored,
	   w.payload
  FROM whatsapp.webhook w
  LEFT JOIN whatsapp.account a ON a.id = w.account_id;

/* ========================================================================
 * Odoo
 *
 * Messages from triggers on Odoo's own tables (src/odoo.c).  An admin
 * enables an event with wa_odoo_enable(): that stores a rule in
 * whatsapp.odoo_rule and puts two constraint triggers, DEFERRABLE
 * INITIALLY DEFERRED, on public.sale_order or public.account_move.  Their
 * WHEN clauses queue an event only when a row enters the event's state;
 * the events fire at commit, where the trigger reads the document as it
 * stands then (Odoo's ORM writes a record in several UPDATEs) and records
 * one message per document and event: queued, or failed with the reason.
 * The triggers never raise into Odoo's transaction because of data or
 * configuration, use no subtransaction and never write to Odoo's tables.
 *
 * The triggers are not members of the extension (PostgreSQL cannot make
 * them so): a plain DROP EXTENSION refuses while any is installed, and
 * DROP EXTENSION ... CASCADE removes them with the extension, leaving
 * Odoo's tables as they were.
 * ======================================================================== */

/*
 * One row per event and company; company_id NULL is the rule for every
 * company without its own.  account is an account name: a NULL account
 * given to wa_odoo_enable is stored as the default account's name.
 */
CREATE SEQUENCE whatsapp.odoo_rule_id_seq AS integer;

CREATE TABLE whatsapp.odoo_rule (
	id				integer NOT NULL DEFAULT pg_catalog.nextval('whatsapp.odoo_rule_id_seq'::pg_catalog.regclass),
	event			text NOT NULL,
	company_id		integer,		/* res_company.id; NULL: every company */
	template		text NOT NULL,
	language		text,			/* NULL: the partner's */
	account			text NOT NULL,
	params			jsonb,			/* NULL: partner_name, document_name, amount_total */
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_by		text NOT NULL DEFAULT session_user,
	CONSTRAINT odoo_rule_pkey PRIMARY KEY (id),
	CONSTRAINT odoo_rule_event_check CHECK (event IN
		('sale_order_confirmed', 'invoice_posted', 'refund_posted', 'invoice_sent'))
);
ALTER SEQUENCE whatsapp.odoo_rule_id_seq OWNED BY whatsapp.odoo_rule.id;
CREATE UNIQUE INDEX odoo_rule_company_key ON whatsapp.odoo_rule (event, company_id)
	WHERE company_id IS NOT NULL;
CREATE UNIQUE INDEX odoo_rule_all_key ON whatsapp.odoo_rule (event)
	WHERE company_id IS NULL;

SELECT pg_catalog.pg_extension_config_dump('whatsapp.odoo_rule', '');
SELECT pg_catalog.pg_extension_config_dump('whatsapp.odoo_rule_id_seq', '');

/* The trigger function (C), and helpers the tests call directly. */
CREATE FUNCTION whatsapp._odoo_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'wa_odoo_trigger'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION whatsapp._odoo_format_amount(
	amount numeric, decimal_places integer, rounding numeric,
	decimal_point text, thousands_sep text, "grouping" text,
	symbol text, "position" text)
RETURNS text
AS 'MODULE_PATHNAME', 'wa_odoo_format_amount'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION whatsapp._odoo_clean(value text)
RETURNS text
AS 'MODULE_PATHNAME', 'wa_odoo_clean'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION whatsapp._odoo_format_date(value timestamp, date_format text)
RETURNS text
AS 'MODULE_PATHNAME', 'wa_odoo_format_date'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

/* The Odoo table of an event; raises 22023 for anything else. */
CREATE FUNCTION whatsapp._odoo_table(event text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	CASE event
	WHEN 'sale_order_confirmed' THEN
		RETURN 'sale_order';
	WHEN 'invoice_posted', 'refund_posted', 'invoice_sent' THEN
		RETURN 'account_move';
	ELSE
		RAISE EXCEPTION '% is not an Odoo event', coalesce(quote_literal(event), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The events are sale_order_confirmed, invoice_posted, refund_posted and invoice_sent.';
	END CASE;
END
$$;

/*
 * An event's condition on a row (NEW or OLD): the state the document
 * enters.  The trigger checks it again at commit.
 */
CREATE FUNCTION whatsapp._odoo_condition(event text, r text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE $1
		WHEN 'sale_order_confirmed' THEN
			format('%s.state IN (''sale'', ''done'')', $2)
		WHEN 'invoice_posted' THEN
			format('(%1$s.move_type = ''out_invoice'' AND %1$s.state = ''posted'')', $2)
		WHEN 'refund_posted' THEN
			format('(%1$s.move_type = ''out_refund'' AND %1$s.state = ''posted'')', $2)
		WHEN 'invoice_sent' THEN
			format('(%1$s.move_type = ''out_invoice'' AND %1$s.state = ''posted'' AND %1$s.is_move_sent)', $2)
	END
$$;

/*
 * Check that this is an Odoo database with what the event's triggers read,
 * naming the first table or column that is missing.
 */
CREATE FUNCTION whatsapp._odoo_check_schema(event text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tbl text := whatsapp._odoo_table(event);
	t text;
	c text;
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

/* Vocabulary words of params for an event; raises 22023 for the others. */
CREATE FUNCTION whatsapp._odoo_check_words(event text, words jsonb, what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	known text[] := ARRAY['partner_name', 'commercial_partner_name', 'document_name',
						  'amount_total', 'amount_residual', 'invoice_date_due',
						  'client_order_ref', 'company_name', 'portal_url'];
	w jsonb;
BEGIN
	FOR w IN SELECT x FROM jsonb_array_elements(CASE jsonb_typeof(words) WHEN 'array' THEN words
												ELSE jsonb_build_array(words) END) x
	LOOP
		IF jsonb_typeof(w) <> 'string' OR NOT (w #>> '{}') = ANY (known) THEN
			RAISE EXCEPTION '% of params: % is not a parameter word', what, w::text
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'The words are ' || array_to_string(known, ', ') || '.';
		END IF;
		IF (w #>> '{}') IN ('amount_residual', 'invoice_date_due') AND event = 'sale_order_confirmed' THEN
			RAISE EXCEPTION '% of params: % is not available for sale orders', what, w::text
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'amount_residual and invoice_date_due are for the invoice and refund events.';
		END IF;
	END LOOP;
END
$$;

CREATE FUNCTION whatsapp.wa_odoo_enable(
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
		EXECUTE 'SELECT EXISTS (SELECT 1 FROM public.res_company c WHERE c.id = $1)'
		   INTO found_company USING wa_odoo_enable.company_id;
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

CREATE FUNCTION whatsapp.wa_odoo_disable(event text, company_id integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ev text := wa_odoo_disable.event;
	tbl text := whatsapp._odoo_table(ev);
	op text;
	trg text;
BEGIN
	DELETE FROM whatsapp.odoo_rule r
	 WHERE r.event = ev AND r.company_id IS NOT DISTINCT FROM wa_odoo_disable.company_id;
	IF NOT FOUND THEN
		RAISE NOTICE 'event % was not enabled%', ev,
			CASE WHEN wa_odoo_disable.company_id IS NULL THEN ' for all companies'
				 ELSE format(' for company %s', wa_odoo_disable.company_id) END;
	END IF;
	/* Its triggers go when no company has a rule for the event any more. */
	IF NOT EXISTS (SELECT 1 FROM whatsapp.odoo_rule r WHERE r.event = ev)
	   AND to_regclass(format('public.%I', tbl)) IS NOT NULL THEN
		FOREACH op IN ARRAY ARRAY['insert', 'update']
		LOOP
			trg := format('whatsapp_%s_%s', ev, op);
			IF EXISTS (SELECT 1 FROM pg_trigger t
						WHERE t.tgrelid = format('public.%I', tbl)::regclass
						  AND t.tgname = trg) THEN
				EXECUTE format('DROP TRIGGER %I ON public.%I', trg, tbl);
			END IF;
		END LOOP;
	END IF;
END
$$;

CREATE FUNCTION whatsapp.wa_odoo_preview(event text, record_id integer)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'wa_odoo_preview'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

/* The rules, and whether their triggers are in place (whatsapp_admin). */
CREATE VIEW whatsapp.odoo_rules AS
SELECT r.event,
	   r.company_id,
	   r.template,
	   r.language,
	   r.account,
	   r.params,
	   (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger t
		 WHERE t.tgrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(CASE r.event
				 WHEN 'sale_order_confirmed' THEN 'public.sale_order'
				 ELSE 'public.account_move' END)
		   AND t.tgname IN ('whatsapp_' OPERATOR(pg_catalog.||) r.event OPERATOR(pg_catalog.||) '_insert',
							'whatsapp_' OPERATOR(pg_catalog.||) r.event OPERATOR(pg_catalog.||) '_update'))
		 OPERATOR(pg_catalog.=) 2 AS triggers_installed,
	   r.created_at,
	   r.updated_at,
	   r.updated_by
  FROM whatsapp.odoo_rule r;

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

/* Webhooks, opt-out, window */
GRANT EXECUTE ON FUNCTION
	whatsapp.wa_verify_webhook(text, text, text),
	whatsapp.wa_receive(text, text),
	whatsapp.wa_opt_out(text, text, text)
	TO whatsapp_sender;
GRANT EXECUTE ON FUNCTION
	whatsapp.wa_opt_in(text, text),
	whatsapp.fold_keyword(text)
	TO whatsapp_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON whatsapp.templates, whatsapp.keywords
	TO whatsapp_admin;
GRANT EXECUTE ON FUNCTION whatsapp.fold_keyword(text) TO whatsapp_reader;
GRANT SELECT ON whatsapp.inbound, whatsapp.windows, whatsapp.consents,
	whatsapp.webhooks, whatsapp.templates, whatsapp.keywords
	TO whatsapp_reader;

/* Odoo */
GRANT EXECUTE ON FUNCTION
	whatsapp.wa_odoo_enable(text, text, text, text, jsonb, integer),
	whatsapp.wa_odoo_disable(text, integer),
	whatsapp.wa_odoo_preview(text, integer)
	TO whatsapp_admin;
GRANT SELECT ON whatsapp.odoo_rules TO whatsapp_admin;
