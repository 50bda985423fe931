/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *	  wa_send, wa_send_template and wa_send_message: validate the caller's
 *	  input, build the Cloud API message object and insert it into the
 *	  outbox inside the caller's transaction.
 *
 * Nothing leaves the database here.  The row becomes visible to the
 * worker when the caller's transaction commits, and a commit callback
 * (shared.c) wakes the worker then.  A caller's mistake raises an ERROR
 * with a specific SQLSTATE; a recipient's problem (a number that cannot be
 * made E.164) is recorded as a failed message and never aborts the
 * caller's transaction.
 *
 * The functions are SECURITY INVOKER and write the outbox with their
 * owner's rights (ownership.c), so that the message records the calling
 * role in queued_by.  A dedupe_key already taken in the account by a
 * message of a role the caller may not act on raises 42501 instead of
 * returning that message's id.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#define WA_MAX_TEXT_CHARS 4096
#define WA_MAX_DEDUPE_KEY 512
#define WA_MAX_TEMPLATE_NAME 512

/* Plans kept for the life of the backend. */
static SPIPlanPtr plan_account_by_name = NULL;
static SPIPlanPtr plan_account_default = NULL;
static SPIPlanPtr plan_insert = NULL;
static SPIPlanPtr plan_insert_dedupe = NULL;
static SPIPlanPtr plan_find_dedupe = NULL;

/* Do the outbox plans write queued_by?  Meaningful once plan_insert is set. */
static bool plans_write_owner = false;

static bool warned_no_worker = false;

#define N_INSERT_ARGS 11

static void
prepare_plans(void)
{
	Oid			text1[1] = {TEXTOID};
	Oid			ins[N_INSERT_ARGS] = {INT4OID, TEXTOID, TEXTOID, JSONBOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, JSONBOID, INT4OID,
	TEXTOID};
	Oid			find[2] = {INT4OID, TEXTOID};
	bool		write_owner = wa_message_has_queued_by();

	/* plan_account_default is assigned last: it marks the pair as ready */
	if (plan_account_default == NULL)
	{
		plan_account_by_name = wa_keep_plan(
											"SELECT id FROM whatsapp.account"
											" WHERE name OPERATOR(pg_catalog.=) $1 AND dropped_at IS NULL",
											1, text1);
		plan_account_default = wa_keep_plan(
											"SELECT id FROM whatsapp.account"
											" WHERE is_default AND dropped_at IS NULL",
											0, NULL);
	}

	/*
	 * Until ALTER EXTENSION UPDATE adds queued_by, the outbox is written
	 * without it; after, the plans are made again.
	 */
	if (plan_insert != NULL && write_owner == plans_write_owner)
		return;
	if (plan_insert != NULL)
	{
		SPI_freeplan(plan_insert);
		SPI_freeplan(plan_insert_dedupe);
		SPI_freeplan(plan_find_dedupe);
		plan_insert = plan_insert_dedupe = plan_find_dedupe = NULL;
	}

#define INSERT_SQL(owner_col, owner_val) \
	"INSERT INTO whatsapp.message (account_id, recipient, kind, payload," \
	" state, failure_type, error_title, dedupe_key, context, failed_at," \
	" error_code" owner_col ")" \
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9," \
	" CASE WHEN $5 OPERATOR(pg_catalog.=) 'failed' THEN pg_catalog.now() END, $10" \
	owner_val ")"
#define ON_CONFLICT \
	" ON CONFLICT (account_id, dedupe_key)" \
	" WHERE dedupe_key IS NOT NULL DO NOTHING"
