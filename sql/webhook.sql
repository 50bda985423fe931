--
-- Webhooks: wa_verify_webhook, wa_receive (signature, statuses, inbound
-- messages, opt-out, templates), the window, and bad input.
--
-- Signatures are computed here with pgcrypto's hmac(), and one vector with
-- "openssl dgst -sha256 -hmac", never with the code under test.  No worker
-- serves this database: pg_temp.sent() plays its part (record the 200 and
-- call whatsapp._after_record, as the worker does).
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS whatsapp;
CREATE EXTENSION whatsapp CASCADE;
RESET client_min_messages;
SET TimeZone = 'UTC';

-- Helpers --------------------------------------------------------------
CREATE FUNCTION pg_temp.sig(body text, secret text DEFAULT 'app-secret-main')
RETURNS text LANGUAGE sql
AS $$ SELECT 'sha256=' || encode(hmac(body, secret, 'sha256'), 'hex') $$;

CREATE FUNCTION pg_temp.recv(body text, secret text DEFAULT 'app-secret-main')
RETURNS integer LANGUAGE sql
AS $$ SELECT whatsapp.wa_receive(body, pg_temp.sig(body, secret)) $$;

-- Run a statement returning one value: "ok: value" or "SQLSTATE: message".
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text;
BEGIN
	EXECUTE stmt INTO r;
	RETURN 'ok: ' || coalesce(r, 'NULL');
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- A payload of one change.
CREATE FUNCTION pg_temp.env(value jsonb, field text DEFAULT 'messages',
							waba text DEFAULT '102290129340398')
RETURNS text LANGUAGE sql AS $$
	SELECT jsonb_build_object('object', 'whatsapp_business_account', 'entry',
		jsonb_build_array(jsonb_build_object('id', waba, 'changes',
			jsonb_build_array(jsonb_build_object('field', field, 'value', value)))))::text
$$;

CREATE FUNCTION pg_temp.meta(pnid text DEFAULT '106540352242922')
RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('messaging_product', 'whatsapp', 'metadata',
		jsonb_build_object('display_phone_number', '15550783881', 'phone_number_id', pnid))
$$;

CREATE FUNCTION pg_temp.statuses(statuses jsonb, pnid text DEFAULT '106540352242922')
RETURNS text LANGUAGE sql AS $$
	SELECT pg_temp.env(pg_temp.meta(pnid) || jsonb_build_object('statuses', statuses))
$$;

-- A status object.
CREATE FUNCTION pg_temp.st(wamid text, status text, ts bigint, callback text DEFAULT NULL,
						   extra jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_strip_nulls(jsonb_build_object('id', wamid, 'status', status,
		'timestamp', ts::text, 'recipient_id', '5215512345678',
		'biz_opaque_callback_data', callback)) || extra
$$;

CREATE FUNCTION pg_temp.inbound(contacts jsonb, messages jsonb,
								pnid text DEFAULT '106540352242922')
RETURNS text LANGUAGE sql AS $$
	SELECT pg_temp.env(pg_temp.meta(pnid) || jsonb_build_object('contacts', contacts,
																 'messages', messages))
$$;

-- One text message from a wa_id (with a contact).
CREATE FUNCTION pg_temp.text_from(wa_id text, wamid text, body text,
								  ts bigint DEFAULT 1749416383, user_id text DEFAULT NULL,
								  pnid text DEFAULT '106540352242922')
RETURNS text LANGUAGE sql AS $$
	SELECT pg_temp.inbound(
		jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
			'profile', jsonb_build_object('name', 'Cliente ' || coalesce(wa_id, user_id)),
			'wa_id', wa_id, 'user_id', user_id))),
		jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
			'from', wa_id, 'from_user_id', user_id, 'id', wamid, 'timestamp', ts::text, 'type', 'text',
			'text', jsonb_build_object('body', body)))),
		pnid)
$$;

-- Messages enqueued by one statement, shown by the next (a statement does
-- not see the rows its own functions insert).
CREATE TEMP TABLE batch (o serial, id bigint);
CREATE FUNCTION pg_temp.batch()
RETURNS TABLE (recipient text, kind text, state text, failure_type text, error_code integer,
			   error_title text)
LANGUAGE sql AS $$
	SELECT m.recipient, m.kind, m.state, m.failure_type, m.error_code, m.error_title
	  FROM batch b JOIN whatsapp.messages m USING (id) ORDER BY b.o
$$;

-- What the worker does after Meta's HTTP 200.
CREATE FUNCTION pg_temp.sent(id bigint, wamid text) RETURNS boolean LANGUAGE sql AS $$
	UPDATE whatsapp.message SET state = 'sent', wamid = $2, attempts = attempts + 1,
		   wa_id = ltrim(recipient, '+'), sent_at = now()
	 WHERE id = $1;
	SELECT true FROM (SELECT whatsapp._after_record(ARRAY[$1], ARRAY[NULL::integer])) x;
$$;

CREATE FUNCTION pg_temp.msg(id bigint)
RETURNS TABLE (state text, delivered_at timestamptz, read_at timestamptz,
			   failed_at timestamptz, failure_type text, error_code integer,
			   error_title text)
LANGUAGE sql AS $$
	SELECT state, delivered_at, read_at, failed_at, failure_type, error_code, error_title
	  FROM whatsapp.messages WHERE messages.id = $1
$$;

CREATE FUNCTION pg_temp.log(id bigint) RETURNS TABLE (event text, code integer, message text)
LANGUAGE sql AS $$
	SELECT l.event, l.code, l.message FROM whatsapp.log l
	 WHERE l.message_id = $1 ORDER BY l.at, l.message
$$;

-- Accounts --------------------------------------------------------------
SELECT whatsapp.wa_account_set('main', '106540352242922', 'EAAwebhook-main',
							   'app-secret-main', 'verify-main', '102290129340398');
SELECT whatsapp.wa_account_set('second', '200200200', 'EAAwebhook-second',
							   'app-secret-second', 'verify-second', '300300300');
SELECT whatsapp.wa_account_set('nosecret', '400400400', 'EAAwebhook-third');
SELECT whatsapp.wa_account_set('gone', '500500500', 'EAAwebhook-gone',
							   'app-secret-gone', 'verify-gone', '600600600');
SELECT whatsapp.wa_account_drop('gone');

-- ---------------------------------------------------------------------
-- 1. The handshake: the challenge only for subscribe and a matching token
-- ---------------------------------------------------------------------
SELECT what, whatsapp.wa_verify_webhook(mode, token, challenge) AS answer
  FROM (VALUES
	('main''s token', 'subscribe', 'verify-main', '1158201444'),
	('second''s token', 'subscribe', 'verify-second', '42'),
	('a prefix of a token', 'subscribe', 'verify-mai', '1'),
	('a token and a space', 'subscribe', 'verify-main ', '1'),
	('empty token', 'subscribe', '', '1'),
	('unknown token', 'subscribe', 'nobody', '1'),
	('mode in capitals', 'Subscribe', 'verify-main', '1'),
	('another mode', 'unsubscribe', 'verify-main', '1'),
	('dropped account''s token', 'subscribe', 'verify-gone', '1'),
	('NULL mode', NULL, 'verify-main', '1'),
	('NULL token', 'subscribe', NULL, '1'),
	('NULL challenge', 'subscribe', 'verify-main', NULL)) v(what, mode, token, challenge);

-- ---------------------------------------------------------------------
-- 2. Signatures: every wrong one is class 28 and changes nothing.  The
-- signature is checked on the raw bytes before anything is parsed, against
-- each app secret on file; another account's secret verifies, but what the
-- payload says about accounts of other secrets is refused (below).
-- ---------------------------------------------------------------------
SELECT pg_temp.text_from('5215512340000', 'wamid.SIG', 'signed?') AS body \gset
SELECT encode(hmac(:'body', 'app-secret-main', 'sha256'), 'hex') AS hex \gset
CREATE TEMP TABLE sig_case (n serial, what text, signature text);
INSERT INTO sig_case (what, signature) VALUES
	('NULL', NULL),
	('empty', ''),
	('X-Hub-Signature (SHA-1)', 'sha1=' || encode(hmac(:'body', 'app-secret-main', 'sha1'), 'hex')),
	('hex without the prefix', :'hex'),
	('prefix in capitals', 'SHA256=' || :'hex'),
	('a space before it', ' sha256=' || :'hex'),
	('63 digits', 'sha256=' || left(:'hex', 63)),
	('65 digits', 'sha256=' || :'hex' || '0'),
	('64 characters, not hex', 'sha256=' || repeat('zz', 32)),
	('wrong secret', pg_temp.sig(:'body', 'not-the-secret')),
	('another account''s secret', pg_temp.sig(:'body', 'app-secret-second')),
	('the dropped account''s secret', pg_temp.sig(:'body', 'app-secret-gone')),
	('of other bytes (a space more)', pg_temp.sig(:'body' || ' ')),
	('hex digits in capitals', 'sha256=' || upper(:'hex')),
	('correct', 'sha256=' || :'hex');
SELECT n, what, pg_temp.try(format('SELECT whatsapp.wa_receive(%L, %L)', :'body', signature)) AS result
  FROM sig_case ORDER BY n;
-- three payloads stored (another account's secret, and the last two
-- cases), one message
SELECT count(*) AS payloads FROM whatsapp.webhook;
SELECT wamid, text FROM whatsapp.inbound;

-- The test vector of openssl dgst -sha256 -hmac 'app-secret-main' (443 bytes).
SELECT whatsapp.wa_receive('{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],"messages":[{"from":"16505551234","id":"wamid.OPENSSL1","timestamp":"1749416383","type":"text","text":{"body":"¿Viene en otro color?"}}]}}]}]}',
	'sha256=7f88cd7aea5379240fa8dcb52b8610d592c045cf9f61f754818b42941bab5588') AS openssl_vector;

-- Which secret verifies does not depend on what the payload names; which
-- changes apply does: only those of accounts that share that secret.  An
-- account without an app secret shares none.
CREATE TEMP TABLE route_case (n serial, what text, body text, secret text);
INSERT INTO route_case (what, body, secret) VALUES
	('names second, second''s secret',
	 pg_temp.text_from('5215512340001', 'wamid.ROUTE1', 'hola', pnid => '200200200'), 'app-secret-second'),
	('names second, main''s secret',
	 pg_temp.text_from('5215512340001', 'wamid.ROUTE2', 'hola', pnid => '200200200'), 'app-secret-main'),
	('WABA of second only, second''s secret',
	 pg_temp.env('{"event": "APPROVED", "message_template_name": "nope", "message_template_language": "es"}',
				 'message_template_status_update', '300300300'), 'app-secret-second'),
	('WABA of second only, main''s secret',
	 pg_temp.env('{"event": "APPROVED", "message_template_name": "nope", "message_template_language": "es"}',
				 'message_template_status_update', '300300300'), 'app-secret-main'),
	('names nothing known, main''s secret',
	 pg_temp.env('{"ban_info": {"waba_ban_state": "SCHEDULE_FOR_DISABLE"}}', 'account_update', '999'), 'app-secret-main'),
	('names nothing known, second''s secret',
	 pg_temp.env('{"ban_info": {"waba_ban_state": "SCHEDULE_FOR_DISABLE"}}', 'account_update', '999'), 'app-secret-second'),
	('names nothing known, dropped account''s secret',
	 pg_temp.env('{"ban_info": {"waba_ban_state": "SCHEDULE_FOR_DISABLE"}}', 'account_update', '999'), 'app-secret-gone'),
	('names an account without secret, main''s secret',
	 pg_temp.text_from('5215512340001', 'wamid.ROUTE3', 'hola', pnid => '400400400'), 'app-secret-main');
