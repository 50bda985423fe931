/*-------------------------------------------------------------------------
 *
 * odoo_links.c
 *	  The public base URL of a document's portal links, picked the way
 *	  Odoo picks it.
 *
 * Odoo builds a record's portal URL on record.get_base_url().  With the
 * website module installed (addons/website/models/ir_model.py) that is,
 * in 16 to 19:
 *
 *	 1. the domain of the record's own website_id, when the model has that
 *		field and the website a domain (sale_order.website_id: the website
 *		the order came from; account_move.website_id, from website_sale:
 *		the website of its orders);
 *	 2. else the domain of its company's website (res_company.website_id,
 *		a stored compute: the company's first website);
 *	 3. else ir_config_parameter web.base.url (odoo.c reads it).
 *
 * Odoo stores website.domain with its scheme and without a trailing "/"
 * (website._handle_domain adds "https://" when the scheme is missing); a
 * domain written without one by other means is read the same way here.
 * A rule's own "base_url" comes before all of them (odoo.c).
 *
 * Odoo's tables are read as odoo_read.c reads them.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "odoo_links.h"

static const Oid text_types[] = {TEXTOID, VARCHAROID, InvalidOid};
static const Oid id_types[] = {INT4OID, INT8OID, INT2OID, InvalidOid};

/*
 * Integer column col of the row of public.table whose id is id: false
 * when the table, the column or the row is missing, or the value NULL.
 */
static bool
row_int_by_id(const char *table, int64 id, const char *col, int64 *value, Snapshot snap)
{
	Oid			relid = wa_odoo_table(table, LOG);
	AttrNumber	a_id,
				a_col;
	Oid			idtype = InvalidOid;
	Oid			index,
				coll = InvalidOid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	if (!OidIsValid(relid))
		return false;
	a_id = wa_odoo_column(relid, "id", id_types, &idtype, LOG);
	/* a missing column is normal here (no website module): not reported */
	a_col = get_attnum(relid, col) > 0 ? wa_odoo_column(relid, col, id_types, NULL, LOG) : 0;
	if (a_id == 0 || a_col == 0)
		return false;
	index = wa_key_index(relid, a_id, idtype, &coll);
	rel = table_open(relid, NoLock);
	scan = wa_key_scan(rel, a_id, idtype, index, coll, id, NULL, snap);
	if (scan != NULL)
	{
		if (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			bool		isnull;
			Datum		d = heap_getattr(tup, a_col, RelationGetDescr(rel), &isnull);

			if (!isnull)
			{
				Oid			t = TupleDescAttr(RelationGetDescr(rel), a_col - 1)->atttypid;

				*value = t == INT8OID ? DatumGetInt64(d) :
					t == INT4OID ? DatumGetInt32(d) : DatumGetInt16(d);
				found = true;
			}
		}
		systable_endscan(scan);
	}
	table_close(rel, NoLock);
	return found;
}

/* The base URL of website id (from its domain), or NULL when it has none. */
static char *
website_url(int64 id, Snapshot snap)
{
	Oid			relid = wa_odoo_table("website", LOG);
	AttrNumber	a_id,
				a_domain;
	Oid			idtype = InvalidOid;
	Oid			index,
				coll = InvalidOid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *url = NULL;

	if (!OidIsValid(relid))
		return NULL;
	a_id = wa_odoo_column(relid, "id", id_types, &idtype, LOG);
	a_domain = wa_odoo_column(relid, "domain", text_types, NULL, LOG);
	if (a_id == 0 || a_domain == 0)
		return NULL;
	index = wa_key_index(relid, a_id, idtype, &coll);
	rel = table_open(relid, NoLock);
	scan = wa_key_scan(rel, a_id, idtype, index, coll, id, NULL, snap);
	if (scan != NULL)
	{
		if (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			bool		isnull;
			Datum		d = heap_getattr(tup, a_domain, RelationGetDescr(rel), &isnull);

			if (!isnull)
				url = wa_odoo_normalize_domain(TextDatumGetCString(d));
		}
		systable_endscan(scan);
	}
	table_close(rel, NoLock);
	return url;
}

/*
 * A website domain as Odoo stores it: trimmed, "https://" when it has no
 * scheme, no trailing "/"; NULL when empty.
 */
char *
wa_odoo_normalize_domain(const char *domain)
{
	const char *s = domain;
	size_t		len;
	char	   *out;

	while (*s == ' ' || *s == '\t')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '/'))
		len--;
	if (len == 0)
		return NULL;
	if (len >= 4 && pg_strncasecmp(s, "http", 4) == 0)
		out = pnstrdup(s, len);
	else
		out = psprintf("https://%.*s", (int) len, s);
	return out;
}

/*
 * The base URL of the document's website, as get_base_url picks it
 * (above), or NULL when neither the document nor its company has a
 * website with a domain.  *website_id gets the website's id.
 */
char *
wa_odoo_website_base_url(const char *table, int64 res_id, bool company_null,
						 int64 company_id, Snapshot snap, int64 *website_id)
{
	int64		w;
	char	   *url;

	if (row_int_by_id(table, res_id, "website_id", &w, snap) &&
		(url = website_url(w, snap)) != NULL)
	{
		*website_id = w;
		return url;
	}
	if (!company_null && row_int_by_id("res_company", company_id, "website_id", &w, snap) &&
		(url = website_url(w, snap)) != NULL)
	{
		*website_id = w;
		return url;
	}
	return NULL;
}

/*
 * For wa_odoo_enable: the warnings about every website's domain (links of
 * documents from that website use it), "; "-separated, or NULL.
 */
char *
wa_odoo_website_warnings(void)
{
	Oid			relid = wa_odoo_table("website", LOG);
	AttrNumber	a_id,
				a_domain;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	StringInfoData b;

	if (!OidIsValid(relid))
		return NULL;
	a_id = wa_odoo_column(relid, "id", id_types, NULL, LOG);
	a_domain = wa_odoo_column(relid, "domain", text_types, NULL, LOG);
	if (a_id == 0 || a_domain == 0)
		return NULL;
	initStringInfo(&b);
	rel = table_open(relid, NoLock);
	scan = systable_beginscan(rel, InvalidOid, false, GetLatestSnapshot(), 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, a_domain, RelationGetDescr(rel), &isnull);
		Datum		idd;
		char	   *url;
		char	   *w;
		Oid			t = TupleDescAttr(RelationGetDescr(rel), a_id - 1)->atttypid;

		if (isnull || (url = wa_odoo_normalize_domain(TextDatumGetCString(d))) == NULL)
			continue;
		w = wa_odoo_link_warning(url, false);
		if (w == NULL)
			continue;
		idd = heap_getattr(tup, a_id, RelationGetDescr(rel), &isnull);
		appendStringInfo(&b, "%swebsite %ld (%s): %s", b.len > 0 ? "; " : "",
						 isnull ? 0L : (long) (t == INT8OID ? DatumGetInt64(idd) :
											   t == INT4OID ? DatumGetInt32(idd) :
											   DatumGetInt16(idd)),
						 url, w);
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	return b.len > 0 ? b.data : NULL;
}