#define FIND_SQL(owner_col) \
	"SELECT id, " owner_col " FROM whatsapp.message" \
	" WHERE account_id OPERATOR(pg_catalog.=) $1" \
	" AND dedupe_key OPERATOR(pg_catalog.=) $2"

	if (write_owner)
	{
		plan_insert_dedupe = wa_keep_plan(INSERT_SQL(", queued_by", ", $11")
										  ON_CONFLICT " RETURNING id",
										  N_INSERT_ARGS, ins);
		plan_find_dedupe = wa_keep_plan(FIND_SQL("queued_by"), 2, find);
		/* assigned last: it marks the set as ready */
		plan_insert = wa_keep_plan(INSERT_SQL(", queued_by", ", $11")
								   " RETURNING id", N_INSERT_ARGS, ins);
	}
	else
	{
		plan_insert_dedupe = wa_keep_plan(INSERT_SQL("", "")
										  ON_CONFLICT " RETURNING id",
										  N_INSERT_ARGS, ins);
		plan_find_dedupe = wa_keep_plan(FIND_SQL("NULL::pg_catalog.text"),
										2, find);
		plan_insert = wa_keep_plan(INSERT_SQL("", "") " RETURNING id",
								   N_INSERT_ARGS, ins);
	}
	plans_write_owner = write_owner;
#undef INSERT_SQL
#undef ON_CONFLICT
#undef FIND_SQL
}

/* Warn once per session when nothing will deliver what we queue. */
static void
warn_if_undelivered(void)
{
	char	   *dbname;

	if (warned_no_worker)
		return;
	warned_no_worker = true;

	if (!wa_preloaded)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no whatsapp worker serves this database: the library is not preloaded"),
				 errdetail("Messages are queued and will be delivered once a worker serves this database."),
				 errhint("Add \"whatsapp\" to shared_preload_libraries, set whatsapp.database, and restart the server.")));
		return;
	}

	dbname = get_database_name(MyDatabaseId);
	if (dbname == NULL || !wa_database_listed(dbname))
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no whatsapp worker serves database \"%s\"",
						dbname ? dbname : "?"),
				 errdetail("Messages are queued and will be delivered once a worker serves this database."),
				 errhint("Add the database to whatsapp.database (or set it to '*') and reload the configuration.")));
	else if (!wa_worker_serves_current_database())
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the whatsapp worker for database \"%s\" is not running", dbname),
				 errdetail("Messages are queued and will be delivered once the worker runs."),
				 wa_serve_all()
				 ? errhint("With whatsapp.database = '*' the launcher starts it within seconds of CREATE EXTENSION, but never for a template database; the server log says why it does not run.")
				 : errhint("Check the server log for the worker's messages; whatsapp.database lists the served databases.")));
}

/*
 * The live account by name (name NULL: the default one), read in C through
 * the unique partial index that holds exactly the rows the SQL of
 * resolve_account asks for (account_name_key: dropped_at IS NULL;
 * account_default_key: is_default), with the statement's snapshot: one
 * index probe instead of an SPI query on every send.  Returns true and
 * sets *found (and *id) when it could look; false when the table or the
 * index is not as expected, and the SQL decides.
 */
