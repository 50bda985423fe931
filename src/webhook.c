/*-------------------------------------------------------------------------
 *
 * webhook.c
 *	  The receiving side: Meta's webhook handshake (wa_verify_webhook), the
 *	  signed payloads (wa_receive), the statuses held for the worker
 *	  (_after_record), keyword folding, the identity forms of a number, and
 *	  the opt-out and 24-hour window checks that enqueue makes.
 *
 * wa_receive, step by step:
 *
 *	  1. The signature, "sha256=" and 64 hexadecimal digits, must be the
 *		 HMAC-SHA256 of the exact payload bytes under one of the app secrets
 *		 on file, checked before anything is parsed: each distinct secret
 *		 of the active accounts is tried once, compared in constant time
 *		 (CRYPTO_memcmp).  Anything else raises SQLSTATE 28000 before
 *		 anything is parsed or written, whatever the payload's size or shape.
 *	  2. The payload must be JSON (22P02 otherwise, nothing stored).
 *		 The accounts that share the verifying secret are the only ones
 *		 whose changes are applied; a change of any other account is
 *		 refused, and noted.
 *	  3. Each part is applied; unknown or malformed parts become notes,
 *		 logged in whatsapp.log as "webhook_ignored".  Data never raises: a
 *		 bad field is a note, so a payload is applied as far as it can be,
 *		 in the caller's transaction, and an error anywhere leaves nothing.
 *	  4. The payload is stored verbatim with the count and the notes.  A
 *		 payload that is one status and nothing else (the common case) is
 *		 stored by the statement that applies the status.
 *
 * Statuses.  Each is matched by biz_opaque_callback_data (our message id,
 * with the wamid, when the message has one, agreeing), then by wamid, among
 * the messages of the accounts with the change's phone_number_id.  One
 * statement per status finds the message, moves it forward if the status
 * is news, and logs it.  States never move backwards:
 *
 *	  sent		logged; pricing and conversation recorded
 *	  delivered sent -> delivered; delivered_at is Meta's time (the earliest)
 *	  read		sent, delivered -> read; read_at set, an empty delivered_at
 *				filled with the read time
 *	  played	as read (voice messages)
 *	  failed	sent -> failed with Meta's error; after delivered or read
 *				only logged
 *
 * A status for a message the worker has not recorded yet (still queued or
 * sending, or its wamid unknown) is held in whatsapp.status_held.  The
 * worker calls whatsapp._after_record() after each batch it records, which
 * applies what was held for those messages.  A transaction-level lock
 * (advisory tag, this database, WA_HOLD_KEY) closes the race: a webhook
 * takes it exclusively and looks again with the newest snapshot before
 * holding; the worker takes it shared after its record statement and
 * before it reads the held rows.  At REPEATABLE READ, a message the worker
 * recorded after the caller's snapshot raises 40001 instead of being held.
 *
 * The unsealed app secrets are cached in this backend (TopMemoryContext),
 * each with its ciphertext: a changed, removed or re-keyed secret is
 * unsealed again.  They are wiped when replaced and at process exit.  The
 * account list is cached too, until a statement trigger on
 * whatsapp.account sends a relcache invalidation (wa_account_changed).
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"
#include "jsonb_access.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(wa_verify_webhook);
PG_FUNCTION_INFO_V1(wa_receive);
PG_FUNCTION_INFO_V1(wa_verify_signature_sql);
PG_FUNCTION_INFO_V1(wa_after_record);
PG_FUNCTION_INFO_V1(wa_fold_keyword_sql);
PG_FUNCTION_INFO_V1(wa_identity_forms_sql);
PG_FUNCTION_INFO_V1(wa_account_changed);

#define WA_SIG_PREFIX		"sha256="
#define WA_SIG_PREFIX_LEN	7
#define WA_SHA256_LEN		32

/* Strings stored in indexed columns are at most this long. */
#define WA_MAX_ID_LEN		256
/* Notes kept per payload; more are counted. */
#define WA_MAX_NOTES		1000
/* Old payloads are purged once per this many, at most WA_PURGE_BATCH. */
#define WA_PURGE_EVERY		1024
#define WA_PURGE_BATCH		5000
/* Held statuses nobody claimed are dropped after this long. */
#define WA_HELD_MAX_AGE		"7 days"
/* The customer-service window. */
#define WA_WINDOW_USECS		(INT64CONST(24) * USECS_PER_HOUR)

/* The lock that orders holding a status against the worker's record. */
#define WA_HOLD_KEY1		0x77687473	/* "whts" */
#define WA_HOLD_KEY2		0x686f6c64	/* "hold" */
#define WA_HOLD_KEY4		4

/* Largest plausible Meta timestamp: 2100-01-01. */
#define WA_MAX_UNIX_TIME	INT64CONST(4102444800)

/* ----------
 * Accounts and the cache of unsealed app secrets
 * ----------
 */
typedef struct HookAccount
{
	int32		id;
	char	   *name;
	char	   *phone_number_id;
	char	   *waba_id;		/* NULL when not set */
	char	   *display;		/* display_phone_number as learned, or NULL */
	bool		dropped;
	bytea	   *sealed;			/* app secret ciphertext, NULL when none */
	char	   *key_id;
} HookAccount;

typedef struct CachedSecret
{
	int32		account_id;
	bytea	   *sealed;			/* the ciphertext it came from */
	char	   *key_id;
	char	   *secret;			/* NUL-terminated plaintext */
	size_t		len;
} CachedSecret;

static CachedSecret *secret_cache = NULL;
static int	nsecret_cache = 0;
static int	secret_cache_cap = 0;
static bool secret_cache_exit_hook = false;

/* What one call of wa_receive (or _after_record) works with. */
typedef struct HookCtx
{
	HookAccount *accounts;
	int			naccounts;
	int32		verified_by;	/* account whose secret verified, or 0 */
	bool	   *signer;			/* per account: shares the verifying secret */
	int			applied;
	List	   *notes;			/* char *, in the call's context */
	int			nnotes;
	TimestampTz now;
	MemoryContext item_cxt;		/* reset after each item */
	text	   *payload;		/* as received */
	bytea	   *digest;			/* its SHA-256, for redeliveries */
	int			nulls_replaced; /* \u0000 escapes replaced by U+FFFD */
	TimestampTz entry_time;		/* the current entry's "time", or now */
	int64		duplicate_of;	/* an earlier payload of the same bytes */
	bool		single_status;	/* the payload is one status and nothing else */
	bool		stored;			/* the status statement stored the payload */
} HookCtx;

/* Status kinds; "played" is applied as "read". */
typedef enum StatusKind
{
	ST_SENT = 0,
	ST_DELIVERED,
	ST_READ,
	ST_FAILED,
	ST_NKINDS
} StatusKind;

typedef enum MatchBy
{
	MATCH_ID = 0,
	MATCH_WAMID,
	MATCH_NKINDS
} MatchBy;

/* What happened to one status. */
typedef enum StatusOutcome
{
	SO_CHANGED,					/* the message moved or got new data */
	SO_NO_CHANGE,				/* duplicate or out of order: logged */
	SO_HELD,					/* waits for the worker */
	SO_NOT_FOUND,				/* (held statuses only) nothing to apply to */
	SO_IN_FLIGHT				/* (held statuses only) still waits */
} StatusOutcome;

/* One status, extracted. */
typedef struct StatusIn
{
	StatusKind	kind;
	const char *status;			/* as Meta wrote it */
	char	   *wamid;
	int64		message_id;		/* 0 when no usable callback data */
	TimestampTz ts;
	Jsonb	   *pricing;
	Jsonb	   *conversation;
	bool		has_code;
	int32		code;
	char	   *title;
	char	   *details;
	const char *failure_type;
	char	   *recipient_id;	/* wa_id digits */
	char	   *recipient_user_id;
	JsonbValue *raw;			/* the status object as received */
} StatusIn;

/* ----------
 * Plans kept for the life of the backend
 * ----------
 */
static SPIPlanPtr plan_accounts = NULL;
static SPIPlanPtr plan_status[ST_NKINDS][MATCH_NKINDS][2];
static SPIPlanPtr plan_find[MATCH_NKINDS];
static SPIPlanPtr plan_find_latest[MATCH_NKINDS];
static SPIPlanPtr plan_hold = NULL;
static SPIPlanPtr plan_purge_held = NULL;
static SPIPlanPtr plan_log = NULL;
static SPIPlanPtr plan_store = NULL;
static SPIPlanPtr plan_store_plain = NULL;
static SPIPlanPtr plan_find_digest = NULL;
static uint32 payloads_stored = 0;	/* by this backend, for the purge */
static SPIPlanPtr plan_purge_payloads = NULL;
static SPIPlanPtr plan_inbound = NULL;
static SPIPlanPtr plan_keyword = NULL;
static SPIPlanPtr plan_consent = NULL;
static SPIPlanPtr plan_link = NULL;
static SPIPlanPtr plan_msg_identities = NULL;
static SPIPlanPtr plan_tpl_update = NULL;
static SPIPlanPtr plan_reaction = NULL;
static SPIPlanPtr plan_edit = NULL;
static SPIPlanPtr plan_revoke = NULL;
static SPIPlanPtr plan_account_event = NULL;
static SPIPlanPtr plan_quality = NULL;
static SPIPlanPtr plan_display = NULL;
static SPIPlanPtr plan_held_any = NULL;
static SPIPlanPtr plan_held_for = NULL;
static SPIPlanPtr plan_held_delete = NULL;
static SPIPlanPtr plan_recipient = NULL;
static SPIPlanPtr plan_marketing = NULL;
static SPIPlanPtr plan_window = NULL;
static SPIPlanPtr plan_template_status = NULL;

/*
 * SPI leaves CurrentMemoryContext at its procedure context after each call;
 * these put the caller's back, so that per-item contexts keep working.
 */
static int
spi_run(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
		long count)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, count);

	MemoryContextSwitchTo(cxt);
	return rc;
}

/* JSON access: see jsonb_access.c; these add what only webhooks need. */

/* A member that must be a JSON string (ids, kinds); NULL otherwise. */
static char *
jstrict(JsonbContainer *c, const char *key)
{
	JsonbValue *v = wa_json_member(c, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* The jsonb of an object member, or NULL. */
static Jsonb *
jsub(JsonbContainer *c, const char *key)
{
	JsonbValue *v = wa_json_member(c, key);

	if (wa_json_container(v, true) == NULL)
		return NULL;
	return JsonbValueToJsonb(v);
}

/* Element i of an array container as an object, or NULL. */
static JsonbContainer *
jelem_object(JsonbContainer *arr, uint32 i)
{
	return wa_json_container(getIthJsonbValueFromContainer(arr, i), true);
}

/* Meta's Unix seconds (string or number) as a timestamptz. */
static bool
jtimestamp(JsonbContainer *c, const char *key, TimestampTz *out)
{
	char	   *s = wa_json_string(c, key);
	char	   *end;
	long long	v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > WA_MAX_UNIX_TIME)
		return false;
	*out = time_t_to_timestamptz((pg_time_t) v);
	return true;
}

/* A string fit for an indexed column: non-empty, not too long. */
static bool
usable_id(const char *s)
{
	return s != NULL && s[0] != '\0' && strlen(s) <= WA_MAX_ID_LEN;
}

/* ----------
 * Notes: the parts of a payload that were not applied
 * ----------
 */
static void
note(HookCtx *ctx, const char *fmt,...) pg_attribute_printf(2, 3);

static void
note(HookCtx *ctx, const char *fmt,...)
{
	MemoryContext old;
	StringInfoData buf;
	va_list		args;

	ctx->nnotes++;
	if (ctx->nnotes > WA_MAX_NOTES)
		return;
	old = MemoryContextSwitchTo(MemoryContextGetParent(ctx->item_cxt));
	initStringInfo(&buf);
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	ctx->notes = lappend(ctx->notes, buf.data);
	MemoryContextSwitchTo(old);
}

/* One whatsapp.log row. */
static void
log_event(int64 message_id, const char *event, bool has_code, int32 code,
		  const char *message)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT4OID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(message_id);
	if (message_id == 0)
		nulls[0] = 'n';
	values[1] = CStringGetTextDatum(event);
	values[2] = Int32GetDatum(code);
	if (!has_code)
		nulls[2] = 'n';
	values[3] = CStringGetTextDatum(message);
	wa_spi_check(spi_run(wa_plan(&plan_log,
										"INSERT INTO whatsapp.log (message_id, event, code, message)"
										" VALUES ($1, $2, $3, $4)", 4, types),
							   values, nulls, false, 0),
			  SPI_OK_INSERT, "log insert");
}

/* ----------
 * Secrets
 * ----------
 */
static void
wipe_secret_cache(int code, Datum arg)
{
	for (int i = 0; i < nsecret_cache; i++)
	{
		CachedSecret *c = &secret_cache[i];

		if (c->secret)
		{
			explicit_bzero(c->secret, c->len);
			pfree(c->secret);
		}
		if (c->sealed)
			pfree(c->sealed);
		if (c->key_id)
			pfree(c->key_id);
		memset(c, 0, sizeof(*c));
	}
	nsecret_cache = 0;
}

/*
 * The app secret of an account, from the cache or unsealed.  Returns
 * WA_UNSEAL_OK and sets *secret (owned by the cache: never free it).
 */
static WaUnsealResult
account_secret(HookAccount *a, const char **secret, size_t *len)
{
	CachedSecret *c = NULL;
	char	   *plain = NULL;
	WaUnsealResult r;
	MemoryContext old;

	for (int i = 0; i < nsecret_cache; i++)
		if (secret_cache[i].account_id == a->id)
			c = &secret_cache[i];

	if (c != NULL && c->secret != NULL &&
		VARSIZE_ANY(c->sealed) == VARSIZE_ANY(a->sealed) &&
		memcmp(c->sealed, a->sealed, VARSIZE_ANY(a->sealed)) == 0 &&
		a->key_id != NULL && strcmp(c->key_id, a->key_id) == 0)
	{
		*secret = c->secret;
		*len = c->len;
		return WA_UNSEAL_OK;
	}

	r = wa_unseal(a->sealed, a->key_id, a->id, WA_FIELD_APP_SECRET, true, &plain);
	if (r != WA_UNSEAL_OK)
		return r;

	if (!secret_cache_exit_hook)
	{
		on_proc_exit(wipe_secret_cache, (Datum) 0);
		secret_cache_exit_hook = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (c == NULL)
	{
		if (nsecret_cache == secret_cache_cap)
		{
			secret_cache_cap = Max(4, secret_cache_cap * 2);
			if (secret_cache == NULL)
				secret_cache = palloc0(sizeof(CachedSecret) * secret_cache_cap);
			else
				secret_cache = repalloc(secret_cache, sizeof(CachedSecret) * secret_cache_cap);
		}
		c = &secret_cache[nsecret_cache++];
		memset(c, 0, sizeof(*c));
		c->account_id = a->id;
	}
	else
	{
		if (c->secret)
		{
			explicit_bzero(c->secret, c->len);
			pfree(c->secret);
		}
		if (c->sealed)
			pfree(c->sealed);
		if (c->key_id)
			pfree(c->key_id);
	}
	c->len = strlen(plain);
	c->secret = pstrdup(plain);
	c->sealed = (bytea *) palloc(VARSIZE_ANY(a->sealed));
	memcpy(c->sealed, a->sealed, VARSIZE_ANY(a->sealed));
	c->key_id = pstrdup(a->key_id);
	MemoryContextSwitchTo(old);
	wa_wipe(plain);

	*secret = c->secret;
	*len = c->len;
	return WA_UNSEAL_OK;
}

/*
 * The account list, kept in this backend until whatsapp.account changes:
 * a statement trigger on it (wa_account_changed) sends a relcache
 * invalidation, which every backend receives at its next transaction (and
 * the changing one at its next command).  Only ciphertexts are kept here.
 */
static MemoryContext accounts_cxt = NULL;
static HookAccount *cached_accounts = NULL;
static int	ncached_accounts = 0;
static bool accounts_valid = false;
static bool accounts_callback = false;
static Oid	accounts_relid = InvalidOid;

static void
accounts_inval(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == accounts_relid)
		accounts_valid = false;
}

