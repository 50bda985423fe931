/*-------------------------------------------------------------------------
 *
 * accounts.c
 *	  The account functions: wa_account_set, wa_account_drop, wa_rotate_key
 *	  and wa_rebind, and the trigger of the write-only view
 *	  whatsapp.account_input.
 *
 * Secrets arrive as function arguments, or as the columns of a row
 * inserted into whatsapp.account_input (by COPY ... FROM STDIN, whose data
 * is never statement text), are sealed in C (seal.c) and only their
 * ciphertexts travel through SPI.  Both ways go through set_account(), so
 * they check, store and fail alike.  No message raised here ever contains
 * a value other than an account name, and every caller error hides the
 * statement (errhidestmt), because the statement text may hold the
 * secrets.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "commands/copyfrom_internal.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#define WA_ACCOUNT_NAME_MAX		63
#define WA_SECRET_MAX_BYTES		4096
#define WA_MAX_MPS_LIMIT		100000

PG_FUNCTION_INFO_V1(wa_account_set);
PG_FUNCTION_INFO_V1(wa_account_drop);
PG_FUNCTION_INFO_V1(wa_rotate_key);
PG_FUNCTION_INFO_V1(wa_rebind);
PG_FUNCTION_INFO_V1(wa_account_input_trigger);

/*
 * The arguments of wa_account_set, in its order.  The columns of
 * whatsapp.account_input have the same names.
 */
enum
{
	AA_NAME,
	AA_PHONE_NUMBER_ID,
	AA_ACCESS_TOKEN,
	AA_APP_SECRET,
	AA_VERIFY_TOKEN,
	AA_WABA_ID,
	AA_MAX_MPS,
	AA_COUNT
};

static const char *const account_arg_names[AA_COUNT] = {
	"name", "phone_number_id", "access_token", "app_secret", "verify_token",
	"waba_id", "max_mps"
};

/* What a call does with one secret column. */
typedef enum SecretAction
{
	SECRET_KEEP,				/* NULL argument: keep the stored one */
	SECRET_REMOVE,				/* '': remove it */
	SECRET_SET					/* seal and store the new value */
} SecretAction;

typedef struct SecretArg
{
	const char *field;			/* WA_FIELD_* */
	SecretAction action;
	char	   *value;			/* SECRET_SET: the plaintext, wiped after use */
	bytea	   *sealed;			/* SECRET_SET: the ciphertext */
	char	   *key_id;			/* SECRET_SET: its key id */
} SecretArg;

/* The arguments of wa_account_set, once checked. */
typedef struct AccountArgs
{
	char	   *name;
	text	   *name_t;
	text	   *phone_t;
	text	   *waba_t;			/* NULL for SQL NULL */
	int32		max_mps;
	SecretArg	secrets[3];
} AccountArgs;

/* The three secret columns, in the order of the table and the arguments. */
static const char *const secret_fields[3] = {
	WA_FIELD_TOKEN, WA_FIELD_APP_SECRET, WA_FIELD_VERIFY_TOKEN
};

/* Saved SPI plans, prepared on first use. */
static SPIPlanPtr plan_lock_account = NULL;
static SPIPlanPtr plan_next_id = NULL;
static SPIPlanPtr plan_insert = NULL;
static SPIPlanPtr plan_update = NULL;
static SPIPlanPtr plan_drop = NULL;
static SPIPlanPtr plan_fail_messages = NULL;
static SPIPlanPtr plan_lock_secrets = NULL;
static SPIPlanPtr plan_reseal = NULL;
static SPIPlanPtr plan_unpause_binding = NULL;

static void
connect_spi(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "whatsapp could not connect to SPI");
}

/* Are all bytes of the text ASCII digits (and is there at least one)? */
static bool
text_is_digits(text *t)
{
	const char *p = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len == 0)
		return false;
	for (int i = 0; i < len; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return true;
}

/*
 * Read one secret argument and decide what to do with it.  Raises for a
 * value that is too long or holds control characters, without ever
 * showing the value.
 */
