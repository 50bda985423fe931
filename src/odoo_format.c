/*-------------------------------------------------------------------------
 *
 * odoo_format.c
 *	  Formatting for the Odoo triggers, the way Odoo prints: amounts (the
 *	  currency's rounding and decimals, the language's separators and
 *	  grouping, the sign, the symbol and its no-break space), dates in the
 *	  language's date_format, language codes, and parameter text cleaned
 *	  for Meta.  Pure functions of their arguments: nothing here reads a
 *	  table.  The whatsapp._odoo_format_amount, _odoo_clean and
 *	  _odoo_format_date helpers expose them to the regression tests.
 *
 *-------------------------------------------------------------------------
 */
#include "odoo.h"

#include <math.h>

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

/* ----------
 * Text and amounts
 * ----------
 */

/* U+00A0 and U+FEFF in UTF-8; plain space and nothing elsewhere. */
static const char *
nbsp(void)
{
	return GetDatabaseEncoding() == PG_UTF8 ? "\xc2\xa0" : " ";
}

static const char *
zwnbsp(void)
{
	return GetDatabaseEncoding() == PG_UTF8 ? "\xef\xbb\xbf" : "";
}

/*
 * Parameters Meta accepts: no newline, tab or other control character,
 * and no run of spaces.  Returns a trimmed copy where every run of white
 * space and control characters is one space.
 */
static char *
clean_text(const char *s)
{
	StringInfoData b;
	bool		space = false;

	initStringInfo(&b);
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if (*p < 0x20 || *p == ' ' || *p == 0x7f)
		{
			space = true;
			continue;
		}
		if (space && b.len > 0)
			appendStringInfoChar(&b, ' ');
		space = false;
		appendStringInfoChar(&b, (char) *p);
	}
	return b.data;
}

/* non-empty after cleaning, or NULL */
char *
odoo_nonempty(const char *s)
{
	char	   *c;

	if (s == NULL)
		return NULL;
	c = clean_text(s);
	return c[0] == '\0' ? NULL : c;
}

/* "[3,0]" into counts; false when it is not a list of integers. */
static int
parse_grouping(const char *g, int *counts, int max)
{
	int			n = 0;
	const char *p = g;

	while (*p == ' ')
		p++;
	if (*p++ != '[')
		return -1;
	for (;;)
	{
		char	   *end;
		long		v;

		while (*p == ' ')
			p++;
		if (*p == ']' && n == 0)
			return 0;
		v = strtol(p, &end, 10);
		if (end == p || v < -1 || v > 64 || n >= max)
			return -1;
		counts[n++] = (int) v;
		p = end;
		while (*p == ' ')
			p++;
		if (*p == ']')
			return n;
		if (*p++ != ',')
			return -1;
	}
}

/*
 * Odoo's grouping: group sizes from the right; 0 repeats the previous size
 * to the end, -1 leaves the rest ungrouped, and whatever is left when the
 * list runs out is one more group.
 */
static void
append_grouped(StringInfo out, const char *digits, const char *grouping,
			   const char *sep)
{
	int			counts[16];
	int			n = grouping ? parse_grouping(grouping, counts, 16) : -1;
	int			len = strlen(digits);
	int			starts[64];
	int			ng = 0;
	int			end = len;
	int			saved = len;

	if (n < 0)
	{
		/* unreadable: Odoo's default, [3,0] */
		counts[0] = 3;
		counts[1] = 0;
		n = 2;
	}
	for (int i = 0; i < n && end > 0 && ng < 63; i++)
	{
		int			c = counts[i];

		if (c == -1)
			break;
		if (c == 0)
		{
			while (end > 0 && ng < 63)
			{
				end = saved >= end ? 0 : end - saved;
				starts[ng++] = end;
			}
			break;
		}
		end = c >= end ? 0 : end - c;
		starts[ng++] = end;
		saved = c;
	}
	if (end > 0)
		starts[ng++] = 0;
	/* starts[] holds group starts from the right; print from the left */
	for (int g = ng - 1; g >= 0; g--)
	{
		int			from = starts[g];
		int			to = g > 0 ? starts[g - 1] : len;

		if (g != ng - 1)
			appendStringInfoString(out, sep);
		appendBinaryStringInfo(out, digits + from, to - from);
	}
}

/* Spaces become no-break spaces, as Odoo prints amounts. */
static void
append_nbsp(StringInfo out, const char *s)
{
	for (; *s; s++)
	{
		if (*s == ' ')
			appendStringInfoString(out, nbsp());
		else
			appendStringInfoChar(out, *s);
	}
}

