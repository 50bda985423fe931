/*-------------------------------------------------------------------------
 *
 * webhook.c
 *	  The receiving side's front: Meta's webhook handshake
 *	  (wa_verify_webhook), the signature and the envelope of the signed
 *	  payloads (wa_receive), their storage, and what the other parts share
 *	  (webhook.h).  Statuses are in webhook_status.c, inbound messages and
 *	  consent in webhook_inbound.c, account and template events in
 *	  webhook_account.c.
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
#include "webhook.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#define WA_EVP_MAC 1
#endif

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(wa_verify_webhook);
PG_FUNCTION_INFO_V1(wa_receive);
PG_FUNCTION_INFO_V1(wa_verify_signature_sql);
PG_FUNCTION_INFO_V1(wa_account_changed);

#define WA_SIG_PREFIX		"sha256="
#define WA_SIG_PREFIX_LEN	7
#define WA_SHA256_LEN		32

/* Notes kept per payload; more are counted. */
#define WA_MAX_NOTES		1000
/* Old payloads are purged once per this many, at most WA_PURGE_BATCH. */
#define WA_PURGE_EVERY		1024
#define WA_PURGE_BATCH		5000

/* Largest plausible Meta timestamp: 2100-01-01. */
#define WA_MAX_UNIX_TIME	INT64CONST(4102444800)

/* ----------
 * The cache of unsealed app secrets
 * ----------
 */
typedef struct CachedSecret
{
	int32		account_id;
	bytea	   *sealed;			/* the ciphertext it came from */
	char	   *key_id;
	char	   *secret;			/* NUL-terminated plaintext */
	size_t		len;
#ifdef WA_EVP_MAC
	EVP_MAC_CTX *mac;			/* HMAC-SHA256 keyed with it, copied per
								 * payload; NULL until first used */
#endif
} CachedSecret;

static CachedSecret *secret_cache = NULL;
static int	nsecret_cache = 0;
static int	secret_cache_cap = 0;
static bool secret_cache_exit_hook = false;

static SPIPlanPtr plan_log = NULL;
static SPIPlanPtr plan_accounts = NULL;
static SPIPlanPtr plan_store = NULL;
static SPIPlanPtr plan_store_plain = NULL;
static SPIPlanPtr plan_purge_payloads = NULL;
static uint32 payloads_stored = 0;	/* by this backend, for the purge */

/*
 * SPI leaves CurrentMemoryContext at its procedure context after each call;
 * these put the caller's back, so that per-item contexts keep working.
 */
int
wh_spi_run(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
		long count)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, count);

	MemoryContextSwitchTo(cxt);
	return rc;
}

