/*-------------------------------------------------------------------------
 *
 * odoo_rules.c
 *	  The one mechanism behind Odoo's messages.  Rules on any Odoo model
 *	  (whatsapp.wa_odoo_rule): a template sent when a row of any table in
 *	  schema public enters a state, or when a boolean SQL condition becomes
 *	  true, to the partner one of its fields names, with parameters taken
 *	  from field paths such as partner_id.name or picking_type_id.name.
 *	  Odoo's own WhatsApp app does the same from its automation rules
 *	  (whatsapp.template.variable, field type "field", whose field_name is
 *	  such a path).  The four events of wa_odoo_enable are presets of these
 *	  rules (see "The four events, presets of this mechanism" below): one
 *	  rendering (odoo_render_rule) and one firing path serve both.
 *
 * What a rule may use beyond field paths, the events' capabilities:
 *
 * - the parameter kind {"amount": path}: money in the record's currency
 *	 (its currency_id), as Odoo prints it in the partner's language;
 * - on sale_order and account_move, whose columns the events' catalog
 *	 knows (odoo_data.c): the parameter kind {"word": w}, every word of
 *	 wa_odoo_enable's vocabulary (portal_url with the access_token created
 *	 at commit, amount_residual, invoice_date_due, ...), and the events'
 *	 options header (the official PDF), base_url, pdf_wait, pdf_upload;
 * - company scoping (company_id).
 *
 * What only the presets have, as fixed options of their definition: a
 * configuration per company (wa_odoo_enable's rows), whatsapp.odoo_max_age
 * on the document's own date, the move_type they need, and invoice_sent's
 * trigger on mail_message with its check that the mail went to the
 * customer (odoo_sent.c).
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
 * The rules and the presets share everything from the record onwards: the
 * recipient and the language (odoo_render.c: the partner's numbers, its
 * commercial partner, its language with Odoo's fallbacks), the account,
 * the pause, the opt-out rule and the recording once per dedupe key
 * (odoo.c).
 *
 *-------------------------------------------------------------------------
 */
#include "odoo.h"
#include "odoo_sent.h"

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
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* The longest field path: Odoo's own are a few fields deep. */
#define RULE_PATH_MAX_DEPTH 6

/*
 * The catalog a rule's model may use: a rule on sale_order or account_move
 * reads that model's columns as the events do (its params may use their
 * words, its header and links); -1 for any other table.
 */
static int
rule_catalog(const char *model)
{
	for (int m = 0; m < N_MODELS; m++)
		if (strcmp(model, odoo_model_table[m]) == 0)
			return m;
	return -1;
}

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
load_rule(const char *name, Snapshot snap, OdooRuleDef *rd)
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
		rd->catalog = rule_catalog(rd->model);
		rd->own.name = rd->name;
		rd->own.model = rd->catalog >= 0 ? (OdooModel) rd->catalog : M_SALE_ORDER;
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
rule_holds(const OdooRuleDef *rd, Relation rel, HeapTuple tup, Snapshot snap)
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

/* Is s a number as PostgreSQL prints numeric, integer or float values? */
static bool
looks_numeric(const char *s)
{
	const char *p = s;
	bool		digits = false;

	if (pg_strcasecmp(s, "NaN") == 0 || pg_strcasecmp(s, "Infinity") == 0 ||
		pg_strcasecmp(s, "-Infinity") == 0)
		return true;
	if (*p == '-' || *p == '+')
		p++;
	while (isdigit((unsigned char) *p))
		p++, digits = true;
	if (*p == '.')
		for (p++; isdigit((unsigned char) *p); p++)
			digits = true;
	if (digits && (*p == 'e' || *p == 'E'))
	{
		p++;
		if (*p == '-' || *p == '+')
			p++;
		if (!isdigit((unsigned char) *p))
			return false;
		while (isdigit((unsigned char) *p))
			p++;
	}
	return digits && *p == '\0';
}

/*
 * One parameter of a rule: a field path (a string), or a parameter kind
 * (an object of one key): {"word": w}, a word of wa_odoo_enable's
 * vocabulary, on sale_order and account_move; {"amount": path}, a number
 * formatted as money in the record's currency (its currency_id) and the
 * partner's language, as the events' amount_total.  label is what the
 * preview's values call it.  NULL after odoo_fail().
 */
