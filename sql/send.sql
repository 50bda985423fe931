-- Sending: wa_send, wa_send_template, wa_send_message, wa_cancel, wa_retry.
-- No worker serves this database, so messages stay where enqueue put them.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS whatsapp;
CREATE EXTENSION whatsapp CASCADE;
RESET client_min_messages;

-- No account yet: the caller's mistake is an error.
SELECT whatsapp.wa_send('+525512345678', 'hola');

SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAsend-regress-token');
SELECT whatsapp.wa_account_set('second', '1099887767', 'EAAsend-regress-token-2');

-- The warning about the missing worker comes once per session.
SELECT whatsapp.wa_send('+525512345678', 'hola') > 0 AS queued;
SELECT whatsapp.wa_send('+525512345679', 'hola otra vez') > 0 AS queued_no_warning;

-- Every kind of message, and what is stored for the worker.
SELECT whatsapp.wa_send('+52 55 1234-5678', 'Su pedido está listo',
						account => 'second',
						context => '{"model": "sale.order", "res_id": 42}') AS id \gset
SELECT account, recipient, kind, state, attempts, payload, context
  FROM whatsapp.messages WHERE id = :id;

SELECT whatsapp.wa_send_template('+55 11 91234-5678', 'order_confirmation', 'pt-BR',
								 '["Ana", "S00042"]') AS id \gset
SELECT kind, payload FROM whatsapp.messages WHERE id = :id;

SELECT whatsapp.wa_send_template('+34 612 345 678', 'invoice_ready', 'es',
								 '{"customer_name": "Ana", "amount": "1.234,50 €"}') AS id \gset
SELECT payload FROM whatsapp.messages WHERE id = :id;

SELECT whatsapp.wa_send_template('+49 151 23456789', 'invoice_ready', 'de',
	'[{"type": "header", "parameters": [{"type": "document", "document": {"link": "https://example.com/inv.pdf"}}]},
	  {"type": "body", "parameters": [{"type": "text", "text": "Anna"}]}]') AS id \gset
SELECT payload FROM whatsapp.messages WHERE id = :id;

SELECT whatsapp.wa_send_template('+39 06 1234 5678', 'hello_world', 'en_US', '[]') AS id \gset
SELECT payload FROM whatsapp.messages WHERE id = :id;
SELECT whatsapp.wa_send_template('+39 06 1234 5678', 'hello_world', 'en_US', '{}') AS id \gset
SELECT payload FROM whatsapp.messages WHERE id = :id;

SELECT whatsapp.wa_send_message('+56 9 1234 5678',
	'{"type": "document", "document": {"link": "https://example.com/inv.pdf", "filename": "INV-1.pdf"}}') AS id \gset
SELECT kind, payload FROM whatsapp.messages WHERE id = :id;

-- dedupe_key: the second call returns the first id and queues nothing.
SELECT whatsapp.wa_send('+573001234567', 'factura', dedupe_key => 'account.move:42:invoice_posted') AS first \gset
SELECT whatsapp.wa_send('+573001234567', 'factura otra vez', dedupe_key => 'account.move:42:invoice_posted') = :first AS same_id;
SELECT count(*) FROM whatsapp.messages WHERE dedupe_key = 'account.move:42:invoice_posted';
-- the key is per account
SELECT whatsapp.wa_send('+573001234567', 'factura', account => 'second',
						dedupe_key => 'account.move:42:invoice_posted') <> :first AS other_account_other_id;

-- Transactional: nothing survives a rolled-back transaction or savepoint.
BEGIN;
SELECT whatsapp.wa_send('+525500000001', 'rolled back') AS rolled_back \gset
ROLLBACK;
SELECT count(*) FROM whatsapp.messages WHERE id = :rolled_back;
BEGIN;
SAVEPOINT s;
SELECT whatsapp.wa_send('+525500000002', 'savepoint rolled back') AS sp \gset
ROLLBACK TO SAVEPOINT s;
SELECT whatsapp.wa_send('+525500000003', 'kept') AS kept \gset
COMMIT;
SELECT count(*) FILTER (WHERE id = :sp) AS from_savepoint,
	   count(*) FILTER (WHERE id = :kept) AS kept
  FROM whatsapp.messages;
-- A rolled-back dedupe key is free again.
BEGIN;
SELECT whatsapp.wa_send('+525500000004', 'x', dedupe_key => 'rolled-back-key') IS NOT NULL;
ROLLBACK;
SELECT whatsapp.wa_send('+525500000004', 'x', dedupe_key => 'rolled-back-key') > :kept AS new_id;