/* A member that must be a JSON string (ids, kinds); NULL otherwise. */
char *
wh_jstrict(JsonbContainer *c, const char *key)
{
	JsonbValue *v = wa_json_member(c, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* The jsonb of an object member, or NULL. */
Jsonb *
wh_jsub(JsonbContainer *c, const char *key)
{
	JsonbValue *v = wa_json_member(c, key);

	if (wa_json_container(v, true) == NULL)
		return NULL;
	return JsonbValueToJsonb(v);
}

/* Element i of an array container as an object, or NULL. */
JsonbContainer *
wh_jelem_object(JsonbContainer *arr, uint32 i)
{
	return wa_json_container(getIthJsonbValueFromContainer(arr, i), true);
}

/* Meta's Unix seconds (string or number) as a timestamptz. */
bool
wh_jtimestamp(JsonbContainer *c, const char *key, TimestampTz *out)
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
bool
wh_usable_id(const char *s)
{
	return s != NULL && s[0] != '\0' && strlen(s) <= WA_MAX_ID_LEN;
}

bool
wh_all_digits(const char *s)
{
	return s && *s && strspn(s, "0123456789") == strlen(s);
}

/* ----------
 * Notes: the parts of a payload that were not applied
 * ----------
 */
void
wh_note(HookCtx *ctx, const char *fmt,...)
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
void
wh_log_event(int64 message_id, const char *event, bool has_code, int32 code,
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
	wa_spi_check(wh_spi_run(wa_plan(&plan_log,
										"INSERT INTO whatsapp.log (message_id, event, code, message)"
										" VALUES ($1, $2, $3, $4)", 4, types),
							   values, nulls, false, 0),
			  SPI_OK_INSERT, "log insert");
}

/* ----------
 * Secrets
 * ----------
 */
/* Wipe and free what a cache entry holds (OpenSSL cleanses its MAC). */
static void
forget_secret(CachedSecret *c)
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
#ifdef WA_EVP_MAC
	EVP_MAC_CTX_free(c->mac);
#endif
	memset(c, 0, sizeof(*c));
}

static void
wipe_secret_cache(int code, Datum arg)
{
	for (int i = 0; i < nsecret_cache; i++)
		forget_secret(&secret_cache[i]);
	nsecret_cache = 0;
}

/*
 * The app secret of an account, from the cache or unsealed.  Returns
 * WA_UNSEAL_OK and sets *secret (owned by the cache: never free it) and
 * *slot (its entry in secret_cache, valid until the next call).
 */
static WaUnsealResult
account_secret(HookAccount *a, const char **secret, size_t *len, int *slot)
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
		*slot = c - secret_cache;
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
		forget_secret(c);
		c->account_id = a->id;
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
	*slot = c - secret_cache;
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

/*
 * Every account, dropped ones included (statuses still match them).  The
 * display number (0.3) is read through to_jsonb, so that the worker's
 * _after_record works with older objects until ALTER EXTENSION UPDATE.
 */
void
wh_load_accounts(HookCtx *ctx)
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

	rc = wh_spi_run(wa_plan(&plan_accounts,
								   "SELECT id, name, phone_number_id, waba_id, dropped_at IS NOT NULL,"
								   "  app_secret, app_secret_key,"
								   "  pg_catalog.to_jsonb(a) OPERATOR(pg_catalog.->>) 'display_phone_number'"
								   " FROM whatsapp.account a ORDER BY id", 0, NULL),
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
bool
wh_signed_for(HookCtx *ctx, int i)
{
	return ctx->signer == NULL || ctx->signer[i];
}

/* The active account with this phone_number_id that signed, or NULL. */
HookAccount *
wh_active_account(HookCtx *ctx, const char *phone_number_id)
{
	if (phone_number_id == NULL)
		return NULL;
	for (int i = 0; i < ctx->naccounts; i++)
		if (!ctx->accounts[i].dropped && wh_signed_for(ctx, i) &&
			strcmp(ctx->accounts[i].phone_number_id, phone_number_id) == 0)
			return &ctx->accounts[i];
	return NULL;
}

/*
 * int4[] of the accounts whose messages a status with this phone_number_id
 * may match: the active ones that signed, and the dropped ones with that
 * number (their messages are that number's too).
 */
Datum
wh_account_ids_for(HookCtx *ctx, const char *phone_number_id, int *n)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(ctx->naccounts, 1));

	*n = 0;
	for (int i = 0; phone_number_id && i < ctx->naccounts; i++)
		if (strcmp(ctx->accounts[i].phone_number_id, phone_number_id) == 0 &&
			(ctx->accounts[i].dropped || wh_signed_for(ctx, i)))
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
				 errdetail("A signature is sha256= followed by 64 hexadecimal digits."),
				 errhint("Pass the request's X-Hub-Signature-256 header unchanged; X-Hub-Signature (SHA-1) is not accepted.")));
	if (len - WA_SIG_PREFIX_LEN != WA_SHA256_LEN * 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("webhook signature has the wrong length"),
				 errdetail("After sha256= a signature has 64 hexadecimal digits, not %d characters.",
						   len - WA_SIG_PREFIX_LEN),
				 errhint("Pass the request's X-Hub-Signature-256 header unchanged, without surrounding spaces.")));
	if (!wa_hex_decode(p + WA_SIG_PREFIX_LEN, WA_SHA256_LEN, digest))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("webhook signature is malformed"),
				 errdetail("A signature is sha256= followed by 64 hexadecimal digits."),
				 errhint("Pass the request's X-Hub-Signature-256 header unchanged.")));
}

