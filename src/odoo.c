/*-------------------------------------------------------------------------
 *
 * odoo.c
 *	  Messages from Odoo's own tables: the trigger behind wa_odoo_enable,
 *	  wa_odoo_preview, and what both share, the rendering of one document
 *	  for one event.
 *
 * wa_odoo_enable (SQL) puts two constraint triggers per event on Odoo's
 * sale_order or account_move, DEFERRABLE INITIALLY DEFERRED: one for
 * INSERT, one for UPDATE, each with a WHEN clause that queues an event only
 * when the row enters the event's state.  The events fire at commit, where
 * this file reads the document again as it stands then: Odoo's ORM writes
 * a record in several UPDATEs (the state first, then the name and the
 * amounts), and only the committed values are worth sending.
 *
 * Rules of the road:
 *
 * - Never raise into Odoo's transaction because of data or configuration.
 *	 Every problem the trigger can meet (the account dropped, a column gone
 *	 after an Odoo upgrade, a partner without a name or a usable phone, no
 *	 portal token) is checked before it could fail and becomes a message in
 *	 state "failed" whose error_title says why.  No subtransactions.
 * - Never write to Odoo's tables, but for a document's missing
 *	 access_token, which Odoo's own portal.mixin would create on sharing:
 *	 written at commit as the table's owner (write_token, odoo_read.c).
 * - Never assume Odoo's version: which tables and columns exist, and with
 *	 what types, is read from the catalog.  A column that is missing or has
 *	 a type we cannot read counts as missing.  Odoo's tables live in schema
 *	 public.
 * - At most one message per document and event: the dedupe key
 *	 "sale.order:42:sale_order_confirmed" is taken by the first message,
 *	 whether it was queued or recorded as failed.
 *
 * Speed.  Most confirmations are transactions of their own, so what a
 * firing costs is mostly what starting queries costs.  The rows are
 * therefore read without SQL: each one by an index on its key (the
 * document by id, its partner by partner_id, ...) with systable_beginscan,
 * in a snapshot that sees the transaction's own writes.  Which tables,
 * columns and indexes exist is computed from the catalog once and again
 * after every catalog invalidation (syscache callbacks), under locks that
 * keep it true until commit.  Only a few statements remain, through SPI:
 * the INSERT of the message, and recipient.c's checks (the opt-out rule
 * reads whatsapp.opt_out by index in C and asks SQL only about a
 * marketing opt-out; a paused template is one query).
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"

#include <math.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

/* ----------
 * Events
 * ----------
 */
typedef enum OdooModel
{
	M_SALE_ORDER = 0,
	M_ACCOUNT_MOVE = 1
} OdooModel;

#define N_MODELS 2

typedef struct OdooEvent
{
	const char *name;
	OdooModel	model;
	const char *move_type;		/* account_move.move_type it needs */
	bool		needs_sent;		/* is_move_sent must be true */
} OdooEvent;

static const OdooEvent odoo_events[] = {
	{"sale_order_confirmed", M_SALE_ORDER, NULL, false},
	{"invoice_posted", M_ACCOUNT_MOVE, "out_invoice", false},
	{"refund_posted", M_ACCOUNT_MOVE, "out_refund", false},
	{"invoice_sent", M_ACCOUNT_MOVE, "out_invoice", true},
};

static const char *const model_table[N_MODELS] = {"sale_order", "account_move"};
static const char *const model_name[N_MODELS] = {"sale.order", "account.move"};
static const char *const model_portal[N_MODELS] = {"/my/orders/", "/my/invoices/"};

/* ----------
 * What we read from Odoo's catalog
 * ----------
 */
enum
{
	T_DOC, T_PARTNER, T_COMPANY, T_COUNTRY, T_CURRENCY, T_LANG, T_CONFIG,
	T_BLACKLIST, T_MODULE,
	T_COUNT
};

static const char *const table_names[T_COUNT] = {
	NULL,						/* the model's table */
	"res_partner", "res_company", "res_country", "res_currency", "res_lang",
	"ir_config_parameter", "phone_blacklist", "ir_module_module"
};

/* Tables without which no message can be rendered at all. */
static const bool table_required[T_COUNT] = {
	true, true, true, true, true, false, false, false, false
};

typedef enum ColKind
{
	K_TEXT,						/* any type; read as text (jsonb: translated) */
	K_NUM,						/* numeric, float, integer: read as numeric */
	K_ID,						/* integer: join keys */
	K_TS,						/* date or timestamp: read as timestamp */
	K_BOOL
} ColKind;

typedef enum OdooCol
{
	DC_ID, DC_NAME, DC_STATE, DC_MOVE_TYPE, DC_SENT, DC_PARTNER, DC_COMPANY,
	DC_CURRENCY, DC_TOTAL, DC_RESIDUAL, DC_DATE, DC_DATE2, DC_DUE, DC_REF,
	DC_TOKEN,
	PC_ID, PC_NAME, PC_COMMERCIAL, PC_LANG, PC_PHONE, PC_MOBILE, PC_SANITIZED,
	PC_COUNTRY,
	CC_ID, CC_NAME, CC_PARTNER,
	NC_ID, NC_PHONE_CODE,
	YC_ID, YC_NAME, YC_SYMBOL, YC_POSITION, YC_DECIMALS, YC_ROUNDING,
	LC_CODE, LC_DECIMAL_POINT, LC_THOUSANDS_SEP, LC_GROUPING, LC_DATE_FORMAT,
	LC_ISACTIVE, LC_LABEL,
	GC_KEY, GC_VALUE,
	BC_NUMBER,
	MC_NAME, MC_VERSION, MC_STATE,
	NCOLS
} OdooCol;

typedef struct ColDef
{
	int			table;
	const char *name[N_MODELS];	/* per model; NULL: not a column there */
	ColKind		kind;
} ColDef;

#define BOTH(n) {n, n}
static const ColDef coldefs[NCOLS] = {
	[DC_ID] = {T_DOC, BOTH("id"), K_ID},
	[DC_NAME] = {T_DOC, BOTH("name"), K_TEXT},
	[DC_STATE] = {T_DOC, BOTH("state"), K_TEXT},
	[DC_MOVE_TYPE] = {T_DOC, {NULL, "move_type"}, K_TEXT},
	[DC_SENT] = {T_DOC, {NULL, "is_move_sent"}, K_BOOL},
	[DC_PARTNER] = {T_DOC, BOTH("partner_id"), K_ID},
	[DC_COMPANY] = {T_DOC, BOTH("company_id"), K_ID},
	[DC_CURRENCY] = {T_DOC, BOTH("currency_id"), K_ID},
	[DC_TOTAL] = {T_DOC, BOTH("amount_total"), K_NUM},
	[DC_RESIDUAL] = {T_DOC, {NULL, "amount_residual"}, K_NUM},
	[DC_DATE] = {T_DOC, {"date_order", "invoice_date"}, K_TS},
	[DC_DATE2] = {T_DOC, {NULL, "date"}, K_TS},
	[DC_DUE] = {T_DOC, {NULL, "invoice_date_due"}, K_TS},
	[DC_REF] = {T_DOC, {"client_order_ref", "ref"}, K_TEXT},
	[DC_TOKEN] = {T_DOC, BOTH("access_token"), K_TEXT},
	[PC_ID] = {T_PARTNER, BOTH("id"), K_ID},
	[PC_NAME] = {T_PARTNER, BOTH("name"), K_TEXT},
	[PC_COMMERCIAL] = {T_PARTNER, BOTH("commercial_partner_id"), K_ID},
	[PC_LANG] = {T_PARTNER, BOTH("lang"), K_TEXT},
	[PC_PHONE] = {T_PARTNER, BOTH("phone"), K_TEXT},
	[PC_MOBILE] = {T_PARTNER, BOTH("mobile"), K_TEXT},
	[PC_SANITIZED] = {T_PARTNER, BOTH("phone_sanitized"), K_TEXT},
	[PC_COUNTRY] = {T_PARTNER, BOTH("country_id"), K_ID},
	[CC_ID] = {T_COMPANY, BOTH("id"), K_ID},
	[CC_NAME] = {T_COMPANY, BOTH("name"), K_TEXT},
	[CC_PARTNER] = {T_COMPANY, BOTH("partner_id"), K_ID},
	[NC_ID] = {T_COUNTRY, BOTH("id"), K_ID},
	[NC_PHONE_CODE] = {T_COUNTRY, BOTH("phone_code"), K_TEXT},
	[YC_ID] = {T_CURRENCY, BOTH("id"), K_ID},
	[YC_NAME] = {T_CURRENCY, BOTH("name"), K_TEXT},
	[YC_SYMBOL] = {T_CURRENCY, BOTH("symbol"), K_TEXT},
	[YC_POSITION] = {T_CURRENCY, BOTH("position"), K_TEXT},
	[YC_DECIMALS] = {T_CURRENCY, BOTH("decimal_places"), K_TEXT},
	[YC_ROUNDING] = {T_CURRENCY, BOTH("rounding"), K_NUM},
	[LC_CODE] = {T_LANG, BOTH("code"), K_TEXT},
	[LC_DECIMAL_POINT] = {T_LANG, BOTH("decimal_point"), K_TEXT},
	[LC_THOUSANDS_SEP] = {T_LANG, BOTH("thousands_sep"), K_TEXT},
	[LC_GROUPING] = {T_LANG, BOTH("grouping"), K_TEXT},
	[LC_DATE_FORMAT] = {T_LANG, BOTH("date_format"), K_TEXT},
	[LC_ISACTIVE] = {T_LANG, BOTH("active"), K_BOOL},
	[LC_LABEL] = {T_LANG, BOTH("name"), K_TEXT},
	[GC_KEY] = {T_CONFIG, BOTH("key"), K_TEXT},
	[GC_VALUE] = {T_CONFIG, BOTH("value"), K_TEXT},
	[BC_NUMBER] = {T_BLACKLIST, BOTH("number"), K_TEXT},
	[MC_NAME] = {T_MODULE, BOTH("name"), K_TEXT},
	[MC_VERSION] = {T_MODULE, BOTH("latest_version"), K_TEXT},
	[MC_STATE] = {T_MODULE, BOTH("state"), K_TEXT},
};
#undef BOTH

/*
 * Where each row comes from.  The document (d) is read by its id; every
 * other row by a key that a column of an earlier row holds: the partner
 * (p) and its country (pc), the currency, the partner's language (l); and,
 * only when something asks for them, the commercial partner (cp) and its
 * country, the company (co) with its partner (cop) and country, and the
 * commercial partner's language (l2, when the partner has none).  When
 * that language is not an active res_lang row, Odoo's get_lang falls back
 * (odoo/tools/misc.py): to the company's partner's language (l3), then
 * en_US, then the first active language by name (lx, read specially).
 */
enum
{
	A_D, A_P, A_PC, A_CUR, A_L,
	A_CP, A_CPC, A_CO, A_COP, A_COC, A_L2, A_L3, A_LX,
	N_ALIAS
};

typedef struct AliasDef
{
	int			table;
	int			key_col;		/* the column of table the row is found by */
	int			from_alias;		/* ... whose value is this column of that row */
	int			from_col;
} AliasDef;

