-- privileges.sql: who may do what in schema whatsapp.
--
-- The role matrix from the SPEC:
--   PUBLIC (and a fresh login role): nothing at all;
--   whatsapp_sender: wa_send*, wa_cancel, wa_retry, wa_opt_out, the webhook
--     functions and normalize_phone; no view, no table;
--   whatsapp_reader: the status views, wa_log and normalize_phone; cannot
--     send and cannot touch accounts;
--   whatsapp_admin: the account functions and the accounts view, and
--     INSERT (and so COPY FROM) into the write-only view account_input,
--     which nobody reads.
-- Tables and sequences are reached only through views and functions.
-- Every SECURITY DEFINER function pins its search_path, and so do the
-- SECURITY INVOKER functions that act with their owner's rights.
--
-- Checks that look at "every function" list the offenders on failure.
-- Functions named in the SPEC but not written yet only narrow what a role
-- is allowed, they are not required here (install.sql and the regression
-- suite check that they exist).

BEGIN;

CREATE EXTENSION IF NOT EXISTS whatsapp CASCADE;
CREATE ROLE wa_tap_nobody LOGIN;

-- What each role may execute, by function name.  A role executing anything
-- outside its list fails the test; "required" ones must be executable.
CREATE TEMP TABLE wa_allowed (role name, fn name, required boolean);
INSERT INTO wa_allowed VALUES
	('whatsapp_sender', 'wa_send', true),
	('whatsapp_sender', 'wa_send_template', true),
	('whatsapp_sender', 'wa_send_message', true),
	('whatsapp_sender', 'wa_cancel', true),
	('whatsapp_sender', 'wa_retry', true),
	('whatsapp_sender', 'normalize_phone', true),
	('whatsapp_sender', 'wa_opt_out', false),
	('whatsapp_sender', 'wa_verify_webhook', false),
	('whatsapp_sender', 'wa_receive', false),
	('whatsapp_reader', 'wa_log', true),
	('whatsapp_reader', 'normalize_phone', true),
	-- the keyword folding rule, so readers can see how a reply was matched
	('whatsapp_reader', 'fold_keyword', false),
	('whatsapp_admin', 'fold_keyword', false),
	-- the status view may call it with the reader's rights
	('whatsapp_reader', '_worker_status', false),
	('whatsapp_admin', 'wa_account_set', true),
	('whatsapp_admin', 'wa_account_drop', true),
	('whatsapp_admin', 'wa_rotate_key', true),
	('whatsapp_admin', 'wa_rebind', true),
	('whatsapp_admin', 'wa_opt_in', false),
	('whatsapp_admin', 'wa_odoo_enable', false),
	('whatsapp_admin', 'wa_odoo_disable', false),
	('whatsapp_admin', 'wa_odoo_preview', false),
	('whatsapp_admin', 'wa_odoo_pause', true),
	('whatsapp_admin', 'wa_odoo_resume', true),
	('whatsapp_admin', 'wa_subject_export', true),
	('whatsapp_admin', 'wa_subject_erase', true),
	('whatsapp_admin', 'wa_stats_reset', true),
	('whatsapp_admin', 'wa_odoo_rule', true),
	('whatsapp_admin', 'wa_odoo_rule_drop', true),
	('whatsapp_admin', 'wa_odoo_rule_preview', true),
	('whatsapp_admin', 'wa_odoo_no_header_template', true),
	('whatsapp_admin', 'normalize_phone', false);

-- Views each role may read (none may write through a view).
CREATE TEMP TABLE wa_allowed_views (role name, view name, required boolean);
INSERT INTO wa_allowed_views VALUES
	('whatsapp_reader', 'messages', true),
	('whatsapp_reader', 'status', true),
	('whatsapp_reader', 'inbound', false),
	('whatsapp_reader', 'windows', false),
	('whatsapp_reader', 'consents', false),
	('whatsapp_reader', 'webhooks', false),
	('whatsapp_reader', 'stats', true),
	('whatsapp_admin', 'stats', true),
	('whatsapp_admin', 'accounts', true),
	('whatsapp_admin', 'odoo_rules', false),
	('whatsapp_admin', 'odoo_model_rules', true),
	('whatsapp_admin', 'odoo_paused', true);