SELECT n, what, pg_temp.try(format('SELECT pg_temp.recv(%L, %L)', body, secret)) AS result
  FROM route_case ORDER BY n;
SELECT w.id, w.account, w.applied, w.ignored FROM whatsapp.webhooks w ORDER BY w.id;


-- Unsigned or wrongly signed input is 28000 whatever its shape or size:
-- nothing is parsed before the signature is checked.
SELECT what, pg_temp.try(format('SELECT whatsapp.wa_receive(%L, %L)', body, 'sha256=' || repeat('ab', 32))) AS result
  FROM (VALUES ('not JSON', 'object=whatsapp_business_account'),
			   ('empty', ''),
			   ('nested 100000 deep', repeat('[', 100000)),
			   ('16 MB', '{"object": "whatsapp_business_account", "padding": "' || repeat('x', 16 * 1024 * 1024) || '"}'),
			   ('a \u0000', '{"object": "whatsapp_business_account", "x": "\u0000"}')) v(what, body);
-- Correctly signed: not JSON is 22P02; JSON nested deeper than jsonb can
-- parse is stored and applies nothing.
SELECT pg_temp.try($$SELECT pg_temp.recv('object=whatsapp_business_account')$$) AS signed_not_json,
	   pg_temp.try(format('SELECT pg_temp.recv(%L)', repeat('[', 100000))) AS signed_nested;
SELECT length(payload), applied, ignored FROM whatsapp.webhooks ORDER BY id DESC LIMIT 1;

-- One payload signed with main's secret that also carries changes of
-- account second (another secret): main's part is applied; second's
-- status, opt-out and template update are refused and noted.
WITH s AS (SELECT whatsapp.wa_send('+52 55 2222 0001', 'de second', account => 'second') AS id)
SELECT id AS sec1 FROM s \gset
UPDATE whatsapp.message SET state = 'sent', wamid = 'wamid.SEC1', attempts = 1, sent_at = now() WHERE id = :sec1;
INSERT INTO whatsapp.templates (account, name, language, category) VALUES ('second', 'promo_second', 'es', 'MARKETING');
SELECT pg_temp.recv(jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
	jsonb_build_object('id', '102290129340398', 'changes', jsonb_build_array(
		jsonb_build_object('field', 'messages', 'value', pg_temp.inbound(
			'[{"profile": {"name": "Mixta"}, "wa_id": "5215522220002"}]',
			'[{"from": "5215522220002", "id": "wamid.MIXED-main", "timestamp": "1749416390", "type": "text", "text": {"body": "hola main"}}]')::jsonb
			-> 'entry' -> 0 -> 'changes' -> 0 -> 'value'),
		jsonb_build_object('field', 'messages', 'value', pg_temp.meta('200200200') || jsonb_build_object('statuses',
			jsonb_build_array(pg_temp.st('wamid.SEC1', 'read', 1749416391, :'sec1')))),
		jsonb_build_object('field', 'user_preferences', 'value', pg_temp.meta('200200200') ||
			'{"user_preferences": [{"wa_id": "5215522220001", "detail": "User requested to stop marketing messages",
			  "category": "marketing_messages", "value": "stop", "timestamp": 1749416392}]}'::jsonb))),
	jsonb_build_object('id', '300300300', 'changes', jsonb_build_array(
		jsonb_build_object('field', 'message_template_status_update', 'value',
			'{"event": "DISABLED", "message_template_id": 77, "message_template_name": "promo_second",
			  "message_template_language": "es", "reason": "INCORRECT_CATEGORY"}'::jsonb),
		jsonb_build_object('field', 'template_category_update', 'value',
			'{"message_template_id": 77, "message_template_name": "promo_second",
			  "message_template_language": "es", "previous_category": "MARKETING", "new_category": "UTILITY"}'::jsonb)))))::text)
	AS mixed_applied;
SELECT account, applied, unnest(ignored) AS note FROM whatsapp.webhooks WHERE id = (SELECT max(id) FROM whatsapp.webhook);
SELECT wamid, text FROM whatsapp.inbound WHERE wamid = 'wamid.MIXED-main';
SELECT state, read_at FROM whatsapp.messages WHERE id = :sec1;
SELECT count(*) AS opted_out FROM whatsapp.opt_out WHERE identifier = '+525522220001';
SELECT account, name, category, status FROM whatsapp.templates WHERE name = 'promo_second';
-- ... and the same changes signed with second's own secret apply.
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.SEC1', 'read', 1749416391, :'sec1')), '200200200'),
					'app-secret-second') AS second_signs;
SELECT state FROM whatsapp.messages WHERE id = :sec1;

-- A template update whose WABA is unknown, or missing, reaches no account.
INSERT INTO whatsapp.templates (account, name, language, category) VALUES (NULL, 'shared_tpl', 'es', 'UTILITY');
SELECT pg_temp.recv(pg_temp.env('{"event": "PAUSED", "message_template_id": 78, "message_template_name": "shared_tpl",
	"message_template_language": "es", "reason": "LOW_QUALITY"}', 'message_template_status_update', '999000999')) AS unknown_waba,
	   pg_temp.recv(pg_temp.env('{"event": "PAUSED", "message_template_id": 78, "message_template_name": "shared_tpl",
	"message_template_language": "es", "reason": "LOW_QUALITY"}', 'message_template_status_update', NULL)) AS no_waba;
SELECT account, name, status FROM whatsapp.templates WHERE name = 'shared_tpl';
SELECT applied, ignored FROM whatsapp.webhooks ORDER BY id DESC LIMIT 2;
-- A template listed for every account (account NULL), paused in main's
-- WABA: main gets a row of its own, second keeps the shared one.
SELECT pg_temp.recv(pg_temp.env('{"event": "PAUSED", "message_template_id": 78, "message_template_name": "shared_tpl",
	"message_template_language": "es", "reason": "LOW_QUALITY"}', 'message_template_status_update')) AS main_waba;
SELECT account, name, category, status FROM whatsapp.templates WHERE name = 'shared_tpl' ORDER BY account NULLS FIRST;
DELETE FROM whatsapp.templates;

-- ---------------------------------------------------------------------
-- 3. Statuses: by callback data, then wamid; never backwards
-- ---------------------------------------------------------------------
WITH s AS (SELECT whatsapp.wa_send('+52 55 1234 5678', 'pedido ' || g) AS id FROM generate_series(1, 10) g)
SELECT min(id) AS m1, min(id) + 1 AS m2, min(id) + 2 AS m3, min(id) + 3 AS m4,
	   min(id) + 4 AS m5, min(id) + 5 AS m6, min(id) + 6 AS m7, min(id) + 7 AS m8,
	   min(id) + 8 AS m9, min(id) + 9 AS m10
  FROM s \gset
SELECT count(pg_temp.sent(id, 'wamid.M' || (id - :m1 + 1))) AS recorded
  FROM whatsapp.message WHERE id BETWEEN :m1 AND :m10;

-- m1: sent (with pricing), delivered, read, then duplicates and late ones
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M1', 'sent', 1749416390, :'m1',
	'{"conversation": {"id": "c1", "expiration_timestamp": "1749502790", "origin": {"type": "utility"}},
	  "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility", "type": "regular"}}'))))
	AS sent_with_pricing;
SELECT state, pricing, conversation FROM whatsapp.messages WHERE id = :m1;
SELECT pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M1', 'delivered', 1749416400, :'m1'))) AS delivered \gset
SELECT pg_temp.recv(:'delivered') AS delivered;
SELECT * FROM pg_temp.msg(:m1);
SELECT pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M1', 'read', 1749416460, :'m1'))) AS read \gset
SELECT pg_temp.recv(:'read') AS read;
SELECT pg_temp.recv(:'read') AS same_read_again;
SELECT pg_temp.recv(:'delivered') AS same_delivered_again;
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M1', 'sent', 1749416390, :'m1')))) AS late_sent;
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M1', 'failed', 1749416500, :'m1',
	'{"errors": [{"code": 131026, "title": "Message undeliverable"}]}')))) AS failed_after_read;
SELECT * FROM pg_temp.msg(:m1);
SELECT * FROM pg_temp.log(:m1);

-- m2: read without delivered fills delivered_at; a later delivered with
-- an earlier time corrects it
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M2', 'read', 1749416600, :'m2')))) AS read_first;
SELECT * FROM pg_temp.msg(:m2);
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M2', 'delivered', 1749416550, :'m2')))) AS delivered_later;
SELECT * FROM pg_temp.msg(:m2);

-- m3: failed after sent, with Meta's error; then nothing moves it
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M3', 'failed', 1749416700, :'m3',
	'{"errors": [{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
	  "error_data": {"details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}}]}'))))
	AS failed;
SELECT * FROM pg_temp.msg(:m3);
SELECT error_details FROM whatsapp.messages WHERE id = :m3;
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M3', 'delivered', 1749416800, :'m3')))) AS delivered_after_failed;
SELECT state FROM whatsapp.messages WHERE id = :m3;

-- m4: failed after delivered is only logged
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(
	pg_temp.st('wamid.M4', 'delivered', 1749416900, :'m4'),
	pg_temp.st('wamid.M4', 'failed', 1749416910, :'m4', '{"errors": [{"code": 131000, "title": "Something went wrong"}]}'))))
	AS delivered_and_failed;
SELECT * FROM pg_temp.msg(:m4);
SELECT * FROM pg_temp.log(:m4);

-- m5: by wamid alone (no callback data); m6: played counts as read;
-- m7: a template error; m8 and m9 in one payload
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(
	pg_temp.st('wamid.M5', 'delivered', 1749417000),
	pg_temp.st('wamid.M6', 'played', 1749417010, :'m6'),
	pg_temp.st('wamid.M7', 'failed', 1749417020, :'m7', '{"errors": [{"code": 132001, "title": "Template name does not exist in the translation"}]}'),
	pg_temp.st('wamid.M8', 'delivered', 1749417030, :'m8'),
	pg_temp.st('wamid.M9', 'read', 1749417040, :'m9')))) AS five_statuses;
SELECT id - :m1 + 1 AS m, state, delivered_at, read_at, failure_type, error_code
  FROM whatsapp.messages WHERE id BETWEEN :m5 AND :m9 ORDER BY id;

-- A status that names the customer by business-scoped user id alone
-- (the number withheld) applies like any other.
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(
	pg_temp.st('wamid.M10', 'delivered', 1749417050, :'m10') - 'recipient_id'
	|| '{"recipient_user_id": "MX.1502576394655843"}'))) AS by_user_id;