/* whatsapp._account_changed(): statement trigger on whatsapp.account */
Datum
wa_account_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("whatsapp._account_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/* Every account, dropped ones included (statuses still match them). */
static void
load_accounts(HookCtx *ctx)
{
	SPITupleTable *tt;
	int			rc;
	MemoryContext old;

	if (accounts_valid)
	{
		ctx->accounts = cached_accounts;
		ctx->naccounts = ncached_accounts;
		return;
	}
	if (!accounts_callback)
	{
		CacheRegisterRelcacheCallback(accounts_inval, (Datum) 0);
		accounts_callback = true;
	}
	if (accounts_cxt == NULL)
		accounts_cxt = AllocSetContextCreate(TopMemoryContext, "whatsapp webhook accounts",
											 ALLOCSET_SMALL_SIZES);
	MemoryContextReset(accounts_cxt);
	cached_accounts = NULL;
	ncached_accounts = 0;
	accounts_relid = get_relname_relid("account", get_namespace_oid("whatsapp", false));
	/* valid from now on, unless an invalidation arrives while we read */
	accounts_valid = true;

	rc = spi_run(wa_plan(&plan_accounts,
								   "SELECT id, name, phone_number_id, waba_id, dropped_at IS NOT NULL,"
								   "  app_secret, app_secret_key, display_phone_number"
								   " FROM whatsapp.account ORDER BY id", 0, NULL),
						  NULL, NULL, true, 0);
	wa_spi_check(rc, SPI_OK_SELECT, "account lookup");
	tt = SPI_tuptable;
	old = MemoryContextSwitchTo(accounts_cxt);
	ctx->naccounts = (int) SPI_processed;
	ctx->accounts = palloc0(sizeof(HookAccount) * Max(ctx->naccounts, 1));
	for (int i = 0; i < ctx->naccounts; i++)
	{
		HeapTuple	tup = tt->vals[i];
		TupleDesc	desc = tt->tupdesc;
		HookAccount *a = &ctx->accounts[i];
		bool		isnull;
		Datum		d;

		a->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		a->name = SPI_getvalue(tup, desc, 2);
		a->phone_number_id = SPI_getvalue(tup, desc, 3);
		a->waba_id = SPI_getvalue(tup, desc, 4);
		a->dropped = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		d = SPI_getbinval(tup, desc, 6, &isnull);
		a->sealed = isnull ? NULL : DatumGetByteaPCopy(d);
		a->key_id = SPI_getvalue(tup, desc, 7);
		a->display = SPI_getvalue(tup, desc, 8);
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(tt);
	cached_accounts = ctx->accounts;
	ncached_accounts = ctx->naccounts;
}

/*
 * May this payload touch the account at index i?  Only when the account
 * shares the secret that verified it.  Held statuses (no signer list) were
 * checked when they were held.
 */
static bool
signed_for(HookCtx *ctx, int i)
{
	return ctx->signer == NULL || ctx->signer[i];
}

/* The active account with this phone_number_id that signed, or NULL. */
static HookAccount *
active_account(HookCtx *ctx, const char *phone_number_id)
{
	if (phone_number_id == NULL)
		return NULL;
	for (int i = 0; i < ctx->naccounts; i++)
		if (!ctx->accounts[i].dropped && signed_for(ctx, i) &&
			strcmp(ctx->accounts[i].phone_number_id, phone_number_id) == 0)
			return &ctx->accounts[i];
	return NULL;
}

/*
 * int4[] of the accounts whose messages a status with this phone_number_id
 * may match: the active ones that signed, and the dropped ones with that
 * number (their messages are that number's too).
 */
static Datum
account_ids_for(HookCtx *ctx, const char *phone_number_id, int *n)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(ctx->naccounts, 1));

	*n = 0;
	for (int i = 0; phone_number_id && i < ctx->naccounts; i++)
		if (strcmp(ctx->accounts[i].phone_number_id, phone_number_id) == 0 &&
			(ctx->accounts[i].dropped || signed_for(ctx, i)))
			ids[(*n)++] = Int32GetDatum(ctx->accounts[i].id);
	return PointerGetDatum(construct_array(ids, *n, INT4OID, 4, true, TYPALIGN_INT));
}

/* ----------
 * The signature
 * ----------
 */
static void
parse_signature(text *sig, uint8 *digest)
{
	const char *p;
	int			len;

	if (sig == NULL || VARSIZE_ANY_EXHDR(sig) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("webhook signature is missing"),
				 errdetail("Meta signs every webhook request in its X-Hub-Signature-256 header, and no payload is accepted without it."),
				 errhint("Pass the request's X-Hub-Signature-256 header, unchanged, as the second argument of whatsapp.wa_receive().")));
	p = VARDATA_ANY(sig);
	len = VARSIZE_ANY_EXHDR(sig);
	if (len < WA_SIG_PREFIX_LEN || memcmp(p, WA_SIG_PREFIX, WA_SIG_PREFIX_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("webhook signature is malformed"),
				 errdetail("A signature is \"sha256=\" followed by 64 hexadecimal digits."),
				 errhint("Pass the request's X-Hub-Signature-256 header unchanged; X-Hub-Signature (SHA-1) is not accepted.")));
	if (len - WA_SIG_PREFIX_LEN != WA_SHA256_LEN * 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("webhook signature has the wrong length"),
				 errdetail("After \"sha256=\" a signature has 64 hexadecimal digits, not %d characters.",
						   len - WA_SIG_PREFIX_LEN),
				 errhint("Pass the request's X-Hub-Signature-256 header unchanged, without surrounding spaces.")));
	if (!wa_hex_decode(p + WA_SIG_PREFIX_LEN, WA_SHA256_LEN, digest))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("webhook signature is malformed"),
				 errdetail("A signature is \"sha256=\" followed by 64 hexadecimal digits."),
				 errhint("Pass the request's X-Hub-Signature-256 header unchanged.")));
}

static void
hmac_sha256(const char *key, size_t keylen, const char *data, size_t len,
			uint8 *out)
{
	unsigned int outlen = 0;

	if (keylen > INT_MAX ||
		HMAC(EVP_sha256(), key, (int) keylen, (const unsigned char *) data, len,
			 out, &outlen) == NULL || outlen != WA_SHA256_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the HMAC-SHA256 of a webhook payload"),
				 errdetail("OpenSSL's HMAC failed."),
				 errhint("Check the OpenSSL library the server uses, for example whether a FIPS configuration forbids HMAC-SHA256.")));
}

static void
sha256(const char *data, size_t len, uint8 *out)
{
	unsigned int outlen = 0;

	if (EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) != 1 ||
		outlen != WA_SHA256_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a SHA-256 digest"),
				 errdetail("OpenSSL's EVP_Digest failed."),
				 errhint("Check the OpenSSL library the server uses.")));
}

/*
 * Check the signature on the exact bytes, before anything is parsed: each
 * distinct app secret of the active accounts is tried, one HMAC-SHA256 of
 * the payload each, compared in constant time.  The cost is bounded by the
 * number of distinct secrets on file (one per Meta app, usually one),
 * whatever the payload's size or shape, and nothing is allocated in
 * proportion to it.  Sets ctx->signer[i] for every active account whose
 * app secret is the one that verified (the accounts whose changes the
 * payload may carry) and returns the first of them; raises 28000 when no
 * secret verifies.
 */
static int32
verify_signature(HookCtx *ctx, const char *payload, size_t len,
				 const uint8 *expected)
{
	int			with_secret = 0;
	StringInfoData unsealed_problems;
	const char *problem_hint = NULL;
	const char **secrets = palloc0(sizeof(char *) * Max(ctx->naccounts, 1));
	size_t	   *secret_len = palloc0(sizeof(size_t) * Max(ctx->naccounts, 1));
	const char **tried = palloc0(sizeof(char *) * Max(ctx->naccounts, 1));
	size_t	   *tried_len = palloc0(sizeof(size_t) * Max(ctx->naccounts, 1));
	int			ntried = 0;
	const char *match = NULL;
	size_t		match_len = 0;
	int32		first = 0;

	initStringInfo(&unsealed_problems);
	ctx->signer = palloc0(sizeof(bool) * Max(ctx->naccounts, 1));

	for (int i = 0; i < ctx->naccounts; i++)
		if (!ctx->accounts[i].dropped && ctx->accounts[i].sealed != NULL)
			with_secret++;
	if (with_secret == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("no app secret on file to check the webhook signature"),
				 errdetail("No whatsapp account has an app secret, so no payload can be verified, and none is accepted unverified."),
				 errhint("Store the Meta app's secret with whatsapp.wa_account_set(name, phone_number_id, NULL, app_secret => '...').")));

	for (int i = 0; i < ctx->naccounts; i++)
	{
		HookAccount *a = &ctx->accounts[i];
		const char *secret;
		size_t		slen;
		uint8		mac[WA_SHA256_LEN];
		bool		seen = false;
		WaUnsealResult r;

		if (a->dropped || a->sealed == NULL)
			continue;
		r = account_secret(a, &secret, &slen);
		if (r != WA_UNSEAL_OK)
		{
			appendStringInfo(&unsealed_problems, " The app secret of account \"%s\" cannot be used: %s",
							 a->name, wa_unseal_result_text(r));
			problem_hint = wa_unseal_result_hint(r);
			continue;
		}
		secrets[i] = secret;
		secret_len[i] = slen;
		if (match != NULL)
			continue;
		/* each distinct secret once */
		for (int j = 0; j < ntried; j++)
			if (tried_len[j] == slen && memcmp(tried[j], secret, slen) == 0)
				seen = true;
		if (seen)
			continue;
		tried[ntried] = secret;
		tried_len[ntried] = slen;
		ntried++;

		hmac_sha256(secret, slen, payload, len, mac);
		if (CRYPTO_memcmp(mac, expected, WA_SHA256_LEN) == 0)
		{
			match = secret;
			match_len = slen;
		}
		explicit_bzero(mac, sizeof(mac));
	}

	if (match == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("webhook signature does not match the payload"),
				 errdetail("No app secret on file verifies it.%s",
						   unsealed_problems.data),
				 problem_hint ? errhint("%s", problem_hint) :
				 errhint("Check that the account's app secret is the Meta app's secret, and that the request body is passed byte for byte, before any parsing.")));

	/* The accounts that share the verifying secret. */
	for (int i = 0; i < ctx->naccounts; i++)
		if (secrets[i] != NULL && secret_len[i] == match_len &&
			CRYPTO_memcmp(secrets[i], match, match_len) == 0)
		{
			ctx->signer[i] = true;
			if (first == 0)
				first = ctx->accounts[i].id;
		}
	pfree(secrets);
	pfree(secret_len);
	pfree(tried);
	pfree(tried_len);
	return first;
}

/*
 * Replace each \u0000 escape of a JSON text (in place, same length) by
 * \ufffd: PostgreSQL's text cannot hold a NUL, so jsonb refuses the whole
 * payload for it, and Meta would not send it again.  An escaped backslash
 * ("\\u0000", the six characters) is left alone.  Returns how many.
 */
static int
replace_nul_escapes(char *s)
{
	int			n = 0;

	for (char *p = s; *p; p++)
	{
		if (*p != '\\')
			continue;
		if (p[1] == 'u' && strncmp(p + 2, "0000", 4) == 0)
		{
			memcpy(p + 2, "fffd", 4);
			n++;
			p += 5;
		}
		else if (p[1] != '\0')
			p++;			/* skip the escaped character */
	}
	return n;
}

/* jsonb_in, with its data and limit errors returned instead of raised. */
static Jsonb *
try_jsonb_in(char *cstr, ErrorData **edata_out)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile doc = NULL;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		doc = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(cstr)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		/* data errors, and the limits of nesting depth and size */
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION &&
			ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_PROGRAM_LIMIT_EXCEEDED)
			PG_RE_THROW();
		FlushErrorState();
		doc = NULL;
	}
	PG_END_TRY();
	*edata_out = edata;
	return doc;
}

/*
 * Parse the payload, once its signature has been verified.  Not JSON
 * raises 22P02.  A \u0000 in a string is replaced by U+FFFD (counted in
 * *nuls) and the payload parsed again.  JSON that jsonb cannot hold
 * otherwise (a number out of range, nesting deeper than the stack allows)
 * returns NULL with *why set: it is stored and applies nothing.  jsonb_in
 * is pure computation, so its data and limit errors can be caught without
 * a subtransaction; others are raised again.
 */
static Jsonb *
parse_payload(text *payload, char **why, int *nuls)
{
	char	   *cstr = text_to_cstring(payload);
	Jsonb	   *doc;
	ErrorData  *edata = NULL;

	*why = NULL;
	*nuls = 0;
	doc = try_jsonb_in(cstr, &edata);
	if (doc == NULL && edata->sqlerrcode == ERRCODE_UNTRANSLATABLE_CHARACTER &&
		(*nuls = replace_nul_escapes(cstr)) > 0)
		doc = try_jsonb_in(cstr, &edata);
	pfree(cstr);

	if (doc == NULL && edata->sqlerrcode == ERRCODE_INVALID_TEXT_REPRESENTATION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("webhook payload is not JSON"),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 errhint("Pass the request body exactly as received; Meta posts JSON.")));
	if (doc == NULL)
		*why = pstrdup(edata->message);
	return doc;
}

/* ----------
 * Statuses
 * ----------
 */
static const char *const status_set[ST_NKINDS] = {
	/* sent: the worker recorded it; only Meta's pricing is news */
	"",
	/* delivered */
	"state = CASE WHEN m.state = 'sent' THEN 'delivered' ELSE m.state END,"
	" delivered_at = CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   THEN LEAST(COALESCE(m.delivered_at, $4), $4) ELSE m.delivered_at END,",
	/* read (and played) */
	"state = CASE WHEN m.state IN ('sent', 'delivered') THEN 'read' ELSE m.state END,"
	" delivered_at = CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   THEN COALESCE(m.delivered_at, $4) ELSE m.delivered_at END,"
	" read_at = CASE WHEN m.state IN ('sent', 'delivered', 'read')"
	"   THEN LEAST(COALESCE(m.read_at, $4), $4) ELSE m.read_at END,",
	/* failed: from sent only; after delivered or read it is only logged */
	"state = CASE WHEN m.state = 'sent' THEN 'failed' ELSE m.state END,"
	" failed_at = CASE WHEN m.state = 'sent' THEN $4 ELSE m.failed_at END,"
	" failure_type = CASE WHEN m.state = 'sent' THEN $10 ELSE m.failure_type END,"
	" error_code = CASE WHEN m.state = 'sent' THEN $7 ELSE m.error_code END,"
	" error_title = CASE WHEN m.state = 'sent' THEN $8 ELSE m.error_title END,"
	" error_details = CASE WHEN m.state = 'sent' THEN $9 ELSE m.error_details END,"
};

/* When is the status news for the message (besides pricing)? */
static const char *const status_change[ST_NKINDS] = {
	"false",
	"m.state = 'sent' OR (m.state IN ('delivered', 'read')"
	"  AND (m.delivered_at IS NULL OR m.delivered_at > $4))",
	"m.state IN ('sent', 'delivered') OR (m.state = 'read'"
	"  AND (m.delivered_at IS NULL OR m.read_at IS NULL OR m.read_at > $4))",
	"m.state = 'sent'",
};

static const char *const match_sql[MATCH_NKINDS] = {
	"m.id = $1 AND (m.wamid IS NULL OR m.wamid = $2)",
	"m.wamid = $2",
};

static Oid	status_types[14] = {INT8OID, TEXTOID, INT4ARRAYOID, TIMESTAMPTZOID,
	JSONBOID, JSONBOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID,
BYTEAOID};

/*
 * The statement that applies one status: move the message if the status
 * is news, and log it.  Returns the message id, or no row when there was
 * nothing to do (see run_status).  With store, a payload that is this one
 * status is stored by the same statement when it applied ($12, $13): the
 * common case takes one statement.
 */
