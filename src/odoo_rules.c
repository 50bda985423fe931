/*-------------------------------------------------------------------------
 *
 * odoo_rules.c
 *	  Rules on any Odoo model (whatsapp.wa_odoo_rule): a template sent when
 *	  a row of any table in schema public enters a state, or when a boolean
 *	  SQL condition becomes true, to the partner one of its fields names,
 *	  with parameters taken from field paths such as partner_id.name or
 *	  picking_type_id.name.  Odoo's own WhatsApp app does the same from its
 *	  automation rules (whatsapp.template.variable, field type "field",
 *	  whose field_name is such a path).
 *
 * The trust boundary (odoo_read.c) holds here too.  The trigger runs as
 * the extension's owner, so:
 *
 * - Every row is read in C: the model's row again at commit by its id,
 *	 and each many2one of a path by the id it holds, in the table that the
 *	 column's foreign key references (pg_constraint, through the relcache).
 *	 Each of those tables must be an ordinary table in public, each column
 *	 one the owner of the model's table may read (its ACL), of a built-in
 *	 type.  A view, or a column of another type, ends the path with a
 *	 message recorded as failed.
 * - A rule's SQL condition (set by whatsapp_admin only, and parsed then:
 *	 one expression over the row's columns, no subquery) is planned and
 *	 evaluated with the rights of the table's owner, Odoo's role, inside a
 *	 security-restricted operation with search_path pg_catalog, pg_temp
 *	 (wa_odoo_as_owner_begin), never with the extension's.
 * - The trigger names no column and has no WHEN clause on one (issue 12,
 *	 item 4): the check that the row entered the state is made here, from
 *	 the two row versions the trigger is handed.
 *
 * What the message shares with the four events: the recipient and the
 * language (odoo_render.c: the partner's numbers, its commercial partner,
 * its language with Odoo's fallbacks), the account, the pause, the
 * opt-out rule and the recording once per dedupe key (odoo.c).
 *
 *-------------------------------------------------------------------------
 */
#include "odoo.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/parser.h"
#include "pgtime.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/date.h"
#include "utils/resowner.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* The longest field path: Odoo's own are a few fields deep. */
#define RULE_PATH_MAX_DEPTH 6

typedef struct RuleDef
{
	char	   *name;
	char	   *model;			/* the table in public */
	char	   *template;
	char	   *language;
	char	   *account;
	char	   *partner_field;
	char	   *state_field;
	char	   *state_value;	/* NULL: the condition */
	char	   *condition;
	Jsonb	   *params;
	bool		company_null;
	int32		company_id;
} RuleDef;