SELECT state, delivered_at FROM whatsapp.messages WHERE id = :m10;

-- A status for a message of another account's number never matches.
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.M10', 'read', 1749417100, :'m10')),
									 '200200200'), 'app-secret-second') AS other_number;
SELECT state, wamid FROM whatsapp.messages WHERE id = :m10;
SELECT message_id, wamid, phone_number_id FROM whatsapp.status_held;
DELETE FROM whatsapp.status_held;

-- Callback data naming a message whose wamid differs: not that message.
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.FOREIGN', 'delivered', 1749417200, :'m10')))) AS foreign_wamid;
SELECT state FROM whatsapp.messages WHERE id = :m10;
SELECT message_id, wamid FROM whatsapp.status_held;

-- ---------------------------------------------------------------------
-- 4. A status before the worker recorded the message: held, then applied
-- ---------------------------------------------------------------------
WITH s AS (SELECT whatsapp.wa_send('+52 55 1234 5678', 'race ' || g) AS id FROM generate_series(1, 3) g)
SELECT min(id) AS r1, min(id) + 1 AS r2, min(id) + 2 AS r3 FROM s \gset
-- r1: claimed (sending), Meta's "delivered" with callback data arrives first
UPDATE whatsapp.message SET state = 'sending', attempts = 1 WHERE id = :r1;
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.R1', 'delivered', 1749418000, :'r1')))) AS early_delivered;
-- r2: "read" without callback data, for a wamid nobody recorded yet
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.R2', 'read', 1749418010)))) AS early_read;
-- r3: "sent" held, then the worker's answer is a retry: still held
UPDATE whatsapp.message SET state = 'sending', attempts = 1 WHERE id = :r3;
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.R3', 'delivered', 1749418020, :'r3')))) AS early_for_a_retry;
SELECT message_id - :r1 + 1 AS r, wamid, status ->> 'status' AS status FROM whatsapp.status_held ORDER BY id;
SELECT id - :r1 + 1 AS r, state FROM whatsapp.messages WHERE id BETWEEN :r1 AND :r3 ORDER BY id;
-- the worker records r1 and r2 (r2 gets wamid.R2) ...
SELECT pg_temp.sent(:r1, 'wamid.R1');
SELECT pg_temp.sent(:r2, 'wamid.R2');
-- ... and r3 back to queued (a 5xx): its status waits
UPDATE whatsapp.message SET state = 'queued' WHERE id = :r3;
SELECT whatsapp._after_record(ARRAY[:r3]::bigint[], ARRAY[131000]);
SELECT id - :r1 + 1 AS r, state, delivered_at, read_at FROM whatsapp.messages WHERE id BETWEEN :r1 AND :r3 ORDER BY id;
SELECT message_id - :r1 + 1 AS r, wamid FROM whatsapp.status_held ORDER BY id;
SELECT pg_temp.sent(:r3, 'wamid.R3');
SELECT state, delivered_at FROM whatsapp.messages WHERE id = :r3;
SELECT message_id, wamid FROM whatsapp.status_held ORDER BY id;
SELECT * FROM pg_temp.log(:r1);
-- held statuses nobody claims go after seven days
UPDATE whatsapp.status_held SET held_at = held_at - interval '8 days';
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.NOBODY', 'sent', 1749418100)))) AS another_held;
SELECT wamid FROM whatsapp.status_held;
DELETE FROM whatsapp.status_held;

-- 131050 from the worker's answer: failed, and a marketing opt-out
SELECT whatsapp.wa_send('+57 300 123 4567', 'promo') AS s1 \gset
UPDATE whatsapp.message SET state = 'failed', failure_type = 'whatsapp_unrecoverable',
	   error_code = 131050, error_title = '(#131050) User has stopped marketing messages',
	   attempts = 1, failed_at = now()
 WHERE id = :s1;
SELECT whatsapp._after_record(ARRAY[:s1]::bigint[], ARRAY[131050]);
SELECT identifier, scope, source, reason FROM whatsapp.opt_out ORDER BY 1, 2;
DELETE FROM whatsapp.opt_out;

-- ... and 131050 from a failed status
SELECT whatsapp.wa_send('+57 310 765 4321', 'promo') AS s2 \gset
SELECT pg_temp.sent(:s2, 'wamid.S2');
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.S2', 'failed', 1749418200, :'s2',
	'{"recipient_id": "573107654321", "errors": [{"code": 131050, "title": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business"}]}'))))
	AS failed_131050;
SELECT identifier, scope, source FROM whatsapp.opt_out ORDER BY 1, 2;
DELETE FROM whatsapp.opt_out;

-- ---------------------------------------------------------------------
-- 5. Inbound messages: every type, once per wamid
-- ---------------------------------------------------------------------
SELECT pg_temp.inbound(
	'[{"profile": {"name": "Ana López"}, "wa_id": "5215511112222", "user_id": "MX.1502576394655843", "username": "@ana"},
	  {"profile": {"name": "Bruno"}, "wa_id": "5511987654321"},
	  {"profile": {"name": "Sin Número", "username": "@oculto"}, "user_id": "MX.9999000011112222"}]',
	'[{"from": "5215511112222", "id": "wamid.IN-text", "timestamp": "1749419000", "type": "text", "text": {"body": "¿Ya salió mi pedido?"}, "context": {"from": "15550783881", "id": "wamid.M1"}},
	  {"from": "5215511112222", "id": "wamid.IN-image", "timestamp": "1749419001", "type": "image", "image": {"id": "1", "mime_type": "image/jpeg", "sha256": "x", "caption": "la factura"}},
	  {"from": "5215511112222", "id": "wamid.IN-document", "timestamp": "1749419002", "type": "document", "document": {"id": "2", "mime_type": "application/pdf", "filename": "INV-42.pdf"}},
	  {"from": "5215511112222", "id": "wamid.IN-audio", "timestamp": "1749419003", "type": "audio", "audio": {"id": "3", "mime_type": "audio/ogg", "voice": true}},
	  {"from": "5215511112222", "id": "wamid.IN-video", "timestamp": "1749419004", "type": "video", "video": {"id": "4", "caption": "así llegó"}},
	  {"from": "5215511112222", "id": "wamid.IN-sticker", "timestamp": "1749419005", "type": "sticker", "sticker": {"id": "5", "animated": false}},
	  {"from": "5215511112222", "id": "wamid.IN-location", "timestamp": "1749419006", "type": "location", "location": {"latitude": 19.4326, "longitude": -99.1332, "name": "Oficina", "address": "Reforma 1, CDMX"}},
	  {"from": "5215511112222", "id": "wamid.IN-contacts", "timestamp": "1749419007", "type": "contacts", "contacts": [{"name": {"formatted_name": "Carla Ruiz", "first_name": "Carla"}, "phones": [{"phone": "+52 55 0000 0000"}]}]},
	  {"from": "5215511112222", "id": "wamid.IN-reaction", "timestamp": "1749419008", "type": "reaction", "reaction": {"message_id": "wamid.M2", "emoji": "👍"}},
	  {"from": "5215511112222", "id": "wamid.IN-button-reply", "timestamp": "1749419009", "type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Sí, confirmar"}}},
	  {"from": "5215511112222", "id": "wamid.IN-list-reply", "timestamp": "1749419010", "type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "row-2", "title": "Martes", "description": "10:00"}}},
	  {"from": "5215511112222", "id": "wamid.IN-button", "timestamp": "1749419011", "type": "button", "context": {"from": "15550783881", "id": "wamid.M3"}, "button": {"text": "Ver pedido", "payload": "ORDER_42"}},
	  {"from": "5215511112222", "id": "wamid.IN-order", "timestamp": "1749419012", "type": "order", "order": {"catalog_id": "9", "text": "dos por favor", "product_items": [{"product_retailer_id": "A1", "quantity": 2, "item_price": 10, "currency": "MXN"}]}},
	  {"from": "5511987654321", "id": "wamid.IN-system", "timestamp": "1749419013", "type": "system", "system": {"body": "Bruno changed from 5511987654321 to 5511912345678", "new_wa_id": "5511912345678", "type": "user_changed_number"}},
	  {"from": "5511987654321", "id": "wamid.IN-unsupported", "timestamp": "1749419014", "type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}]},
	  {"from": "5511987654321", "id": "wamid.IN-welcome", "timestamp": "1749419015", "type": "request_welcome"},
	  {"from": "5511987654321", "id": "wamid.IN-referral", "timestamp": "1749419016", "type": "text", "text": {"body": "Quiero info"}, "referral": {"source_url": "https://fb.me/x", "source_type": "ad", "source_id": "123", "headline": "Oferta"}},
	  {"from_user_id": "MX.9999000011112222", "id": "wamid.IN-bsuid", "timestamp": "1749419017", "type": "text", "text": {"body": "sin número"}}]'
	) AS every_type \gset
SELECT pg_temp.recv(:'every_type') AS stored;
SELECT pg_temp.recv(:'every_type') AS same_payload_again;
SELECT wamid, type, wa_id, phone, user_id, username, name, text, context_wamid,
	   in_reply_to - :m1 + 1 AS reply_to_m, sent_at
  FROM whatsapp.inbound ORDER BY id;
SELECT wamid, referral ->> 'source_type' AS referral, raw -> 'errors' -> 0 ->> 'code' AS error_code
  FROM whatsapp.inbound WHERE referral IS NOT NULL OR type = 'unsupported' ORDER BY id;

-- A reaction is recorded on the message it reacts to (m2, above); a later
-- removal (no emoji) clears it; an older reaction arriving late does not
-- override a newer one.
SELECT reaction, reacted_at FROM whatsapp.messages WHERE id = :m2;
CREATE FUNCTION pg_temp.react(wamid text, emoji text, ts bigint, target text) RETURNS text LANGUAGE sql AS $$
	SELECT pg_temp.inbound('[{"profile": {"name": "Ana López"}, "wa_id": "5215511112222"}]',
		jsonb_build_array(jsonb_build_object('from', '5215511112222', 'id', wamid, 'timestamp', ts::text,
			'type', 'reaction', 'reaction', jsonb_strip_nulls(jsonb_build_object('message_id', target, 'emoji', emoji)))))
$$;
SELECT pg_temp.recv(pg_temp.react('wamid.REACT2', NULL, 1749419100, 'wamid.M2')) AS removed,
	   pg_temp.recv(pg_temp.react('wamid.REACT3', '❤️', 1749419050, 'wamid.M2')) AS older;
SELECT reaction, reacted_at FROM whatsapp.messages WHERE id = :m2;
SELECT pg_temp.recv(pg_temp.react('wamid.REACT4', '🙏', 1749419200, 'wamid.M3')) AS on_m3,
	   pg_temp.recv(pg_temp.react('wamid.REACT5', '🙏', 1749419200, 'wamid.NOT-OURS')) AS unknown_target;
