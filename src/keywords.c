/*-------------------------------------------------------------------------
 *
 * keywords.c
 *	  Keyword folding: the form in which opt-out and opt-in keywords are
 *	  stored and compared (whatsapp.fold_keyword): lower case, accents
 *	  removed, punctuation, symbols and emoji as spaces, spaces collapsed.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(wa_fold_keyword_sql);

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