#ifdef WA_EVP_MAC
/*
 * OpenSSL 3 looks an algorithm up by name on every one-shot HMAC() and
 * EVP_Digest() call (locks, a property query): about 4 of their 6 us per
 * payload here.  The algorithms are fetched once per process, and each app
 * secret's keyed HMAC context is copied for each payload.
 */
static EVP_MAC *hmac_alg = NULL;
static EVP_MD *sha256_alg = NULL;
static EVP_MD_CTX *sha256_ctx = NULL;
#endif

static void
hmac_failed(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("could not compute the HMAC-SHA256 of a webhook payload"),
			 errdetail("OpenSSL's HMAC failed."),
			 errhint("Check the OpenSSL library the server uses, for example whether a FIPS configuration forbids HMAC-SHA256.")));
}

/* HMAC-SHA256 of data under the cached secret in secret_cache[slot]. */
static void
hmac_sha256(int slot, const char *data, size_t len, uint8 *out)
{
	CachedSecret *c = &secret_cache[slot];
#ifdef WA_EVP_MAC
	EVP_MAC_CTX *ctx;
	size_t		outlen = 0;
	bool		ok;

	if (hmac_alg == NULL && (hmac_alg = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL)) == NULL)
		hmac_failed();
	if (c->mac == NULL)
	{
		OSSL_PARAM	params[2];

		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
													 (char *) "SHA256", 0);
		params[1] = OSSL_PARAM_construct_end();
		if ((c->mac = EVP_MAC_CTX_new(hmac_alg)) == NULL)
			hmac_failed();
		if (EVP_MAC_init(c->mac, (const unsigned char *) c->secret, c->len, params) != 1)
		{
			EVP_MAC_CTX_free(c->mac);
			c->mac = NULL;
			hmac_failed();
		}
	}
	if ((ctx = EVP_MAC_CTX_dup(c->mac)) == NULL)
		hmac_failed();
	ok = EVP_MAC_update(ctx, (const unsigned char *) data, len) == 1 &&
		EVP_MAC_final(ctx, out, &outlen, WA_SHA256_LEN) == 1 &&
		outlen == WA_SHA256_LEN;
	EVP_MAC_CTX_free(ctx);
	if (!ok)
		hmac_failed();
#else
	unsigned int outlen = 0;

	if (c->len > INT_MAX ||
		HMAC(EVP_sha256(), c->secret, (int) c->len, (const unsigned char *) data, len,
			 out, &outlen) == NULL || outlen != WA_SHA256_LEN)
		hmac_failed();
#endif
}

static void
sha256(const char *data, size_t len, uint8 *out)
{
	unsigned int outlen = 0;
	bool		ok;

#ifdef WA_EVP_MAC
	if (sha256_alg == NULL)
		sha256_alg = EVP_MD_fetch(NULL, OSSL_DIGEST_NAME_SHA2_256, NULL);
	if (sha256_ctx == NULL)
		sha256_ctx = EVP_MD_CTX_new();
	ok = sha256_alg != NULL && sha256_ctx != NULL &&
		EVP_DigestInit_ex(sha256_ctx, sha256_alg, NULL) == 1 &&
		EVP_DigestUpdate(sha256_ctx, data, len) == 1 &&
		EVP_DigestFinal_ex(sha256_ctx, out, &outlen) == 1;
#else
	ok = EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) == 1;
