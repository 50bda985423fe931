--
-- test/fuzz/setup.sql: the database the fuzz driver (wafuzz) runs against.
--
--   psql -v secret=... -v secret2=... -v secret3=... -f test/fuzz/setup.sql
--
-- A throwaway database only: it creates the extension, four accounts, the
-- messages the seed payloads (corpus/webhook.jsonl) name, and schema fuzz
-- with the batch functions wafuzz calls.  No worker may serve it
-- (whatsapp.database must not name it): the worker would move the queued
-- and sending messages that the payloads' statuses are meant to find.
--
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS amcheck;
CREATE EXTENSION whatsapp CASCADE;
RESET client_min_messages;

-- tienda signs every fuzzed payload; tienda_gdl is a second number of the
-- same Meta app (the same app secret).  outlet is another Meta app (its own
-- secret): nothing signed by tienda's secret may change it.  soporte has no
-- app secret, antigua was dropped.
SELECT whatsapp.wa_account_set('tienda', '106540352242922', 'EAAfuzzTiendaToken0001',
							   app_secret => :'secret', verify_token => 'verify-tienda',
							   waba_id => '102290129340398');
SELECT whatsapp.wa_account_set('tienda_gdl', '107788990011223', 'EAAfuzzTiendaToken0001',
							   app_secret => :'secret', waba_id => '102290129340398');
SELECT whatsapp.wa_account_set('outlet', '109876543210987', 'EAAfuzzOutletToken0002',
							   app_secret => :'secret2', verify_token => 'verify-outlet',
							   waba_id => '104938271650432');
SELECT whatsapp.wa_account_set('soporte', '113355779900112', 'EAAfuzzSoporteToken0003');
SELECT whatsapp.wa_account_set('antigua', '115599337711004', 'EAAfuzzAntiguaToken0004',
							   app_secret => :'secret3', waba_id => '102290129340398');
SELECT whatsapp.wa_account_drop('antigua');

-- Messages 1-30 of tienda were sent (the worker recorded their wamids),
-- 31-35 are queued and 36-40 being sent (a status for them is held);
-- 41-50 are outlet's, 51-55 tienda_gdl's, sent.  The wamids are those of
-- the seed payloads.
CREATE FUNCTION pg_temp.wamid(n integer, rcpt text) RETURNS text LANGUAGE sql AS $$
	SELECT 'wamid.' || CASE rcpt
		WHEN '+525512345678' THEN 'HBgNNTIxNTUxMjM0NTY3OBUCABEYEkZVWlow'
		WHEN '+5511912345678' THEN 'HBgNNTUxMTkxMjM0NTY3OBUCABEYEkZVWlow'
		WHEN '+5491123456789' THEN 'HBgNNTQ5MTEyMzQ1Njc4ORUCABEYEkZVWlow'
		END || encode(convert_to(lpad(n::text, 3, '0'), 'UTF8'), 'base64') || 'QUE='
$$;
CREATE TEMP TABLE seed_message (id integer, account text, recipient text, state text, wamid text);
INSERT INTO seed_message
SELECT g, 'tienda', r.rcpt,
	   CASE WHEN g <= 30 THEN 'sent' WHEN g <= 35 THEN 'queued' ELSE 'sending' END,
	   CASE WHEN g <= 30 THEN pg_temp.wamid(g, r.rcpt) END
  FROM generate_series(1, 40) g,
	   LATERAL (SELECT CASE WHEN g IN (3, 36) THEN '+5511912345678'
							WHEN g = 4 THEN '+5491123456789'
							WHEN g = 5 THEN '+14155552671'
							ELSE '+525512345678' END AS rcpt) r;
UPDATE seed_message SET wamid = 'wamid.HBgLMTQxNTU1NTI2NzEVAgARGBJGVVpaMDAwNUFBAA==' WHERE id = 5;
INSERT INTO seed_message
SELECT g, 'outlet', '+14155552671', 'sent',
	   'wamid.HBgLMTQxNTU1NTI2NzEVAgARGBJTRUNPTkQw'
	   || encode(convert_to(lpad(g::text, 3, '0'), 'UTF8'), 'base64') || 'QUEA'
  FROM generate_series(41, 50) g;
INSERT INTO seed_message
SELECT g, 'tienda_gdl', '+523312345678', 'sent',
	   'wamid.HBgNNTIxMzMxMjM0NTY3OBUCABEYEk1YMlow'
	   || encode(convert_to(lpad(g::text, 3, '0'), 'UTF8'), 'base64') || 'QUEA'
  FROM generate_series(51, 55) g;

INSERT INTO whatsapp.message (id, account_id, recipient, wa_id, kind, payload, state, attempts,
							  wamid, created_at, claimed_at, sent_at)
