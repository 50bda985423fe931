--
-- Statistics: the whatsapp.stats view and wa_stats_reset.
--
-- No worker serves this database: a message is put in "sent" by hand, as
-- the worker records it, and statuses come through wa_receive, signed with
-- pgcrypto's hmac().  test/t/056_stats.pl covers the worker's counters,
-- restarts and crashes.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS whatsapp;
CREATE EXTENSION whatsapp CASCADE;
RESET client_min_messages;
SET TimeZone = 'UTC';

CREATE FUNCTION pg_temp.recv(body text)
RETURNS integer LANGUAGE sql
AS $$ SELECT whatsapp.wa_receive(body, 'sha256=' || encode(hmac(body, 'app-secret-stats', 'sha256'), 'hex')) $$;

-- One status, as Meta posts it.
CREATE FUNCTION pg_temp.st(id bigint, wamid text, status text, ts bigint, code integer DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
	SELECT jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
		jsonb_build_object('id', '102290129340398', 'changes', jsonb_build_array(
			jsonb_build_object('field', 'messages', 'value', jsonb_build_object(
				'messaging_product', 'whatsapp',
				'metadata', jsonb_build_object('display_phone_number', '15550783881',
											   'phone_number_id', '106540352242922'),
				'statuses', jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
					'id', wamid, 'status', status, 'timestamp', ts::text,
					'recipient_id', '5215512345678',
					'biz_opaque_callback_data', id::text,
					'errors', CASE WHEN code IS NOT NULL THEN jsonb_build_array(jsonb_build_object(
						'code', code, 'title', 'Template error',
						'error_data', jsonb_build_object('details', 'Template parameters do not match')))
					END)))))))))::text
$$;

CREATE FUNCTION pg_temp.counters(acct text DEFAULT 'main')
RETURNS text LANGUAGE sql AS $$
	SELECT format('sent %s, delivered %s, read %s, failed %s (phone_invalid %s, opted_out %s, account %s, template %s, recoverable %s, unrecoverable %s, network %s), blocked %s, retried %s, requests %s',
				  sent, delivered, read, failed, failed_phone_invalid, failed_opted_out,
				  failed_account, failed_template, failed_whatsapp_recoverable,
				  failed_whatsapp_unrecoverable, failed_network, blocked, retried, requests)
	  FROM whatsapp.stats WHERE account = acct
$$;

-- The SQL surface -------------------------------------------------------
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a
 WHERE a.attrelid = 'whatsapp.stats'::regclass AND a.attnum > 0
 ORDER BY a.attnum;

SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer
  FROM pg_proc p
 WHERE p.pronamespace = 'whatsapp'::regnamespace AND p.proname LIKE '%stats%'
 ORDER BY 1;

SELECT r.rolname,
	   has_table_privilege(r.oid, 'whatsapp.stats', 'SELECT') AS read_stats,
	   has_function_privilege(r.oid, 'whatsapp.wa_stats_reset(text)', 'EXECUTE') AS reset,
	   has_table_privilege(r.oid, 'whatsapp.stats_total', 'SELECT') AS read_total,
	   has_table_privilege(r.oid, 'whatsapp.stats_delta', 'SELECT,INSERT') AS touch_delta,
	   has_function_privilege(r.oid, 'whatsapp._stats_fold()', 'EXECUTE') AS fold
  FROM pg_roles r WHERE r.rolname IN ('whatsapp_admin', 'whatsapp_reader', 'whatsapp_sender')
 ORDER BY 1;

-- No account, no row; then one row per account, at zero -------------------
SELECT count(*) FROM whatsapp.stats;
SELECT whatsapp.wa_account_set('main', '106540352242922', 'EAAstats-regress-token',
							   app_secret => 'app-secret-stats', waba_id => '102290129340398');
SELECT whatsapp.wa_account_set('second', '106540352242923', 'EAAstats-regress-token-2');
SELECT account, sent, failed, requests, request_time, stats_reset FROM whatsapp.stats ORDER BY account;

-- What enqueue records instead of queuing --------------------------------
SET client_min_messages = error;	-- the warning that no worker serves
SELECT whatsapp.wa_send('5512', 'no es un número') > 0 AS failed_at_enqueue;
SELECT whatsapp.wa_opt_out('+52 55 1234 0000');
SELECT whatsapp.wa_send('+52 55 1234 0000', 'dado de baja') > 0 AS blocked_at_enqueue;
INSERT INTO whatsapp.templates (account, name, language, category, status)
	VALUES ('main', 'promo_pausada', 'es_MX', 'MARKETING', 'PAUSED');