static SPIPlanPtr
status_plan(StatusKind kind, MatchBy by, bool store)
{
	if (plan_status[kind][by][store] == NULL)
	{
		char	   *sql = psprintf(
								   "WITH u AS ("
								   "  UPDATE whatsapp.message m SET %s"
								   "     pricing = COALESCE($5, m.pricing),"
								   "     conversation = COALESCE($6, m.conversation)"
								   "   WHERE %s AND m.account_id = ANY ($3)"
								   "     AND m.state NOT IN ('queued', 'sending')"
								   "     AND ((%s)"
								   "       OR ($5 IS NOT NULL AND m.pricing IS DISTINCT FROM $5)"
								   "       OR ($6 IS NOT NULL AND m.conversation IS DISTINCT FROM $6))"
								   "  RETURNING m.id, m.state)%s"
								   " INSERT INTO whatsapp.log (message_id, event, code, message)"
								   " SELECT u.id, 'webhook', $7, $11 || '; message is ' || u.state FROM u"
								   " RETURNING message_id",
								   status_set[kind], match_sql[by], status_change[kind],
								   store ? ","
								   " w AS ("
								   "  INSERT INTO whatsapp.webhook (account_id, payload, applied, digest)"
								   "  SELECT $12, $13, 1, $14 FROM u)" : "");

		plan_status[kind][by][store] = wa_keep_plan(sql, store ? 14 : 11, status_types);
		pfree(sql);
	}
	return plan_status[kind][by][store];
}

/* The message a status names, and its state. */
static SPIPlanPtr
find_plan(MatchBy by)
{
	static const char *const sql[MATCH_NKINDS] = {
		"SELECT m.id, m.state FROM whatsapp.message m WHERE m.id = $1"
		" AND (m.wamid IS NULL OR m.wamid = $2) AND m.account_id = ANY ($3)",
		"SELECT m.id, m.state FROM whatsapp.message m WHERE m.wamid = $2"
		" AND m.account_id = ANY ($3) LIMIT 1",
	};

	return wa_plan(&plan_find[by], sql[by], 3, status_types);
}

static void
status_args(HookCtx *ctx, StatusIn *st, Datum accounts, const char *logmsg,
			Datum *values, char *nulls)
{
	memset(nulls, ' ', 14);
	values[0] = Int64GetDatum(st->message_id);
	if (st->message_id == 0)
		nulls[0] = 'n';
	values[1] = CStringGetTextDatum(st->wamid);
	values[2] = accounts;
	values[3] = TimestampTzGetDatum(st->ts);
	values[4] = st->pricing ? JsonbPGetDatum(st->pricing) : (Datum) 0;
	nulls[4] = st->pricing ? ' ' : 'n';
	values[5] = st->conversation ? JsonbPGetDatum(st->conversation) : (Datum) 0;
	nulls[5] = st->conversation ? ' ' : 'n';
	values[6] = Int32GetDatum(st->code);
	nulls[6] = (st->kind == ST_FAILED && st->has_code) ? ' ' : 'n';
	values[7] = st->title ? CStringGetTextDatum(st->title) : (Datum) 0;
	nulls[7] = st->title ? ' ' : 'n';
	values[8] = st->details ? CStringGetTextDatum(st->details) : (Datum) 0;
	nulls[8] = st->details ? ' ' : 'n';
	values[9] = st->failure_type ? CStringGetTextDatum(st->failure_type) : (Datum) 0;
	nulls[9] = st->failure_type ? ' ' : 'n';
	values[10] = CStringGetTextDatum(logmsg);
	values[11] = Int32GetDatum(ctx->verified_by);
	values[12] = ctx->payload ? PointerGetDatum(ctx->payload) : (Datum) 0;
	nulls[12] = ctx->payload ? ' ' : 'n';
	values[13] = ctx->digest ? PointerGetDatum(ctx->digest) : (Datum) 0;
	nulls[13] = ctx->digest ? ' ' : 'n';
}

typedef struct RunResult
{
	bool		found;
	int64		id;
	bool		in_flight;
	bool		changed;
	char		state[16];
} RunResult;

/*
 * Apply a status to the message it names by one key.  The common case is
 * one statement.  When it changed nothing, look: no such message, still in
 * flight (the caller holds the status), or truly nothing new (logged).
 */
static void
run_status(HookCtx *ctx, StatusIn *st, MatchBy by, Datum *values, char *nulls,
		   RunResult *res)
{
	bool		isnull;
	char	   *state;
	bool		store = ctx->single_status && !ctx->stored && ctx->nnotes == 0 &&
		ctx->payload != NULL;

	memset(res, 0, sizeof(*res));
	wa_spi_check(spi_run(status_plan(st->kind, by, store), values, nulls, false, 0),
			  SPI_OK_INSERT_RETURNING, "status update");
	if (SPI_processed > 0)
	{
		ctx->stored |= store;
		res->found = res->changed = true;
		res->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_freetuptable(SPI_tuptable);
		return;
	}
	SPI_freetuptable(SPI_tuptable);

	wa_spi_check(spi_run(find_plan(by), values, nulls, false, 1), SPI_OK_SELECT,
			  "message lookup");
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return;
	}
	res->found = true;
	res->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	strlcpy(res->state, state ? state : "", sizeof(res->state));
	SPI_freetuptable(SPI_tuptable);
	res->in_flight = (strcmp(res->state, "queued") == 0 ||
					  strcmp(res->state, "sending") == 0);
	if (res->in_flight)
		return;

	/* At READ COMMITTED the lookup may have seen a newer state: once more. */
	wa_spi_check(spi_run(status_plan(st->kind, by, false), values, nulls, false, 0),
			  SPI_OK_INSERT_RETURNING, "status update");
	res->changed = SPI_processed > 0;
	SPI_freetuptable(SPI_tuptable);
	if (!res->changed)
		log_event(res->id, "webhook", st->kind == ST_FAILED && st->has_code, st->code,
				  psprintf("%s; no change, message is %s",
						   TextDatumGetCString(values[10]), res->state));
}

/* By callback data, then by wamid. */
static void
run_status_both(HookCtx *ctx, StatusIn *st, Datum *values, char *nulls,
				RunResult *res)
{
	if (st->message_id != 0)
	{
		run_status(ctx, st, MATCH_ID, values, nulls, res);
		if (res->found)
			return;
	}
	run_status(ctx, st, MATCH_WAMID, values, nulls, res);
}

/*
 * At REPEATABLE READ: does the newest committed state of the message
 * differ from what this transaction's snapshot showed?  Then the worker
 * recorded it meanwhile, and holding the status would lose it.
 */
static bool
recorded_since_snapshot(StatusIn *st, Datum accounts)
{
	static const char *const sql[MATCH_NKINDS] = {
		"SELECT 1 FROM whatsapp.message m WHERE m.id = $1"
		" AND (m.wamid IS NULL OR m.wamid = $2) AND m.account_id = ANY ($3)"
		" AND m.state NOT IN ('queued', 'sending')",
		"SELECT 1 FROM whatsapp.message m WHERE m.wamid = $2"
		" AND m.account_id = ANY ($3) AND m.state NOT IN ('queued', 'sending')",
	};
	Oid			types[3] = {INT8OID, TEXTOID, INT4ARRAYOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		found = false;

	values[0] = Int64GetDatum(st->message_id);
	values[1] = CStringGetTextDatum(st->wamid);
	values[2] = accounts;
	for (int by = (st->message_id != 0 ? MATCH_ID : MATCH_WAMID); by < MATCH_NKINDS && !found; by++)
	{
		int			rc;

		MemoryContext cxt = CurrentMemoryContext;

		rc = SPI_execute_snapshot(wa_plan(&plan_find_latest[by], sql[by], 3, types),
								  values, nulls, GetLatestSnapshot(),
								  InvalidSnapshot, true, false, 1);
		MemoryContextSwitchTo(cxt);
		wa_spi_check(rc, SPI_OK_SELECT, "message lookup");
		found = SPI_processed > 0;
		SPI_freetuptable(SPI_tuptable);
	}
	return found;
}

static void
lock_hold(LOCKMODE mode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, WA_HOLD_KEY1, WA_HOLD_KEY2, WA_HOLD_KEY4);
	(void) LockAcquire(&tag, mode, false, false);
}

static void
record_131050(int64 message_id, StatusIn *st)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(message_id);
	values[1] = st->recipient_id ? CStringGetTextDatum(psprintf("+%s", st->recipient_id)) : (Datum) 0;
	nulls[1] = st->recipient_id ? ' ' : 'n';
	values[2] = st->recipient_user_id ? CStringGetTextDatum(st->recipient_user_id) : (Datum) 0;
	nulls[2] = st->recipient_user_id ? ' ' : 'n';
	values[3] = TimestampTzGetDatum(st->ts);
	/* in the order of the status's own time, like every consent event */
	wa_spi_check(spi_run(wa_plan(&plan_msg_identities,
										"SELECT whatsapp._consent_apply('opt_out', m.account_id,"
										"  ARRAY[m.recipient, '+' || m.wa_id, $2, $3],"
										"  'marketing', 'error 131050', m.error_title, m.wamid, $4)"
										" FROM whatsapp.message m WHERE m.id = $1",
										4, types),
							   values, nulls, false, 0),
			  SPI_OK_SELECT, "131050 opt-out");
	SPI_freetuptable(SPI_tuptable);
}

static char *
status_logmsg(StatusIn *st)
{
	if (st->kind == ST_FAILED)
		return psprintf("status %s %s: %s%s%s", st->status, st->wamid,
						st->has_code ? psprintf("%d ", st->code) : "",
						st->title ? st->title : "",
						st->details ? psprintf(" (%s)", st->details) : "");
	return psprintf("status %s %s", st->status, st->wamid);
}

/*
 * Apply one status.  from_held: it comes from whatsapp.status_held, so it
 * is not held again (SO_IN_FLIGHT, SO_NOT_FOUND tell the caller).
 */
static StatusOutcome
apply_status(HookCtx *ctx, StatusIn *st, const char *phone_number_id,
			 bool from_held)
{
	Datum		values[14];
	char		nulls[14];
	int			naccounts;
	Datum		accounts = account_ids_for(ctx, phone_number_id, &naccounts);
	char	   *logmsg = status_logmsg(st);
	RunResult	res;

	status_args(ctx, st, accounts, logmsg, values, nulls);
	run_status_both(ctx, st, values, nulls, &res);

	if (res.found && !res.in_flight)
	{
		if (res.changed && st->kind == ST_FAILED && st->has_code && st->code == 131050)
			record_131050(res.id, st);
		return res.changed ? SO_CHANGED : SO_NO_CHANGE;
	}
	if (from_held)
		return res.found ? SO_IN_FLIGHT : SO_NOT_FOUND;

	/*
	 * Not recorded yet, in this transaction's view.  Take the hold lock and
	 * look again with what has committed since.
	 */
	lock_hold(ExclusiveLock);
	if (recorded_since_snapshot(st, accounts))
	{
		if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to a concurrent update of a whatsapp message"),
					 errdetail("The delivery worker recorded the message of status \"%s\" after this transaction's snapshot was taken.",
							   st->status),
					 errhint("Retry the transaction.")));
		/* READ COMMITTED: this statement sees what the worker committed */
		run_status_both(ctx, st, values, nulls, &res);
		if (res.found && !res.in_flight)
		{
			if (res.changed && st->kind == ST_FAILED && st->has_code && st->code == 131050)
				record_131050(res.id, st);
			return res.changed ? SO_CHANGED : SO_NO_CHANGE;
		}
	}

	/*
	 * Hold it for the worker, once: a redelivered status of the same kind
	 * for the same wamid adds no second row (status_held_once).
	 */
	{
		Oid			types[4] = {TEXTOID, INT8OID, TEXTOID, JSONBOID};
		Datum		hv[4];
		char		hn[4] = {' ', ' ', ' ', ' '};
		int64		mid = res.found ? res.id : 0;

		hv[0] = CStringGetTextDatum(phone_number_id);
		hv[1] = Int64GetDatum(mid);
		hn[1] = mid ? ' ' : 'n';
		hv[2] = CStringGetTextDatum(st->wamid);
		hv[3] = JsonbPGetDatum(JsonbValueToJsonb(st->raw));
		wa_spi_check(spi_run(wa_plan(&plan_hold,
									 "INSERT INTO whatsapp.status_held"
									 " (phone_number_id, message_id, wamid, status)"
									 " VALUES ($1, $2, $3, $4)"
									 " ON CONFLICT (phone_number_id, wamid, (status OPERATOR(pg_catalog.->>) 'status'))"
									 " DO NOTHING", 4, types),
							 hv, hn, false, 0),
					 SPI_OK_INSERT, "holding a status");
		if (SPI_processed == 0)
			return SO_NO_CHANGE;	/* held already */
		log_event(mid, "webhook", st->kind == ST_FAILED && st->has_code, st->code,
				  psprintf("%s; held until the worker records the message", logmsg));
		/* statuses nobody claimed: for messages this database never sent */
		wa_spi_check(spi_run(wa_plan(&plan_purge_held,
									 "DELETE FROM whatsapp.status_held"
									 " WHERE held_at < pg_catalog.now() - interval '" WA_HELD_MAX_AGE "'",
									 0, NULL),
							 NULL, NULL, false, 0),
					 SPI_OK_DELETE, "purging held statuses");
	}
	return SO_HELD;
}

/* ----------
 * Inbound messages
 * ----------
 */

/* The text of a message, by type: body, caption, title, emoji, name. */
static char *
inbound_text(JsonbContainer *msg, const char *type, char **payload_out)
{
	JsonbContainer *o = type ? wa_json_object(msg, type) : NULL;

	*payload_out = NULL;
	if (type == NULL)
		return NULL;
	if (strcmp(type, "text") == 0)
		return wa_json_string(o, "body");
	if (strcmp(type, "button") == 0)
	{
		*payload_out = wa_json_string(o, "payload");
		return wa_json_string(o, "text");
	}
	if (strcmp(type, "interactive") == 0)
	{
		JsonbContainer *r = wa_json_object(o, "button_reply");

		if (r == NULL)
			r = wa_json_object(o, "list_reply");
		if (r != NULL)
		{
			*payload_out = wa_json_string(r, "id");
			return wa_json_string(r, "title");
		}
		r = wa_json_object(o, "nfm_reply");
		if (r != NULL)
			return wa_json_string(r, "body");
		return NULL;
	}
	if (strcmp(type, "reaction") == 0)
		return wa_json_string(o, "emoji");
	if (strcmp(type, "image") == 0 || strcmp(type, "video") == 0 ||
		strcmp(type, "document") == 0 || strcmp(type, "audio") == 0 ||
		strcmp(type, "sticker") == 0)
	{
		char	   *s = wa_json_string(o, "caption");

		return s ? s : wa_json_string(o, "filename");
	}
	if (strcmp(type, "location") == 0)
	{
		char	   *name = wa_json_string(o, "name");
		char	   *addr = wa_json_string(o, "address");
		char	   *lat = wa_json_string(o, "latitude");
		char	   *lon = wa_json_string(o, "longitude");

		if (name && addr)
			return psprintf("%s, %s", name, addr);
		if (name || addr)
			return name ? name : addr;
		if (lat && lon)
			return psprintf("%s,%s", lat, lon);
		return NULL;
	}
	if (strcmp(type, "contacts") == 0)
	{
		JsonbContainer *arr = wa_json_array(msg, "contacts");
		StringInfoData buf;

		initStringInfo(&buf);
		for (uint32 i = 0; arr && i < JsonContainerSize(arr); i++)
		{
			char	   *n = wa_json_string(wa_json_object(jelem_object(arr, i), "name"), "formatted_name");

			if (n)
				appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", n);
		}
		return buf.len ? buf.data : NULL;
	}
	if (strcmp(type, "order") == 0)
		return wa_json_string(o, "text");
	if (strcmp(type, "system") == 0)
		return wa_json_string(o, "body");
	if (strcmp(type, "unsupported") == 0)
	{
		JsonbContainer *errs = wa_json_array(msg, "errors");
		JsonbContainer *e = errs && JsonContainerSize(errs) > 0 ? jelem_object(errs, 0) : NULL;

		return wa_json_string(e, "title");
	}
	return NULL;
}