static const AliasDef alias_defs[N_ALIAS] = {
	[A_D] = {T_DOC, DC_ID, -1, -1},
	[A_P] = {T_PARTNER, PC_ID, A_D, DC_PARTNER},
	[A_PC] = {T_COUNTRY, NC_ID, A_P, PC_COUNTRY},
	[A_CUR] = {T_CURRENCY, YC_ID, A_D, DC_CURRENCY},
	[A_L] = {T_LANG, LC_CODE, A_P, PC_LANG},
	[A_CP] = {T_PARTNER, PC_ID, A_P, PC_COMMERCIAL},
	[A_CPC] = {T_COUNTRY, NC_ID, A_CP, PC_COUNTRY},
	[A_CO] = {T_COMPANY, CC_ID, A_D, DC_COMPANY},
	[A_COP] = {T_PARTNER, PC_ID, A_CO, CC_PARTNER},
	[A_COC] = {T_COUNTRY, NC_ID, A_COP, PC_COUNTRY},
	[A_L2] = {T_LANG, LC_CODE, A_CP, PC_LANG},
	[A_L3] = {T_LANG, LC_CODE, A_COP, PC_LANG},
	[A_LX] = {T_LANG, LC_CODE, -1, -1},
};

/* The column each table's rows are looked up by. */
static const int table_key_col[T_COUNT] = {
	DC_ID, PC_ID, CC_ID, NC_ID, YC_ID, LC_CODE, GC_KEY, BC_NUMBER, MC_NAME
};

/*
 * What the catalog says: for each table its oid (InvalidOid: missing) and
 * a btree index on its key column (InvalidOid: none, a sequential scan
 * then), for each column its number and type (0: missing, or of a type we
 * cannot read).  Compared byte for byte, so always zeroed before filling.
 */
typedef struct OdooCatalog
{
	Oid			relid[T_COUNT];
	Oid			keyindex[T_COUNT];
	Oid			keycoll[T_COUNT];	/* the collation of that index's first column */
	AttrNumber	attnum[NCOLS];
	Oid			atttype[NCOLS];
} OdooCatalog;

typedef struct OdooModelState
{
	bool		current;		/* no catalog invalidation since computed */
	OdooCatalog cat;
} OdooModelState;

static OdooModelState model_state[N_MODELS];
static bool callbacks_registered = false;

static SPIPlanPtr plan_insert = NULL;
static bool plan_insert_writes_owner = false;
static SPIPlanPtr plan_existing = NULL;

/* the extension's own tables read here (see open_own_table) */
static Oid	own_relids[3];

static void
odoo_catalog_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	for (int m = 0; m < N_MODELS; m++)
		model_state[m].current = false;
	memset(own_relids, 0, sizeof(own_relids));
}

static bool
kind_accepts(ColKind kind, Oid type)
{
	switch (kind)
	{
		case K_TEXT:
			return true;		/* everything has a text form */
		case K_NUM:
			return type == NUMERICOID || type == FLOAT8OID || type == FLOAT4OID ||
				type == INT2OID || type == INT4OID || type == INT8OID;
		case K_ID:
			return type == INT2OID || type == INT4OID || type == INT8OID;
		case K_TS:
			return type == DATEOID || type == TIMESTAMPOID || type == TIMESTAMPTZOID;
		case K_BOOL:
			return type == BOOLOID;
	}
	return false;
}

static inline bool
col_ok(const OdooCatalog *c, int col)
{
	return c->attnum[col] != 0;
}

/* Can rows be looked up by this column (an integer, or text)? */
static bool
key_type_ok(int col, Oid type)
{
	if (coldefs[col].kind == K_ID)
		return type == INT2OID || type == INT4OID || type == INT8OID;
	return type == TEXTOID || type == VARCHAROID;
}

static void
catalog_compute(OdooModel m, OdooCatalog *c)
{
	memset(c, 0, sizeof(*c));
	for (int t = 0; t < T_COUNT; t++)
	{
		const char *name = t == T_DOC ? model_table[m] : table_names[t];
		Oid			relid;

		/* only an ordinary table is read (odoo_read.c says why) */
		relid = wa_odoo_table(name, LOG);
		if (!OidIsValid(relid))
			continue;
		c->relid[t] = relid;
	}
	for (int i = 0; i < NCOLS; i++)
	{
		const ColDef *d = &coldefs[i];
		Oid			relid = c->relid[d->table];
		AttrNumber	att;
		Oid			type;

		if (!OidIsValid(relid) || d->name[m] == NULL)
			continue;
		att = get_attnum(relid, d->name[m]);
		if (att <= 0)
			continue;
		type = get_atttype(relid, att);
		if (!kind_accepts(d->kind, type))
			continue;
		c->attnum[i] = att;
		c->atttype[i] = type;
	}
	for (int t = 0; t < T_COUNT; t++)
	{
		int			k = table_key_col[t];

		/* a table whose rows cannot be looked up counts as missing */
		if (OidIsValid(c->relid[t]) &&
			(!col_ok(c, k) || !key_type_ok(k, c->atttype[k])))
		{
			c->relid[t] = InvalidOid;
			for (int i = 0; i < NCOLS; i++)
				if (coldefs[i].table == t)
					c->attnum[i] = 0, c->atttype[i] = InvalidOid;
			continue;
		}
		if (OidIsValid(c->relid[t]))
			c->keyindex[t] = wa_key_index(c->relid[t], c->attnum[k], c->atttype[k],
											&c->keycoll[t]);
	}
	for (int t = 0; t < T_COUNT; t++)
		if (OidIsValid(c->keyindex[t]))
			LockRelationOid(c->keyindex[t], AccessShareLock);
}

/*
 * Make model_state[m] current: lock Odoo's tables and the indexes we read
 * them by (so that no column or index can go away under us until the end
 * of the transaction), take in catalog invalidations, and compute the
 * catalog again if something changed.
 */
static OdooModelState *
prepare_model(OdooModel m)
{
	OdooModelState *s = &model_state[m];

	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(RELNAMENSP, odoo_catalog_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(ATTNAME, odoo_catalog_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(INDEXRELID, odoo_catalog_changed, (Datum) 0);
		callbacks_registered = true;
	}
	if (s->current)
	{
		for (int t = 0; t < T_COUNT; t++)
		{
			if (OidIsValid(s->cat.relid[t]))
				LockRelationOid(s->cat.relid[t], AccessShareLock);
			if (OidIsValid(s->cat.keyindex[t]))
				LockRelationOid(s->cat.keyindex[t], AccessShareLock);
		}
		AcceptInvalidationMessages();
	}
	for (int tries = 0; !s->current && tries < 5; tries++)
	{
		s->current = true;
		catalog_compute(m, &s->cat);
	}
	return s;
}

/* ----------
 * Formatting
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
static char *
format_amount(Numeric amount, int decimals, Numeric rounding,
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
static int
currency_decimals(const char *decimal_places, Numeric rounding)
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
static char *
format_date(Timestamp ts, const char *fmt)
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
static bool
language_ok(const char *s)
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
static char *
language_normalize(const char *s)
{
	char	   *c = clean_text(s);

	for (char *p = c; *p; p++)
		if (*p == '-')
			*p = '_';
	return c;
}

/* "es_CO" → "es", "sr@latin" → "sr"; NULL when there is none */
static char *
language_base(const char *s)
{
	size_t		n = strcspn(s, "_@");

	if (s[n] == '\0')
		return NULL;
	return pnstrdup(s, n);
}

/* ----------
 * Rendering
 * ----------
 */
/*
 * The rows of one rendering, each read on first use with the snapshot of
 * the rendering.  A_L means the partner's language, or the commercial
 * partner's when the partner has none.
 */
typedef struct OdooRow
{
	OdooModel	m;
	const OdooCatalog *cat;
	Snapshot	snap;
	int64		res_id;
	Relation	rels[T_COUNT];	/* opened on first use (the locks are held) */
	HeapTuple	tup[N_ALIAS];	/* NULL: no such row */
	Datum	   *vals[N_ALIAS];	/* its columns, deformed once */
	bool	   *nulls[N_ALIAS];
	bool		loaded[N_ALIAS];
	int			lang_alias;		/* the row A_L stands for; -1: not known yet */
	int			version;		/* Odoo's major version; -1: not read yet, 0: unknown */
	char	   *version_text;	/* ir_module_module.latest_version of base */
} OdooRow;

static Relation
row_rel(OdooRow *r, int t)
{
	if (r->rels[t] == NULL)
		r->rels[t] = relation_open(r->cat->relid[t], NoLock);
	return r->rels[t];
}

static void
row_close(OdooRow *r)
{
	for (int t = 0; t < T_COUNT; t++)
		if (r->rels[t] != NULL)
		{
			relation_close(r->rels[t], NoLock);
			r->rels[t] = NULL;
		}
}

/* Column col of a row of its table, as stored; false when NULL or missing. */
static bool
tuple_col(OdooRow *r, HeapTuple tup, int col, Datum *value)
{
	bool		isnull;

	if (tup == NULL || !col_ok(r->cat, col))
		return false;
	*value = heap_getattr(tup, r->cat->attnum[col],
						  RelationGetDescr(row_rel(r, coldefs[col].table)), &isnull);
	return !isnull;
}

/* The first row of table t whose key column equals key (an integer or text). */
static HeapTuple
fetch_row(OdooRow *r, int t, int64 ikey, const char *tkey)
{
	const OdooCatalog *c = r->cat;
	int			k = table_key_col[t];
	SysScanDesc scan;
	HeapTuple	tup = NULL;

	scan = wa_key_scan(row_rel(r, t), c->attnum[k], c->atttype[k], c->keyindex[t],
					   c->keycoll[t], ikey, tkey, r->snap);
	if (scan == NULL)
		return NULL;
	tup = systable_getnext(scan);
	tup = HeapTupleIsValid(tup) ? heap_copytuple(tup) : NULL;
	systable_endscan(scan);
	return tup;
}

static char *row_text(OdooRow *r, int alias, int col);
static int64 row_int(OdooRow *r, int alias, int col, bool *isnull);
static char *datum_text(OdooRow *r, int col, Datum d);

/*
 * get_lang's last resort (odoo/tools/misc.py): en_US when it is active,
 * else the first active language by name (res_lang.get_installed sorts by
 * name).  A heap scan of res_lang, a table of a few dozen rows, and only
 * for a partner whose language and company's language are both inactive.
 */
static HeapTuple
fallback_lang(OdooRow *r)
{
	const OdooCatalog *c = r->cat;
	Relation	rel = row_rel(r, T_LANG);
	TupleDesc	desc = RelationGetDescr(rel);
	HeapTuple	tup;
	HeapTuple	best = NULL;
	char	   *best_name = NULL;
	SysScanDesc scan;

	tup = fetch_row(r, T_LANG, 0, "en_US");
	if (tup != NULL)
	{
		bool		isnull = true;
		Datum		d = col_ok(c, LC_ISACTIVE) ?
			heap_getattr(tup, c->attnum[LC_ISACTIVE], desc, &isnull) : BoolGetDatum(true);

		if (!col_ok(c, LC_ISACTIVE) || (!isnull && DatumGetBool(d)))
			return tup;
		heap_freetuple(tup);
	}
	if (!col_ok(c, LC_ISACTIVE) || !col_ok(c, LC_LABEL))
		return NULL;
	scan = systable_beginscan(rel, InvalidOid, false, r->snap, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, c->attnum[LC_ISACTIVE], desc, &isnull);
		char	   *name;

		if (isnull || !DatumGetBool(d))
			continue;
		d = heap_getattr(tup, c->attnum[LC_LABEL], desc, &isnull);
		if (isnull)
			continue;
		name = datum_text(r, LC_LABEL, d);
		if (best_name == NULL || strcmp(name, best_name) < 0)
		{
			if (best)
				heap_freetuple(best);
			best = heap_copytuple(tup);
			best_name = name;
		}
	}
	systable_endscan(scan);
	return best;
}