SELECT id - :m1 + 1 AS m, reaction FROM whatsapp.messages WHERE id IN (:m2, :m3) ORDER BY id;
SELECT unnest(ignored) AS note FROM whatsapp.webhooks ORDER BY id DESC LIMIT 1;

-- Edits replace the text of the message they edit, keeping the previous
-- one in its history; they are not new messages.  A revoke marks the
-- original revoked and clears its text.
SELECT pg_temp.recv(pg_temp.text_from('5215512347777', 'wamid.ED1', 'Llego el martes', ts => 1749419300)) AS original;
CREATE FUNCTION pg_temp.edit(wamid text, original text, body text, ts bigint) RETURNS text LANGUAGE sql AS $$
	SELECT pg_temp.inbound('[{"profile": {"name": "Edita"}, "wa_id": "5215512347777"}]',
		jsonb_build_array(jsonb_build_object('from', '5215512347777', 'id', wamid, 'timestamp', ts::text,
			'type', 'edit', 'edit', jsonb_build_object('original_message_id', original,
				'message', jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', body))))))
$$;
SELECT pg_temp.recv(pg_temp.edit('wamid.ED1-e1', 'wamid.ED1', 'Llego el miércoles', 1749419360)) AS first_edit,
	   pg_temp.recv(pg_temp.edit('wamid.ED1-e1', 'wamid.ED1', 'Llego el miércoles', 1749419360) || ' ') AS same_edit_again,
	   pg_temp.recv(pg_temp.edit('wamid.ED1-e2', 'wamid.ED1', 'Llego el jueves', 1749419420)) AS second_edit,
	   pg_temp.recv(pg_temp.edit('wamid.ED1-e0', 'wamid.ED1', 'Llego el lunes', 1749419330)) AS older_edit_late;
SELECT wamid, text, edited_at, jsonb_path_query_array(history, '$[*].text') AS previous,
	   jsonb_path_query_array(history, '$[*].by') AS edits
  FROM whatsapp.inbound WHERE wamid LIKE 'wamid.ED1%' ORDER BY id;
SELECT pg_temp.recv(pg_temp.inbound('[{"profile": {"name": "Edita"}, "wa_id": "5215512347777"}]',
	'[{"from": "5215512347777", "id": "wamid.ED1-r", "timestamp": "1749419500", "type": "revoke",
	   "revoke": {"original_message_id": "wamid.ED1"}}]')) AS revoked;
SELECT wamid, text, history, revoked_at, raw ? 'text' AS has_content FROM whatsapp.inbound WHERE wamid LIKE 'wamid.ED1%';
SELECT pg_temp.recv(pg_temp.edit('wamid.ED9-e1', 'wamid.ED9', 'nunca llegó', 1749419600)) AS edit_of_unknown;
SELECT unnest(ignored) AS note FROM whatsapp.webhooks ORDER BY id DESC LIMIT 1;
-- an edit to STOP opts the sender out at the edit's time
SELECT pg_temp.recv(pg_temp.text_from('5215512347778', 'wamid.ED2', 'Stoy en camino', ts => 1749419700)) AS typo;
SELECT pg_temp.recv(replace(pg_temp.edit('wamid.ED2-e1', 'wamid.ED2', 'STOP', 1749419710), '5215512347777', '5215512347778')) AS edited_to_stop;
SELECT identifier, scope, source FROM whatsapp.opt_out WHERE identifier = '+525512347778';
DELETE FROM whatsapp.opt_out WHERE identifier = '+525512347778';

-- For a dropped or unknown account: not stored, and noted on the stored
-- payload (and logged as webhook_ignored).
SELECT pg_temp.recv(pg_temp.text_from('5215533334444', 'wamid.DROPPED', 'hola', pnid => '500500500')) AS dropped_account;
SELECT pg_temp.recv(pg_temp.text_from('5215533334444', 'wamid.UNKNOWN', 'hola', pnid => '999999')) AS unknown_account;
SELECT count(*) AS stored FROM whatsapp.inbound WHERE wamid IN ('wamid.DROPPED', 'wamid.UNKNOWN');
SELECT applied, ignored FROM whatsapp.webhooks ORDER BY id DESC LIMIT 2;
SELECT event, regexp_replace(message, '^payload \d+: ', '') AS message FROM whatsapp.log
 WHERE event = 'webhook_ignored' AND message LIKE '%no active account has phone_number_id%'
 ORDER BY at DESC, message LIMIT 2;

-- ---------------------------------------------------------------------
-- 6. Opt-out and opt-in
-- ---------------------------------------------------------------------
SELECT keyword, action, scope, language FROM whatsapp.keywords ORDER BY action DESC, keyword;
SELECT t, whatsapp.fold_keyword(t) FROM unnest(ARRAY['STOP', '¡Baja!', 'Stop.', '  stop  ', 'STOP 🛑',
	'Cancelar Suscripción', 'CANCELAR INSCRIÇÃO', 'DARME DE BAJA!!', 'quiero cancelar mi pedido', 'stop it']) t;

CREATE TEMP TABLE kw_case (n serial, wa_id text, body text);
INSERT INTO kw_case (wa_id, body) VALUES
	('5215512345678', 'STOP'),						-- Mexico's 521 form
	('34612345678', '¡Baja!'),
	('551187654321', 'Cancelar inscrição'),		-- Brazil, no ninth digit
	('5491122334455', 'parar.'),					-- Argentina mobile
	('573001112233', 'quiero cancelar mi pedido'),
	('573001112244', 'stop it'),
	('573001112255', 'Por favor, BAJA'),
	('14155550100', 'Stop promotions');
SELECT n, body, pg_temp.recv(pg_temp.text_from(wa_id, 'wamid.KW' || n, body)) AS applied
  FROM kw_case ORDER BY n;
SELECT identifier, scope, source, reason FROM whatsapp.opt_out ORDER BY identifier, scope;

-- What enqueue makes of it: the number as written, in any of its forms.
INSERT INTO batch (id) SELECT whatsapp.wa_send(r, 'hola') FROM unnest(ARRAY['+52 1 55 1234 5678',
	'+52 55 1234 5678', '+55 11 98765-4321', '+54 11 2233-4455', '+57 300 111 2233', '+1 415 555 0100']) r;
SELECT recipient, state, failure_type, error_title FROM pg_temp.batch();
TRUNCATE batch;

-- An ordinary later message does not lift it; a later START does.
SELECT pg_temp.recv(pg_temp.text_from('5215512345678', 'wamid.KW-later', 'gracias', ts => 1749416400)) AS ordinary;
SELECT count(*) AS still_opted_out FROM whatsapp.opt_out WHERE identifier = '+525512345678';
SELECT pg_temp.recv(pg_temp.text_from('5215512345678', 'wamid.KW-start', 'Start', ts => 1749416500)) AS start;
SELECT count(*) AS opted_out FROM whatsapp.opt_out WHERE identifier = '+525512345678';
SELECT pg_temp.recv(pg_temp.text_from('34612345678', 'wamid.KW-alta', 'ALTA', ts => 1749416500)) AS alta;
SELECT whatsapp.wa_send('+34 612 34 56 78', 'de nuevo') > 0 AS queued;
SELECT state FROM whatsapp.messages WHERE payload -> 'text' ->> 'body' = 'de nuevo';

-- Buttons: a template quick reply and an interactive reply.
SELECT pg_temp.recv(pg_temp.inbound('[{"profile": {"name": "Q"}, "wa_id": "5216699887766"}]',
	'[{"from": "5216699887766", "id": "wamid.BTN1", "timestamp": "1749420000", "type": "button",
	   "button": {"text": "Stop promotions", "payload": "STOP_PROMOTIONS"}}]')) AS quick_reply;
SELECT pg_temp.recv(pg_temp.inbound('[{"profile": {"name": "R"}, "wa_id": "5216699887700"}]',
	'[{"from": "5216699887700", "id": "wamid.BTN2", "timestamp": "1749420001", "type": "interactive",
	   "interactive": {"type": "button_reply", "button_reply": {"id": "opt-out", "title": "Parar"}}}]')) AS interactive_reply;
SELECT identifier, scope, source FROM whatsapp.opt_out WHERE identifier IN ('+526699887766', '+526699887700');

-- A business-scoped user id alone: that person, and every identifier known for them.
SELECT pg_temp.recv(pg_temp.text_from(NULL, 'wamid.BSUID-STOP', 'STOP', user_id => 'MX.1502576394655843')) AS bsuid_stop;
SELECT identifier, scope, source FROM whatsapp.opt_out
 WHERE identifier IN ('MX.1502576394655843', '+525511112222') ORDER BY 1;
INSERT INTO batch (id) VALUES (whatsapp.wa_send('+52 55 1111 2222', 'hola Ana'));
SELECT recipient, state, failure_type FROM pg_temp.batch();
TRUNCATE batch;
-- A number seen later with an opted-out user id is blocked too.
SELECT pg_temp.recv(pg_temp.text_from(NULL, 'wamid.BSUID-STOP2', 'baja', user_id => 'MX.9999000011112222')) AS bsuid_stop;
SELECT pg_temp.recv(pg_temp.text_from('5215599990000', 'wamid.BSUID-LATER', 'hola', user_id => 'MX.9999000011112222')) AS seen_later;
SELECT identifier, source FROM whatsapp.opt_out WHERE identifier IN ('MX.9999000011112222', '+525599990000') ORDER BY 1;

-- Meta's user_preferences: marketing stop and resume.
SELECT pg_temp.env(pg_temp.meta() || '{"contacts": [{"wa_id": "5215577778888", "profile": {"name": "Pref"}}],
	"user_preferences": [{"wa_id": "5215577778888", "detail": "User requested to stop marketing messages",
	  "category": "marketing_messages", "value": "stop", "timestamp": 1749421000}]}', 'user_preferences') AS prefs_stop \gset
SELECT pg_temp.recv(:'prefs_stop') AS prefs_stop, pg_temp.recv(:'prefs_stop') AS again;
SELECT identifier, scope, source, reason FROM whatsapp.opt_out WHERE identifier = '+525577778888';
SELECT pg_temp.recv(pg_temp.env(pg_temp.meta() || '{"user_preferences": [{"wa_id": "5215577778888",
	"detail": "User requested to resume marketing messages", "category": "marketing_messages",
	"value": "resume", "timestamp": 1749421100}]}', 'user_preferences')) AS prefs_resume;
SELECT count(*) AS opted_out FROM whatsapp.opt_out WHERE identifier = '+525577778888';

-- Consent in the order of the events' own times, per identifier and
-- scope.  user_preferences: a stop at T+100 and a resume at T, in both
-- arrival orders; the older event never overrides the newer one.
CREATE FUNCTION pg_temp.pref(wa_id text, value text, ts bigint) RETURNS text LANGUAGE sql AS $$
	SELECT pg_temp.env(pg_temp.meta() || jsonb_build_object(
		'contacts', jsonb_build_array(jsonb_build_object('wa_id', wa_id, 'profile', jsonb_build_object('name', 'Pref'))),
		'user_preferences', jsonb_build_array(jsonb_build_object('wa_id', wa_id,
			'detail', 'User requested to ' || value || ' marketing messages',
			'category', 'marketing_messages', 'value', value, 'timestamp', ts))), 'user_preferences')
$$;
CREATE FUNCTION pg_temp.scopes(identifier text) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(string_agg(scope, ',' ORDER BY scope), '-') FROM whatsapp.opt_out o WHERE o.identifier = $1
$$;
-- newer stop first, then the older resume
SELECT pg_temp.recv(pg_temp.pref('5215561110001', 'stop', 1749430100)) AS stop_t100,
	   pg_temp.recv(pg_temp.pref('5215561110001', 'resume', 1749430000)) AS resume_t;
SELECT pg_temp.scopes('+525561110001') AS in_force;
SELECT unnest(ignored) AS note FROM whatsapp.webhooks ORDER BY id DESC LIMIT 1;
-- older resume first, then the newer stop
SELECT pg_temp.recv(pg_temp.pref('5215561110002', 'resume', 1749430000)) AS resume_t,
	   pg_temp.recv(pg_temp.pref('5215561110002', 'stop', 1749430100)) AS stop_t100;
SELECT pg_temp.scopes('+525561110002') AS in_force;
-- a newer resume lifts it; replaying the old stop (its exact bytes, or the
-- same event in another payload) changes nothing
SELECT pg_temp.recv(pg_temp.pref('5215561110002', 'resume', 1749430200)) AS resume_t200;
SELECT pg_temp.scopes('+525561110002') AS in_force;
SELECT pg_temp.recv(pg_temp.pref('5215561110002', 'stop', 1749430100)) AS replayed_bytes,
	   pg_temp.recv(pg_temp.pref('5215561110002', 'stop', 1749430100) || ' ') AS replayed_event;
SELECT pg_temp.scopes('+525561110002') AS in_force;
SELECT action, scope, source, event_at FROM whatsapp.consents WHERE identifier = '+525561110002' ORDER BY id;

-- Keywords likewise: a STOP at T+100 and a START at T, both orders.
SELECT pg_temp.recv(pg_temp.text_from('5215561110003', 'wamid.ORD-stop', 'STOP', ts => 1749430100)) AS stop_t100,
	   pg_temp.recv(pg_temp.text_from('5215561110003', 'wamid.ORD-start', 'START', ts => 1749430000)) AS start_t;
SELECT pg_temp.scopes('+525561110003') AS in_force;
SELECT pg_temp.recv(pg_temp.text_from('5215561110004', 'wamid.ORD-start2', 'START', ts => 1749430000)) AS start_t,
	   pg_temp.recv(pg_temp.text_from('5215561110004', 'wamid.ORD-stop2', 'STOP', ts => 1749430100)) AS stop_t100;
SELECT pg_temp.scopes('+525561110004') AS in_force;
-- per scope: STOP PROMOTIONS at T+100 outlives a START (all) at T+50
SELECT pg_temp.recv(pg_temp.text_from('5215561110005', 'wamid.ORD-promo', 'Stop promotions', ts => 1749430100)) AS stop_promotions_t100,
	   pg_temp.recv(pg_temp.text_from('5215561110005', 'wamid.ORD-start3', 'START', ts => 1749430050)) AS start_t50;
SELECT pg_temp.scopes('+525561110005') AS in_force;
-- wa_opt_in (now) lifts an opt-out of yesterday; a STOP of yesterday that
-- Meta delivers only now does not override it
SELECT pg_temp.recv(pg_temp.text_from('5215561110006', 'wamid.ORD-stop6', 'STOP',
	ts => extract(epoch FROM now() - interval '1 day')::bigint)) AS stop_yesterday;
SELECT whatsapp.wa_opt_in('+52 55 6111 0006') AS lifted_now;
SELECT pg_temp.recv(pg_temp.text_from('5215561110006', 'wamid.ORD-stop6b', 'BAJA',
	ts => extract(epoch FROM now() - interval '2 hours')::bigint)) AS late_stop;
SELECT pg_temp.scopes('+525561110006') AS in_force;

-- An opt-out from a wa_id the normalizer rejects (a NANP exchange cannot
-- start with 1) is recorded under the raw wa_id, noted, and blocks sends
-- to it; a user_preferences stop with only a user id is recorded too.
SELECT pg_temp.recv(pg_temp.text_from('16501230100', 'wamid.RAW-stop', 'STOP', ts => 1749430300)) AS raw_stop;
SELECT identifier, scope, source FROM whatsapp.opt_out WHERE identifier = '+16501230100';
SELECT unnest(ignored) AS note FROM whatsapp.webhooks ORDER BY id DESC LIMIT 1;
INSERT INTO batch (id) VALUES (whatsapp.wa_send('+16501230100', 'hola'));
SELECT recipient, state, failure_type, error_title FROM pg_temp.batch();
TRUNCATE batch;
SELECT pg_temp.recv(pg_temp.env(pg_temp.meta() || '{"user_preferences": [{"wa_id": "16501230199",
	"detail": "User requested to stop marketing messages", "category": "marketing_messages",
	"value": "stop", "timestamp": 1749430310}]}', 'user_preferences')) AS raw_pref_stop;
SELECT identifier, scope, source FROM whatsapp.opt_out WHERE identifier = '+16501230199';

-- contacts[] are matched by wa_id or user id, never by position: a STOP
-- whose only contact is someone else opts out the sender alone, and links
-- no one to them.
SELECT pg_temp.recv(pg_temp.inbound(
	'[{"profile": {"name": "Otra Persona"}, "wa_id": "5215561119999", "user_id": "MX.7000000000000001"}]',
	'[{"from": "5215561110007", "id": "wamid.OTHER-contact", "timestamp": "1749430400", "type": "text", "text": {"body": "STOP"}}]'))
	AS stop_other_contact;
SELECT identifier FROM whatsapp.opt_out
 WHERE identifier IN ('+525561110007', '+525561119999', 'MX.7000000000000001') ORDER BY 1;
SELECT wa_id, user_id, name FROM whatsapp.inbound WHERE wamid = 'wamid.OTHER-contact';
SELECT pg_temp.recv(pg_temp.env(pg_temp.meta() || '{"contacts": [{"wa_id": "5215561119998", "user_id": "MX.7000000000000002", "profile": {"name": "Otra"}}],
	"user_preferences": [{"wa_id": "5215561110008", "detail": "User requested to stop marketing messages",
	  "category": "marketing_messages", "value": "stop", "timestamp": 1749430410}]}', 'user_preferences')) AS pref_other_contact;
SELECT identifier, scope FROM whatsapp.opt_out
 WHERE identifier IN ('+525561110008', '+525561119998', 'MX.7000000000000002') ORDER BY 1;

-- Coexistence echoes are neither inbound nor a STOP.
SELECT pg_temp.recv(pg_temp.env(pg_temp.meta() || '{"message_echoes": [{"from": "15550783881", "to": "5215566665555",
	"id": "wamid.ECHO1", "timestamp": "1749422000", "type": "text", "text": {"body": "STOP"}}]}',
	'smb_message_echoes')) AS echo;