static char *
rule_text(HeapTuple tup, TupleDesc desc, const char *col)
{
	int			att = SPI_fnumber(desc, col);
	bool		isnull;
	Datum		d;

	if (att <= 0)
		elog(ERROR, "whatsapp: column %s of whatsapp.odoo_model_rule is missing", col);
	d = heap_getattr(tup, att, desc, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

/* The rule called name, read in C; false when there is none. */
static bool
load_rule(const char *name, Snapshot snap, RuleDef *rd)
{
	Oid			relid;
	Relation	rel;
	TupleDesc	desc;
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	memset(rd, 0, sizeof(*rd));
	relid = RangeVarGetRelidExtended(makeRangeVar("whatsapp", "odoo_model_rule", -1),
									 AccessShareLock, RVR_MISSING_OK, NULL, NULL);
	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, NoLock);
	desc = RelationGetDescr(rel);
	ScanKeyInit(&skey, SPI_fnumber(desc, "name"), BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(name));
	scan = systable_beginscan(rel, InvalidOid, false, snap, 1, &skey);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d;

		found = true;
		rd->name = rule_text(tup, desc, "name");
		rd->model = rule_text(tup, desc, "model");
		rd->template = rule_text(tup, desc, "template");
		rd->language = rule_text(tup, desc, "language");
		rd->account = rule_text(tup, desc, "account");
		rd->partner_field = rule_text(tup, desc, "partner_field");
		rd->state_field = rule_text(tup, desc, "state_field");
		rd->state_value = rule_text(tup, desc, "state_value");
		rd->condition = rule_text(tup, desc, "condition");
		d = heap_getattr(tup, SPI_fnumber(desc, "params"), desc, &isnull);
		rd->params = isnull ? NULL : DatumGetJsonbPCopy(d);
		d = heap_getattr(tup, SPI_fnumber(desc, "company_id"), desc, &rd->company_null);
		rd->company_id = rd->company_null ? 0 : DatumGetInt32(d);
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	return found;
}

/* "stock_picking" -> "stock.picking": the model name Odoo derives the table from */
static char *
model_name_of(const char *table)
{
	char	   *s = pstrdup(table);

	for (char *p = s; *p; p++)
		if (*p == '_')
			*p = '.';
	return s;
}

/* ----------
 * Field paths, read in C
 * ----------
 */

/* What a path needs to format its value as Odoo prints it. */
typedef struct PathFormat
{
	const char *lang;			/* the translation of a translated field */
	const char *date_format;	/* res_lang.date_format; NULL: Odoo's default */
	const char *tz;				/* res_partner.tz; NULL: UTC */
} PathFormat;

/*
 * The table that many2one column att of relid references (a one-column
 * foreign key), if it is an ordinary table in public; else InvalidOid and
 * *why says so.
 */
static Oid
many2one_target(Relation rel, AttrNumber att, char **why)
{
	List	   *fks = RelationGetFKeyList(rel);
	ListCell   *lc;
	Oid			target = InvalidOid;
	char	   *name;

	foreach(lc, fks)
	{
		ForeignKeyCacheInfo *fk = (ForeignKeyCacheInfo *) lfirst(lc);

		if (fk->nkeys == 1 && fk->conkey[0] == att)
		{
			target = fk->confrelid;
			break;
		}
	}
	if (!OidIsValid(target))
	{
		*why = psprintf("column %s.%s is not a many2one (no foreign key)",
						RelationGetRelationName(rel),
						get_attname(RelationGetRelid(rel), att, false));
		return InvalidOid;
	}
	name = get_rel_name(target);
	if (name == NULL || get_rel_namespace(target) != get_namespace_oid("public", false) ||
		wa_odoo_table(name, LOG) != target)
	{
		*why = psprintf("%s.%s references %s, which is not an ordinary table in public",
						RelationGetRelationName(rel),
						get_attname(RelationGetRelid(rel), att, false),
						name ? name : "a relation that is gone");
		return InvalidOid;
	}
	return target;
}

/* May role read column att of relid, by the table's privilege or the column's? */
static bool
may_read(Oid relid, AttrNumber att, Oid role)
{
	return pg_class_aclcheck(relid, role, ACL_SELECT) == ACLCHECK_OK ||
		pg_attribute_aclcheck(relid, att, role, ACL_SELECT) == ACLCHECK_OK;
}

/* The row of relid whose id is id, copied; NULL when there is none. */
static HeapTuple
row_by_id(Relation rel, int64 id, Snapshot snap)
{
	static const Oid id_types[] = {INT4OID, INT8OID, INT2OID, InvalidOid};
	Oid			idtype = InvalidOid;
	AttrNumber	a_id = wa_odoo_column(RelationGetRelid(rel), "id", id_types, &idtype, LOG);
	Oid			coll = InvalidOid;
	Oid			index;
	SysScanDesc scan;
	HeapTuple	tup = NULL;

	if (a_id == 0)
		return NULL;
	index = wa_key_index(RelationGetRelid(rel), a_id, idtype, &coll);
	scan = wa_key_scan(rel, a_id, idtype, index, coll, id, NULL, snap);
	if (scan == NULL)
		return NULL;
	tup = systable_getnext(scan);
	tup = HeapTupleIsValid(tup) ? heap_copytuple(tup) : NULL;
	systable_endscan(scan);
	return tup;
}

/* A translated field's text: lang's, else en_US's, else the first. */
static char *
translation(Jsonb *j, const char *lang)
{
	JsonbValue *v = NULL;
	JsonbIterator *it;
	JsonbValue	k;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(j))
		return NULL;
	if (lang != NULL)
		v = getKeyJsonValueFromContainer(&j->root, lang, strlen(lang), NULL);
	if (v == NULL)
		v = getKeyJsonValueFromContainer(&j->root, "en_US", 5, NULL);
	if (v != NULL && v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	it = JsonbIteratorInit(&j->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		if (tok == WJB_VALUE && k.type == jbvString)
			return pnstrdup(k.val.string.val, k.val.string.len);
	return NULL;
}

/*
 * A value of a built-in type as Odoo prints it: dates in the language's
 * format, datetimes (stored in UTC) in the partner's time zone, translated
 * fields in the partner's language.  NULL and *why for another type.
 */
static char *
format_value(Datum d, Oid type, const PathFormat *pf, char **why)
{
	switch (type)
	{
		case TEXTOID:
		case VARCHAROID:
			return TextDatumGetCString(d);
		case JSONBOID:
			return translation(DatumGetJsonbP(d), pf->lang);
		case DATEOID:
			return odoo_format_date(date2timestamp_no_overflow(DatumGetDateADT(d)),
									pf->date_format);
		case TIMESTAMPOID:
			{
				Timestamp	ts = DatumGetTimestamp(d);
				struct pg_tm tm;
				fsec_t		fsec;

				if (pf->tz != NULL && pg_tzset(pf->tz) != NULL)
					ts = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone,
															   CStringGetTextDatum(pf->tz),
															   TimestampTzGetDatum((TimestampTz) ts)));
				if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
					return NULL;
				return psprintf("%s %02d:%02d", odoo_format_date(ts, pf->date_format),
								tm.tm_hour, tm.tm_min);
			}
		case BPCHAROID:
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case NUMERICOID:
		case FLOAT4OID:
		case FLOAT8OID:
		case BOOLOID:
		case TIMESTAMPTZOID:
			{
				Oid			out;
				bool		varlena;

				getTypeOutputInfo(type, &out, &varlena);
				return OidOutputFunctionCall(out, d);
			}
		default:
			*why = psprintf("it is of type %s, which the whatsapp extension does not read",
							format_type_be(type));
			return NULL;
	}
}

/*
 * The value of field path path ("partner_id.name") from row tup of rel, as
 * text.  Each many2one on the way is followed to the row its id names; a
 * path ending on a many2one means that row's name, as Odoo displays it.
 * reader is the role whose rights every column must have (the owner of the
 * model's table).  Returns NULL with *why NULL when a field on the way is
 * empty, and NULL with *why set when the path cannot be read.  With
 * last_id, the path must end on a many2one, whose id it gets (and
 * *last_rel its table).
 */