static void
read_secret_arg(const NullableDatum *in, const char *field, bool copy,
				SecretArg *arg)
{
	text	   *t;
	const unsigned char *p;
	int			len;

	memset(arg, 0, sizeof(*arg));
	arg->field = field;
	if (in->isnull)
	{
		arg->action = SECRET_KEEP;
		return;
	}
	t = DatumGetTextPP(in->value);
	p = (const unsigned char *) VARDATA_ANY(t);
	len = VARSIZE_ANY_EXHDR(t);
	if (len == 0)
	{
		arg->action = SECRET_REMOVE;
		return;
	}
	if (len > WA_SECRET_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long", field),
				 errdetail("A secret holds at most %d bytes; the value is not shown.",
						   WA_SECRET_MAX_BYTES),
				 errhint("Pass the %s exactly as Meta shows it.", field),
				 errhidestmt(true)));
	for (int i = 0; i < len; i++)
	{
		if (p[i] < 0x20 || p[i] == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s contains control characters", field),
					 errdetail("Secrets are printable text; the value is not shown."),
					 errhint("Pass the %s without line breaks, tabs or other control characters.", field),
					 errhidestmt(true)));
	}
	arg->action = SECRET_SET;
	if (copy)
		arg->value = text_to_cstring(t);
}

static void
wipe_secret_args(SecretArg *args, int n)
{
	for (int i = 0; i < n; i++)
	{
		wa_wipe(args[i].value);
		args[i].value = NULL;
	}
}

/* The ERROR for a secret that could not be unsealed. */
static void
report_unseal_failure(const char *account, const char *field,
					  WaUnsealResult r, bool rebinding)
{
	int			code;
	const char *hint = wa_unseal_result_hint(r);

	switch (r)
	{
		case WA_UNSEAL_NO_KEY:
			code = ERRCODE_UNDEFINED_FILE;
			break;
		case WA_UNSEAL_BAD_KEY_FILE:
		case WA_UNSEAL_WRONG_KEY:
			code = ERRCODE_CONFIG_FILE_ERROR;
			break;
		case WA_UNSEAL_BINDING:
			code = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
			if (rebinding)
				hint = "The ciphertext was sealed for another account or field; set the secret again with whatsapp.wa_account_set().";
			break;
		case WA_UNSEAL_NO_PGCRYPTO:
			code = ERRCODE_UNDEFINED_OBJECT;
			break;
		default:
			code = ERRCODE_DATA_CORRUPTED;
			break;
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg("could not unseal the %s of account \"%s\"", field, account),
			 errdetail("%s", wa_unseal_result_text(r)),
			 hint ? errhint("%s", hint) : 0));
}

/*
 * The part of wa_account_set that writes: lock or create the row, seal the
 * new secrets bound to its id, store them.  The caller wipes the secrets.
 */
