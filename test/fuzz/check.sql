--
-- test/fuzz/check.sql: is the database still consistent after a fuzz run?
--
--   psql -X -A -t -v stored=N -v secret=... -v secret2=... -f test/fuzz/check.sql
--
-- stored: how many payloads the committed batches stored (wafuzz prints
-- it).  Nothing is left changed.  Prints one line per check, "ok NAME" or "FAIL NAME: why", and a
-- last line "checks failed: N".
--
\set ON_ERROR_STOP on
SET client_min_messages = warning;
-- Rolled back at the end: the last checks write.
BEGIN;
CREATE TEMP TABLE result (n serial, name text, failure text);

-- Every B-tree index of the extension, with every heap tuple indexed.
-- (bt_index_check raises on corruption, which stops the script.)
WITH idx AS MATERIALIZED (
	SELECT c.oid, c.relname
	  FROM pg_class c
	  JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
	 WHERE c.relnamespace = 'whatsapp'::regnamespace AND c.relkind = 'i')
INSERT INTO result (name, failure)
SELECT 'amcheck ' || relname, CASE WHEN bt_index_check(oid, true) IS NOT NULL THEN NULL END
  FROM idx ORDER BY relname;

-- Each payload stored once, exactly those of the committed batches.
INSERT INTO result (name, failure)
SELECT 'stored payloads', CASE WHEN count(*) <> :stored
	THEN format('%s rows in whatsapp.webhook, the driver counted %s', count(*), :stored) END
  FROM whatsapp.webhook;

-- States and their times agree (the webhook never moves a state backwards,
-- and a read fills an empty delivered_at).
INSERT INTO result (name, failure)
SELECT 'message states', CASE WHEN count(*) > 0 THEN
	   format('%s messages, e.g. %s', count(*), min(id)) END
  FROM whatsapp.message
 WHERE NOT whatsapp._message_state_valid(state)
	OR (state IN ('delivered', 'read') AND delivered_at IS NULL)
	OR (state = 'read' AND read_at IS NULL)
	OR (state = 'failed' AND (failed_at IS NULL OR failure_type IS NULL))
	OR (state IN ('queued', 'sending') AND (delivered_at IS NOT NULL OR read_at IS NOT NULL));

INSERT INTO result (name, failure)
SELECT 'delivered no later than read', CASE WHEN count(*) > 0 THEN
	   format('%s messages with delivered_at > read_at, e.g. %s', count(*), min(id)) END
  FROM whatsapp.message WHERE delivered_at > read_at;

-- The seeded messages that were sent stay at least sent.
INSERT INTO result (name, failure)
SELECT 'no state moved backwards', CASE WHEN count(*) > 0 THEN
	   format('%s sent messages now %s', count(*), string_agg(DISTINCT state, ', ')) END
  FROM whatsapp.message
 WHERE id <= 30 AND state NOT IN ('sent', 'delivered', 'read', 'failed');

-- Nothing signed with tienda's secret (tienda's and tienda_gdl's) changed
-- outlet, another Meta app.
INSERT INTO result (name, failure)
SELECT 'outlet''s messages untouched', CASE WHEN count(*) > 0 THEN
	   format('%s of outlet''s messages changed, e.g. id %s now %s', count(*), min(m.id),
			  min(m.state)) END
  FROM whatsapp.message m JOIN fuzz.outlet_before b USING (id)
 WHERE (m.state, m.delivered_at, m.read_at, m.failed_at, m.error_code, m.pricing, m.conversation)
	   IS DISTINCT FROM
	   (b.state, b.delivered_at, b.read_at, b.failed_at, b.error_code, b.pricing, b.conversation);

INSERT INTO result (name, failure)
SELECT 'no inbound message for outlet', CASE WHEN count(*) > 0 THEN
	   format('%s inbound messages stored for outlet', count(*)) END
  FROM whatsapp.inbound_message i JOIN whatsapp.account a ON a.id = i.account_id
 WHERE a.name = 'outlet';

INSERT INTO result (name, failure)
SELECT 'no status held for outlet', CASE WHEN count(*) > 0 THEN
	   format('%s statuses held for outlet''s number', count(*)) END
  FROM whatsapp.status_held WHERE phone_number_id = '109876543210987';

