/*-------------------------------------------------------------------------
 *
 * odoo_read.c
 *	  Reading Odoo's tables without running code that Odoo's role wrote.
 *
 * Every table in an Odoo database's schema public belongs to Odoo's own
 * database role, which is not a superuser but owns the database and so
 * the schema.  That role can attach code to its tables: index
 * expressions (the planner evaluates them while it plans any query on the
 * table), a view in place of a table, rules, row security policies,
 * triggers, and columns of its own types with their own operators and
 * implicit casts.  The extension's SECURITY DEFINER functions and its
 * worker run as the bootstrap superuser, so any of that code, reached
 * from SQL that they plan or run, would run as a superuser.
 *
 * Hence the rule: the extension never plans or runs SQL on a relation in
 * schema public with its own rights.  It writes to one in a single case,
 * a document's missing access_token, and then as the table's owner
 * (wa_odoo_as_owner_begin, below).  It reads Odoo's rows only here
 * and in odoo_data.c, and always the same way:
 *
 * - The relation must be an ordinary table (relkind 'r').  A view, a
 *	 partitioned or foreign table, a sequence or a materialized view in its
 *	 place is not read: the caller treats the table as missing, and the
 *	 server log says why, once per relation and process.
 * - Each column read must be of a type we know by OID: integers, text and
 *	 varchar, boolean.  Any other type counts as a missing column.
 * - Rows are fetched with systable_beginscan: through a valid btree index
 *	 whose first key is the plain column, without expressions or predicate,
 *	 or else by a heap scan.  The comparison is a built-in function
 *	 (texteq, int4eq, ...); operator classes can only be created by a
 *	 superuser.  No planner, executor, rule, trigger or policy is involved,
 *	 so nothing that a non-superuser wrote is ever called.
 * - Column values are read with heap_getattr and converted by built-in
 *	 functions.
 *
 * Locks: a table is looked up with AccessShareLock, held to the end of
 * the transaction, so that its columns and its index stay as checked.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "odoo_links.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(wa_odoo_company_exists);
PG_FUNCTION_INFO_V1(wa_odoo_link_warnings);

/* What a relkind is called in messages. */
static const char *
relkind_name(char relkind)
{
	switch (relkind)
	{
		case RELKIND_VIEW:
			return "view";
		case RELKIND_MATVIEW:
			return "materialized view";
		case RELKIND_PARTITIONED_TABLE:
			return "partitioned table";
		case RELKIND_FOREIGN_TABLE:
			return "foreign table";
		case RELKIND_SEQUENCE:
			return "sequence";
		case RELKIND_COMPOSITE_TYPE:
			return "composite type";
		case RELKIND_INDEX:
		case RELKIND_PARTITIONED_INDEX:
			return "index";
		default:
			return "relation of another kind";
	}
}

/*
 * Relations already reported in this process, so that a view in place of
 * a table is logged once, not at every message.
 */
#define WA_REPORTED_MAX 16
static Oid	reported[WA_REPORTED_MAX];
static int	nreported = 0;

static bool
report_once(Oid relid)
{
	for (int i = 0; i < nreported; i++)
		if (reported[i] == relid)
			return false;
	if (nreported < WA_REPORTED_MAX)
		reported[nreported++] = relid;
	return true;
}

Oid
wa_odoo_table(const char *relname, int elevel)
{
	Oid			relid;
	char		relkind;

	relid = RangeVarGetRelidExtended(makeRangeVar("public", (char *) relname, -1),
									 AccessShareLock, RVR_MISSING_OK, NULL, NULL);
	if (!OidIsValid(relid))
		return InvalidOid;
	relkind = get_rel_relkind(relid);
	if (relkind == RELKIND_RELATION)
		return relid;
	if (elevel >= ERROR || report_once(relid))
		ereport(elevel,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("public.%s is a %s, not a table, so the whatsapp extension does not read it",
						relname, relkind_name(relkind)),
				 errdetail("The extension reads Odoo's tables only when they are ordinary tables, so that no code of their owner runs with the extension's rights."),
				 errhint("Restore public.%s as the table Odoo creates.", relname)));
	return InvalidOid;
}