/* Which failure_type a failed status records, by Meta's code. */
static const char *
webhook_failure_type(bool has_code, int32 code)
{
	static const int recoverable[] = {131049, 131000, 131016, 131056, 130429,
	131057, 133004, 133015, 80007, 4, 1, 2};

	if (!has_code)
		return "whatsapp_unrecoverable";
	if (code >= 132000 && code < 133000)
		return "template";
	for (int i = 0; i < (int) lengthof(recoverable); i++)
		if (recoverable[i] == code)
			return "whatsapp_recoverable";
	return "whatsapp_unrecoverable";
}

/* Our message id, from biz_opaque_callback_data; 0 when it is none. */
static int64
callback_message_id(const char *s)
{
	char	   *end;
	long long	v;

	if (s == NULL || *s < '1' || *s > '9' || strlen(s) > 19)
		return 0;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0)
		return 0;
	return (int64) v;
}

/* Read one status object; false (with a note) when it cannot be applied. */
static bool
extract_status(HookCtx *ctx, JsonbValue *v, StatusIn *st, const char *where)
{
	JsonbContainer *o = wa_json_container(v, true);
	char	   *status;

	memset(st, 0, sizeof(*st));
	if (o == NULL)
	{
		note(ctx, "%s is not an object", where);
		return false;
	}
	st->raw = v;
	st->wamid = jstrict(o, "id");
	if (!usable_id(st->wamid))
	{
		note(ctx, "%s has no message id (wamid) of at most %d characters",
			 where, WA_MAX_ID_LEN);
		return false;
	}
	status = jstrict(o, "status");
	if (status == NULL)
	{
		note(ctx, "%s (%s) has no status", where, st->wamid);
		return false;
	}
	if (strcmp(status, "sent") == 0)
		st->kind = ST_SENT;
	else if (strcmp(status, "delivered") == 0)
		st->kind = ST_DELIVERED;
	else if (strcmp(status, "read") == 0 || strcmp(status, "played") == 0)
		st->kind = ST_READ;
	else if (strcmp(status, "failed") == 0)
		st->kind = ST_FAILED;
	else
	{
		note(ctx, "%s (%s): status \"%.40s\" is not handled", where, st->wamid, status);
		return false;
	}
	st->status = status;
	st->message_id = callback_message_id(wa_json_string(o, "biz_opaque_callback_data"));
	if (!jtimestamp(o, "timestamp", &st->ts))
	{
		st->ts = ctx->now;
		note(ctx, "%s (%s): timestamp is missing or not Unix seconds; the time of receipt was used",
			 where, st->wamid);
	}
	st->pricing = jsub(o, "pricing");
	if (st->pricing == NULL && wa_json_member(o, "pricing") != NULL)
		note(ctx, "%s (%s): pricing is not an object", where, st->wamid);
	st->conversation = jsub(o, "conversation");
	if (st->conversation == NULL && wa_json_member(o, "conversation") != NULL)
		note(ctx, "%s (%s): conversation is not an object", where, st->wamid);
	st->recipient_id = wa_json_string(o, "recipient_id");
	if (st->recipient_id && strspn(st->recipient_id, "0123456789") != strlen(st->recipient_id))
		st->recipient_id = NULL;
	st->recipient_user_id = wa_json_string(o, "recipient_user_id");
	if (!usable_id(st->recipient_user_id))
		st->recipient_user_id = NULL;
	if (st->kind == ST_FAILED)
	{
		JsonbContainer *errs = wa_json_array(o, "errors");
		JsonbContainer *e = (errs && JsonContainerSize(errs) > 0) ? jelem_object(errs, 0) : NULL;

		st->has_code = wa_json_int(e, "code", &st->code);
		st->title = wa_json_string(e, "title");
		if (st->title == NULL)
			st->title = wa_json_string(e, "message");
		st->details = wa_json_string(wa_json_object(e, "error_data"), "details");
		if (e == NULL)
			note(ctx, "%s (%s): a failed status without errors", where, st->wamid);
		st->failure_type = webhook_failure_type(st->has_code, st->code);
	}
	return true;
}

static void
apply_statuses(HookCtx *ctx, JsonbContainer *value, const char *pnid,
			   const char *where)
{
	JsonbValue *sv = wa_json_member(value, "statuses");
	JsonbContainer *arr = wa_json_container(sv, false);

	if (sv == NULL)
		return;
	if (arr == NULL)
	{
		note(ctx, "%s: statuses is not an array", where);
		return;
	}
	for (uint32 i = 0; i < JsonContainerSize(arr); i++)
	{
		StatusIn	st;
		char	   *w = psprintf("%s statuses[%u]", where, i);

		if (!extract_status(ctx, getIthJsonbValueFromContainer(arr, i), &st, w))
			continue;
		switch (apply_status(ctx, &st, pnid, false))
		{
			case SO_CHANGED:
			case SO_HELD:
				ctx->applied++;
				break;
			default:
				break;
		}
	}
}

/* Value-level errors: tied to no message, logged. */
static void
apply_errors(HookCtx *ctx, JsonbContainer *value, const char *where)
{
	JsonbValue *ev = wa_json_member(value, "errors");
	JsonbContainer *arr = wa_json_container(ev, false);

	if (ev == NULL)
		return;
	if (arr == NULL)
	{
		note(ctx, "%s: errors is not an array", where);
		return;
	}
	for (uint32 i = 0; i < JsonContainerSize(arr); i++)
	{
		JsonbContainer *e = jelem_object(arr, i);
		int32		code = 0;
		bool		has_code;
		char	   *title;
		char	   *details;

		if (e == NULL)
		{
			note(ctx, "%s errors[%u] is not an object", where, i);
			continue;
		}
		has_code = wa_json_int(e, "code", &code);
		title = wa_json_string(e, "title");
		if (title == NULL)
			title = wa_json_string(e, "message");
		details = wa_json_string(wa_json_object(e, "error_data"), "details");
		log_event(0, "webhook", has_code, code,
				  psprintf("error from Meta%s%s%s%s",
						   has_code ? psprintf(" %d", code) : "",
						   title ? ": " : "", title ? title : "",
						   details ? psprintf(" (%s)", details) : ""));
		ctx->applied++;
	}
}

/*
 * One consent event of a person (every identifier in ids), at its own time
 * at: whatsapp._consent_apply applies it where it is newer than what is in
 * force.  Returns the opt_out rows changed; an event older than the one in
 * force is noted (where says which part of the payload it was).
 */
static int
consent_apply(HookCtx *ctx, bool out, int32 account_id, List *ids, const char *scope,
			  const char *source, const char *reason, const char *wamid,
			  TimestampTz at, const char *where)
{
	Oid			types[8] = {TEXTOID, INT4OID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TIMESTAMPTZOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(ids), 1));
	int			n = 0;
	ListCell   *lc;
	bool		isnull;
	int			changed;
	int			stale;

	foreach(lc, ids)
		elems[n++] = CStringGetTextDatum((char *) lfirst(lc));
	if (n == 0)
		return 0;
	values[0] = CStringGetTextDatum(out ? "opt_out" : "opt_in");
	values[1] = Int32GetDatum(account_id);
	nulls[1] = account_id ? ' ' : 'n';
	values[2] = PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = CStringGetTextDatum(scope);
	values[4] = CStringGetTextDatum(source);
	values[5] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	nulls[5] = reason ? ' ' : 'n';
	values[6] = wamid ? CStringGetTextDatum(wamid) : (Datum) 0;
	nulls[6] = wamid ? ' ' : 'n';
	values[7] = TimestampTzGetDatum(at);
	wa_spi_check(spi_run(wa_plan(&plan_consent,
								 "SELECT changed, stale FROM whatsapp._consent_apply("
								 "$1, $2, $3, $4, $5, $6, $7, $8)", 8, types),
						 values, nulls, false, 1),
				 SPI_OK_SELECT, out ? "opt-out" : "opt-in");
	changed = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		changed = 0;
	stale = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (isnull)
		stale = 0;
	SPI_freetuptable(SPI_tuptable);
	if (stale > 0)
		note(ctx, "%s: %s %s of %s is older than the consent in force for %d identifier%s; not applied there",
			 where, source, out ? "opt-out" : "opt-in", timestamptz_to_str(at), stale,
			 stale == 1 ? "" : "s");
	return changed;
}

