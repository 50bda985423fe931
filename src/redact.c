/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keep the secrets passed to wa_account_set out of the server log and
 *	  out of pg_stat_activity.
 *
 * A statement is "sensitive" when its text (debug_query_string) names
 * wa_account_set, or a word within two typing mistakes of it, so that a
 * misspelled call is covered too; an EXECUTE of a statement prepared with
 * such text counts as well.  While a sensitive statement runs:
 *
 * - the emit_log_hook hides the STATEMENT line, replaces the statement
 *	 text inside messages (log_statement's "statement: ...", the
 *	 "duration: ... statement: ..." of log_min_duration_statement, the
 *	 "execute <name>: ..." of the extended protocol) with a redacted call,
 *	 drops the "parameters: $1 = ..." detail of the extended protocol, and
 *	 replaces every string literal of the statement, and every double-
 *	 quoted value (type input errors quote their input), found in a
 *	 message, detail, hint or context with "***".  Messages raised by this
 *	 extension's own account code never contain a secret and are kept.
 * - the post_parse_analyze_hook, and the emit_log_hook on an ERROR, set
 *	 pg_stat_activity's query to the redacted call, so that neither a
 *	 running nor an idle backend shows the literal.
 *
 * The hooks exist only in processes that loaded the library.  With
 * shared_preload_libraries that is every backend, from its start.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include "access/xact.h"
#include "commands/prepare.h"
#include "lib/stringinfo.h"
#include "parser/analyze.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/memutils.h"
#include "utils/plancache.h"

/* What pg_stat_activity and the log show instead of a sensitive statement. */
#define WA_REDACTED_CALL	"SELECT whatsapp.wa_account_set(<redacted>)"
#define WA_REDACTED_VALUE	"***"

/* Literals shorter than this are not searched for: they are no secrets. */
#define WA_MIN_LITERAL_LEN	4

/* How deep to look for literals inside dollar-quoted bodies. */
#define WA_MAX_LITERAL_DEPTH 3

static const char wa_target[] = "wa_account_set";
#define WA_TARGET_LEN		((int) sizeof(wa_target) - 1)
#define WA_TARGET_MAX_EDITS 2

static bool hooks_installed = false;
static emit_log_hook_type prev_emit_log_hook = NULL;
static post_parse_analyze_hook_type prev_post_parse_analyze_hook = NULL;

/* A piece of the statement text: a string literal's contents. */
typedef struct Span
{
	const char *start;
	int			len;
} Span;

typedef struct SpanList
{
	Span	   *items;
	int			n;
	int			cap;
} SpanList;

static inline bool
is_ident_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_' || c == '$' || c >= 0x80;
}

/*
 * Is the word within WA_TARGET_MAX_EDITS insertions, deletions or
 * substitutions of "wa_account_set", ignoring case?  No allocation.
 */
static bool
word_near_target(const char *w, int len)
{
	int			prev[WA_TARGET_LEN + 1];
	int			cur[WA_TARGET_LEN + 1];

	if (len < WA_TARGET_LEN - WA_TARGET_MAX_EDITS ||
		len > WA_TARGET_LEN + WA_TARGET_MAX_EDITS)
		return false;
	for (int j = 0; j <= WA_TARGET_LEN; j++)
		prev[j] = j;
	for (int i = 1; i <= len; i++)
	{
		char		c = pg_ascii_tolower((unsigned char) w[i - 1]);
		int			rowmin;

		cur[0] = i;
		rowmin = cur[0];
		for (int j = 1; j <= WA_TARGET_LEN; j++)
		{
			int			best = prev[j] + 1;

			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			if (prev[j - 1] + (c == wa_target[j - 1] ? 0 : 1) < best)
				best = prev[j - 1] + (c == wa_target[j - 1] ? 0 : 1);
			cur[j] = best;
			if (best < rowmin)
				rowmin = best;
		}
		if (rowmin > WA_TARGET_MAX_EDITS)
			return false;
		memcpy(prev, cur, sizeof(prev));
	}
	return prev[WA_TARGET_LEN] <= WA_TARGET_MAX_EDITS;
}

/*
 * The text of the statement prepared (with PREPARE) under a name in this
 * session, or NULL.  Only reads the session's hash table.
 */