static char *
path_value(Relation rel, HeapTuple tup, const char *path, Snapshot snap, Oid reader,
		   const PathFormat *pf, int64 *last_id, Oid *last_rel, char **why)
{
	char	   *copy = pstrdup(path);
	char	   *segs[RULE_PATH_MAX_DEPTH + 1];
	int			nsegs = 0;
	char	   *save = NULL;
	Relation	cur = rel;
	HeapTuple	ctup = tup;
	char	   *result = NULL;
	List	   *opened = NIL;
	ListCell   *lc;

	*why = NULL;
	for (char *s = strtok_r(copy, ".", &save); s; s = strtok_r(NULL, ".", &save))
	{
		if (nsegs == RULE_PATH_MAX_DEPTH)
		{
			*why = psprintf("field path %s is longer than %d fields", path, RULE_PATH_MAX_DEPTH);
			return NULL;
		}
		segs[nsegs++] = s;
	}
	if (nsegs == 0)
	{
		*why = psprintf("field path \"%s\" is empty", path);
		return NULL;
	}
	/* a many2one at the end: its row's name (unless its id is wanted) */
	if (last_id == NULL)
		segs[nsegs] = "name";

	for (int i = 0; i <= nsegs; i++)
	{
		const char *seg = segs[i];
		Oid			relid = RelationGetRelid(cur);
		AttrNumber	att = get_attnum(relid, seg);
		bool		last = (i == nsegs - 1);
		bool		isnull;
		Datum		d;
		Oid			type;
		Oid			target;
		int64		id;

		if (i == nsegs && last_id != NULL)
			break;
		if (att <= 0)
		{
			*why = psprintf("table %s has no column %s", RelationGetRelationName(cur), seg);
			break;
		}
		if (!may_read(relid, att, reader))
		{
			*why = psprintf("role %s may not read %s.%s", GetUserNameFromId(reader, false),
							RelationGetRelationName(cur), seg);
			break;
		}
		type = get_atttype(relid, att);
		d = heap_getattr(ctup, att, RelationGetDescr(cur), &isnull);
		if (i == nsegs)
		{
			/* the name of the row a final many2one names */
			if (!isnull)
				result = format_value(d, type, pf, why);
			break;
		}
		if (last && last_id == NULL && !(type == INT4OID || type == INT8OID || type == INT2OID))
		{
			if (!isnull)
				result = format_value(d, type, pf, why);
			break;
		}
		if (last && last_id == NULL)
		{
			/* an integer: a many2one (followed to its name) or a number */
			List	   *fks = RelationGetFKeyList(cur);
			bool		is_fk = false;

			foreach(lc, fks)
				if (((ForeignKeyCacheInfo *) lfirst(lc))->nkeys == 1 &&
					((ForeignKeyCacheInfo *) lfirst(lc))->conkey[0] == att)
					is_fk = true;
			if (!is_fk)
			{
				if (!isnull)
					result = format_value(d, type, pf, why);
				break;
			}
		}
		if (!(type == INT4OID || type == INT8OID || type == INT2OID))
		{
			*why = psprintf("column %s.%s is not a many2one", RelationGetRelationName(cur), seg);
			break;
		}
		target = many2one_target(cur, att, why);
		if (!OidIsValid(target))
			break;
		if (isnull)
			break;				/* an empty many2one: no value */
		id = type == INT8OID ? DatumGetInt64(d) :
			type == INT4OID ? DatumGetInt32(d) : DatumGetInt16(d);
		if (last && last_id != NULL)
		{
			*last_id = id;
			*last_rel = target;
			result = "";
			break;
		}
		cur = relation_open(target, NoLock);
		opened = lappend(opened, cur);
		ctup = row_by_id(cur, id, snap);
		if (ctup == NULL)
			break;				/* a dangling id: no value */
	}
	foreach(lc, opened)
		relation_close((Relation) lfirst(lc), NoLock);
	return *why != NULL ? NULL : result;
}

/* ----------
 * The condition
 * ----------
 */

/* Does the raw expression tree hold a subquery? */
static bool
has_sublink(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink))
		return true;
	return raw_expression_tree_walker(node, has_sublink, context);
}

/*
 * Is cond one SQL expression, and nothing else?  It is parsed as the
 * target of "SELECT (cond)": a text that closes the parenthesis to add a
 * FROM, a second statement or a subquery is refused.
 */
