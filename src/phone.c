/*-------------------------------------------------------------------------
 *
 * phone.c
 *	  Normalization of recipient phone numbers to E.164: a '+', the country
 *	  calling code and the national significant number (NSN), 8 to 15
 *	  digits in all.
 *
 * Why this is strict: the Cloud API prepends the *business's* own country
 * code to a recipient written without '+', so "1 (631) 555-1234" sent from
 * an Indian number goes to +91 16315551234, a stranger.  Every recipient
 * therefore leaves here as "+<digits>" or not at all, and whenever the
 * reading of a number is in doubt the answer is "invalid", never a guess.
 *
 * wa_normalize_phone() is a pure function: no allocation, no error, no
 * catalog access, one pass over the input plus a few dozen byte operations.
 * whatsapp.normalize_phone() is its SQL face.
 *
 * 1. Spelling.  Accepted between and around the digits: ASCII white space,
 *	  '.', '-', '/', one level of parentheses, and (UTF-8 only) no-break and
 *	  other Unicode spaces, Unicode hyphens and dashes, U+2212 minus, and the
 *	  invisible direction marks, joiners and BOM that copy and paste leaves
 *	  in.  Other non-ASCII bytes, and in a non-UTF-8 database every non-ASCII
 *	  byte, make the number invalid.  So do letters, '*', '#', ',', ';' and
 *	  everything else, including extensions ("ext. 12", "x12", "#12"): an
 *	  extension means a PBX, and the main line's WhatsApp account belongs to
 *	  someone else, so such a number is rejected rather than cut.
 *	  A '+' may only come before the first digit, preceded by nothing but
 *	  spaces or a '(' ("(+52) 55 ...").  A parenthesized group must hold at
 *	  least one digit and must be closed.  Inputs over 256 bytes, or with
 *	  more than 18 digits, are rejected without further checks.
 *
 * 2. International or national.  A number is international when it starts
 *	  with '+', with the international prefix "00", or, when the default
 *	  country code is 1, with the North American prefix "011".  Other
 *	  international prefixes (Japan's 010, Australia's 0011, Russia's 8~10)
 *	  are not recognized.  Brazil and Colombia dial abroad with "00" plus a
 *	  carrier code, so with default country 55 or 57 a number starting with
 *	  "00" is ambiguous and rejected.  Everything else is national and needs
 *	  a default country code; without one it is invalid.
 *
 * 3. Country code.  The digits after the prefix must start with an
 *	  assigned ITU-T country calling code (the list below; the codes are
 *	  prefix-free, so the first match is the only one).  Codes without
 *	  subscribers (800, 808, 878, 888, 979) count as unassigned.
 *	  The default country code, from the argument or the setting
 *	  whatsapp.default_country_code, is 1 to 3 digits with an optional
 *	  leading '+' and must be assigned too; otherwise national numbers are
 *	  invalid (the SQL function raises an error for a bad argument).
 *
 * 4. International numbers.  "(0)" right after the country code, the
 *	  trunk-prefix notation of "+44 (0)20 ...", is dropped; for the
 *	  countries of the table below, whose numbers never start with 0, so is
 *	  a plain stray 0 ("+49 030 ...").  Countries whose numbers may start
 *	  with 0 keep it: Italy (+39 06 ...), San Marino, Ivory Coast, Benin,
 *	  Gabon and Congo.  For other countries an NSN starting with 0 is
 *	  invalid.
 *
 * 5. National numbers.  The country's trunk prefix is removed: "0" by
 *	  default, "06" in Hungary, "8" in Russia and Kazakhstan, none in Italy
 *	  and the other keep-0 countries; a prefix is removed only when what
 *	  is left is a valid number.  When the national reading is invalid
 *	  and the digits start with the default country code, they are read
 *	  as an international number written without '+' ("525512345678" with
 *	  default 52, or a wa_id), but only for countries of the table, where
 *	  the national reading can be known to be impossible.
 *
 * 6. Country specifics.
 *	  - US, Canada and the rest of +1: NSN is NXX NXX XXXX (area code and
 *		exchange start with 2-9); national 10 digits, or 11 with a leading 1.
 *	  - Mexico (52): NSN 10 digits starting 2-9.  The old mobile form
 *		+52 1 + 10 digits becomes +52 + 10 digits; national 044 / 045 + 10
 *		digits, 01 + 10 digits and 1 + 10 digits drop the prefix.
 *	  - Brazil (55): 2-digit area code (no 0 in it) + 8 digits (first
 *		2-9) or + 9 digits starting with 9.  The ninth digit is neither
 *		added nor removed: both forms exist as WhatsApp identities and the
 *		Cloud API itself adjusts that digit.  National: trunk 0, or 0 and a
 *		2-digit carrier code ("0 21 11 91234-5678"), are removed.
 *	  - Argentina (54): area code + local number is 10 digits, the area
 *		code being 11 or 3 to 4 digits starting with 2 or 3; a mobile is
 *		+54 9 + those 10 digits, a landline +54 + 10 digits, and both stay
 *		as they are.  The national mobile form 0 + area + 15 + number loses
 *		the 0 and the 15 and gains the 9 (the area code's first digit
 *		decides where the 15 may be, and only one split leaves 10 digits);
 *		the same is done for "+54 area 15 number", a common mistake.
 *	  - Colombia (57): 10 digits, mobiles 3xx, landlines 60x.
 *	  - Italy (39): the leading 0 of landlines is part of the number and
 *		kept; NSN 6 to 11 digits starting with 0, 1, 3, 5, 8 or 9, mobiles
 *		(3xx) 9 to 11.  "+39 6 ..." (Rome without its 0) is invalid.
 *	  - Chile 9, Spain 9 (starting 6-9), Germany 6 to 13, and the NSN
 *		lengths of about forty more countries in the table.
 *	  Countries outside the table only get the E.164 bounds.
 *
 * 7. Lengths.  8 to 15 digits after '+', and for table countries the
 *	  table's NSN range.  A few real numbers are shorter than 8 digits
 *	  (Niue, Tokelau landlines); they are rejected.
 *
 * Left out on purpose: area-code tables (a number of the right shape in an
 * unused area passes), adding or removing Brazil's ninth digit or
 * Argentina's 9 beyond the rules above, letters standing for digits
 * ("1-800-FLOWERS"), "tel:" URIs, non-ASCII digits, and guessing a country
 * from the number itself when it has no '+' and no default applies.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"

/* Longer inputs are not phone numbers and are rejected unread (bytes). */
#define WA_PHONE_MAX_INPUT	256