/*
 * A column of an Odoo table, when it exists with one of the types in
 * types[] (InvalidOid-terminated); else 0.  *type gets its type.  A column
 * of another type is reported once, at elevel.
 */
AttrNumber
wa_odoo_column(Oid relid, const char *colname, const Oid *types, Oid *type,
			   int elevel)
{
	AttrNumber	att = get_attnum(relid, colname);
	Oid			t;

	if (att <= 0)
		return 0;
	t = get_atttype(relid, att);
	for (const Oid *p = types; OidIsValid(*p); p++)
		if (*p == t)
		{
			if (type)
				*type = t;
			return att;
		}
	if (elevel >= ERROR || report_once(relid))
		ereport(elevel,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column %s of public.%s is of type %s, which the whatsapp extension does not read",
						colname, get_rel_name(relid), format_type_be(t)),
				 errdetail("The extension reads Odoo's columns only when they have the built-in types Odoo gives them.")));
	return 0;
}

/*
 * A valid btree index whose first column is plainly column att, of an
 * operator class for the column's type (integers; text for text and
 * varchar), without predicate or expressions.  InvalidOid when none.
 * *collation gets the collation of that index column.
 */
Oid
wa_key_index(Oid relid, AttrNumber att, Oid atttype, Oid *collation)
{
	Relation	rel = relation_open(relid, NoLock);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			found = InvalidOid;

	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		HeapTuple	itup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
		HeapTuple	ctup;
		Form_pg_index ind;
		bool		ok;

		if (!HeapTupleIsValid(itup))
			continue;
		ind = (Form_pg_index) GETSTRUCT(itup);
		ok = ind->indisvalid && ind->indisready && ind->indislive &&
			ind->indnkeyatts >= 1 && ind->indkey.values[0] == att &&
			heap_attisnull(itup, Anum_pg_index_indexprs, NULL) &&
			heap_attisnull(itup, Anum_pg_index_indpred, NULL);
		if (ok)
		{
			bool		isnull;
			Datum		d = SysCacheGetAttr(INDEXRELID, itup, Anum_pg_index_indclass, &isnull);
			oidvector  *indclass = (oidvector *) DatumGetPointer(d);
			Oid			opcin = isnull ? InvalidOid : get_opclass_input_type(indclass->values[0]);

			ok = atttype == TEXTOID || atttype == VARCHAROID ? opcin == TEXTOID : opcin == atttype;
			if (ok)
			{
				d = SysCacheGetAttr(INDEXRELID, itup, Anum_pg_index_indcollation, &isnull);
				*collation = isnull ? InvalidOid :
					((oidvector *) DatumGetPointer(d))->values[0];
			}
		}
		ReleaseSysCache(itup);
		if (!ok)
			continue;
		ctup = SearchSysCache1(RELOID, ObjectIdGetDatum(indexoid));
		if (!HeapTupleIsValid(ctup))
			continue;
		ok = ((Form_pg_class) GETSTRUCT(ctup))->relam == BTREE_AM_OID;
		ReleaseSysCache(ctup);
		if (ok)
		{
			found = indexoid;
			break;
		}
	}
	list_free(indexes);
	relation_close(rel, NoLock);
	if (OidIsValid(found))
		LockRelationOid(found, AccessShareLock);
	return found;
}

/*
 * Start a scan of the rows of rel whose column att (of type atttype: an
 * integer type, text or varchar) equals ikey or tkey.  index and coll come
 * from wa_key_index; InvalidOid: a heap scan, which compares text in the
 * "C" collation, byte for byte.  Returns NULL when no row can match (an
 * integer key out of the column's range).
 */
