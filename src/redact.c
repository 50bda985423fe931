/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keep the secrets passed to the functions that take one out of the
 *	  server log and out of pg_stat_activity: wa_account_set (tokens, app
 *	  secret, verify token) and wa_verify_webhook (the verify token of
 *	  Meta's handshake, which clients such as Odoo's controller write into
 *	  the statement text), wa_receive (a webhook payload: names, numbers
 *	  and message texts, which clients inline as a literal), and rows
 *	  written to whatsapp.account_input.
 *
 * A statement is "sensitive" when its text (debug_query_string) names one
 * of these functions or account_input, or a word within two typing
 * mistakes of one (case ignored), so that a misspelled call is covered
 * too; an EXECUTE of a statement prepared with such text counts as well.
 * The redacted call shown for it names what matched, as in
 * "SELECT whatsapp.wa_verify_webhook(<redacted>)" or
 * "COPY whatsapp.account_input <redacted>".  This is a scan of the
 * statement's text, so it cannot see a name spelled another way (a
 * U&"..." identifier with escapes, a name assembled by dynamic SQL) or a
 * call made inside a function of the caller's own; the README lists
 * those, and COPY into whatsapp.account_input is the way that needs no
 * redaction.  While a sensitive statement runs:
 *
 * - the emit_log_hook hides the STATEMENT line, replaces the statement
 *	 text inside messages (log_statement's "statement: ...", the
 *	 "duration: ... statement: ..." of log_min_duration_statement, the
 *	 "execute <name>: ..." of the extended protocol) with a redacted call,
 *	 drops the "parameters: $1 = ..." detail of the extended protocol, and
 *	 replaces every string literal of the statement, and every double-
 *	 quoted value (type input errors quote their input), found in a
 *	 message, detail, hint or context with "***".  A context line of COPY
 *	 ("COPY account_input, line 2: "..."", which quotes the line or the
 *	 column's value) keeps its line number and loses the quote.  Messages
 *	 raised by this extension's own account code never contain a secret
 *	 and are kept.
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

#define WA_REDACTED_VALUE	"***"

/* Literals shorter than this are not searched for: they are no secrets. */
#define WA_MIN_LITERAL_LEN	4

/* How deep to look for literals inside dollar-quoted bodies. */
#define WA_MAX_LITERAL_DEPTH 3

/*
 * The functions (and the relation) whose use is sensitive, and what
 * pg_stat_activity and the log show instead of a statement that names
 * one: redacted_copy for a statement that starts with COPY, when set,
 * else redacted_call.  Names are lower case, and shorter than NAMEDATALEN.
 */
typedef struct WaTarget
{
	const char *name;
	int			len;
	const char *redacted_call;
	const char *redacted_copy;
} WaTarget;

#define WA_TARGET(fn) \
	{ fn, (int) sizeof(fn) - 1, "SELECT whatsapp." fn "(<redacted>)", NULL }

static const WaTarget wa_targets[] = {
	WA_TARGET("wa_account_set"),
	WA_TARGET("wa_verify_webhook"),
	WA_TARGET("wa_receive"),
	{"account_input", (int) sizeof("account_input") - 1,
		"INSERT INTO whatsapp.account_input <redacted>",
	"COPY whatsapp.account_input <redacted>"},
};

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
 * substitutions of the target's name, ignoring case?  A word whose length
 * alone rules it out costs two comparisons.  No allocation: the two rows
 * of the distance table live on the stack.
 */
static bool
word_near_target(const char *w, int len, const WaTarget *target)
{
	const char *t = target->name;
	int			tlen = target->len;
	int			rows[2][NAMEDATALEN];
	int		   *prev = rows[0];
	int		   *cur = rows[1];

	Assert(tlen < NAMEDATALEN);
	if (len < tlen - WA_TARGET_MAX_EDITS || len > tlen + WA_TARGET_MAX_EDITS)
		return false;
	for (int j = 0; j <= tlen; j++)
		prev[j] = j;
	for (int i = 1; i <= len; i++)
	{
		char		c = pg_ascii_tolower((unsigned char) w[i - 1]);
		int			rowmin;
		int		   *swap;

		cur[0] = i;
		rowmin = cur[0];
		for (int j = 1; j <= tlen; j++)
		{
			int			best = prev[j] + 1;
			int			subst = prev[j - 1] + (c == t[j - 1] ? 0 : 1);

			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			if (subst < best)
				best = subst;
			cur[j] = best;
			if (best < rowmin)
				rowmin = best;
		}
		if (rowmin > WA_TARGET_MAX_EDITS)
			return false;
		swap = prev;
		prev = cur;
		cur = swap;
	}
	return prev[tlen] <= WA_TARGET_MAX_EDITS;
}

/* The target the word is, or nearly is; NULL for none. */
static const WaTarget *
word_target(const char *w, int len)
{
	for (int k = 0; k < (int) lengthof(wa_targets); k++)
	{
		if (word_near_target(w, len, &wa_targets[k]))
			return &wa_targets[k];
	}
	return NULL;
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
 * The first target that the text names, or nearly names, in a word; NULL
 * for none.  With follow_execute, "EXECUTE name" also counts when the
 * statement prepared under that name names one.
 */
static const WaTarget *
mentioned_target(const char *s, bool follow_execute)
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
			const WaTarget *target;

			while (*p && is_ident_char(*p))
			{
				if (n < NAMEDATALEN - 1)
					name[n++] = pg_ascii_tolower(*p);
				else
					too_long = true;
				p++;
			}
			name[n] = '\0';
			target = word_target((const char *) start, p - start);
			if (target != NULL)
				return target;
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

			if (prepared != NULL)
			{
				const WaTarget *target = mentioned_target(prepared, false);

				if (target != NULL)
					return target;
			}
		}
		after_execute = follow_execute && !too_long && strcmp(name, "execute") == 0;
	}
	return NULL;
}