-- A recipient's problem never aborts the caller: recorded, never sent.
SELECT whatsapp.wa_send('555-1234', 'no country code') AS bad \gset
SELECT recipient, state, failure_type, failed_at IS NOT NULL AS has_failed_at
  FROM whatsapp.messages WHERE id = :bad;
SELECT whatsapp.wa_send(NULL, 'no recipient') AS bad \gset
SELECT recipient, state, failure_type FROM whatsapp.messages WHERE id = :bad;
SET whatsapp.default_country_code = '52';
SELECT whatsapp.wa_send('55 1234 5678', 'national number, default country code') AS id \gset
SELECT recipient, state FROM whatsapp.messages WHERE id = :id;
RESET whatsapp.default_country_code;

-- wa_cancel and wa_retry
SELECT whatsapp.wa_send('+525511112222', 'to cancel') AS c \gset
SELECT whatsapp.wa_cancel(:c) AS cancelled, whatsapp.wa_cancel(:c) AS again;
SELECT state FROM whatsapp.messages WHERE id = :c;
SELECT whatsapp.wa_retry(:c) AS retry_cancelled;
SELECT whatsapp.wa_retry(:bad) AS retry_phone_invalid;
SELECT whatsapp.wa_cancel(-1) AS cancel_missing, whatsapp.wa_retry(-1) AS retry_missing;
SELECT whatsapp.wa_cancel(NULL) IS NULL AS cancel_null;
-- a failed message (as the worker would record it) can be retried
UPDATE whatsapp.message SET state = 'failed', failure_type = 'network', attempts = 10,
	   failed_at = now(), error_title = 'timeout'
 WHERE id = :kept;
SELECT whatsapp.wa_retry(:kept) AS retried;
SELECT state, attempts, failure_type, error_title, failed_at FROM whatsapp.messages WHERE id = :kept;
SELECT event, message LIKE 'cancelled by %' AS says_who FROM whatsapp.wa_log(:c) ORDER BY at;

-- Every bad input tried, and what each gets: SQLSTATE and message.
SELECT max(id) AS before_bad FROM whatsapp.message \gset
CREATE TEMP TABLE bad_input (n serial, call text);
INSERT INTO bad_input (call) VALUES
	($$whatsapp.wa_send('+525512345678', NULL)$$),
	($$whatsapp.wa_send('+525512345678', '')$$),
	($$whatsapp.wa_send('+525512345678', repeat('x', 4097))$$),
	($$whatsapp.wa_send('+525512345678', 'hola', account => 'nope')$$),
	($$whatsapp.wa_send('+525512345678', 'hola', account => '')$$),
	($$whatsapp.wa_send('+525512345678', 'hola', dedupe_key => '')$$),
	($$whatsapp.wa_send('+525512345678', 'hola', dedupe_key => repeat('k', 513))$$),
	($$whatsapp.wa_send_template('+525512345678', NULL, 'es')$$),
	($$whatsapp.wa_send_template('+525512345678', '', 'es')$$),
	($$whatsapp.wa_send_template('+525512345678', 'Order Confirmation', 'es')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', NULL)$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'spanish')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es_MX_x')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es', '"Ana"')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es', '42')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es', '["Ana", 42]')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es', '[["Ana"]]')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es', '{"name": 1}')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es', '[{"parameters": []}]')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es', '[{"type": "body"}, "Ana"]')$$),
	($$whatsapp.wa_send_template('+525512345678', 'order', 'es', '{"a": {"b": "c"}}')$$),
	($$whatsapp.wa_send_message('+525512345678', NULL)$$),
	($$whatsapp.wa_send_message('+525512345678', '[]')$$),
	($$whatsapp.wa_send_message('+525512345678', '{"image": {"link": "https://x"}}')$$),
	($$whatsapp.wa_send_message('+525512345678', '{"type": "image"}')$$),
	($$whatsapp.wa_send_message('+525512345678', '{"type": "image", "image": "https://x"}')$$),
	($$whatsapp.wa_send_message('+525512345678', '{"type": "text", "text": {"body": ""}}')$$),
	($$whatsapp.wa_send_message('+525512345678', '{"type": "text", "text": {}}')$$),
	($$whatsapp.wa_send_message('+525512345678', '{"type": "image", "image": {"link": "https://x"}, "to": "+1555"}')$$),
	($$whatsapp.wa_send_message('+525512345678', '{"type": "image", "image": {"link": "https://x"}, "biz_opaque_callback_data": "x"}')$$),
	($$whatsapp.wa_send_message('+525512345678', '{"type": "image", "image": {"link": "https://x"}, "messaging_product": "whatsapp"}')$$);

