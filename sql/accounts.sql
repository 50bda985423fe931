--
-- Accounts: wa_account_set, wa_account_drop, wa_rotate_key, wa_rebind, and
-- the accounts view.  Key ids and times are random, so only their shape
-- and their changes are shown.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS whatsapp CASCADE;
RESET client_min_messages;

-- The key file's keys before this test: a server that "make installcheck"
-- runs against may have one already.
SELECT count(*) AS keys_before
  FROM regexp_split_to_table(coalesce(pg_read_file('whatsapp.key', 0, 1048576, true), ''), E'\n') AS l
 WHERE l ~ '^[0-9a-f]{64}$' \gset

-- Run a statement; show "ok" or its SQLSTATE and message.
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- The same, with the error's detail.
CREATE FUNCTION pg_temp.try_detail(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || E'\n' || detail;
END
$$;

-- ---------------------------------------------------------------------
-- Bad input to wa_account_set: each is refused with its SQLSTATE, and no
-- message shows the value.
-- ---------------------------------------------------------------------
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set(NULL, '1', 'tok-secret')$$) AS null_name;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('', '1', 'tok-secret')$$) AS empty_name;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set(repeat('n', 64), '1', 'tok-secret')$$) AS long_name;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', NULL, 'tok-secret')$$) AS null_phone_id;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '', 'tok-secret')$$) AS empty_phone_id;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '12a4', 'tok-secret')$$) AS letters_phone_id;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '+5215512345678', 'tok-secret')$$) AS phone_number_as_id;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', 'tok-secret', waba_id => 'waba')$$) AS bad_waba_id;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', 'tok-secret', waba_id => '')$$) AS empty_waba_id;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', 'tok-secret', max_mps => NULL)$$) AS null_max_mps;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', 'tok-secret', max_mps => 0)$$) AS zero_max_mps;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', 'tok-secret', max_mps => 100001)$$) AS huge_max_mps;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', NULL)$$) AS new_account_null_token;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', repeat('x', 4097))$$) AS long_token;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', 'tok-secret', app_secret => repeat('x', 4097))$$) AS long_app_secret;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', E'tok-secret\n')$$) AS newline_token;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', 'tok-secret', app_secret => E'app\tsecret')$$) AS tab_app_secret;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set('a', '1', 'tok-secret', verify_token => 'verify' || chr(127))$$) AS del_verify_token;
-- nothing was created
SELECT count(*) AS accounts FROM whatsapp.account;

-- With the library preloaded, an error raised before the function runs
-- does not quote the call's values either.
SELECT whatsapp.wa_account_set('a', '1', 'EAAtoken-a-1', max_mps => 'EAAtoken-a-1');

-- Bad input to wa_account_drop.
SELECT pg_temp.try($$SELECT whatsapp.wa_account_drop(NULL)$$) AS drop_null;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_drop('nope')$$) AS drop_missing;

-- Limits are inclusive.
SELECT pg_temp.try($$SELECT whatsapp.wa_account_set(repeat('n', 63), '1', repeat('x', 4096), max_mps => 100000)$$) AS at_limits;
SELECT whatsapp.wa_account_drop(repeat('n', 63));

-- ---------------------------------------------------------------------
-- Creating accounts
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_account_set('main', '106540352242922', 'EAAtoken-main-1',
							   'appsecret-main-1', 'verify-main-1',
							   '102290129340398', 80);
SELECT whatsapp.wa_account_set('second', '200', 'EAAtoken-second-1',
							   max_mps => 1000);

-- The first live account is the default; the view shows whether each
-- secret is set, and a key id, never a secret.
SELECT name, phone_number_id, waba_id, max_mps, is_default,
	   has_access_token, has_app_secret, has_verify_token,
	   key_id ~ '^[0-9a-f]{16}$' AS key_id_shape, paused
  FROM whatsapp.accounts ORDER BY name;
SELECT count(*) AS secret_columns_in_view
  FROM information_schema.columns
 WHERE table_schema = 'whatsapp' AND table_name = 'accounts'
   AND (column_name IN ('access_token', 'app_secret', 'verify_token')
		OR data_type = 'bytea');

-- The ciphertexts hold no plaintext, differ per field and per account,
-- and each carries the key id of the key file's current key.
SELECT name,
	   position(convert_to('EAAtoken-' || name || '-1', 'UTF8') IN access_token) = 0 AS token_not_in_clear,
	   position(convert_to('appsecret-main-1', 'UTF8') IN coalesce(app_secret, '')) = 0 AS app_secret_not_in_clear,
	   access_token IS DISTINCT FROM app_secret AS fields_differ,
	   access_token_key = coalesce(app_secret_key, access_token_key) AS one_key
  FROM whatsapp.account WHERE dropped_at IS NULL ORDER BY name;