/* numeric as text, or NULL */
static char *
numeric_text(Numeric n)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)));
}

/*
 * An amount the way Odoo's format_amount prints it: rounded to the
 * currency's rounding, with its decimal places, the language's separators
 * and grouping, "-" followed by U+FEFF, and the symbol before or after
 * with a no-break space.  Returns NULL for NaN or infinite amounts.
 */
char *
odoo_format_amount(Numeric amount, int decimals, Numeric rounding,
				   const char *decimal_point, const char *thousands_sep,
				   const char *grouping, const char *symbol, const char *position)
{
	Datum		v = NumericGetDatum(amount);
	char	   *txt;
	char	   *dot;
	bool		negative = false;
	StringInfoData num;
	StringInfoData out;

	if (numeric_is_nan(amount) || numeric_is_inf(amount))
		return NULL;
	if (decimals < 0)
		decimals = 0;
	if (decimals > 12)
		decimals = 12;
	if (rounding != NULL && !numeric_is_nan(rounding) && !numeric_is_inf(rounding))
	{
		Datum		zero = DirectFunctionCall1(int4_numeric, Int32GetDatum(0));

		if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(rounding), zero)) > 0)
		{
			Datum		q = DirectFunctionCall2(numeric_div, v, NumericGetDatum(rounding));

			q = DirectFunctionCall2(numeric_round, q, Int32GetDatum(0));
			v = DirectFunctionCall2(numeric_mul, q, NumericGetDatum(rounding));
		}
	}
	v = DirectFunctionCall2(numeric_round, v, Int32GetDatum(decimals));
	txt = numeric_text(DatumGetNumeric(v));
	if (txt[0] == '-')
		txt++;

	/*
	 * The sign is the amount's, not the rounded one's: Odoo rounds a float
	 * with float_round, whose round() keeps the sign of a negative amount
	 * that rounds to zero (odoo/tools/float_utils.py), and "%.2f" prints
	 * that -0.0 as "-0.00".  Numeric has no negative zero, so an amount
	 * stored as exactly 0 prints "0.00" in both.
	 */
	negative = DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(amount),
												 DirectFunctionCall1(int4_numeric,
																	 Int32GetDatum(0)))) < 0;
	dot = strchr(txt, '.');
	if (dot)
		*dot = '\0';

	initStringInfo(&num);
	if (negative)
	{
		appendStringInfoChar(&num, '-');
		appendStringInfoString(&num, zwnbsp());
	}
	append_grouped(&num, txt, grouping, thousands_sep ? thousands_sep : ",");
	if (decimals > 0)
	{
		appendStringInfoString(&num, decimal_point ? decimal_point : ".");
		appendStringInfoString(&num, dot ? dot + 1 : "");
		for (int i = dot ? (int) strlen(dot + 1) : 0; i < decimals; i++)
			appendStringInfoChar(&num, '0');
	}

	/*
	 * format_amount (odoo/tools/misc.py) writes the no-break space whatever
	 * the symbol: "symbol + U+00A0" before, "U+00A0 + symbol" after, with
	 * an empty symbol ("currency.symbol or ''") too.  Any position but
	 * "before" puts it after.
	 */
	initStringInfo(&out);
	if (position != NULL && strcmp(position, "before") == 0)
	{
		appendStringInfoString(&out, symbol ? symbol : "");
		appendStringInfoString(&out, nbsp());
		append_nbsp(&out, num.data);
	}
	else
	{
		append_nbsp(&out, num.data);
		appendStringInfoString(&out, nbsp());
		appendStringInfoString(&out, symbol ? symbol : "");
	}
	return out.data;
}

/* Decimal places: the currency's, else from its rounding, else 2. */
int
odoo_currency_decimals(const char *decimal_places, Numeric rounding)
{
	if (decimal_places != NULL)
	{
		char	   *end;
		long		v = strtol(decimal_places, &end, 10);

		if (end != decimal_places && *end == '\0' && v >= 0 && v <= 12)
			return (int) v;
	}
	if (rounding != NULL && !numeric_is_nan(rounding) && !numeric_is_inf(rounding))
	{
		double		r = strtod(numeric_text(rounding), NULL);

		if (r > 0 && r < 1)
		{
			int			d = (int) ceil(log10(1.0 / r) - 1e-9);

			return d < 0 ? 0 : (d > 12 ? 12 : d);
		}
		if (r >= 1)
			return 0;
	}
	return 2;
}