static void
check_condition_syntax(const char *cond)
{
	List	   *stmts;
	SelectStmt *sel;

	stmts = raw_parser(psprintf("SELECT (%s)", cond), RAW_PARSE_DEFAULT);
	if (list_length(stmts) != 1 ||
		!IsA(((RawStmt *) linitial(stmts))->stmt, SelectStmt))
		goto bad;
	sel = (SelectStmt *) ((RawStmt *) linitial(stmts))->stmt;
	if (sel->op != SETOP_NONE || list_length(sel->targetList) != 1 ||
		sel->fromClause != NIL || sel->whereClause != NULL || sel->groupClause != NIL ||
		sel->havingClause != NULL || sel->windowClause != NIL || sel->valuesLists != NIL ||
		sel->sortClause != NIL || sel->limitCount != NULL || sel->limitOffset != NULL ||
		sel->lockingClause != NIL || sel->withClause != NULL || sel->intoClause != NULL ||
		sel->distinctClause != NIL)
		goto bad;
	if (has_sublink((Node *) sel->targetList, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the condition of an Odoo rule may not contain a subquery"),
				 errhint("Write it over the row's own columns, as in state = 'done' AND priority = '3'; follow a many2one with state_field instead.")));
	return;
bad:
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("the condition of an Odoo rule must be one SQL expression"),
			 errhint("Write a boolean expression over the row's columns, as in state = 'done' AND priority = '3'.")));
}

/*
 * The condition's plan, made as the table's owner: the row is the only
 * parameter, its columns visible by their names and as new.name.
 */
static SPIPlanPtr
condition_plan(Relation rel, const char *cond)
{
	Oid			types[1] = {rel->rd_rel->reltype};
	SPIPlanPtr	p;

	p = SPI_prepare(psprintf("SELECT (%s)::pg_catalog.bool FROM (SELECT ($1).*) AS new", cond),
					1, types);
	if (p == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the condition of an Odoo rule could not be prepared: %s",
						SPI_result_code_string(SPI_result))));
	return p;
}

/*
 * The conditions' plans, kept for the session: a rule's condition is
 * evaluated at every UPDATE of its table.  A plan is made again when the
 * rule's condition text or the table changes; PostgreSQL's plan cache
 * revalidates it after DDL on the table, as the role executing it, which
 * is always the table's owner here.
 */
#define N_COND_PLANS 16
typedef struct CondPlan
{
	Oid			relid;
	char	   *cond;			/* in TopMemoryContext; NULL: unused */
	SPIPlanPtr	plan;
} CondPlan;
static CondPlan cond_plans[N_COND_PLANS];
static int	cond_plan_next = 0;

static SPIPlanPtr
condition_plan_cached(Relation rel, const char *cond)
{
	CondPlan   *cp;
	SPIPlanPtr	p;

	for (int i = 0; i < N_COND_PLANS; i++)
		if (cond_plans[i].cond != NULL && cond_plans[i].relid == RelationGetRelid(rel) &&
			strcmp(cond_plans[i].cond, cond) == 0)
			return cond_plans[i].plan;
	p = condition_plan(rel, cond);
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "whatsapp: could not keep the plan of an Odoo rule's condition");
	cp = &cond_plans[cond_plan_next];
	cond_plan_next = (cond_plan_next + 1) % N_COND_PLANS;
	if (cp->cond != NULL)
	{
		SPI_freeplan(cp->plan);
		pfree(cp->cond);
	}
	cp->relid = RelationGetRelid(rel);
	cp->cond = MemoryContextStrdup(TopMemoryContext, cond);
	cp->plan = p;
	return p;
}

/*
 * Is the condition true on row tup of rel?  Planned and run with the
 * rights of the table's owner (odoo_read.c), never the extension's.
 * Inside SPI.
 */
static bool
condition_holds(Relation rel, const char *cond, HeapTuple tup)
{
	MemoryContext mcxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool result = false;

	if (tup == NULL)
		return false;

	/*
	 * A condition that fails (a column the owner dropped, a division by
	 * zero) must not abort Odoo's transaction at commit: it is evaluated
	 * in a subtransaction, and an error counts as false, with a warning.
	 */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(mcxt);
	PG_TRY();
	{
		WaOwnerContext oc;
		SPIPlanPtr	p;
		Datum		values[1];
		int			rc;

		wa_odoo_as_owner_begin(RelationGetRelid(rel), &oc);
		p = condition_plan_cached(rel, cond);
		values[0] = heap_copy_tuple_as_datum(tup, RelationGetDescr(rel));
		rc = SPI_execute_plan(p, values, NULL, true, 1);
		if (rc == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			result = !isnull && DatumGetBool(d);
		}
		wa_odoo_as_owner_end(&oc);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(mcxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(mcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(mcxt);
		CurrentResourceOwner = owner;
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("whatsapp: the condition of an Odoo rule on %s failed, so it counts as false: %s",
						RelationGetRelationName(rel), edata->message),
				 errhint("Fix the condition with whatsapp.wa_odoo_rule().")));
		FreeErrorData(edata);
		result = false;
	}
	PG_END_TRY();
	return result;
}

/* Does row tup hold the rule's state (or its condition)?  Inside SPI. */
static bool
rule_holds(const RuleDef *rd, Relation rel, HeapTuple tup, Snapshot snap)
{
	PathFormat	pf = {NULL, NULL, NULL};
	char	   *why;
	char	   *v;

	if (tup == NULL)
		return false;
	if (rd->state_value == NULL)
		return condition_holds(rel, rd->condition, tup);
	v = path_value(rel, tup, rd->state_field, snap, rel->rd_rel->relowner, &pf, NULL, NULL,
				   &why);
	return v != NULL && strcmp(v, rd->state_value) == 0;
}

/* ----------
 * The message
 * ----------
 */