static void
store_account(AccountArgs *args)
{
	const char *name = args->name;
	text	   *name_t = args->name_t;
	text	   *phone_t = args->phone_t;
	text	   *waba_t = args->waba_t;
	int32		max_mps = args->max_mps;
	SecretArg  *secrets = args->secrets;
	int32		account_id;
	bool		is_new;
	int			rc;
	Oid			lock_types[1] = {TEXTOID};
	Datum		lock_values[1];

	connect_spi();

	/* An existing live account of that name, locked. */
	lock_values[0] = PointerGetDatum(name_t);
	rc = SPI_execute_plan(wa_plan(&plan_lock_account,
									   "SELECT a.id FROM whatsapp.account a"
									   " WHERE a.name OPERATOR(pg_catalog.=) $1"
									   " AND a.dropped_at IS NULL"
									   " FOR UPDATE",
									   1, lock_types),
						  lock_values, NULL, false, 1);
	wa_spi_check(rc, SPI_OK_SELECT, "look up the account");
	if (SPI_processed > 0)
	{
		bool		isnull;

		is_new = false;
		account_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc,
												 1, &isnull));
	}
	else
	{
		bool		isnull;

		is_new = true;
		if (secrets[0].action == SECRET_KEEP)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("access_token must not be null for a new account"),
					 errdetail("Account \"%s\" does not exist yet, so there is no stored access token to keep.",
							   name),
					 errhint("Pass the account's access token, or '' to create the account without one."),
					 errhidestmt(true)));

		/* The id comes first: the sealed secrets are bound to it. */
		rc = SPI_execute_plan(wa_plan(&plan_next_id,
										   "SELECT pg_catalog.nextval('whatsapp.account_id_seq'::pg_catalog.regclass)::pg_catalog.int4",
										   0, NULL),
							  NULL, NULL, false, 1);
		wa_spi_check(rc, SPI_OK_SELECT, "allocate an account id");
		account_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc,
												 1, &isnull));
	}

	for (int i = 0; i < 3; i++)
	{
		if (secrets[i].action != SECRET_SET)
			continue;
		secrets[i].sealed = wa_seal(account_id, secrets[i].field,
									secrets[i].value, &secrets[i].key_id);
		wa_wipe(secrets[i].value);
		secrets[i].value = NULL;
	}

	if (is_new)
	{
		Oid			types[11] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, INT4OID,
		BYTEAOID, TEXTOID, BYTEAOID, TEXTOID, BYTEAOID, TEXTOID};
		Datum		values[11];
		char		nulls[11];

		memset(nulls, ' ', sizeof(nulls));
		values[0] = Int32GetDatum(account_id);
		values[1] = PointerGetDatum(name_t);
		values[2] = PointerGetDatum(phone_t);
		values[3] = PointerGetDatum(waba_t);
		if (waba_t == NULL)
			nulls[3] = 'n';
		values[4] = Int32GetDatum(max_mps);
		for (int i = 0; i < 3; i++)
		{
			if (secrets[i].action == SECRET_SET)
			{
				values[5 + 2 * i] = PointerGetDatum(secrets[i].sealed);
				values[6 + 2 * i] = CStringGetTextDatum(secrets[i].key_id);
			}
			else
			{
				values[5 + 2 * i] = (Datum) 0;
				values[6 + 2 * i] = (Datum) 0;
				nulls[5 + 2 * i] = 'n';
				nulls[6 + 2 * i] = 'n';
			}
		}
		/*
		 * A conflict means another transaction created an account of this
		 * name, or the first (default) account, meanwhile.  At READ
		 * COMMITTED a second try sees that account committed and so no
		 * longer claims the default; a name taken meanwhile fails again.
		 */
		for (int attempt = 0; attempt < 2; attempt++)
		{
			rc = SPI_execute_plan(wa_plan(&plan_insert,
											   "INSERT INTO whatsapp.account AS a"
											   " (id, name, phone_number_id, waba_id, max_mps, is_default,"
											   "  access_token, access_token_key, app_secret, app_secret_key,"
											   "  verify_token, verify_token_key)"
											   " SELECT $1, $2, $3, $4, $5,"
											   "  NOT EXISTS (SELECT 1 FROM whatsapp.account o"
											   "              WHERE o.dropped_at IS NULL),"
											   "  $6, $7, $8, $9, $10, $11"
											   " ON CONFLICT DO NOTHING",
											   11, types),
								  values, nulls, false, 0);
			wa_spi_check(rc, SPI_OK_INSERT, "create the account");
			if (SPI_processed == 1)
				break;
			if (attempt == 1 || IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not create account \"%s\" because of a concurrent change",
								name),
						 errdetail("Another transaction created an account of that name, or the first account, at the same time."),
						 errhint("Run the call again."),
						 errhidestmt(true)));
		}
	}
	else
	{
		Oid			types[13] = {INT4OID, TEXTOID, TEXTOID, INT4OID,
			BOOLOID, BYTEAOID, TEXTOID,
			BOOLOID, BYTEAOID, TEXTOID,
		BOOLOID, BYTEAOID, TEXTOID};
		Datum		values[13];
		char		nulls[13];

		memset(nulls, ' ', sizeof(nulls));
		values[0] = Int32GetDatum(account_id);
		values[1] = PointerGetDatum(phone_t);
		values[2] = PointerGetDatum(waba_t);
		if (waba_t == NULL)
			nulls[2] = 'n';
		values[3] = Int32GetDatum(max_mps);
		for (int i = 0; i < 3; i++)
		{
			int			base = 4 + 3 * i;

			values[base] = BoolGetDatum(secrets[i].action != SECRET_KEEP);
			if (secrets[i].action == SECRET_SET)
			{
				values[base + 1] = PointerGetDatum(secrets[i].sealed);
				values[base + 2] = CStringGetTextDatum(secrets[i].key_id);
			}
			else
			{
				values[base + 1] = (Datum) 0;
				values[base + 2] = (Datum) 0;
				nulls[base + 1] = 'n';
				nulls[base + 2] = 'n';
			}
		}
		rc = SPI_execute_plan(wa_plan(&plan_update,
										   "UPDATE whatsapp.account a SET"
										   " phone_number_id = $2, waba_id = $3, max_mps = $4,"
										   " access_token = CASE WHEN $5 THEN $6 ELSE a.access_token END,"
										   " access_token_key = CASE WHEN $5 THEN $7 ELSE a.access_token_key END,"
										   " app_secret = CASE WHEN $8 THEN $9 ELSE a.app_secret END,"
										   " app_secret_key = CASE WHEN $8 THEN $10 ELSE a.app_secret_key END,"
										   " verify_token = CASE WHEN $11 THEN $12 ELSE a.verify_token END,"
										   " verify_token_key = CASE WHEN $11 THEN $13 ELSE a.verify_token_key END,"
										   " paused_kind = NULL, paused_reason = NULL, paused_at = NULL,"
										   " backoff_until = NULL, updated_at = pg_catalog.now()"
										   " WHERE a.id OPERATOR(pg_catalog.=) $1",
										   13, types),
							  values, nulls, false, 0);
		wa_spi_check(rc, SPI_OK_UPDATE, "update the account");
	}

	wa_accounts_changed_at_commit();
	SPI_finish();
}