static char *
kind_value(OdooCtx *x, Relation rel, HeapTuple tup, JsonbValue *v, const PathFormat *pf,
		   char **label)
{
	JsonbValue *w;
	JsonbValue *a;

	if (v->type == jbvString)
	{
		*label = pnstrdup(v->val.string.val, v->val.string.len);
		return param_value(x, rel, tup, *label, pf);
	}
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
	{
		*label = pstrdup("?");
		odoo_fail(x->r, "template", "the rule's params are not understood");
		return NULL;
	}
	w = getKeyJsonValueFromContainer(v->val.binary.data, "word", 4, NULL);
	a = getKeyJsonValueFromContainer(v->val.binary.data, "amount", 6, NULL);
	if (w != NULL && w->type == jbvString)
	{
		*label = pnstrdup(w->val.string.val, w->val.string.len);
		/* the events' catalog is the rule's table's (wa_odoo_rule checks it too) */
		if (strcmp(RelationGetRelationName(rel), odoo_model_table[x->m]) != 0)
		{
			odoo_fail(x->r, "template", "parameter %s: the words are for rules on sale_order and account_move",
					  *label);
			return NULL;
		}
		return odoo_word_value(x, *label);
	}
	if (a != NULL && a->type == jbvString)
	{
		char	   *path = pnstrdup(a->val.string.val, a->val.string.len);
		char	   *text;
		Datum		num;

		*label = psprintf("amount %s", path);
		text = param_value(x, rel, tup, path, pf);
		if (text == NULL)
			return NULL;
		if (!looks_numeric(text))
		{
			odoo_fail(x->r, "template", "parameter %s: %s is not a number (%s)", *label, path, text);
			return NULL;
		}
		num = DirectFunctionCall3(numeric_in, CStringGetDatum(text),
								  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		return odoo_money(x, DatumGetNumeric(num), *label, path);
	}
	*label = pstrdup("?");
	odoo_fail(x->r, "template", "the rule's params are not understood");
	return NULL;
}

/*
 * The components of a rule's message: the body's parameters, an array
 * (positional) or an object (named) of field paths and parameter kinds;
 * in the object form also the options of the events (odoo_render.c):
 * header, base_url, pdf_wait and pdf_upload, which wa_odoo_rule accepts on
 * sale_order and account_move only.
 */
static void
append_rule_components(OdooCtx *x, Relation rel, HeapTuple tup, Jsonb *params,
					   const PathFormat *pf, StringInfo out)
{
	StringInfoData body;
	bool		first = true;
	bool		any = false;
	char	   *header = NULL;
	char	   *label;
	char	   *value;

	initStringInfo(&body);
	if (params == NULL)
		return;
	if (JB_ROOT_IS_ARRAY(params) && !JB_ROOT_IS_SCALAR(params))
	{
		uint32		n = JsonContainerSize(&params->root);

		for (uint32 i = 0; i < n; i++)
		{
			JsonbValue *v = getIthJsonbValueFromContainer(&params->root, i);

			if (v == NULL)
				continue;
			value = kind_value(x, rel, tup, v, pf, &label);
			append_text_param(x, &body, &first, NULL, label, value);
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
			if (tok == WJB_KEY)
			{
				key = pnstrdup(k.val.string.val, k.val.string.len);
				continue;
			}
			if (tok != WJB_VALUE || key == NULL)
				continue;
			/* the events' options: no template parameters */
			if (strcmp(key, "base_url") == 0 || strcmp(key, "pdf_wait") == 0 ||
				strcmp(key, "pdf_upload") == 0)
				continue;
			if (strcmp(key, "header") == 0)
			{
				if (k.type == jbvString)
					header = pnstrdup(k.val.string.val, k.val.string.len);
				continue;
			}
			value = kind_value(x, rel, tup, &k, pf, &label);
			append_text_param(x, &body, &first, key, label, value);
			any = true;
		}
	}
	if (header == NULL && !any)
		return;
	appendStringInfoString(out, ", \"components\": [");
	if (header != NULL)
	{
		if (strcmp(RelationGetRelationName(rel), odoo_model_table[x->m]) != 0)
			odoo_fail(x->r, "template", "header %s: rule %s is not on sale_order or account_move",
					  header, x->r->ev->name);
		else if (odoo_append_header(x, header, out) && any)
			appendStringInfoString(out, ", ");
	}
	if (any)
	{
		appendStringInfoString(out, "{\"type\": \"body\", \"parameters\": [");
		appendStringInfoString(out, body.data);
		appendStringInfoString(out, "]}");
	}
	appendStringInfoChar(out, ']');
}

/* ----------
 * The four events, presets of this mechanism
 *
 * Each event is a rule whose definition is fixed here, in C: its model,
 * the states that fire it (and, on account_move, the move_type it needs),
 * and for invoice_sent the mail_message that fires it (odoo_sent.c).
 * What wa_odoo_enable sets per company (template, language, account,
 * params) stays a row of whatsapp.odoo_rule, read at rendering.  The
 * definitions are code rather than rows of whatsapp.odoo_model_rule:
 * what makes an event hold (move_type, the sent check, odoo_max_age's
 * date columns) is not expressible as a rule's fields and changes with
 * the extension's version, not with a database's configuration, and the
 * presets can then neither be dropped nor edited behind wa_odoo_enable's
 * back, and need no row to be migrated by an upgrade script.
 * ----------
 */
static const char *const sale_states[] = {"sale", "done", NULL};
static const char *const posted_states[] = {"posted", NULL};

static const OdooEvent presets[] = {
	{"sale_order_confirmed", M_SALE_ORDER, NULL, false, sale_states},
	{"invoice_posted", M_ACCOUNT_MOVE, "out_invoice", false, posted_states},
	{"refund_posted", M_ACCOUNT_MOVE, "out_refund", false, posted_states},
	{"invoice_sent", M_ACCOUNT_MOVE, "out_invoice", true, posted_states},
};

/* Tables without which no message of the events' catalog can be rendered. */
static const bool table_required[T_COUNT] = {
	true, true, true, true, true, false, false, false, false
};

const OdooEvent *
odoo_preset(const char *name)
{
	for (int i = 0; i < (int) lengthof(presets); i++)
		if (strcmp(presets[i].name, name) == 0)
			return &presets[i];
	return NULL;
}

/* The rule of preset ev; its configuration is read at rendering. */
void
odoo_preset_rule(const OdooEvent *ev, OdooRuleDef *rd)
{
	memset(rd, 0, sizeof(*rd));
	rd->name = (char *) ev->name;
	rd->model = (char *) odoo_model_table[ev->model];
	rd->preset = ev;
	rd->catalog = ev->model;
	rd->state_field = "state";
}

/*
 * Does the document hold the preset now, as the transaction is about to
 * commit?  Else r->fires false and r->note says why.
 */
static void
preset_holds(const OdooEvent *ev, OdooRow *row, OdooRender *r)
{
	OdooModel	m = ev->model;
	int64		res_id = r->res_id;
	char	   *state = odoo_row_text(row, A_D, DC_STATE);
	char	   *mt = ev->move_type ? odoo_row_text(row, A_D, DC_MOVE_TYPE) : NULL;
	bool		in_state = false;

	for (int i = 0; state != NULL && ev->states[i] != NULL; i++)
		if (strcmp(state, ev->states[i]) == 0)
			in_state = true;
	if (ev->move_type != NULL && (mt == NULL || strcmp(mt, ev->move_type) != 0))
	{
		r->fires = false;
		r->note = psprintf("%s %ld is of move_type %s; %s fires for %s only",
						   odoo_model_table[m], (long) res_id, mt ? mt : "NULL", ev->name,
						   ev->move_type);
	}
	else if (!in_state)
	{
		r->fires = false;
		r->note = psprintf("%s %ld is in state %s, not %s", odoo_model_table[m], (long) res_id,
						   state ? state : "NULL", ev->states[0]);
	}
	else if (ev->needs_sent && r->sent_msg_id > 0)
	{
		/*
		 * Did the message that fired this mail the invoice to its
		 * customer?  (The preview has no message: it shows what the next
		 * one would send.)
		 */
		bool		no_partner,
					no_commercial;
		int64		pid = odoo_row_int(row, A_D, DC_PARTNER, &no_partner);
		int64		cpid = odoo_row_int(row, A_P, PC_COMMERCIAL, &no_commercial);
		char	   *why = no_partner ?
			psprintf("account_move %ld has no partner", (long) res_id) :
			wa_odoo_sent_problem(r->sent_msg_id, res_id, pid,
								 no_commercial ? 0 : cpid, row->snap);

		if (why != NULL)
		{
			r->fires = false;
			r->note = why;
		}
	}
}

/* Is the document older than whatsapp.odoo_max_age (a preset's option)? */
static void
preset_max_age(OdooModel m, const OdooCatalog *cat, OdooRow *row, OdooRender *r)
{
	int			col = DC_DATE;
	Timestamp	ts;
	bool		have = odoo_row_ts(row, A_D, DC_DATE, &ts);

	/* the document's own date: date_order, invoice_date, date */
	if (!have && m == M_ACCOUNT_MOVE)
	{
		col = DC_DATE2;
		have = odoo_row_ts(row, A_D, DC_DATE2, &ts);
	}
	if (have)
	{
		Timestamp	end = ts;
		TimestampTz limit = GetCurrentTransactionStartTimestamp() -
			(TimestampTz) wa_odoo_max_age * USECS_PER_MINUTE;

		/* a date counts until the end of its day */
		if (cat->atttype[col] == DATEOID)
			end += USECS_PER_DAY;
		if (end < limit)
		{
			r->fires = false;
			r->note = psprintf("%s %ld is older than whatsapp.odoo_max_age (%s is %s)",
							   odoo_model_table[m], (long) r->res_id, odoo_qcol(m, col),
							   DatumGetCString(DirectFunctionCall1(timestamp_out,
																   TimestampGetDatum(ts))));
		}
	}
}

/* ----------
 * Rendering: one function for the rules and the four events
 * ----------
 */

/*
 * The partner of a rule of wa_odoo_rule: the row its partner field (a
 * path) names, loaded into row as the events' partner.  False after
 * odoo_fail().
 */
static bool
rule_partner(const OdooRuleDef *rd, Relation rel, HeapTuple tup, OdooRow *row,
			 OdooRender *r, PathFormat *pf)
{
	int64		pid = 0;
	Oid			prel = InvalidOid;
	char	   *why;
	Relation	prelation;
	HeapTuple	ptup;
	TupleDesc	desc;
	AttrNumber	a_tz;

	(void) path_value(rel, tup, rd->partner_field, row->snap, rel->rd_rel->relowner, pf,
					  &pid, &prel, &why);
	if (why != NULL)
	{
		odoo_fail(r, "phone_invalid", "partner field %s: %s", rd->partner_field, why);
		return false;
	}
	if (!OidIsValid(prel))
	{
		odoo_fail(r, "phone_invalid", "%s %ld has no partner (%s is empty)", r->model_label,
				  (long) r->res_id, rd->partner_field);
		return false;
	}
	if (prel != row->cat->relid[T_PARTNER])
	{
		odoo_fail(r, "phone_invalid", "partner field %s does not lead to res_partner",
				  rd->partner_field);
		return false;
	}
	prelation = relation_open(prel, NoLock);
	ptup = row_by_id(prelation, pid, row->snap);
	if (row->rels[T_PARTNER] != NULL)
		relation_close(prelation, NoLock);
	else
		row->rels[T_PARTNER] = prelation;
	row->loaded[A_P] = true;
	row->tup[A_P] = ptup;
	if (ptup == NULL)
	{
		odoo_fail(r, "phone_invalid", "partner res.partner %ld of %s %ld does not exist",
				  (long) pid, r->model_label, (long) r->res_id);
		return false;
	}
	desc = RelationGetDescr(row->rels[T_PARTNER]);
	a_tz = get_attnum(prel, "tz");
	row->vals[A_P] = palloc(desc->natts * sizeof(Datum));
	row->nulls[A_P] = palloc(desc->natts * sizeof(bool));
	heap_deform_tuple(ptup, desc, row->vals[A_P], row->nulls[A_P]);
	if (a_tz > 0 && !row->nulls[A_P][a_tz - 1] &&
		(TupleDescAttr(desc, a_tz - 1)->atttypid == VARCHAROID ||
		 TupleDescAttr(desc, a_tz - 1)->atttypid == TEXTOID))
		pf->tz = TextDatumGetCString(row->vals[A_P][a_tz - 1]);
	return true;
}

/*
 * Render record res_id for rule rd: whether it fires now, and its message.
 * Inside SPI, under a snapshot that sees the transaction's writes (the
 * caller pushes it); everything in the current (SPI) context.  rel is the
 * rule's table, opened by the caller; NULL for a preset, whose template,
 * language, account and params are then read here, from the company's
 * row of whatsapp.odoo_rule.  With for_preview false it stops as soon as
 * it knows nothing is to be recorded, and returns whether something is;
 * for the preview it goes on, with r->fires false and r->note saying why.
 */
bool
odoo_render_rule(OdooRuleDef *rd, Relation rel, int64 res_id, bool for_preview,
				 OdooRender *r, int64 sent_msg_id)
{
	const OdooEvent *ev = rd->preset ? rd->preset : &rd->own;
	OdooModel	m = rd->catalog >= 0 ? (OdooModel) rd->catalog : M_SALE_ORDER;
	OdooModelState *s = odoo_prepare_model(m);
	OdooCatalog cat;
	const OdooCatalog *catp = &s->cat;
	OdooRow		row;
	OdooCtx		x;
	HeapTuple	tup = NULL;
	PathFormat	pf = {NULL, NULL, NULL};
	const char *label;
	bool		live;
	char	   *neutral;
	List	   *avail;
	bool		ok = true;
	static const Oid id_types[] = {INT4OID, INT8OID, INT2OID, InvalidOid};

	memset(r, 0, sizeof(*r));
	r->ev = ev;
	r->res_id = res_id;
	r->sent_msg_id = sent_msg_id;
	r->model_label = rd->preset ? NULL : model_name_of(rd->model);
	label = r->model_label ? r->model_label : odoo_model_name[m];
	initStringInfo(&r->payload);
	initStringInfo(&r->values);
	appendStringInfoChar(&r->values, '{');
	initStringInfo(&r->context);

	if (rd->catalog < 0)
	{
		/*
		 * A model the events know nothing of: the events' catalog with the
		 * rule's table as the document, of which only id, company_id and
		 * currency_id (for the amount kind) are read.
		 */
		cat = s->cat;
		for (int c = 0; c < NCOLS; c++)
			if (odoo_coldefs[c].table == T_DOC)
				cat.attnum[c] = 0, cat.atttype[c] = InvalidOid;
		cat.relid[T_DOC] = RelationGetRelid(rel);
		cat.attnum[DC_ID] = wa_odoo_column(cat.relid[T_DOC], "id", id_types, &cat.atttype[DC_ID], LOG);
		cat.attnum[DC_COMPANY] = wa_odoo_column(cat.relid[T_DOC], "company_id", id_types,
												&cat.atttype[DC_COMPANY], LOG);
		cat.attnum[DC_CURRENCY] = wa_odoo_column(cat.relid[T_DOC], "currency_id", id_types,
												 &cat.atttype[DC_CURRENCY], LOG);
		cat.keyindex[T_DOC] = wa_key_index(cat.relid[T_DOC], cat.attnum[DC_ID], cat.atttype[DC_ID],
										   &cat.keycoll[T_DOC]);
		catp = &cat;
	}
	memset(&row, 0, sizeof(row));
	row.m = m;
	row.cat = catp;
	row.snap = GetActiveSnapshot();
	row.res_id = res_id;
	row.lang_alias = -1;
	row.version = -1;

	/* the record, and for a rule its row for the paths */
	if (rel != NULL)
	{
		tup = row_by_id(rel, res_id, row.snap);
		if (tup == NULL)
			return false;
	}
	r->found = odoo_row_load(&row, A_D) != NULL;
	if (!r->found)
	{
		r->note = psprintf("%s %ld does not exist", odoo_model_table[m], (long) res_id);
		odoo_row_close(&row);
		return false;
	}
	r->company_id = odoo_row_int(&row, A_D, DC_COMPANY, &r->company_null);

	/* a preset: its configuration for the company (or for all) */
	if (rd->preset && !odoo_event_config(ev, r->company_null, r->company_id, row.snap, rd))
	{
		r->note = r->company_null ?
			psprintf("no rule of event %s applies to %s %ld (it has no company)",
					 ev->name, odoo_model_table[m], (long) res_id) :
			psprintf("no rule of event %s applies to company %ld", ev->name,
					 (long) r->company_id);
		odoo_row_close(&row);
		return false;
	}
	r->has_rule = true;

	/* Does the rule hold now, as the transaction is about to commit? */
	r->fires = true;
	if (rd->preset)
		preset_holds(ev, &row, r);
	else if (!rule_holds(rd, rel, tup, row.snap))
	{
		r->fires = false;
		r->note = rd->state_value != NULL ?
			psprintf("%s of %s %ld is not %s", rd->state_field, label, (long) res_id,
					 rd->state_value) :
			psprintf("the condition does not hold for %s %ld", label, (long) res_id);
	}
	if (r->fires && rd->preset && !wa_odoo_events)
	{
		r->fires = false;
		r->note = pstrdup("whatsapp.odoo_events is off");
	}
	if (r->fires && odoo_paused())
	{
		r->fires = false;
		r->note = pstrdup("the Odoo events of this database are paused (whatsapp.wa_odoo_pause); whatsapp.wa_odoo_resume() ends the pause");
	}
	if (r->fires && rd->preset && wa_odoo_max_age > 0)
		preset_max_age(m, catp, &row, r);
	if (r->fires && !rd->preset && !rd->company_null &&
		(r->company_null || r->company_id != rd->company_id))
	{
		r->fires = false;
		r->note = psprintf("rule %s is for company %d", rd->name, rd->company_id);
	}
	if (!r->fires && !for_preview)
	{
		odoo_row_close(&row);
		return false;
	}

	/* The rule, its account and its template's languages */
	r->template = rd->template;
	r->account = rd->account;
	r->rule_company_null = rd->company_null;
	r->rule_company = rd->company_id;
	avail = odoo_template_languages(rd->template, rd->account, row.snap);
	memset(&x, 0, sizeof(x));
	x.m = m;
	x.cat = catp;
	x.row = &row;
	x.r = r;
	x.for_preview = for_preview;
	odoo_rule_options(&x, rd->params);

	if (rd->catalog >= 0)
		r->document = odoo_nonempty(odoo_row_text(&row, A_D, DC_NAME));
	r->dedupe_key = psprintf("%s:%ld:%s", label, (long) res_id, rd->name);
	appendStringInfoString(&r->context, "{\"model\": ");
	escape_json(&r->context, label);
	appendStringInfo(&r->context, ", \"res_id\": %ld, \"%s\": ", (long) res_id,
					 rd->preset ? "event" : "rule");
	escape_json(&r->context, rd->name);
	appendStringInfoChar(&r->context, '}');

	/* dropped: the failure is recorded under the last account of that name */
	r->account_id = odoo_find_account(rd->account, row.snap, &live);
	if (!live && rd->preset)
		odoo_fail(r, "account",
				  "account \"%s\" of the rule for event %s was dropped; run whatsapp.wa_odoo_enable again with an account that exists",
				  r->account ? r->account : "", ev->name);
	else if (!live)
		odoo_fail(r, "account",
				  "account \"%s\" of Odoo rule %s was dropped; run whatsapp.wa_odoo_rule again with an account that exists",
				  r->account ? r->account : "", rd->name);

	neutral = odoo_nonempty(odoo_config_value(&row, "database.is_neutralized"));
	if (neutral != NULL && (pg_strcasecmp(neutral, "true") == 0 ||
							pg_strcasecmp(neutral, "t") == 0 || strcmp(neutral, "1") == 0))
		odoo_fail(r, "account",
				  "not sent: Odoo marked this database neutralized (ir_config_parameter database.is_neutralized), as it does for copies");

	if (rd->preset)
		for (int t = 0; t < T_COUNT; t++)
			if (table_required[t] && !OidIsValid(catp->relid[t]))
				odoo_fail(r, "template", "Odoo table public.%s is missing", odoo_table_names[t]);

	/* The recipient and the language: the catalog's partner, or the rule's field's */
	if (rd->partner_field != NULL)
		ok = rule_partner(rd, rel, tup, &row, r, &pf);
	if (ok)
	{
		odoo_choose_recipient(&x);
		odoo_choose_language(&x, rd->language, avail);
		pf.lang = odoo_row_text(&row, A_L, LC_CODE);
		pf.date_format = odoo_row_text(&row, A_L, LC_DATE_FORMAT);
	}
	else
		r->language = rd->language;

	/* The parameters: a preset's are words of the vocabulary, a rule's paths and kinds */
	appendStringInfoString(&r->payload, "{\"type\": \"template\", \"template\": {\"name\": ");
	escape_json(&r->payload, r->template ? r->template : "");
	appendStringInfoString(&r->payload, ", \"language\": {\"code\": ");
	escape_json(&r->payload, r->language ? r->language : "");
	appendStringInfoChar(&r->payload, '}');
	if (rd->preset)
		odoo_append_components(&x, rd->params, &r->payload);
	else
		append_rule_components(&x, rel, tup, rd->params, &pf, &r->payload);
	appendStringInfoString(&r->payload, "}}");
	appendStringInfoChar(&r->values, '}');
	r->payload_jsonb = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->payload.data));

	if (r->state == NULL)
		odoo_check_recipient(r);
	if (strcmp(r->state, "failed") == 0 && r->details == NULL)
		r->details = rd->preset ?
			psprintf("Recorded by the whatsapp trigger on %s at commit; the document was saved. wa_odoo_preview('%s', %ld) shows the message as it would be now.",
					 odoo_model_table[m], ev->name, (long) res_id) :
			psprintf("Recorded by the whatsapp trigger of Odoo rule %s on %s at commit; the record was saved.",
					 rd->name, rd->model);
	if (for_preview)
	{
		r->odoo_version = odoo_version(&row);
		r->odoo_version_text = row.version_text;
		r->format_lang = odoo_row_text(&row, A_L, LC_CODE);
	}
	odoo_row_close(&row);
	return r->fires && r->state != NULL;
}