SysScanDesc
wa_key_scan(Relation rel, AttrNumber att, Oid atttype, Oid index, Oid coll,
			int64 ikey, const char *tkey, Snapshot snap)
{
	ScanKeyData skey;

	switch (atttype)
	{
		case INT2OID:
			if (ikey < PG_INT16_MIN || ikey > PG_INT16_MAX)
				return NULL;
			ScanKeyInit(&skey, att, BTEqualStrategyNumber, F_INT2EQ,
						Int16GetDatum((int16) ikey));
			break;
		case INT4OID:
			if (ikey < PG_INT32_MIN || ikey > PG_INT32_MAX)
				return NULL;
			ScanKeyInit(&skey, att, BTEqualStrategyNumber, F_INT4EQ,
						Int32GetDatum((int32) ikey));
			break;
		case INT8OID:
			ScanKeyInit(&skey, att, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(ikey));
			break;
		case TEXTOID:
		case VARCHAROID:
			ScanKeyInit(&skey, att, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(tkey));
			/* an index is searched in its own collation, a heap scan in C */
			skey.sk_collation = OidIsValid(index) && OidIsValid(coll) ? coll : C_COLLATION_OID;
			break;
		default:
			elog(ERROR, "whatsapp: cannot look up rows by a column of type %u", atttype);
	}
	return systable_beginscan(rel, index, OidIsValid(index), snap, 1, &skey);
}

/* The snapshot of the statement running, or a fresh one. */
static Snapshot
read_snapshot(void)
{
	return ActiveSnapshotSet() ? GetActiveSnapshot() : GetLatestSnapshot();
}

static const Oid text_types[] = {TEXTOID, VARCHAROID, InvalidOid};
static const Oid bool_types[] = {BOOLOID, InvalidOid};
static const Oid id_types[] = {INT4OID, INT8OID, INT2OID, InvalidOid};

/*
 * A table read by a text key column for one value column, with what the
 * catalog said about it: kept until the next catalog invalidation, since
 * the worker reads phone_blacklist for every message it claims.
 */
typedef struct KeyedTable
{
	bool		current;		/* no invalidation since computed */
	bool		usable;			/* the columns are there, of our types */
	Oid			relid;
	AttrNumber	key;
	Oid			keytype;
	AttrNumber	value;
	Oid			index;			/* InvalidOid: a heap scan */
	Oid			coll;
} KeyedTable;

static KeyedTable blacklist;
static KeyedTable config;
static bool callbacks_registered = false;

static void
keyed_tables_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	blacklist.current = false;
	config.current = false;
}

/*
 * public.relname, locked, with its key column (text or varchar) and a
 * value column of one of value_types; NULL when it is missing or not as
 * Odoo makes it.
 */
static KeyedTable *
keyed_table(KeyedTable *kt, const char *relname, const char *keycol,
			const char *valuecol, const Oid *value_types)
{
	Oid			relid;

	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(RELOID, keyed_tables_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(ATTNAME, keyed_tables_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(INDEXRELID, keyed_tables_changed, (Datum) 0);
		callbacks_registered = true;
	}
	relid = wa_odoo_table(relname, LOG);
	if (!OidIsValid(relid))
		return NULL;
	if (kt->current && kt->relid == relid)
	{
		/* the index as computed, unless taking its lock brings news */
		if (kt->usable && OidIsValid(kt->index))
			LockRelationOid(kt->index, AccessShareLock);
		if (kt->current)
			return kt->usable ? kt : NULL;
	}
	kt->current = true;
	kt->relid = relid;
	kt->key = wa_odoo_column(relid, keycol, text_types, &kt->keytype, LOG);
	kt->value = wa_odoo_column(relid, valuecol, value_types, NULL, LOG);
	kt->usable = kt->key != 0 && kt->value != 0;
	kt->index = InvalidOid;
	kt->coll = InvalidOid;
	if (kt->usable)
		kt->index = wa_key_index(relid, kt->key, kt->keytype, &kt->coll);
	return kt->usable ? kt : NULL;
}

/*
 * Is number (E.164 with "+", as Odoo stores it) active on Odoo's
 * public.phone_blacklist(number, active)?  False when the table is
 * missing or not as Odoo makes it.  snap NULL: the active snapshot.
 */
bool
wa_odoo_blacklisted(const char *number, Snapshot snap)
{
	KeyedTable *kt = keyed_table(&blacklist, "phone_blacklist", "number", "active",
								 bool_types);
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	if (kt == NULL)
		return false;
	rel = table_open(kt->relid, NoLock);
	scan = wa_key_scan(rel, kt->key, kt->keytype, kt->index, kt->coll, 0, number,
					   snap ? snap : read_snapshot());
	while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		active = heap_getattr(tup, kt->value, RelationGetDescr(rel), &isnull);

		found = !isnull && DatumGetBool(active);
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	return found;
}

/*
 * The value of key in Odoo's public.ir_config_parameter(key, value), or
 * NULL (no such row, or no such table as Odoo makes it).
 */
char *
wa_odoo_config_param(const char *key)
{
	KeyedTable *kt = keyed_table(&config, "ir_config_parameter", "key", "value",
								 text_types);
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *value = NULL;

	if (kt == NULL)
		return NULL;
	rel = table_open(kt->relid, NoLock);
	scan = wa_key_scan(rel, kt->key, kt->keytype, kt->index, kt->coll, 0, key,
					   read_snapshot());
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, kt->value, RelationGetDescr(rel), &isnull);

		if (!isnull)
			value = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	return value;
}