SELECT count(DISTINCT access_token) AS distinct_ciphertexts,
	   count(DISTINCT access_token_key) AS distinct_key_ids
  FROM whatsapp.account WHERE dropped_at IS NULL;

-- The key file was created in the data directory, with one key (or, on a
-- server that had one, used as it was).
SELECT count(*) AS keys_now
  FROM regexp_split_to_table(pg_read_file('whatsapp.key'), E'\n') AS l
 WHERE l ~ '^[0-9a-f]{64}$' \gset
SELECT :keys_now = greatest(:keys_before, 1) AS key_file_ready;

-- Setting an existing name updates it: no second row.
SELECT whatsapp.wa_account_set('main', '106540352242922', 'EAAtoken-main-1',
							   'appsecret-main-1', 'verify-main-1',
							   '102290129340398', 80);
SELECT count(*) AS main_rows FROM whatsapp.account WHERE name = 'main';

-- ---------------------------------------------------------------------
-- NULL keeps a secret, '' removes it; an update resumes a paused account
-- ---------------------------------------------------------------------
CREATE TEMP TABLE before AS
SELECT name, access_token, app_secret, verify_token FROM whatsapp.account;
UPDATE whatsapp.account
   SET paused_kind = 'token', paused_reason = 'token rejected',
	   paused_at = now(), backoff_until = now() + interval '1 hour'
 WHERE name = 'main';
SELECT name, paused, paused_reason FROM whatsapp.accounts WHERE name = 'main';

SELECT whatsapp.wa_account_set('main', '106540352242922', NULL, '', NULL,
							   NULL, 50);
SELECT a.name,
	   a.access_token = b.access_token AS token_kept,
	   a.app_secret IS NULL AND a.app_secret_key IS NULL AS app_secret_removed,
	   a.verify_token = b.verify_token AS verify_token_kept,
	   a.waba_id IS NULL AS waba_id_cleared, a.max_mps,
	   a.paused_kind IS NULL AND a.paused_reason IS NULL
		 AND a.paused_at IS NULL AND a.backoff_until IS NULL AS resumed,
	   a.updated_at > a.created_at OR a.updated_at = now() AS updated
  FROM whatsapp.account a JOIN before b USING (name)
 WHERE a.name = 'main';

-- A new secret gets a new ciphertext.
SELECT whatsapp.wa_account_set('second', '200', 'EAAtoken-second-2',
							   max_mps => 1000);
SELECT a.access_token <> b.access_token AS token_replaced
  FROM whatsapp.account a JOIN before b USING (name)
 WHERE a.name = 'second';

-- ---------------------------------------------------------------------
-- A ciphertext copied into another account is refused
-- ---------------------------------------------------------------------
BEGIN;
UPDATE whatsapp.account
   SET access_token = m.access_token, access_token_key = m.access_token_key
  FROM whatsapp.account m
 WHERE m.name = 'main' AND account.name = 'second';
SELECT pg_temp.try_detail($$SELECT whatsapp.wa_rotate_key()$$) AS rotate_with_copy;
SELECT pg_temp.try_detail($$SELECT whatsapp.wa_rebind()$$) AS rebind_with_copy;
ROLLBACK;

-- A ciphertext moved into another field is refused as well.
BEGIN;
UPDATE whatsapp.account
   SET verify_token = access_token, verify_token_key = access_token_key
 WHERE name = 'main';
SELECT pg_temp.try_detail($$SELECT whatsapp.wa_rotate_key()$$) AS rotate_with_moved_field;
ROLLBACK;

-- An unknown key id is refused.
BEGIN;
UPDATE whatsapp.account SET access_token_key = '0000000000000000'
 WHERE name = 'second';
SELECT pg_temp.try_detail($$SELECT whatsapp.wa_rotate_key()$$) AS rotate_unknown_key;
ROLLBACK;

-- A damaged ciphertext is refused, without an error from pgcrypto.
BEGIN;
UPDATE whatsapp.account SET access_token = '\x00010203'::bytea
 WHERE name = 'second';
SELECT pg_temp.try_detail($$SELECT whatsapp.wa_rebind()$$) AS rebind_corrupt;
ROLLBACK;

-- None of that changed the key file.
SELECT count(*) - :keys_now AS keys_added
  FROM regexp_split_to_table(pg_read_file('whatsapp.key'), E'\n') AS l
 WHERE l ~ '^[0-9a-f]{64}$';