/*
 * Digits beyond this many make a number invalid before any other check.
 * The longest accepted spellings have 18: "011" and 15 digits, or "00",
 * "(0)" and 15 digits.
 */
#define WA_PHONE_MAX_DIGITS 18

#define E164_MIN_DIGITS 8
#define E164_MAX_DIGITS 15

/* Digits as scanned, with what the spelling told about them. */
typedef struct PhoneScan
{
	char		digits[WA_PHONE_MAX_DIGITS];
	int			ndigits;
	bool		plus;			/* began with '+' */
	int			zero_group;		/* index of the digit of a "(0)", or -1 */
} PhoneScan;

/*
 * Assigned country calling codes (ITU-T E.164 list), sorted.  Values do not
 * collide across lengths since no code starts with 0.
 */
static const uint16 assigned_cc[] = {
	1, 7,
	20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49,
	51, 52, 53, 54, 55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66,
	81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
	211, 212, 213, 216, 218,
	220, 221, 222, 223, 224, 225, 226, 227, 228, 229,
	230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
	240, 241, 242, 243, 244, 245, 246, 247, 248, 249,
	250, 251, 252, 253, 254, 255, 256, 257, 258,
	260, 261, 262, 263, 264, 265, 266, 267, 268, 269,
	290, 291, 297, 298, 299,
	350, 351, 352, 353, 354, 355, 356, 357, 358, 359,
	370, 371, 372, 373, 374, 375, 376, 377, 378,
	380, 381, 382, 383, 385, 386, 387, 389,
	420, 421, 423,
	500, 501, 502, 503, 504, 505, 506, 507, 508, 509,
	590, 591, 592, 593, 594, 595, 596, 597, 598, 599,
	670, 672, 673, 674, 675, 676, 677, 678, 679,
	680, 681, 682, 683, 685, 686, 687, 688, 689,
	690, 691, 692,
	850, 852, 853, 855, 856, 870, 880, 881, 882, 883, 886,
	960, 961, 962, 963, 964, 965, 966, 967, 968,
	970, 971, 972, 973, 974, 975, 976, 977,
	992, 993, 994, 995, 996, 997, 998
};