CREATE TEMP VIEW wa_fns AS
	SELECT p.oid, p.proname, p.oid::regprocedure::text AS sig,
		   p.prosecdef, p.proconfig, p.proacl
	  FROM pg_proc p
	 WHERE p.pronamespace = 'whatsapp'::regnamespace;

CREATE TEMP VIEW wa_rels AS
	SELECT c.oid, c.relname, c.relkind, c.oid::regclass::text AS qname
	  FROM pg_class c
	 WHERE c.relnamespace = 'whatsapp'::regnamespace
	   AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S');

GRANT SELECT ON wa_allowed, wa_allowed_views, wa_fns, wa_rels TO PUBLIC;

SELECT plan(87);

-- ---------------------------------------------------------------------
-- PUBLIC and a role with no grants
-- ---------------------------------------------------------------------
SELECT ok(NOT has_schema_privilege('public', 'whatsapp', 'USAGE'),
	'PUBLIC has no USAGE on schema whatsapp');

SELECT is_empty($$
	SELECT qname FROM wa_rels
	 WHERE relkind <> 'S'
	   AND has_table_privilege('public', oid,
			'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')$$,
	'PUBLIC has no privilege on any table or view');

SELECT is_empty($$
	SELECT qname FROM wa_rels
	 WHERE CASE WHEN relkind = 'S'
				THEN has_sequence_privilege('public', oid, 'USAGE,SELECT,UPDATE')
				ELSE false END$$,
	'PUBLIC has no privilege on any sequence');

SELECT is_empty($$
	SELECT sig FROM wa_fns
	 WHERE has_function_privilege('public', oid, 'EXECUTE')$$,
	'PUBLIC can execute no function');

SELECT is_empty($$
	SELECT sig FROM wa_fns
	 WHERE proacl IS NULL
		OR EXISTS (SELECT 1 FROM aclexplode(proacl) a WHERE a.grantee = 0)$$,
	'no function ACL is the default or names PUBLIC');

SELECT is_empty($$
	SELECT qname FROM wa_rels
	 WHERE CASE WHEN relkind = 'S'
				THEN has_sequence_privilege('wa_tap_nobody', oid,
						'USAGE,SELECT,UPDATE')
				ELSE has_table_privilege('wa_tap_nobody', oid,
						'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')
				END
	UNION ALL
	SELECT sig FROM wa_fns
	 WHERE has_function_privilege('wa_tap_nobody', oid, 'EXECUTE')$$,
	'a role with no grants can use nothing in the schema');

SET ROLE wa_tap_nobody;
SELECT throws_ok($$SELECT whatsapp.normalize_phone('+525512345678')$$,
	'42501', NULL, 'a role with no grants: normalize_phone is refused');
SELECT throws_ok($$SELECT whatsapp.wa_send('+525512345678', 'hola')$$,
	'42501', NULL, 'a role with no grants: wa_send is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.messages$$,
	'42501', NULL, 'a role with no grants: messages is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.accounts$$,
	'42501', NULL, 'a role with no grants: accounts is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.message$$,
	'42501', NULL, 'a role with no grants: table message is refused');
RESET ROLE;

-- ---------------------------------------------------------------------
-- Tables and sequences: closed to sender and reader; the tables that hold
-- secrets, messages and the log are closed to admin too.
-- ---------------------------------------------------------------------
SELECT is_empty($$
	SELECT r.qname || ' for ' || g.role
	  FROM wa_rels r, (VALUES ('whatsapp_sender'), ('whatsapp_reader')) g(role)
	 WHERE CASE WHEN r.relkind = 'S'
				THEN has_sequence_privilege(g.role, r.oid, 'USAGE,SELECT,UPDATE')
				WHEN r.relkind IN ('r', 'p', 'f', 'm')
				THEN has_table_privilege(g.role, r.oid,
						'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')
					 OR (has_table_privilege(g.role, r.oid, 'SELECT')
						 -- the reader sees the template list and the keywords
						 AND NOT (g.role = 'whatsapp_reader'
								  AND r.relname IN ('templates', 'keywords')))
				ELSE false END$$,
	'sender and reader have no privilege on any table or sequence (the reader reads templates and keywords)');