-- ---------------------------------------------------------------------
-- wa_rotate_key and wa_rebind
-- ---------------------------------------------------------------------
SELECT key_id AS old_key_id FROM whatsapp.accounts WHERE name = 'main' \gset
SELECT access_token AS old_token FROM whatsapp.account WHERE name = 'main' \gset

-- main has an access token and a verify token, second an access token.
SELECT whatsapp.wa_rotate_key() AS resealed;
SELECT name, key_id <> :'old_key_id' AS key_id_changed,
	   has_access_token, has_app_secret, has_verify_token
  FROM whatsapp.accounts ORDER BY name;
SELECT count(DISTINCT access_token_key) AS key_ids_in_use,
	   bool_and(access_token_key = coalesce(verify_token_key, access_token_key)) AS same_key
  FROM whatsapp.account WHERE dropped_at IS NULL;
SELECT access_token <> :'old_token'::bytea AS ciphertext_changed
  FROM whatsapp.account WHERE name = 'main';

-- The new key is first in the file and the old one is kept.
SELECT count(*) - :keys_now AS keys_added
  FROM regexp_split_to_table(pg_read_file('whatsapp.key'), E'\n') AS l
 WHERE l ~ '^[0-9a-f]{64}$';

-- A second rotation still opens everything.
SELECT whatsapp.wa_rotate_key() AS resealed_again;
SELECT count(*) - :keys_now AS keys_added
  FROM regexp_split_to_table(pg_read_file('whatsapp.key'), E'\n') AS l
 WHERE l ~ '^[0-9a-f]{64}$';

-- wa_rebind seals everything again for this database and resumes accounts
-- paused because of the binding.
UPDATE whatsapp.account
   SET paused_kind = 'binding', paused_reason = 'sealed in another database',
	   paused_at = now()
 WHERE name = 'second';
SELECT whatsapp.wa_rebind() AS rebound;
SELECT name, paused FROM whatsapp.accounts ORDER BY name;

-- A secret sealed under an older key still opens: the old key id is
-- accepted as long as the key file keeps that key.
BEGIN;
SELECT access_token AS cur_token, access_token_key AS cur_key
  FROM whatsapp.account WHERE name = 'second' \gset
SELECT whatsapp.wa_rotate_key() AS resealed_in_txn;
UPDATE whatsapp.account
   SET access_token = :'cur_token'::bytea, access_token_key = :'cur_key'
 WHERE name = 'second';
SELECT whatsapp.wa_rebind() AS rebound_with_old_key;
ROLLBACK;

-- ---------------------------------------------------------------------
-- wa_account_drop
-- ---------------------------------------------------------------------
INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state)
SELECT a.id, '+5215512345678', 'text', '{}', s.state
  FROM whatsapp.account a,
	   unnest(ARRAY['queued', 'sending', 'sent', 'delivered']) WITH ORDINALITY AS s(state, n)
 WHERE a.name = 'second'
 ORDER BY s.n;
INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state)
SELECT a.id, '+5215512345678', 'text', '{}', 'queued'
  FROM whatsapp.account a WHERE a.name = 'main';

SELECT whatsapp.wa_account_drop('second');

SELECT a.name, m.state, m.failure_type, m.error_title,
	   m.failed_at IS NOT NULL AS has_failed_at
  FROM whatsapp.message m JOIN whatsapp.account a ON a.id = m.account_id
 ORDER BY m.id;
SELECT l.event, l.message, m.state, count(*)
  FROM whatsapp.log l JOIN whatsapp.message m ON m.id = l.message_id
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT name, dropped_at IS NOT NULL AS dropped, is_default,
	   access_token IS NULL AND access_token_key IS NULL
		 AND app_secret IS NULL AND app_secret_key IS NULL
		 AND verify_token IS NULL AND verify_token_key IS NULL AS secrets_gone
  FROM whatsapp.account WHERE name = 'second';
SELECT name FROM whatsapp.accounts ORDER BY name;
SELECT pg_temp.try($$SELECT whatsapp.wa_account_drop('second')$$) AS drop_again;

-- The name can be used again, for a new account.
SELECT whatsapp.wa_account_set('second', '300', 'EAAtoken-second-3');
SELECT count(*) AS rows_named_second,
	   count(*) FILTER (WHERE dropped_at IS NULL) AS live
  FROM whatsapp.account WHERE name = 'second';

-- Dropping the default leaves no default, and a later account does not
-- become one while another account is live.
SELECT whatsapp.wa_account_drop('main');
SELECT whatsapp.wa_account_set('third', '400', 'EAAtoken-third-1');
SELECT name, is_default FROM whatsapp.accounts ORDER BY name;