/*
 * max_mps given as text (whatsapp.account_input): a whole number, with
 * optional blanks around it and an optional sign, as integer input takes
 * it.  The value is never quoted: in a COPY whose columns are out of
 * place, it may be a secret.  Values too large for the range come back as
 * WA_MAX_MPS_LIMIT + 1.
 */
static int32
max_mps_from_text(text *t)
{
	const char *p = VARDATA_ANY(t);
	const char *end = p + VARSIZE_ANY_EXHDR(t);
	bool		negative = false;
	int64		value = 0;
	int			digits = 0;

	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p < end && (*p == '+' || *p == '-'))
		negative = (*p++ == '-');
	for (; p < end && *p >= '0' && *p <= '9'; p++, digits++)
	{
		if (value <= WA_MAX_MPS_LIMIT)
			value = value * 10 + (*p - '0');
	}
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (digits == 0 || p != end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("max_mps must be a whole number"),
				 errdetail("The value is not shown: in a COPY whose columns are out of place it could be a secret."),
				 errhint("Give the most messages per second to send through this account, such as 80, or leave max_mps out of the column list for 80."),
				 errhidestmt(true)));
	if (value > WA_MAX_MPS_LIMIT)
		value = WA_MAX_MPS_LIMIT + 1;
	return (int32) (negative ? -value : value);
}

/*
 * What wa_account_set and whatsapp.account_input do: check every argument
 * (in the order of the function's parameters, so that both report the
 * same first mistake), then create or update the account.  args are in
 * wa_account_set's order; max_mps is an integer, or text when
 * max_mps_is_text.
 */
