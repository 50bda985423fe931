-- Access and erasure on request, and the audit: the SQL surface of
-- wa_subject_export, wa_subject_erase and whatsapp.audit.  No worker
-- serves this database: messages stay where enqueue put them.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS whatsapp;
CREATE EXTENSION whatsapp CASCADE;
RESET client_min_messages;

-- The functions: admin only, SECURITY DEFINER with a fixed search_path.
SELECT p.oid::regprocedure AS function, p.prorettype::regtype AS returns,
	   p.prosecdef AS security_definer, p.proconfig,
	   has_function_privilege('whatsapp_admin', p.oid, 'EXECUTE') AS admin,
	   has_function_privilege('whatsapp_sender', p.oid, 'EXECUTE') AS sender,
	   has_function_privilege('whatsapp_reader', p.oid, 'EXECUTE') AS reader,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public
  FROM pg_proc p
 WHERE p.pronamespace = 'whatsapp'::regnamespace
   AND (p.proname LIKE 'wa_subject_%' OR p.proname LIKE '_subject_%' OR p.proname LIKE '_audit%')
 ORDER BY p.proname;

-- The audit table: its columns, and who may do what with it.
SELECT a.attname, a.atttypid::regtype, a.attnotnull
  FROM pg_attribute a
 WHERE a.attrelid = 'whatsapp.audit'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;
SELECT r.rolname,
	   has_table_privilege(r.rolname, 'whatsapp.audit', 'SELECT') AS can_select,
	   has_table_privilege(r.rolname, 'whatsapp.audit', 'INSERT,UPDATE,DELETE,TRUNCATE') AS can_write
  FROM (VALUES ('whatsapp_admin'), ('whatsapp_sender'), ('whatsapp_reader'), ('public')) r(rolname)
 ORDER BY 1;

-- Arguments that name nobody.
SELECT whatsapp.wa_subject_export(NULL);
SELECT whatsapp.wa_subject_erase('call me maybe');
SELECT whatsapp.wa_subject_erase('+');
SET ROLE whatsapp_sender;
SELECT whatsapp.wa_subject_erase('+525512345678');
SELECT whatsapp.wa_subject_export('+525512345678');
RESET ROLE;

-- A person with a queued message, an opt-out and a consent history.
SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAsubject-regress-token');
SELECT whatsapp.wa_send('+55 11 98765-4321', 'Seu pedido Goiaba-5521 saiu', dedupe_key => 'pedido-5521') AS id \gset
SELECT whatsapp.wa_opt_out('+55 11 8765-4321', 'marketing', 'pediu por telefone');
SELECT jsonb_pretty(whatsapp.wa_subject_export('+55 11 8765 4321')
		#- '{exported_at}' #- '{messages,0,id}' #- '{messages,0,created_at}'
		#- '{messages,0,next_attempt_at}' #- '{messages,0,account_id}'
		#- '{opt_outs,0,since}' #- '{opt_outs,1,since}' #- '{consent_latest,0,event_at}'
		#- '{consent_latest,1,event_at}' #- '{consents,0,id}' #- '{consents,0,at}'
		#- '{consents,0,event_at}' #- '{consents,1,id}' #- '{consents,1,at}'
		#- '{consents,1,event_at}' #- '{consents,0,recorded_by}' #- '{consents,1,recorded_by}'
		#- '{messages,0,queued_by}');

-- Erasure: the queued message is cancelled and keeps its skeleton; the
-- opt-out stays as a hash.
SELECT whatsapp.wa_subject_erase('+5511987654321') AS rows_changed;
SELECT state, recipient ~ '^erased:[0-9a-f]{16}:[0-9a-f]{64}$' AS hashed, wa_id, payload, context, dedupe_key
  FROM whatsapp.messages WHERE id = :id;
SELECT event, message LIKE 'cancelled by wa_subject_erase (%)' AS by_erase FROM whatsapp.log WHERE message_id = :id ORDER BY at;
SELECT identifier ~ '^erased:[0-9a-f]{16}:[0-9a-f]{64}$' AS hashed, scope, source, reason
  FROM whatsapp.opt_out ORDER BY identifier, scope;
SELECT identifier ~ '^erased:' AS hashed, action, scope, source, reason FROM whatsapp.consent ORDER BY id;
-- The same number under either ninth-digit form is still blocked for marketing;
-- the same dedupe key still dedupes.
INSERT INTO whatsapp.templates (name, language, category) VALUES ('promo', 'pt_BR', 'MARKETING');
SELECT whatsapp.wa_send_template('+55 11 8765-4321', 'promo', 'pt_BR') AS id2 \gset
SELECT state, failure_type, error_title FROM whatsapp.messages WHERE id = :id2;
SELECT whatsapp.wa_send('+55 11 98765-4321', 'outra vez', dedupe_key => 'pedido-5521') = :id AS deduplicated;

-- The audit of it all: no secret, no body, no full number.
SELECT session_role = session_user AS by_me, function, target FROM whatsapp.audit ORDER BY id;
SELECT count(*) AS leaks FROM whatsapp.audit a
 WHERE a::text ~ '(EAAsubject|Goiaba|87654321|pediu)';
-- Append-only, for the owner too.
UPDATE whatsapp.audit SET target = NULL;
DELETE FROM whatsapp.audit;
TRUNCATE whatsapp.audit;