/* Identifiers seen together: an opt-out of one covers the others. */
static void
link_identities(int32 account_id, const char *a, const char *b,
				const char *source, const char *wamid)
{
	Oid			types[4] = {INT4OID, TEXTARRAYOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Datum		elems[2] = {CStringGetTextDatum(a), CStringGetTextDatum(b)};

	values[0] = Int32GetDatum(account_id);
	values[1] = PointerGetDatum(construct_array(elems, 2, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = CStringGetTextDatum(source);
	values[3] = CStringGetTextDatum(wamid);
	wa_spi_check(spi_run(wa_plan(&plan_link,
							   "SELECT whatsapp._link_identities($1, $2, $3, $4)",
							   4, types),
					  values, nulls, false, 1),
			  SPI_OK_SELECT, "linking identities");
	SPI_freetuptable(SPI_tuptable);
}

/* A keyword row for a folded text: action ("stop", "start", "none"), scope. */
static bool
find_keyword(const char *text, char **action, char **scope, char **folded)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	char	   *f;
	bool		found = false;

	if (text == NULL)
		return false;
	f = wa_fold_keyword(text, strlen(text));
	if (f[0] == '\0' || strlen(f) > 200)
		return false;
	values[0] = CStringGetTextDatum(f);
	wa_spi_check(spi_run(wa_plan(&plan_keyword,
							   "SELECT action, scope FROM whatsapp.keywords"
							   " WHERE keyword = $1 ORDER BY builtin LIMIT 1",
							   1, types),
					  values, NULL, true, 1),
			  SPI_OK_SELECT, "keyword lookup");
	if (SPI_processed > 0)
	{
		*action = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		*scope = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		*folded = f;
		found = true;
	}
	SPI_freetuptable(SPI_tuptable);
	return found;
}

/*
 * Find the contact of a message or preference: by wa_id or by user id,
 * never by position (the only contact may be someone else).
 */
static JsonbContainer *
contact_for(JsonbContainer *contacts, const char *from, const char *from_user)
{
	uint32		n = contacts ? JsonContainerSize(contacts) : 0;

	for (uint32 i = 0; i < n; i++)
	{
		JsonbContainer *c = jelem_object(contacts, i);
		char	   *wa_id = wa_json_string(c, "wa_id");
		char	   *uid = wa_json_string(c, "user_id");

		if ((from && wa_id && strcmp(from, wa_id) == 0) ||
			(from_user && uid && strcmp(from_user, uid) == 0))
			return c;
	}
	return NULL;
}

static bool
all_digits(const char *s)
{
	return s && *s && strspn(s, "0123456789") == strlen(s);
}

/*
 * The identifiers a consent event of a person is recorded under: the
 * number as E.164 (phone), else the raw wa_id with a "+" when it cannot be
 * normalized (noted: it still blocks sends to that identifier), and the
 * business-scoped user id.
 */
static List *
person_ids(HookCtx *ctx, const char *phone, const char *wa_id, const char *user_id,
		   const char *where, const char *what)
{
	List	   *ids = NIL;

	if (phone != NULL)
		ids = lappend(ids, pstrdup(phone));
	else if (all_digits(wa_id) && strlen(wa_id) <= 20)
	{
		ids = lappend(ids, psprintf("+%s", wa_id));
		note(ctx, "%s (%s): wa_id %s cannot be made E.164; consent recorded under +%s as it is",
			 where, what, wa_id, wa_id);
	}
	if (usable_id(user_id))
		ids = lappend(ids, pstrdup(user_id));
	return ids;
}

/*
 * Keywords, as the whole message, and buttons: a consent event of the
 * sender at the message's time.
 */
static void
check_keywords(HookCtx *ctx, HookAccount *account, const char *type, const char *body,
			   const char *button_payload, const char *phone, const char *from,
			   const char *user_id, const char *wamid, TimestampTz ts, const char *where)
{
	char	   *action = NULL;
	char	   *scope = NULL;
	char	   *folded = NULL;
	const char *source = strcmp(type, "button") == 0 || strcmp(type, "interactive") == 0 ?
	"button" : "keyword";
	List	   *ids;

	if (strcmp(type, "text") != 0 && strcmp(type, "button") != 0 &&
		strcmp(type, "interactive") != 0)
		return;
	if (!(find_keyword(body, &action, &scope, &folded) ||
		  find_keyword(button_payload, &action, &scope, &folded)) ||
		strcmp(action, "none") == 0)
		return;
	ids = person_ids(ctx, phone, from, user_id, where, wamid);
	if (ids == NIL)
		note(ctx, "%s (%s): %s \"%s\" from nobody (no wa_id, no user id); no consent recorded",
			 where, wamid, source, folded);
	else
		consent_apply(ctx, strcmp(action, "stop") == 0, account->id, ids, scope,
					  source, strcmp(action, "stop") == 0 ? psprintf("\"%s\"", folded) : NULL,
					  wamid, ts, where);
}

/*
 * A reaction (emoji; none when the customer removed it) is recorded on the
 * message of this account it reacts to, unless a newer one is there.
 */
static void
apply_reaction(HookCtx *ctx, HookAccount *account, JsonbContainer *msg,
			   const char *emoji, TimestampTz ts, const char *wamid, const char *where)
{
	char	   *target = wa_json_string(wa_json_object(msg, "reaction"), "message_id");
	Oid			types[4] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	if (!usable_id(target))
	{
		note(ctx, "%s (%s): a reaction without reaction.message_id", where, wamid);
		return;
	}
	values[0] = CStringGetTextDatum(target);
	values[1] = emoji && emoji[0] ? CStringGetTextDatum(emoji) : (Datum) 0;
	nulls[1] = emoji && emoji[0] ? ' ' : 'n';
	values[2] = TimestampTzGetDatum(ts);
	values[3] = Int32GetDatum(account->id);
	wa_spi_check(spi_run(wa_plan(&plan_reaction,
								 "WITH u AS ("
								 "  UPDATE whatsapp.message m SET reaction = $2, reacted_at = $3"
								 "   WHERE m.wamid = $1 AND m.account_id = $4"
								 "     AND (m.reacted_at IS NULL OR m.reacted_at <= $3)"
								 "  RETURNING 1)"
								 " SELECT (SELECT count(*) FROM u),"
								 "  EXISTS (SELECT 1 FROM whatsapp.message m"
								 "           WHERE m.wamid = $1 AND m.account_id = $4)",
								 4, types),
						 values, nulls, false, 1),
				 SPI_OK_SELECT, "reaction");
	{
		bool		isnull;
		bool		exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		if (!exists)
			note(ctx, "%s (%s): a reaction to %s, which is no message this account sent; stored as an inbound message only",
				 where, wamid, target);
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * An edit (type "edit") replaces the text of the inbound message it names
 * (edit.original_message_id), keeping the previous text in its history; a
 * revoke (type "revoke") marks it revoked and clears its text, history and
 * content.  Neither is a new inbound message.  An edit older than the last
 * one applied, or seen before, changes nothing.
 */
static void
apply_edit_or_revoke(HookCtx *ctx, HookAccount *account, JsonbContainer *msg,
					 const char *type, const char *wamid, TimestampTz ts,
					 const char *phone, const char *from, const char *user_id,
					 const char *where)
{
	bool		edit = strcmp(type, "edit") == 0;
	JsonbContainer *o = wa_json_object(msg, type);
	char	   *original = wa_json_string(o, "original_message_id");
	Oid			types[5] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char	   *text = NULL;
	bool		isnull;
	int64		changed;
	bool		exists;

	if (!usable_id(original))
	{
		note(ctx, "%s (%s): %s without %s.original_message_id", where, wamid, type, type);
		return;
	}
	if (edit)
	{
		JsonbContainer *m = wa_json_object(o, "message");
		char	   *mtype = wa_json_string(m, "type");
		char	   *ignored;

		text = inbound_text(m, mtype, &ignored);
	}
	values[0] = CStringGetTextDatum(original);
	values[1] = text ? CStringGetTextDatum(text) : (Datum) 0;
	nulls[1] = text ? ' ' : 'n';
	values[2] = TimestampTzGetDatum(ts);
	values[3] = CStringGetTextDatum(wamid);
	values[4] = Int32GetDatum(account->id);
	if (edit)
		wa_spi_check(spi_run(wa_plan(&plan_edit,
									 "WITH u AS ("
									 "  UPDATE whatsapp.inbound_message i SET body = $2, edited_at = $3,"
									 "    history = COALESCE(i.history, '[]') || jsonb_build_array("
									 "      jsonb_build_object('text', i.body, 'replaced_at', $3, 'by', $4))"
									 "   WHERE i.wamid = $1 AND i.account_id = $5 AND i.revoked_at IS NULL"
									 "     AND (i.edited_at IS NULL OR i.edited_at <= $3)"
									 "     AND NOT COALESCE(i.history @> jsonb_build_array("
									 "           jsonb_build_object('by', $4)), false)"
									 "  RETURNING 1)"
									 " SELECT (SELECT count(*) FROM u),"
									 "  EXISTS (SELECT 1 FROM whatsapp.inbound_message i"
									 "           WHERE i.wamid = $1 AND i.account_id = $5)",
									 5, types),
							 values, nulls, false, 1),
					 SPI_OK_SELECT, "edit");
	else
		wa_spi_check(spi_run(wa_plan(&plan_revoke,
									 "WITH u AS ("
									 "  UPDATE whatsapp.inbound_message i SET body = NULL, history = NULL,"
									 "    raw = i.raw - (i.raw ->> 'type'), revoked_at = $3"
									 "   WHERE i.wamid = $1 AND i.account_id = $5 AND i.revoked_at IS NULL"
									 "  RETURNING 1)"
									 " SELECT (SELECT count(*) FROM u),"
									 "  EXISTS (SELECT 1 FROM whatsapp.inbound_message i"
									 "           WHERE i.wamid = $1 AND i.account_id = $5)",
									 5, types),
							 values, nulls, false, 1),
					 SPI_OK_SELECT, "revoke");
	changed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (!exists)
	{
		note(ctx, "%s (%s): %s of %s, which is no inbound message of this account; not applied",
			 where, wamid, type, original);
		return;
	}
	if (changed == 0)
		return;					/* seen before, or older than what is there */
	ctx->applied++;
	log_event(0, "inbound", false, 0, psprintf("inbound %s %s of %s", type, wamid, original));
	/* an edit to a keyword is one (at the edit's time) */
	if (edit)
		check_keywords(ctx, account, "text", text, NULL, phone, from, user_id, wamid, ts, where);
}

static void
apply_inbound(HookCtx *ctx, JsonbValue *v, JsonbContainer *contacts,
			  const char *pnid, const char *where)
{
	JsonbContainer *msg = wa_json_container(v, true);
	JsonbContainer *contact;
	HookAccount *account;
	char	   *wamid;
	char	   *type;
	char	   *from;
	char	   *from_user;
	char	   *user_id;
	char	   *phone = NULL;
	char	   *body;
	char	   *button_payload;
	char	   *context_wamid;
	TimestampTz ts;
	char		e164[WA_E164_MAXLEN + 1];
	Oid			types[14] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, JSONBOID, TEXTOID};
	Datum		values[14];
	char		nulls[14];
	char	   *vals[11];
	bool		inserted;

	if (msg == NULL)
	{
		note(ctx, "%s is not an object", where);
		return;
	}
	wamid = jstrict(msg, "id");
	if (!usable_id(wamid))
	{
		note(ctx, "%s has no message id (wamid) of at most %d characters", where, WA_MAX_ID_LEN);
		return;
	}
	type = jstrict(msg, "type");
	if (type == NULL || !usable_id(type))
	{
		note(ctx, "%s (%s) has no type; stored as \"unknown\"", where, wamid);
		type = "unknown";
	}
	account = active_account(ctx, pnid);
	if (account == NULL)
	{
		/* change_allowed() refused the change already */
		note(ctx, "%s (%s): no account of this payload's secret has phone_number_id %s; not stored",
			 where, wamid, pnid ? pnid : "(missing)");
		return;
	}

	from = wa_json_string(msg, "from");
	from_user = jstrict(msg, "from_user_id");
	contact = contact_for(contacts, from, from_user);
	if (from == NULL)
		from = wa_json_string(contact, "wa_id");
	if (from != NULL && (!all_digits(from) || strlen(from) > 20))
	{
		note(ctx, "%s (%s): from \"%.40s\" is not a wa_id", where, wamid, from);
		from = NULL;
	}
	if (from != NULL)
	{
		char	   *plus = psprintf("+%s", from);

		if (wa_normalize_phone(plus, NULL, e164))
			phone = pstrdup(e164);
	}
	user_id = from_user ? from_user : wa_json_string(contact, "user_id");
	if (user_id != NULL && !usable_id(user_id))
		user_id = NULL;
	if (!jtimestamp(msg, "timestamp", &ts))
	{
		ts = ctx->now;
		note(ctx, "%s (%s): timestamp is missing or not Unix seconds; the time of receipt was used",
			 where, wamid);
	}
	if (strcmp(type, "edit") == 0 || strcmp(type, "revoke") == 0)
	{
		apply_edit_or_revoke(ctx, account, msg, type, wamid, ts, phone, from, user_id, where);
		return;
	}
	body = inbound_text(msg, type, &button_payload);
	context_wamid = wa_json_string(wa_json_object(msg, "context"), "id");
	if (context_wamid == NULL && strcmp(type, "reaction") == 0)
		context_wamid = wa_json_string(wa_json_object(msg, "reaction"), "message_id");

	vals[0] = wamid;
	vals[1] = from;
	vals[2] = phone;
	vals[3] = user_id;
	vals[4] = wa_json_string(contact, "parent_user_id");
	vals[5] = wa_json_string(contact, "username");
	if (vals[5] == NULL)
		vals[5] = wa_json_string(wa_json_object(contact, "profile"), "username");
	vals[6] = wa_json_string(wa_json_object(contact, "profile"), "name");
	vals[7] = type;
	vals[8] = body;
	vals[9] = context_wamid;
	vals[10] = NULL;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(account->id);
	for (int i = 0; i < 10; i++)
	{
		values[i + 1] = vals[i] ? CStringGetTextDatum(vals[i]) : (Datum) 0;
		nulls[i + 1] = vals[i] ? ' ' : 'n';
	}
	values[11] = TimestampTzGetDatum(ts);
	values[12] = JsonbPGetDatum(JsonbValueToJsonb(v));
	values[13] = CStringGetTextDatum(psprintf("inbound %s %s", type, wamid));

	wa_spi_check(spi_run(wa_plan(&plan_inbound,
							   "WITH i AS ("
							   "  INSERT INTO whatsapp.inbound_message (account_id, wamid, wa_id, phone,"
							   "    user_id, parent_user_id, username, profile_name, type, body,"
							   "    context_wamid, in_reply_to, sent_at, raw)"
							   "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
							   "    (SELECT m.id FROM whatsapp.message m WHERE m.wamid = $11 LIMIT 1),"
							   "    $12, $13)"
							   "  ON CONFLICT (wamid) DO NOTHING"
							   "  RETURNING id, in_reply_to),"
							   " l AS ("
							   "  INSERT INTO whatsapp.log (message_id, event, message)"
							   "  SELECT i.in_reply_to, 'inbound', $14 FROM i)"
							   " SELECT id FROM i", 14, types),
					  values, nulls, false, 0),
			  SPI_OK_SELECT, "inbound insert");
	inserted = SPI_processed > 0;
	SPI_freetuptable(SPI_tuptable);
	if (!inserted)
		return;					/* a duplicate: Meta retries and repeats */
	ctx->applied++;

	/* Identities seen together. */
	if (phone != NULL && user_id != NULL)
		link_identities(account->id, phone, user_id, "linked identity", wamid);
	if (strcmp(type, "system") == 0 && phone != NULL)
	{
		char	   *new_wa_id = wa_json_string(wa_json_object(msg, "system"), "new_wa_id");

		if (new_wa_id == NULL)
			new_wa_id = wa_json_string(wa_json_object(msg, "system"), "wa_id");
		if (all_digits(new_wa_id) && strlen(new_wa_id) <= 20)
			link_identities(account->id, phone, psprintf("+%s", new_wa_id),
							"number change", wamid);
	}

	check_keywords(ctx, account, type, body, button_payload, phone, from, user_id,
				   wamid, ts, where);
	if (strcmp(type, "reaction") == 0)
		apply_reaction(ctx, account, msg, body, ts, wamid, where);
}

static void
apply_messages(HookCtx *ctx, JsonbContainer *value, const char *pnid,
			   const char *where)
{
	JsonbValue *mv = wa_json_member(value, "messages");
	JsonbContainer *arr = wa_json_container(mv, false);
	JsonbContainer *contacts = wa_json_array(value, "contacts");

	if (mv == NULL)
		return;
	if (arr == NULL)
	{
		note(ctx, "%s: messages is not an array", where);
		return;
	}
	for (uint32 i = 0; i < JsonContainerSize(arr); i++)
		apply_inbound(ctx, getIthJsonbValueFromContainer(arr, i), contacts, pnid,
					  psprintf("%s messages[%u]", where, i));
}

/*
 * Meta's marketing preference: stop or resume, from the user's app, at the
 * time it carries.  Its contact is the one with the same wa_id or user id.
 */
static void
apply_user_preferences(HookCtx *ctx, JsonbContainer *value, const char *pnid,
					   const char *where)
{
	JsonbContainer *arr = wa_json_array(value, "user_preferences");
	JsonbContainer *contacts = wa_json_array(value, "contacts");
	HookAccount *account = active_account(ctx, pnid);

	if (arr == NULL)
	{
		note(ctx, "%s: user_preferences is missing or not an array", where);
		return;
	}
	for (uint32 i = 0; i < JsonContainerSize(arr); i++)
	{
		JsonbContainer *p = jelem_object(arr, i);
		char	   *wa_id = wa_json_string(p, "wa_id");
		char	   *user_id = wa_json_string(p, "user_id");
		char	   *category = wa_json_string(p, "category");
		char	   *val = wa_json_string(p, "value");
		char	   *w = psprintf("%s user_preferences[%u]", where, i);
		char	   *phone = NULL;
		char		e164[WA_E164_MAXLEN + 1];
		List	   *ids;
		JsonbContainer *contact;
		TimestampTz ts;

		if (p == NULL)
		{
			note(ctx, "%s is not an object", w);
			continue;
		}
		contact = contact_for(contacts, wa_id, user_id);
		if (user_id == NULL)
			user_id = wa_json_string(contact, "user_id");
		if (wa_id == NULL)
			wa_id = wa_json_string(contact, "wa_id");
		if (!all_digits(wa_id) || strlen(wa_id) > 20)
			wa_id = NULL;
		if (wa_id != NULL && wa_normalize_phone(psprintf("+%s", wa_id), NULL, e164))
			phone = pstrdup(e164);
		if (category == NULL || strcmp(category, "marketing_messages") != 0)
		{
			note(ctx, "%s: category \"%.40s\" is not handled",
				 w, category ? category : "(missing)");
			continue;
		}
		if (val == NULL || (strcmp(val, "stop") != 0 && strcmp(val, "resume") != 0))
		{
			note(ctx, "%s: value \"%.40s\" is neither stop nor resume",
				 w, val ? val : "(missing)");
			continue;
		}
		ids = person_ids(ctx, phone, wa_id, user_id, w, val);
		if (ids == NIL)
		{
			note(ctx, "%s names nobody (no wa_id or user_id)", w);
			continue;
		}
		if (!jtimestamp(p, "timestamp", &ts))
		{
			ts = ctx->now;
			note(ctx, "%s: timestamp is missing or not Unix seconds; the time of receipt was used", w);
		}
		if (consent_apply(ctx, strcmp(val, "stop") == 0, account->id, ids, "marketing",
						  "user_preferences",
						  strcmp(val, "stop") == 0 ? wa_json_string(p, "detail") : NULL,
						  NULL, ts, w) > 0)
			ctx->applied++;
	}
}

/* What a change carries, for the note that refuses it. */
static char *
change_contents(JsonbContainer *value)
{
	static const char *const parts[] = {"statuses", "messages", "user_preferences", "errors"};
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < (int) lengthof(parts); i++)
	{
		JsonbContainer *arr = wa_json_array(value, parts[i]);

		if (arr != NULL)
			appendStringInfo(&buf, "%s%u %s", buf.len ? ", " : "",
							 JsonContainerSize(arr), parts[i]);
	}
	return buf.len ? buf.data : "nothing";
}

/*
 * A change of field messages or user_preferences names its account by
 * metadata.phone_number_id.  It is applied only when an active account with
 * that number shares the secret that verified the payload; otherwise it is
 * refused, with a note that says why.
 */
static bool
change_allowed(HookCtx *ctx, JsonbContainer *value, const char *pnid,
			   const char *field, const char *where)
{
	HookAccount *other = NULL;

	for (int i = 0; pnid && i < ctx->naccounts; i++)
	{
		if (ctx->accounts[i].dropped ||
			strcmp(ctx->accounts[i].phone_number_id, pnid) != 0)
			continue;
		if (signed_for(ctx, i))
			return true;
		other = &ctx->accounts[i];
	}
	if (pnid == NULL)
		note(ctx, "%s (field %s): no metadata.phone_number_id names the account; refused (%s)",
			 where, field, change_contents(value));
	else if (other != NULL)
		note(ctx, "%s (field %s): phone_number_id %s is account \"%s\"'s, whose app secret did not sign this payload; refused (%s)",
			 where, field, pnid, other->name, change_contents(value));
	else
		note(ctx, "%s (field %s): no active account has phone_number_id %.64s; refused (%s)",
			 where, field, pnid, change_contents(value));
	return false;
}

/*
 * The accounts a change of a WABA-level field (templates, account events)
 * applies to: the active accounts whose waba_id is the entry's id and that
 * share the verifying secret.  NULL, with a note, when there are none.
 * *every is set when they are all the active accounts.
 */
static List *
waba_accounts(HookCtx *ctx, const char *waba, const char *field,
			  const char *where, bool *every)
{
	List	   *list = NIL;
	HookAccount *other = NULL;
	int			active = 0;

	for (int i = 0; i < ctx->naccounts; i++)
	{
		HookAccount *a = &ctx->accounts[i];

		if (a->dropped)
			continue;
		active++;
		if (waba == NULL || a->waba_id == NULL || strcmp(a->waba_id, waba) != 0)
			continue;
		if (signed_for(ctx, i))
			list = lappend(list, a);
		else
			other = a;
	}
	*every = list != NIL && list_length(list) == active;
	if (list != NIL)
		return list;
	if (waba == NULL)
		note(ctx, "%s (field %s): the entry has no id (WABA); refused", where, field);
	else if (other != NULL)
		note(ctx, "%s (field %s): WABA %s is account \"%s\"'s, whose app secret did not sign this payload; refused",
			 where, field, waba, other->name);
	else
		note(ctx, "%s (field %s): no active account has WABA id %.64s; refused",
			 where, field, waba);
	return NIL;
}

/* text[] of the names of a list of accounts */
static Datum
account_names(List *accounts)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(accounts), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, accounts)
		elems[n++] = CStringGetTextDatum(((HookAccount *) lfirst(lc))->name);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * message_template_status_update, template_category_update and
 * message_template_quality_update: applied to the templates of the
 * accounts of the entry's WABA only (see whatsapp._template_update for the
 * rows listed for every account).  column: status, category or quality.
 */