/* ----------
 * The firing path, the same for the rules and the four events
 * ----------
 */

/*
 * Enter the firing: SPI, and a snapshot that sees the transaction's own
 * latest writes (at the commit of a single-statement transaction no
 * command counter increment has happened since the UPDATE that queued
 * the rule).
 */
static void
fire_begin(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "whatsapp: SPI_connect failed");
	CommandCounterIncrement();
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
}

static void
fire_end(void)
{
	PopActiveSnapshot();
	SPI_finish();
}

/* Render record id for the rule, and record its message.  Between fire_begin and fire_end. */
static void
fire(OdooRuleDef *rd, Relation rel, int64 id, int64 sent_msg_id)
{
	OdooRender	r;

	if (odoo_render_rule(rd, rel, id, false, &r, sent_msg_id))
		odoo_record(&r);
}

/* The id of the row, or false when it has none of an integer type. */
static bool
row_id(Relation rel, HeapTuple tup, int64 *id)
{
	int			attno = SPI_fnumber(RelationGetDescr(rel), "id");
	Oid			type;
	Datum		d;
	bool		isnull;

	if (attno <= 0)
		return false;
	type = SPI_gettypeid(RelationGetDescr(rel), attno);
	d = heap_getattr(tup, attno, RelationGetDescr(rel), &isnull);
	if (isnull || !(type == INT4OID || type == INT8OID))
		return false;
	*id = type == INT4OID ? DatumGetInt32(d) : DatumGetInt64(d);
	return true;
}