/* One parameter: its value, or NULL after odoo_fail. */
static char *
param_value(OdooCtx *x, Relation rel, HeapTuple tup, const char *path, const PathFormat *pf)
{
	char	   *why;
	char	   *v = path_value(rel, tup, path, x->row->snap, rel->rd_rel->relowner, pf,
							   NULL, NULL, &why);

	if (why != NULL)
		odoo_fail(x->r, "template", "parameter %s: %s", path, why);
	else if (v == NULL || v[0] == '\0')
	{
		odoo_fail(x->r, "template", "parameter %s: %s %ld has no value there",
				  path, x->r->model_label, (long) x->r->res_id);
		v = NULL;
	}
	return v;
}

static void
append_text_param(OdooCtx *x, StringInfo body, bool *first, const char *name,
				  const char *path, const char *value)
{
	if (x->r->values.len > 1)
		appendStringInfoString(&x->r->values, ", ");
	escape_json(&x->r->values, path);
	appendStringInfoString(&x->r->values, ": ");
	if (value)
		escape_json(&x->r->values, value);
	else
		appendStringInfoString(&x->r->values, "null");
	if (value == NULL)
		return;
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

/* The body's parameters: an array of paths (positional) or an object (named). */
static void
append_rule_components(OdooCtx *x, Relation rel, HeapTuple tup, Jsonb *params,
					   const PathFormat *pf, StringInfo out)
{
	StringInfoData body;
	bool		first = true;
	bool		any = false;

	initStringInfo(&body);
	if (params == NULL)
		return;
	if (JB_ROOT_IS_ARRAY(params) && !JB_ROOT_IS_SCALAR(params))
	{
		uint32		n = JsonContainerSize(&params->root);

		for (uint32 i = 0; i < n; i++)
		{
			JsonbValue *v = getIthJsonbValueFromContainer(&params->root, i);
			char	   *path;

			if (v == NULL || v->type != jbvString)
				continue;		/* wa_odoo_rule accepts strings only */
			path = pnstrdup(v->val.string.val, v->val.string.len);
			append_text_param(x, &body, &first, NULL, path,
							  param_value(x, rel, tup, path, pf));
			any = true;
		}
	}
	else if (JB_ROOT_IS_OBJECT(params))
	{
		JsonbIterator *it = JsonbIteratorInit(&params->root);
		JsonbValue	k;
		JsonbIteratorToken tok;
		char	   *key = NULL;

		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			char	   *path;

			if (tok == WJB_KEY)
			{
				key = pnstrdup(k.val.string.val, k.val.string.len);
				continue;
			}
			if (tok != WJB_VALUE || key == NULL || k.type != jbvString)
				continue;
			path = pnstrdup(k.val.string.val, k.val.string.len);
			append_text_param(x, &body, &first, key, path,
							  param_value(x, rel, tup, path, pf));
			any = true;
		}
	}
	if (!any)
		return;
	appendStringInfoString(out, ", \"components\": [{\"type\": \"body\", \"parameters\": [");
	appendStringInfoString(out, body.data);
	appendStringInfoString(out, "]}]");
}

/*
 * Render row res_id of the rule's model.  Inside SPI; the caller has
 * pushed a snapshot that sees the transaction's writes.  Returns false
 * when nothing is to be recorded; for the preview it goes on, with
 * r->fires false and r->note saying why.
 */