static HeapTuple
row_load(OdooRow *r, int a)
{
	const AliasDef *def = &alias_defs[a];
	int			t = def->table;

	if (r->loaded[a])
		return r->tup[a];
	r->loaded[a] = true;
	r->tup[a] = NULL;
	if (!OidIsValid(r->cat->relid[t]))
		return NULL;
	if (a == A_D)
		r->tup[a] = fetch_row(r, t, r->res_id, NULL);
	else if (a == A_LX)
		r->tup[a] = fallback_lang(r);
	else if (coldefs[def->key_col].kind == K_ID)
	{
		bool		isnull;
		int64		key = row_int(r, def->from_alias, def->from_col, &isnull);

		if (!isnull)
			r->tup[a] = fetch_row(r, t, key, NULL);
	}
	else
	{
		char	   *key = row_text(r, def->from_alias, def->from_col);

		if (key != NULL && key[0] != '\0')
			r->tup[a] = fetch_row(r, t, 0, key);
	}
	if (r->tup[a] != NULL)
	{
		TupleDesc	desc = RelationGetDescr(row_rel(r, t));

		r->vals[a] = palloc(desc->natts * sizeof(Datum));
		r->nulls[a] = palloc(desc->natts * sizeof(bool));
		heap_deform_tuple(r->tup[a], desc, r->vals[a], r->nulls[a]);
	}
	return r->tup[a];
}

/* Column col of the row of alias a as loaded (false: no row, NULL, missing). */
static bool
row_get_loaded(OdooRow *r, int alias, int col, Datum *value)
{
	AttrNumber	att;

	if (row_load(r, alias) == NULL || !col_ok(r->cat, col))
		return false;
	att = r->cat->attnum[col];
	if (r->nulls[alias][att - 1])
		return false;
	*value = r->vals[alias][att - 1];
	return true;
}

/* Is the language row of alias a there and active, as get_lang wants it? */
static bool
lang_usable(OdooRow *r, int alias)
{
	Datum		d;

	if (row_load(r, alias) == NULL)
		return false;
	if (!col_ok(r->cat, LC_ISACTIVE))
		return true;			/* no active column: every row counts */
	return row_get_loaded(r, alias, LC_ISACTIVE, &d) && DatumGetBool(d);
}

/*
 * The stored value of column col of alias a (false: no row, NULL,
 * missing).  A_L is the language amounts and dates are written in: the
 * partner's (the commercial partner's when the partner has none), or when
 * that is no active res_lang row, what Odoo's get_lang falls back to.
 */
static bool
row_get(OdooRow *r, int alias, int col, Datum *value)
{
	if (alias == A_L)
	{
		if (r->lang_alias < 0)
		{
			Datum		d;
			int			first;

			first = !row_get_loaded(r, A_P, PC_LANG, &d) ||
				r->cat->atttype[PC_LANG] == JSONBOID ||
				VARSIZE_ANY_EXHDR(DatumGetPointer(d)) == 0 ? A_L2 : A_L;
			if (lang_usable(r, first))
				r->lang_alias = first;
			else if (lang_usable(r, A_L3))
				r->lang_alias = A_L3;
			else if (lang_usable(r, A_LX))
				r->lang_alias = A_LX;
			else
				r->lang_alias = first;
		}
		alias = r->lang_alias;
	}
	return row_get_loaded(r, alias, col, value);
}