/*
 * The presets' check that the row entered the state, made from the two
 * row versions the trigger is handed (their triggers name no column, so
 * that Odoo's own ALTER TABLE of state, move_type or is_move_sent never
 * fails because of them), with column numbers cached until the table's
 * next relcache invalidation.  A rule's own check is rule_holds.
 */
typedef struct TrigCols
{
	Oid			relid;			/* InvalidOid: not computed */
	AttrNumber	state;			/* 0: missing or not text */
	AttrNumber	move_type;
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
trig_attnum(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
			return (a->atttypid == TEXTOID || a->atttypid == VARCHAROID) ? a->attnum : 0;
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

		tc->state = trig_attnum(desc, "state");
		tc->move_type = trig_attnum(desc, "move_type");
		tc->relid = RelationGetRelid(rel);
	}
	return tc;
}

static bool
preset_row_holds(const OdooEvent *ev, const TrigCols *tc, TupleDesc desc, HeapTuple tup)
{
	const char *mt[2] = {ev->move_type, NULL};

	if (tup == NULL)
		return false;
	return wa_tuple_text_in(tup, desc, tc->state, ev->states) &&
		(ev->move_type == NULL || wa_tuple_text_in(tup, desc, tc->move_type, mt));
}

/*
 * whatsapp._odoo_trigger(event): the trigger of a preset, made by
 * wa_odoo_enable.  Deferred, on INSERT and UPDATE of sale_order or
 * account_move, or on INSERT of mail_message for invoice_sent.
 */