SELECT is_empty($$
	SELECT r.qname FROM wa_rels r
	 WHERE r.relname IN ('account', 'message', 'log', 'account_id_seq',
						 'message_id_seq')
	   AND CASE WHEN r.relkind = 'S'
				THEN has_sequence_privilege('whatsapp_admin', r.oid,
						'USAGE,SELECT,UPDATE')
				ELSE has_table_privilege('whatsapp_admin', r.oid,
						'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')
				END$$,
	'admin has no privilege on the account, message and log tables');

-- ---------------------------------------------------------------------
-- Views: each role reads only its own; nobody writes through one.
-- ---------------------------------------------------------------------
SELECT is_empty($$
	SELECT r.qname || ' for ' || g.role
	  FROM wa_rels r,
		   (VALUES ('whatsapp_sender'), ('whatsapp_reader'), ('whatsapp_admin')) g(role)
	 WHERE r.relkind = 'v'
	   AND has_table_privilege(g.role, r.oid, 'SELECT')
	   AND NOT EXISTS (SELECT 1 FROM wa_allowed_views a
						WHERE a.role = g.role AND a.view = r.relname)$$,
	'no role reads a view outside its list');

SELECT is_empty($$
	SELECT a.role || ' cannot read ' || a.view
	  FROM wa_allowed_views a
	 WHERE a.required
	   AND NOT has_table_privilege(a.role, 'whatsapp.' || quote_ident(a.view), 'SELECT')$$,
	'each role reads the views the SPEC gives it');

SELECT is_empty($$
	SELECT r.qname || ' for ' || g.role
	  FROM wa_rels r,
		   (VALUES ('whatsapp_sender'), ('whatsapp_reader'), ('whatsapp_admin')) g(role)
	 WHERE r.relkind = 'v'
	   AND has_table_privilege(g.role, r.oid, 'INSERT,UPDATE,DELETE,TRUNCATE')
	   AND NOT (g.role = 'whatsapp_admin' AND r.relname = 'account_input')$$,
	'no role can write through a view (but admin into account_input)');

-- account_input: admin may INSERT (COPY FROM needs just that), and
-- nothing else; nobody reads it.
SELECT ok(has_table_privilege('whatsapp_admin', 'whatsapp.account_input', 'INSERT'),
	'admin can insert into account_input');
SELECT ok(NOT has_table_privilege('whatsapp_admin', 'whatsapp.account_input',
		'SELECT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER'),
	'admin can do nothing else with account_input');
-- audit: admin reads it; nobody writes it (only the extension's own
-- functions, as its owner).
SELECT ok(has_table_privilege('whatsapp_admin', 'whatsapp.audit', 'SELECT'),
	'admin can read the audit');
SELECT is_empty($$
	SELECT g.role FROM (VALUES ('whatsapp_admin'), ('whatsapp_sender'), ('whatsapp_reader'),
							   ('public')) g(role)
	 WHERE has_table_privilege(g.role, 'whatsapp.audit',
			'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')
		OR has_sequence_privilege(g.role, 'whatsapp.audit_id_seq', 'USAGE,SELECT,UPDATE')$$,
	'no role can write the audit or use its sequence');
SELECT is_empty($$
	SELECT g.role FROM (VALUES ('whatsapp_sender'), ('whatsapp_reader'), ('public')) g(role)
	 WHERE has_table_privilege(g.role, 'whatsapp.audit', 'SELECT')$$,
	'only admin reads the audit');

SELECT is_empty($$
	SELECT g.role FROM (VALUES ('whatsapp_sender'), ('whatsapp_reader'), ('public')) g(role)
	 WHERE has_table_privilege(g.role, 'whatsapp.account_input',
			'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')$$,
	'sender, reader and PUBLIC have no privilege on account_input');
SELECT is(
	(SELECT string_agg(t.tgname || ':' || p.proname, ',')
	   FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
	  WHERE t.tgrelid = 'whatsapp.account_input'::regclass),
	'account_input:_account_input_trigger',
	'account_input has its INSTEAD OF trigger, and no other');