/* A translated (jsonb) field's text: en_US, else the first language. */
static char *
jsonb_translation(Jsonb *j)
{
	JsonbValue *v;
	JsonbIterator *it;
	JsonbValue	jv;
	JsonbIteratorToken tok;

	if (JB_ROOT_IS_SCALAR(j))
	{
		v = getIthJsonbValueFromContainer(&j->root, 0);
		return v && v->type == jbvString ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
	}
	if (!JB_ROOT_IS_OBJECT(j))
		return NULL;
	v = getKeyJsonValueFromContainer(&j->root, "en_US", 5, NULL);
	if (v && v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	it = JsonbIteratorInit(&j->root);
	while ((tok = JsonbIteratorNext(&it, &jv, true)) != WJB_DONE)
		if (tok == WJB_VALUE && jv.type == jbvString)
			return pnstrdup(jv.val.string.val, jv.val.string.len);
	return NULL;
}

static char *
datum_text(OdooRow *r, int col, Datum d)
{
	Oid			type = r->cat->atttype[col];
	Oid			out;
	bool		varlena;

	if (type == TEXTOID || type == VARCHAROID)
		return TextDatumGetCString(d);
	if (type == JSONBOID)
		return jsonb_translation(DatumGetJsonbP(d));
	getTypeOutputInfo(type, &out, &varlena);
	return OidOutputFunctionCall(out, d);
}

static char *
tuple_text(OdooRow *r, HeapTuple tup, int col)
{
	Datum		d;

	return tuple_col(r, tup, col, &d) ? datum_text(r, col, d) : NULL;
}

static char *
row_text(OdooRow *r, int alias, int col)
{
	Datum		d;

	return row_get(r, alias, col, &d) ? datum_text(r, col, d) : NULL;
}

static bool
row_null(OdooRow *r, int alias, int col)
{
	Datum		d;

	return !row_get(r, alias, col, &d);
}

static int64
row_int(OdooRow *r, int alias, int col, bool *isnull)
{
	Datum		d;
	Oid			type = r->cat->atttype[col];

	*isnull = !row_get(r, alias, col, &d);
	if (*isnull)
		return 0;
	if (type == INT2OID)
		return DatumGetInt16(d);
	if (type == INT4OID)
		return DatumGetInt32(d);
	return DatumGetInt64(d);
}

static Numeric
row_num(OdooRow *r, int alias, int col)
{
	Datum		d;

	if (!row_get(r, alias, col, &d))
		return NULL;
	switch (r->cat->atttype[col])
	{
		case NUMERICOID:
			return DatumGetNumeric(d);
		case INT2OID:
			return DatumGetNumeric(DirectFunctionCall1(int2_numeric, d));
		case INT4OID:
			return DatumGetNumeric(DirectFunctionCall1(int4_numeric, d));
		case INT8OID:
			return DatumGetNumeric(DirectFunctionCall1(int8_numeric, d));
		case FLOAT4OID:
			return DatumGetNumeric(DirectFunctionCall1(float4_numeric, d));
		case FLOAT8OID:
			return DatumGetNumeric(DirectFunctionCall1(float8_numeric, d));
	}
	return NULL;
}

/* A date or timestamp as a timestamp (a date: its midnight); false if none. */
static bool
row_ts(OdooRow *r, int alias, int col, Timestamp *ts)
{
	Datum		d;

	if (!row_get(r, alias, col, &d))
		return false;
	if (r->cat->atttype[col] == DATEOID)
	{
		DateADT		date = DatumGetDateADT(d);
		int			overflow = 0;

		if (DATE_NOT_FINITE(date))
			return false;
		*ts = date2timestamp_opt_overflow(date, &overflow);
		return overflow == 0 && !TIMESTAMP_NOT_FINITE(*ts);
	}
	*ts = DatumGetTimestamp(d);
	return !TIMESTAMP_NOT_FINITE(*ts);
}

static bool
row_bool(OdooRow *r, int alias, int col)
{
	Datum		d;

	return row_get(r, alias, col, &d) && DatumGetBool(d);
}

/*
 * "19.0.1.3" or "saas~18.2.1.0" (ir_module_module.latest_version) -> 19,
 * 18; 0 when it is not a version.
 */
static int
parse_odoo_version(const char *v)
{
	long		major;
	char	   *end;

	if (v == NULL)
		return 0;
	if (strncmp(v, "saas~", 5) == 0)
		v += 5;
	major = strtol(v, &end, 10);
	if (end == v || *end != '.' || major < 8 || major > 99)
		return 0;
	return (int) major;
}

/*
 * The major version of the Odoo that owns the database: the
 * latest_version of module base in ir_module_module, which Odoo (and
 * OpenUpgrade) write when the module is installed or upgraded.  It is the
 * only sure sign of a migrated 19, whose res_partner keeps the column
 * mobile that 19 no longer has (OpenUpgrade drops no column).  0 when the
 * table or the row is missing.  One index probe, read once per rendering.
 */
static int
odoo_version(OdooRow *r)
{
	HeapTuple	tup;

	if (r->version >= 0)
		return r->version;
	r->version = 0;
	if (!OidIsValid(r->cat->relid[T_MODULE]) || !col_ok(r->cat, MC_VERSION))
		return 0;
	tup = fetch_row(r, T_MODULE, 0, "base");
	if (tup != NULL)
	{
		char	   *state = tuple_text(r, tup, MC_STATE);

		if (state == NULL || strcmp(state, "uninstalled") != 0)
		{
			r->version_text = tuple_text(r, tup, MC_VERSION);
			r->version = parse_odoo_version(r->version_text);
		}
		heap_freetuple(tup);
	}
	return r->version;
}

/* ----------
 * The extension's own tables: the rule, its account, the template's languages
 * ----------
 */
typedef struct OdooRule
{
	bool		found;
	bool		company_null;
	int32		company_id;
	char	   *template;
	char	   *language;
	char	   *account;
	Jsonb	   *params;
} OdooRule;

enum
{
	OWN_RULE, OWN_ACCOUNT, OWN_TEMPLATES,
	N_OWN
};
static const char *const own_names[N_OWN] = {"odoo_rule", "account", "templates"};

static Relation
open_own_table(int which)
{
	/* the oid of the last lookup, until a catalog invalidation */
	if (OidIsValid(own_relids[which]))
	{
		LockRelationOid(own_relids[which], AccessShareLock);
		if (OidIsValid(own_relids[which]))
			return table_open(own_relids[which], NoLock);
	}
	own_relids[which] =
		RangeVarGetRelidExtended(makeRangeVar("whatsapp", (char *) own_names[which], -1),
								 AccessShareLock, 0, NULL, NULL);
	return table_open(own_relids[which], NoLock);
}

/*
 * Are the Odoo events of this database paused (a row in
 * whatsapp.odoo_pause, see wa_odoo_pause)?  Read with a fresh snapshot: an
 * upgrade's long transaction that started before the pause must see it.
 * Before ALTER EXTENSION UPDATE makes the table, nothing is paused.
 */
static bool
odoo_paused(void)
{
	Oid			relid;
	Relation	rel;
	Snapshot	snap;
	SysScanDesc scan;
	bool		paused;

	relid = RangeVarGetRelidExtended(makeRangeVar("whatsapp", "odoo_pause", -1),
									 AccessShareLock, RVR_MISSING_OK, NULL, NULL);
	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, NoLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	paused = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return paused;
}

static AttrNumber
own_attnum(Relation rel, const char *name)
{
	AttrNumber	a = get_attnum(RelationGetRelid(rel), name);

	if (a <= 0)
		elog(ERROR, "whatsapp: column %s of %s is missing", name, RelationGetRelationName(rel));
	return a;
}

static char *
own_text(HeapTuple tup, Relation rel, AttrNumber a)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, a, RelationGetDescr(rel), &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* The rule of event ev for the company (or, failing that, the one for all). */
static void
find_rule(const OdooEvent *ev, bool company_null, int64 company_id, Snapshot snap,
		  OdooRule *rule)
{
	Relation	rel = open_own_table(OWN_RULE);
	AttrNumber	a_event = own_attnum(rel, "event");
	AttrNumber	a_company = own_attnum(rel, "company_id");
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	HeapTuple	best = NULL;
	bool		best_is_company = false;

	memset(rule, 0, sizeof(*rule));
	ScanKeyInit(&skey, a_event, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(ev->name));
	scan = systable_beginscan(rel, InvalidOid, false, snap, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		c = heap_getattr(tup, a_company, RelationGetDescr(rel), &isnull);

		if (isnull && best == NULL)
			best = heap_copytuple(tup);
		else if (!isnull && !company_null && DatumGetInt32(c) == company_id &&
				 !best_is_company)
		{
			best = heap_copytuple(tup);
			best_is_company = true;
		}
	}
	systable_endscan(scan);
	if (best != NULL)
	{
		bool		isnull;
		Datum		d;

		rule->found = true;
		d = heap_getattr(best, a_company, RelationGetDescr(rel), &rule->company_null);
		rule->company_id = rule->company_null ? 0 : DatumGetInt32(d);
		rule->template = own_text(best, rel, own_attnum(rel, "template"));
		rule->language = own_text(best, rel, own_attnum(rel, "language"));
		rule->account = own_text(best, rel, own_attnum(rel, "account"));
		d = heap_getattr(best, own_attnum(rel, "params"), RelationGetDescr(rel), &isnull);
		rule->params = isnull ? NULL : DatumGetJsonbPCopy(d);
	}
	table_close(rel, NoLock);
}

/*
 * The id of the live account called name; with *live false, the id of the
 * last dropped one of that name, or 0 when there never was one.
 */
static int32
find_account(const char *name, Snapshot snap, bool *live)
{
	Relation	rel;
	AttrNumber	a_name;
	AttrNumber	a_id;
	AttrNumber	a_dropped;
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	int32		any = 0;
	int32		alive = 0;

	*live = false;
	if (name == NULL)
		return 0;
	rel = open_own_table(OWN_ACCOUNT);
	a_name = own_attnum(rel, "name");
	a_id = own_attnum(rel, "id");
	a_dropped = own_attnum(rel, "dropped_at");
	ScanKeyInit(&skey, a_name, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(name));
	scan = systable_beginscan(rel, InvalidOid, false, snap, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		int32		id = DatumGetInt32(heap_getattr(tup, a_id, RelationGetDescr(rel), &isnull));

		(void) heap_getattr(tup, a_dropped, RelationGetDescr(rel), &isnull);
		if (isnull)
			alive = id;
		if (id > any)
			any = id;
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	*live = alive != 0;
	return alive != 0 ? alive : any;
}

/*
 * The languages whatsapp.templates lists for the template, for this account
 * or every account, whose status is unknown or lets it be sent.
 */
static List *
template_languages(const char *template, const char *account, Snapshot snap)
{
	Relation	rel;
	AttrNumber	a_name;
	AttrNumber	a_account;
	AttrNumber	a_language;
	AttrNumber	a_status;
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *langs = NIL;

	if (template == NULL)
		return NIL;
	rel = open_own_table(OWN_TEMPLATES);
	a_name = own_attnum(rel, "name");
	a_account = own_attnum(rel, "account");
	a_language = own_attnum(rel, "language");
	a_status = own_attnum(rel, "status");
	ScanKeyInit(&skey, a_name, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(template));
	scan = systable_beginscan(rel, InvalidOid, false, snap, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		char	   *acc = own_text(tup, rel, a_account);
		char	   *status = own_text(tup, rel, a_status);
		char	   *lang = own_text(tup, rel, a_language);

		if (acc != NULL && (account == NULL || strcmp(acc, account) != 0))
			continue;
		if (status != NULL && pg_strcasecmp(status, "APPROVED") != 0 &&
			pg_strcasecmp(status, "REINSTATED") != 0 && pg_strcasecmp(status, "FLAGGED") != 0)
			continue;
		if (lang != NULL)
			langs = lappend(langs, lang);
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	return langs;
}

/* A value of Odoo's ir_config_parameter, or NULL. */
static char *
config_value(OdooRow *r, const char *key)
{
	HeapTuple	tup;
	char	   *v;

	if (!OidIsValid(r->cat->relid[T_CONFIG]) || !col_ok(r->cat, GC_VALUE))
		return NULL;
	tup = fetch_row(r, T_CONFIG, 0, key);
	v = tuple_text(r, tup, GC_VALUE);
	if (tup)
		heap_freetuple(tup);
	return v;
}

/* Is the partner its own commercial partner (or has none)? */
static bool
own_commercial(OdooRow *row)
{
	bool		n1,
				n2;
	int64		pid = row_int(row, A_P, PC_ID, &n1);
	int64		cpid = row_int(row, A_P, PC_COMMERCIAL, &n2);

	return n1 || n2 || pid == cpid;
}

/* non-empty after cleaning, or NULL */
static char *
nonempty(const char *s)
{
	char	   *c;

	if (s == NULL)
		return NULL;
	c = clean_text(s);
	return c[0] == '\0' ? NULL : c;
}

typedef struct OdooRender
{
	const OdooEvent *ev;
	int64		res_id;
	bool		found;			/* the record exists */
	bool		has_rule;
	bool		fires;			/* the event holds now */
	char	   *note;			/* why not, when it does not */
	/* outcome: NULL (nothing), "queued", "failed", "blocked" */
	const char *state;
	const char *failure_type;
	char	   *reason;
	char	   *details;
	int32		error_code;
	/* the message */
	int32		account_id;
	char	   *account;
	char	   *recipient;
	char	   *template;
	char	   *language;
	StringInfoData payload;
	Datum		payload_jsonb;	/* payload parsed */
	StringInfoData values;		/* vocabulary values, for the preview */
	char	   *dedupe_key;
	StringInfoData context;
	char	   *document;
	bool		company_null;
	int64		company_id;
	bool		rule_company_null;
	int64		rule_company;
	/* for the preview */
	int			odoo_version;	/* 0: not known from ir_module_module */
	char	   *odoo_version_text;
	char	   *format_lang;	/* the res_lang row amounts and dates follow */
	char	   *link_page;		/* the links as the customer gets them */
	char	   *link_pdf;
	bool		base_url_from_rule;
	char	   *base_url_used;
	/* an access_token the extension creates for the document (see portal_link) */
	char	   *token_new;
	Oid			doc_relid;
} OdooRender;

static void fail(OdooRender *r, const char *failure_type, const char *fmt,...)
			pg_attribute_printf(3, 4);

static void
fail(OdooRender *r, const char *failure_type, const char *fmt,...)
{
	va_list		args;
	StringInfoData b;

	if (r->state != NULL && strcmp(r->state, "failed") == 0)
		return;					/* the first problem is the one reported */
	initStringInfo(&b);
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&b, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&b, needed);
	}
	r->state = "failed";
	r->failure_type = failure_type;
	r->reason = b.data;
}

static const char *
qcol(OdooModel m, int col)
{
	const ColDef *d = &coldefs[col];
	const char *t = d->table == T_DOC ? model_table[m] : table_names[d->table];

	return psprintf("%s.%s", t, d->name[m]);
}

/* Why a column is unusable: missing, or of a type we cannot read. */
static char *
col_problem(const OdooCatalog *c, OdooModel m, int col)
{
	const ColDef *d = &coldefs[col];
	Oid			relid = c->relid[d->table];
	AttrNumber	att;

	if (!OidIsValid(relid))
		return psprintf("table public.%s is missing",
						d->table == T_DOC ? model_table[m] : table_names[d->table]);
	att = get_attnum(relid, d->name[m]);
	if (att <= 0)
		return psprintf("column %s is missing", qcol(m, col));
	return psprintf("column %s has type %s, which the whatsapp extension cannot read",
					qcol(m, col), format_type_be(get_atttype(relid, att)));
}

/* What the parameter functions share. */
typedef struct OdooCtx
{
	OdooModel	m;
	const OdooCatalog *cat;
	OdooRow	   *row;
	OdooRender *r;
	char	   *base_url;		/* the rule's base_url, else web.base.url, without its last "/" */
	bool		for_preview;
} OdooCtx;

static char *
amount_param(OdooCtx *x, int col, const char *vocab)
{
	OdooRow    *row = x->row;
	Numeric		amount;
	Numeric		rounding;
	char	   *s;

	if (!col_ok(x->cat, col))
	{
		fail(x->r, "template", "parameter %s: %s", vocab, col_problem(x->cat, x->m, col));
		return NULL;
	}
	amount = row_num(row, A_D, col);
	if (amount == NULL)
	{
		fail(x->r, "template", "parameter %s: %s of %s %ld is empty", vocab,
			 qcol(x->m, col), model_name[x->m], (long) x->r->res_id);
		return NULL;
	}
	if (row_null(row, A_CUR, YC_ID))
	{
		fail(x->r, "template", "parameter %s: %s %ld has no currency (%s)", vocab,
			 model_name[x->m], (long) x->r->res_id,
			 col_ok(x->cat, DC_CURRENCY) ? "currency_id is empty or names no res_currency row"
			 : col_problem(x->cat, x->m, DC_CURRENCY));
		return NULL;
	}
	rounding = row_num(row, A_CUR, YC_ROUNDING);
	s = format_amount(amount,
					  currency_decimals(row_text(row, A_CUR, YC_DECIMALS), rounding),
					  rounding,
					  row_text(row, A_L, LC_DECIMAL_POINT),
					  row_text(row, A_L, LC_THOUSANDS_SEP),
					  row_text(row, A_L, LC_GROUPING),
					  row_text(row, A_CUR, YC_SYMBOL),
					  row_text(row, A_CUR, YC_POSITION));
	if (s == NULL)
		fail(x->r, "template", "parameter %s: %s is not a finite number", vocab,
			 qcol(x->m, col));
	return s;
}

/* A random (version 4) UUID in its text form, as Python's str(uuid.uuid4()). */
static char *
new_uuid4(void)
{
	uint8		u[16];

	if (!pg_strong_random(u, sizeof(u)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("whatsapp: could not generate random bytes for an Odoo access_token")));
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
	return psprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
					u[10], u[11], u[12], u[13], u[14], u[15]);
}

/*
 * Why the extension cannot write a new access_token to the document, or
 * NULL.  The write cannot be caught if it fails (that would take a
 * subtransaction per row), so whatever would make it fail for a reason
 * the catalog shows is checked first: the column's type, the owner's
 * privileges on the columns the UPDATE touches, and forced row security
 * (whose policies apply to the owner too).
 */
static char *
token_write_problem(OdooCtx *x)
{
	const OdooCatalog *c = x->cat;
	Oid			relid = c->relid[T_DOC];
	Oid			type = c->atttype[DC_TOKEN];
	HeapTuple	tup;
	Form_pg_class form;
	Oid			owner;
	bool		forced;
	int32		typmod;

	if (type != TEXTOID && type != VARCHAROID)
		return psprintf("column %s is of type %s", qcol(x->m, DC_TOKEN), format_type_be(type));
	{
		Oid			t;
		Oid			coll;

		get_atttypetypmodcoll(relid, c->attnum[DC_TOKEN], &t, &typmod, &coll);
	}
	if (type == VARCHAROID && typmod >= 0 && typmod - VARHDRSZ < 36)
		return psprintf("column %s is too short for a token", qcol(x->m, DC_TOKEN));
	if (!col_ok(c, DC_ID))
		return col_problem(c, x->m, DC_ID);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return pstrdup("the table is gone");
	form = (Form_pg_class) GETSTRUCT(tup);
	owner = form->relowner;
	forced = form->relrowsecurity && form->relforcerowsecurity;
	ReleaseSysCache(tup);
	if (forced)
		return psprintf("public.%s forces row level security", model_table[x->m]);
	/* table privileges, else column ones (an owner has them unless revoked) */
	if ((pg_class_aclcheck(relid, owner, ACL_UPDATE) != ACLCHECK_OK &&
		 pg_attribute_aclcheck(relid, c->attnum[DC_TOKEN], owner, ACL_UPDATE) != ACLCHECK_OK) ||
		(pg_class_aclcheck(relid, owner, ACL_SELECT) != ACLCHECK_OK &&
		 (pg_attribute_aclcheck(relid, c->attnum[DC_TOKEN], owner, ACL_SELECT) != ACLCHECK_OK ||
		  pg_attribute_aclcheck(relid, c->attnum[DC_ID], owner, ACL_SELECT) != ACLCHECK_OK)))
		return psprintf("its owner %s may not update %s", GetUserNameFromId(owner, false),
						qcol(x->m, DC_TOKEN));
	return NULL;
}