static void
set_account(const NullableDatum *args, bool max_mps_is_text)
{
	AccountArgs account;

	/* name */
	if (args[AA_NAME].isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("account name must not be null"),
				 errhint("Pass a name for the account, such as 'main'."),
				 errhidestmt(true)));
	account.name_t = DatumGetTextPP(args[AA_NAME].value);
	if (VARSIZE_ANY_EXHDR(account.name_t) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("account name must not be empty"),
				 errhint("Pass a name for the account, such as 'main'."),
				 errhidestmt(true)));
	if (pg_mbstrlen_with_len(VARDATA_ANY(account.name_t),
							 VARSIZE_ANY_EXHDR(account.name_t)) > WA_ACCOUNT_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("account name is too long"),
				 errdetail("An account name has at most %d characters.",
						   WA_ACCOUNT_NAME_MAX),
				 errhint("Pass a shorter name."),
				 errhidestmt(true)));
	account.name = text_to_cstring(account.name_t);

	/* phone_number_id */
	if (args[AA_PHONE_NUMBER_ID].isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("phone_number_id must not be null"),
				 errhint("Pass the phone number ID that WhatsApp Manager shows for the business phone number."),
				 errhidestmt(true)));
	account.phone_t = DatumGetTextPP(args[AA_PHONE_NUMBER_ID].value);
	if (!text_is_digits(account.phone_t))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("phone_number_id must consist of digits only"),
				 errdetail("Meta's phone number IDs are numbers such as 106540352242922."),
				 errhint("Pass the phone number ID from WhatsApp Manager, not the phone number itself."),
				 errhidestmt(true)));

	/* waba_id */
	account.waba_t = NULL;
	if (!args[AA_WABA_ID].isnull)
	{
		account.waba_t = DatumGetTextPP(args[AA_WABA_ID].value);
		if (!text_is_digits(account.waba_t))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("waba_id must consist of digits only"),
					 errdetail("Meta's WhatsApp Business Account IDs are numbers such as 102290129340398."),
					 errhint("Pass the WhatsApp Business Account ID from WhatsApp Manager, or NULL."),
					 errhidestmt(true)));
	}

	/* max_mps */
	if (args[AA_MAX_MPS].isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_mps must not be null"),
				 errhint("Pass the most messages per second to send through this account, such as 80."),
				 errhidestmt(true)));
	if (max_mps_is_text)
		account.max_mps = max_mps_from_text(DatumGetTextPP(args[AA_MAX_MPS].value));
	else
		account.max_mps = DatumGetInt32(args[AA_MAX_MPS].value);
	if (account.max_mps < 1 || account.max_mps > WA_MAX_MPS_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_mps must be between 1 and %d", WA_MAX_MPS_LIMIT),
				 errdetail("Meta allows 80 messages per second per phone number by default; values over 1000 only make sense against a mock."),
				 errhint("Pass a value from 1 to %d.", WA_MAX_MPS_LIMIT),
				 errhidestmt(true)));

	/* secrets: check all three before copying any */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < 3; i++)
			read_secret_arg(&args[AA_ACCESS_TOKEN + i], secret_fields[i],
							pass == 1, &account.secrets[i]);

	PG_TRY();
	{
		store_account(&account);
		wa_audit(max_mps_is_text ? "account_input" : "wa_account_set",
				 account.name);
	}
	PG_CATCH();
	{
		wipe_secret_args(account.secrets, 3);
		PG_RE_THROW();
	}
	PG_END_TRY();
	wipe_secret_args(account.secrets, 3);
}

/*
 * wa_account_set(name, phone_number_id, access_token, app_secret,
 *				  verify_token, waba_id, max_mps) RETURNS void
 *
 * Creates or updates an account.  A NULL secret keeps the stored one, ''
 * removes it.  Updating resumes a paused account.
 */
Datum
wa_account_set(PG_FUNCTION_ARGS)
{
	NullableDatum args[AA_COUNT];

	/* pg_stat_activity must not show the call's text from here on. */
	wa_report_redacted_activity("wa_account_set");

	for (int i = 0; i < AA_COUNT; i++)
	{
		args[i].isnull = PG_ARGISNULL(i);
		args[i].value = args[i].isnull ? (Datum) 0 : PG_GETARG_DATUM(i);
	}
	set_account(args, false);

	PG_RETURN_VOID();
}

/*
 * The error context of a row of whatsapp.account_input: where it came
 * from, never what it holds.  arg is the COPY's state, or NULL.
 */
static void
account_input_error_context(void *arg)
{
	CopyFromState cstate = (CopyFromState) arg;

	if (cstate != NULL)
		errcontext("COPY %s, line %llu",
				   cstate->cur_relname,
				   (unsigned long long) cstate->cur_lineno);
}

/*
 * The trigger of whatsapp.account_input: INSTEAD OF INSERT, FOR EACH ROW.
 *
 * Each row sets an account exactly as wa_account_set with the same
 * arguments would.  Nothing of the row is stored: the view has no
 * storage, and the row returned (for the row count and RETURNING) has the
 * three secrets set to NULL.
 *
 * COPY's own error context callback quotes the line it is reading
 * ("COPY account_input, line 2: "main	1099887766	EAAG...""), and a
 * caller's context can quote the statement that inserted the row.  While
 * the row is handled, the error context stack is replaced by one entry
 * that names the COPY line, so that no error raised here (by this file,
 * seal.c, SPI or anything they call) carries either.  Errors that COPY
 * raises itself before the trigger runs (a line with too many or too few
 * fields) are out of this function's reach; the log hook of redact.c
 * trims them in a backend that has loaded the library (every backend,
 * when it is preloaded).
 */