-- With no live account left, the next one is the default again.
SELECT whatsapp.wa_account_drop('second');
SELECT whatsapp.wa_account_drop('third');
SELECT whatsapp.wa_account_set('fourth', '500', '');
SELECT name, is_default, has_access_token FROM whatsapp.accounts ORDER BY name;

-- Nothing is left to seal again.
SELECT whatsapp.wa_account_drop('fourth');
SELECT whatsapp.wa_rotate_key() AS resealed_none;
SELECT whatsapp.wa_rebind() AS rebound_none;

-- ---------------------------------------------------------------------
-- whatsapp.account_input: COPY ... FROM STDIN sets accounts as
-- wa_account_set does, with the secrets in the COPY data, which no
-- statement text, log line or pg_stat_activity row ever holds.
-- ---------------------------------------------------------------------
-- A view: no storage, nothing to read back.
SELECT c.relkind, pg_relation_filenode(c.oid) IS NULL AS no_storage
  FROM pg_class c WHERE c.oid = 'whatsapp.account_input'::regclass;
SELECT attname, format_type(atttypid, atttypmod) AS type,
	   pg_get_expr(d.adbin, d.adrelid) AS "default"
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'whatsapp.account_input'::regclass AND a.attnum > 0
 ORDER BY a.attnum;

-- Text format: \N is NULL (keep the stored secret), an empty field is ''
-- (remove it); a column left out gets wa_account_set's default.
COPY whatsapp.account_input (name, phone_number_id, access_token, app_secret, verify_token, waba_id) FROM STDIN;
input-a	106540352242923	EAAtoken-input-a-1	appsecret-input-a-1	verify-input-a-1	102290129340399
input-b	200200	EAAtoken-input-b-1	\N	\N	\N
\.
-- The first live account became the default, as with wa_account_set.
SELECT name, phone_number_id, waba_id, max_mps, is_default,
	   has_access_token, has_app_secret, has_verify_token,
	   key_id ~ '^[0-9a-f]{16}$' AS key_id_shape
  FROM whatsapp.accounts WHERE name LIKE 'input-%' ORDER BY name;
SELECT count(*) AS rows_in_the_view FROM whatsapp.account_input;
-- Sealed and bound to their account: no plaintext, and each opens again.
SELECT name,
	   position(convert_to('EAAtoken-' || name || '-1', 'UTF8') IN access_token) = 0 AS token_not_in_clear,
	   position(convert_to('appsecret-input-a-1', 'UTF8') IN coalesce(app_secret, '')) = 0 AS app_secret_not_in_clear
  FROM whatsapp.account WHERE name LIKE 'input-%' AND dropped_at IS NULL ORDER BY name;
SELECT whatsapp.wa_rebind() AS rebound_input_secrets;