SELECT s.id, a.id, s.recipient,
	   CASE WHEN s.state = 'sent' THEN
		   CASE s.recipient WHEN '+525512345678' THEN '5215512345678'
							WHEN '+523312345678' THEN '5213312345678'
							ELSE ltrim(s.recipient, '+') END
	   END,
	   'text', jsonb_build_object('type', 'text', 'text',
								  jsonb_build_object('body', 'Su pedido #' || (1000 + s.id) || ' fue confirmado.')),
	   s.state, CASE WHEN s.state = 'queued' THEN 0 ELSE 1 END, s.wamid,
	   now() - interval '1 hour',
	   CASE WHEN s.state <> 'queued' THEN now() - interval '1 hour' END,
	   CASE WHEN s.state = 'sent' THEN now() - interval '1 hour' END
  FROM seed_message s JOIN whatsapp.account a ON a.name = s.account
 ORDER BY s.id;
SELECT setval('whatsapp.message_id_seq', 1000);

INSERT INTO whatsapp.templates (account, name, language, category) VALUES
	(NULL, 'order_confirmed', 'es_MX', 'UTILITY'),
	('tienda', 'promo_navidad', 'es', 'MARKETING'),
	('outlet', 'promo_navidad', 'es', 'MARKETING'),
	(NULL, 'pedido_enviado', 'pt_BR', 'UTILITY');

-- Odoo's blacklist, which wa_send honors (the phone mode's sends).
CREATE TABLE public.phone_blacklist (number text, active boolean);
INSERT INTO public.phone_blacklist VALUES ('+525512345678', true), ('+5511912345678', false),
	('+14155552671', true);

-- What outlet (the other app) holds before the run; check.sql compares.
CREATE SCHEMA fuzz;
CREATE TABLE fuzz.outlet_before AS
SELECT m.* FROM whatsapp.message m JOIN whatsapp.account a ON a.id = m.account_id
 WHERE a.name = 'outlet';
CREATE TABLE fuzz.templates_before AS SELECT * FROM whatsapp.templates;

/*
 * One wa_receive per input, each in its own subtransaction: "ok" and the
 * count applied, or the SQLSTATE and the message.
 */
CREATE FUNCTION fuzz.receive(payloads text[], signatures text[])
RETURNS TABLE (outcome text, detail text)
LANGUAGE plpgsql AS $$
DECLARE
	n integer;
BEGIN
	FOR i IN 1 .. coalesce(cardinality(payloads), 0) LOOP
		BEGIN
			n := whatsapp.wa_receive(payloads[i], signatures[i]);
			outcome := 'ok';
			detail := n::text;
		EXCEPTION WHEN OTHERS THEN
			outcome := SQLSTATE;
			detail := SQLERRM;
		END;
		RETURN NEXT;
	END LOOP;
END
$$;

/*
 * One phone input: normalize_phone(phone, cc), _identity_forms(phone) and,
 * for every send_every-th input, wa_send(phone); properties are checked
 * here and a failure is returned as outcome 'P_...' with the values.
 *
 *   P_CC        normalize_phone raised for a country code that it accepts
 *               with a valid number, or did not raise for one it refuses
 *   P_FORMAT    a result that is not '+' and 8 to 15 digits, no leading 0
 *   P_STABLE    a result that does not normalize to itself
 *   P_00        "00" and the digits of a result do not give the result
 *   P_SPACES    the result with spaces in it does not give the result
 *   P_FORMS     _identity_forms disagrees with normalize_phone (same
 *               default country code), or gives a form that is not stable
 *   P_SEND      wa_send recorded something else than normalize_phone says:
 *               an invalid number not failed/phone_invalid (or, when its
 *               "+" and digits are opted out, blocked/opted_out) with the
 *               raw input, or a valid one not queued/blocked as its E.164
 *               form
 *   P_ENCODING  in a database that is not UTF-8, a number with a non-ASCII
 *               character was accepted (only UTF-8 spaces and dashes are)
 */
CREATE FUNCTION fuzz.phone(phones text[], ccs text[], send_every integer)
RETURNS TABLE (outcome text, detail text)
LANGUAGE plpgsql AS $$
DECLARE
	p text;
	cc text;
	cc_ok boolean;
	e text;
	e0 text;
	t text;
	f text[];
	new_id bigint;
	m record;