static bool
account_by_index(const char *name, bool *found, int32 *id)
{
	Oid			nsp = get_namespace_oid("whatsapp", false);
	Oid			relid = get_relname_relid("account", nsp);
	Oid			index = get_relname_relid(name ? "account_name_key" : "account_default_key", nsp);
	Relation	rel;
	Relation	irel;
	AttrNumber	a_id;
	AttrNumber	a_dropped;
	AttrNumber	a_name;
	Oid			coll;
	bool		shaped;
	Snapshot	snap;
	SysScanDesc scan;
	HeapTuple	tup;

	if (!OidIsValid(relid) || !OidIsValid(index))
		return false;
	rel = table_open(relid, AccessShareLock);
	a_id = get_attnum(relid, "id");
	a_dropped = get_attnum(relid, "dropped_at");
	a_name = get_attnum(relid, name ? "name" : "is_default");
	irel = index_open(index, AccessShareLock);
	shaped = a_id > 0 && a_dropped > 0 && a_name > 0 &&
		irel->rd_index->indisvalid && irel->rd_index->indnkeyatts == 1 &&
		irel->rd_index->indkey.values[0] == a_name &&
		TupleDescAttr(RelationGetDescr(rel), a_id - 1)->atttypid == INT4OID &&
		TupleDescAttr(RelationGetDescr(rel), a_name - 1)->atttypid == (name ? TEXTOID : BOOLOID);
	coll = irel->rd_indcollation[0];
	index_close(irel, AccessShareLock);
	if (!shaped)
	{
		table_close(rel, AccessShareLock);
		return false;
	}
	snap = ActiveSnapshotSet() ? GetActiveSnapshot() : GetLatestSnapshot();
	if (name != NULL)
		scan = wa_key_scan(rel, a_name, TEXTOID, index, coll, 0, name, snap);
	else
		scan = systable_beginscan(rel, index, true, snap, 0, NULL);
	*found = false;
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d;

		(void) heap_getattr(tup, a_dropped, RelationGetDescr(rel), &isnull);
		if (!isnull)
			continue;
		if (name == NULL)
		{
			d = heap_getattr(tup, a_name, RelationGetDescr(rel), &isnull);
			if (isnull || !DatumGetBool(d))
				continue;
		}
		d = heap_getattr(tup, a_id, RelationGetDescr(rel), &isnull);
		if (isnull)
			continue;
		*id = DatumGetInt32(d);
		*found = true;
		break;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return true;
}

/* Resolve the account argument (NULL means the default) to its id. */
static int32
resolve_account(text *account)
{
	int			rc;
	bool		isnull;
	Datum		id;
	bool		found;
	int32		found_id = 0;

	if (account_by_index(account ? text_to_cstring(account) : NULL, &found, &found_id))
	{
		if (found)
			return found_id;
		if (account != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("whatsapp account \"%s\" does not exist",
							text_to_cstring(account)),
					 errhint("Create it with whatsapp.wa_account_set(), or see whatsapp.accounts for the names.")));
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("there is no default whatsapp account"),
				 errhint("Pass the account argument, or create an account with whatsapp.wa_account_set(): the first one becomes the default.")));
	}

	if (account != NULL)
	{
		Datum		arg[1] = {PointerGetDatum(account)};

		rc = SPI_execute_plan(plan_account_by_name, arg, NULL, true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "whatsapp account lookup failed: %s",
				 SPI_result_code_string(rc));
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("whatsapp account \"%s\" does not exist",
							text_to_cstring(account)),
					 errhint("Create it with whatsapp.wa_account_set(), or see whatsapp.accounts for the names.")));
	}
	else
	{
		rc = SPI_execute_plan(plan_account_default, NULL, NULL, true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "whatsapp account lookup failed: %s",
				 SPI_result_code_string(rc));
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("there is no default whatsapp account"),
					 errhint("Pass the account argument, or create an account with whatsapp.wa_account_set(): the first one becomes the default.")));
	}
	id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return DatumGetInt32(id);
}

/*
 * A recipient that is "+" and digits (spaces, dashes, dots and parentheses
 * aside) but not E.164: the form an opt-out from such a wa_id is recorded
 * under.  Writes it into out (WA_E164_MAXLEN + 1 bytes).
 */
static bool
raw_wa_id(const char *raw, char *out)
{
	int			n = 0;
	const char *p = raw;

	while (*p == ' ')
		p++;
	if (*p++ != '+')
		return false;
	out[n++] = '+';
	for (; *p; p++)
	{
		if (*p >= '0' && *p <= '9')
		{
			if (n >= WA_E164_MAXLEN)
				return false;
			out[n++] = *p;
		}
		else if (*p != ' ' && *p != '-' && *p != '.' && *p != '(' && *p != ')')
			return false;
	}
	out[n] = '\0';
	return n > 1;
}

/*
 * Insert the message, owned by the caller, and return its id.  Inside SPI,
 * with the owner's rights.  recipient may be NULL; payload is a Cloud API
 * message object without the envelope ("type" and its object, plus
 * optional "context").
 */