/* portal link of the document, or NULL (failing) */
static char *
portal_link(OdooCtx *x, const char *what, bool pdf)
{
	char	   *token;
	StringInfoData b;

	if (!col_ok(x->cat, DC_TOKEN))
	{
		fail(x->r, "template", "%s: %s", what, col_problem(x->cat, x->m, DC_TOKEN));
		return NULL;
	}
	token = nonempty(row_text(x->row, A_D, DC_TOKEN));
	if (token == NULL && x->r->token_new == NULL)
	{
		/*
		 * Create it the way portal.mixin's _portal_ensure_token does (a
		 * uuid4 written to the document), at commit, in the confirming
		 * transaction (record() writes it), so that the link works the
		 * first time.  The preview only says so.
		 */
		char	   *why = token_write_problem(x);

		if (why != NULL)
		{
			fail(x->r, "template",
				 "%s: %s %ld has no access_token yet, and the whatsapp extension cannot create one: %s",
				 what, model_name[x->m], (long) x->r->res_id, why);
			return NULL;
		}
		x->r->token_new = x->for_preview ? pstrdup("NEW-ACCESS-TOKEN-CREATED-AT-COMMIT") : new_uuid4();
		x->r->doc_relid = x->cat->relid[T_DOC];
	}
	if (token == NULL)
		token = x->r->token_new;
	if (x->base_url == NULL)
		x->base_url = nonempty(config_value(x->row, "web.base.url"));
	{
		if (x->base_url != NULL)
		{
			size_t		len = strlen(x->base_url);

			while (len > 0 && x->base_url[len - 1] == '/')
				x->base_url[--len] = '\0';
			if (len == 0)
				x->base_url = NULL;
		}
	}
	if (x->base_url == NULL)
	{
		fail(x->r, "template", "%s: %s", what,
			 OidIsValid(x->cat->relid[T_CONFIG]) ?
			 "ir_config_parameter has no web.base.url" :
			 "table public.ir_config_parameter is missing, so there is no web.base.url");
		return NULL;
	}
	x->r->base_url_used = x->base_url;
	initStringInfo(&b);
	appendStringInfo(&b, "%s%s%ld?access_token=", x->base_url, model_portal[x->m],
					 (long) x->r->res_id);
	for (const unsigned char *p = (const unsigned char *) token; *p; p++)
	{
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~')
			appendStringInfoChar(&b, (char) *p);
		else
			appendStringInfo(&b, "%%%02X", *p);
	}
	if (pdf)
	{
		appendStringInfoString(&b, "&report_type=pdf&download=true");
		x->r->link_pdf = b.data;
	}
	else
		x->r->link_page = b.data;
	return b.data;
}

static char *
partner_name_of(OdooCtx *x, int alias, const char *vocab)
{
	OdooRow    *row = x->row;
	bool		isnull;
	int64		pid = row_int(row, alias, PC_ID, &isnull);
	char	   *name;

	if (!col_ok(x->cat, PC_NAME))
	{
		fail(x->r, "template", "parameter %s: %s", vocab, col_problem(x->cat, x->m, PC_NAME));
		return NULL;
	}
	if (isnull)
	{
		fail(x->r, "template", "parameter %s: %s %ld has no partner", vocab,
			 model_name[x->m], (long) x->r->res_id);
		return NULL;
	}
	name = nonempty(row_text(row, alias, PC_NAME));
	if (name == NULL)
		fail(x->r, "template", "parameter %s: partner res.partner %ld has no name", vocab,
			 (long) pid);
	return name;
}

/* The value of one vocabulary word, or NULL after fail(). */
static char *
vocab_value(OdooCtx *x, const char *v)
{
	OdooRow    *row = x->row;
	OdooRender *r = x->r;
	char	   *s;

	if (strcmp(v, "partner_name") == 0)
		return partner_name_of(x, A_P, v);
	if (strcmp(v, "commercial_partner_name") == 0)
	{
		if (!col_ok(x->cat, PC_COMMERCIAL))
		{
			fail(r, "template", "parameter %s: %s", v, col_problem(x->cat, x->m, PC_COMMERCIAL));
			return NULL;
		}
		/* a partner without a commercial partner is its own */
		return partner_name_of(x, own_commercial(row) ? A_P : A_CP, v);
	}
	if (strcmp(v, "document_name") == 0)
	{
		if (!col_ok(x->cat, DC_NAME))
		{
			fail(r, "template", "parameter %s: %s", v, col_problem(x->cat, x->m, DC_NAME));
			return NULL;
		}
		s = nonempty(row_text(row, A_D, DC_NAME));
		if (s == NULL || strcmp(s, "/") == 0)
		{
			fail(r, "template", "parameter %s: %s %ld has no name yet", v,
				 model_name[x->m], (long) r->res_id);
			return NULL;
		}
		return s;
	}
	if (strcmp(v, "amount_total") == 0)
		return amount_param(x, DC_TOTAL, v);
	if (strcmp(v, "amount_residual") == 0)
		return amount_param(x, DC_RESIDUAL, v);
	if (strcmp(v, "invoice_date_due") == 0)
	{
		Timestamp	ts;

		if (!col_ok(x->cat, DC_DUE))
		{
			fail(r, "template", "parameter %s: %s", v, col_problem(x->cat, x->m, DC_DUE));
			return NULL;
		}
		s = row_ts(row, A_D, DC_DUE, &ts) ?
			format_date(ts, row_text(row, A_L, LC_DATE_FORMAT)) : NULL;
		if (s == NULL)
			fail(r, "template", "parameter %s: %s %ld has no due date", v,
				 model_name[x->m], (long) r->res_id);
		return s;
	}
	if (strcmp(v, "client_order_ref") == 0)
	{
		if (!col_ok(x->cat, DC_REF))
		{
			fail(r, "template", "parameter %s: %s", v, col_problem(x->cat, x->m, DC_REF));
			return NULL;
		}
		s = nonempty(row_text(row, A_D, DC_REF));
		if (s == NULL)
			fail(r, "template", "parameter %s: %s %ld has no customer reference (%s is empty)",
				 v, model_name[x->m], (long) r->res_id, qcol(x->m, DC_REF));
		return s;
	}
	if (strcmp(v, "company_name") == 0)
	{
		if (!col_ok(x->cat, CC_NAME))
		{
			fail(r, "template", "parameter %s: %s", v, col_problem(x->cat, x->m, CC_NAME));
			return NULL;
		}
		s = nonempty(row_text(row, A_CO, CC_NAME));
		if (s == NULL)
			fail(r, "template", "parameter %s: %s %ld has no company, or its company has no name",
				 v, model_name[x->m], (long) r->res_id);
		return s;
	}
	if (strcmp(v, "portal_url") == 0)
		return portal_link(x, "parameter portal_url", false);

	fail(r, "template", "parameter \"%s\" is not one of the words wa_odoo_enable accepts", v);
	return NULL;
}

static void
append_param(OdooCtx *x, StringInfo body, bool *first, const char *name, const char *vocab)
{
	char	   *value = vocab_value(x, vocab);

	/* for the preview: every word and its value */
	if (x->r->values.len > 1)
		appendStringInfoString(&x->r->values, ", ");
	escape_json(&x->r->values, vocab);
	appendStringInfoString(&x->r->values, ": ");
	if (value)
		escape_json(&x->r->values, value);
	else
		appendStringInfoString(&x->r->values, "null");

	if (value == NULL)
		return;					/* left out: Meta refuses the request if it is retried */
	if (!*first)
		appendStringInfoString(body, ", ");
	*first = false;
	appendStringInfoString(body, "{\"type\": \"text\", ");
	if (name)
	{
		appendStringInfoString(body, "\"parameter_name\": ");
		escape_json(body, name);
		appendStringInfoString(body, ", ");
	}
	appendStringInfoString(body, "\"text\": ");
	escape_json(body, value);
	appendStringInfoChar(body, '}');
}

/*
 * The template object's components for the rule's params (NULL: the
 * partner's name, the document's name and the total, positional).
 */
static void
append_components(OdooCtx *x, Jsonb *params, StringInfo out)
{
	StringInfoData body;
	bool		first = true;
	bool		any = false;
	char	   *header = NULL;
	JsonbValue *v;

	initStringInfo(&body);
	if (params == NULL)
	{
		append_param(x, &body, &first, NULL, "partner_name");
		append_param(x, &body, &first, NULL, "document_name");
		append_param(x, &body, &first, NULL, "amount_total");
		any = true;
	}
	else if (JB_ROOT_IS_ARRAY(params) && !JB_ROOT_IS_SCALAR(params))
	{
		uint32		n = JsonContainerSize(&params->root);

		for (uint32 i = 0; i < n; i++)
		{
			v = getIthJsonbValueFromContainer(&params->root, i);
			if (v == NULL || v->type != jbvString)
			{
				fail(x->r, "template", "the rule's params are not understood");
				return;
			}
			append_param(x, &body, &first, NULL,
						 pnstrdup(v->val.string.val, v->val.string.len));
			any = true;
		}
	}
	else if (JB_ROOT_IS_OBJECT(params))
	{
		JsonbIterator *it = JsonbIteratorInit(&params->root);
		JsonbValue	k;
		JsonbValue	val;
		JsonbIteratorToken tok;
		char	   *key = NULL;

		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				key = pnstrdup(k.val.string.val, k.val.string.len);
				continue;
			}
			if (tok != WJB_VALUE || key == NULL)
				continue;
			val = k;
			if (strcmp(key, "header") == 0)
			{
				if (val.type == jbvString)
					header = pnstrdup(val.val.string.val, val.val.string.len);
				continue;
			}
			if (strcmp(key, "body") == 0 && val.type == jbvBinary &&
				JsonContainerIsArray(val.val.binary.data))
			{
				uint32		n = JsonContainerSize(val.val.binary.data);

				for (uint32 i = 0; i < n; i++)
				{
					JsonbValue *e = getIthJsonbValueFromContainer(val.val.binary.data, i);

					if (e == NULL || e->type != jbvString)
					{
						fail(x->r, "template", "the rule's params are not understood");
						return;
					}
					append_param(x, &body, &first, NULL,
								 pnstrdup(e->val.string.val, e->val.string.len));
					any = true;
				}
				continue;
			}
			if (val.type != jbvString)
			{
				fail(x->r, "template", "the rule's params are not understood");
				return;
			}
			append_param(x, &body, &first, key,
						 pnstrdup(val.val.string.val, val.val.string.len));
			any = true;
		}
	}
	else
	{
		fail(x->r, "template", "the rule's params are not understood");
		return;
	}

	if (header == NULL && !any)
		return;
	appendStringInfoString(out, ", \"components\": [");
	if (header != NULL)
	{
		char	   *link = NULL;

		if (strcmp(header, "portal_pdf") == 0)
			link = portal_link(x, "header portal_pdf", true);
		else
			fail(x->r, "template", "header \"%s\" is not one wa_odoo_enable accepts", header);
		if (link != NULL)
		{
			char	   *fname = nonempty(row_text(x->row, A_D, DC_NAME));
			StringInfoData f;

			initStringInfo(&f);
			if (fname == NULL || strcmp(fname, "/") == 0)
				appendStringInfo(&f, "%s_%ld", model_table[x->m], (long) x->r->res_id);
			else
				for (char *p = fname; *p; p++)
					appendStringInfoChar(&f, (*p == '/' || *p == '\\' || *p == ' ') ? '_' : *p);
			appendStringInfoString(&f, ".pdf");
			appendStringInfoString(out, "{\"type\": \"header\", \"parameters\": [{\"type\": \"document\", \"document\": {\"link\": ");
			escape_json(out, link);
			appendStringInfoString(out, ", \"filename\": ");
			escape_json(out, f.data);
			appendStringInfoString(out, "}}]}");
			if (any)
				appendStringInfoString(out, ", ");
		}
	}
	if (any)
	{
		appendStringInfoString(out, "{\"type\": \"body\", \"parameters\": [");
		appendStringInfoString(out, body.data);
		appendStringInfoString(out, "]}");
	}
	appendStringInfoChar(out, ']');
}