Datum
wa_account_input_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	TupleDesc	desc;
	HeapTuple	row;
	int			attnums[AA_COUNT];
	NullableDatum args[AA_COUNT];
	ErrorContextCallback *outer = error_context_stack;
	ErrorContextCallback own;
	CopyFromState copy = NULL;
	int			secret_cols[3];
	Datum		secret_values[3] = {0, 0, 0};
	bool		secret_nulls[3] = {true, true, true};

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("whatsapp._account_input_trigger() may only be called as a trigger"),
				 errhint("Insert into, or COPY into, whatsapp.account_input instead.")));
	td = (TriggerData *) fcinfo->context;
	if (!TRIGGER_FIRED_INSTEAD(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("whatsapp._account_input_trigger() must be an INSTEAD OF INSERT trigger for each row"),
				 errhint("It belongs to the view whatsapp.account_input only.")));
	desc = RelationGetDescr(td->tg_relation);
	for (int i = 0; i < AA_COUNT; i++)
	{
		attnums[i] = SPI_fnumber(desc, account_arg_names[i]);
		if (attnums[i] <= 0 ||
			TupleDescAttr(desc, attnums[i] - 1)->atttypid != TEXTOID)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("relation \"%s\" has no text column \"%s\"",
							RelationGetRelationName(td->tg_relation),
							account_arg_names[i]),
					 errhint("whatsapp._account_input_trigger() belongs to the view whatsapp.account_input only.")));
	}

	/* Fired by COPY?  Its callback is on the stack, with its state. */
	for (ErrorContextCallback *e = outer; e != NULL; e = e->previous)
	{
		if (e->callback == CopyFromErrorCallback)
		{
			copy = (CopyFromState) e->arg;
			break;
		}
	}
	/* An INSERT's text may hold the secrets: as for wa_account_set. */
	if (copy == NULL)
		pgstat_report_activity(STATE_RUNNING,
							   "INSERT INTO whatsapp.account_input <redacted>");

	row = td->tg_trigtuple;
	own.callback = account_input_error_context;
	own.arg = copy;
	own.previous = NULL;
	error_context_stack = &own;
	PG_TRY();
	{
		for (int i = 0; i < AA_COUNT; i++)
			args[i].value = heap_getattr(row, attnums[i], desc, &args[i].isnull);
		set_account(args, true);
	}
	PG_FINALLY();
	{
		error_context_stack = outer;
	}
	PG_END_TRY();

	for (int i = 0; i < 3; i++)
		secret_cols[i] = attnums[AA_ACCESS_TOKEN + i];
	return PointerGetDatum(heap_modify_tuple_by_cols(row, desc, 3, secret_cols,
													 secret_values,
													 secret_nulls));
}

/*
 * wa_account_drop(name) RETURNS void
 *
 * The account's secrets are gone at once; its queued and in-flight
 * messages fail with failure_type 'account'.
 */
Datum
wa_account_drop(PG_FUNCTION_ARGS)
{
	Oid			drop_types[1] = {TEXTOID};
	Oid			fail_types[1] = {INT4OID};
	Datum		values[1];
	text	   *name_t;
	int32		account_id;
	bool		isnull;
	int			rc;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("account name must not be null"),
				 errhint("Pass the name of the account to drop, as the view whatsapp.accounts lists it."),
				 errhidestmt(true)));
	name_t = PG_GETARG_TEXT_PP(0);

	connect_spi();
	values[0] = PointerGetDatum(name_t);
	rc = SPI_execute_plan(wa_plan(&plan_drop,
									   "UPDATE whatsapp.account a SET"
									   " dropped_at = pg_catalog.now(), updated_at = pg_catalog.now(),"
									   " is_default = false,"
									   " access_token = NULL, access_token_key = NULL,"
									   " app_secret = NULL, app_secret_key = NULL,"
									   " verify_token = NULL, verify_token_key = NULL"
									   " WHERE a.name OPERATOR(pg_catalog.=) $1"
									   " AND a.dropped_at IS NULL"
									   " RETURNING a.id",
									   1, drop_types),
						  values, NULL, false, 0);
	wa_spi_check(rc, SPI_OK_UPDATE_RETURNING, "drop the account");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("account \"%s\" does not exist", text_to_cstring(name_t)),
				 errhint("The view whatsapp.accounts lists the accounts."),
				 errhidestmt(true)));
	account_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));

	values[0] = Int32GetDatum(account_id);
	/* phase (0.3 on) lets message_pair_idx serve it; see worker.c */
	rc = SPI_execute_plan(wa_plan(&plan_fail_messages,
								  psprintf("WITH f AS ("
										   " UPDATE whatsapp.message m SET"
										   "  state = 'failed', failure_type = 'account',"
										   "  failed_at = pg_catalog.now(), error_title = 'account dropped'"
										   " WHERE m.account_id OPERATOR(pg_catalog.=) $1"
										   "  AND m.state IN ('queued', 'sending')%s"
										   " RETURNING m.id)"
										   " INSERT INTO whatsapp.log (message_id, event, message)"
										   " SELECT f.id, 'account', 'account dropped' FROM f",
										   wa_message_has_phase() ? " AND m.phase IS NOT NULL" : ""),
								  1, fail_types),
						  values, NULL, false, 0);
	wa_spi_check(rc, SPI_OK_INSERT, "fail the account's messages");
	wa_audit("wa_account_drop", text_to_cstring(name_t));

	wa_accounts_changed_at_commit();
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Unseal one stored secret, raising an ERROR that names the account when
 * it cannot be.  Returns the plaintext (wipe it with wa_wipe()).
 */