SELECT pg_temp.recv(pg_temp.env(pg_temp.meta() || '{"history": [{"metadata": {"phase": 0}, "threads": []}]}', 'history')) AS history;
SELECT count(*) AS inbound, (SELECT count(*) FROM whatsapp.opt_out WHERE identifier = '+525566665555') AS opted_out
  FROM whatsapp.inbound WHERE wamid = 'wamid.ECHO1';
SELECT ignored FROM whatsapp.webhooks ORDER BY id DESC LIMIT 2;

-- wa_opt_out and wa_opt_in
SELECT whatsapp.wa_opt_out('+49 151 23456789', reason => 'asked by phone') AS first,
	   whatsapp.wa_opt_out('+4915123456789') AS again;
SELECT whatsapp.wa_opt_out('+49 151 23456789', 'marketing') AS marketing_too;
SELECT whatsapp.wa_opt_in('+49 151 23456789', 'marketing') AS lift_marketing;
SELECT scope FROM whatsapp.opt_out WHERE identifier = '+4915123456789';
SELECT whatsapp.wa_opt_in('+49 151 23456789') AS lift_all, whatsapp.wa_opt_in('+49 151 23456789') AS nothing_left;
SELECT whatsapp.wa_opt_out('BR.1502576394655843') AS bsuid;
SET whatsapp.default_country_code = '57';
SELECT whatsapp.wa_opt_out('300 444 5566') AS national;
RESET whatsapp.default_country_code;
SELECT identifier, scope, source FROM whatsapp.opt_out WHERE source LIKE 'wa_opt%' ORDER BY 1;
SELECT n, call, pg_temp.try('SELECT ' || call) AS result FROM (VALUES
	(1, $$whatsapp.wa_opt_out(NULL)$$),
	(2, $$whatsapp.wa_opt_out('+4915123456789', 'promotions')$$),
	(3, $$whatsapp.wa_opt_out('+4915123456789', NULL)$$),
	(4, $$whatsapp.wa_opt_out('not a number')$$),
	(5, $$whatsapp.wa_opt_out('300 444 5566')$$),
	(6, $$whatsapp.wa_opt_in('+4915123456789', 'ALL')$$),
	(7, $$whatsapp.wa_opt_in(NULL)$$)) v(n, call) ORDER BY n;

-- The consents view: every opt-out and opt-in, with source and scope.
SELECT identifier, action, scope, source, account, wamid, opted_out_now
  FROM whatsapp.consents ORDER BY id;

-- Keywords of your own; the shipped ones can be overridden, not changed.
INSERT INTO whatsapp.keywords (keyword, action, scope, language) VALUES ('¡Basta Ya!', 'stop', 'all', 'es');
INSERT INTO whatsapp.keywords (keyword, action) VALUES ('alto', 'none');
SELECT keyword, action, builtin FROM whatsapp.keywords WHERE keyword IN ('basta ya', 'alto') ORDER BY 1, 3;
SELECT pg_temp.recv(pg_temp.text_from('5215500001111', 'wamid.KW-basta', 'basta ya')) AS own_keyword,
	   pg_temp.recv(pg_temp.text_from('5215500002222', 'wamid.KW-alto', 'ALTO')) AS disabled_keyword;
SELECT identifier FROM whatsapp.opt_out WHERE identifier IN ('+525500001111', '+525500002222');
SELECT pg_temp.try($$UPDATE whatsapp.keywords SET scope = 'marketing' WHERE keyword = 'baja' AND builtin RETURNING keyword$$) AS change_builtin;
SELECT pg_temp.try($$INSERT INTO whatsapp.keywords (keyword, action) VALUES ('¡¡!!', 'stop') RETURNING keyword$$) AS empty_keyword;
SELECT pg_temp.try($$INSERT INTO whatsapp.keywords (keyword, action) VALUES ('fin', 'end') RETURNING keyword$$) AS bad_action;

