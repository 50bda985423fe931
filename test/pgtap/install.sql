-- install.sql: what CREATE EXTENSION whatsapp leaves in the database.
--
--   the three roles, NOLOGIN and not superusers;
--   schema whatsapp, a member of the extension, as is every object in it;
--   the tables and sequences pg_dump must keep, marked as configuration;
--   normalize_phone, a first sanity check.

BEGIN;

CREATE EXTENSION IF NOT EXISTS whatsapp CASCADE;

SELECT plan(29);

-- ---------------------------------------------------------------------
-- Roles
-- ---------------------------------------------------------------------
SELECT has_role('whatsapp_admin');
SELECT has_role('whatsapp_sender');
SELECT has_role('whatsapp_reader');

SELECT is_empty($$
	SELECT rolname FROM pg_roles
	 WHERE rolname IN ('whatsapp_admin', 'whatsapp_sender', 'whatsapp_reader')
	   AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb
			OR rolreplication OR rolbypassrls)$$,
	'the roles are NOLOGIN, not superusers, and hold no other attribute');

-- ---------------------------------------------------------------------
-- The extension and its schema
-- ---------------------------------------------------------------------
SELECT has_extension('whatsapp');
SELECT has_schema('whatsapp');

SELECT is(
	(SELECT e.extversion FROM pg_extension e WHERE e.extname = 'whatsapp'),
	(SELECT a.default_version FROM pg_available_extensions a
	  WHERE a.name = 'whatsapp'),
	'the installed version is the default_version of the control file');

SELECT ok(EXISTS (
	SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	 WHERE d.classid = 'pg_namespace'::regclass
	   AND d.objid = 'whatsapp'::regnamespace
	   AND d.refclassid = 'pg_extension'::regclass
	   AND e.extname = 'whatsapp'
	   AND d.deptype = 'e'),
	'schema whatsapp is a member of the extension (DROP EXTENSION removes it)');

SELECT ok(EXISTS (
	SELECT 1 FROM pg_depend d
	  JOIN pg_extension e ON e.oid = d.objid
	  JOIN pg_extension r ON r.oid = d.refobjid
	 WHERE d.classid = 'pg_extension'::regclass
	   AND d.refclassid = 'pg_extension'::regclass
	   AND e.extname = 'whatsapp' AND r.extname = 'pgcrypto'
	   AND d.deptype = 'n'),
	'the extension requires pgcrypto');

SELECT is(
	(SELECT e.extrelocatable FROM pg_extension e WHERE e.extname = 'whatsapp'),
	false, 'the extension is not relocatable');

SELECT is_empty($$
	SELECT c.oid::regclass::text
	  FROM pg_class c
	 WHERE c.relnamespace = 'whatsapp'::regnamespace
	   AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
	   AND NOT EXISTS (
			SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
			 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
			   AND d.refclassid = 'pg_extension'::regclass
			   AND e.extname = 'whatsapp' AND d.deptype = 'e')
	   -- a composite type's own row type, or a table's, is not a member
	   AND NOT (c.relkind = 'c' AND EXISTS (
			SELECT 1 FROM pg_type t WHERE t.typrelid = c.oid
			   AND EXISTS (SELECT 1 FROM pg_depend d
						    WHERE d.classid = 'pg_type'::regclass
							  AND d.objid = t.oid AND d.deptype = 'e')))$$,
	'every table, view and sequence in schema whatsapp belongs to the extension');

SELECT is_empty($$
	SELECT p.oid::regprocedure::text
	  FROM pg_proc p
	 WHERE p.pronamespace = 'whatsapp'::regnamespace
	   AND NOT EXISTS (
			SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
			 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
			   AND d.refclassid = 'pg_extension'::regclass
			   AND e.extname = 'whatsapp' AND d.deptype = 'e')$$,
	'every function in schema whatsapp belongs to the extension');