static int64
enqueue_as_owner(Oid caller, text *recipient, const char *kind,
				 Jsonb *payload, text *account, text *dedupe_key,
				 Jsonb *context, bool *deliver)
{
	char		e164[WA_E164_MAXLEN + 1];
	char	   *raw = NULL;
	bool		valid;
	int32		account_id;
	Datum		values[N_INSERT_ARGS];
	char		nulls[N_INSERT_ARGS];
	WaRecipientVerdict verdict = {0};
	bool		blocked_raw = false;
	const char *rec_state;
	const char *rec_failure_type;
	bool		inserted;
	int			rc;
	int64		id;
	bool		isnull;

	if (recipient != NULL)
	{
		raw = text_to_cstring(recipient);
		valid = wa_normalize_phone(raw, wa_default_country_code, e164);
	}
	else
		valid = false;

	prepare_plans();

	account_id = resolve_account(account);

	/* Opted out, a paused template, outside the 24-hour window (recipient.c)? */
	if (valid)
		wa_recipient_check(account_id, e164, kind, JsonbPGetDatum(payload),
						   &verdict);
	else if (raw != NULL && raw_wa_id(raw, e164))
	{
		/*
		 * Not E.164, but a wa_id an opt-out may have been recorded under
		 * as it is: blocked rather than failed when it is opted out.
		 */
		if (wa_recipient_opted_out(account_id, e164, kind, JsonbPGetDatum(payload),
								   &verdict))
			blocked_raw = true;
	}

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(account_id);
	if (valid)
		values[1] = CStringGetTextDatum(e164);
	else if (raw != NULL)
		values[1] = PointerGetDatum(recipient);
	else
		nulls[1] = 'n';
	values[2] = CStringGetTextDatum(kind);
	values[3] = JsonbPGetDatum(payload);
	rec_state = valid ? (verdict.state ? verdict.state : "queued") :
		blocked_raw ? verdict.state : "failed";
	rec_failure_type = (valid || blocked_raw) ? verdict.failure_type : "phone_invalid";
	values[4] = CStringGetTextDatum(rec_state);
	if ((valid || blocked_raw) && verdict.state)
	{
		values[5] = CStringGetTextDatum(verdict.failure_type);
		values[6] = CStringGetTextDatum(verdict.error_title);
	}
	else if (valid)
	{
		nulls[5] = 'n';
		nulls[6] = 'n';
	}
	else
	{
		values[5] = CStringGetTextDatum("phone_invalid");
		values[6] = CStringGetTextDatum(raw == NULL ? "recipient is NULL" :
										"recipient is not a phone number that can be made E.164");
	}
	if (dedupe_key != NULL)
		values[7] = PointerGetDatum(dedupe_key);
	else
		nulls[7] = 'n';
	if (context != NULL)
		values[8] = JsonbPGetDatum(context);
	else
		nulls[8] = 'n';
	values[9] = Int32GetDatum(verdict.error_code);
	if (verdict.error_code == 0)
		nulls[9] = 'n';
	values[10] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	if (verdict.state)
		valid = false;			/* recorded, never delivered */

	rc = SPI_execute_plan(dedupe_key != NULL ? plan_insert_dedupe : plan_insert,
						  values, nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "whatsapp enqueue failed: %s", SPI_result_code_string(rc));

	inserted = SPI_processed > 0;
	if (!inserted)
	{
		/* The dedupe key is taken: return the first message's id. */
		Datum		find[2] = {Int32GetDatum(account_id), PointerGetDatum(dedupe_key)};

		/*
		 * Not read-only: at READ COMMITTED that takes a new snapshot, which
		 * sees the row we waited for.  At REPEATABLE READ the row stays
		 * invisible and the caller gets 40001, as the SPEC wants.
		 */
		rc = SPI_execute_plan(plan_find_dedupe, find, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent message with the same dedupe_key"),
					 errhint("Retry the transaction.")));

		/* Its id is for the roles that may act on it. */
		if (!wa_may_act_on(caller,
						   SPI_getvalue(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 2)))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("dedupe_key \"%s\" is taken in this account by a message of another role",
							text_to_cstring(dedupe_key)),
					 errdetail("A message's id is shown only to the role that queued it, to roles that have its privileges, and to members of whatsapp_admin."),
					 errhint("Use dedupe keys of this role's own, for example with the application's name as prefix, or send through a function owned by the role that queued the first message.")));
		valid = false;			/* nothing new to deliver */
	}
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	/* recorded as failed or blocked, not queued: whatsapp.stats counts it */
	if (inserted)
		wa_stats_count_enqueue(account_id, rec_state, rec_failure_type);
	*deliver = valid;
	return id;
}