#endif
	if (!ok || outlen != WA_SHA256_LEN)
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
		int			slot;
		uint8		mac[WA_SHA256_LEN];
		bool		seen = false;
		WaUnsealResult r;

		if (a->dropped || a->sealed == NULL)
			continue;
		r = account_secret(a, &secret, &slen, &slot);
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

		hmac_sha256(slot, payload, len, mac);
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
				 edata->detail && strchr(edata->detail, '"') == NULL ?
				 errdetail("%s", edata->detail) :
				 errdetail("The JSON parser stopped at a token it could not read (not shown: a payload holds names, numbers and texts)."),
				 errhint("Pass the request body exactly as received; Meta posts JSON.")));
	if (doc == NULL)
		*why = pstrdup(edata->message);
	return doc;
}

/* ----------
 * The envelope
 * ----------
 */
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
		wh_note(ctx, "%s: errors is not an array", where);
		return;
	}
	for (uint32 i = 0; i < JsonContainerSize(arr); i++)
	{
		JsonbContainer *e = wh_jelem_object(arr, i);
		int32		code = 0;
		bool		has_code;
		char	   *title;
		char	   *details;

		if (e == NULL)
		{
			wh_note(ctx, "%s errors[%u] is not an object", where, i);
			continue;
		}
		has_code = wa_json_int(e, "code", &code);
		title = wa_json_string(e, "title");
		if (title == NULL)
			title = wa_json_string(e, "message");
		details = wa_json_string(wa_json_object(e, "error_data"), "details");
		wh_log_event(0, "webhook", has_code, code,
				  psprintf("error from Meta%s%s%s%s",
						   has_code ? psprintf(" %d", code) : "",
						   title ? ": " : "", title ? title : "",
						   details ? psprintf(" (%s)", details) : ""));
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
		if (wh_signed_for(ctx, i))
			return true;
		other = &ctx->accounts[i];
	}
	if (pnid == NULL)
		wh_note(ctx, "%s (field %s): no metadata.phone_number_id names the account; refused (%s)",
			 where, field, change_contents(value));
	else if (other != NULL)
		wh_note(ctx, "%s (field %s): phone_number_id %s is account \"%s\"'s, whose app secret did not sign this payload; refused (%s)",
			 where, field, pnid, other->name, change_contents(value));
	else
		wh_note(ctx, "%s (field %s): no active account has phone_number_id %.64s; refused (%s)",
			 where, field, pnid, change_contents(value));
	return false;
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
		wh_note(ctx, "%s is not an object", where);
		return;
	}
	field = wa_json_string(change, "field");
	value = wa_json_object(change, "value");
	if (field == NULL)
	{
		wh_note(ctx, "%s has no field", where);
		return;
	}
	if (value == NULL)
	{
		wh_note(ctx, "%s (field %.64s) has no object value", where, field);
		return;
	}
	pnid = wa_json_string(wa_json_object(value, "metadata"), "phone_number_id");

	if ((strcmp(field, "messages") == 0 || strcmp(field, "user_preferences") == 0) &&
		!change_allowed(ctx, value, pnid, field, where))
		return;
	if (strcmp(field, "messages") == 0)
	{
		wh_learn_display(ctx, value, pnid);
		if (wa_json_member(value, "statuses") == NULL && wa_json_member(value, "messages") == NULL &&
			wa_json_member(value, "errors") == NULL)
			wh_note(ctx, "%s: field messages without statuses, messages or errors", where);
		apply_errors(ctx, value, where);
		wh_apply_statuses(ctx, value, pnid, where);
		wh_apply_messages(ctx, value, pnid, where);
	}
	else if (strcmp(field, "user_preferences") == 0)
	{
		apply_errors(ctx, value, where);
		wh_apply_user_preferences(ctx, value, pnid, where);
	}
	else if (strcmp(field, "message_template_status_update") == 0)
		wh_apply_template_update(ctx, value, waba, field, "status", where);
	else if (strcmp(field, "template_category_update") == 0)
		wh_apply_template_update(ctx, value, waba, field, "category", where);
	else if (strcmp(field, "message_template_quality_update") == 0)
		wh_apply_template_update(ctx, value, waba, field, "quality", where);
	else if (strcmp(field, "account_update") == 0)
		wh_apply_account_update(ctx, value, waba, field, where);
	else if (strcmp(field, "phone_number_quality_update") == 0)
		wh_apply_quality_update(ctx, value, waba, field, where);
	else if (strcmp(field, "smb_message_echoes") == 0 ||
			 strcmp(field, "history") == 0 ||
			 strcmp(field, "smb_app_state_sync") == 0)
		wh_note(ctx, "%s: field %s is a Coexistence echo of the WhatsApp Business app: not inbound, not an opt-out",
			 where, field);
	else
	{
		apply_errors(ctx, value, where);
		wh_note(ctx, "%s: field %.64s is not handled", where, field);
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
		wh_note(ctx, "the payload is not a JSON object");
		return;
	}
	object = wa_json_string(root, "object");
	if (object == NULL || strcmp(object, "whatsapp_business_account") != 0)
	{
		wh_note(ctx, "object is %s%.64s%s, not \"whatsapp_business_account\": not a WhatsApp Business payload",
			 object ? "\"" : "", object ? object : "missing", object ? "\"" : "");
		return;
	}
	entries = wa_json_array(root, "entry");
	if (entries == NULL)
	{
		wh_note(ctx, "entry is missing or not an array");
		return;
	}
	/* The common case, one status alone, is applied and stored at once. */
	if (JsonContainerSize(entries) == 1)
	{
		JsonbContainer *changes = wa_json_array(wh_jelem_object(entries, 0), "changes");
		JsonbContainer *change = (changes && JsonContainerSize(changes) == 1) ?
		wh_jelem_object(changes, 0) : NULL;
		JsonbContainer *value = wa_json_object(change, "value");
		JsonbContainer *statuses = wa_json_array(value, "statuses");
		char	   *field = wh_jstrict(change, "field");

		ctx->single_status = field != NULL && strcmp(field, "messages") == 0 &&
			statuses != NULL && JsonContainerSize(statuses) == 1 &&
			wa_json_member(value, "messages") == NULL && wa_json_member(value, "errors") == NULL;
	}
	for (uint32 e = 0; e < JsonContainerSize(entries); e++)
	{
		JsonbContainer *entry = wh_jelem_object(entries, e);
		JsonbContainer *changes = wa_json_array(entry, "changes");
		char	   *waba = wa_json_string(entry, "id");

		if (!wh_jtimestamp(entry, "time", &ctx->entry_time))
			ctx->entry_time = ctx->now;
		if (changes == NULL)
		{
			wh_note(ctx, "entry[%u] has no changes array", e);
			continue;
		}
		for (uint32 c = 0; c < JsonContainerSize(changes); c++)
		{
			MemoryContextSwitchTo(ctx->item_cxt);
			apply_change(ctx, wh_jelem_object(changes, c), waba,
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
		wa_spi_check(wh_spi_run(wa_plan(&plan_store_plain,
									 "INSERT INTO whatsapp.webhook (account_id, payload, applied, ignored,"
									 "  digest, duplicate_of)"
									 " VALUES ($1, $2, $3, $4, $5, $6)", 6, types),
							 values, nulls, false, 0),
					 SPI_OK_INSERT, "storing the payload");
		return;
	}
	/* with notes: each is a whatsapp.log row too */
	wa_spi_check(wh_spi_run(wa_plan(&plan_store,
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
 *
 * Read straight from webhook_digest_idx with systable_beginscan, not with
 * a query: a statement of its own (plan check, executor start and end,
 * a sort for the lowest id) was a tenth of wa_receive's CPU time, for one
 * index probe.  It sees what a query run here would see: a snapshot taken
 * now at READ COMMITTED (the transaction's at REPEATABLE READ), after a
 * command counter increment, so this transaction's own earlier payloads
 * count too.  The table is our own and has no policy; wa_receive runs as
 * its owner.
 */
static int64
earlier_delivery(HookCtx *ctx)
{
	Oid			nsp = get_namespace_oid("whatsapp", false);
	Oid			relid = get_relname_relid("webhook", nsp);
	Oid			indexid = get_relname_relid("webhook_digest_idx", nsp);
	Relation	rel;
	TupleDesc	desc;
	AttrNumber	att_id = InvalidAttrNumber;
	AttrNumber	att_account = InvalidAttrNumber;
	AttrNumber	att_digest = InvalidAttrNumber;
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	int64		id = 0;

	if (!OidIsValid(relid) || !OidIsValid(indexid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("whatsapp.webhook or its index webhook_digest_idx is missing"),
				 errhint("Run ALTER EXTENSION whatsapp UPDATE.")));
	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (a->attisdropped)
			continue;
		if (strcmp(NameStr(a->attname), "id") == 0 && a->atttypid == INT8OID)
			att_id = a->attnum;
		else if (strcmp(NameStr(a->attname), "account_id") == 0 && a->atttypid == INT4OID)
			att_account = a->attnum;
		else if (strcmp(NameStr(a->attname), "digest") == 0 && a->atttypid == BYTEAOID)
			att_digest = a->attnum;
	}
	if (att_id == InvalidAttrNumber || att_account == InvalidAttrNumber ||
		att_digest == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("whatsapp.webhook lacks its id, account_id or digest column"),
				 errhint("Run ALTER EXTENSION whatsapp UPDATE.")));

	CommandCounterIncrement();
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();

	ScanKeyInit(&skey, att_digest, BTEqualStrategyNumber, F_BYTEAEQ,
				PointerGetDatum(ctx->digest));
	scan = systable_beginscan(rel, indexid, true, GetActiveSnapshot(), 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		account = heap_getattr(tup, att_account, desc, &isnull);
		int64		this_id;

		if (isnull)
			continue;
		for (int i = 0; i < ctx->naccounts; i++)
			if (ctx->signer[i] && ctx->accounts[i].id == DatumGetInt32(account))
			{
				this_id = DatumGetInt64(heap_getattr(tup, att_id, desc, &isnull));
				if (!isnull && (id == 0 || this_id < id))
					id = this_id;
				break;
			}
	}
	systable_endscan(scan);
	PopActiveSnapshot();
	table_close(rel, AccessShareLock);
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
	wa_spi_check(wh_spi_run(wa_plan(&plan_purge_payloads,
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
		JsonbContainer *entry = wh_jelem_object(entries, e);
		JsonbContainer *changes = wa_json_array(entry, "changes");
		char	   *waba = wa_json_string(entry, "id");

		for (uint32 c = 0; changes && c < JsonContainerSize(changes); c++)
		{
			JsonbContainer *value = wa_json_object(wh_jelem_object(changes, c), "value");
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

void
wh_begin(HookCtx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->now = GetCurrentTransactionStartTimestamp();
	ctx->stats = wa_stats_present();
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

	wh_begin(&ctx);
	ctx.payload = payload;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(call_cxt);
	wh_load_accounts(&ctx);
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
		wh_note(&ctx, "a redelivery of payload " INT64_FORMAT " (the same bytes): nothing applied again",
			 ctx.duplicate_of);
	else if (doc == NULL)
		wh_note(&ctx, "the payload is JSON that PostgreSQL's jsonb cannot hold (%s); nothing applied", why);
	else
	{
		if (ctx.nulls_replaced > 0)
			wh_note(&ctx, "%d \\u0000 escape%s (a NUL, which PostgreSQL's text cannot hold) replaced by U+FFFD before applying",
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
	wh_begin(&ctx);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(call_cxt);
	wh_load_accounts(&ctx);
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
