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
 * An HTTP 200 counts as sent only with a usable messages[0].id (the wamid
 * that statuses will name).  Without one it is retried like a 5xx, and
 * whatsapp.log keeps the start of the answer.  An answer over the size
 * caps of http.c was aborted: it is classified by its status alone.
 * Retry-After is honored up to WA_MAX_RETRY_AFTER_S.  Text taken from an
 * answer into a message row is cut at WA_ANSWER_TEXT_MAX bytes.
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
/* Longest Retry-After honored (seconds); a larger one is cut to this. */
#define WA_MAX_RETRY_AFTER_S 3600
/* Bytes of an unexpected answer quoted in whatsapp.log. */
#define WA_LOG_BODY_MAX		512
/* Longest title, details or fbtrace_id taken from an answer (bytes). */
#define WA_ANSWER_TEXT_MAX	1024
/* Longest wamid accepted as one; Meta's are about 60 characters. */
#define WA_WAMID_MAX		256

/* Parse a response body into jsonb, or NULL when it is not JSON. */
static Jsonb *
parse_response(WaTransfer *t)
{
	JsonLexContext *lex;
	Jsonb	   *volatile result = NULL;
	MemoryContext ctx = CurrentMemoryContext;

	if (t->response.len == 0 || t->oversize)
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

/*
 * The start of an answer, for whatsapp.log: at most WA_LOG_BODY_MAX bytes,
 * printable ASCII kept and every other byte written as \xNN, so that any
 * database encoding takes it.
 */
static char *
body_excerpt(WaTransfer *t)
{
	StringInfoData buf;
	int			n = Min(t->response.len, WA_LOG_BODY_MAX);

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) t->response.data[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			appendStringInfoChar(&buf, (char) c);
		else
			appendStringInfo(&buf, "\\x%02x", c);
	}
	if (t->oversize)
		appendStringInfo(&buf, "... (over %d bytes; not read further)", WA_HTTP_MAX_RESPONSE);
	else if (t->response.len > n)
		appendStringInfo(&buf, "... (%d bytes)", t->response.len);
	return buf.data;
}

/* Cut a string from an answer to WA_ANSWER_TEXT_MAX bytes, whole characters. */
static char *
clip(char *s)
{
	int			len;

	if (s == NULL)
		return NULL;
	len = strlen(s);
	if (len > WA_ANSWER_TEXT_MAX)
		s[pg_mbcliplen(s, len, WA_ANSWER_TEXT_MAX)] = '\0';
	return s;
}

/*
 * A wamid as Meta writes them: 1 to WA_WAMID_MAX visible ASCII characters.
 * Anything else could not be matched to statuses, or not even be indexed.
 */
static bool
usable_wamid(const char *s)
{
	int			len;

	if (s == NULL)
		return false;
	len = strlen(s);
	if (len == 0 || len > WA_WAMID_MAX)
		return false;
	for (int i = 0; i < len; i++)
		if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7f)
			return false;
	return true;
}

/* A wa_id is digits; anything else is dropped. */
static char *
usable_wa_id(char *s)
{
	int			len;

	if (s == NULL)
		return NULL;
	len = strlen(s);
	if (len == 0 || len > 32 || strspn(s, "0123456789") != (size_t) len)
		return NULL;
	return s;
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

	/* an answer aborted for its size still has its status */
	if (t->result != CURLE_OK && !(t->oversize && t->http_status > 0))
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
		char	   *wamid = wa_json_string(msg, "id");

		if (usable_wamid(wamid))
		{
			out->kind = WA_OUT_SENT;
			out->wamid = wamid;
			out->wa_id = usable_wa_id(wa_json_string(contact, "wa_id"));
			out->log_message = psprintf("accepted: %s", out->wamid);
			return;
		}

		/*
		 * No wamid that statuses could ever match: not taken as sent, but
		 * retried like a 5xx.  (Meta may have accepted it: a duplicate is
		 * possible, as after any answer that got lost.)
		 */
		out->title = t->oversize ?
			psprintf("HTTP 200 with an answer over %d bytes", WA_HTTP_MAX_RESPONSE) :
			pstrdup("HTTP 200 without messages[0].id");
		out->log_message = psprintf("%s; answer: %s", out->title, body_excerpt(t));
		set_retry(out, t->attempt, max_attempts, backoff_delay(t->attempt),
				  "whatsapp_recoverable");
		return;
	}

	if (err != NULL)
	{
		JsonbContainer *data = wa_json_object(err, "error_data");

		out->has_code = wa_json_int(err, "code", &out->code);
		out->title = clip(wa_json_string(err, "message"));
		out->details = clip(wa_json_string(data, "details"));
		out->fbtrace_id = clip(wa_json_string(err, "fbtrace_id"));
	}
	if (out->has_code)
		out->log_message = psprintf("HTTP %ld, code %d: %s", t->http_status,
									out->code, out->title ? out->title : "");
	else if (t->oversize)
		out->log_message = psprintf("HTTP %ld, answer over %d bytes: not read further; answer: %s",
									t->http_status, WA_HTTP_MAX_RESPONSE, body_excerpt(t));
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
		if (t->retry_after < 0)
			out->delay_s = backoff_delay(t->attempt);
		else if (t->retry_after > WA_MAX_RETRY_AFTER_S)
		{
			out->delay_s = WA_MAX_RETRY_AFTER_S;
			out->log_message = psprintf("%s; Retry-After %ld s cut to %d s",
										out->log_message, t->retry_after,
										WA_MAX_RETRY_AFTER_S);
		}
		else
			out->delay_s = (double) t->retry_after;
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