-- An update: NULL keeps, '' removes, waba_id left out clears it (as the
-- function's NULL default does), max_mps as text.
CREATE TEMP TABLE before_input AS
SELECT name, access_token, app_secret, verify_token
  FROM whatsapp.account WHERE name LIKE 'input-%' AND dropped_at IS NULL;
COPY whatsapp.account_input (name, phone_number_id, access_token, app_secret, verify_token, max_mps) FROM STDIN;
input-a	106540352242923	\N		\N	50
\.
SELECT a.access_token = b.access_token AS token_kept,
	   a.app_secret IS NULL AND a.app_secret_key IS NULL AS app_secret_removed,
	   a.verify_token = b.verify_token AS verify_token_kept,
	   a.waba_id IS NULL AS waba_id_cleared, a.max_mps
  FROM whatsapp.account a JOIN before_input b USING (name)
 WHERE a.name = 'input-a' AND a.dropped_at IS NULL;

-- CSV: an unquoted empty field is NULL (keep), a quoted one is '' (remove).
COPY whatsapp.account_input (name, phone_number_id, access_token, app_secret) FROM STDIN (FORMAT csv);
input-b,200200,,"appsecret-input-b-1"
input-a,106540352242923,"",
\.
SELECT name, has_access_token, has_app_secret, has_verify_token
  FROM whatsapp.accounts WHERE name LIKE 'input-%' ORDER BY name;

-- INSERT works too (its text holds the secrets, so COPY is the way); the
-- row it reports has the secrets removed.
INSERT INTO whatsapp.account_input (name, phone_number_id, access_token, verify_token)
VALUES ('input-c', '300300', 'EAAtoken-input-c-1', 'verify-input-c-1')
RETURNING *;

-- A failing row fails the whole COPY, and its error names the line, not
-- its data.
COPY whatsapp.account_input (name, phone_number_id, access_token, max_mps) FROM STDIN;
input-d	400400	EAAtoken-input-d-1	80
input-e	400401	EAAtoken-input-e-1	0
\.
COPY whatsapp.account_input (name, phone_number_id, access_token, max_mps) FROM STDIN;
input-d	400400	EAAtoken-input-d-1	eighty
\.
COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN;
input-d	400400	EAAtoken-input-d-1
input-e	40a401	EAAtoken-input-e-1
\.
COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN;
input-d	400400	EAAtoken-input-d-1	app-secret-too-many
\.
COPY whatsapp.account_input (name, phone_number_id, access_token, app_secret) FROM STDIN;
input-d	400400	EAAtoken-input-d-1
\.
COPY whatsapp.account_input (name, phone_number_id) FROM STDIN;
input-d	400400
\.
SELECT count(*) AS accounts_d_or_e FROM whatsapp.account WHERE name IN ('input-d', 'input-e');

-- The same mistakes give the same SQLSTATE and message as wa_account_set.
CREATE TEMP TABLE same_errors (n serial, args text, fn text, via_view text);
INSERT INTO same_errors (args) VALUES
	($$NULL, '1', 'tok-secret', NULL, NULL, NULL, 80$$),
	($$'', '1', 'tok-secret', NULL, NULL, NULL, 80$$),
	($$repeat('n', 64), '1', 'tok-secret', NULL, NULL, NULL, 80$$),
	($$'a', NULL, 'tok-secret', NULL, NULL, NULL, 80$$),
	($$'a', '12a4', 'tok-secret', NULL, NULL, NULL, 80$$),
	($$'a', '1', 'tok-secret', NULL, NULL, 'waba', 80$$),
	($$'a', '1', 'tok-secret', NULL, NULL, '', 80$$),
	($$'a', '1', 'tok-secret', NULL, NULL, NULL, NULL$$),
	($$'a', '1', 'tok-secret', NULL, NULL, NULL, 0$$),
	($$'a', '1', 'tok-secret', NULL, NULL, NULL, 100001$$),
	($$'a', '1', NULL, NULL, NULL, NULL, 80$$),
	($$'a', '1', repeat('x', 4097), NULL, NULL, NULL, 80$$),
	($$'a', '1', 'tok-secret', repeat('x', 4097), NULL, NULL, 80$$),
	($$'a', '1', E'tok-secret\n', NULL, NULL, NULL, 80$$),
	($$'a', '1', 'tok-secret', E'app\tsecret', NULL, NULL, 80$$),
	($$'a', '1', 'tok-secret', NULL, 'verify' || chr(127), NULL, 80$$);
DO $$
DECLARE
	r record;
	f text;
	v text;
BEGIN
	FOR r IN SELECT * FROM same_errors ORDER BY n LOOP
		BEGIN
			EXECUTE format('SELECT whatsapp.wa_account_set(%s)', r.args);
			f := 'ok';
		EXCEPTION WHEN OTHERS THEN
			f := SQLSTATE || ': ' || SQLERRM;
		END;
		BEGIN
			EXECUTE format('INSERT INTO whatsapp.account_input VALUES (%s)', r.args);
			v := 'ok';
		EXCEPTION WHEN OTHERS THEN
			v := SQLSTATE || ': ' || SQLERRM;
		END;
		UPDATE same_errors SET fn = f, via_view = v WHERE n = r.n;
	END LOOP;
END
$$;
SELECT n, fn AS error, via_view = fn AS view_same FROM same_errors ORDER BY n;

-- whatsapp_admin may COPY into it; the other roles may not.
SET ROLE whatsapp_admin;
COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN;
input-f	500500	EAAtoken-input-f-1
\.
SELECT name, has_access_token FROM whatsapp.accounts WHERE name = 'input-f';
SET ROLE whatsapp_sender;
COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN;
input-g	500501	EAAtoken-input-g-1
\.
RESET ROLE;

SELECT whatsapp.wa_account_drop(name) FROM whatsapp.accounts WHERE name LIKE 'input-%';

-- ---------------------------------------------------------------------
-- Privileges: the functions are closed to PUBLIC
-- ---------------------------------------------------------------------
SELECT p.proname,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
	   has_function_privilege('whatsapp_admin', p.oid, 'EXECUTE') AS admin_execute,
	   p.prosecdef AS security_definer
  FROM pg_proc p
 WHERE p.pronamespace = 'whatsapp'::regnamespace
   AND p.proname IN ('wa_account_set', 'wa_account_drop', 'wa_rotate_key', 'wa_rebind')
 ORDER BY p.proname;