static void
apply_template_update(HookCtx *ctx, JsonbContainer *value, const char *waba,
					  const char *field, const char *column, const char *where)
{
	char	   *name = wa_json_string(value, "message_template_name");
	char	   *language = wa_json_string(value, "message_template_language");
	char	   *newval;
	Oid			types[6] = {TEXTARRAYOID, BOOLOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	List	   *accounts;
	bool		every;
	bool		isnull;
	int			n;

	if (strcmp(column, "category") == 0)
	{
		newval = wa_json_string(value, "new_category");
		if (newval != NULL)
			for (char *c = newval; *c; c++)
				*c = pg_toupper((unsigned char) *c);
		if (newval == NULL || (strcmp(newval, "MARKETING") != 0 &&
							   strcmp(newval, "UTILITY") != 0 &&
							   strcmp(newval, "AUTHENTICATION") != 0))
		{
			note(ctx, "%s: new_category \"%.40s\" is not MARKETING, UTILITY or AUTHENTICATION",
				 where, newval ? newval : "(missing)");
			return;
		}
	}
	else
	{
		bool		quality = strcmp(column, "quality") == 0;

		newval = wa_json_string(value, quality ? "new_quality_score" : "event");
		if (newval == NULL || strlen(newval) > 64)
		{
			note(ctx, "%s: template %s update without %s", where, column,
				 quality ? "new_quality_score" : "an event");
			return;
		}
	}
	if (name == NULL || strlen(name) > 512)
	{
		note(ctx, "%s: template update without message_template_name", where);
		return;
	}
	accounts = waba_accounts(ctx, waba, field, where, &every);
	if (accounts == NIL)
		return;
	if (language != NULL)
		for (char *c = language; *c; c++)
			if (*c == '-')
				*c = '_';

	values[0] = account_names(accounts);
	values[1] = BoolGetDatum(every);
	values[2] = CStringGetTextDatum(name);
	values[3] = language ? CStringGetTextDatum(language) : (Datum) 0;
	nulls[3] = language ? ' ' : 'n';
	values[4] = CStringGetTextDatum(column);
	values[5] = CStringGetTextDatum(newval);
	wa_spi_check(spi_run(wa_plan(&plan_tpl_update,
								 "SELECT whatsapp._template_update($1, $2, $3, $4, $5, $6)",
								 6, types),
						 values, nulls, false, 1),
				 SPI_OK_SELECT, "template update");
	n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	log_event(0, "webhook", false, 0,
			  psprintf("template %s%s%s of WABA %s: %s %s%s", name,
					   language ? " " : "", language ? language : "", waba,
					   column, newval,
					   n > 0 ? "" : " (no such row in whatsapp.templates)"));
	if (n > 0)
		ctx->applied++;
}

/* Meta's Unix seconds as text, for a reason: "2026-10-30 13:38:04+00". */
static const char *
unix_text(JsonbContainer *c, const char *key)
{
	TimestampTz ts;

	if (!jtimestamp(c, key, &ts))
		return NULL;
	return timestamptz_to_str(ts);
}

/*
 * account_update: a ban (DISABLED_UPDATE with DISABLE), a restriction of
 * messaging (ACCOUNT_RESTRICTION) or an offboarding (ACCOUNT_OFFBOARDED,
 * ACCOUNT_DELETED) pauses the accounts of the WABA, with the reason;
 * REINSTATE and ACCOUNT_RECONNECTED resume accounts Meta paused.  Every
 * event is recorded as the accounts' meta_status.
 */
static void
apply_account_update(HookCtx *ctx, JsonbContainer *value, const char *waba,
					 const char *field, const char *where)
{
	char	   *event = wa_json_string(value, "event");
	char	   *status;
	char	   *pause = NULL;
	bool		resume = false;
	List	   *accounts;
	bool		every;
	Oid			types[5] = {TEXTARRAYOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, BOOLOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	if (event == NULL || strlen(event) > 64)
	{
		note(ctx, "%s: account_update without an event", where);
		return;
	}
	accounts = waba_accounts(ctx, waba, field, where, &every);
	if (accounts == NIL)
		return;
	status = event;
	if (strcmp(event, "DISABLED_UPDATE") == 0)
	{
		JsonbContainer *ban = wa_json_object(value, "ban_info");
		char	   *state = wa_json_string(ban, "waba_ban_state");
		char	   *date = wa_json_string(ban, "waba_ban_date");

		status = psprintf("%s: %s%s%s", event, state ? state : "(no waba_ban_state)",
						  date ? " " : "", date ? date : "");
		if (state != NULL && strcmp(state, "DISABLE") == 0)
			pause = psprintf("Meta disabled (banned) WABA %s%s%s (account_update DISABLED_UPDATE); it resumes on Meta's REINSTATE or whatsapp.wa_account_set()",
							 waba, date ? " on " : "", date ? date : "");
		else if (state != NULL && strcmp(state, "REINSTATE") == 0)
			resume = true;
	}
	else if (strcmp(event, "ACCOUNT_RESTRICTION") == 0)
	{
		JsonbContainer *arr = wa_json_array(value, "restriction_info");
		StringInfoData types_buf;
		bool		messaging = false;

		initStringInfo(&types_buf);
		for (uint32 i = 0; arr && i < JsonContainerSize(arr); i++)
		{
			JsonbContainer *r = jelem_object(arr, i);
			char	   *type = wa_json_string(r, "restriction_type");
			const char *until = unix_text(r, "expiration");

			if (type == NULL)
				continue;
			appendStringInfo(&types_buf, "%s%s%s%s", types_buf.len ? ", " : "", type,
							 until ? " until " : "", until ? until : "");
			if (strstr(type, "MESSAGING") != NULL)
				messaging = true;
		}
		status = psprintf("%s: %s", event, types_buf.len ? types_buf.data : "(no restriction_info)");
		if (messaging)
			pause = psprintf("Meta restricted WABA %s: %s (account_update ACCOUNT_RESTRICTION); resume with whatsapp.wa_account_set() once it is lifted",
							 waba, types_buf.data);
	}
	else if (strcmp(event, "ACCOUNT_OFFBOARDED") == 0 || strcmp(event, "ACCOUNT_DELETED") == 0)
		pause = psprintf("Meta reported WABA %s as %s (account_update); it resumes on ACCOUNT_RECONNECTED or whatsapp.wa_account_set()",
						 waba, strcmp(event, "ACCOUNT_DELETED") == 0 ? "deleted" : "offboarded");
	else if (strcmp(event, "ACCOUNT_RECONNECTED") == 0)
		resume = true;
	else if (strcmp(event, "ACCOUNT_VIOLATION") == 0)
	{
		char	   *type = wa_json_string(wa_json_object(value, "violation_info"), "violation_type");

		status = psprintf("%s: %s", event, type ? type : "(no violation_type)");
	}

	values[0] = account_names(accounts);
	values[1] = CStringGetTextDatum(status);
	values[2] = TimestampTzGetDatum(ctx->entry_time);
	values[3] = pause ? CStringGetTextDatum(pause) : (Datum) 0;
	nulls[3] = pause ? ' ' : 'n';
	values[4] = BoolGetDatum(resume);
	wa_spi_check(spi_run(wa_plan(&plan_account_event,
								 "UPDATE whatsapp.account a SET meta_status = $2, meta_status_at = $3,"
								 "  paused_kind = CASE WHEN $4 IS NOT NULL THEN 'meta'"
								 "    WHEN $5 AND a.paused_kind = 'meta' THEN NULL ELSE a.paused_kind END,"
								 "  paused_reason = CASE WHEN $4 IS NOT NULL THEN $4"
								 "    WHEN $5 AND a.paused_kind = 'meta' THEN NULL ELSE a.paused_reason END,"
								 "  paused_at = CASE WHEN $4 IS NOT NULL THEN pg_catalog.now()"
								 "    WHEN $5 AND a.paused_kind = 'meta' THEN NULL ELSE a.paused_at END"
								 " WHERE a.name = ANY ($1) AND a.dropped_at IS NULL", 5, types),
						 values, nulls, false, 0),
				 SPI_OK_UPDATE, "account event");
	if (pause != NULL || resume)
		wa_accounts_changed_at_commit();	/* the worker reloads its accounts */
	log_event(0, "webhook", false, 0,
			  psprintf("account_update of WABA %s: %s%s", waba, status,
					   pause ? "; accounts paused" : resume ? "; accounts Meta paused resumed" : ""));
	ctx->applied++;
}

/* The digits of s, for comparing phone numbers written differently. */
static char *
digits_of(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (; s && *s; s++)
		if (*s >= '0' && *s <= '9')
			appendStringInfoChar(&buf, *s);
	return buf.data;
}

/*
 * phone_number_quality_update: the event (FLAGGED, UNFLAGGED, DOWNGRADE,
 * UPGRADE, THROUGHPUT_UPGRADE, ...) and the messaging limit, recorded on
 * the account of the WABA whose display_phone_number it names (learned
 * from the metadata of messages webhooks), or on its only account when
 * that one's number is not known yet.
 */
static void
apply_quality_update(HookCtx *ctx, JsonbContainer *value, const char *waba,
					 const char *field, const char *where)
{
	char	   *display = wa_json_string(value, "display_phone_number");
	char	   *event = wa_json_string(value, "event");
	char	   *limit = wa_json_string(value, "max_daily_conversations_per_business");
	char	   *digits = digits_of(display);
	List	   *accounts;
	List	   *target = NIL;
	ListCell   *lc;
	bool		every;
	Oid			types[4] = {TEXTARRAYOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	if (limit == NULL)
		limit = wa_json_string(value, "current_limit");
	if (event == NULL || strlen(event) > 64)
	{
		note(ctx, "%s: phone_number_quality_update without an event", where);
		return;
	}
	accounts = waba_accounts(ctx, waba, field, where, &every);
	if (accounts == NIL)
		return;
	foreach(lc, accounts)
	{
		HookAccount *a = (HookAccount *) lfirst(lc);

		if (digits[0] != '\0' && a->display != NULL && strcmp(digits_of(a->display), digits) == 0)
			target = lappend(target, a);
	}
	/* the WABA's only account, when its number is not known yet */
	if (target == NIL && list_length(accounts) == 1 &&
		((HookAccount *) linitial(accounts))->display == NULL)
		target = accounts;
	if (target == NIL)
	{
		note(ctx, "%s: phone_number_quality_update for display number %.32s: no account of WABA %s is known by that number yet (a messages webhook shows it); not applied",
			 where, display ? display : "(missing)", waba);
		return;
	}
	values[0] = account_names(target);
	values[1] = CStringGetTextDatum(event);
	values[2] = limit ? CStringGetTextDatum(limit) : (Datum) 0;
	nulls[2] = limit ? ' ' : 'n';
	values[3] = TimestampTzGetDatum(ctx->entry_time);
	wa_spi_check(spi_run(wa_plan(&plan_quality,
								 "UPDATE whatsapp.account a SET quality = $2,"
								 "  messaging_limit = COALESCE($3, a.messaging_limit), quality_at = $4"
								 " WHERE a.name = ANY ($1) AND a.dropped_at IS NULL", 4, types),
						 values, nulls, false, 0),
				 SPI_OK_UPDATE, "quality update");
	log_event(0, "webhook", false, 0,
			  psprintf("phone_number_quality_update of %s (WABA %s): %s%s%s",
					   display ? display : "(no display number)", waba, event,
					   limit ? ", limit " : "", limit ? limit : ""));
	ctx->applied++;
}

/* Learn the display number of an account from a messages webhook. */
static void
learn_display(HookCtx *ctx, JsonbContainer *value, const char *pnid)
{
	char	   *display = wa_json_string(wa_json_object(value, "metadata"), "display_phone_number");
	HookAccount *a = active_account(ctx, pnid);
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	if (a == NULL || display == NULL || strlen(display) > 32 ||
		(a->display != NULL && strcmp(a->display, display) == 0))
		return;
	values[0] = Int32GetDatum(a->id);
	values[1] = CStringGetTextDatum(display);
	wa_spi_check(spi_run(wa_plan(&plan_display,
								 "UPDATE whatsapp.account SET display_phone_number = $2"
								 " WHERE id = $1 AND display_phone_number IS DISTINCT FROM $2",
								 2, types),
						 values, NULL, false, 0),
				 SPI_OK_UPDATE, "display number");
}

static void
apply_change(HookCtx *ctx, JsonbContainer *change, const char *waba,
			 const char *where)
{
	char	   *field;
	JsonbContainer *value;
	char	   *pnid;

	if (change == NULL)
	{
		note(ctx, "%s is not an object", where);
		return;
	}
	field = wa_json_string(change, "field");
	value = wa_json_object(change, "value");
	if (field == NULL)
	{
		note(ctx, "%s has no field", where);
		return;
	}
	if (value == NULL)
	{
		note(ctx, "%s (field %.64s) has no object value", where, field);
		return;
	}
	pnid = wa_json_string(wa_json_object(value, "metadata"), "phone_number_id");

	if ((strcmp(field, "messages") == 0 || strcmp(field, "user_preferences") == 0) &&
		!change_allowed(ctx, value, pnid, field, where))
		return;
	if (strcmp(field, "messages") == 0)
	{
		learn_display(ctx, value, pnid);
		if (wa_json_member(value, "statuses") == NULL && wa_json_member(value, "messages") == NULL &&
			wa_json_member(value, "errors") == NULL)
			note(ctx, "%s: field messages without statuses, messages or errors", where);
		apply_errors(ctx, value, where);
		apply_statuses(ctx, value, pnid, where);
		apply_messages(ctx, value, pnid, where);
	}
	else if (strcmp(field, "user_preferences") == 0)
	{
		apply_errors(ctx, value, where);
		apply_user_preferences(ctx, value, pnid, where);
	}
	else if (strcmp(field, "message_template_status_update") == 0)
		apply_template_update(ctx, value, waba, field, "status", where);
	else if (strcmp(field, "template_category_update") == 0)
		apply_template_update(ctx, value, waba, field, "category", where);
	else if (strcmp(field, "message_template_quality_update") == 0)
		apply_template_update(ctx, value, waba, field, "quality", where);
	else if (strcmp(field, "account_update") == 0)
		apply_account_update(ctx, value, waba, field, where);
	else if (strcmp(field, "phone_number_quality_update") == 0)
		apply_quality_update(ctx, value, waba, field, where);
	else if (strcmp(field, "smb_message_echoes") == 0 ||
			 strcmp(field, "history") == 0 ||
			 strcmp(field, "smb_app_state_sync") == 0)
		note(ctx, "%s: field %s is a Coexistence echo of the WhatsApp Business app: not inbound, not an opt-out",
			 where, field);
	else
	{
		apply_errors(ctx, value, where);
		note(ctx, "%s: field %.64s is not handled", where, field);
	}
}

static void
apply_payload(HookCtx *ctx, Jsonb *doc)
{
	JsonbContainer *root = &doc->root;
	char	   *object;
	JsonbContainer *entries;
	MemoryContext call_cxt = CurrentMemoryContext;

	if (!JB_ROOT_IS_OBJECT(doc))
	{
		note(ctx, "the payload is not a JSON object");
		return;
	}
	object = wa_json_string(root, "object");
	if (object == NULL || strcmp(object, "whatsapp_business_account") != 0)
	{
		note(ctx, "object is %s%.64s%s, not \"whatsapp_business_account\": not a WhatsApp Business payload",
			 object ? "\"" : "", object ? object : "missing", object ? "\"" : "");
		return;
	}
	entries = wa_json_array(root, "entry");
	if (entries == NULL)
	{
		note(ctx, "entry is missing or not an array");
		return;
	}
	/* The common case, one status alone, is applied and stored at once. */
	if (JsonContainerSize(entries) == 1)
	{
		JsonbContainer *changes = wa_json_array(jelem_object(entries, 0), "changes");
		JsonbContainer *change = (changes && JsonContainerSize(changes) == 1) ?
		jelem_object(changes, 0) : NULL;
		JsonbContainer *value = wa_json_object(change, "value");
		JsonbContainer *statuses = wa_json_array(value, "statuses");
		char	   *field = jstrict(change, "field");

		ctx->single_status = field != NULL && strcmp(field, "messages") == 0 &&
			statuses != NULL && JsonContainerSize(statuses) == 1 &&
			wa_json_member(value, "messages") == NULL && wa_json_member(value, "errors") == NULL;
	}
	for (uint32 e = 0; e < JsonContainerSize(entries); e++)
	{
		JsonbContainer *entry = jelem_object(entries, e);
		JsonbContainer *changes = wa_json_array(entry, "changes");
		char	   *waba = wa_json_string(entry, "id");

		if (!jtimestamp(entry, "time", &ctx->entry_time))
			ctx->entry_time = ctx->now;
		if (changes == NULL)
		{
			note(ctx, "entry[%u] has no changes array", e);
			continue;
		}
		for (uint32 c = 0; c < JsonContainerSize(changes); c++)
		{
			MemoryContextSwitchTo(ctx->item_cxt);
			apply_change(ctx, jelem_object(changes, c), waba,
						 psprintf("entry[%u] changes[%u]", e, c));
			MemoryContextSwitchTo(call_cxt);
			MemoryContextReset(ctx->item_cxt);
		}
	}
}

/* Store the payload, with its count and notes. */
static void
store_payload(HookCtx *ctx, text *payload)
{
	Oid			types[6] = {INT4OID, TEXTOID, INT4OID, TEXTARRAYOID, BYTEAOID, INT8OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			n = list_length(ctx->notes);
	Datum	   *elems = palloc(sizeof(Datum) * (n + 1));
	int			i = 0;
	ListCell   *lc;

	foreach(lc, ctx->notes)
		elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
	if (ctx->nnotes > n)
		elems[i++] = CStringGetTextDatum(psprintf("and %d more notes", ctx->nnotes - n));

	values[0] = Int32GetDatum(ctx->verified_by);
	values[1] = PointerGetDatum(payload);
	values[2] = Int32GetDatum(ctx->applied);
	values[4] = ctx->digest ? PointerGetDatum(ctx->digest) : (Datum) 0;
	nulls[4] = ctx->digest ? ' ' : 'n';
	values[5] = Int64GetDatum(ctx->duplicate_of);
	nulls[5] = ctx->duplicate_of ? ' ' : 'n';
	if (i > 0)
		values[3] = PointerGetDatum(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
	else
		nulls[3] = 'n';
	/* a redelivery is marked once, on its own row, and logs nothing */
	if (i == 0 || ctx->duplicate_of != 0)
	{
		wa_spi_check(spi_run(wa_plan(&plan_store_plain,
									 "INSERT INTO whatsapp.webhook (account_id, payload, applied, ignored,"
									 "  digest, duplicate_of)"
									 " VALUES ($1, $2, $3, $4, $5, $6)", 6, types),
							 values, nulls, false, 0),
					 SPI_OK_INSERT, "storing the payload");
		return;
	}
	/* with notes: each is a whatsapp.log row too */
	wa_spi_check(spi_run(wa_plan(&plan_store,
								 "WITH w AS ("
								 "  INSERT INTO whatsapp.webhook (account_id, payload, applied, ignored,"
								 "    digest, duplicate_of)"
								 "  VALUES ($1, $2, $3, $4, $5, $6) RETURNING id)"
								 " INSERT INTO whatsapp.log (event, message)"
								 " SELECT 'webhook_ignored', 'payload ' || w.id || ': ' || n"
								 "   FROM w, pg_catalog.unnest($4) n", 6, types),
						 values, nulls, false, 0),
				 SPI_OK_INSERT, "storing the payload");
}

/*
 * Has a payload of these exact bytes, verified by the same secret, been
 * stored before (a redelivery)?  Returns its id, or 0.  (The same bytes
 * under another secret had their changes refused: not a redelivery.)
 */
static int64
earlier_delivery(HookCtx *ctx)
{
	Oid			types[2] = {BYTEAOID, INT4ARRAYOID};
	Datum		values[2];
	Datum	   *ids = palloc(sizeof(Datum) * Max(ctx->naccounts, 1));
	int			n = 0;
	bool		isnull;
	int64		id = 0;

	for (int i = 0; i < ctx->naccounts; i++)
		if (ctx->signer[i])
			ids[n++] = Int32GetDatum(ctx->accounts[i].id);
	values[0] = PointerGetDatum(ctx->digest);
	values[1] = PointerGetDatum(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
	wa_spi_check(spi_run(wa_plan(&plan_find_digest,
								 "SELECT id FROM whatsapp.webhook WHERE digest = $1"
								 " AND account_id = ANY ($2) ORDER BY id LIMIT 1", 2, types),
						 values, NULL, false, 1),
				 SPI_OK_SELECT, "looking for an earlier delivery");
	if (SPI_processed > 0)
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return id;
}

/* Payloads older than whatsapp.log_retention go, a batch at a time. */
static void
purge_payloads(void)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(wa_log_retention)};

	if (++payloads_stored % WA_PURGE_EVERY != 0 || wa_log_retention <= 0)
		return;
	wa_spi_check(spi_run(wa_plan(&plan_purge_payloads,
							   "DELETE FROM whatsapp.webhook"
							   " WHERE id IN (SELECT id FROM whatsapp.webhook"
							   "               ORDER BY id LIMIT " CppAsString2(WA_PURGE_BATCH) ")"
							   "   AND received_at < pg_catalog.now() - pg_catalog.make_interval(mins => $1)",
							   1, types),
					  values, NULL, false, 0),
			  SPI_OK_DELETE, "purging old payloads");
}

/*
 * The account recorded as the payload's verifier: among the accounts that
 * share the verifying secret, the one a change names by phone_number_id,
 * else by WABA id, else the first.
 */
static int32
named_signer(HookCtx *ctx, Jsonb *doc)
{
	JsonbContainer *entries = JB_ROOT_IS_OBJECT(doc) ?
	wa_json_array(&doc->root, "entry") : NULL;
	int32		by_waba = 0;

	for (uint32 e = 0; entries && e < JsonContainerSize(entries); e++)
	{
		JsonbContainer *entry = jelem_object(entries, e);
		JsonbContainer *changes = wa_json_array(entry, "changes");
		char	   *waba = wa_json_string(entry, "id");

		for (uint32 c = 0; changes && c < JsonContainerSize(changes); c++)
		{
			JsonbContainer *value = wa_json_object(jelem_object(changes, c), "value");
			char	   *pnid = wa_json_string(wa_json_object(value, "metadata"), "phone_number_id");

			for (int i = 0; pnid && i < ctx->naccounts; i++)
				if (ctx->signer[i] && strcmp(ctx->accounts[i].phone_number_id, pnid) == 0)
					return ctx->accounts[i].id;
		}
		for (int i = 0; waba && by_waba == 0 && i < ctx->naccounts; i++)
			if (ctx->signer[i] && ctx->accounts[i].waba_id != NULL &&
				strcmp(ctx->accounts[i].waba_id, waba) == 0)
				by_waba = ctx->accounts[i].id;
	}
	return by_waba ? by_waba : ctx->verified_by;
}

static void
hook_begin(HookCtx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->now = GetCurrentTransactionStartTimestamp();
	ctx->item_cxt = AllocSetContextCreate(CurrentMemoryContext, "whatsapp webhook item",
										  ALLOCSET_DEFAULT_SIZES);
}

/*
 * wa_receive(payload text, signature text) RETURNS integer
 */
Datum
wa_receive(PG_FUNCTION_ARGS)
{
	text	   *payload;
	text	   *sig = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	Jsonb	   *doc;
	char	   *why;
	uint8		expected[WA_SHA256_LEN];
	HookCtx		ctx;
	MemoryContext call_cxt = CurrentMemoryContext;

	/*
	 * The signature first, on the raw bytes: nothing is parsed or copied
	 * before it is verified.
	 */
	parse_signature(sig, expected);
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("webhook payload is NULL, not JSON"),
				 errhint("Pass the request body exactly as received.")));
	payload = PG_GETARG_TEXT_PP(0);

	hook_begin(&ctx);
	ctx.payload = payload;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(call_cxt);
	load_accounts(&ctx);
	ctx.verified_by = verify_signature(&ctx, VARDATA_ANY(payload),
									   VARSIZE_ANY_EXHDR(payload), expected);

	doc = parse_payload(payload, &why, &ctx.nulls_replaced);
	if (doc != NULL)
		ctx.verified_by = named_signer(&ctx, doc);

	/*
	 * A redelivery (the same bytes again: Meta retries for days) is stored
	 * once more, marked as such, and applies nothing.
	 */
	ctx.digest = (bytea *) palloc(VARHDRSZ + WA_SHA256_LEN);
	SET_VARSIZE(ctx.digest, VARHDRSZ + WA_SHA256_LEN);
	sha256(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
		   (uint8 *) VARDATA(ctx.digest));
	ctx.duplicate_of = earlier_delivery(&ctx);
	if (ctx.duplicate_of != 0)
		note(&ctx, "a redelivery of payload " INT64_FORMAT " (the same bytes): nothing applied again",
			 ctx.duplicate_of);
	else if (doc == NULL)
		note(&ctx, "the payload is JSON that PostgreSQL's jsonb cannot hold (%s); nothing applied", why);
	else
	{
		if (ctx.nulls_replaced > 0)
			note(&ctx, "%d \\u0000 escape%s (a NUL, which PostgreSQL's text cannot hold) replaced by U+FFFD before applying",
				 ctx.nulls_replaced, ctx.nulls_replaced == 1 ? "" : "s");
		apply_payload(&ctx, doc);
	}
	if (!ctx.stored)
		store_payload(&ctx, payload);
	purge_payloads();
	SPI_finish();
	PG_RETURN_INT32(ctx.applied);
}

/*
 * _verify_signature(payload, signature): wa_receive's checks and nothing
 * more; returns the id of the account whose app secret verified.
 */
Datum
wa_verify_signature_sql(PG_FUNCTION_ARGS)
{
	text	   *payload;
	text	   *sig = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	uint8		expected[WA_SHA256_LEN];
	HookCtx		ctx;
	int32		id;
	MemoryContext call_cxt = CurrentMemoryContext;

	parse_signature(sig, expected);
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("webhook payload is NULL, not JSON")));
	payload = PG_GETARG_TEXT_PP(0);
	hook_begin(&ctx);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(call_cxt);
	load_accounts(&ctx);
	id = verify_signature(&ctx, VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
						  expected);
	SPI_finish();
	PG_RETURN_INT32(id);
}