static const char *
prepared_statement_text(const char *name)
{
	PreparedStatement *ps = FetchPreparedStatement(name, false);

	if (ps == NULL || ps->plansource == NULL)
		return NULL;
	return ps->plansource->query_string;
}

/*
 * Does the text contain a word that is, or nearly is, wa_account_set?
 * With follow_execute, "EXECUTE name" also counts when the statement
 * prepared under that name does.
 */
static bool
mentions_account_set(const char *s, bool follow_execute)
{
	const unsigned char *p = (const unsigned char *) s;
	bool		after_execute = false;

	while (*p)
	{
		char		name[NAMEDATALEN];
		int			n = 0;
		bool		too_long = false;

		if (is_ident_char(*p))
		{
			const unsigned char *start = p;

			while (*p && is_ident_char(*p))
			{
				if (n < NAMEDATALEN - 1)
					name[n++] = pg_ascii_tolower(*p);
				else
					too_long = true;
				p++;
			}
			name[n] = '\0';
			if (word_near_target((const char *) start, p - start))
				return true;
		}
		else if (*p == '"' && after_execute)
		{
			/* a quoted statement name: case kept, "" is a quote */
			for (p++; *p; p++)
			{
				if (*p == '"')
				{
					if (p[1] != '"')
						break;
					p++;
				}
				if (n < NAMEDATALEN - 1)
					name[n++] = *p;
				else
					too_long = true;
			}
			if (*p)
				p++;
			name[n] = '\0';
		}
		else
		{
			if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
				after_execute = false;
			p++;
			continue;
		}

		if (after_execute && n > 0 && !too_long)
		{
			const char *prepared = prepared_statement_text(name);

			if (prepared != NULL && mentions_account_set(prepared, false))
				return true;
		}
		after_execute = follow_execute && !too_long && strcmp(name, "execute") == 0;
	}
	return false;
}

/*
 * Does the statement now running carry secrets for wa_account_set?
 *
 * The answer is kept for the current statement text: a string of many
 * statements is analyzed once per statement, and scanning it each time
 * would make that quadratic.  The text is recognized by its address, the
 * statement start time (set for each client message) and its beginning.
 */
static const char *sensitive_query = NULL;
static TimestampTz sensitive_ts = 0;
static char sensitive_prefix[256];
static bool sensitive_result = false;

static bool
statement_is_sensitive(void)
{
	const char *q = debug_query_string;
	TimestampTz ts;

	if (q == NULL || q[0] == '\0')
		return false;
	ts = GetCurrentStatementStartTimestamp();
	if (q == sensitive_query && ts == sensitive_ts &&
		strncmp(q, sensitive_prefix, sizeof(sensitive_prefix) - 1) == 0)
		return sensitive_result;

	sensitive_result = mentions_account_set(q, true);
	sensitive_query = q;
	sensitive_ts = ts;
	strlcpy(sensitive_prefix, q, sizeof(sensitive_prefix));
	return sensitive_result;
}

static void
add_span(SpanList *list, const char *start, int len)
{
	if (len < WA_MIN_LITERAL_LEN)
		return;
	if (list->n == list->cap)
	{
		list->cap = list->cap ? list->cap * 2 : 16;
		if (list->items == NULL)
			list->items = palloc(sizeof(Span) * list->cap);
		else
			list->items = repalloc(list->items, sizeof(Span) * list->cap);
	}
	list->items[list->n].start = start;
	list->items[list->n].len = len;
	list->n++;
}

/*
 * Collect the contents of the string literals of a statement text: quoted
 * strings ('' doubled, E'' with backslashes) and dollar-quoted bodies, and
 * the quoted strings inside those bodies (a DO block's).  Comments and
 * quoted identifiers are skipped.  This is a scanner, not a parser: it
 * errs on the side of finding more.
 */