/* How a country's numbers are handled beyond the table's lengths. */
typedef enum CountryKind
{
	CK_PLAIN = 0,
	CK_NANP,					/* +1: NXX NXX XXXX, national 1 prefix */
	CK_MX,						/* 52: old 1 / 044 / 045 / 01 prefixes */
	CK_BR,						/* 55: area code, ninth digit, carrier code */
	CK_AR,						/* 54: mobile 9, national 15 */
	CK_CO,						/* 57: 3xx mobiles, 60x landlines */
	CK_IT						/* 39: mobiles 3xx are 9 to 11 digits */
} CountryKind;

/* Bit d set in a first-digit mask: the NSN may begin with digit d. */
#define FD(d)		(1 << (d))
#define FD_ANY		0x3FF
#define FD_1_9		0x3FE
#define FD_2_9		0x3FC

typedef struct CountryRule
{
	uint16		cc;
	uint8		kind;			/* CountryKind */
	uint8		min_len;		/* NSN length range; 0: E.164 bounds only */
	uint8		max_len;
	uint16		first;			/* allowed first digits of the NSN */
	const char *trunk;			/* national prefix, NULL when none */
} CountryRule;

/*
 * Countries with known NSN lengths (min_len > 0), and the countries whose
 * numbers may begin with 0 (first digit mask includes 0).  Sorted by cc.
 */
