/*-------------------------------------------------------------------------
 *
 * odoo_data.c
 *	  Reading Odoo's data for the Odoo triggers: which of Odoo's tables and
 *	  columns exist (the catalog, per model), the rows of one rendering (the
 *	  document, its partner, company, country, currency and language, with
 *	  Odoo's language fallback), Odoo's version, and ir_config_parameter.
 *
 * Speed.  Most confirmations are transactions of their own, so what a
 * firing costs is mostly what starting queries costs.  The rows are
 * therefore read without SQL: each one by an index on its key (the
 * document by id, its partner by partner_id, ...) with systable_beginscan,
 * in a snapshot that sees the transaction's own writes.  Which tables,
 * columns and indexes exist is computed from the catalog once and again
 * after every catalog invalidation (syscache callbacks), under locks that
 * keep it true until commit.  The low-level readers (which relation may be
 * read at all, the key index, the scan) are in odoo_read.c.
 *
 * Never assume Odoo's version: which tables and columns exist, and with
 * what types, is read from the catalog.  A column that is missing or has
 * a type we cannot read counts as missing.  Odoo's tables live in schema
 * public.
 *
 *-------------------------------------------------------------------------
 */
#include "odoo.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

const char *const odoo_model_table[N_MODELS] = {"sale_order", "account_move"};
const char *const odoo_model_name[N_MODELS] = {"sale.order", "account.move"};
const char *const odoo_model_portal[N_MODELS] = {"/my/orders/", "/my/invoices/"};

/* ----------
 * What we read from Odoo's catalog
 * ----------
 */
const char *const odoo_table_names[T_COUNT] = {
	NULL,						/* the model's table */
	"res_partner", "res_company", "res_country", "res_currency", "res_lang",
	"ir_config_parameter", "phone_blacklist", "ir_module_module"
};

#define BOTH(n) {n, n}
const ColDef odoo_coldefs[NCOLS] = {
	[DC_ID] = {T_DOC, BOTH("id"), K_ID},
	[DC_NAME] = {T_DOC, BOTH("name"), K_TEXT},
	[DC_STATE] = {T_DOC, BOTH("state"), K_TEXT},
	[DC_MOVE_TYPE] = {T_DOC, {NULL, "move_type"}, K_TEXT},
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

static OdooModelState model_state[N_MODELS];
static bool callbacks_registered = false;

static void
odoo_catalog_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	for (int m = 0; m < N_MODELS; m++)
		model_state[m].current = false;
	odoo_own_tables_changed();
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

/* Can rows be looked up by this column (an integer, or text)? */
static bool
key_type_ok(int col, Oid type)
{
	if (odoo_coldefs[col].kind == K_ID)
		return type == INT2OID || type == INT4OID || type == INT8OID;
	return type == TEXTOID || type == VARCHAROID;
}

static void
catalog_compute(OdooModel m, OdooCatalog *c)
{
	memset(c, 0, sizeof(*c));
	for (int t = 0; t < T_COUNT; t++)
	{
		const char *name = t == T_DOC ? odoo_model_table[m] : odoo_table_names[t];
		Oid			relid;

		/* only an ordinary table is read (odoo_read.c says why) */
		relid = wa_odoo_table(name, LOG);
		if (!OidIsValid(relid))
			continue;
		c->relid[t] = relid;
	}
	for (int i = 0; i < NCOLS; i++)
	{
		const ColDef *d = &odoo_coldefs[i];
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
				if (odoo_coldefs[i].table == t)
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
OdooModelState *
odoo_prepare_model(OdooModel m)
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
 * The rows of one rendering
 * ----------
 */
static Relation
row_rel(OdooRow *r, int t)
{
	if (r->rels[t] == NULL)
		r->rels[t] = relation_open(r->cat->relid[t], NoLock);
	return r->rels[t];
}

void
odoo_row_close(OdooRow *r)
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
						  RelationGetDescr(row_rel(r, odoo_coldefs[col].table)), &isnull);
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

HeapTuple
odoo_row_load(OdooRow *r, int a)
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
	else if (odoo_coldefs[def->key_col].kind == K_ID)
	{
		bool		isnull;
		int64		key = odoo_row_int(r, def->from_alias, def->from_col, &isnull);

		if (!isnull)
			r->tup[a] = fetch_row(r, t, key, NULL);
	}
	else
	{
		char	   *key = odoo_row_text(r, def->from_alias, def->from_col);

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

	if (odoo_row_load(r, alias) == NULL || !col_ok(r->cat, col))
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

	if (odoo_row_load(r, alias) == NULL)
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

char *
odoo_row_text(OdooRow *r, int alias, int col)
{
	Datum		d;

	return row_get(r, alias, col, &d) ? datum_text(r, col, d) : NULL;
}

bool
odoo_row_null(OdooRow *r, int alias, int col)
{
	Datum		d;

	return !row_get(r, alias, col, &d);
}

int64
odoo_row_int(OdooRow *r, int alias, int col, bool *isnull)
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

Numeric
odoo_row_num(OdooRow *r, int alias, int col)
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
bool
odoo_row_ts(OdooRow *r, int alias, int col, Timestamp *ts)
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

/* ----------
 * Odoo's version and settings; column names for messages
 * ----------
 */
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
int
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

/* A value of Odoo's ir_config_parameter, or NULL. */
char *
odoo_config_value(OdooRow *r, const char *key)
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

const char *
odoo_qcol(OdooModel m, int col)
{
	const ColDef *d = &odoo_coldefs[col];
	const char *t = d->table == T_DOC ? odoo_model_table[m] : odoo_table_names[d->table];

	return psprintf("%s.%s", t, d->name[m]);
}

/* Why a column is unusable: missing, or of a type we cannot read. */
char *
odoo_col_problem(const OdooCatalog *c, OdooModel m, int col)
{
	const ColDef *d = &odoo_coldefs[col];
	Oid			relid = c->relid[d->table];
	AttrNumber	att;

	if (!OidIsValid(relid))
		return psprintf("table public.%s is missing",
						d->table == T_DOC ? odoo_model_table[m] : odoo_table_names[d->table]);
	att = get_attnum(relid, d->name[m]);
	if (att <= 0)
		return psprintf("column %s is missing", odoo_qcol(m, col));
	return psprintf("column %s has type %s, which the whatsapp extension cannot read",
					odoo_qcol(m, col), format_type_be(get_atttype(relid, att)));
}

/* What the catalog says about Odoo's version. */
const char *
odoo_schema_guess(OdooModel m)
{
	const OdooCatalog *c = &model_state[m].cat;
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