/*
 * whatsapp._odoo_company_exists(company_id integer) RETURNS boolean, for
 * wa_odoo_enable.  Raises when public.res_company is missing, is not a
 * table, or its id is not an integer column.
 */
Datum
wa_odoo_company_exists(PG_FUNCTION_ARGS)
{
	int32		id = PG_GETARG_INT32(0);
	Oid			relid = wa_odoo_table("res_company", ERROR);
	AttrNumber	a_id;
	Oid			idtype = InvalidOid;
	Oid			index;
	Oid			coll = InvalidOid;
	Relation	rel;
	SysScanDesc scan;
	bool		found = false;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("Odoo table \"public.res_company\" does not exist"),
				 errhint("Run it in the database of an Odoo instance, or pass company_id NULL.")));
	a_id = wa_odoo_column(relid, "id", id_types, &idtype, ERROR);
	if (a_id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"id\" of Odoo table \"public.res_company\" does not exist")));
	index = wa_key_index(relid, a_id, idtype, &coll);
	rel = table_open(relid, NoLock);
	scan = wa_key_scan(rel, a_id, idtype, index, coll, id, NULL, read_snapshot());
	if (scan != NULL)
	{
		found = HeapTupleIsValid(systable_getnext(scan));
		systable_endscan(scan);
	}
	table_close(rel, NoLock);
	PG_RETURN_BOOL(found);
}

/*
 * The one write to an Odoo table (a document's missing access_token, see
 * odoo.c) runs with the rights of the table's owner, Odoo's role, never
 * the extension's: whatever triggers and rules that role put on its table
 * run as that role, exactly as they do for Odoo's own writes.  As
 * PostgreSQL's own maintenance commands do for a table's owner (VACUUM,
 * ANALYZE, REFRESH MATERIALIZED VIEW): SetUserIdAndSecContext to the owner
 * with SECURITY_LOCAL_USERID_CHANGE (no SET ROLE, no RESET can undo it)
 * and SECURITY_RESTRICTED_OPERATION (the owner's code may not change
 * session state: no temporary objects, no SET of GUCs that outlive it, no
 * PREPARE, no cursors held beyond), inside a GUC nest level whose
 * search_path is pg_catalog, pg_temp.
 *
 * On an error between begin and end nothing here needs undoing: the
 * error aborts the transaction, or the subtransaction that catches it,
 * and both restore the user id, the security context (AbortTransaction,
 * AbortSubTransaction) and the GUC nest levels (AtEOXact_GUC,
 * AtEOSubXact_GUC) as they were when it began.  A PG_TRY here could only
 * restore them earlier, while the error is still being handled.
 */