-- Odoo's phone_blacklist is honored when it exists.
CREATE TABLE public.phone_blacklist (id serial PRIMARY KEY, number varchar UNIQUE, active boolean);
INSERT INTO public.phone_blacklist (number, active) VALUES ('+56912345678', true), ('+56987654321', false);
INSERT INTO batch (id) SELECT whatsapp.wa_send(r, 'odoo') FROM unnest(ARRAY['+56 9 1234 5678', '+56 9 8765 4321']) r;
DROP TABLE public.phone_blacklist;
INSERT INTO batch (id) VALUES (whatsapp.wa_send('+56 9 1234 5678', 'without the blacklist'));
SELECT recipient, state, failure_type, error_title FROM pg_temp.batch();
TRUNCATE batch;

-- ---------------------------------------------------------------------
-- 7. Templates: the table, the marketing scope, Meta's updates
-- ---------------------------------------------------------------------
INSERT INTO whatsapp.templates (account, name, language, category) VALUES
	(NULL, 'weekly_offer', 'es-MX', 'marketing'),
	('main', 'order_confirmation', 'es_MX', 'UTILITY');
SELECT account, name, language, category, status FROM whatsapp.templates ORDER BY name;
SELECT pg_temp.try($$INSERT INTO whatsapp.templates (name, language, category) VALUES ('x', 'es', 'PROMO') RETURNING name$$) AS bad_category;
-- the quick-reply opt-out above was marketing only
INSERT INTO batch (id) VALUES
	(whatsapp.wa_send_template('+52 66 9988 7766', 'weekly_offer', 'es_MX')),
	(whatsapp.wa_send_template('+52 66 9988 7766', 'order_confirmation', 'es_MX')),
	(whatsapp.wa_send('+52 66 9988 7766', 'su pedido'));
SELECT kind, state, failure_type, error_title FROM pg_temp.batch();
TRUNCATE batch;
SELECT pg_temp.recv(pg_temp.env('{"event": "PAUSED", "message_template_id": 5, "message_template_name": "weekly_offer",
	"message_template_language": "es_MX", "reason": "LOW_QUALITY"}', 'message_template_status_update')) AS status_update;
SELECT pg_temp.recv(pg_temp.env('{"message_template_id": 6, "message_template_name": "order_confirmation",
	"message_template_language": "es_MX", "previous_category": "UTILITY", "new_category": "MARKETING"}',
	'template_category_update')) AS category_update;
SELECT name, category, status FROM whatsapp.templates ORDER BY name;
SELECT message FROM whatsapp.log WHERE message LIKE 'template %' ORDER BY at, message;

-- ---------------------------------------------------------------------
-- 7b. Meta's account events act
-- ---------------------------------------------------------------------
CREATE FUNCTION pg_temp.acct() RETURNS TABLE (name text, paused boolean, paused_reason text,
	meta_status text, quality text, messaging_limit text, display_phone_number text)
LANGUAGE sql AS $$
	SELECT name, paused, paused_reason, meta_status, quality, messaging_limit, display_phone_number
	  FROM whatsapp.accounts WHERE name IN ('main', 'second') ORDER BY name
$$;
-- the entry's "time" is when Meta sent it
CREATE FUNCTION pg_temp.acct_event(value jsonb, field text DEFAULT 'account_update',
								   waba text DEFAULT '102290129340398') RETURNS text LANGUAGE sql AS $$
	SELECT jsonb_set(pg_temp.env(value, field, waba)::jsonb, '{entry,0,time}', '1749500000')::text
$$;
SELECT whatsapp.wa_send('+52 55 7777 0001', 'while banned') AS ban1 \gset
-- scheduled for disabling: recorded, not paused
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "SCHEDULE_FOR_DISABLE", "waba_ban_date": "June 20, 2025"}}')) AS scheduled;
SELECT * FROM pg_temp.acct();
-- disabled (banned): main is paused and says why; its queued message stays queued
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE", "waba_ban_date": "June 20, 2025"}}')) AS banned;
SELECT * FROM pg_temp.acct();
SELECT meta_status_at FROM whatsapp.accounts WHERE name = 'main';
SELECT state FROM whatsapp.messages WHERE id = :ban1;
-- reinstated: resumed
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "REINSTATE", "waba_ban_date": "June 21, 2025"}}')) AS reinstated;
SELECT name, paused, meta_status FROM pg_temp.acct();
-- restricted messaging: paused, with the restriction and its end
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "ACCOUNT_RESTRICTION", "restriction_info": [
	{"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": 1751000000},
	{"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": 1751000000}]}')) AS restricted;
SELECT name, paused, paused_reason FROM pg_temp.acct();
SELECT whatsapp.wa_account_set('main', '106540352242922', NULL, waba_id => '102290129340398') AS resumed_by_admin;
SELECT name, paused FROM pg_temp.acct();
-- offboarded: paused; reconnected: resumed.  A violation is recorded.
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "ACCOUNT_OFFBOARDED"}')) AS offboarded;
SELECT name, paused, paused_reason FROM pg_temp.acct();
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "ACCOUNT_RECONNECTED"}')) AS reconnected,
	   pg_temp.recv(pg_temp.acct_event('{"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SCAM"}}')) AS violation;
SELECT name, paused, meta_status FROM pg_temp.acct();
SELECT message FROM whatsapp.log WHERE message LIKE 'account_update%' ORDER BY at, message;

-- phone_number_quality_update: recorded on the account whose display
-- number (learned from the metadata of messages webhooks) it names
SELECT pg_temp.recv(pg_temp.acct_event('{"display_phone_number": "15550783881", "event": "FLAGGED",
	"current_limit": "TIER_1K"}', 'phone_number_quality_update')) AS flagged;
SELECT name, quality, messaging_limit, display_phone_number FROM pg_temp.acct();
SELECT pg_temp.recv(pg_temp.acct_event('{"display_phone_number": "15550783881", "event": "UNFLAGGED",
	"max_daily_conversations_per_business": "TIER_10K"}', 'phone_number_quality_update')) AS unflagged,
	   pg_temp.recv(pg_temp.acct_event('{"display_phone_number": "+1 555-078-9999", "event": "DOWNGRADE",
	"old_limit": "TIER_10K", "current_limit": "TIER_1K"}', 'phone_number_quality_update')) AS another_number;
SELECT name, quality, messaging_limit, quality_at FROM whatsapp.accounts WHERE name IN ('main', 'second') ORDER BY name;
SELECT applied, ignored FROM whatsapp.webhooks ORDER BY id DESC LIMIT 1;

-- a template Meta paused or disabled fails new sends at enqueue
-- (failure_type template) until Meta approves it again; its quality score
-- is recorded
INSERT INTO whatsapp.templates (account, name, language, category) VALUES
	('main', 'pedido_listo', 'es_MX', 'UTILITY'), ('main', 'pedido_listo', 'en_US', 'UTILITY');
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "PAUSED", "message_template_id": 9001, "message_template_name": "pedido_listo",
	"message_template_language": "es_MX", "reason": null, "other_info": {"title": "FIRST_PAUSE", "description": "Your template has been paused for 3 hours"}}',
	'message_template_status_update')) AS paused,
	   pg_temp.recv(pg_temp.acct_event('{"previous_quality_score": "GREEN", "new_quality_score": "RED", "message_template_id": 9001,
	"message_template_name": "pedido_listo", "message_template_language": "es_MX"}', 'message_template_quality_update')) AS quality;
SELECT name, language, status, quality FROM whatsapp.templates WHERE name = 'pedido_listo' ORDER BY language;
INSERT INTO batch (id) VALUES
	(whatsapp.wa_send_template('+52 55 7777 0002', 'pedido_listo', 'es-MX')),
	(whatsapp.wa_send_template('+52 55 7777 0002', 'pedido_listo', 'en_US'));
SELECT kind, state, failure_type, regexp_replace(error_title, 'since .*;', 'since …;') AS error_title FROM pg_temp.batch();
TRUNCATE batch;
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "DISABLED", "message_template_id": 9001, "message_template_name": "pedido_listo",
	"message_template_language": "es_MX", "reason": "INCORRECT_CATEGORY"}', 'message_template_status_update')) AS disabled;