static char *
unseal_or_raise(HeapTuple tup, TupleDesc desc, int field_no,
				int32 account_id, const char *account, bool check_database,
				bool rebinding)
{
	bool		isnull;
	bool		key_isnull;
	Datum		sealed;
	Datum		key_id;
	char	   *secret = NULL;
	WaUnsealResult r;

	/* columns: id, name, then (ciphertext, key id) per field */
	sealed = SPI_getbinval(tup, desc, 3 + 2 * field_no, &isnull);
	if (isnull)
		return NULL;
	key_id = SPI_getbinval(tup, desc, 4 + 2 * field_no, &key_isnull);
	r = wa_unseal(DatumGetByteaPP(sealed),
				  key_isnull ? NULL : TextDatumGetCString(key_id),
				  account_id, secret_fields[field_no], check_database, &secret);
	if (r != WA_UNSEAL_OK)
		report_unseal_failure(account, secret_fields[field_no], r, rebinding);
	return secret;
}

/*
 * Lock every live account and return the rows (id, name, then ciphertext
 * and key id of each secret), in id order.
 */
static SPITupleTable *
lock_accounts_with_secrets(uint64 *nrows)
{
	int			rc;

	rc = SPI_execute_plan(wa_plan(&plan_lock_secrets,
									   "SELECT a.id, a.name,"
									   " a.access_token, a.access_token_key,"
									   " a.app_secret, a.app_secret_key,"
									   " a.verify_token, a.verify_token_key"
									   " FROM whatsapp.account a"
									   " WHERE a.dropped_at IS NULL"
									   " ORDER BY a.id"
									   " FOR UPDATE",
									   0, NULL),
						  NULL, NULL, false, 0);
	wa_spi_check(rc, SPI_OK_SELECT, "lock the accounts");
	*nrows = SPI_processed;
	return SPI_tuptable;
}

/*
 * Unseal one stored secret and seal it again under the current key for
 * this database.  Returns NULL when the column is NULL.
 */
static bytea *
reseal_one(HeapTuple tup, TupleDesc desc, int field_no, int32 account_id,
		   const char *account, bool check_database, bool rebinding,
		   char **key_id)
{
	char	   *volatile secret = NULL;
	bytea	   *volatile sealed = NULL;

	PG_TRY();
	{
		secret = unseal_or_raise(tup, desc, field_no, account_id, account,
								 check_database, rebinding);
		if (secret != NULL)
			sealed = wa_seal(account_id, secret_fields[field_no], secret,
							 key_id);
	}
	PG_CATCH();
	{
		wa_wipe(secret);
		PG_RE_THROW();
	}
	PG_END_TRY();

	wa_wipe(secret);
	return sealed;
}

/*
 * Unseal every secret of every row and seal it again under the current
 * key for this database, storing the new ciphertexts.  Returns how many
 * secrets were sealed again.
 */