INSERT INTO result (name, failure)
SELECT 'outlet''s templates untouched', CASE WHEN count(*) > 0 THEN
	   format('%s of outlet''s template rows changed', count(*)) END
  FROM fuzz.templates_before b
  LEFT JOIN whatsapp.templates t ON t.account IS NOT DISTINCT FROM b.account
	   AND t.name = b.name AND t.language = b.language
 WHERE b.account = 'outlet'
   AND (t.name IS NULL OR (t.category, t.status) IS DISTINCT FROM (b.category, b.status));

-- Every stored payload was verified by an active account's secret; those
-- that outlet's verified (the signature mode's, which name only tienda)
-- applied nothing.
INSERT INTO result (name, failure)
SELECT 'stored payloads verified', CASE WHEN count(*) > 0 THEN
	   format('%s payloads stored with account_id %s', count(*), min(w.account_id)) END
  FROM whatsapp.webhook w
 WHERE w.account_id IS NULL
	OR w.account_id NOT IN (SELECT id FROM whatsapp.account
							 WHERE name IN ('tienda', 'tienda_gdl', 'outlet'));
INSERT INTO result (name, failure)
SELECT 'outlet''s secret applied nothing of tienda''s', CASE WHEN count(*) > 0 THEN
	   format('%s payloads verified by outlet''s secret applied events', count(*)) END
  FROM whatsapp.webhook w JOIN whatsapp.account a ON a.id = w.account_id
 WHERE a.name = 'outlet' AND w.applied > 0;

-- What the rows hold has the documented shapes.
INSERT INTO result (name, failure)
SELECT 'inbound identifiers', CASE WHEN count(*) > 0 THEN
	   format('%s inbound rows with a malformed wa_id, phone or wamid, e.g. %s', count(*), min(id)) END
  FROM whatsapp.inbound_message
 WHERE (wa_id IS NOT NULL AND wa_id !~ '^[0-9]{1,20}$')
	OR (phone IS NOT NULL AND phone !~ '^\+[1-9][0-9]{7,14}$')
	OR wamid = '' OR octet_length(wamid) > 256 * 4;

INSERT INTO result (name, failure)
SELECT 'held statuses', CASE WHEN count(*) > 0 THEN
	   format('%s held statuses without a usable wamid or with an unknown message', count(*)) END
  FROM whatsapp.status_held h
 WHERE h.wamid = '' OR length(h.wamid) > 256
	OR (h.message_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM whatsapp.message m WHERE m.id = h.message_id));

-- (A wa_id that cannot be made E.164 is recorded as '+' and its digits.)
INSERT INTO result (name, failure)
SELECT 'opt-out identifiers', CASE WHEN count(*) > 0 THEN
	   format('%s opt-outs of an identifier that is neither a number nor a user id, e.g. %L',
			  count(*), min(identifier)) END
  FROM whatsapp.opt_out
 WHERE identifier !~ '^\+[0-9]{1,20}$'
   AND (identifier !~ '^[A-Za-z0-9._-]+$' OR identifier !~ '[A-Za-z]' OR length(identifier) > 128);

-- No secret in what the extension wrote.
INSERT INTO result (name, failure)
SELECT 'no secret in whatsapp.log', CASE WHEN count(*) > 0 THEN
	   format('%s log rows hold an app secret', count(*)) END
  FROM whatsapp.log
 WHERE strpos(message, :'secret') > 0 OR strpos(message, :'secret2') > 0;

-- The functions still work: a fresh, correctly signed status.
INSERT INTO result (name, failure)
SELECT 'wa_receive after the run', CASE WHEN r IS NULL OR r < 0 THEN
	   format('wa_receive returned %s', coalesce(r::text, 'NULL')) END
  FROM (SELECT whatsapp.wa_receive(b, 'sha256=' || encode(hmac(b, :'secret', 'sha256'), 'hex')) AS r
		  FROM (SELECT '{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"account_update","value":{"event":"VERIFIED_ACCOUNT"}}]}]}'::text AS b) x) y;
INSERT INTO result (name, failure)
SELECT 'normalize_phone after the run', CASE WHEN r IS DISTINCT FROM '+525512345678' THEN
	   format('normalize_phone returned %s', r) END
  FROM (SELECT whatsapp.normalize_phone('+52 1 55 1234 5678') AS r) x;

SELECT CASE WHEN failure IS NULL THEN 'ok ' || name ELSE 'FAIL ' || name || ': ' || failure END
  FROM result ORDER BY n;
SELECT 'checks failed: ' || count(*) FILTER (WHERE failure IS NOT NULL) FROM result;
ROLLBACK;