PG_FUNCTION_INFO_V1(wa_odoo_trigger);

Datum
wa_odoo_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	const OdooEvent *ev;
	char	   *nsp;
	int64		id;
	int64		msg_id = 0;
	OdooRuleDef rd;
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
		(ev = odoo_preset(td->tg_trigger->tgargs[0])) == NULL ||
		strcmp(RelationGetRelationName(rel),
			   ev->needs_sent ? WA_ODOO_SENT_TABLE : odoo_model_table[ev->model]) != 0 ||
		nsp == NULL || strcmp(nsp, "public") != 0)
	{
		ereport(WARNING,
				(errmsg("whatsapp: trigger \"%s\" on \"%s\" was not made by whatsapp.wa_odoo_enable(); it does nothing",
						td->tg_trigger->tgname, RelationGetRelationName(rel))));
		return PointerGetDatum(NULL);
	}
	if (!wa_odoo_events)
		return PointerGetDatum(NULL);

	if (ev->needs_sent)
	{
		/*
		 * invoice_sent: a message inserted on mail_message.  Is it about
		 * an invoice, of an outgoing kind?  Most messages end here; the
		 * rest is checked at rendering (odoo_sent.c).
		 */
		if (!TRIGGER_FIRED_BY_INSERT(td->tg_event) ||
			!wa_odoo_sent_candidate(rel, td->tg_trigtuple, &id, &msg_id))
			return PointerGetDatum(NULL);
	}
	else
	{
		/* Did the row enter the preset's state?  Most firings end here. */
		const TrigCols *tc = trig_columns(ev->model, rel);
		TupleDesc	desc = RelationGetDescr(rel);
		HeapTuple	tup;

		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		{
			if (!preset_row_holds(ev, tc, desc, td->tg_newtuple) ||
				preset_row_holds(ev, tc, desc, td->tg_trigtuple))
				return PointerGetDatum(NULL);
		}
		else if (!preset_row_holds(ev, tc, desc, td->tg_trigtuple))
			return PointerGetDatum(NULL);
		tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
		if (!row_id(rel, tup, &id))
			return PointerGetDatum(NULL);
	}

	odoo_preset_rule(ev, &rd);
	fire_begin();
	fire(&rd, NULL, id, msg_id);
	fire_end();
	return PointerGetDatum(NULL);
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
	OdooRuleDef rd;
	HeapTuple	newtup;
	HeapTuple	oldtup;
	int64		id;

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
	if (!row_id(rel, newtup, &id))
		return PointerGetDatum(NULL);

	fire_begin();
	/* Did the row enter the state, or the condition become true? */
	if (rule_holds(&rd, rel, newtup, GetActiveSnapshot()) &&
		!rule_holds(&rd, rel, oldtup, GetActiveSnapshot()))
		fire(&rd, rel, id, 0);
	fire_end();
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
	OdooRuleDef rd;
	Oid			relid;
	Relation	rel;
	OdooRender	r;
	StringInfoData b;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext old;
	Datum		result;

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

	fire_begin();
	(void) odoo_render_rule(&rd, rel, id, true, &r, 0);
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
	odoo_json_kv_str(&b, "outcome", r.state);
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
	appendStringInfo(&b, ", \"access_token_created_at_commit\": %s",
					 (r.token_new || r.att_token_new) ? "true" : "false");
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