-- ---------------------------------------------------------------------
-- Functions: the matrix.
-- ---------------------------------------------------------------------
SELECT is_empty($$
	SELECT f.sig || ' for ' || g.role
	  FROM wa_fns f,
		   (VALUES ('whatsapp_sender'), ('whatsapp_reader'), ('whatsapp_admin')) g(role)
	 WHERE has_function_privilege(g.role, f.oid, 'EXECUTE')
	   AND NOT EXISTS (SELECT 1 FROM wa_allowed a
						WHERE a.role = g.role AND a.fn = f.proname)$$,
	'no role executes a function outside its list');

SELECT is_empty($$
	SELECT a.role || ' cannot execute ' || a.fn
	  FROM wa_allowed a
	 WHERE a.required
	   AND NOT EXISTS (SELECT 1 FROM wa_fns f
						WHERE f.proname = a.fn
						  AND has_function_privilege(a.role, f.oid, 'EXECUTE'))$$,
	'each role executes the functions the SPEC gives it');

SELECT is_empty($$
	SELECT f.sig || ' for ' || g.role
	  FROM wa_fns f,
		   (VALUES ('whatsapp_sender'), ('whatsapp_admin')) g(role)
	 WHERE f.proname LIKE '\_%'
	   AND has_function_privilege(g.role, f.oid, 'EXECUTE')$$,
	'internal functions (named _*) are closed to sender and admin');

-- The fixed signatures of the SPEC, one by one.
SELECT ok(has_function_privilege('whatsapp_sender',
	'whatsapp.wa_send(text, text, text, text, jsonb)', 'EXECUTE'),
	'sender can execute wa_send(text, text, text, text, jsonb)');
SELECT ok(has_function_privilege('whatsapp_sender',
	'whatsapp.wa_send_template(text, text, text, jsonb, text, text, jsonb)', 'EXECUTE'),
	'sender can execute wa_send_template(text, text, text, jsonb, text, text, jsonb)');
SELECT ok(has_function_privilege('whatsapp_sender',
	'whatsapp.wa_send_message(text, jsonb, text, text, jsonb)', 'EXECUTE'),
	'sender can execute wa_send_message(text, jsonb, text, text, jsonb)');
SELECT ok(has_function_privilege('whatsapp_sender',
	'whatsapp.wa_cancel(bigint)', 'EXECUTE'),
	'sender can execute wa_cancel(bigint)');
SELECT ok(has_function_privilege('whatsapp_sender',
	'whatsapp.wa_retry(bigint)', 'EXECUTE'),
	'sender can execute wa_retry(bigint)');
SELECT ok(has_function_privilege('whatsapp_reader',
	'whatsapp.wa_log(bigint, timestamptz, integer)', 'EXECUTE'),
	'reader can execute wa_log(bigint, timestamptz, integer)');
SELECT ok(has_function_privilege('whatsapp_admin',
	'whatsapp.wa_account_set(text, text, text, text, text, text, integer)', 'EXECUTE'),
	'admin can execute wa_account_set(text, text, text, text, text, text, integer)');
SELECT ok(has_function_privilege('whatsapp_admin',
	'whatsapp.wa_account_drop(text)', 'EXECUTE'),
	'admin can execute wa_account_drop(text)');
SELECT ok(has_function_privilege('whatsapp_admin',
	'whatsapp.wa_rotate_key()', 'EXECUTE'),
	'admin can execute wa_rotate_key()');
SELECT ok(has_function_privilege('whatsapp_admin',
	'whatsapp.wa_rebind()', 'EXECUTE'),
	'admin can execute wa_rebind()');

-- ---------------------------------------------------------------------
-- SECURITY DEFINER functions pin a safe search_path.
-- ---------------------------------------------------------------------
SELECT is_empty($$
	SELECT sig FROM wa_fns
	 WHERE prosecdef
	   AND NOT EXISTS (SELECT 1 FROM unnest(proconfig) c
						WHERE c LIKE 'search\_path=%')$$,
	'every SECURITY DEFINER function sets search_path');

SELECT is_empty($$
	SELECT sig || ': ' || c FROM wa_fns, unnest(proconfig) c
	 WHERE prosecdef
	   AND c LIKE 'search\_path=%'
	   AND (c ~* '(^|[=,\s"])public([,\s"]|$)' OR c LIKE '%$user%')$$,
	'no pinned search_path names public or $user');