SELECT is_empty($$
	SELECT n.nspname || '.' || p.proname
	  FROM pg_depend d
	  JOIN pg_extension e ON e.oid = d.refobjid
	  JOIN pg_proc p ON p.oid = d.objid
	  JOIN pg_namespace n ON n.oid = p.pronamespace
	 WHERE d.classid = 'pg_proc'::regclass
	   AND d.refclassid = 'pg_extension'::regclass
	   AND e.extname = 'whatsapp' AND d.deptype = 'e'
	   AND n.nspname <> 'whatsapp'
	UNION ALL
	SELECT c.oid::regclass::text
	  FROM pg_depend d
	  JOIN pg_extension e ON e.oid = d.refobjid
	  JOIN pg_class c ON c.oid = d.objid
	 WHERE d.classid = 'pg_class'::regclass
	   AND d.refclassid = 'pg_extension'::regclass
	   AND e.extname = 'whatsapp' AND d.deptype = 'e'
	   AND c.relnamespace <> 'whatsapp'::regnamespace$$,
	'the extension puts nothing outside schema whatsapp');

-- ---------------------------------------------------------------------
-- pg_dump keeps rows and counters
-- ---------------------------------------------------------------------
SELECT is_empty($$
	SELECT x FROM unnest(ARRAY['whatsapp.account', 'whatsapp.account_id_seq',
							   'whatsapp.message', 'whatsapp.message_id_seq',
							   'whatsapp.log']) x
	EXCEPT
	SELECT c::regclass::text
	  FROM pg_extension e, unnest(e.extconfig) c
	 WHERE e.extname = 'whatsapp'$$,
	'extconfig holds account, message, log and both sequences');

SELECT is_empty($$
	SELECT s.oid::regclass::text
	  FROM pg_class s
	  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
					  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
	  JOIN pg_extension e ON e.extname = 'whatsapp'
	 WHERE s.relkind = 'S'
	   AND d.refobjid = ANY (e.extconfig)
	   AND NOT s.oid = ANY (e.extconfig)$$,
	'every sequence owned by a configuration table is marked too');

SELECT is_empty($$
	SELECT c::regclass::text
	  FROM pg_extension e, unnest(e.extconfig) c
	 WHERE e.extname = 'whatsapp'
	   AND NOT EXISTS (SELECT 1 FROM pg_class k
						WHERE k.oid = c AND k.relnamespace = 'whatsapp'::regnamespace)$$,
	'every configuration relation lives in schema whatsapp');

-- ---------------------------------------------------------------------
-- The SQL surface that has fixed names exists
-- ---------------------------------------------------------------------
SELECT has_view('whatsapp', 'accounts', 'view whatsapp.accounts exists');
SELECT has_view('whatsapp', 'messages', 'view whatsapp.messages exists');
SELECT has_view('whatsapp', 'status', 'view whatsapp.status exists');
SELECT has_view('whatsapp', 'stats', 'view whatsapp.stats exists');

SELECT is_empty($$
	SELECT attname FROM pg_attribute
	 WHERE attrelid = 'whatsapp.accounts'::regclass AND attnum > 0
	   AND NOT attisdropped
	   AND attname IN ('access_token', 'app_secret', 'verify_token')$$,
	'the accounts view has no secret column');

-- ---------------------------------------------------------------------
-- normalize_phone, a first sanity check (the regression suite has more)
-- ---------------------------------------------------------------------
SELECT is(whatsapp.normalize_phone('+52 55 1234-5678'), '+525512345678',
	'normalize_phone: spaces and dashes go');
SELECT is(whatsapp.normalize_phone('+525512345678'), '+525512345678',
	'normalize_phone: E.164 stays');
SELECT is(whatsapp.normalize_phone('0052 55 1234 5678'), '+525512345678',
	'normalize_phone: 00 becomes +');
SELECT is(whatsapp.normalize_phone('+1 (415) 555-0100'), '+14155550100',
	'normalize_phone: parentheses go');
SELECT is(whatsapp.normalize_phone('55 1234 5678', '52'), '+525512345678',
	'normalize_phone: national number plus country_code');
SET LOCAL whatsapp.default_country_code = '52';
SELECT is(whatsapp.normalize_phone('55 1234 5678'), '+525512345678',
	'normalize_phone: national number plus whatsapp.default_country_code');
RESET whatsapp.default_country_code;
SELECT is(whatsapp.normalize_phone('not a phone number'), NULL,
	'normalize_phone: letters are not a number');
SELECT is(whatsapp.normalize_phone(NULL), NULL,
	'normalize_phone: NULL gives NULL');

SELECT * FROM finish();
ROLLBACK;