/*
 * Insert the message and return its id: take the function owner's rights,
 * remember the caller, and give them back.
 */
static int64
enqueue(FunctionCallInfo fcinfo, text *recipient, const char *kind,
		Jsonb *payload, text *account, text *dedupe_key, Jsonb *context)
{
	WaActingAs	acting;
	volatile int64 id = 0;
	volatile bool deliver = false;

	if (dedupe_key != NULL)
	{
		int			len = VARSIZE_ANY_EXHDR(dedupe_key);

		if (len == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dedupe_key must not be empty"),
					 errhint("Pass NULL for no deduplication, or a key such as 'account.move:42:invoice_posted'.")));
		if (len > WA_MAX_DEDUPE_KEY)
			ereport(ERROR,
					(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
					 errmsg("dedupe_key is longer than %d bytes", WA_MAX_DEDUPE_KEY)));
	}

	wa_act_as_owner(fcinfo, &acting);
	PG_TRY();
	{
		bool		valid = false;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		id = enqueue_as_owner(acting.caller, recipient, kind, payload,
							  account, dedupe_key, context, &valid);
		SPI_finish();
		deliver = valid;
	}
	PG_FINALLY();
	{
		wa_act_as_caller_again(&acting);
	}
	PG_END_TRY();

	if (deliver)
	{
		wa_wake_worker_at_commit();
		warn_if_undelivered();
	}
	return id;
}

/* Raise unless t is a non-empty text of at most WA_MAX_TEXT_CHARS. */
static void
check_text_argument(text *t, const char *what)
{
	int			len;

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
	len = VARSIZE_ANY_EXHDR(t);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (len > WA_MAX_TEXT_CHARS &&
		pg_mbstrlen_with_len(VARDATA_ANY(t), len) > WA_MAX_TEXT_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is longer than %d characters", what, WA_MAX_TEXT_CHARS),
				 errhint("The Cloud API accepts at most %d characters; split the text into several messages.",
						 WA_MAX_TEXT_CHARS)));
}

#define ARG_TEXT(n) (PG_ARGISNULL(n) ? NULL : PG_GETARG_TEXT_PP(n))
#define ARG_JSONB(n) (PG_ARGISNULL(n) ? NULL : PG_GETARG_JSONB_P(n))

static Jsonb *
jsonb_from_cstring(const char *json)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/*
 * wa_send(recipient, body, account, dedupe_key, context)
 */
PG_FUNCTION_INFO_V1(wa_send);
Datum
wa_send(PG_FUNCTION_ARGS)
{
	text	   *body = ARG_TEXT(1);
	StringInfoData buf;

	check_text_argument(body, "body");

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\": \"text\", \"text\": {\"body\": ");
	escape_json(&buf, text_to_cstring(body));
	appendStringInfoString(&buf, "}}");

	PG_RETURN_INT64(enqueue(fcinfo, ARG_TEXT(0), "text", jsonb_from_cstring(buf.data),
							ARG_TEXT(2), ARG_TEXT(3), ARG_JSONB(4)));
}

static void
bad_params(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("params of whatsapp.wa_send_template has an unsupported form"),
			 errdetail("%s", detail),
			 errhint("Pass a JSON array of strings (positional body parameters), a JSON object of strings (named body parameters), a Cloud API components array (objects that each have \"type\"), or NULL.")));
}

