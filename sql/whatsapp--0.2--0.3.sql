/* whatsapp 0.2 -> 0.3 */
\echo Use "ALTER EXTENSION whatsapp UPDATE TO '0.3'" to load this file. \quit

/* ========================================================================
 * Webhooks you can trust (src/webhook*.c)
 *
 * A payload changes only the accounts that share the app secret that
 * verified it; consent events apply in the order of their own timestamps;
 * Meta's account and template events act.
 * ======================================================================== */

/*
 * A template status or category update from Meta, for the accounts of the
 * WABA it came from (p_accounts, account names).  Their own rows are
 * updated.  A row listed for every account (account NULL) is updated only
 * when p_every (those accounts are all the active ones); otherwise each of
 * them gets a row of its own, a copy of the shared one with the new value,
 * which takes precedence over the shared row for that account.  Returns
 * the rows changed or added.
 */
CREATE FUNCTION whatsapp._template_update(p_accounts text[], p_every boolean,
										  p_name text, p_language text,
										  p_column text, p_value text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n integer;
	m integer := 0;
BEGIN
	IF p_column NOT IN ('status', 'category') THEN
		RAISE EXCEPTION 'whatsapp._template_update: unknown column %', p_column
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	UPDATE whatsapp.templates t
	   SET status = CASE WHEN p_column = 'status' THEN p_value ELSE t.status END,
		   category = CASE WHEN p_column = 'category' THEN p_value ELSE t.category END
	 WHERE t.name = p_name
	   AND (p_language IS NULL OR t.language = p_language)
	   AND (t.account = ANY (p_accounts) OR (p_every AND t.account IS NULL))
	   AND CASE WHEN p_column = 'status' THEN t.status ELSE t.category END
		   IS DISTINCT FROM p_value;
	GET DIAGNOSTICS n = ROW_COUNT;
	IF NOT p_every THEN
		INSERT INTO whatsapp.templates (account, name, language, category, status)
		SELECT a.name, t.name, t.language,
			   CASE WHEN p_column = 'category' THEN p_value ELSE t.category END,
			   CASE WHEN p_column = 'status' THEN p_value ELSE t.status END
		  FROM whatsapp.templates t, unnest(p_accounts) a(name)
		 WHERE t.account IS NULL AND t.name = p_name
		   AND (p_language IS NULL OR t.language = p_language)
		   AND CASE WHEN p_column = 'status' THEN t.status ELSE t.category END
			   IS DISTINCT FROM p_value
		   AND NOT EXISTS (SELECT 1 FROM whatsapp.templates o
							WHERE o.account = a.name AND o.name = t.name
							  AND o.language = t.language);
		GET DIAGNOSTICS m = ROW_COUNT;
	END IF;
	RETURN n + m;
END
$$;
REVOKE ALL ON FUNCTION whatsapp._template_update(text[], boolean, text, text, text, text) FROM PUBLIC;

/*
 * Redeliveries.  Meta retries a payload for days; one of the same bytes as
 * a payload stored before is stored again, marked duplicate_of that one,
 * and applies nothing.  digest is the SHA-256 of the exact bytes.
 */
ALTER TABLE whatsapp.webhook
	ADD COLUMN digest bytea,
	ADD COLUMN duplicate_of bigint;
CREATE INDEX webhook_digest_idx ON whatsapp.webhook (digest)
	WHERE digest IS NOT NULL;

CREATE OR REPLACE VIEW whatsapp.webhooks AS
SELECT w.id,
	   w.received_at,
	   a.name AS account,
	   w.applied,
	   w.ignored,
	   w.payload,
	   w.duplicate_of
  FROM whatsapp.webhook w
  LEFT JOIN whatsapp.account a ON a.id = w.account_id;

/* A status is held once per number, wamid and kind, however often it comes. */
DELETE FROM whatsapp.status_held h
 USING whatsapp.status_held k
 WHERE k.phone_number_id = h.phone_number_id AND k.wamid = h.wamid
   AND k.status ->> 'status' IS NOT DISTINCT FROM h.status ->> 'status'
   AND k.id < h.id;
CREATE UNIQUE INDEX status_held_once ON whatsapp.status_held
	(phone_number_id, wamid, (status ->> 'status'));