static const CountryRule country_rules[] = {
	{1, CK_NANP, 10, 10, FD_2_9, "1"},	/* US, CA, Caribbean */
	{7, CK_PLAIN, 10, 10, FD(3) | FD(4) | FD(7) | FD(8) | FD(9), "8"},	/* RU, KZ */
	{20, CK_PLAIN, 8, 10, FD_1_9, "0"},	/* EG */
	{27, CK_PLAIN, 9, 9, FD_1_9, "0"},	/* ZA */
	{30, CK_PLAIN, 10, 10, FD(2) | FD(6) | FD(7) | FD(8) | FD(9), "0"},	/* GR */
	{31, CK_PLAIN, 9, 9, FD_1_9, "0"},	/* NL */
	{32, CK_PLAIN, 8, 9, FD_1_9, "0"},	/* BE */
	{33, CK_PLAIN, 9, 9, FD_1_9, "0"},	/* FR */
	{34, CK_PLAIN, 9, 9, FD(6) | FD(7) | FD(8) | FD(9), "0"},	/* ES */
	{36, CK_PLAIN, 8, 9, FD_1_9, "06"}, /* HU */
	{39, CK_IT, 6, 11, FD(0) | FD(1) | FD(3) | FD(5) | FD(8) | FD(9), NULL},	/* IT */
	{40, CK_PLAIN, 9, 9, FD(2) | FD(3) | FD(7) | FD(8) | FD(9), "0"},	/* RO */
	{41, CK_PLAIN, 9, 9, FD_2_9, "0"},	/* CH */
	{44, CK_PLAIN, 9, 10, FD(1) | FD(2) | FD(3) | FD(5) | FD(7) | FD(8) | FD(9), "0"},	/* GB */
	{45, CK_PLAIN, 8, 8, FD_2_9, "0"},	/* DK */
	{46, CK_PLAIN, 7, 9, FD_1_9, "0"},	/* SE */
	{47, CK_PLAIN, 8, 8, FD_2_9, "0"},	/* NO */
	{48, CK_PLAIN, 9, 9, FD_1_9, "0"},	/* PL */
	{49, CK_PLAIN, 6, 13, FD_1_9, "0"}, /* DE */
	{51, CK_PLAIN, 8, 9, FD_1_9, "0"},	/* PE */
	{52, CK_MX, 10, 10, FD_2_9, NULL},	/* MX */
	{53, CK_PLAIN, 8, 8, FD_2_9, "0"},	/* CU */
	{54, CK_AR, 10, 11, FD(1) | FD(2) | FD(3) | FD(9), "0"},	/* AR */
	{55, CK_BR, 10, 11, FD_1_9, "0"},	/* BR */
	{56, CK_PLAIN, 9, 9, FD_2_9, "0"},	/* CL */
	{57, CK_CO, 10, 10, FD(3) | FD(6), "0"},	/* CO */
	{58, CK_PLAIN, 10, 10, FD_2_9, "0"},	/* VE */
	{60, CK_PLAIN, 8, 10, FD_1_9, "0"}, /* MY */
	{61, CK_PLAIN, 9, 9, FD_1_9, "0"},	/* AU */
	{65, CK_PLAIN, 8, 8, FD(3) | FD(6) | FD(8) | FD(9), "0"},	/* SG */
	{66, CK_PLAIN, 8, 9, FD_1_9, "0"},	/* TH */
	{81, CK_PLAIN, 9, 10, FD_1_9, "0"}, /* JP */
	{82, CK_PLAIN, 8, 10, FD_1_9, "0"}, /* KR */
	{84, CK_PLAIN, 9, 10, FD_1_9, "0"}, /* VN */
	{90, CK_PLAIN, 10, 10, FD_2_9, "0"},	/* TR */
	{91, CK_PLAIN, 10, 10, FD_1_9, "0"},	/* IN */
	{212, CK_PLAIN, 9, 9, FD_1_9, "0"}, /* MA */
	{213, CK_PLAIN, 8, 9, FD_1_9, "0"}, /* DZ */
	{216, CK_PLAIN, 8, 8, FD_1_9, "0"},	/* TN */
	{225, CK_PLAIN, 0, 0, FD_ANY, NULL},	/* CI: numbers start with 0 */
	{229, CK_PLAIN, 0, 0, FD_ANY, NULL},	/* BJ: numbers start with 0 */
	{234, CK_PLAIN, 8, 10, FD_1_9, "0"},	/* NG */
	{241, CK_PLAIN, 0, 0, FD_ANY, NULL},	/* GA: numbers start with 0 */
	{242, CK_PLAIN, 0, 0, FD_ANY, NULL},	/* CG: numbers start with 0 */
	{254, CK_PLAIN, 9, 9, FD_1_9, "0"}, /* KE */
	{351, CK_PLAIN, 9, 9, FD_2_9, "0"},	/* PT */
	{353, CK_PLAIN, 7, 9, FD_1_9, "0"}, /* IE */
	{378, CK_PLAIN, 0, 0, FD_ANY, NULL},	/* SM: keeps the 0 like Italy */
	{380, CK_PLAIN, 9, 9, FD_1_9, "0"}, /* UA */
	{502, CK_PLAIN, 8, 8, FD_2_9, "0"},	/* GT */
	{503, CK_PLAIN, 8, 8, FD_2_9, "0"},	/* SV */
	{504, CK_PLAIN, 8, 8, FD_2_9, "0"},	/* HN */
	{505, CK_PLAIN, 8, 8, FD_2_9, "0"},	/* NI */
	{506, CK_PLAIN, 8, 8, FD_2_9, "0"},	/* CR */
	{507, CK_PLAIN, 7, 8, FD_1_9, "0"},	/* PA */
	{591, CK_PLAIN, 8, 8, FD_2_9, "0"}, /* BO */
	{593, CK_PLAIN, 8, 9, FD_2_9, "0"}, /* EC */
	{598, CK_PLAIN, 8, 8, FD_2_9, "0"}, /* UY */
	{966, CK_PLAIN, 9, 9, FD_1_9, "0"}, /* SA */
	{971, CK_PLAIN, 8, 9, FD_1_9, "0"}, /* AE */
	{972, CK_PLAIN, 8, 9, FD_1_9, "0"}	/* IL */
};