/*
 * The target whose secrets the statement now running may carry, or NULL
 * when it is not sensitive.
 *
 * The answer is kept for the current statement text: a string of many
 * statements is analyzed once per statement, and scanning it each time
 * would make that quadratic.  The text is recognized by its address, the
 * statement start time (set for each client message) and its beginning.
 */
static const char *sensitive_query = NULL;
static TimestampTz sensitive_ts = 0;
static char sensitive_prefix[256];
static const WaTarget *sensitive_result = NULL;
static const char *sensitive_call = NULL;

/* Does the statement text start with the word COPY (after blanks)? */
static bool
starts_with_copy(const char *q)
{
	while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
		q++;
	return pg_strncasecmp(q, "copy", 4) == 0 &&
		!is_ident_char((unsigned char) q[4]);
}

/*
 * The target whose secrets the statement now running may carry, or NULL
 * when it is not sensitive; *call is set to the redacted text to show for
 * it.
 */
static const WaTarget *
sensitive_statement_target(const char **call)
{
	const char *q = debug_query_string;
	TimestampTz ts;

	if (q == NULL || q[0] == '\0')
		return NULL;
	ts = GetCurrentStatementStartTimestamp();
	if (q != sensitive_query || ts != sensitive_ts ||
		strncmp(q, sensitive_prefix, sizeof(sensitive_prefix) - 1) != 0)
	{
		sensitive_result = mentioned_target(q, true);
		sensitive_call = NULL;
		if (sensitive_result != NULL)
			sensitive_call = (sensitive_result->redacted_copy != NULL &&
							  starts_with_copy(q)) ?
				sensitive_result->redacted_copy :
				sensitive_result->redacted_call;
		sensitive_query = q;
		sensitive_ts = ts;
		strlcpy(sensitive_prefix, q, sizeof(sensitive_prefix));
	}
	*call = sensitive_call;
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
 * appears whole, becomes the redacted call "call"; the rest is redacted
 * piece by piece.  Returns a new string, or NULL for NULL.
 */
static char *
redact_message(const char *in, const char *call, const SpanList *lits,
			   bool quoted_values)
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
		appendStringInfoString(&buf, call);
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
 * Where to cut a context line of COPY so that it keeps its place and
 * loses its data: COPY's error context callback quotes the line being
 * read, "COPY account_input, line 2: "..."", or the value of a column,
 * "COPY account_input, line 2, column max_mps: "..."".  Returns NULL for
 * a line of another kind.
 */
static char *
copy_context_cut(char *line)
{
	char	   *p;

	if (strncmp(line, "COPY ", 5) != 0 ||
		(p = strstr(line, ", line ")) == NULL)
		return NULL;
	p += 7;
	if (*p < '0' || *p > '9')
		return NULL;
	while (*p >= '0' && *p <= '9')
		p++;
	if (strncmp(p, ", column ", 9) == 0)
		return strstr(p, ": \"");
	if (strncmp(p, ": \"", 3) == 0)
		return p;
	return NULL;
}

/*
 * The redacted form of a context: each line redacted, a line listing
 * bind parameters cut where the list starts, and a line of COPY cut
 * before the data it quotes.
 */
static char *
redact_context(const char *in, const char *call, const SpanList *lits)
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
		char	   *copy_data = copy_context_cut(line);
		char	   *redacted;

		if (copy_data != NULL)
			*copy_data = '\0';
		if (params != NULL)
			*params = '\0';
		redacted = redact_message(line, call, lits, true);
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
 * A message of COPY that quotes only the name of one of the target
 * relation's own columns ("missing data for column "app_secret"", for a
 * line with too few fields), never data: kept, as the column is what the
 * admin has to fix.  Recognized by its untranslated format.
 */