CREATE TEMP TABLE bad_result (n int, call text, sqlstate text, message text);
DO $$
DECLARE
	b record;
	st text;
	msg text;
BEGIN
	FOR b IN SELECT * FROM bad_input ORDER BY n LOOP
		BEGIN
			EXECUTE 'SELECT ' || b.call;
			st := 'no error';
			msg := NULL;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
		END;
		INSERT INTO bad_result VALUES (b.n, left(b.call, 90), st, msg);
	END LOOP;
END
$$;
SELECT n, call, sqlstate, message FROM bad_result ORDER BY n;

-- None of those left a message behind.
SELECT count(*) AS messages_from_bad_calls FROM whatsapp.messages WHERE id > :before_bad;

-- Without a default account.
SELECT whatsapp.wa_account_drop('main');
SELECT whatsapp.wa_send('+525512345678', 'hola');
SELECT whatsapp.wa_send('+525512345678', 'hola', account => 'second') > 0 AS named_still_works;
-- the dropped account's queued messages failed with "account"
SELECT state, failure_type, count(*) FROM whatsapp.messages
 WHERE account IS NOT DISTINCT FROM 'main' GROUP BY 1, 2 ORDER BY 1, 2;

-- The outbox's CHECK constraints (C functions since 0.2) still hold: every
-- state and failure type of the states table passes, others and the empty
-- string do not, NULL failure_type passes.
SELECT s, whatsapp._message_state_valid(s) AS state_ok
  FROM unnest(ARRAY['queued', 'sending', 'sent', 'delivered', 'read', 'failed',
                    'cancelled', 'blocked', 'Queued', 'queue', 'queued ', '', 'pending']) s;
SELECT f, whatsapp._failure_type_valid(f) AS failure_type_ok
  FROM unnest(ARRAY['phone_invalid', 'opted_out', 'account', 'template',
                    'whatsapp_recoverable', 'whatsapp_unrecoverable', 'network',
                    'Network', 'other', NULL]) f;
\set VERBOSITY terse
UPDATE whatsapp.message SET state = 'pending'
 WHERE id = (SELECT min(id) FROM whatsapp.message);
UPDATE whatsapp.message SET failure_type = 'other'
 WHERE id = (SELECT min(id) FROM whatsapp.message);
\set VERBOSITY default
SELECT pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = 'whatsapp.message'::regclass AND contype = 'c' ORDER BY conname;

-- ---------------------------------------------------------------------
-- Whose messages.  Each message records the role that queued it
-- (queued_by): the current_user of the call.  A sender acts only on the
-- messages of roles whose privileges it has; members of whatsapp_admin
-- and superusers act on all.  A dedupe_key taken by another role's
-- message does not give its id away.
-- ---------------------------------------------------------------------
-- Run a statement; show "ok" or its SQLSTATE, message and detail, with
-- message ids as N.
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'message \d+', 'message N')
		   || coalesce(E'\n' || detail, '');
END
$$;

CREATE ROLE wa_regress_shop_a NOLOGIN IN ROLE whatsapp_sender;
CREATE ROLE wa_regress_shop_b NOLOGIN IN ROLE whatsapp_sender;
CREATE ROLE wa_regress_clerk NOLOGIN IN ROLE wa_regress_shop_a;
CREATE ROLE wa_regress_boss NOLOGIN IN ROLE whatsapp_admin, whatsapp_sender;
CREATE ROLE wa_regress_web NOLOGIN;

-- the superuser's own messages so far are its own
SELECT count(*) FILTER (WHERE queued_by = current_user) AS mine,
	   count(*) FILTER (WHERE queued_by IS DISTINCT FROM current_user) AS others
  FROM whatsapp.messages;

SET ROLE wa_regress_shop_a;
SELECT whatsapp.wa_send('+525511113333', 'de la tienda A', account => 'second',
						dedupe_key => 'shop:order:1') AS a1 \gset
SELECT whatsapp.wa_send('+525511113333', 'otra vez', account => 'second',
						dedupe_key => 'shop:order:1') = :a1 AS a_gets_its_own_id;
SELECT whatsapp.wa_send('+525511113334', 'de A, para fallar', account => 'second') AS a2 \gset