/*
 * The first number of the partner at alias that makes E.164:
 * phone_sanitized, mobile (up to Odoo 18), then each part of phone split
 * on "|".  From 19 on mobile is not read even where the column is still
 * there: Odoo 19 has no such field (phone_validation reads phone only), so
 * a migrated database keeps in it a number nobody sees or updates.  The
 * country code is the partner's country's, then the company's country's,
 * then whatsapp.default_country_code.  Appends what it tried to tried.
 */
static bool
partner_number(OdooCtx *x, int alias, int country_alias, char *e164, StringInfo tried,
			   char **first_raw)
{
	OdooRow    *row = x->row;
	const char *cc = NULL;
	char	   *code;
	const int	cols[3] = {PC_SANITIZED, PC_MOBILE, PC_PHONE};

	code = nonempty(row_text(row, country_alias, NC_PHONE_CODE));
	if (code == NULL || strspn(code, "0123456789") != strlen(code) || strlen(code) > 3 ||
		code[0] == '0')
		code = nonempty(row_text(row, A_COC, NC_PHONE_CODE));
	if (code != NULL && strspn(code, "0123456789") == strlen(code) && strlen(code) <= 3 &&
		code[0] != '0')
		cc = code;
	else
		cc = wa_default_country_code;

	for (int i = 0; i < 3; i++)
	{
		char	   *v;
		char	   *part;
		char	   *save = NULL;

		if (cols[i] == PC_MOBILE && (!col_ok(x->cat, PC_MOBILE) || odoo_version(row) >= 19))
			continue;
		v = row_text(row, alias, cols[i]);
		if (v == NULL)
			continue;
		for (part = strtok_r(v, "|", &save); part; part = strtok_r(NULL, "|", &save))
		{
			char	   *p = nonempty(part);

			if (p == NULL)
				continue;
			if (*first_raw == NULL)
				*first_raw = p;
			if (wa_normalize_phone(p, cc, e164))
				return true;
			appendStringInfo(tried, "%s%s '%s'", tried->len ? ", " : "",
							 coldefs[cols[i]].name[x->m], p);
		}
	}
	return false;
}

static void
choose_recipient(OdooCtx *x)
{
	OdooRow    *row = x->row;
	OdooRender *r = x->r;
	char		e164[WA_E164_MAXLEN + 1];
	StringInfoData tried;
	char	   *raw = NULL;
	bool		isnull;
	int64		pid = row_int(row, A_P, PC_ID, &isnull);
	int64		cpid;
	bool		cp_null;

	if (!col_ok(x->cat, PC_PHONE) && !col_ok(x->cat, PC_MOBILE) && !col_ok(x->cat, PC_SANITIZED))
	{
		fail(r, "phone_invalid",
			 "res_partner has none of the columns phone_sanitized, mobile and phone");
		return;
	}
	if (isnull)
	{
		fail(r, "phone_invalid", "%s %ld has no partner", model_name[x->m], (long) r->res_id);
		return;
	}
	initStringInfo(&tried);
	if (partner_number(x, A_P, A_PC, e164, &tried, &raw))
	{
		r->recipient = pstrdup(e164);
		return;
	}
	cpid = row_int(row, A_P, PC_COMMERCIAL, &cp_null);
	if (!own_commercial(row) && !row_null(row, A_CP, PC_ID))
	{
		StringInfoData tried_cp;

		initStringInfo(&tried_cp);
		if (partner_number(x, A_CP, A_CPC, e164, &tried_cp, &raw))
		{
			r->recipient = pstrdup(e164);
			return;
		}
		r->recipient = raw;
		fail(r, "phone_invalid",
			 "neither partner res.partner %ld (%s) nor its commercial partner res.partner %ld (%s) has a phone number that can be made E.164",
			 (long) pid, tried.len ? tried.data : "no number",
			 (long) cpid, tried_cp.len ? tried_cp.data : "no number");
	}
	else if (tried.len == 0)
		fail(r, "phone_invalid", "partner res.partner %ld has no phone number", (long) pid);
	else
	{
		r->recipient = raw;
		fail(r, "phone_invalid",
			 "partner res.partner %ld has no phone number that can be made E.164 (%s)",
			 (long) pid, tried.data);
	}
	r->details = pstrdup("Write the number with its country code (+52 ...), or set the partner's country in Odoo.");
}

static bool
list_has_string(List *l, const char *s)
{
	ListCell   *lc;

	foreach(lc, l)
	{
		if (strcmp((char *) lfirst(lc), s) == 0)
			return true;
	}
	return false;
}

/*
 * The language: the first of the partner's language (else the commercial
 * partner's), its base language and the rule's language that
 * whatsapp.templates lists for the template; when it lists none of them,
 * the rule's language, or else the partner's.
 */
static void
choose_language(OdooCtx *x, const char *rule_lang, List *avail)
{
	OdooRender *r = x->r;
	char	   *cands[3];
	int			n = 0;
	char	   *partner = NULL;
	char	   *pl;

	pl = nonempty(row_text(x->row, A_P, PC_LANG));
	if (pl == NULL)
		pl = nonempty(row_text(x->row, A_CP, PC_LANG));
	if (pl != NULL)
	{
		char	   *norm = language_normalize(pl);
		char	   *base = language_base(norm);

		if (language_ok(norm))
			partner = cands[n++] = norm;
		if (base && language_ok(base))
		{
			cands[n++] = base;
			if (partner == NULL)
				partner = base;
		}
	}
	if (rule_lang != NULL)
		cands[n++] = (char *) rule_lang;

	if (avail != NIL)
		for (int i = 0; i < n; i++)
			if (list_has_string(avail, cands[i]))
			{
				r->language = cands[i];
				return;
			}
	if (rule_lang != NULL)
		r->language = (char *) rule_lang;
	else if (partner != NULL)
		r->language = partner;
	else
	{
		r->language = NULL;
		fail(r, "template",
			 "no language: the partner has no usable lang%s%s, and the rule names none",
			 pl ? " (" : "", pl ? psprintf("%s)", pl) : "");
	}
}

static const OdooEvent *
find_event(const char *name)
{
	for (int i = 0; i < (int) lengthof(odoo_events); i++)
		if (strcmp(odoo_events[i].name, name) == 0)
			return &odoo_events[i];
	return NULL;
}

/*
 * Render document res_id for event ev.  Inside an SPI connection; all
 * allocations in the current (SPI) context.  With for_preview false it
 * stops as soon as it knows nothing is to be recorded.
 */
static void render_rows(const OdooEvent *ev, OdooModelState *s, OdooRow *row,
						bool for_preview, OdooRender *r);

static void
render(const OdooEvent *ev, int64 res_id, bool for_preview, OdooRender *r)
{
	OdooModelState *s = prepare_model(ev->model);
	OdooRow		row;

	memset(r, 0, sizeof(*r));
	r->ev = ev;
	r->res_id = res_id;
	initStringInfo(&r->payload);
	initStringInfo(&r->values);
	appendStringInfoChar(&r->values, '{');
	initStringInfo(&r->context);

	/*
	 * A snapshot that sees the transaction's own latest writes: at the
	 * commit of a single-statement transaction no command counter
	 * increment has happened since the UPDATE that queued the event.
	 */
	CommandCounterIncrement();
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();

	memset(&row, 0, sizeof(row));
	row.m = ev->model;
	row.cat = &s->cat;
	row.snap = GetActiveSnapshot();
	row.res_id = res_id;
	row.lang_alias = -1;
	row.version = -1;
	render_rows(ev, s, &row, for_preview, r);
	row_close(&row);
	PopActiveSnapshot();
}