/*
 * wa_verify_webhook(mode, verify_token, challenge) RETURNS text
 *
 * Every verify token on file is compared, in constant time, through its
 * SHA-256 digest, so that neither its content nor its length shows.
 */
Datum
wa_verify_webhook(PG_FUNCTION_ARGS)
{
	text	   *mode;
	text	   *token;
	uint8		want[WA_SHA256_LEN];
	bool		match = false;
	int			rc;
	SPITupleTable *tt;

	/*
	 * pg_stat_activity must not show the token, even in a backend that
	 * loaded the library only for this call (redact.c's hooks come later).
	 */
	wa_report_redacted_activity("wa_verify_webhook");

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	mode = PG_GETARG_TEXT_PP(0);
	token = PG_GETARG_TEXT_PP(1);
	if (VARSIZE_ANY_EXHDR(mode) != 9 || memcmp(VARDATA_ANY(mode), "subscribe", 9) != 0 ||
		VARSIZE_ANY_EXHDR(token) == 0)
		PG_RETURN_NULL();
	sha256(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), want);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute("SELECT id, name, verify_token, verify_token_key FROM whatsapp.account"
					 " WHERE dropped_at IS NULL AND verify_token IS NOT NULL ORDER BY id",
					 true, 0);
	wa_spi_check(rc, SPI_OK_SELECT, "verify token lookup");
	tt = SPI_tuptable;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		bytea	   *sealed = DatumGetByteaPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
		char	   *key_id = SPI_getvalue(tt->vals[i], tt->tupdesc, 4);
		char	   *secret = NULL;
		WaUnsealResult r;
		uint8		have[WA_SHA256_LEN];

		r = wa_unseal(sealed, key_id, id, WA_FIELD_VERIFY_TOKEN, true, &secret);
		if (r != WA_UNSEAL_OK)
		{
			const char *hint = wa_unseal_result_hint(r);

			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the verify token of whatsapp account \"%s\" cannot be used",
							SPI_getvalue(tt->vals[i], tt->tupdesc, 2)),
					 errdetail("%s", wa_unseal_result_text(r)),
					 hint ? errhint("%s", hint) : 0));
			continue;
		}
		sha256(secret, strlen(secret), have);
		wa_wipe(secret);
		if (CRYPTO_memcmp(have, want, WA_SHA256_LEN) == 0)
			match = true;
		explicit_bzero(have, sizeof(have));
	}
	SPI_finish();
	explicit_bzero(want, sizeof(want));

	if (!match)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(PG_GETARG_TEXT_P_COPY(2));
}

/*
 * _after_record(ids bigint[], codes integer[]): the worker's hook after it
 * recorded answers for the messages ids (codes: Meta's error codes, NULL
 * where none).  Records a marketing opt-out for 131050 and applies the
 * statuses held for these messages.
 */