SET ROLE wa_regress_shop_b;
-- The key is taken by A's message: B gets 42501, and no id.
SELECT pg_temp.try($$SELECT whatsapp.wa_send('+525511113333', 'de la tienda B',
	account => 'second', dedupe_key => 'shop:order:1')$$) AS b_same_key;
-- A's messages are not B's to cancel or retry; a missing id is just false.
SELECT pg_temp.try('SELECT whatsapp.wa_cancel(' || :a1 || ')') AS b_cancels_a;
SELECT pg_temp.try('SELECT whatsapp.wa_retry(' || :a1 || ')') AS b_retries_a;
SELECT whatsapp.wa_cancel(-1) AS cancel_missing;
SELECT whatsapp.wa_send('+525511113335', 'de B', account => 'second') AS b1 \gset
SELECT whatsapp.wa_cancel(:b1) AS b_cancels_its_own;

-- A role with A's privileges (a member of it) acts as A.
SET ROLE wa_regress_clerk;
SELECT whatsapp.wa_send('+525511113333', 'del empleado', account => 'second',
						dedupe_key => 'shop:order:1') = :a1 AS clerk_gets_a_id;
SELECT whatsapp.wa_cancel(:a1) AS clerk_cancels_a;
RESET ROLE;

-- An admin acts on every message.
UPDATE whatsapp.message SET state = 'failed', failure_type = 'network', failed_at = now()
 WHERE id = :a2;
SET ROLE wa_regress_boss;
SELECT whatsapp.wa_send('+525511113333', 'del jefe', account => 'second',
						dedupe_key => 'shop:order:1') = :a1 AS admin_gets_a_id;
SELECT whatsapp.wa_retry(:a2) AS admin_retries_a;
SELECT whatsapp.wa_cancel(:a2) AS admin_cancels_a;
RESET ROLE;
-- the log names the session's user and the role that acted
SELECT event, replace(message, session_user, '<session user>') AS message
  FROM whatsapp.wa_log(:a2) ORDER BY at, event;

-- Called from a SECURITY DEFINER function, wa_send queues as the
-- function's owner: the role whose right to send was used.
CREATE FUNCTION public.wa_regress_notify(phone text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
AS $$ SELECT whatsapp.wa_send(phone, 'por la función de A', account => 'second') $$;
ALTER FUNCTION public.wa_regress_notify(text) OWNER TO wa_regress_shop_a;
REVOKE ALL ON FUNCTION public.wa_regress_notify(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.wa_regress_notify(text) TO wa_regress_web;
SET ROLE wa_regress_web;
SELECT public.wa_regress_notify('+525511113336') AS f1 \gset
SET ROLE wa_regress_shop_a;
SELECT whatsapp.wa_cancel(:f1) AS a_cancels_what_its_function_queued;
RESET ROLE;

SELECT id = :a1 AS a1, id = :a2 AS a2, id = :b1 AS b1, id = :f1 AS f1,
	   queued_by, state
  FROM whatsapp.messages WHERE id IN (:a1, :a2, :b1, :f1) ORDER BY id;

-- A message with no recorded role (queued before 0.3) is for admins only;
-- so are the messages of a role that was renamed.
UPDATE whatsapp.message SET queued_by = NULL, state = 'queued' WHERE id = :a1;
SET ROLE wa_regress_shop_a;
SELECT pg_temp.try('SELECT whatsapp.wa_cancel(' || :a1 || ')') AS a_cancels_legacy;
SET ROLE wa_regress_shop_b;
SELECT pg_temp.try($$SELECT whatsapp.wa_send('+525511113333', 'de B',
	account => 'second', dedupe_key => 'shop:order:1')$$) AS b_same_key_legacy;
RESET ROLE;
ALTER ROLE wa_regress_shop_b RENAME TO wa_regress_shop_b2;
UPDATE whatsapp.message SET state = 'queued' WHERE id = :b1;
SET ROLE wa_regress_shop_b2;
SELECT pg_temp.try('SELECT whatsapp.wa_cancel(' || :b1 || ')') AS b_cancels_after_rename;
SET ROLE wa_regress_boss;
SELECT whatsapp.wa_cancel(:a1) AS admin_cancels_legacy,
	   whatsapp.wa_cancel(:b1) AS admin_cancels_renamed;
RESET ROLE;

DROP FUNCTION public.wa_regress_notify(text);
DROP ROLE wa_regress_shop_a, wa_regress_shop_b2, wa_regress_clerk, wa_regress_boss,
	wa_regress_web;