SELECT ok(EXISTS (SELECT 1 FROM wa_fns WHERE prosecdef),
	'the schema has SECURITY DEFINER functions (the checks above saw some)');

-- The sending functions, wa_cancel and wa_retry are SECURITY INVOKER, so
-- that they see their caller (the role a message belongs to), and take
-- their owner's rights in C: they pin search_path as well.
SELECT is_empty($$
	SELECT sig FROM wa_fns
	 WHERE proname IN ('wa_send', 'wa_send_template', 'wa_send_message',
					   'wa_cancel', 'wa_retry')
	   AND (prosecdef
			OR NOT EXISTS (SELECT 1 FROM unnest(proconfig) c
							WHERE c = 'search_path=pg_catalog, pg_temp'))$$,
	'wa_send*, wa_cancel and wa_retry are SECURITY INVOKER with search_path pinned');

-- ---------------------------------------------------------------------
-- Acting as whatsapp_sender
-- ---------------------------------------------------------------------
SET ROLE whatsapp_sender;
SELECT lives_ok($$SELECT whatsapp.normalize_phone('+52 55 1234 5678')$$,
	'sender: normalize_phone works');
SELECT lives_ok($$SELECT whatsapp.wa_cancel(-1)$$,
	'sender: wa_cancel works');
SELECT lives_ok($$SELECT whatsapp.wa_retry(-1)$$,
	'sender: wa_retry works');
SELECT throws_ok($$SELECT * FROM whatsapp.messages$$,
	'42501', NULL, 'sender: messages is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.status$$,
	'42501', NULL, 'sender: status is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.accounts$$,
	'42501', NULL, 'sender: accounts is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.wa_log()$$,
	'42501', NULL, 'sender: wa_log is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.account$$,
	'42501', NULL, 'sender: table account is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.message$$,
	'42501', NULL, 'sender: table message is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.log$$,
	'42501', NULL, 'sender: table log is refused');
SELECT throws_ok($$UPDATE whatsapp.message SET state = 'sent'$$,
	'42501', NULL, 'sender: updating table message is refused');
SELECT throws_ok($$SELECT pg_catalog.nextval('whatsapp.message_id_seq')$$,
	'42501', NULL, 'sender: the message id sequence is refused');
SELECT throws_ok($$SELECT whatsapp.wa_account_set('x', '1', 'EAA-x')$$,
	'42501', NULL, 'sender: wa_account_set is refused');
SELECT throws_ok($$SELECT whatsapp.wa_account_drop('x')$$,
	'42501', NULL, 'sender: wa_account_drop is refused');
SELECT throws_ok($$SELECT whatsapp.wa_rotate_key()$$,
	'42501', NULL, 'sender: wa_rotate_key is refused');
SELECT throws_ok($$SELECT whatsapp.wa_rebind()$$,
	'42501', NULL, 'sender: wa_rebind is refused');
SELECT throws_ok($$INSERT INTO whatsapp.account_input (name, phone_number_id, access_token)
				   VALUES ('x', '1', 'EAA-x')$$,
	'42501', NULL, 'sender: inserting into account_input is refused');
RESET ROLE;

-- ---------------------------------------------------------------------
-- Acting as whatsapp_reader
-- ---------------------------------------------------------------------
SET ROLE whatsapp_reader;
SELECT lives_ok($$SELECT * FROM whatsapp.messages$$,
	'reader: messages works');
SELECT lives_ok($$SELECT * FROM whatsapp.status$$,
	'reader: status works');
SELECT lives_ok($$SELECT * FROM whatsapp.wa_log()$$,
	'reader: wa_log works');
SELECT lives_ok($$SELECT whatsapp.normalize_phone('+52 55 1234 5678')$$,
	'reader: normalize_phone works');
SELECT throws_ok($$SELECT whatsapp.wa_send('+525512345678', 'hola')$$,
	'42501', NULL, 'reader: wa_send is refused');
SELECT throws_ok($$SELECT whatsapp.wa_send_template('+525512345678', 't', 'es')$$,
	'42501', NULL, 'reader: wa_send_template is refused');