Datum
wa_after_record(PG_FUNCTION_ARGS)
{
	ArrayType  *ids_a;
	Datum	   *ids;
	bool	   *id_nulls;
	int			nids;
	Datum	   *codes = NULL;
	bool	   *code_nulls = NULL;
	int			ncodes = 0;
	Datum	   *stopped;
	int			nstopped = 0;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	bool		isnull;
	bool		any_held;
	MemoryContext call_cxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	ids_a = PG_GETARG_ARRAYTYPE_P(0);
	deconstruct_array(ids_a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &ids, &id_nulls, &nids);
	if (!PG_ARGISNULL(1))
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), INT4OID, 4, true, TYPALIGN_INT,
						  &codes, &code_nulls, &ncodes);
	if (nids == 0)
		PG_RETURN_VOID();

	stopped = palloc(sizeof(Datum) * nids);
	for (int i = 0; i < ncodes && i < nids; i++)
		if (!code_nulls[i] && !id_nulls[i] && DatumGetInt32(codes[i]) == 131050)
			stopped[nstopped++] = ids[i];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(call_cxt);

	/* 131050: the user stopped marketing messages. */
	if (nstopped > 0)
	{
		values[0] = PointerGetDatum(construct_array(stopped, nstopped, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		wa_spi_check(SPI_execute_with_args("SELECT whatsapp._opt_out_apply(m.account_id,"
										"  ARRAY[m.recipient, '+' || m.wa_id], 'marketing',"
										"  'error 131050', m.error_title, m.wamid)"
										" FROM whatsapp.message m"
										" WHERE m.id = ANY ($1) AND m.state = 'failed'",
										1, types, values, NULL, false, 0),
				  SPI_OK_SELECT, "131050 opt-out");
		MemoryContextSwitchTo(call_cxt);
	}

	/* Statuses held for these messages: see the header comment. */
	lock_hold(ShareLock);
	wa_spi_check(spi_run(wa_plan(&plan_held_any,
							   "SELECT EXISTS (SELECT 1 FROM whatsapp.status_held)", 0, NULL),
					  NULL, NULL, false, 1),
			  SPI_OK_SELECT, "held status lookup");
	any_held = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (any_held)
	{
		HookCtx		ctx;
		SPITupleTable *tt;
		uint64		nheld;
		Datum	   *done;
		int			ndone = 0;

		hook_begin(&ctx);
		load_accounts(&ctx);
		values[0] = PointerGetDatum(ids_a);
		wa_spi_check(spi_run(wa_plan(&plan_held_for,
								   "SELECT h.id, h.phone_number_id, h.status FROM whatsapp.status_held h"
								   " WHERE h.id IN ("
								   "   SELECT h1.id FROM whatsapp.status_held h1"
								   "    WHERE h1.message_id = ANY ($1)"
								   "   UNION"
								   "   SELECT h2.id FROM whatsapp.status_held h2"
								   "     JOIN whatsapp.message m ON m.wamid = h2.wamid"
								   "    WHERE m.id = ANY ($1))"
								   " ORDER BY h.id", 1, types),
						  values, NULL, false, 0),
				  SPI_OK_SELECT, "held status lookup");
		tt = SPI_tuptable;
		nheld = SPI_processed;
		done = palloc(sizeof(Datum) * Max(nheld, 1));
		for (uint64 i = 0; i < nheld; i++)
		{
			Datum		hid = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);
			char	   *pnid = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
			Jsonb	   *j = DatumGetJsonbP(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
			JsonbValue	v;
			StatusIn	st;
			StatusOutcome o;

			v.type = jbvBinary;
			v.val.binary.data = &j->root;
			v.val.binary.len = VARSIZE(j) - VARHDRSZ;
			if (!extract_status(&ctx, &v, &st, "held status"))
			{
				done[ndone++] = hid;
				continue;
			}
			o = apply_status(&ctx, &st, pnid, true);
			if (o == SO_IN_FLIGHT)
				continue;		/* queued again: wait for its next record */
			if (o == SO_NOT_FOUND)
				log_event(0, "webhook", false, 0,
						  psprintf("%s: held, but its message now has another wamid; discarded",
								   status_logmsg(&st)));
			done[ndone++] = hid;
		}
		if (ndone > 0)
		{
			values[0] = PointerGetDatum(construct_array(done, ndone, INT8OID, 8,
														FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			wa_spi_check(spi_run(wa_plan(&plan_held_delete,
									   "DELETE FROM whatsapp.status_held WHERE id = ANY ($1)",
									   1, types),
							  values, NULL, false, 0),
					  SPI_OK_DELETE, "deleting applied held statuses");
		}
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/* ----------
 * Keyword folding
 * ----------
 */

/* Base letters of U+00C0..U+00FF; '*' marks the special cases below. */
static const char latin1_base[64 + 1] =
"aaaaaa*ceeeeiiiidnooooo ouuuuy**"
"aaaaaa*ceeeeiiiidnooooo ouuuuy*y";

/* Base letters of U+0100..U+017F; '*' marks ij and oe. */
static const char latin_ext_a_base[128 + 1] =
"aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiii**jjkkkllllllllll"
"nnnnnnnnnoooooo**rrrrrrssssssssttttttuuuuuuuuuuuuwwyyyzzzzzzs";

static void
fold_append(StringInfo out, const char *s, bool *space)
{
	if (*space && out->len > 0)
		appendStringInfoChar(out, ' ');
	*space = false;
	appendStringInfoString(out, s);
}

/* Punctuation, symbols, emoji, invisible marks: all count as a space. */
static bool
is_separator(pg_wchar c)
{
	return (c >= 0x00A0 && c <= 0x00BF) || c == 0x00D7 || c == 0x00F7 ||
		(c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) ||
		(c >= 0xFE00 && c <= 0xFE0F) || (c >= 0xFE30 && c <= 0xFE4F) ||
		(c >= 0xFF00 && c <= 0xFF0F) || (c >= 0x1F000 && c <= 0x1FAFF) ||
		(c >= 0xE0000 && c <= 0xE007F);
}

char *
wa_fold_keyword(const char *s, int len)
{
	StringInfoData out;
	bool		space = false;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;

	initStringInfo(&out);
	while (p < end)
	{
		unsigned char b = *p;

		if (b < 0x80)
		{
			char		c[2] = {0, 0};

			if ((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9'))
				c[0] = (char) b;
			else if (b >= 'A' && b <= 'Z')
				c[0] = (char) (b - 'A' + 'a');
			if (c[0])
				fold_append(&out, c, &space);
			else
				space = true;
			p++;
			continue;
		}
		if (!utf8)
		{
			char		c[2] = {(char) b, 0};

			fold_append(&out, c, &space);
			p++;
			continue;
		}
		{
			int			l = pg_utf_mblen(p);
			pg_wchar	cp;

			if (l < 1 || p + l > end)
				break;
			cp = utf8_to_unicode(p);
			if (cp >= 0xC0 && cp <= 0xFF)
			{
				char		base = latin1_base[cp - 0xC0];
				char		c[2] = {base, 0};

				if (base == ' ')
					space = true;
				else if (base != '*')
					fold_append(&out, c, &space);
				else if (cp == 0xC6 || cp == 0xE6)
					fold_append(&out, "ae", &space);
				else if (cp == 0xDE || cp == 0xFE)
					fold_append(&out, "th", &space);
				else
					fold_append(&out, "ss", &space);
			}
			else if (cp >= 0x100 && cp <= 0x17F)
			{
				char		base = latin_ext_a_base[cp - 0x100];
				char		c[2] = {base, 0};

				if (base != '*')
					fold_append(&out, c, &space);
				else if (cp == 0x132 || cp == 0x133)
					fold_append(&out, "ij", &space);
				else
					fold_append(&out, "oe", &space);
			}
			else if (cp >= 0x300 && cp <= 0x36F)
			{
				/* combining accents: dropped */
			}
			else if (is_separator(cp))
				space = true;
			else
			{
				char	   *c = pnstrdup((const char *) p, l);

				fold_append(&out, c, &space);
				pfree(c);
			}
			p += l;
		}
	}
	return out.data;
}

Datum
wa_fold_keyword_sql(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_TEXT_P(cstring_to_text(wa_fold_keyword(VARDATA_ANY(t),
													 VARSIZE_ANY_EXHDR(t))));
}

/* ----------
 * Identity forms
 * ----------
 */

/*
 * The E.164 forms under which one number may be known: itself, and for
 * Brazil the mobile with and without the ninth digit, for Argentina the
 * mobile with and without the 9.  Mexico's "521" form is normalized away.
 */
int
wa_phone_forms(const char *e164, char forms[][WA_E164_MAXLEN + 1])
{
	int			n = 0;
	size_t		len = strlen(e164);

	strlcpy(forms[n++], e164, WA_E164_MAXLEN + 1);
	if (strncmp(e164, "+55", 3) == 0)
	{
		const char *nsn = e164 + 3;
		size_t		l = len - 3;

		if (l == 11 && nsn[2] == '9' && nsn[3] >= '6' && nsn[3] <= '9')
			snprintf(forms[n++], WA_E164_MAXLEN + 1, "+55%.2s%s", nsn, nsn + 3);
		else if (l == 10 && nsn[2] >= '6' && nsn[2] <= '9')
			snprintf(forms[n++], WA_E164_MAXLEN + 1, "+55%.2s9%s", nsn, nsn + 2);
	}
	else if (strncmp(e164, "+54", 3) == 0)
	{
		const char *nsn = e164 + 3;
		size_t		l = len - 3;

		if (l == 11 && nsn[0] == '9')
			snprintf(forms[n++], WA_E164_MAXLEN + 1, "+54%s", nsn + 1);
		else if (l == 10)
			snprintf(forms[n++], WA_E164_MAXLEN + 1, "+549%s", nsn);
	}
	return n;
}

/* A business-scoped user id: "CC.digits" and the like; no spaces. */
static bool
looks_like_bsuid(const char *s)
{
	size_t		len = strlen(s);
	bool		letter = false;

	if (len < 3 || len > 128)
		return false;
	for (const char *p = s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
			letter = true;
		else if (!((*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
			return false;
	}
	return letter;
}

Datum
wa_identity_forms_sql(PG_FUNCTION_ARGS)
{
	char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *start = s;
	char	   *end;
	char		e164[WA_E164_MAXLEN + 1];
	char		forms[4][WA_E164_MAXLEN + 1];
	Datum		elems[4];
	int			n;
	bool		letter = false;

	while (*start == ' ' || *start == '\t')
		start++;
	end = start + strlen(start);
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	if (*start == '\0' || strlen(start) > 256)
		PG_RETURN_NULL();
	for (char *p = start; *p; p++)
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
			letter = true;
	if (letter)
	{
		if (!looks_like_bsuid(start))
			PG_RETURN_NULL();
		elems[0] = CStringGetTextDatum(start);
		PG_RETURN_ARRAYTYPE_P(construct_array(elems, 1, TEXTOID, -1, false, TYPALIGN_INT));
	}
	if (!wa_normalize_phone(start, wa_default_country_code, e164))
		PG_RETURN_NULL();
	n = wa_phone_forms(e164, forms);
	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(forms[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* ----------
 * The checks of enqueue
 * ----------
 */

/*
 * The opt-out rule: is identifier (an E.164 number, or the raw "+digits"
 * of a number that cannot be normalized) opted out of everything, or of
 * marketing for a MARKETING template, or on Odoo's phone_blacklist?  Sets
 * *v (blocked, opted_out) and returns true when it is.
 */
bool
wa_recipient_opted_out(int32 account_id, const char *e164, const char *kind,
					   Datum payload, WaRecipientVerdict *v)
{
	Oid			t1[1] = {TEXTOID};
	Datum		values[2];
	SPIPlanPtr	plan;
	bool		all = false;
	bool		marketing = false;
	char	   *source = NULL;
	bool		is_template = strcmp(kind, "template") == 0;

	memset(v, 0, sizeof(*v));

	/*
	 * Opted out: one index probe of whatsapp.opt_out, then Odoo's
	 * phone_blacklist, read by odoo_read.c (never by SQL: Odoo's role owns
	 * that table).
	 */
	plan = wa_plan(&plan_recipient,
					"SELECT o.scope, o.source FROM whatsapp.opt_out o WHERE o.identifier = $1",
					1, t1);
	values[0] = CStringGetTextDatum(e164);
	wa_spi_check(spi_run(plan, values, NULL, true, 0), SPI_OK_SELECT, "opt-out lookup");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *scope = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (strcmp(scope, "all") == 0 && !all)
		{
			all = true;
			source = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		}
		else if (strcmp(scope, "marketing") == 0 && !all)
		{
			marketing = true;
			source = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		}
	}
	SPI_freetuptable(SPI_tuptable);
	if (!all && wa_odoo_blacklisted(e164, NULL))
	{
		all = true;
		source = "Odoo phone_blacklist";
	}

	if (all)
	{
		v->state = "blocked";
		v->failure_type = "opted_out";
		v->error_title = psprintf("recipient opted out of all messages (%s)", source);
		return true;
	}
	if (marketing && is_template)
	{
		Jsonb	   *j = DatumGetJsonbP(payload);
		char	   *name = wa_json_string(wa_json_object(&j->root, "template"), "name");
		Oid			t2[2] = {TEXTOID, INT4OID};

		if (name != NULL)
		{
			values[0] = CStringGetTextDatum(name);
			values[1] = Int32GetDatum(account_id);
			wa_spi_check(spi_run(wa_plan(&plan_marketing,
									   "SELECT 1 FROM whatsapp.templates t"
									   " WHERE t.name = $1 AND t.category = 'MARKETING'"
									   "   AND (t.account IS NULL OR t.account ="
									   "     (SELECT a.name FROM whatsapp.account a WHERE a.id = $2))"
									   " LIMIT 1", 2, t2),
							  values, NULL, true, 1),
					  SPI_OK_SELECT, "template category lookup");
			if (SPI_processed > 0)
			{
				v->state = "blocked";
				v->failure_type = "opted_out";
				v->error_title = psprintf("recipient opted out of marketing messages, and template \"%s\" is MARKETING (%s)",
										  name, source);
			}
			SPI_freetuptable(SPI_tuptable);
			if (v->state)
				return true;
		}
	}

	return false;
}

/*
 * A template Meta paused or disabled (status PAUSED or DISABLED in
 * whatsapp.templates: the account's own row, else the row for every
 * account) fails at enqueue, failure_type 'template', until Meta approves
 * it again.  Sets *v and returns true then.
 */
bool
wa_template_check(int32 account_id, Datum payload, WaRecipientVerdict *v)
{
	Jsonb	   *j = DatumGetJsonbP(payload);
	JsonbContainer *t = wa_json_object(&j->root, "template");
	char	   *name = wa_json_string(t, "name");
	char	   *language = wa_json_string(wa_json_object(t, "language"), "code");
	Oid			types[3] = {TEXTOID, TEXTOID, INT4OID};
	Datum		values[3];
	bool		blocked = false;

	if (name == NULL || language == NULL)
		return false;
	for (char *c = language; *c; c++)
		if (*c == '-')
			*c = '_';
	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(language);
	values[2] = Int32GetDatum(account_id);
	wa_spi_check(spi_run(wa_plan(&plan_template_status,
								 "SELECT t.status, t.updated_at FROM whatsapp.templates t"
								 " WHERE t.name = $1 AND t.language = $2"
								 "   AND (t.account IS NULL OR t.account ="
								 "     (SELECT a.name FROM whatsapp.account a WHERE a.id = $3))"
								 "   AND EXISTS (SELECT 1 FROM whatsapp.templates b"
								 "                WHERE b.name = $1 AND b.status IN ('PAUSED', 'DISABLED'))"
								 " ORDER BY t.account IS NULL LIMIT 1", 3, types),
						 values, NULL, true, 1),
				 SPI_OK_SELECT, "template status lookup");
	if (SPI_processed > 0)
	{
		char	   *status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (status != NULL && (strcmp(status, "PAUSED") == 0 || strcmp(status, "DISABLED") == 0))
		{
			v->state = "failed";
			v->failure_type = "template";
			v->error_title = psprintf("template \"%s\" (%s) is %s by Meta since %s; not sent until Meta approves it again",
									  name, language, status,
									  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
			blocked = true;
		}
	}
	SPI_freetuptable(SPI_tuptable);
	return blocked;
}

void
wa_recipient_check(int32 account_id, const char *e164, const char *kind,
				   Datum payload, WaRecipientVerdict *v)
{
	bool		is_template = strcmp(kind, "template") == 0;
	Datum		values[2];

	if (wa_recipient_opted_out(account_id, e164, kind, payload, v))
		return;
	if (is_template && wa_template_check(account_id, payload, v))
		return;

	/* The 24-hour window, for free-form messages. */
	if (wa_window_check != WA_WINDOW_OFF && !is_template)
	{
		char		forms[4][WA_E164_MAXLEN + 1];
		Datum		elems[4];
		int			n = wa_phone_forms(e164, forms);
		Oid			t3[2] = {TEXTARRAYOID, INT4OID};
		bool		isnull;
		Datum		last;
		TimestampTz now = GetCurrentTransactionStartTimestamp();

		for (int i = 0; i < n; i++)
			elems[i] = CStringGetTextDatum(forms[i]);
		values[0] = PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[1] = Int32GetDatum(account_id);
		wa_spi_check(spi_run(wa_plan(&plan_window,
								   "SELECT pg_catalog.max(i.sent_at) FROM whatsapp.inbound_message i"
								   " WHERE i.phone = ANY ($1) AND i.account_id = $2", 2, t3),
						  values, NULL, true, 1),
				  SPI_OK_SELECT, "window lookup");
		last = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		SPI_freetuptable(SPI_tuptable);
		if (isnull || DatumGetTimestampTz(last) + WA_WINDOW_USECS <= now)
		{
			const char *when = isnull ? "never wrote to this account" :
				psprintf("last wrote to this account at %s",
						 timestamptz_to_str(DatumGetTimestampTz(last)));

			if (wa_window_check == WA_WINDOW_BLOCK)
			{
				v->state = "failed";
				v->failure_type = "whatsapp_unrecoverable";
				v->error_code = 131047;
				v->error_title = psprintf("outside the 24-hour customer service window (the recipient %s); only templates may be sent there, so it was not sent (whatsapp.window_check = block)",
										  when);
			}
			else
				ereport(WARNING,
						(errcode(ERRCODE_WARNING),
						 errmsg("%s is outside the 24-hour customer service window", e164),
						 errdetail("The recipient %s. Meta refuses free-form messages outside the window with error 131047.",
								   when),
						 errhint("Send a template with whatsapp.wa_send_template() instead, or set whatsapp.window_check to block to record such messages as failed without sending them.")));
		}
	}
}