static void
collect_literals(const char *q, int len, SpanList *list, int depth)
{
	int			i = 0;

	while (i < len)
	{
		char		c = q[i];

		if (c == '-' && i + 1 < len && q[i + 1] == '-')
		{
			while (i < len && q[i] != '\n')
				i++;
		}
		else if (c == '/' && i + 1 < len && q[i + 1] == '*')
		{
			int			nest = 1;

			i += 2;
			while (i < len && nest > 0)
			{
				if (q[i] == '/' && i + 1 < len && q[i + 1] == '*')
				{
					nest++;
					i += 2;
				}
				else if (q[i] == '*' && i + 1 < len && q[i + 1] == '/')
				{
					nest--;
					i += 2;
				}
				else
					i++;
			}
		}
		else if (c == '\'')
		{
			bool		backslashes = i > 0 && (q[i - 1] == 'E' || q[i - 1] == 'e') &&
				(i < 2 || !is_ident_char((unsigned char) q[i - 2]));
			int			start = ++i;

			while (i < len)
			{
				if (backslashes && q[i] == '\\' && i + 1 < len)
					i += 2;
				else if (q[i] == '\'' && i + 1 < len && q[i + 1] == '\'')
					i += 2;
				else if (q[i] == '\'')
					break;
				else
					i++;
			}
			add_span(list, q + start, Min(i, len) - start);
			i++;
		}
		else if (c == '"')
		{
			for (i++; i < len; i++)
			{
				if (q[i] == '"')
				{
					if (i + 1 < len && q[i + 1] == '"')
						i++;
					else
						break;
				}
			}
			i++;
		}
		else if (c == '$' && (i == 0 || !is_ident_char((unsigned char) q[i - 1])))
		{
			int			j = i + 1;

			/* $tag$: the tag is empty or an identifier not starting with a digit */
			if (j < len && q[j] != '$' &&
				!((q[j] >= 'a' && q[j] <= 'z') || (q[j] >= 'A' && q[j] <= 'Z') ||
				  q[j] == '_' || (unsigned char) q[j] >= 0x80))
			{
				i++;
				continue;
			}
			while (j < len && q[j] != '$' && is_ident_char((unsigned char) q[j]))
				j++;
			if (j < len && q[j] == '$')
			{
				int			taglen = j - i + 1;
				int			body = j + 1;
				int			k = body;

				while (k + taglen <= len && memcmp(q + k, q + i, taglen) != 0)
					k++;
				if (k + taglen > len)
					k = len;
				add_span(list, q + body, k - body);
				if (depth < WA_MAX_LITERAL_DEPTH)
					collect_literals(q + body, k - body, list, depth + 1);
				i = k + taglen;
			}
			else
				i = j;
		}
		else
			i++;
	}
}

/*
 * Append "in" to buf with every literal of "lits" replaced by "***" and,
 * if quoted_values, every double-quoted stretch by "***" in quotes.
 */
static void
append_redacted(StringInfo buf, const char *in, int len,
				const SpanList *lits, bool quoted_values)
{
	int			i = 0;

	while (i < len)
	{
		int			best = 0;

		for (int k = 0; k < lits->n; k++)
		{
			const Span *sp = &lits->items[k];

			if (sp->len > best && sp->len <= len - i &&
				memcmp(in + i, sp->start, sp->len) == 0)
				best = sp->len;
		}
		if (best > 0)
		{
			appendStringInfoString(buf, WA_REDACTED_VALUE);
			i += best;
			continue;
		}
		if (quoted_values && in[i] == '"')
		{
			const char *close = memchr(in + i + 1, '"', len - i - 1);

			appendStringInfoString(buf, "\"" WA_REDACTED_VALUE "\"");
			if (close == NULL)
				break;
			i = close - in + 1;
			continue;
		}
		appendStringInfoChar(buf, in[i]);
		i++;
	}
}

/*
 * The redacted form of a message: the statement text, wherever it
 * appears whole, becomes the redacted call; the rest is redacted piece by
 * piece.  Returns a new string, or NULL for NULL.
 */
static char *
redact_message(const char *in, const SpanList *lits, bool quoted_values)
{
	StringInfoData buf;
	const char *q = debug_query_string;
	int			qlen = strlen(q);
	const char *p = in;

	if (in == NULL)
		return NULL;
	initStringInfo(&buf);
	for (;;)
	{
		const char *hit = qlen > 0 ? strstr(p, q) : NULL;

		if (hit == NULL)
		{
			append_redacted(&buf, p, strlen(p), lits, quoted_values);
			break;
		}
		append_redacted(&buf, p, hit - p, lits, quoted_values);
		appendStringInfoString(&buf, WA_REDACTED_CALL);
		p = hit + qlen;
	}
	return buf.data;
}

/* Do these lines list bind parameters ("parameters: $1 = '...'")? */
static bool
lists_parameters(const char *s)
{
	return s != NULL &&
		(strncmp(s, "parameters: ", 12) == 0 || strstr(s, "$1 = ") != NULL);
}