static bool
quotes_only_a_column(const ErrorData *edata)
{
	return edata->message_id != NULL &&
		strcmp(edata->message_id, "missing data for column \"%s\"") == 0;
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
	const char *call = NULL;
	const WaTarget *target = sensitive_statement_target(&call);

	if (target != NULL)
	{
		MemoryContext oldcontext = MemoryContextSwitchTo(ErrorContext);
		SpanList	lits = {NULL, 0, 0};
		bool		trusted = raised_by_account_code(edata) ||
			quotes_only_a_column(edata);

		collect_literals(debug_query_string, strlen(debug_query_string),
						 &lits, 0);

		edata->hide_stmt = true;
		replace_field(&edata->internalquery, NULL);
		edata->internalpos = 0;

		if (!trusted)
		{
			replace_field(&edata->message,
						  redact_message(edata->message, call, &lits, true));
			replace_field(&edata->hint,
						  redact_message(edata->hint, call, &lits, true));
		}
		else if (edata->message != NULL &&
				 strstr(edata->message, debug_query_string) != NULL)
			replace_field(&edata->message,
						  redact_message(edata->message, call, &lits, false));

		if (lists_parameters(edata->detail))
			replace_field(&edata->detail, NULL);
		else if (!trusted)
			replace_field(&edata->detail,
						  redact_message(edata->detail, call, &lits, true));
		if (lists_parameters(edata->detail_log))
			replace_field(&edata->detail_log, NULL);
		else if (!trusted)
			replace_field(&edata->detail_log,
						  redact_message(edata->detail_log, call, &lits,
										 true));
		replace_field(&edata->context,
					  redact_context(edata->context, call, &lits));

		if (lits.items != NULL)
			pfree(lits.items);

		/* An idle backend keeps showing its last query: not this one. */
		if (edata->elevel == ERROR)
			pgstat_report_activity(STATE_RUNNING, call);

		MemoryContextSwitchTo(oldcontext);
	}

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

static void
wa_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	const char *call = NULL;

	if (prev_post_parse_analyze_hook)
		prev_post_parse_analyze_hook(pstate, query, jstate);
	if (sensitive_statement_target(&call) != NULL)
		pgstat_report_activity(STATE_RUNNING, call);
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