static bool
render_rule(const RuleDef *rd, Relation rel, int64 res_id, OdooEvent *ev, OdooRender *r,
			bool for_preview)
{
	OdooModelState *s = odoo_prepare_model(M_SALE_ORDER);
	OdooCatalog cat;
	OdooRow		row;
	OdooCtx		x;
	HeapTuple	tup;
	PathFormat	pf = {NULL, NULL, NULL};
	int64		pid = 0;
	Oid			prel = InvalidOid;
	char	   *why;
	bool		live;
	char	   *neutral;
	List	   *avail;
	bool		ok = true;
	static const Oid id_types[] = {INT4OID, INT8OID, INT2OID, InvalidOid};

	memset(r, 0, sizeof(*r));
	r->ev = ev;
	r->res_id = res_id;
	r->model_label = model_name_of(rd->model);
	initStringInfo(&r->payload);
	initStringInfo(&r->values);
	appendStringInfoChar(&r->values, '{');
	initStringInfo(&r->context);

	tup = row_by_id(rel, res_id, GetActiveSnapshot());
	if (tup == NULL)
		return false;
	r->found = true;
	r->fires = true;
	/* the row must still hold the state as the transaction commits */
	if (!rule_holds(rd, rel, tup, GetActiveSnapshot()))
	{
		r->fires = false;
		r->note = rd->state_value != NULL ?
			psprintf("%s of %s %ld is not %s", rd->state_field, r->model_label, (long) res_id,
					 rd->state_value) :
			psprintf("the condition does not hold for %s %ld", r->model_label, (long) res_id);
	}
	else if (odoo_paused())
	{
		r->fires = false;
		r->note = pstrdup("the Odoo events of this database are paused (whatsapp.wa_odoo_pause); whatsapp.wa_odoo_resume() ends the pause");
	}
	if (!r->fires && !for_preview)
		return false;

	/* the catalog of the four events, with the rule's table as the document */
	cat = s->cat;
	for (int c = 0; c < NCOLS; c++)
		if (odoo_coldefs[c].table == T_DOC)
			cat.attnum[c] = 0, cat.atttype[c] = InvalidOid;
	cat.relid[T_DOC] = RelationGetRelid(rel);
	cat.attnum[DC_ID] = wa_odoo_column(cat.relid[T_DOC], "id", id_types, &cat.atttype[DC_ID], LOG);
	cat.attnum[DC_COMPANY] = wa_odoo_column(cat.relid[T_DOC], "company_id", id_types,
											&cat.atttype[DC_COMPANY], LOG);
	cat.keyindex[T_DOC] = wa_key_index(cat.relid[T_DOC], cat.attnum[DC_ID], cat.atttype[DC_ID],
									   &cat.keycoll[T_DOC]);

	memset(&row, 0, sizeof(row));
	row.m = M_SALE_ORDER;
	row.cat = &cat;
	row.snap = GetActiveSnapshot();
	row.res_id = res_id;
	row.lang_alias = -1;
	row.version = -1;

	r->found = odoo_row_load(&row, A_D) != NULL;
	r->company_id = odoo_row_int(&row, A_D, DC_COMPANY, &r->company_null);
	if (r->fires && !rd->company_null && (r->company_null || r->company_id != rd->company_id))
	{
		r->fires = false;
		r->note = psprintf("rule %s is for company %d", rd->name, rd->company_id);
		if (!for_preview)
		{
			odoo_row_close(&row);
			return false;
		}
	}
	r->has_rule = true;
	r->template = rd->template;
	r->account = rd->account;
	r->rule_company_null = rd->company_null;
	r->rule_company = rd->company_id;
	r->dedupe_key = psprintf("%s:%ld:%s", r->model_label, (long) res_id, rd->name);
	appendStringInfoString(&r->context, "{\"model\": ");
	escape_json(&r->context, r->model_label);
	appendStringInfo(&r->context, ", \"res_id\": %ld, \"rule\": ", (long) res_id);
	escape_json(&r->context, rd->name);
	appendStringInfoChar(&r->context, '}');

	r->account_id = odoo_find_account(rd->account, row.snap, &live);
	if (!live)
		odoo_fail(r, "account",
				  "account \"%s\" of Odoo rule %s was dropped; run whatsapp.wa_odoo_rule again with an account that exists",
				  r->account ? r->account : "", rd->name);
	neutral = odoo_nonempty(odoo_config_value(&row, "database.is_neutralized"));
	if (neutral != NULL && (pg_strcasecmp(neutral, "true") == 0 ||
							pg_strcasecmp(neutral, "t") == 0 || strcmp(neutral, "1") == 0))
		odoo_fail(r, "account",
				  "not sent: Odoo marked this database neutralized (ir_config_parameter database.is_neutralized), as it does for copies");

	/* The partner: the row its field (path) names, loaded as the events' partner */
	(void) path_value(rel, tup, rd->partner_field, row.snap, rel->rd_rel->relowner, &pf,
					  &pid, &prel, &why);
	if (why != NULL)
	{
		odoo_fail(r, "phone_invalid", "partner field %s: %s", rd->partner_field, why);
		ok = false;
	}
	else if (!OidIsValid(prel))
	{
		odoo_fail(r, "phone_invalid", "%s %ld has no partner (%s is empty)", r->model_label,
				  (long) res_id, rd->partner_field);
		ok = false;
	}
	else if (prel != cat.relid[T_PARTNER])
	{
		odoo_fail(r, "phone_invalid", "partner field %s does not lead to res_partner",
				  rd->partner_field);
		ok = false;
	}
	else
	{
		Relation	prelation = relation_open(prel, NoLock);
		HeapTuple	ptup = row_by_id(prelation, pid, row.snap);

		row.rels[T_PARTNER] = prelation;
		row.loaded[A_P] = true;
		row.tup[A_P] = ptup;
		if (ptup == NULL)
		{
			odoo_fail(r, "phone_invalid", "partner res.partner %ld of %s %ld does not exist",
					  (long) pid, r->model_label, (long) res_id);
			ok = false;
		}
		else
		{
			TupleDesc	desc = RelationGetDescr(prelation);
			AttrNumber	a_tz = get_attnum(prel, "tz");

			row.vals[A_P] = palloc(desc->natts * sizeof(Datum));
			row.nulls[A_P] = palloc(desc->natts * sizeof(bool));
			heap_deform_tuple(ptup, desc, row.vals[A_P], row.nulls[A_P]);
			if (a_tz > 0 && !row.nulls[A_P][a_tz - 1] &&
				(TupleDescAttr(desc, a_tz - 1)->atttypid == VARCHAROID ||
				 TupleDescAttr(desc, a_tz - 1)->atttypid == TEXTOID))
				pf.tz = TextDatumGetCString(row.vals[A_P][a_tz - 1]);
		}
	}

	memset(&x, 0, sizeof(x));
	x.m = M_SALE_ORDER;
	x.cat = &cat;
	x.row = &row;
	x.r = r;
	x.base_url = NULL;
	x.for_preview = false;
	avail = odoo_template_languages(rd->template, rd->account, row.snap);
	if (ok)
	{
		odoo_choose_recipient(&x);
		odoo_choose_language(&x, rd->language, avail);
		pf.lang = odoo_row_text(&row, A_L, LC_CODE);
		pf.date_format = odoo_row_text(&row, A_L, LC_DATE_FORMAT);
	}
	else
		r->language = rd->language;

	appendStringInfoString(&r->payload, "{\"type\": \"template\", \"template\": {\"name\": ");
	escape_json(&r->payload, r->template ? r->template : "");
	appendStringInfoString(&r->payload, ", \"language\": {\"code\": ");
	escape_json(&r->payload, r->language ? r->language : "");
	appendStringInfoChar(&r->payload, '}');
	append_rule_components(&x, rel, tup, rd->params, &pf, &r->payload);
	appendStringInfoString(&r->payload, "}}");
	appendStringInfoChar(&r->values, '}');
	r->payload_jsonb = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->payload.data));

	if (r->state == NULL)
		odoo_check_recipient(r);
	if (strcmp(r->state, "failed") == 0 && r->details == NULL)
		r->details = psprintf("Recorded by the whatsapp trigger of Odoo rule %s on %s at commit; the record was saved.",
							  rd->name, rd->model);
	odoo_row_close(&row);
	return true;
}