static void
render_rows(const OdooEvent *ev, OdooModelState *s, OdooRow *rowp, bool for_preview,
			OdooRender *r)
{
	OdooModel	m = ev->model;
	int64		res_id = r->res_id;
	OdooRow	   *row = rowp;
	OdooCtx		x;
	char	   *state;
	OdooRule	rule;
	List	   *avail;
	char	   *neutral;
	bool		live;

	r->found = row_load(row, A_D) != NULL;
	if (!r->found)
	{
		r->note = psprintf("%s %ld does not exist", model_table[m], (long) res_id);
		return;
	}
	r->company_id = row_int(row, A_D, DC_COMPANY, &r->company_null);
	find_rule(ev, r->company_null, r->company_id, row->snap, &rule);
	r->has_rule = rule.found;
	if (!r->has_rule)
	{
		r->note = r->company_null ?
			psprintf("no rule of event %s applies to %s %ld (it has no company)",
					 ev->name, model_table[m], (long) res_id) :
			psprintf("no rule of event %s applies to company %ld", ev->name,
					 (long) r->company_id);
		return;
	}

	/* Does the event hold now, as the transaction is about to commit? */
	r->fires = true;
	state = row_text(row, A_D, DC_STATE);
	if (m == M_SALE_ORDER)
	{
		if (state == NULL || (strcmp(state, "sale") != 0 && strcmp(state, "done") != 0))
		{
			r->fires = false;
			r->note = psprintf("sale_order %ld is in state %s, not sale", (long) res_id,
							   state ? state : "NULL");
		}
	}
	else
	{
		char	   *mt = row_text(row, A_D, DC_MOVE_TYPE);

		if (mt == NULL || strcmp(mt, ev->move_type) != 0)
		{
			r->fires = false;
			r->note = psprintf("account_move %ld is of move_type %s; %s fires for %s only",
							   (long) res_id, mt ? mt : "NULL", ev->name, ev->move_type);
		}
		else if (state == NULL || strcmp(state, "posted") != 0)
		{
			r->fires = false;
			r->note = psprintf("account_move %ld is in state %s, not posted", (long) res_id,
							   state ? state : "NULL");
		}
		else if (ev->needs_sent)
		{
			if (!row_bool(row, A_D, DC_SENT))
			{
				r->fires = false;
				r->note = psprintf("account_move %ld is not sent (is_move_sent is not true)",
								   (long) res_id);
			}
		}
	}
	if (r->fires && !wa_odoo_events)
	{
		r->fires = false;
		r->note = pstrdup("whatsapp.odoo_events is off");
	}
	if (r->fires && odoo_paused())
	{
		r->fires = false;
		r->note = pstrdup("the Odoo events of this database are paused (whatsapp.wa_odoo_pause); whatsapp.wa_odoo_resume() ends the pause");
	}
	/* Too old?  The document's own date: date_order, invoice_date, date. */
	if (r->fires && wa_odoo_max_age > 0)
	{
		int			col = DC_DATE;
		Timestamp	ts;
		bool		have = row_ts(row, A_D, DC_DATE, &ts);

		if (!have && m == M_ACCOUNT_MOVE)
		{
			col = DC_DATE2;
			have = row_ts(row, A_D, DC_DATE2, &ts);
		}
		if (have)
		{
			Timestamp	end = ts;
			TimestampTz limit = GetCurrentTransactionStartTimestamp() -
				(TimestampTz) wa_odoo_max_age * USECS_PER_MINUTE;

			/* a date counts until the end of its day */
			if (s->cat.atttype[col] == DATEOID)
				end += USECS_PER_DAY;
			if (end < limit)
			{
				r->fires = false;
				r->note = psprintf("%s %ld is older than whatsapp.odoo_max_age (%s is %s)",
								   model_table[m], (long) res_id, qcol(m, col),
								   DatumGetCString(DirectFunctionCall1(timestamp_out,
																	   TimestampGetDatum(ts))));
			}
		}
	}
	if (!r->fires && !for_preview)
		return;

	/* The rule, its account and its template's languages */
	r->template = rule.template;
	r->account = rule.account;
	r->rule_company_null = rule.company_null;
	r->rule_company = rule.company_id;
	avail = template_languages(rule.template, rule.account, row->snap);
	x.m = m;
	x.cat = &s->cat;
	x.row = row;
	x.r = r;
	x.base_url = NULL;			/* read when a portal link needs it */
	x.for_preview = for_preview;
	if (rule.params != NULL && JB_ROOT_IS_OBJECT(rule.params))
	{
		JsonbValue *bu = getKeyJsonValueFromContainer(&rule.params->root, "base_url", 8, NULL);

		if (bu != NULL && bu->type == jbvString)
		{
			x.base_url = pnstrdup(bu->val.string.val, bu->val.string.len);
			r->base_url_from_rule = true;
		}
	}

	r->document = nonempty(row_text(row, A_D, DC_NAME));
	r->dedupe_key = psprintf("%s:%ld:%s", model_name[m], (long) res_id, ev->name);
	appendStringInfoString(&r->context, "{\"model\": ");
	escape_json(&r->context, model_name[m]);
	appendStringInfo(&r->context, ", \"res_id\": %ld, \"event\": ", (long) res_id);
	escape_json(&r->context, ev->name);
	appendStringInfoChar(&r->context, '}');

	/* dropped: the failure is recorded under the last account of that name */
	r->account_id = find_account(rule.account, row->snap, &live);
	if (!live)
	{
		fail(r, "account",
			 "account \"%s\" of the rule for event %s was dropped; run whatsapp.wa_odoo_enable again with an account that exists",
			 r->account ? r->account : "", ev->name);
	}

	neutral = nonempty(config_value(row, "database.is_neutralized"));
	if (neutral != NULL && (pg_strcasecmp(neutral, "true") == 0 ||
							pg_strcasecmp(neutral, "t") == 0 ||
							strcmp(neutral, "1") == 0))
		fail(r, "account",
			 "not sent: Odoo marked this database neutralized (ir_config_parameter database.is_neutralized), as it does for copies");

	for (int t = 0; t < T_COUNT; t++)
		if (table_required[t] && !OidIsValid(s->cat.relid[t]))
			fail(r, "template", "Odoo table public.%s is missing", table_names[t]);

	/* The recipient, the language, the parameters */
	choose_recipient(&x);
	choose_language(&x, rule.language, avail);

	appendStringInfoString(&r->payload, "{\"type\": \"template\", \"template\": {\"name\": ");
	escape_json(&r->payload, r->template ? r->template : "");
	appendStringInfoString(&r->payload, ", \"language\": {\"code\": ");
	escape_json(&r->payload, r->language ? r->language : "");
	appendStringInfoChar(&r->payload, '}');
	append_components(&x, rule.params, &r->payload);
	appendStringInfoString(&r->payload, "}}");
	appendStringInfoChar(&r->values, '}');

	r->payload_jsonb = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->payload.data));
	if (r->state == NULL)
	{
		/*
		 * Opted out or on Odoo's phone_blacklist (the opt-out rule), or a
		 * template Meta paused?  recipient.c decides, as for wa_send.
		 */
		WaRecipientVerdict v = {0};

		wa_recipient_check(r->account_id, r->recipient, "template", r->payload_jsonb, &v);
		if (v.state != NULL)
		{
			r->state = v.state;
			r->failure_type = v.failure_type;
			r->reason = v.error_title;
			r->error_code = v.error_code;
		}
		else
			r->state = "queued";
	}
	if (r->state != NULL && strcmp(r->state, "failed") == 0 && r->details == NULL)
		r->details = psprintf("Recorded by the whatsapp trigger on %s at commit; the document was saved. wa_odoo_preview('%s', %ld) shows the message as it would be now.",
							  model_table[m], ev->name, (long) res_id);
	if (for_preview)
	{
		r->odoo_version = odoo_version(row);
		r->odoo_version_text = row->version_text;
		r->format_lang = row_text(row, A_L, LC_CODE);
	}
}

/*
 * Write the access_token render created to the document, as the table's
 * owner (odoo_read.c: wa_odoo_as_owner_begin): planned and run with that
 * role's rights, so that its own triggers and rules on the table run as
 * it, as for Odoo's own writes.  The confirming transaction holds the
 * row's lock already.  True when one row was updated.
 */
static SPIPlanPtr token_plan[N_MODELS];
static Oid	token_plan_rel[N_MODELS];

static bool
write_token(OdooRender *r)
{
	OdooModel	m = r->ev->model;
	WaOwnerContext oc;
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	int			rc;
	uint64		n;

	wa_odoo_as_owner_begin(r->doc_relid, &oc);

	/*
	 * Our own triggers on the table must not queue events for this write:
	 * PostgreSQL refuses to queue a deferred trigger inside a
	 * security-restricted operation, and the write enters no state anyway.
	 * Their WHEN clause reads this setting, reverted with the nest level.
	 */
	(void) set_config_option("whatsapp.odoo_events", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (token_plan[m] != NULL && token_plan_rel[m] != r->doc_relid)
	{
		SPI_freeplan(token_plan[m]);
		token_plan[m] = NULL;
	}
	if (token_plan[m] == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(psprintf("UPDATE public.%s SET access_token = $1"
											 " WHERE id = $2 AND (access_token IS NULL OR access_token = '')",
											 model_table[m]), 2, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "whatsapp: could not prepare the access_token write: %s",
				 SPI_result_code_string(SPI_result));
		token_plan[m] = p;
		token_plan_rel[m] = r->doc_relid;
	}
	values[0] = CStringGetTextDatum(r->token_new);
	values[1] = Int64GetDatum(r->res_id);
	rc = SPI_execute_plan(token_plan[m], values, NULL, false, 0);
	n = SPI_processed;
	wa_odoo_as_owner_end(&oc);
	return rc == SPI_OK_UPDATE && n == 1;
}

/*
 * Record what render decided, once per dedupe key.  Inside SPI.
 *
 * The message belongs (queued_by, see ownership.c) to the role the session
 * acts as: the trigger fires at commit, outside any function of the
 * caller's.  The once-per-document probe looks at every role's messages:
 * nothing of them reaches the caller.
 */
static void
record(OdooRender *r)
{
	Oid			types[11] = {INT4OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, TEXTOID, JSONBOID, TEXTOID};
	Datum		values[11];
	char		nulls[11];
	int			rc;
	bool		write_owner;
	char	   *owner;

	if (r->account_id == 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("whatsapp: account \"%s\" of the rule for event %s does not exist; nothing recorded for %s %ld",
						r->account ? r->account : "", r->ev->name,
						model_name[r->ev->model], (long) r->res_id),
				 errhint("Run whatsapp.wa_odoo_enable again with an account that exists.")));
		return;
	}
	/*
	 * The access_token the rendering created, written first: a message
	 * whose link would not work is recorded as failed instead.
	 */
	if (r->token_new != NULL && strcmp(r->state, "queued") == 0 && !write_token(r))
	{
		r->state = NULL;
		fail(r, "template",
			 "%s %ld has no access_token, and writing the new one changed no row (a rule or trigger of the table's owner)",
			 model_name[r->ev->model], (long) r->res_id);
		r->payload_jsonb = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->payload.data));
	}

	/* Until ALTER EXTENSION UPDATE adds queued_by, write without it. */
	write_owner = wa_message_has_queued_by();
	if (plan_insert != NULL && write_owner != plan_insert_writes_owner)
	{
		SPI_freeplan(plan_insert);
		plan_insert = NULL;
	}
	if (plan_insert == NULL)
	{
		SPIPlanPtr	p;

		/*
		 * Once per document and event whatever the account: the rule may
		 * have moved to another account since the first confirmation, and
		 * message_dedupe_key is unique per account only.  One probe of
		 * that index per account (= ANY on its leading column: a join
		 * gets a generic plan that scans the outbox); the confirming
		 * transaction still holds the document's row lock, so two of them
		 * cannot race here.
		 */
		p = SPI_prepare_cursor(psprintf("INSERT INTO whatsapp.message (account_id, recipient, kind,"
										" payload, state, failure_type, error_title, error_details,"
										" error_code, dedupe_key, context, failed_at%s)"
										" SELECT $1, $2, 'template', $3, $4, $5, $6, $7, $8, $9, $10,"
										"  CASE WHEN $4 = 'failed' THEN now() END%s"
										"  WHERE NOT EXISTS (SELECT 1 FROM whatsapp.message d"
										"   WHERE d.account_id = ANY (ARRAY(SELECT a.id FROM whatsapp.account a))"
										"     AND d.dedupe_key = $9)"
										" ON CONFLICT (account_id, dedupe_key) WHERE dedupe_key IS NOT NULL"
										" DO NOTHING",
										write_owner ? ", queued_by" : "",
										write_owner ? ", $11" : ""),
							   11, types, CURSOR_OPT_GENERIC_PLAN);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "whatsapp: could not prepare the Odoo insert");
		plan_insert = p;
		plan_insert_writes_owner = write_owner;
	}
	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(r->account_id);
	if (r->recipient)
		values[1] = CStringGetTextDatum(r->recipient);
	else
		nulls[1] = 'n';
	values[2] = r->payload_jsonb;
	values[3] = CStringGetTextDatum(r->state);
	if (r->failure_type)
		values[4] = CStringGetTextDatum(r->failure_type);
	else
		nulls[4] = 'n';
	if (r->reason)
		values[5] = CStringGetTextDatum(r->reason);
	else
		nulls[5] = 'n';
	if (r->details)
		values[6] = CStringGetTextDatum(r->details);
	else
		nulls[6] = 'n';
	values[7] = Int32GetDatum(r->error_code);
	if (r->error_code == 0)
		nulls[7] = 'n';
	values[8] = CStringGetTextDatum(r->dedupe_key);
	values[9] = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->context.data));
	owner = GetUserNameFromId(GetOuterUserId(), true);
	if (owner != NULL)
		values[10] = CStringGetTextDatum(owner);
	else
		nulls[10] = 'n';
	rc = SPI_execute_plan(plan_insert, values, nulls, false, 1);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "whatsapp: could not record the Odoo message: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed > 0 && strcmp(r->state, "queued") == 0)
		wa_wake_worker_at_commit();
	else if (SPI_processed > 0)
		wa_stats_count_enqueue(r->account_id, r->state, r->failure_type);
}

/* ----------
 * The trigger
 *
 * Since 0.3 the triggers name no column (so that Odoo's own ALTER TABLE
 * of state, move_type or is_move_sent never fails because of them): every
 * INSERT and UPDATE of the table queues an event, and the check that the
 * row entered the event's state, which a WHEN clause made before, is
 * made here first, from the two row versions the trigger is handed, with
 * column numbers cached until the table's next relcache invalidation.
 * ----------
 */
typedef struct TrigCols
{
	Oid			relid;			/* InvalidOid: not computed */
	AttrNumber	state;			/* 0: missing or not text */
	AttrNumber	move_type;
	AttrNumber	sent;			/* 0: missing or not boolean */
} TrigCols;

static TrigCols trig_cols[N_MODELS];
static bool trig_callback_registered = false;

static void
trig_cols_changed(Datum arg, Oid relid)
{
	for (int m = 0; m < N_MODELS; m++)
		if (!OidIsValid(relid) || trig_cols[m].relid == relid)
			trig_cols[m].relid = InvalidOid;
}