/* Append a {"type": "text", "text": ...} body parameter. */
static void
append_text_parameter(StringInfo buf, JsonbValue *name, JsonbValue *v)
{
	appendStringInfoString(buf, "{\"type\": \"text\", ");
	if (name != NULL)
	{
		appendStringInfoString(buf, "\"parameter_name\": ");
		escape_json(buf, pnstrdup(name->val.string.val, name->val.string.len));
		appendStringInfoString(buf, ", ");
	}
	appendStringInfoString(buf, "\"text\": ");
	escape_json(buf, pnstrdup(v->val.string.val, v->val.string.len));
	appendStringInfoChar(buf, '}');
}

/*
 * Append the "components" member for params, or nothing when params
 * carries no parameters.
 */
static void
append_components(StringInfo buf, Jsonb *params)
{
	JsonbContainer *root = &params->root;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;

	if (JB_ROOT_IS_SCALAR(params))
		bad_params("params is a JSON scalar.");
	if (JB_ROOT_COUNT(params) == 0)
		return;

	if (JB_ROOT_IS_ARRAY(params))
	{
		JsonbValue *elem = getIthJsonbValueFromContainer(root, 0);

		if (elem->type == jbvBinary && JsonContainerIsObject(elem->val.binary.data))
		{
			/* A components array: every element an object with "type". */
			uint32		n = JsonContainerSize(root);

			for (uint32 i = 0; i < n; i++)
			{
				JsonbValue *e = getIthJsonbValueFromContainer(root, i);
				JsonbValue *t;

				if (e->type != jbvBinary || !JsonContainerIsObject(e->val.binary.data))
					bad_params("A components array must hold only objects.");
				t = getKeyJsonValueFromContainer(e->val.binary.data, "type", 4, NULL);
				if (t == NULL || t->type != jbvString)
					bad_params("Every object of a components array needs a string member \"type\".");
			}
			appendStringInfoString(buf, ", \"components\": ");
			appendStringInfoString(buf, JsonbToCString(NULL, root, VARSIZE(params)));
			return;
		}

		appendStringInfoString(buf, ", \"components\": [{\"type\": \"body\", \"parameters\": [");
		it = JsonbIteratorInit(root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok != WJB_ELEM)
				continue;
			if (v.type != jbvString)
				bad_params("A positional params array must hold only strings.");
			if (!first)
				appendStringInfoString(buf, ", ");
			first = false;
			append_text_parameter(buf, NULL, &v);
		}
		appendStringInfoString(buf, "]}]");
		return;
	}

	/* An object of named parameters. */
	appendStringInfoString(buf, ", \"components\": [{\"type\": \"body\", \"parameters\": [");
	it = JsonbIteratorInit(root);
	{
		JsonbValue	key = {0};

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				key = v;
				continue;
			}
			if (tok != WJB_VALUE)
				continue;
			if (v.type != jbvString)
				bad_params("A named params object must map names to strings.");
			if (!first)
				appendStringInfoString(buf, ", ");
			first = false;
			append_text_parameter(buf, &key, &v);
		}
	}
	appendStringInfoString(buf, "]}]");
}

/* Template names are lower case letters, digits and underscores. */
static void
check_template_name(text *t)
{
	char	   *s;

	check_text_argument(t, "template");
	s = text_to_cstring(t);
	if (strlen(s) > WA_MAX_TEMPLATE_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("template name is longer than %d bytes", WA_MAX_TEMPLATE_NAME)));
	for (char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template name \"%s\" is not a Cloud API template name", s),
					 errhint("Template names use only lower case letters, digits and underscores, as in \"order_confirmation\".")));
}

