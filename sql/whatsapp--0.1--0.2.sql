/* whatsapp 0.1 -> 0.2 */
\echo Use "ALTER EXTENSION whatsapp UPDATE TO '0.2'" to load this file. \quit

/*
 * The CHECK constraints of whatsapp.message call a C function instead of
 * listing the values: PostgreSQL reads and plans a table's CHECK
 * expressions for every INSERT and UPDATE statement, and the IN lists
 * cost about 15 us each time (src/enqueue.c).  The allowed values are the
 * same.  NOT VALID and then VALIDATE: the table is scanned, not rewritten,
 * and writers are blocked only while the constraints are swapped.
 */
CREATE FUNCTION whatsapp._message_state_valid(text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'wa_message_state_valid';

CREATE FUNCTION whatsapp._failure_type_valid(text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'wa_failure_type_valid';

REVOKE ALL ON FUNCTION whatsapp._message_state_valid(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION whatsapp._failure_type_valid(text) FROM PUBLIC;

ALTER TABLE whatsapp.message
	DROP CONSTRAINT message_state_check,
	DROP CONSTRAINT message_failure_type_check,
	ADD CONSTRAINT message_state_check
		CHECK (whatsapp._message_state_valid(state)) NOT VALID,
	ADD CONSTRAINT message_failure_type_check
		CHECK (whatsapp._failure_type_valid(failure_type)) NOT VALID;
ALTER TABLE whatsapp.message VALIDATE CONSTRAINT message_state_check;
ALTER TABLE whatsapp.message VALIDATE CONSTRAINT message_failure_type_check;