/*
 * A date in the language's date_format (strftime style).  Directives
 * other than %d %m %Y %y %e %j and %% (month and day names need
 * translations) fall back to ISO 8601.
 */
char *
odoo_format_date(Timestamp ts, const char *fmt)
{
	struct pg_tm tm;
	fsec_t		fsec;
	StringInfoData b;

	if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		return NULL;
	if (fmt == NULL || fmt[0] == '\0')
		fmt = "%m/%d/%Y";
	initStringInfo(&b);
	for (const char *p = fmt; *p; p++)
	{
		if (*p != '%')
		{
			appendStringInfoChar(&b, *p);
			continue;
		}
		p++;
		switch (*p)
		{
			case 'd':
				appendStringInfo(&b, "%02d", tm.tm_mday);
				break;
			case 'e':
				appendStringInfo(&b, "%d", tm.tm_mday);
				break;
			case 'm':
				appendStringInfo(&b, "%02d", tm.tm_mon);
				break;
			case 'Y':
				appendStringInfo(&b, "%04d", tm.tm_year);
				break;
			case 'y':
				appendStringInfo(&b, "%02d", tm.tm_year % 100);
				break;
			case '%':
				appendStringInfoChar(&b, '%');
				break;
			default:
				resetStringInfo(&b);
				appendStringInfo(&b, "%04d-%02d-%02d", tm.tm_year, tm.tm_mon, tm.tm_mday);
				return b.data;
		}
	}
	return b.data;
}

/* ----------
 * Languages
 * ----------
 */

/* The shape enqueue.c accepts: ll, lll, ll_CC, ll_419, ... */
bool
odoo_language_ok(const char *s)
{
	int			letters = 0;
	int			rest = 0;
	const char *p = s;

	while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
		p++, letters++;
	if (letters < 2 || letters > 3)
		return false;
	if (*p == '\0')
		return true;
	if (*p++ != '_')
		return false;
	while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		   (*p >= '0' && *p <= '9'))
		p++, rest++;
	return *p == '\0' && rest >= 2 && rest <= 4;
}

/* "es-CO" → "es_CO"; trimmed */
char *
odoo_language_normalize(const char *s)
{
	char	   *c = clean_text(s);

	for (char *p = c; *p; p++)
		if (*p == '-')
			*p = '_';
	return c;
}

/* "es_CO" → "es", "sr@latin" → "sr"; NULL when there is none */
char *
odoo_language_base(const char *s)
{
	size_t		n = strcspn(s, "_@");

	if (s[n] == '\0')
		return NULL;
	return pnstrdup(s, n);
}

/* ----------
 * Helpers exposed for the tests (not granted to anyone)
 * ----------
 */
PG_FUNCTION_INFO_V1(wa_odoo_format_amount);

/*
 * whatsapp._odoo_format_amount(amount numeric, decimal_places integer,
 *		rounding numeric, decimal_point text, thousands_sep text,
 *		grouping text, symbol text, position text) RETURNS text
 */
Datum
wa_odoo_format_amount(PG_FUNCTION_ARGS)
{
	char	   *s;

#define OPT_TEXT(n) (PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n)))
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	s = odoo_format_amount(PG_GETARG_NUMERIC(0),
						   odoo_currency_decimals(PG_ARGISNULL(1) ? NULL :
										psprintf("%d", PG_GETARG_INT32(1)),
										PG_ARGISNULL(2) ? NULL : PG_GETARG_NUMERIC(2)),
						   PG_ARGISNULL(2) ? NULL : PG_GETARG_NUMERIC(2),
						   OPT_TEXT(3), OPT_TEXT(4), OPT_TEXT(5), OPT_TEXT(6), OPT_TEXT(7));
#undef OPT_TEXT
	if (s == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(s));
}

PG_FUNCTION_INFO_V1(wa_odoo_clean);

/* whatsapp._odoo_clean(value text) RETURNS text */
Datum
wa_odoo_clean(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(clean_text(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

PG_FUNCTION_INFO_V1(wa_odoo_format_date);

/* whatsapp._odoo_format_date(value timestamp, date_format text) RETURNS text */
Datum
wa_odoo_format_date(PG_FUNCTION_ARGS)
{
	char	   *s;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	s = odoo_format_date(PG_GETARG_TIMESTAMP(0),
						 PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (s == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(s));
}