SELECT whatsapp.wa_send_template('+52 55 1234 0001', 'promo_pausada', 'es_MX') > 0 AS paused_template;
SELECT whatsapp.wa_send('+52 55 1234 0002', 'en cola') AS queued \gset
SELECT whatsapp.wa_send('+52 55 1234 0003', 'en cola') AS queued2 \gset
SELECT whatsapp.wa_send('+52 55 1234 0004', 'en cola') AS queued3 \gset
RESET client_min_messages;
SELECT state, failure_type, count(*) FROM whatsapp.messages GROUP BY 1, 2 ORDER BY 1, 2;
SELECT pg_temp.counters();
SELECT pg_temp.counters('second');

-- A rolled-back transaction counts nothing, nor does a rolled-back savepoint.
BEGIN;
SELECT whatsapp.wa_send('77', 'deshecho') > 0 AS rolled_back;
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT whatsapp.wa_send('78', 'deshecho') > 0 AS rolled_back_savepoint;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT pg_temp.counters();

-- Statuses --------------------------------------------------------------
-- The worker's part, by hand: the requests were answered with 200.
UPDATE whatsapp.message SET state = 'sent', wamid = 'wamid.STATS' || id, attempts = 1, sent_at = now()
 WHERE id IN (:queued, :queued2, :queued3);
SELECT pg_temp.recv(pg_temp.st(:queued, 'wamid.STATS' || :queued, 'delivered', 1749416400)) AS delivered;
SELECT pg_temp.recv(pg_temp.st(:queued, 'wamid.STATS' || :queued, 'read', 1749416460)) AS read;
-- the same bytes again, and the same status at another time: nothing new
SELECT pg_temp.recv(pg_temp.st(:queued, 'wamid.STATS' || :queued, 'delivered', 1749416400)) AS redelivered;
SELECT pg_temp.recv(pg_temp.st(:queued, 'wamid.STATS' || :queued, 'read', 1749416999)) AS read_later;
-- read before delivered: both count once; the late delivered moves the time only
SELECT pg_temp.recv(pg_temp.st(:queued2, 'wamid.STATS' || :queued2, 'read', 1749416600)) AS read_first;
SELECT pg_temp.recv(pg_temp.st(:queued2, 'wamid.STATS' || :queued2, 'delivered', 1749416500)) AS delivered_earlier;
-- a failed status: sent -> failed, with the failure_type of the code
SELECT pg_temp.recv(pg_temp.st(:queued3, 'wamid.STATS' || :queued3, 'failed', 1749416700, 132015)) AS failed;
-- after read, a failed status is only logged
SELECT pg_temp.recv(pg_temp.st(:queued, 'wamid.STATS' || :queued, 'failed', 1749416800, 131026)) AS failed_after_read;
SELECT id = :queued AS first, state, failure_type, delivered_at, read_at
  FROM whatsapp.messages WHERE id IN (:queued, :queued2, :queued3) ORDER BY id;
SELECT pg_temp.counters();

-- The fold moves the increments and changes nothing in the view ----------
SELECT count(*) > 0 AS increments_waiting FROM whatsapp.stats_delta;
SELECT whatsapp._stats_fold() > 0 AS folded;
SELECT count(*) AS increments_left FROM whatsapp.stats_delta;
SELECT pg_temp.counters();
SELECT whatsapp._stats_fold() AS nothing_to_fold;

-- wa_stats_reset ----------------------------------------------------------
SELECT whatsapp.wa_stats_reset('nosuch');
SELECT whatsapp.wa_stats_reset('main');
SELECT pg_temp.counters();
SELECT account, stats_reset IS NOT NULL AS was_reset FROM whatsapp.stats ORDER BY account;
SELECT whatsapp.wa_send('79', 'otra vez') > 0 AS failed_after_reset;
SELECT pg_temp.counters();

-- A dropped account leaves the view, as a dropped table leaves pg_stat_*.
SELECT whatsapp.wa_account_drop('second');
SELECT account FROM whatsapp.stats ORDER BY account;

-- Roles -----------------------------------------------------------------
SET ROLE whatsapp_reader;
SELECT account, failed FROM whatsapp.stats;
SELECT whatsapp.wa_stats_reset();
RESET ROLE;
SET ROLE whatsapp_sender;
SELECT count(*) FROM whatsapp.stats;
RESET ROLE;
SET ROLE whatsapp_admin;
SELECT whatsapp.wa_stats_reset();
RESET ROLE;
SELECT pg_temp.counters();