BEGIN
	FOR i IN 1 .. coalesce(cardinality(phones), 0) LOOP
		p := phones[i];
		cc := ccs[i];
		outcome := 'ok';
		detail := NULL;
		BEGIN
			PERFORM whatsapp.normalize_phone('+14155552671', cc);
			cc_ok := true;
		EXCEPTION WHEN invalid_parameter_value THEN
			cc_ok := false;
		END;
		BEGIN
			e := whatsapp.normalize_phone(p, cc);
			IF NOT cc_ok THEN
				outcome := 'P_CC';
				detail := format('cc %L refused for +14155552671 but accepted for %L', cc, p);
			END IF;
		EXCEPTION WHEN OTHERS THEN
			e := NULL;
			IF cc_ok OR SQLSTATE <> '22023' THEN
				outcome := SQLSTATE;
				detail := SQLERRM;
			ELSE
				outcome := '22023';
			END IF;
		END;

		IF outcome = 'ok' AND e IS NOT NULL THEN
			IF e !~ '^\+[1-9][0-9]{7,14}$' THEN
				outcome := 'P_FORMAT';
			ELSIF pg_catalog.getdatabaseencoding() <> 'UTF8' AND p ~ '[^\x01-\x7f]' THEN
				outcome := 'P_ENCODING';
			ELSIF whatsapp.normalize_phone(e, NULL) IS DISTINCT FROM e THEN
				outcome := 'P_STABLE';
				detail := format('%L -> %L -> %L', p, e, whatsapp.normalize_phone(e, NULL));
			ELSIF whatsapp.normalize_phone('00' || substr(e, 2), '44') IS DISTINCT FROM e THEN
				outcome := 'P_00';
			ELSIF whatsapp.normalize_phone(regexp_replace(e, '([0-9]{2})', '\1 ', 'g'), NULL)
				  IS DISTINCT FROM e THEN
				outcome := 'P_SPACES';
			END IF;
			IF outcome <> 'ok' AND detail IS NULL THEN
				detail := format('%L (cc %L) -> %L', p, cc, e);
			END IF;
		END IF;

		-- _identity_forms against normalize_phone, both with the default
		-- country code of the batch
		IF outcome IN ('ok', '22023') THEN
			BEGIN
				f := whatsapp._identity_forms(p);
				t := btrim(p, E' \t');
				IF p !~ '[A-Za-z]' AND octet_length(t) BETWEEN 1 AND 256 THEN
					e0 := whatsapp.normalize_phone(t, NULL);
					IF f IS NULL AND e0 IS NOT NULL OR f IS NOT NULL AND f[1] IS DISTINCT FROM e0 THEN
						outcome := 'P_FORMS';
						detail := format('%L: forms %L, normalize_phone %L', p, f, e0);
					END IF;
				END IF;
				IF outcome <> 'P_FORMS' AND f IS NOT NULL AND p !~ '[A-Za-z]' THEN
					IF cardinality(f) NOT BETWEEN 1 AND 2 OR EXISTS (
						SELECT 1 FROM unnest(f) x
						 WHERE x !~ '^\+[1-9][0-9]{7,14}$'
							OR whatsapp.normalize_phone(x, NULL) IS DISTINCT FROM x) THEN
						outcome := 'P_FORMS';
						detail := format('%L: forms %L', p, f);
					END IF;
				END IF;
			EXCEPTION WHEN OTHERS THEN
				outcome := SQLSTATE;
				detail := SQLERRM;
			END;
		END IF;

		-- the enqueue path
		IF outcome IN ('ok', '22023') AND send_every > 0 AND i % send_every = 0 THEN
			BEGIN
				e0 := whatsapp.normalize_phone(p, NULL);
				new_id := whatsapp.wa_send(p, 'Hola, su pedido #1042 está en camino.', 'tienda');
				SELECT msg.state, msg.recipient, msg.failure_type INTO m
				  FROM whatsapp.message msg WHERE msg.id = new_id;
				IF e0 IS NULL AND NOT ((m.state = 'failed' AND m.failure_type = 'phone_invalid'
										OR m.state = 'blocked' AND m.failure_type = 'opted_out')
									   AND m.recipient IS NOT DISTINCT FROM p)
				   OR e0 IS NOT NULL AND NOT (m.state IN ('queued', 'blocked')
											 AND m.recipient = e0) THEN
					outcome := 'P_SEND';
					detail := format('%L: normalize_phone %L, wa_send recorded %s %L (%s)',
									 p, e0, m.state, m.recipient, m.failure_type);
				END IF;
			EXCEPTION WHEN OTHERS THEN
				outcome := SQLSTATE;
				detail := SQLERRM;
			END;
		END IF;

		IF outcome = 'ok' THEN
			detail := CASE WHEN e IS NULL THEN 'not a number' ELSE 'E.164' END;
		ELSIF outcome = '22023' THEN
			detail := NULL;
		END IF;
		RETURN NEXT;
	END LOOP;
END
$$;