/* Normalize a language code in place: "-" becomes "_"; check the shape. */
static char *
normalize_language(text *t)
{
	char	   *s;
	int			letters = 0;
	char	   *p;

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("language must not be NULL"),
				 errhint("Pass the template's language code, such as 'es_MX' or 'pt_BR'.")));
	s = text_to_cstring(t);
	for (p = s; *p; p++)
		if (*p == '-')
			*p = '_';
	p = s;
	while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
		p++, letters++;
	if (letters >= 2 && letters <= 3 && *p == '_')
	{
		int			rest = 0;

		p++;
		while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			   (*p >= '0' && *p <= '9'))
			p++, rest++;
		if (rest < 2 || rest > 4)
			letters = 0;
	}
	if (letters < 2 || letters > 3 || *p != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("language \"%s\" is not a template language code", s),
				 errhint("Use a code such as 'es', 'es_MX' or 'pt_BR'.")));
	return s;
}

/*
 * wa_send_template(recipient, template, language, params, account,
 *					dedupe_key, context)
 */
PG_FUNCTION_INFO_V1(wa_send_template);
Datum
wa_send_template(PG_FUNCTION_ARGS)
{
	text	   *template = ARG_TEXT(1);
	char	   *language;
	Jsonb	   *params = ARG_JSONB(3);
	StringInfoData buf;

	check_template_name(template);
	language = normalize_language(ARG_TEXT(2));

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\": \"template\", \"template\": {\"name\": ");
	escape_json(&buf, text_to_cstring(template));
	appendStringInfoString(&buf, ", \"language\": {\"code\": ");
	escape_json(&buf, language);
	appendStringInfoChar(&buf, '}');
	if (params != NULL)
		append_components(&buf, params);
	appendStringInfoString(&buf, "}}");

	PG_RETURN_INT64(enqueue(fcinfo, ARG_TEXT(0), "template", jsonb_from_cstring(buf.data),
							ARG_TEXT(4), ARG_TEXT(5), ARG_JSONB(6)));
}

/* Members of the envelope that the extension sets itself. */
static const char *const envelope_keys[] = {
	"messaging_product", "recipient_type", "to", "recipient",
	"biz_opaque_callback_data"
};

/*
 * wa_send_message(recipient, message, account, dedupe_key, context)
 */
PG_FUNCTION_INFO_V1(wa_send_message);
Datum
wa_send_message(PG_FUNCTION_ARGS)
{
	Jsonb	   *message = ARG_JSONB(1);
	JsonbValue *type;
	JsonbValue *obj;
	char	   *kind;

	if (message == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("message must not be NULL")));
	if (!JB_ROOT_IS_OBJECT(message))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message must be a JSON object"),
				 errhint("Pass a Cloud API message object such as {\"type\": \"document\", \"document\": {\"link\": \"https://...\"}}.")));
	type = getKeyJsonValueFromContainer(&message->root, "type", 4, NULL);
	if (type == NULL || type->type != jbvString || type->val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message needs a string member \"type\""),
				 errhint("Pass a Cloud API message object such as {\"type\": \"image\", \"image\": {\"link\": \"https://...\"}}.")));
	kind = pnstrdup(type->val.string.val, type->val.string.len);
	obj = getKeyJsonValueFromContainer(&message->root, type->val.string.val,
									   type->val.string.len, NULL);
	if (obj == NULL || obj->type != jbvBinary || !JsonContainerIsObject(obj->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message of type \"%s\" needs an object member \"%s\"", kind, kind)));
	for (int i = 0; i < (int) lengthof(envelope_keys); i++)
		if (getKeyJsonValueFromContainer(&message->root, envelope_keys[i],
										 strlen(envelope_keys[i]), NULL) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("message must not contain \"%s\"", envelope_keys[i]),
					 errdetail("The extension sets the envelope (messaging_product, recipient_type, to and biz_opaque_callback_data) itself."),
					 errhint("Pass the recipient as the first argument.")));
	if (strcmp(kind, "text") == 0)
	{
		JsonbValue *body = getKeyJsonValueFromContainer(obj->val.binary.data, "body", 4, NULL);

		if (body == NULL || body->type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a text message needs a string member \"text\".\"body\"")));
		check_text_argument(cstring_to_text_with_len(body->val.string.val,
													 body->val.string.len),
							"body");
	}

	PG_RETURN_INT64(enqueue(fcinfo, ARG_TEXT(0), kind, message,
							ARG_TEXT(2), ARG_TEXT(3), ARG_JSONB(4)));
}

