/*-------------------------------------------------------------------------
 *
 * cloudapi.c
 *	  Turn a finished Cloud API request into an outcome, following the
 *	  error table of the SPEC:
 *
 *	  130429, 80007, 4, HTTP 429	back off the whole account (Retry-After)
 *	  131056						back off that recipient, 4^n seconds
 *	  131000, 131016, 1, 2, 131057, 133004, 133015, HTTP 5xx,
 *	  timeouts, resets				retry, exponential backoff with jitter
 *	  131049						retry no sooner than 24 hours later
 *	  131050						fail (the user stopped marketing)
 *	  190, 0						pause the account, message stays queued
 *	  132xxx						fail as "template"
 *	  any other 4xx				fail at once
 *
 * Meta says to key on the error code, not on the HTTP status; the status
 * decides only when the body carries no code.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "cloudapi.h"
#include "jsonb_access.h"

#include <math.h>

#include "common/jsonapi.h"
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#define WA_MAX_BACKOFF_S	3600.0
#define WA_DAY_S			86400.0

/* Parse a response body into jsonb, or NULL when it is not JSON. */
static Jsonb *
parse_response(WaTransfer *t)
{
	JsonLexContext *lex;
	Jsonb	   *volatile result = NULL;
	MemoryContext ctx = CurrentMemoryContext;

	if (t->response.len == 0 || t->truncated)
		return NULL;
	if (pg_verify_mbstr(PG_UTF8, t->response.data, t->response.len, true) == false)
		return NULL;
	lex = WA_MAKE_JSON_LEX(t->response.data, t->response.len, PG_UTF8, true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return NULL;

	/* Valid JSON can still be refused by jsonb (\u0000, for one). */
	PG_TRY();
	{
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
													CStringGetDatum(t->response.data)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ctx);
		FlushErrorState();
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/* The first element of an array member, as an object. */
static JsonbContainer *
first_of(JsonbContainer *c, const char *key)
{
	JsonbContainer *arr = wa_json_array(c, key);

	if (arr == NULL || JsonContainerSize(arr) == 0)
		return NULL;
	return wa_json_container(getIthJsonbValueFromContainer(arr, 0), true);
}

/* Exponential backoff with jitter: about 2^(attempt-1) seconds. */
static double
backoff_delay(int attempt)
{
	double		base = pow(2.0, Max(attempt - 1, 0));

	if (base > WA_MAX_BACKOFF_S)
		base = WA_MAX_BACKOFF_S;
	return base * (0.5 + pg_prng_double(&pg_global_prng_state));
}

static void
set_retry(WaOutcome *out, int attempt, int max_attempts, double delay,
		  const char *final_type)
{
	if (attempt >= max_attempts)
	{
		out->kind = WA_OUT_FAIL;
		out->failure_type = final_type;
	}
	else
	{
		out->kind = WA_OUT_RETRY;
		out->delay_s = delay;
	}
}

static bool
code_in(int code, const int *codes, int n)
{
	for (int i = 0; i < n; i++)
		if (codes[i] == code)
			return true;
	return false;
}

void
wa_classify(WaTransfer *t, int max_attempts, WaOutcome *out)
{
	static const int account_limit[] = {130429, 80007, 4};
	static const int transient[] = {131000, 131016, 1, 2, 131057, 133004, 133015};
	Jsonb	   *doc;
	JsonbContainer *root = NULL;
	JsonbContainer *err = NULL;

	memset(out, 0, sizeof(*out));
	out->counts_attempt = true;

	if (t->result != CURLE_OK)
	{
		const char *why = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result);

		out->log_message = psprintf("network: %s", why);
		out->title = pstrdup(curl_easy_strerror(t->result));
		set_retry(out, t->attempt, max_attempts, backoff_delay(t->attempt), "network");
		return;
	}

	doc = parse_response(t);
	if (doc != NULL && JB_ROOT_IS_OBJECT(doc))
	{
		root = &doc->root;
		err = wa_json_object(root, "error");
	}

	if (t->http_status == 200)
	{
		JsonbContainer *msg = first_of(root, "messages");
		JsonbContainer *contact = first_of(root, "contacts");

		out->kind = WA_OUT_SENT;
		out->wamid = wa_json_string(msg, "id");
		out->wa_id = wa_json_string(contact, "wa_id");
		if (out->wamid == NULL)
			out->log_message = pstrdup("accepted (HTTP 200) with a malformed answer: no message id");
		else
			out->log_message = psprintf("accepted: %s", out->wamid);
		return;
	}

	if (err != NULL)
	{
		JsonbContainer *data = wa_json_object(err, "error_data");

		out->has_code = wa_json_int(err, "code", &out->code);
		out->title = wa_json_string(err, "message");
		out->details = wa_json_string(data, "details");
		out->fbtrace_id = wa_json_string(err, "fbtrace_id");
	}
	if (out->has_code)
		out->log_message = psprintf("HTTP %ld, code %d: %s", t->http_status,
									out->code, out->title ? out->title : "");
	else
		out->log_message = psprintf("HTTP %ld%s", t->http_status,
									doc == NULL && t->response.len > 0 ?
									", answer is not JSON" : "");

	if (out->has_code && (out->code == 190 || out->code == 0))
	{
		out->kind = WA_OUT_PAUSE_ACCOUNT;
		out->counts_attempt = false;
		return;
	}
	if ((out->has_code && code_in(out->code, account_limit, lengthof(account_limit))) ||
		(!out->has_code && t->http_status == 429))
	{
		out->kind = WA_OUT_BACKOFF_ACCOUNT;
		out->counts_attempt = false;
		out->delay_s = t->retry_after >= 0 ? (double) t->retry_after :
			backoff_delay(t->attempt);
		return;
	}
	if (out->has_code && out->code == 131056)
	{
		/* pair rate limit: 4^n seconds for this recipient only */
		double		d = pow(4.0, Max(t->attempt - 1, 0));

		set_retry(out, t->attempt, max_attempts, Min(d, WA_MAX_BACKOFF_S),
				  "whatsapp_recoverable");
		return;
	}
	if (out->has_code && out->code == 131049)
	{
		set_retry(out, t->attempt, max_attempts, WA_DAY_S, "whatsapp_recoverable");
		return;
	}
	if ((out->has_code && code_in(out->code, transient, lengthof(transient))) ||
		t->http_status >= 500)
	{
		set_retry(out, t->attempt, max_attempts, backoff_delay(t->attempt),
				  "whatsapp_recoverable");
		return;
	}

	out->kind = WA_OUT_FAIL;
	if (out->has_code && out->code >= 132000 && out->code < 133000)
		out->failure_type = "template";
	else
		out->failure_type = "whatsapp_unrecoverable";
	if (!out->has_code && out->title == NULL)
		out->title = psprintf("HTTP %ld", t->http_status);
}