INSERT INTO batch (id) VALUES (whatsapp.wa_send_template('+52 55 7777 0002', 'pedido_listo', 'es_MX'));
SELECT pg_temp.recv(pg_temp.acct_event('{"event": "APPROVED", "message_template_id": 9001, "message_template_name": "pedido_listo",
	"message_template_language": "es_MX", "reason": "NONE"}', 'message_template_status_update')) AS approved;
INSERT INTO batch (id) VALUES (whatsapp.wa_send_template('+52 55 7777 0002', 'pedido_listo', 'es_MX'));
SELECT kind, state, failure_type FROM pg_temp.batch();
TRUNCATE batch;
DELETE FROM whatsapp.templates WHERE name = 'pedido_listo';

-- ---------------------------------------------------------------------
-- 8. The 24-hour window
-- ---------------------------------------------------------------------
SELECT pg_temp.recv(pg_temp.text_from('5491133334444', 'wamid.WIN1', 'hola',
									  ts => extract(epoch FROM now())::bigint - 60)) AS recent;
SET whatsapp.window_check = 'block';
-- recent (with and without Argentina's 9), long ago, never; then a template
INSERT INTO batch (id) SELECT whatsapp.wa_send(r, 'ventana')
  FROM unnest(ARRAY['+54 9 11 3333-4444', '+54 11 3333 4444', '+1 650 555 1234', '+34 699 000 111']) r;
INSERT INTO batch (id) VALUES (whatsapp.wa_send_template('+34 699 000 111', 'order_confirmation', 'es_MX'));
SELECT recipient, kind, state, failure_type, error_code FROM pg_temp.batch();
SELECT error_title, failed_at IS NOT NULL AS has_failed_at
  FROM whatsapp.messages WHERE id = (SELECT id FROM batch ORDER BY o OFFSET 3 LIMIT 1);
TRUNCATE batch;
SET whatsapp.window_check = 'warn';
INSERT INTO batch (id) VALUES (whatsapp.wa_send('+34 699 000 111', 'ventana, warn'));
RESET whatsapp.window_check;
INSERT INTO batch (id) VALUES (whatsapp.wa_send('+34 699 000 111', 'ventana, off'));
SELECT recipient, kind, state, failure_type FROM pg_temp.batch();
TRUNCATE batch;
SELECT account, recipient, wa_id, user_id,
	   CASE WHEN last_inbound_at < '2026-01-01' THEN last_inbound_at::text ELSE 'recent' END AS last_inbound,
	   open_until - last_inbound_at AS span, open
  FROM whatsapp.windows ORDER BY account, recipient NULLS LAST, user_id;

-- ---------------------------------------------------------------------
-- 9. Bad input: an error, or a correct partial application, each
-- ---------------------------------------------------------------------
SELECT max(id) AS before FROM whatsapp.webhook \gset
SELECT whatsapp.wa_send('+52 55 4444 0000', 'partial') AS p1 \gset
SELECT pg_temp.sent(:p1, 'wamid.P1');
CREATE TEMP TABLE bad_case (n serial, what text, body text);
INSERT INTO bad_case (what, body) VALUES
	('malformed JSON', '{"object": "whatsapp_business_account", "entry": ['),
	('not JSON at all', 'object=whatsapp_business_account'),
	('empty body', ''),
	('a \u0000 (replaced by U+FFFD; nothing else to apply)', '{"object": "whatsapp_business_account", "x": "\u0000"}'),
	('a JSON array', '[1, 2, 3]'),
	('a JSON string', '"hello"'),
	('another object type', '{"object": "page", "entry": [{"id": "1", "changes": []}]}'),
	('no object member', '{"entry": []}'),
	('entry is not an array', '{"object": "whatsapp_business_account", "entry": {"id": "1"}}'),
	('changes is an object', '{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": {"field": "messages"}}]}'),
	('a change without field', pg_temp.env('{}', NULL)),
	('value is a string', '{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": "x"}]}]}'),
	('statuses is a string', pg_temp.env(pg_temp.meta() || '{"statuses": "delivered"}')),
	('a status of the wrong types, and a good one',
	 pg_temp.statuses(jsonb_build_array(
		'{"id": 42, "status": "read"}'::jsonb,
		'{"id": "wamid.P1", "status": ["delivered"]}'::jsonb,
		jsonb_build_object('id', 'wamid.P1', 'status', 'delivered', 'timestamp', jsonb_build_object('t', 1),
						   'biz_opaque_callback_data', :p1, 'pricing', 'free', 'conversation', 7)))),
	('a status of unknown kind', pg_temp.statuses('[{"id": "wamid.P1", "status": "deleted", "timestamp": "1749423000"}]')),
	('a message without id, one of unknown type',
	 pg_temp.inbound('[]', '[{"from": "5215512349999", "type": "text", "text": {"body": "x"}},
						   {"from": "not digits", "id": "wamid.BAD-TYPE", "timestamp": "soon", "type": "hologram"}]')),
	('an unknown field', pg_temp.env('{"x": 1}', 'phone_number_quality_update')),
	('errors at the top of value', pg_temp.env(pg_temp.meta() || '{"errors": [{"code": 131008, "title": "Required parameter is missing", "error_data": {"details": "x is required"}}, "not an error"]}')),
	('JSON nested deeper than the server''s stack allows (found by test/fuzz)',
	 '{"object": "whatsapp_business_account", "x": ' || repeat('[', 200000) || repeat(']', 200000) || '}');
DO $$
DECLARE
	b record;
	r text;
BEGIN
	FOR b IN SELECT * FROM bad_case ORDER BY n LOOP
		r := pg_temp.try(format('SELECT pg_temp.recv(%L)', b.body));
		RAISE NOTICE '% %: %', b.n, b.what, r;
	END LOOP;
END
$$;
SELECT w.id - :before AS n, w.applied, w.ignored FROM whatsapp.webhooks w WHERE w.id > :before ORDER BY w.id;
SELECT state, delivered_at IS NOT NULL AS has_delivered_at, pricing FROM whatsapp.messages WHERE id = :p1;
SELECT wamid, type, wa_id, sent_at = received_at AS receipt_time FROM whatsapp.inbound WHERE wamid = 'wamid.BAD-TYPE';

-- A text with \u0000 (a NUL, which PostgreSQL's text cannot hold): the
-- NUL becomes U+FFFD and the payload is applied, with a note; the stored
-- payload keeps the exact bytes.
SELECT pg_temp.recv(replace(pg_temp.text_from('5215512348888', 'wamid.NUL1', 'hola'), 'hola', 'ho\u0000la')) AS with_nul;
SELECT text, text = 'ho' || U&'\FFFD' || 'la' AS replacement_character FROM whatsapp.inbound WHERE wamid = 'wamid.NUL1';
SELECT applied, ignored, strpos(payload, 'ho\u0000la') > 0 AS verbatim FROM whatsapp.webhooks ORDER BY id DESC LIMIT 1;
-- an escaped backslash before "u0000" is text, not a NUL
SELECT pg_temp.recv(replace(pg_temp.text_from('5215512348888', 'wamid.NUL2', 'hola'), 'hola', 'C:\\u0000')) AS escaped_backslash;
SELECT text FROM whatsapp.inbound WHERE wamid = 'wamid.NUL2';

-- Redelivery: the same bytes again change nothing and add no held row and
-- no log row; the copy is stored once more, marked as a redelivery.
SELECT whatsapp.wa_send('+52 55 4444 7777', 'redelivery') AS rd1 \gset
UPDATE whatsapp.message SET state = 'sending', attempts = 1 WHERE id = :rd1;
SELECT pg_temp.env(pg_temp.meta() || jsonb_build_object(
	'statuses', jsonb_build_array(pg_temp.st('wamid.RD1', 'delivered', 1749423200, :'rd1')),
	'errors', '[{"code": 131008, "title": "Required parameter is missing", "error_data": {"details": "x is required"}}]'::jsonb)) AS redelivered \gset
SELECT count(*) AS log_before, (SELECT max(id) FROM whatsapp.webhook) AS first_id FROM whatsapp.log \gset
SELECT pg_temp.recv(:'redelivered') AS first, pg_temp.recv(:'redelivered') AS second, pg_temp.recv(:'redelivered') AS third;
SELECT count(*) AS held FROM whatsapp.status_held WHERE wamid = 'wamid.RD1';
SELECT count(*) - :log_before AS new_log_rows FROM whatsapp.log;
SELECT id - :first_id AS n, applied, duplicate_of - :first_id AS duplicate_of,
	   regexp_replace(ignored::text, 'payload \d+', 'payload N') AS ignored
  FROM whatsapp.webhooks WHERE id > :first_id ORDER BY id;
-- the same status in other bytes (another order of its keys) is held once
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(jsonb_build_object('timestamp', '1749423200',
	'status', 'delivered', 'id', 'wamid.RD1', 'biz_opaque_callback_data', :'rd1')))) AS other_bytes;
SELECT count(*) AS held FROM whatsapp.status_held WHERE wamid = 'wamid.RD1';
SELECT pg_temp.sent(:rd1, 'wamid.RD1');
SELECT state, (SELECT count(*) FROM whatsapp.status_held WHERE wamid = 'wamid.RD1') AS held_left
  FROM whatsapp.messages WHERE id = :rd1;

-- One status alone: the statement that applies it also makes the
-- redelivery check.  The same bytes again apply nothing, even when the
-- status would be news for the message again (here it was put back to
-- sent), and learn no display number (here changed since).
SELECT whatsapp.wa_send('+52 55 4444 7788', 'redelivery alone') AS rd2 \gset
SELECT pg_temp.sent(:rd2, 'wamid.RD2');
SELECT pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.RD2', 'delivered', 1749423300, :'rd2'))) AS alone \gset
SELECT count(*) AS log_before, (SELECT max(id) FROM whatsapp.webhook) AS first_id FROM whatsapp.log \gset
SELECT pg_temp.recv(:'alone') AS first;
UPDATE whatsapp.message SET state = 'sent', delivered_at = NULL WHERE id = :rd2;
UPDATE whatsapp.account SET display_phone_number = '15550780000' WHERE phone_number_id = '106540352242922';
SELECT pg_temp.recv(:'alone') AS second;
SELECT state, delivered_at IS NULL AS no_delivered_at FROM whatsapp.messages WHERE id = :rd2;
SELECT display_phone_number FROM whatsapp.account WHERE phone_number_id = '106540352242922';
SELECT count(*) - :log_before AS new_log_rows FROM whatsapp.log;
SELECT id - :first_id AS n, applied, duplicate_of - :first_id AS duplicate_of,
	   regexp_replace(ignored::text, 'payload \d+', 'payload N') AS ignored
  FROM whatsapp.webhooks WHERE id > :first_id ORDER BY id;
-- the number is learned again from a payload that is news
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.RD2', 'read', 1749423400, :'rd2')))) AS read;
SELECT display_phone_number FROM whatsapp.account WHERE phone_number_id = '106540352242922';
-- The same bytes twice in one statement, with no function between that
-- starts a new command: the second call sees the first one's payload.
SELECT whatsapp.wa_send('+52 55 4444 7799', 'redelivery in one statement') AS rd3 \gset
SELECT pg_temp.sent(:rd3, 'wamid.RD3');
SELECT pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.RD3', 'delivered', 1749423500, :'rd3'))) AS twice \gset
SELECT pg_temp.sig(:'twice', 'app-secret-main') AS twice_sig \gset
SELECT count(*) AS log_before, (SELECT max(id) FROM whatsapp.webhook) AS first_id FROM whatsapp.log \gset
SELECT array_agg(whatsapp.wa_receive(b, :'twice_sig') ORDER BY n) AS applied
  FROM (VALUES (1, :'twice'), (2, :'twice')) v(n, b);
SELECT count(*) - :log_before AS new_log_rows FROM whatsapp.log;
SELECT id - :first_id AS n, applied, duplicate_of - :first_id AS duplicate_of
  FROM whatsapp.webhooks WHERE id > :first_id ORDER BY id;

-- A 3 MB payload.
SELECT pg_temp.recv(pg_temp.env(pg_temp.meta() || jsonb_build_object('statuses',
	jsonb_build_array(pg_temp.st('wamid.P1', 'read', 1749423100, :'p1')), 'padding', repeat('x', 3 * 1024 * 1024)))) AS three_mb;
SELECT length(payload) > 3 * 1024 * 1024 AS stored_whole, applied FROM whatsapp.webhook ORDER BY id DESC LIMIT 1;

-- An entry with a hundred changes, one status each.
SELECT count(whatsapp.wa_send('+52 55 4444 ' || lpad(g::text, 4, '0'), 'cien')) AS queued FROM generate_series(1, 100) g;
SELECT count(pg_temp.sent(id, 'wamid.C' || id)) FROM whatsapp.message WHERE payload -> 'text' ->> 'body' = 'cien';
SELECT pg_temp.recv(jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
	jsonb_build_object('id', '102290129340398', 'changes', (
		SELECT jsonb_agg(jsonb_build_object('field', 'messages', 'value',
			pg_temp.meta() || jsonb_build_object('statuses', jsonb_build_array(pg_temp.st('wamid.C' || id, 'delivered', 1749424000, id::text)))))
		  FROM whatsapp.message WHERE payload -> 'text' ->> 'body' = 'cien'))))::text) AS hundred_changes;
SELECT state, count(*) FROM whatsapp.messages WHERE payload -> 'text' ->> 'body' = 'cien' GROUP BY state;

-- Nothing half-applied after an error: the statuses before the failing
-- part are rolled back with it (a trigger makes the inbound insert fail).
CREATE FUNCTION pg_temp.explode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.body = 'explode' THEN
		RAISE EXCEPTION 'simulated failure' USING ERRCODE = 'XX000';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER explode BEFORE INSERT ON whatsapp.inbound_message
	FOR EACH ROW EXECUTE FUNCTION pg_temp.explode();