static AttrNumber
trig_attnum(TupleDesc desc, const char *name, bool text)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
		{
			if (text ? (a->atttypid == TEXTOID || a->atttypid == VARCHAROID) :
				a->atttypid == BOOLOID)
				return a->attnum;
			return 0;
		}
	}
	return 0;
}

static const TrigCols *
trig_columns(OdooModel m, Relation rel)
{
	TrigCols   *tc = &trig_cols[m];

	if (!trig_callback_registered)
	{
		CacheRegisterRelcacheCallback(trig_cols_changed, (Datum) 0);
		trig_callback_registered = true;
	}
	if (tc->relid != RelationGetRelid(rel))
	{
		TupleDesc	desc = RelationGetDescr(rel);

		tc->state = trig_attnum(desc, "state", true);
		tc->move_type = trig_attnum(desc, "move_type", true);
		tc->sent = trig_attnum(desc, "is_move_sent", false);
		tc->relid = RelationGetRelid(rel);
	}
	return tc;
}

/* Is text column att of tup one of the words (NULL-terminated)? */
static bool
trig_text_in(HeapTuple tup, TupleDesc desc, AttrNumber att, const char *const *words)
{
	bool		isnull;
	Datum		d;
	text	   *t;
	int			len;

	if (att == 0)
		return false;
	d = heap_getattr(tup, att, desc, &isnull);
	if (isnull)
		return false;
	t = (text *) PG_DETOAST_DATUM_PACKED(d);
	len = VARSIZE_ANY_EXHDR(t);
	for (; *words; words++)
		if ((int) strlen(*words) == len && memcmp(VARDATA_ANY(t), *words, len) == 0)
			return true;
	return false;
}

/* Does the row hold the event's state (the condition at commit, again)? */
static bool
trig_row_holds(const OdooEvent *ev, const TrigCols *tc, TupleDesc desc, HeapTuple tup)
{
	static const char *const sale_states[] = {"sale", "done", NULL};
	static const char *const posted[] = {"posted", NULL};
	const char *mt[2] = {ev->move_type, NULL};
	bool		isnull;
	Datum		d;

	if (tup == NULL)
		return false;
	if (ev->model == M_SALE_ORDER)
		return trig_text_in(tup, desc, tc->state, sale_states);
	if (!trig_text_in(tup, desc, tc->state, posted) ||
		!trig_text_in(tup, desc, tc->move_type, mt))
		return false;
	if (!ev->needs_sent)
		return true;
	if (tc->sent == 0)
		return false;
	d = heap_getattr(tup, tc->sent, desc, &isnull);
	return !isnull && DatumGetBool(d);
}

PG_FUNCTION_INFO_V1(wa_odoo_trigger);

Datum
wa_odoo_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	const OdooEvent *ev;
	char	   *nsp;
	HeapTuple	tup;
	int			attno;
	Datum		d;
	bool		isnull;
	int64		id;
	Oid			type;
	OdooRender	r;
	Relation	rel;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("whatsapp._odoo_trigger() may only be called as a trigger"),
				 errhint("Use whatsapp.wa_odoo_enable() to install it.")));
	td = (TriggerData *) fcinfo->context;
	rel = td->tg_relation;
	nsp = get_namespace_name(RelationGetNamespace(rel));

	/* A trigger made by hand, not by wa_odoo_enable: say so, never fail. */
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) ||
		td->tg_trigger->tgnargs < 1 ||
		(ev = find_event(td->tg_trigger->tgargs[0])) == NULL ||
		strcmp(RelationGetRelationName(rel), model_table[ev->model]) != 0 ||
		nsp == NULL || strcmp(nsp, "public") != 0)
	{
		ereport(WARNING,
				(errmsg("whatsapp: trigger \"%s\" on \"%s\" was not made by whatsapp.wa_odoo_enable(); it does nothing",
						td->tg_trigger->tgname, RelationGetRelationName(rel))));
		return PointerGetDatum(NULL);
	}
	if (!wa_odoo_events)
		return PointerGetDatum(NULL);

	/* Did the row enter the event's state?  Most firings end here. */
	{
		const TrigCols *tc = trig_columns(ev->model, rel);
		TupleDesc	desc = RelationGetDescr(rel);

		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		{
			if (!trig_row_holds(ev, tc, desc, td->tg_newtuple) ||
				trig_row_holds(ev, tc, desc, td->tg_trigtuple))
				return PointerGetDatum(NULL);
		}
		else if (!trig_row_holds(ev, tc, desc, td->tg_trigtuple))
			return PointerGetDatum(NULL);
	}

	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	attno = SPI_fnumber(RelationGetDescr(rel), "id");
	if (attno <= 0)
		return PointerGetDatum(NULL);
	type = SPI_gettypeid(RelationGetDescr(rel), attno);
	d = heap_getattr(tup, attno, RelationGetDescr(rel), &isnull);
	if (isnull)
		return PointerGetDatum(NULL);
	if (type == INT4OID)
		id = DatumGetInt32(d);
	else if (type == INT8OID)
		id = DatumGetInt64(d);
	else
		return PointerGetDatum(NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "whatsapp: SPI_connect failed");
	render(ev, id, false, &r);
	if (r.fires && r.state != NULL)
		record(&r);
	SPI_finish();
	return PointerGetDatum(NULL);
}

/* ----------
 * wa_odoo_preview(event text, record_id integer) RETURNS jsonb
 * ----------
 */
static void
json_kv_str(StringInfo b, const char *key, const char *val)
{
	appendStringInfoString(b, ", ");
	escape_json(b, key);
	appendStringInfoString(b, ": ");
	if (val)
		escape_json(b, val);
	else
		appendStringInfoString(b, "null");
}

/* What the catalog says about Odoo's version. */
static const char *
odoo_schema_guess(const OdooCatalog *c)
{
	Oid			so = get_relname_relid("sale_order", get_namespace_oid("public", true));
	bool		locked = OidIsValid(so) && get_attnum(so, "locked") > 0;

	if (OidIsValid(c->relid[T_PARTNER]) && !col_ok(c, PC_MOBILE))
		return "19 or later (res_partner has no mobile)";
	if (OidIsValid(so) && !locked)
		return "16 (sale_order has no locked)";
	if (OidIsValid(so))
		return "17 or 18 (res_partner has mobile, sale_order has locked)";
	return "16 to 18 (res_partner has mobile)";
}

PG_FUNCTION_INFO_V1(wa_odoo_preview);

Datum
wa_odoo_preview(PG_FUNCTION_ARGS)
{
	char	   *event;
	const OdooEvent *ev;
	int64		id;
	OdooRender	r;
	StringInfoData b;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext old;
	Datum		result;
	Oid			nsp;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event and record_id must not be NULL")));
	event = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ev = find_event(event);
	if (ev == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not an Odoo event", event),
				 errhint("The events are sale_order_confirmed, invoice_posted, refund_posted and invoice_sent.")));
	id = PG_GETARG_INT32(1);
	nsp = get_namespace_oid("public", true);
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid(model_table[ev->model], nsp)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("Odoo table \"public.%s\" does not exist", model_table[ev->model]),
				 errhint("Run wa_odoo_preview in the database of an Odoo instance.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "whatsapp: SPI_connect failed");
	render(ev, id, true, &r);
	if (!r.found)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("%s %ld does not exist", model_table[ev->model], (long) id)));
	if (!r.has_rule)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s", r.note),
				 errhint("Enable it with whatsapp.wa_odoo_enable('%s', ...).", ev->name)));

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"event\": ");
	escape_json(&b, ev->name);
	json_kv_str(&b, "model", model_name[ev->model]);
	appendStringInfo(&b, ", \"res_id\": %ld", (long) id);
	json_kv_str(&b, "document", r.document);
	if (r.company_null)
		appendStringInfoString(&b, ", \"company_id\": null");
	else
		appendStringInfo(&b, ", \"company_id\": %ld", (long) r.company_id);
	if (r.rule_company_null)
		appendStringInfoString(&b, ", \"rule_company_id\": null");
	else
		appendStringInfo(&b, ", \"rule_company_id\": %ld", (long) r.rule_company);
	appendStringInfo(&b, ", \"fires\": %s", r.fires ? "true" : "false");
	json_kv_str(&b, "why_not", r.fires ? NULL : r.note);

	/* already recorded under this dedupe key, in any account (see record)? */
	if (r.account_id != 0)
	{
		Oid			types[1] = {TEXTOID};
		Datum		args[1] = {CStringGetTextDatum(r.dedupe_key)};

		wa_plan(&plan_existing,
				"SELECT id, state FROM whatsapp.message"
				" WHERE account_id = ANY (ARRAY(SELECT a.id FROM whatsapp.account a))"
				"   AND dedupe_key = $1 ORDER BY id LIMIT 1", 1, types);
		if (SPI_execute_plan(plan_existing, args, NULL, false, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
			appendStringInfo(&b, ", \"already_recorded\": {\"id\": %s, \"state\": \"%s\"}",
							 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
							 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
		else
			appendStringInfoString(&b, ", \"already_recorded\": null");
	}
	json_kv_str(&b, "outcome", r.state);
	json_kv_str(&b, "failure_type", r.failure_type);
	json_kv_str(&b, "reason", r.reason);
	json_kv_str(&b, "account", r.account);
	json_kv_str(&b, "recipient", r.recipient);
	json_kv_str(&b, "template", r.template);
	json_kv_str(&b, "language", r.language);
	appendStringInfoString(&b, ", \"values\": ");
	appendStringInfoString(&b, r.values.len > 1 ? r.values.data : "{}");
	appendStringInfoString(&b, ", \"message\": ");
	appendStringInfoString(&b, r.payload.len ? r.payload.data : "null");
	json_kv_str(&b, "dedupe_key", r.dedupe_key);
	appendStringInfoString(&b, ", \"context\": ");
	appendStringInfoString(&b, r.context.len ? r.context.data : "null");
	json_kv_str(&b, "odoo_schema", odoo_schema_guess(&model_state[ev->model].cat));
	if (r.odoo_version > 0)
		appendStringInfo(&b, ", \"odoo_version\": %d", r.odoo_version);
	else
		appendStringInfoString(&b, ", \"odoo_version\": null");
	json_kv_str(&b, "odoo_version_source", r.odoo_version > 0 ?
				psprintf("ir_module_module: base %s", r.odoo_version_text) :
				"unknown: ir_module_module has no installed base module; see odoo_schema");
	json_kv_str(&b, "format_language", r.format_lang);
	json_kv_str(&b, "link_warning", (r.link_page || r.link_pdf) ?
				wa_odoo_link_warning(r.base_url_used, !r.base_url_from_rule) : NULL);
	appendStringInfo(&b, ", \"access_token_created_at_commit\": %s",
					 r.token_new ? "true" : "false");
	appendStringInfoString(&b, ", \"links\": {\"page\": ");
	if (r.link_page)
		escape_json(&b, r.link_page);
	else
		appendStringInfoString(&b, "null");
	appendStringInfoString(&b, ", \"pdf\": ");
	if (r.link_pdf)
		escape_json(&b, r.link_pdf);
	else
		appendStringInfoString(&b, "null");
	appendStringInfoChar(&b, '}');
	appendStringInfoChar(&b, '}');

	old = MemoryContextSwitchTo(outer);
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(b.data)));
	MemoryContextSwitchTo(old);
	SPI_finish();
	PG_RETURN_DATUM(result);
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
	s = format_amount(PG_GETARG_NUMERIC(0),
					  currency_decimals(PG_ARGISNULL(1) ? NULL :
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
	s = format_date(PG_GETARG_TIMESTAMP(0),
					PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (s == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(s));
}