void
wa_odoo_as_owner_begin(Oid relid, WaOwnerContext *ctx)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "whatsapp: cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);

	GetUserIdAndSecContext(&ctx->save_userid, &ctx->save_sec_context);
	SetUserIdAndSecContext(owner, ctx->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	ctx->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

void
wa_odoo_as_owner_end(WaOwnerContext *ctx)
{
	AtEOXact_GUC(false, ctx->save_nestlevel);
	SetUserIdAndSecContext(ctx->save_userid, ctx->save_sec_context);
}

/* Is host one Meta cannot reach: localhost, a private or link-local address, a bare name? */
static bool
host_is_private(const char *host, size_t len)
{
	char		h[256];
	unsigned int a,
				b,
				c,
				d;
	char		tail;

	if (len == 0 || len >= sizeof(h))
		return true;
	memcpy(h, host, len);
	h[len] = '\0';
	for (char *p = h; *p; p++)
		*p = pg_ascii_tolower((unsigned char) *p);
	if (strcmp(h, "localhost") == 0 || (len > 10 && strcmp(h + len - 10, ".localhost") == 0) ||
		(len > 6 && strcmp(h + len - 6, ".local") == 0) ||
		(len > 9 && strcmp(h + len - 9, ".internal") == 0) || (len > 4 && strcmp(h + len - 4, ".lan") == 0))
		return true;
	if (h[0] == '[')
		return true;			/* an IPv6 literal: never a public name for a document */
	if (sscanf(h, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4)
		return a == 10 || a == 127 || a == 0 || (a == 172 && b >= 16 && b <= 31) ||
			(a == 192 && b == 168) || (a == 169 && b == 254) || (a == 100 && b >= 64 && b <= 127);
	return strchr(h, '.') == NULL;
}

/*
 * Why links built on base_url (or Odoo's web.base.url, when base_url is
 * NULL) may not work for the customer and for Meta, or NULL when nothing
 * is wrong.  check_freeze: also warn when web.base.url.freeze is not set,
 * since Odoo then rewrites web.base.url to the address of the last
 * administrator who logs in.
 */
char *
wa_odoo_link_warning(const char *base_url, bool check_freeze)
{
	StringInfoData b;
	const char *url = base_url;
	const char *host;
	size_t		hlen;

	initStringInfo(&b);
	if (url == NULL)
		url = wa_odoo_config_param("web.base.url");
	if (url == NULL || url[0] == '\0')
		return pstrdup("ir_config_parameter has no web.base.url, so there is no link to build");
	if (check_freeze)
	{
		char	   *freeze = wa_odoo_config_param("web.base.url.freeze");

		if (freeze == NULL || !(pg_strcasecmp(freeze, "true") == 0 || strcmp(freeze, "1") == 0))
			appendStringInfoString(&b, "web.base.url.freeze is not set, so Odoo rewrites web.base.url to the address of the last administrator who logs in; ");
	}
	if (pg_strncasecmp(url, "https://", 8) == 0)
		host = url + 8;
	else
	{
		appendStringInfo(&b, "%s is not https, and Meta fetches documents over https only; ",
						 pg_strncasecmp(url, "http://", 7) == 0 ? "the base URL" : "the base URL has no https:// scheme and");
		host = strstr(url, "://") ? strstr(url, "://") + 3 : url;
	}
	hlen = strcspn(host, ":/?#");
	if (host[0] == '[')
		hlen = strcspn(host, "]") + 1;
	if (host_is_private(host, hlen))
		appendStringInfo(&b, "host \"%.*s\" is not a public name, so customers and Meta cannot reach it; ",
						 (int) hlen, host);
	if (b.len == 0)
		return NULL;
	b.data[b.len - 2] = '\0';	/* the last "; " */
	return b.data;
}

/*
 * whatsapp._odoo_link_warning(base_url text) RETURNS text, for
 * wa_odoo_enable: NULL when links on base_url (NULL: web.base.url, with
 * its freeze, and the domain of every website) look public.
 */
Datum
wa_odoo_link_warnings(PG_FUNCTION_ARGS)
{
	char	   *w = wa_odoo_link_warning(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)),
										 PG_ARGISNULL(0));

	/* without a base_url of its own, documents from a website use its domain */
	if (PG_ARGISNULL(0))
	{
		char	   *ws = wa_odoo_website_warnings();

		if (ws != NULL)
			w = w == NULL ? ws : psprintf("%s; %s", w, ws);
	}
	if (w == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(w));
}

/*
 * Is text column att of tup one of the words (NULL-terminated)?  False for
 * att 0 (a column the table lacks) and for NULL.
 */
bool
wa_tuple_text_in(HeapTuple tup, TupleDesc desc, AttrNumber att, const char *const *words)
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