static int
reseal_all(SPITupleTable *rows, uint64 nrows, bool check_database,
		   bool rebinding)
{
	Oid			types[7] = {INT4OID, BYTEAOID, TEXTOID, BYTEAOID, TEXTOID,
	BYTEAOID, TEXTOID};
	int			count = 0;

	for (uint64 row = 0; row < nrows; row++)
	{
		HeapTuple	tup = rows->vals[row];
		TupleDesc	desc = rows->tupdesc;
		bool		isnull;
		int32		account_id;
		char	   *account;
		Datum		values[7];
		char		nulls[7];
		bool		any = false;
		int			rc;

		account_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		account = SPI_getvalue(tup, desc, 2);
		memset(nulls, ' ', sizeof(nulls));
		values[0] = Int32GetDatum(account_id);

		for (int f = 0; f < 3; f++)
		{
			char	   *key_id = NULL;
			bytea	   *sealed;

			sealed = reseal_one(tup, desc, f, account_id, account,
								check_database, rebinding, &key_id);
			if (sealed == NULL)
			{
				values[1 + 2 * f] = (Datum) 0;
				values[2 + 2 * f] = (Datum) 0;
				nulls[1 + 2 * f] = 'n';
				nulls[2 + 2 * f] = 'n';
				continue;
			}
			values[1 + 2 * f] = PointerGetDatum(sealed);
			values[2 + 2 * f] = CStringGetTextDatum(key_id);
			any = true;
			count++;
		}
		if (!any)
			continue;

		rc = SPI_execute_plan(wa_plan(&plan_reseal,
										   "UPDATE whatsapp.account a SET"
										   " access_token = $2, access_token_key = $3,"
										   " app_secret = $4, app_secret_key = $5,"
										   " verify_token = $6, verify_token_key = $7"
										   " WHERE a.id OPERATOR(pg_catalog.=) $1",
										   7, types),
							  values, nulls, false, 0);
		wa_spi_check(rc, SPI_OK_UPDATE, "store the sealed secrets");
	}
	return count;
}

/* Check that every secret of every row can be unsealed, changing nothing. */
static void
check_all_unseal(SPITupleTable *rows, uint64 nrows, bool check_database)
{
	for (uint64 row = 0; row < nrows; row++)
	{
		HeapTuple	tup = rows->vals[row];
		TupleDesc	desc = rows->tupdesc;
		bool		isnull;
		int32		account_id;
		char	   *account;

		account_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		account = SPI_getvalue(tup, desc, 2);
		for (int f = 0; f < 3; f++)
			wa_wipe(unseal_or_raise(tup, desc, f, account_id, account,
									check_database, false));
	}
}

/*
 * wa_rotate_key() RETURNS integer
 *
 * Writes a new key file whose first key is new and which keeps all older
 * keys (other databases of the cluster may still use them), then seals
 * every secret of this database again under the new key.  Every secret is
 * unsealed once before the file is touched, so a secret that cannot be
 * unsealed stops the rotation with nothing changed.  Returns the number
 * of secrets sealed again.
 */
Datum
wa_rotate_key(PG_FUNCTION_ARGS)
{
	SPITupleTable *rows;
	uint64		nrows;
	int			count;
	char	   *key_id;

	connect_spi();
	rows = lock_accounts_with_secrets(&nrows);
	check_all_unseal(rows, nrows, true);
	key_id = wa_rotate_key_file();
	count = reseal_all(rows, nrows, true, false);
	wa_audit("wa_rotate_key", psprintf("key id %s, %d secrets sealed again", key_id, count));
	wa_accounts_changed_at_commit();
	SPI_finish();
	PG_RETURN_INT32(count);
}

/*
 * wa_rebind() RETURNS integer
 *
 * Confirms that this database (a restore or a copy) may use the secrets it
 * holds: each one is unsealed without checking the database and cluster it
 * was sealed in (its account and field still must match) and sealed again
 * for this database.  Accounts paused for that reason resume.  Returns the
 * number of secrets sealed again.
 */
Datum
wa_rebind(PG_FUNCTION_ARGS)
{
	SPITupleTable *rows;
	uint64		nrows;
	int			count;
	int			rc;

	connect_spi();
	rows = lock_accounts_with_secrets(&nrows);
	count = reseal_all(rows, nrows, false, true);
	rc = SPI_execute_plan(wa_plan(&plan_unpause_binding,
									   "UPDATE whatsapp.account a SET"
									   " paused_kind = NULL, paused_reason = NULL, paused_at = NULL"
									   " WHERE a.paused_kind OPERATOR(pg_catalog.=) 'binding'"
									   " AND a.dropped_at IS NULL",
									   0, NULL),
						  NULL, NULL, false, 0);
	wa_spi_check(rc, SPI_OK_UPDATE, "resume the accounts");
	wa_audit("wa_rebind", psprintf("%d secrets sealed again", count));
	wa_accounts_changed_at_commit();
	SPI_finish();
	PG_RETURN_INT32(count);
}