/*
 * The redacted form of a context: each line redacted, and a line listing
 * bind parameters cut where the list starts.
 */
static char *
redact_context(const char *in, const SpanList *lits)
{
	StringInfoData buf;
	const char *p = in;

	if (in == NULL)
		return NULL;
	initStringInfo(&buf);
	while (*p)
	{
		const char *eol = strchr(p, '\n');
		int			len = eol ? eol - p : (int) strlen(p);
		char	   *line = pnstrdup(p, len);
		char	   *params = strstr(line, "$1 = ");
		char	   *redacted;

		if (params != NULL)
			*params = '\0';
		redacted = redact_message(line, lits, true);
		appendStringInfoString(&buf, redacted);
		if (params != NULL)
			appendStringInfoString(&buf, "<redacted>");
		pfree(redacted);
		pfree(line);
		if (eol == NULL)
			break;
		appendStringInfoChar(&buf, '\n');
		p = eol + 1;
	}
	return buf.data;
}

/*
 * Messages this extension's account code raises never contain a secret
 * (they are written not to), and the key file path or account name they
 * may quote is worth keeping.
 */
static bool
raised_by_account_code(const ErrorData *edata)
{
	const char *f = edata->filename;
	size_t		len;

	if (f == NULL)
		return false;
	len = strlen(f);
	return (len >= 10 && strcmp(f + len - 10, "accounts.c") == 0) ||
		(len >= 6 && strcmp(f + len - 6, "seal.c") == 0);
}

/*
 * Put a new string (or NULL) in an ErrorData field, freeing the old one:
 * for messages below ERROR, ErrorContext is not reset soon.
 */
static void
replace_field(char **field, char *newval)
{
	char	   *old = *field;

	*field = newval;
	if (old != NULL && old != newval)
		pfree(old);
}

static void
wa_emit_log_hook(ErrorData *edata)
{
	if (statement_is_sensitive())
	{
		MemoryContext oldcontext = MemoryContextSwitchTo(ErrorContext);
		SpanList	lits = {NULL, 0, 0};
		bool		trusted = raised_by_account_code(edata);

		collect_literals(debug_query_string, strlen(debug_query_string),
						 &lits, 0);

		edata->hide_stmt = true;
		replace_field(&edata->internalquery, NULL);
		edata->internalpos = 0;

		if (!trusted)
		{
			replace_field(&edata->message,
						  redact_message(edata->message, &lits, true));
			replace_field(&edata->hint,
						  redact_message(edata->hint, &lits, true));
		}
		else if (edata->message != NULL &&
				 strstr(edata->message, debug_query_string) != NULL)
			replace_field(&edata->message,
						  redact_message(edata->message, &lits, false));

		if (lists_parameters(edata->detail))
			replace_field(&edata->detail, NULL);
		else if (!trusted)
			replace_field(&edata->detail,
						  redact_message(edata->detail, &lits, true));
		if (lists_parameters(edata->detail_log))
			replace_field(&edata->detail_log, NULL);
		else if (!trusted)
			replace_field(&edata->detail_log,
						  redact_message(edata->detail_log, &lits, true));
		replace_field(&edata->context, redact_context(edata->context, &lits));

		if (lits.items != NULL)
			pfree(lits.items);

		/* An idle backend keeps showing its last query: not this one. */
		if (edata->elevel == ERROR)
			pgstat_report_activity(STATE_RUNNING, WA_REDACTED_CALL);

		MemoryContextSwitchTo(oldcontext);
	}

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

static void
wa_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	if (prev_post_parse_analyze_hook)
		prev_post_parse_analyze_hook(pstate, query, jstate);
	if (statement_is_sensitive())
		pgstat_report_activity(STATE_RUNNING, WA_REDACTED_CALL);
}

void
wa_redact_install_hooks(void)
{
	if (hooks_installed)
		return;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = wa_emit_log_hook;
	prev_post_parse_analyze_hook = post_parse_analyze_hook;
	post_parse_analyze_hook = wa_post_parse_analyze;
	hooks_installed = true;
}

void
wa_report_redacted_activity(const char *funcname)
{
	char		text[NAMEDATALEN + 64];

	snprintf(text, sizeof(text), "SELECT whatsapp.%s(<redacted>)", funcname);
	pgstat_report_activity(STATE_RUNNING, text);
}