/* ----------
 * whatsapp._odoo_rule_trigger(rule) RETURNS trigger
 * ----------
 */
PG_FUNCTION_INFO_V1(wa_odoo_rule_trigger);

Datum
wa_odoo_rule_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	Relation	rel;
	char	   *nsp;
	RuleDef		rd;
	HeapTuple	newtup;
	HeapTuple	oldtup;
	int			attno;
	Datum		d;
	bool		isnull;
	int64		id;
	Oid			type;
	OdooEvent	ev;
	OdooRender	r;
	bool		fire;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("whatsapp._odoo_rule_trigger() may only be called as a trigger"),
				 errhint("Use whatsapp.wa_odoo_rule() to install it.")));
	td = (TriggerData *) fcinfo->context;
	rel = td->tg_relation;
	nsp = get_namespace_name(RelationGetNamespace(rel));
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) ||
		td->tg_trigger->tgnargs < 1 || nsp == NULL || strcmp(nsp, "public") != 0)
	{
		ereport(WARNING,
				(errmsg("whatsapp: trigger \"%s\" on \"%s\" was not made by whatsapp.wa_odoo_rule(); it does nothing",
						td->tg_trigger->tgname, RelationGetRelationName(rel))));
		return PointerGetDatum(NULL);
	}
	if (!wa_odoo_events)
		return PointerGetDatum(NULL);
	if (!load_rule(td->tg_trigger->tgargs[0], GetTransactionSnapshot(), &rd) ||
		strcmp(rd.model, RelationGetRelationName(rel)) != 0)
		return PointerGetDatum(NULL);

	newtup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	oldtup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_trigtuple : NULL;
	attno = SPI_fnumber(RelationGetDescr(rel), "id");
	if (attno <= 0)
		return PointerGetDatum(NULL);
	type = SPI_gettypeid(RelationGetDescr(rel), attno);
	d = heap_getattr(newtup, attno, RelationGetDescr(rel), &isnull);
	if (isnull || !(type == INT4OID || type == INT8OID))
		return PointerGetDatum(NULL);
	id = type == INT4OID ? DatumGetInt32(d) : DatumGetInt64(d);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "whatsapp: SPI_connect failed");
	CommandCounterIncrement();
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();

	/* Did the row enter the state, or the condition become true? */
	fire = rule_holds(&rd, rel, newtup, GetActiveSnapshot()) &&
		!rule_holds(&rd, rel, oldtup, GetActiveSnapshot());
	if (fire)
	{
		ev.name = rd.name;
		ev.model = M_SALE_ORDER;	/* unused: r.model_label names the model */
		ev.move_type = NULL;
		ev.needs_sent = false;
		if (render_rule(&rd, rel, id, &ev, &r, false) && r.state != NULL)
			odoo_record(&r);
	}
	PopActiveSnapshot();
	SPI_finish();
	return PointerGetDatum(NULL);
}

/* ----------
 * wa_odoo_rule_preview(name text, record_id bigint) RETURNS jsonb: what
 * the rule would record for the record now, without recording it.
 * ----------
 */
PG_FUNCTION_INFO_V1(wa_odoo_rule_preview);