SELECT throws_ok($$SELECT whatsapp.wa_send_message('+525512345678', '{}')$$,
	'42501', NULL, 'reader: wa_send_message is refused');
SELECT throws_ok($$SELECT whatsapp.wa_cancel(1)$$,
	'42501', NULL, 'reader: wa_cancel is refused');
SELECT throws_ok($$SELECT whatsapp.wa_retry(1)$$,
	'42501', NULL, 'reader: wa_retry is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.accounts$$,
	'42501', NULL, 'reader: accounts is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.account$$,
	'42501', NULL, 'reader: table account is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.message$$,
	'42501', NULL, 'reader: table message is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.log$$,
	'42501', NULL, 'reader: table log is refused');
SELECT throws_ok($$SELECT whatsapp.wa_account_set('x', '1', 'EAA-x')$$,
	'42501', NULL, 'reader: wa_account_set is refused');
SELECT throws_ok($$SELECT whatsapp.wa_account_drop('x')$$,
	'42501', NULL, 'reader: wa_account_drop is refused');
SELECT throws_ok($$SELECT whatsapp.wa_rotate_key()$$,
	'42501', NULL, 'reader: wa_rotate_key is refused');
SELECT throws_ok($$SELECT whatsapp.wa_rebind()$$,
	'42501', NULL, 'reader: wa_rebind is refused');
SELECT throws_ok($$INSERT INTO whatsapp.account_input (name, phone_number_id, access_token)
				   VALUES ('x', '1', 'EAA-x')$$,
	'42501', NULL, 'reader: inserting into account_input is refused');
RESET ROLE;

-- ---------------------------------------------------------------------
-- Acting as whatsapp_admin
-- ---------------------------------------------------------------------
SET ROLE whatsapp_admin;
SELECT lives_ok($$SELECT * FROM whatsapp.accounts$$,
	'admin: accounts works');
SELECT throws_ok($$SELECT * FROM whatsapp.account$$,
	'42501', NULL, 'admin: table account (ciphertexts) is refused');
SELECT throws_ok($$UPDATE whatsapp.account SET max_mps = 1$$,
	'42501', NULL, 'admin: updating table account is refused');
SELECT throws_ok($$UPDATE whatsapp.accounts SET max_mps = 1$$,
	'42501', NULL, 'admin: writing through accounts is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.message$$,
	'42501', NULL, 'admin: table message is refused');
SELECT throws_ok($$SELECT * FROM whatsapp.log$$,
	'42501', NULL, 'admin: table log is refused');
SELECT lives_ok($$INSERT INTO whatsapp.account_input (name, phone_number_id, access_token)
				  VALUES ('tap-input', '1099887766', '')$$,
	'admin: inserting into account_input works');
SELECT is((SELECT has_access_token FROM whatsapp.accounts WHERE name = 'tap-input'),
	false, 'admin: the row set the account (without a token)');
SELECT throws_ok($$SELECT * FROM whatsapp.account_input$$,
	'42501', NULL, 'admin: reading account_input is refused');
RESET ROLE;

-- ---------------------------------------------------------------------
-- The three roles cannot log in, and membership is not handed out.
-- ---------------------------------------------------------------------
SELECT is_empty($$
	SELECT r.rolname FROM pg_roles r
	 WHERE r.rolname IN ('whatsapp_admin', 'whatsapp_sender', 'whatsapp_reader')
	   AND (r.rolcanlogin OR r.rolsuper)$$,
	'the three roles are NOLOGIN and not superusers');

SELECT is_empty($$
	SELECT g.rolname || ' in ' || r.rolname
	  FROM pg_auth_members m
	  JOIN pg_roles r ON r.oid = m.roleid
	  JOIN pg_roles g ON g.oid = m.member
	 WHERE r.rolname IN ('whatsapp_sender', 'whatsapp_reader')
	   AND g.rolname IN ('whatsapp_sender', 'whatsapp_reader', 'public')$$,
	'sender and reader are not members of each other');

SELECT is(
	(SELECT count(*)::int FROM pg_roles
	  WHERE rolname IN ('whatsapp_admin', 'whatsapp_sender', 'whatsapp_reader')),
	3, 'the three roles exist');

SELECT * FROM finish();
ROLLBACK;