SELECT whatsapp.wa_send('+52 55 4444 9999', 'atomic') AS a1 \gset
SELECT pg_temp.sent(:a1, 'wamid.A1');
SELECT count(*) AS payloads_before, (SELECT count(*) FROM whatsapp.log) AS log_before FROM whatsapp.webhook \gset
SELECT pg_temp.try(format('SELECT pg_temp.recv(%L)', pg_temp.env(pg_temp.meta() || jsonb_build_object(
	'statuses', jsonb_build_array(pg_temp.st('wamid.A1', 'read', 1749425000, :'a1')),
	'messages', jsonb_build_array(jsonb_build_object('from', '5215512345000', 'id', 'wamid.EXPLODE',
		'timestamp', '1749425000', 'type', 'text', 'text', jsonb_build_object('body', 'explode'))))))) AS result;
DROP TRIGGER explode ON whatsapp.inbound_message;
SELECT state, read_at FROM whatsapp.messages WHERE id = :a1;
SELECT count(*) - :payloads_before AS new_payloads, (SELECT count(*) FROM whatsapp.log) - :log_before AS new_log_rows
  FROM whatsapp.webhook;

-- ---------------------------------------------------------------------
-- 9b. A payload changes only the accounts whose app secret signed it
--     (found by test/fuzz): main's secret does not reach the messages,
--     inbound, held statuses or templates of second, another Meta app.
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_send('+52 55 7777 0001', 'de main', 'main') AS x1 \gset
SELECT whatsapp.wa_send('+52 55 7777 0002', 'de second', 'second') AS x2 \gset
SELECT pg_temp.sent(:x1, 'wamid.X1') AND pg_temp.sent(:x2, 'wamid.X2') AS recorded;
INSERT INTO whatsapp.templates (account, name, language, category) VALUES
	('main', 'aviso_envio', 'es', 'UTILITY'),
	('second', 'aviso_envio', 'es', 'UTILITY');
-- Signed by main: a change for main's number, one for second's number
-- (statuses, an inbound STOP), and a template update for second's WABA.
SELECT pg_temp.recv(jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
	jsonb_build_object('id', '102290129340398', 'changes', jsonb_build_array(
		jsonb_build_object('field', 'messages', 'value', pg_temp.meta() || jsonb_build_object('statuses',
			jsonb_build_array(pg_temp.st('wamid.X1', 'delivered', 1749426000, :'x1')))),
		jsonb_build_object('field', 'messages', 'value', pg_temp.meta('200200200') || jsonb_build_object(
			'statuses', jsonb_build_array(pg_temp.st('wamid.X2', 'delivered', 1749426000, :'x2'),
										  pg_temp.st('wamid.X-UNSENT', 'delivered', 1749426000)),
			'contacts', '[{"profile": {"name": "Intruso"}, "wa_id": "5215577770003"}]'::jsonb,
			'messages', '[{"from": "5215577770003", "id": "wamid.X-IN", "timestamp": "1749426000",
						   "type": "text", "text": {"body": "STOP"}}]'::jsonb)))),
	jsonb_build_object('id', '300300300', 'changes', jsonb_build_array(
		jsonb_build_object('field', 'message_template_status_update', 'value',
			'{"event": "PAUSED", "message_template_name": "aviso_envio", "message_template_language": "es"}'::jsonb)))
	))::text) AS mixed;
SELECT id = :x1 AS is_mains, state FROM whatsapp.messages WHERE id IN (:x1, :x2) ORDER BY id;
SELECT (SELECT count(*) FROM whatsapp.inbound WHERE wamid = 'wamid.X-IN') AS inbound,
	   (SELECT count(*) FROM whatsapp.status_held WHERE phone_number_id = '200200200') AS held,
	   (SELECT count(*) FROM whatsapp.opt_out WHERE identifier = '+525577770003') AS opted_out;
SELECT applied, ignored FROM whatsapp.webhooks ORDER BY id DESC LIMIT 1;
-- Signed by main for a WABA no account has: refused, second's row untouched.
SELECT pg_temp.recv(pg_temp.env('{"event": "REJECTED", "message_template_name": "aviso_envio",
	"message_template_language": "es", "reason": "INVALID_FORMAT"}', 'message_template_status_update',
	'999000999')) AS unknown_waba;
SELECT account, status FROM whatsapp.templates WHERE name = 'aviso_envio' ORDER BY account;
DELETE FROM whatsapp.templates WHERE name = 'aviso_envio';

-- ---------------------------------------------------------------------
-- 9c. A read arriving after a later read (a voice message's "played"),
--     or after a delivered without a usable timestamp (the time of receipt
--     stands in): delivered_at is never later than read_at (found by
--     test/fuzz).
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_send('+52 55 7777 0004', 'nota de voz') AS v1 \gset
SELECT whatsapp.wa_send('+52 55 7777 0005', 'sin hora') AS v2 \gset
SELECT pg_temp.sent(:v1, 'wamid.V1') AND pg_temp.sent(:v2, 'wamid.V2') AS recorded;
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.V1', 'played', 1749427000, :'v1')))) AS played;
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.V1', 'read', 1749426900, :'v1')))) AS earlier_read;
SELECT pg_temp.recv(pg_temp.statuses('[{"id": "wamid.V2", "status": "delivered", "timestamp": "soon"}]')) AS delivered_no_time;
SELECT pg_temp.recv(pg_temp.statuses(jsonb_build_array(pg_temp.st('wamid.V2', 'read', 1749426900, :'v2')))) AS read;
SELECT id = :v1 AS voice, state, delivered_at, read_at FROM whatsapp.messages WHERE id IN (:v1, :v2) ORDER BY id;

-- ---------------------------------------------------------------------
-- 9d. At REPEATABLE READ, a status whose callback data names a message
--     still queued and whose wamid names another, recorded one is held as
--     at READ COMMITTED, not refused with 40001 (found by test/fuzz).
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_send('+52 55 7777 0006', 'en camino') AS q1 \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.try(format('SELECT pg_temp.recv(%L)', pg_temp.statuses(
	jsonb_build_array(pg_temp.st('wamid.V1', 'read', 1749427100, :'q1'))))) AS repeatable_read;
COMMIT;
SELECT count(*) AS held FROM whatsapp.status_held WHERE message_id = :q1;
DELETE FROM whatsapp.status_held WHERE message_id = :q1;
SELECT whatsapp.wa_cancel(:q1) AS cancelled;

-- ---------------------------------------------------------------------
-- 9e. A user id that is not a business-scoped user id (the form
--     wa_opt_in and _identity_forms take) is no identifier of a person:
--     neither opted out nor stored (found by test/fuzz).
-- ---------------------------------------------------------------------
SELECT pg_temp.recv(pg_temp.env(pg_temp.meta() || '{"user_preferences": [
	{"user_id": "Sofía", "category": "marketing_messages", "value": "stop", "timestamp": 1749428000},
	{"user_id": "\u3000", "category": "marketing_messages", "value": "stop", "timestamp": 1749428000}]}',
	'user_preferences')) AS preferences;
SELECT pg_temp.recv(pg_temp.text_from(NULL, 'wamid.UID-BAD', 'STOP', user_id => 'MX 77770007')) AS keyword;
SELECT pg_temp.recv(pg_temp.text_from('5215577770008', 'wamid.UID-BAD2', 'STOP', user_id => '%s%n')) AS keyword_with_number;
SELECT identifier, scope, source FROM whatsapp.consents
 WHERE identifier IN ('Sofía', E'\u3000', 'MX 77770007', '%s%n', '+525577770008') ORDER BY identifier;
SELECT wamid, wa_id, user_id FROM whatsapp.inbound WHERE wamid LIKE 'wamid.UID-BAD%' ORDER BY wamid;

-- ---------------------------------------------------------------------
-- 9f. A revoke of a stored message that had no type (stored as
--     "unknown") revokes it, and raises nothing (found by test/fuzz).
-- ---------------------------------------------------------------------
SELECT pg_temp.recv(pg_temp.inbound('[{"profile": {"name": "Sin Tipo"}, "wa_id": "5215577770009"}]',
	'[{"from": "5215577770009", "id": "wamid.NOTYPE", "timestamp": "1749429000"}]')) AS no_type;
SELECT pg_temp.try(format('SELECT pg_temp.recv(%L)', pg_temp.inbound('[]',
	'[{"from": "5215577770009", "id": "wamid.NOTYPE-r", "timestamp": "1749429100", "type": "revoke",
	   "revoke": {"original_message_id": "wamid.NOTYPE"}}]'))) AS revoked;
SELECT wamid, type, revoked_at IS NOT NULL AS revoked, raw ->> 'id' AS raw_id FROM whatsapp.inbound
 WHERE wamid = 'wamid.NOTYPE';

-- ---------------------------------------------------------------------
-- 10. Privileges
-- ---------------------------------------------------------------------
SELECT r.rolname,
	   has_function_privilege(r.oid, 'whatsapp.wa_receive(text, text)', 'EXECUTE') AS receive,
	   has_function_privilege(r.oid, 'whatsapp.wa_verify_webhook(text, text, text)', 'EXECUTE') AS verify,
	   has_function_privilege(r.oid, 'whatsapp.wa_opt_out(text, text, text)', 'EXECUTE') AS opt_out,
	   has_function_privilege(r.oid, 'whatsapp.wa_opt_in(text, text)', 'EXECUTE') AS opt_in,
	   has_table_privilege(r.oid, 'whatsapp.inbound', 'SELECT') AS inbound,
	   has_table_privilege(r.oid, 'whatsapp.windows', 'SELECT') AS windows,
	   has_table_privilege(r.oid, 'whatsapp.consents', 'SELECT') AS consents,
	   has_table_privilege(r.oid, 'whatsapp.templates', 'INSERT') AS templates_write,
	   has_table_privilege(r.oid, 'whatsapp.webhook', 'SELECT') AS raw_tables
  FROM pg_roles r WHERE r.rolname LIKE 'whatsapp\_%' ORDER BY 1;
SELECT count(*) AS granted_to_public
  FROM (SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relnamespace = 'whatsapp'::regnamespace
		UNION ALL
		SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE pronamespace = 'whatsapp'::regnamespace) a
 WHERE grantee = 0;
SET ROLE whatsapp_sender;
SELECT pg_temp.recv(pg_temp.text_from('5215500003333', 'wamid.AS-SENDER', 'hola')) AS as_sender;
SELECT whatsapp.wa_opt_out('+52 55 0000 3333') AS sender_opts_out;
SELECT pg_temp.try($$SELECT whatsapp.wa_opt_in('+52 55 0000 3333')$$) AS sender_opts_in;
SELECT pg_temp.try($$SELECT count(*) FROM whatsapp.inbound$$) AS sender_reads;
RESET ROLE;
SET ROLE whatsapp_reader;
SELECT count(*) > 0 AS reader_reads FROM whatsapp.inbound;
SELECT pg_temp.try($$SELECT pg_temp.recv('{}')$$) AS reader_receives;
RESET ROLE;

-- No secret on file: nothing verifies, nothing is accepted unsigned.
SELECT whatsapp.wa_account_set(name, phone_number_id, NULL, app_secret => '')
  FROM whatsapp.accounts WHERE has_app_secret;
SELECT pg_temp.recv(pg_temp.text_from('5215500004444', 'wamid.NOSECRET', 'hola'));