/* Any other assigned country: E.164 bounds, no leading 0, trunk 0. */
static const CountryRule plain_rule = {0, CK_PLAIN, 0, 0, FD_1_9, "0"};

static bool
cc_assigned(int code)
{
	int			lo = 0;
	int			hi = lengthof(assigned_cc) - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (assigned_cc[mid] == code)
			return true;
		if (assigned_cc[mid] < code)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

/*
 * Length (1 to 3) of the country calling code that digits d[0..n) begin
 * with, or 0 when they begin with none; *code receives its value.
 */
static int
cc_length(const char *d, int n, int *code)
{
	int			v = 0;

	for (int k = 1; k <= 3 && k <= n; k++)
	{
		v = v * 10 + (d[k - 1] - '0');
		if (v == 0)
			return 0;
		if (cc_assigned(v))
		{
			*code = v;
			return k;
		}
	}
	return 0;
}

static const CountryRule *
country_rule(int cc)
{
	int			lo = 0;
	int			hi = lengthof(country_rules) - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (country_rules[mid].cc == cc)
			return &country_rules[mid];
		if (country_rules[mid].cc < cc)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return &plain_rule;
}

/* Remove n digits at position at of d[0..len); returns the new length. */
static int
drop_digits(char *d, int len, int at, int n)
{
	memmove(d + at, d + at + n, len - at - n);
	return len - n;
}

/* Argentina: area code + local number, 10 digits. */
static bool
ar_area_number_valid(const char *d)
{
	if (d[0] == '1')
		return d[1] == '1';
	return d[0] == '2' || d[0] == '3';
}

/*
 * Is d[0..len) a valid NSN for the country of rule r, whose code has
 * cc_len digits?
 */
static bool
nsn_valid(const CountryRule *r, int cc_len, const char *d, int len)
{
	if (len < 1 || cc_len + len < E164_MIN_DIGITS || cc_len + len > E164_MAX_DIGITS)
		return false;
	if ((r->first & FD(d[0] - '0')) == 0)
		return false;
	if (r->min_len > 0 && (len < r->min_len || len > r->max_len))
		return false;

	switch ((CountryKind) r->kind)
	{
		case CK_NANP:
			/* area code and exchange both start with 2-9 */
			return d[3] >= '2';
		case CK_BR:
			if (d[0] == '0' || d[1] == '0')
				return false;	/* area codes have no 0 */
			if (len == 11)
				return d[2] == '9'; /* nine-digit numbers are mobiles */
			return d[2] >= '2';
		case CK_AR:
			if (len == 11)
				return d[0] == '9' && ar_area_number_valid(d + 1);
			return ar_area_number_valid(d);
		case CK_CO:
			return d[0] == '3' || (d[0] == '6' && d[1] == '0'); /* 3xx, 60x */
		case CK_IT:
			return d[0] != '3' || len >= 9;
		case CK_MX:
		case CK_PLAIN:
			break;
	}
	return true;
}

/*
 * Argentina: turn "area 15 number" (12 digits) into "9 area number"
 * (11 digits) in place.  The area code is 11, or 3 to 4 digits starting
 * with 2 or 3, so at most one split fits.  Returns the new length, or len
 * unchanged when no split fits.
 */
static int
ar_drop_15(char *d, int len)
{
	int			k;

	if (len != 12)
		return len;
	if (d[0] == '1')
		k = (d[2] == '1' && d[3] == '5') ? 2 : 0;
	else if (d[3] == '1' && d[4] == '5')
		k = 3;
	else if (d[4] == '1' && d[5] == '5')
		k = 4;
	else
		k = 0;
	if (k == 0)
		return len;

	len = drop_digits(d, len, k, 2);
	memmove(d + 1, d, len);
	d[0] = '9';
	return len + 1;
}

/* Argentina: the forms shared by national and international numbers. */
static int
ar_canonical(char *d, int len)
{
	if (len == 13 && d[0] == '9')
		len = drop_digits(d, len, 0, 1);	/* "9 area 15 number" */
	return ar_drop_15(d, len);
}

/*
 * The NSN d[0..len) of an international number: apply the country's
 * rewrites and check it.  Returns the new length, or -1 when invalid.
 */
static int
fix_international(const CountryRule *r, int cc_len, char *d, int len)
{
	/* a trunk 0 left in after the country code: "+49 030 ..." */
	if (r->min_len > 0 && len > 0 && d[0] == '0' && (r->first & FD(0)) == 0)
		len = drop_digits(d, len, 0, 1);

	switch ((CountryKind) r->kind)
	{
		case CK_MX:
			if (len == 11 && d[0] == '1')
				len = drop_digits(d, len, 0, 1);	/* +52 1: old mobile form */
			break;
		case CK_AR:
			len = ar_canonical(d, len);
			break;
		default:
			break;
	}

	return nsn_valid(r, cc_len, d, len) ? len : -1;
}

/*
 * The digits d[0..len) of a national number: remove national prefixes and
 * check.  Returns the new length, or -1 when invalid.
 */
static int
fix_national(const CountryRule *r, int cc_len, char *d, int len)
{
	switch ((CountryKind) r->kind)
	{
		case CK_NANP:
			if (len == 11 && d[0] == '1')
				len = drop_digits(d, len, 0, 1);
			break;
		case CK_MX:
			if (len == 13 && d[0] == '0' && d[1] == '4' &&
				(d[2] == '4' || d[2] == '5'))
				len = drop_digits(d, len, 0, 3);	/* 044 / 045 mobile */
			else if (len == 12 && d[0] == '0' && d[1] == '1')
				len = drop_digits(d, len, 0, 2);	/* 01 long distance */
			else if (len == 11 && d[0] == '1')
				len = drop_digits(d, len, 0, 1);	/* 1 mobile */
			break;
		case CK_BR:
			if (d[0] == '0')
			{
				if (len == 11 || len == 12)
					len = drop_digits(d, len, 0, 1);	/* trunk 0 */
				else if ((len == 13 || len == 14) && d[1] != '0')
					len = drop_digits(d, len, 0, 3);	/* 0 + carrier */
			}
			break;
		case CK_AR:
			if (d[0] == '0')
				len = drop_digits(d, len, 0, 1);
			len = ar_canonical(d, len);
			break;
		default:
			if (r->trunk != NULL)
			{
				int			tlen = strlen(r->trunk);

				if (len > tlen && memcmp(d, r->trunk, tlen) == 0 &&
					nsn_valid(r, cc_len, d + tlen, len - tlen))
					return drop_digits(d, len, 0, tlen);
			}
			break;
	}

	return nsn_valid(r, cc_len, d, len) ? len : -1;
}

/*
 * Length of the UTF-8 separator that p starts with (Unicode spaces,
 * dashes, direction marks, joiners, BOM), or 0.  *dash tells a dash.
 * p is NUL-terminated, so reading past a mismatch stops at the NUL.
 */
static int
utf8_separator(const unsigned char *p, bool *dash)
{
	*dash = false;
	if (p[0] == 0xC2 && p[1] == 0xA0)
		return 2;				/* U+00A0 no-break space */
	if (p[0] == 0xE2 && p[1] == 0x80)
	{
		if (p[2] >= 0x80 && p[2] <= 0x8B)
			return 3;			/* U+2000..U+200B spaces */
		if (p[2] == 0x8E || p[2] == 0x8F)
			return 3;			/* U+200E, U+200F direction marks */
		if (p[2] >= 0x90 && p[2] <= 0x95)
		{
			*dash = true;
			return 3;			/* U+2010..U+2015 hyphens and dashes */
		}
		if (p[2] >= 0xAA && p[2] <= 0xAF)
			return 3;			/* U+202A..U+202E embeddings, U+202F */
		return 0;
	}
	if (p[0] == 0xE2 && p[1] == 0x81 &&
		(p[2] == 0xA0 || (p[2] >= 0xA6 && p[2] <= 0xA9)))
		return 3;				/* U+2060 word joiner, U+2066..U+2069 */
	if (p[0] == 0xE2 && p[1] == 0x88 && p[2] == 0x92)
	{
		*dash = true;
		return 3;				/* U+2212 minus sign */
	}
	if (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80)
		return 3;				/* U+3000 ideographic space */
	if (p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
		return 3;				/* U+FEFF BOM */
	return 0;
}

/* Collect the digits of input, checking its spelling (section 1). */
static bool
scan_phone(const char *input, PhoneScan *s)
{
	const unsigned char *p = (const unsigned char *) input;
	bool		in_group = false;
	int			group_start = 0;
	bool		punct_seen = false; /* '.', '-', '/' or a dash so far */
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	s->ndigits = 0;
	s->plus = false;
	s->zero_group = -1;

	while (*p != '\0')
	{
		unsigned char c = *p;

		if (p - (const unsigned char *) input >= WA_PHONE_MAX_INPUT)
			return false;

		if (c >= '0' && c <= '9')
		{
			if (s->ndigits >= WA_PHONE_MAX_DIGITS)
				return false;
			s->digits[s->ndigits++] = (char) c;
			p++;
		}
		else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
				 c == '\v' || c == '\f')
			p++;
		else if (c == '.' || c == '-' || c == '/')
		{
			punct_seen = true;
			p++;
		}
		else if (c == '+')
		{
			if (s->plus || s->ndigits > 0 || punct_seen)
				return false;
			s->plus = true;
			p++;
		}
		else if (c == '(')
		{
			if (in_group)
				return false;
			in_group = true;
			group_start = s->ndigits;
			p++;
		}
		else if (c == ')')
		{
			int			n = s->ndigits - group_start;

			if (!in_group || n == 0)
				return false;
			if (n == 1 && s->digits[group_start] == '0' && s->zero_group < 0)
				s->zero_group = group_start;
			in_group = false;
			p++;
		}
		else if (c >= 0x80 && utf8)
		{
			bool		dash;
			int			n = utf8_separator(p, &dash);

			if (n == 0)
				return false;
			if (dash)
				punct_seen = true;
			p += n;
		}
		else
			return false;
	}

	return !in_group && s->ndigits > 0;
}

/* Write "+", the country code and the NSN into out. */
static bool
emit_e164(char *out, const char *cc, int cc_len, const char *nsn, int len)
{
	Assert(cc_len + len <= E164_MAX_DIGITS);
	out[0] = '+';
	memcpy(out + 1, cc, cc_len);
	memcpy(out + 1 + cc_len, nsn, len);
	out[1 + cc_len + len] = '\0';
	return true;
}

/* The digits of s from index start on are an international number. */
static bool
finish_international(const PhoneScan *s, int start, char *out)
{
	const char *d = s->digits + start;
	int			n = s->ndigits - start;
	int			cc;
	int			cc_len = cc_length(d, n, &cc);
	const CountryRule *r;
	char		nsn[WA_PHONE_MAX_DIGITS];
	int			len;

	if (cc_len == 0)
		return false;
	r = country_rule(cc);
	len = n - cc_len;
	memcpy(nsn, d + cc_len, len);

	/* "+44 (0)20 ...": the trunk prefix shown for national dialling */
	if (s->zero_group == start + cc_len && (r->first & FD(0)) == 0)
		len = drop_digits(nsn, len, 0, 1);

	len = fix_international(r, cc_len, nsn, len);
	if (len < 0)
		return false;
	return emit_e164(out, d, cc_len, nsn, len);
}

/*
 * Parse a default country code: optional '+', 1 to 3 digits, assigned.
 * Returns its length with the digits in digits[] and value in *code, or 0.
 */
static int
parse_default_cc(const char *default_cc, char *digits, int *code)
{
	const char *p = default_cc;
	int			len;
	int			found;

	if (p == NULL)
		return 0;
	if (*p == '+')
		p++;
	for (len = 0; p[len] >= '0' && p[len] <= '9'; len++)
	{
		if (len == 3)
			return 0;
		digits[len] = p[len];
	}
	if (p[len] != '\0' || len == 0)
		return 0;
	if (cc_length(digits, len, &found) != len)
		return 0;
	*code = found;
	return len;
}

char *
wa_phone_for_log(const char *number)
{
	char		tail[5];
	int			n = 0;

	if (number != NULL)
	{
		for (const char *p = number + strlen(number); p > number && n < 4;)
		{
			p--;
			if (*p >= '0' && *p <= '9')
				tail[3 - n++] = *p;
		}
	}
	if (n == 0)
		return pstrdup("a number without digits");
	tail[4] = '\0';
	return psprintf("number ending in %s", tail + 4 - n);
}

bool
wa_normalize_phone(const char *input, const char *default_cc, char *out)
{
	PhoneScan	s;
	char		cc_digits[3];
	int			cc = 0;
	int			cc_len;
	const CountryRule *r;
	char		nsn[WA_PHONE_MAX_DIGITS];
	int			len;

	out[0] = '\0';
	if (input == NULL || !scan_phone(input, &s))
		return false;

	cc_len = parse_default_cc(default_cc, cc_digits, &cc);

	/* international: '+', "00", or "011" in North America */
	if (s.plus)
		return finish_international(&s, 0, out);
	if (s.ndigits >= 2 && s.digits[0] == '0' && s.digits[1] == '0')
	{
		/* Brazil and Colombia dial "00" + carrier: ambiguous */
		if (cc == 55 || cc == 57)
			return false;
		return finish_international(&s, 2, out);
	}
	if (cc == 1 && s.ndigits >= 3 &&
		s.digits[0] == '0' && s.digits[1] == '1' && s.digits[2] == '1')
		return finish_international(&s, 3, out);

	/* national: never without a country code to put in front */
	if (cc_len == 0)
		return false;
	r = country_rule(cc);
	len = s.ndigits;
	memcpy(nsn, s.digits, len);
	len = fix_national(r, cc_len, nsn, len);
	if (len >= 0)
		return emit_e164(out, cc_digits, cc_len, nsn, len);

	/* the country code written without '+': "525512345678", a wa_id */
	if (r->min_len > 0 && s.ndigits > cc_len &&
		memcmp(s.digits, cc_digits, cc_len) == 0)
		return finish_international(&s, 0, out);

	return false;
}

/*
 * Check the country_code argument of whatsapp.normalize_phone(): an
 * optional '+' and an assigned code of 1 to 3 digits.  Returns the digits.
 */
static const char *
check_country_code_arg(text *arg)
{
	char	   *s = text_to_cstring(arg);
	const char *p = (*s == '+') ? s + 1 : s;
	size_t		len = strlen(p);
	int			code;

	if (len < 1 || len > 3 || strspn(p, "0123456789") != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid country calling code \"%s\"", s),
				 errdetail("A country calling code is 1 to 3 digits, optionally preceded by \"+\"."),
				 errhint("Pass the code of the phone number's country, such as \"52\" for Mexico, or NULL to use whatsapp.default_country_code.")));

	if (cc_length(p, (int) len, &code) != (int) len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("country calling code \"%s\" is not assigned to any country", s),
				 errhint("Pass the code of the phone number's country, such as \"52\" for Mexico, or NULL to use whatsapp.default_country_code.")));

	return p;
}

/*
 * whatsapp.normalize_phone(phone text, country_code text DEFAULT NULL)
 *		RETURNS text
 *
 * The E.164 form of phone, or NULL when it cannot be made one.  A national
 * number takes country_code, or whatsapp.default_country_code when that is
 * NULL.  Not strict: a NULL country_code means "use the setting".
 */
PG_FUNCTION_INFO_V1(wa_normalize_phone_sql);

Datum
wa_normalize_phone_sql(PG_FUNCTION_ARGS)
{
	text	   *phone;
	const char *cc;
	char		e164[WA_E164_MAXLEN + 1];

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();

	if (PG_ARGISNULL(1))
		cc = wa_default_country_code;
	else
		cc = check_country_code_arg(PG_GETARG_TEXT_PP(1));

	phone = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(phone) > WA_PHONE_MAX_INPUT)
		PG_RETURN_NULL();

	if (!wa_normalize_phone(text_to_cstring(phone), cc, e164))
		PG_RETURN_NULL();

	PG_RETURN_TEXT_P(cstring_to_text(e164));
}