/* ----------
 * The outbox's CHECK constraints
 *
 * whatsapp.message checks its state and failure_type with these instead
 * of "col IN (...)": PostgreSQL reads and plans a table's CHECK
 * expressions again for every INSERT or UPDATE statement, and an IN list
 * of eight strings (a text[] constant in the stored expression) costs
 * about 15 us per statement to read, where a function call of one column
 * costs about one.  Every enqueue, status webhook and Odoo event is such
 * a statement.  The lists are SPEC's states and failure types.
 * ----------
 */
static const char *const message_states[] = {
	"queued", "sending", "sent", "delivered", "read", "failed", "cancelled",
	"blocked"
};

static const char *const failure_types[] = {
	"phone_invalid", "opted_out", "account", "template",
	"whatsapp_recoverable", "whatsapp_unrecoverable", "network"
};

static bool
text_in_list(text *t, const char *const *list, int n)
{
	const char *s = VARDATA_ANY(t);
	size_t		len = VARSIZE_ANY_EXHDR(t);

	for (int i = 0; i < n; i++)
		if (strlen(list[i]) == len && memcmp(list[i], s, len) == 0)
			return true;
	return false;
}

/* whatsapp._message_state_valid(text): STRICT, so NULL passes the CHECK */
PG_FUNCTION_INFO_V1(wa_message_state_valid);

Datum
wa_message_state_valid(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(text_in_list(PG_GETARG_TEXT_PP(0), message_states,
								lengthof(message_states)));
}

/* whatsapp._failure_type_valid(text): STRICT, so NULL passes the CHECK */
PG_FUNCTION_INFO_V1(wa_failure_type_valid);

Datum
wa_failure_type_valid(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(text_in_list(PG_GETARG_TEXT_PP(0), failure_types,
								lengthof(failure_types)));
}

/*
 * The worker's phase of a message state: 'q' queued, 's' sending, '\0' for
 * every other state (nothing left for the worker to do).  Shared by the
 * payload CHECK and the phase column below, which must agree.
 */
static char
state_phase(text *state)
{
	size_t		len = VARSIZE_ANY_EXHDR(state);

	if (len == 6 && memcmp(VARDATA_ANY(state), "queued", 6) == 0)
		return 'q';
	if (len == 7 && memcmp(VARDATA_ANY(state), "sending", 7) == 0)
		return 's';
	return '\0';
}

/*
 * whatsapp._message_payload_valid(state text, payload jsonb): not STRICT.
 * A message queued or sending has its content (message_payload_check).
 * Only whether payload is NULL is looked at, so it is never detoasted.
 */
PG_FUNCTION_INFO_V1(wa_message_payload_valid);

Datum
wa_message_payload_valid(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(1))
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();		/* NULL passes a CHECK, as state NOT IN did */
	PG_RETURN_BOOL(state_phase(PG_GETARG_TEXT_PP(0)) == '\0');
}

/*
 * whatsapp._message_phase(state text): STRICT.  The generation expression
 * of whatsapp.message.phase: 'q' for queued, 's' for sending, NULL for
 * every other state.  A C function, for the reason the CHECKs are one:
 * PostgreSQL reads and plans a stored generated column's expression again
 * for every INSERT or UPDATE statement, and a call of one argument is the
 * shortest expression to read.
 */
PG_FUNCTION_INFO_V1(wa_message_phase);

Datum
wa_message_phase(PG_FUNCTION_ARGS)
{
	char		phase = state_phase(PG_GETARG_TEXT_PP(0));

	if (phase == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text_with_len(&phase, 1));
}