Datum
wa_odoo_rule_preview(PG_FUNCTION_ARGS)
{
	char	   *name;
	int64		id;
	RuleDef		rd;
	Oid			relid;
	Relation	rel;
	OdooEvent	ev = {0};
	OdooRender	r;
	StringInfoData b;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext old;
	Datum		result;
	bool		any;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("rule and record_id must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	id = PG_GETARG_INT64(1);
	if (!load_rule(name, GetTransactionSnapshot(), &rd))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("there is no Odoo rule \"%s\"", name),
				 errhint("See whatsapp.odoo_model_rules for the rules.")));
	relid = wa_odoo_table(rd.model, ERROR);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("Odoo table \"public.%s\" of rule %s does not exist", rd.model, name)));
	rel = table_open(relid, NoLock);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "whatsapp: SPI_connect failed");
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	ev.name = rd.name;
	ev.model = M_SALE_ORDER;
	any = render_rule(&rd, rel, id, &ev, &r, true);
	PopActiveSnapshot();
	if (!r.found)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("%s %ld does not exist", rd.model, (long) id)));

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"rule\": ");
	escape_json(&b, rd.name);
	odoo_json_kv_str(&b, "model", r.model_label);
	appendStringInfo(&b, ", \"res_id\": %ld", (long) id);
	appendStringInfo(&b, ", \"fires\": %s", r.fires ? "true" : "false");
	odoo_json_kv_str(&b, "why_not", r.fires ? NULL : r.note);
	odoo_json_kv_str(&b, "outcome", any ? r.state : NULL);
	odoo_json_kv_str(&b, "failure_type", r.failure_type);
	odoo_json_kv_str(&b, "reason", r.reason);
	odoo_json_kv_str(&b, "account", r.account);
	odoo_json_kv_str(&b, "recipient", r.recipient);
	odoo_json_kv_str(&b, "template", r.template);
	odoo_json_kv_str(&b, "language", r.language);
	appendStringInfoString(&b, ", \"values\": ");
	appendStringInfoString(&b, r.values.len > 1 ? r.values.data : "{}");
	appendStringInfoString(&b, ", \"message\": ");
	appendStringInfoString(&b, r.payload.len ? r.payload.data : "null");
	odoo_json_kv_str(&b, "dedupe_key", r.dedupe_key);
	appendStringInfoChar(&b, '}');

	old = MemoryContextSwitchTo(outer);
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(b.data)));
	MemoryContextSwitchTo(old);
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_DATUM(result);
}

/* ----------
 * whatsapp._odoo_rule_check(model, partner_field, state_field, condition, paths)
 *	 for wa_odoo_rule: raises when the rule cannot work on this database.
 * ----------
 */
PG_FUNCTION_INFO_V1(wa_odoo_rule_check);

/* Check that a path leads through many2ones the owner may read. */
static void
check_path(Relation rel, const char *path, bool to_partner)
{
	char	   *copy = pstrdup(path);
	char	   *save = NULL;
	Relation	cur = rel;
	List	   *opened = NIL;
	ListCell   *lc;
	char	   *segs[RULE_PATH_MAX_DEPTH + 1];
	int			n = 0;
	Oid			reader = rel->rd_rel->relowner;

	for (char *s = strtok_r(copy, ".", &save); s; s = strtok_r(NULL, ".", &save))
	{
		if (n == RULE_PATH_MAX_DEPTH)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("field path \"%s\" is longer than %d fields", path, RULE_PATH_MAX_DEPTH)));
		segs[n++] = s;
	}
	if (n == 0 || strstr(path, "..") != NULL || path[0] == '.' || path[strlen(path) - 1] == '.')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("field path \"%s\" is not a dotted list of column names", path),
				 errhint("Write it as Odoo does, as in partner_id.name.")));
	for (int i = 0; i < n; i++)
	{
		AttrNumber	att = get_attnum(RelationGetRelid(cur), segs[i]);
		Oid			type;
		char	   *why = NULL;
		Oid			target;

		if (att <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("field path \"%s\": table public.%s has no column %s", path,
							RelationGetRelationName(cur), segs[i])));
		if (!may_read(RelationGetRelid(cur), att, reader))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("field path \"%s\": role %s, the owner of public.%s, may not read %s.%s",
							path, GetUserNameFromId(reader, false), RelationGetRelationName(rel),
							RelationGetRelationName(cur), segs[i])));
		type = get_atttype(RelationGetRelid(cur), att);
		if (i == n - 1 && !to_partner)
			break;
		if (!(type == INT4OID || type == INT8OID || type == INT2OID) ||
			!OidIsValid(target = many2one_target(cur, att, &why)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("field path \"%s\": %s", path,
							why ? why : psprintf("column %s.%s is not a many2one",
												 RelationGetRelationName(cur), segs[i]))));
		if (i == n - 1)
		{
			if (strcmp(get_rel_name(target), "res_partner") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("partner field \"%s\" leads to %s, not res_partner", path,
								get_rel_name(target))));
			break;
		}
		cur = relation_open(target, AccessShareLock);
		opened = lappend(opened, cur);
	}
	foreach(lc, opened)
		relation_close((Relation) lfirst(lc), NoLock);
}

Datum
wa_odoo_rule_check(PG_FUNCTION_ARGS)
{
	char	   *model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *partner_field = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *state_field = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *condition = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	ArrayType  *paths = PG_ARGISNULL(4) ? NULL : PG_GETARG_ARRAYTYPE_P(4);
	Oid			relid = wa_odoo_table(model, ERROR);
	Relation	rel;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("Odoo table \"public.%s\" does not exist", model),
				 errhint("Name the table of the model, as in stock_picking for stock.picking.")));
	rel = table_open(relid, AccessShareLock);
	check_path(rel, partner_field, true);
	if (state_field != NULL)
		check_path(rel, state_field, false);
	if (paths != NULL)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(paths, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				check_path(rel, TextDatumGetCString(elems[i]), false);
	}
	if (condition != NULL)
	{
		WaOwnerContext oc;

		check_condition_syntax(condition);
		/* planned as the owner, as it will be run */
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "whatsapp: SPI_connect failed");
		wa_odoo_as_owner_begin(relid, &oc);
		SPI_freeplan(condition_plan(rel, condition));
		wa_odoo_as_owner_end(&oc);
		SPI_finish();
	}
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}
