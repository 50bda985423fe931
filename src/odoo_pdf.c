/*-------------------------------------------------------------------------
 *
 * odoo_pdf.c
 *	  The official PDF of an Odoo invoice, for the document header of the
 *	  Odoo events: where it is, the link Meta fetches it by, and the
 *	  messages that wait for it.
 *
 * What Odoo serves as "the invoice":
 *
 * - From 17 on, the portal's /my/invoices/<id>?report_type=pdf returns the
 *	 invoice's legal documents: a pro-forma when no official PDF has been
 *	 generated yet, a ZIP when there is a PDF and an EDI XML.  Neither may
 *	 be a WhatsApp document header.  The official PDF is the attachment of
 *	 the binary field invoice_pdf_report_file: an ir_attachment row with
 *	 res_model 'account.move', res_id the invoice, res_field
 *	 'invoice_pdf_report_file' (invoice_pdf_report_id is a computed
 *	 many2one that finds this row; it has no column).  Odoo serves it by
 *	 /web/content/<attachment id>?access_token=<its access_token>.  It is
 *	 made when the invoice is first sent or printed, usually after posting.
 * - In 16 the invoice report stores what it renders for a posted invoice
 *	 (attachment_use) as a plain attachment (res_field NULL) named
 *	 (name or 'INV').replace('/', '_') + '.pdf', and the portal link
 *	 renders and stores that same official PDF when there is none yet.
 *
 * So a header of an invoice or credit note is the stored official PDF by
 * /web/content when there is one; in 16, the portal link otherwise; from
 * 17 on (or when the version is not known), no header, at once or after
 * waiting for the PDF up to the rule's "pdf_wait".  A waiting message is
 * queued with next_attempt_at at its deadline, and a row of
 * whatsapp.odoo_pdf_wait says what it waits for; the worker looks for
 * the PDF at each turn (wa_odoo_pdf_release) and, in one transaction,
 * adds the header and makes the message due, or at the deadline lets it
 * go as it is.  The claim's row locks order the two, so a message is sent
 * once, with the header or without it.
 *
 * A message that goes without its header names the rule's
 * "template_no_header" when it has one (wa_odoo_no_header_template): Meta
 * refuses a template whose DOCUMENT header is left out.  At once, render
 * sets the name (wa_odoo_payload_template); after a wait, the worker, from
 * the wait row.
 *
 * Sale orders have no stored report: their header stays the portal link,
 * which renders the quotation or order report itself.
 *
 * ir_attachment belongs to Odoo's role: it is read here the way
 * odoo_read.c reads Odoo's tables (ordinary table, built-in types,
 * systable scans), and the one write, an attachment's missing
 * access_token, is made as the table's owner.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"

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
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/lmgr.h"
#include "commands/dbcommands.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

static const Oid text_types[] = {TEXTOID, VARCHAROID, InvalidOid};
static const Oid id_types[] = {INT4OID, INT8OID, InvalidOid};
static const Oid bytea_types[] = {BYTEAOID, InvalidOid};

/* ir_attachment as the catalog shows it now */
typedef struct AttTable
{
	Oid			relid;
	AttrNumber	id,
				res_model,
				res_id,
				res_field,
				name,
				type,
				token,
				mimetype,
				store_fname,
				db_datas;
	Oid			id_type,
				res_id_type,
				model_type;
	Oid			index;			/* btree on (res_model, res_id), or InvalidOid */
	Oid			coll;
} AttTable;

/* A btree index whose first two keys are plainly res_model and res_id. */
static Oid
res_index(AttTable *t)
{
	Relation	rel = relation_open(t->relid, NoLock);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			found = InvalidOid;

	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		HeapTuple	itup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
		Form_pg_index ind;
		bool		ok;

		if (!HeapTupleIsValid(itup))
			continue;
		ind = (Form_pg_index) GETSTRUCT(itup);
		ok = ind->indisvalid && ind->indisready && ind->indislive &&
			ind->indnkeyatts >= 2 &&
			ind->indkey.values[0] == t->res_model &&
			ind->indkey.values[1] == t->res_id &&
			heap_attisnull(itup, Anum_pg_index_indexprs, NULL) &&
			heap_attisnull(itup, Anum_pg_index_indpred, NULL);
		if (ok)
		{
			bool		isnull;
			Datum		d = SysCacheGetAttr(INDEXRELID, itup, Anum_pg_index_indclass, &isnull);
			oidvector  *cls = (oidvector *) DatumGetPointer(d);

			ok = !isnull &&
				get_opclass_input_type(cls->values[0]) == TEXTOID &&
				get_opclass_input_type(cls->values[1]) == t->res_id_type;
			if (ok)
			{
				d = SysCacheGetAttr(INDEXRELID, itup, Anum_pg_index_indcollation, &isnull);
				t->coll = isnull ? InvalidOid : ((oidvector *) DatumGetPointer(d))->values[0];
			}
		}
		ReleaseSysCache(itup);
		if (ok)
		{
			HeapTuple	ctup = SearchSysCache1(RELOID, ObjectIdGetDatum(indexoid));

			if (!HeapTupleIsValid(ctup))
				continue;
			ok = ((Form_pg_class) GETSTRUCT(ctup))->relam == BTREE_AM_OID;
			ReleaseSysCache(ctup);
		}
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

/* public.ir_attachment with the columns we read; false when not as Odoo makes it. */
static bool
att_table(AttTable *t)
{
	memset(t, 0, sizeof(*t));
	t->relid = wa_odoo_table("ir_attachment", LOG);
	if (!OidIsValid(t->relid))
		return false;
	t->id = wa_odoo_column(t->relid, "id", id_types, &t->id_type, LOG);
	t->res_model = wa_odoo_column(t->relid, "res_model", text_types, &t->model_type, LOG);
	t->res_id = wa_odoo_column(t->relid, "res_id", id_types, &t->res_id_type, LOG);
	t->res_field = wa_odoo_column(t->relid, "res_field", text_types, NULL, LOG);
	t->name = wa_odoo_column(t->relid, "name", text_types, NULL, LOG);
	t->type = wa_odoo_column(t->relid, "type", text_types, NULL, LOG);
	t->token = wa_odoo_column(t->relid, "access_token", text_types, NULL, LOG);
	t->mimetype = wa_odoo_column(t->relid, "mimetype", text_types, NULL, LOG);
	t->store_fname = wa_odoo_column(t->relid, "store_fname", text_types, NULL, LOG);
	t->db_datas = wa_odoo_column(t->relid, "db_datas", bytea_types, NULL, LOG);
	if (t->id == 0 || t->res_model == 0 || t->res_id == 0 || t->res_field == 0 ||
		t->name == 0 || t->token == 0)
		return false;
	t->index = res_index(t);
	return true;
}

static char *
att_text(HeapTuple tup, TupleDesc desc, AttrNumber att)
{
	bool		isnull;
	Datum		d;

	if (att == 0)
		return NULL;
	d = heap_getattr(tup, att, desc, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * The official PDF of invoice (account.move) move_id, in snapshot snap:
 * version 16 (by the report's attachment name, from doc_name), else the
 * attachment of invoice_pdf_report_file.  Of several, the newest.  False
 * when there is none (or ir_attachment is not as Odoo makes it).  With
 * with_data, out->db_datas gets the file when the database holds it (for
 * an upload; never at commit, where only the link is made).
 */
bool
wa_odoo_invoice_pdf(int64 move_id, int version, const char *doc_name, Snapshot snap,
					bool with_data, WaOdooPdf *out)
{
	AttTable	t;
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData keys[2];
	HeapTuple	tup;
	char	   *want_name = NULL;

	memset(out, 0, sizeof(*out));
	if (!att_table(&t))
		return false;
	if ((t.res_id_type == INT4OID && (move_id < PG_INT32_MIN || move_id > PG_INT32_MAX)))
		return false;
	if (version == 16)
	{
		StringInfoData b;

		initStringInfo(&b);
		for (const char *p = (doc_name && doc_name[0]) ? doc_name : "INV"; *p; p++)
			appendStringInfoChar(&b, *p == '/' ? '_' : *p);
		appendStringInfoString(&b, ".pdf");
		want_name = b.data;
	}

	ScanKeyInit(&keys[0], t.res_model, BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum("account.move"));
	keys[0].sk_collation = OidIsValid(t.index) && OidIsValid(t.coll) ? t.coll : C_COLLATION_OID;
	if (t.res_id_type == INT4OID)
		ScanKeyInit(&keys[1], t.res_id, BTEqualStrategyNumber, F_INT4EQ,
					Int32GetDatum((int32) move_id));
	else
		ScanKeyInit(&keys[1], t.res_id, BTEqualStrategyNumber, F_INT8EQ,
					Int64GetDatum(move_id));

	rel = table_open(t.relid, NoLock);
	scan = systable_beginscan(rel, t.index, OidIsValid(t.index), snap, 2, keys);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		char	   *field = att_text(tup, desc, t.res_field);
		char	   *name = att_text(tup, desc, t.name);
		char	   *type = att_text(tup, desc, t.type);
		char	   *mime = att_text(tup, desc, t.mimetype);
		bool		isnull;
		Datum		d;
		int64		id;

		if (type != NULL && strcmp(type, "binary") != 0)
			continue;			/* a URL attachment has no file */
		if (mime != NULL && strcmp(mime, "application/pdf") != 0)
			continue;			/* the XML beside it, never a ZIP */
		if (want_name != NULL ?
			(field != NULL || name == NULL || strcmp(name, want_name) != 0) :
			(field == NULL || strcmp(field, "invoice_pdf_report_file") != 0))
			continue;
		d = heap_getattr(tup, t.id, desc, &isnull);
		if (isnull)
			continue;
		id = t.id_type == INT4OID ? DatumGetInt32(d) : DatumGetInt64(d);
		if (out->found && id < out->id)
			continue;
		out->found = true;
		out->id = id;
		out->name = name;
		out->token = att_text(tup, desc, t.token);
		if (out->token != NULL && out->token[0] == '\0')
			out->token = NULL;
		out->store_fname = att_text(tup, desc, t.store_fname);
		out->db_datas = NULL;
		if (with_data && t.db_datas != 0)
		{
			d = heap_getattr(tup, t.db_datas, desc, &isnull);
			if (!isnull)
				out->db_datas = DatumGetByteaPCopy(d);
		}
	}
	systable_endscan(scan);
	table_close(rel, NoLock);
	out->relid = t.relid;
	return out->found;
}

/*
 * The major version of the Odoo that owns the database, from module base
 * in ir_module_module (as odoo.c reads it for a rendering); 0: unknown.
 */
int
wa_odoo_version(void)
{
	static const Oid tt[] = {TEXTOID, VARCHAROID, InvalidOid};
	Oid			relid = wa_odoo_table("ir_module_module", LOG);
	AttrNumber	name,
				ver,
				state;
	Oid			ntype;
	Oid			index;
	Oid			coll = InvalidOid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	int			major = 0;

	if (!OidIsValid(relid))
		return 0;
	name = wa_odoo_column(relid, "name", tt, &ntype, LOG);
	ver = wa_odoo_column(relid, "latest_version", tt, NULL, LOG);
	state = wa_odoo_column(relid, "state", tt, NULL, LOG);
	if (name == 0 || ver == 0)
		return 0;
	index = wa_key_index(relid, name, ntype, &coll);
	rel = table_open(relid, NoLock);
	scan = wa_key_scan(rel, name, ntype, index, coll, 0, "base", GetActiveSnapshot());
	if (scan != NULL)
	{
		if (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			char	   *st = att_text(tup, RelationGetDescr(rel), state);
			char	   *v = att_text(tup, RelationGetDescr(rel), ver);

			if (v != NULL && (st == NULL || strcmp(st, "uninstalled") != 0))
			{
				char	   *end;
				long		m;

				if (strncmp(v, "saas~", 5) == 0)
					v += 5;
				m = strtol(v, &end, 10);
				if (end != v && *end == '.' && m >= 8 && m <= 99)
					major = (int) m;
			}
		}
		systable_endscan(scan);
	}
	table_close(rel, NoLock);
	return major;
}

/* A random (version 4) UUID in its text form, as Python's str(uuid.uuid4()). */
char *
wa_uuid4(void)
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
 * Why the extension cannot write a new access_token to an attachment, or
 * NULL: what the catalog shows that would make the write fail (the
 * column's type and length, the owner's privileges, forced row security),
 * checked before, as for the documents' own tokens (odoo.c).
 */
char *
wa_odoo_attachment_token_problem(Oid relid)
{
	AttrNumber	tok = get_attnum(relid, "access_token");
	AttrNumber	id = get_attnum(relid, "id");
	Oid			type;
	int32		typmod;
	Oid			coll;
	HeapTuple	tup;
	Oid			owner;
	bool		forced;

	if (tok <= 0 || id <= 0)
		return pstrdup("column ir_attachment.access_token is missing");
	get_atttypetypmodcoll(relid, tok, &type, &typmod, &coll);
	if (type != TEXTOID && type != VARCHAROID)
		return psprintf("column ir_attachment.access_token is of type %s", format_type_be(type));
	if (type == VARCHAROID && typmod >= 0 && typmod - VARHDRSZ < 36)
		return pstrdup("column ir_attachment.access_token is too short for a token");
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return pstrdup("the table is gone");
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	forced = ((Form_pg_class) GETSTRUCT(tup))->relrowsecurity &&
		((Form_pg_class) GETSTRUCT(tup))->relforcerowsecurity;
	ReleaseSysCache(tup);
	if (forced)
		return pstrdup("public.ir_attachment forces row level security");
	if ((pg_class_aclcheck(relid, owner, ACL_UPDATE) != ACLCHECK_OK &&
		 pg_attribute_aclcheck(relid, tok, owner, ACL_UPDATE) != ACLCHECK_OK) ||
		(pg_class_aclcheck(relid, owner, ACL_SELECT) != ACLCHECK_OK &&
		 (pg_attribute_aclcheck(relid, tok, owner, ACL_SELECT) != ACLCHECK_OK ||
		  pg_attribute_aclcheck(relid, id, owner, ACL_SELECT) != ACLCHECK_OK)))
		return psprintf("its owner %s may not update ir_attachment.access_token",
						GetUserNameFromId(owner, false));
	return NULL;
}

/*
 * Write token to attachment att_id, when it has none, as the owner of
 * ir_attachment (odoo_read.c), as Odoo's generate_access_token would.
 * Inside SPI.  True when one row was updated.
 */
static SPIPlanPtr att_token_plan = NULL;
static Oid	att_token_plan_rel = InvalidOid;

bool
wa_odoo_attachment_token_write(Oid relid, int64 att_id, const char *token)
{
	WaOwnerContext oc;
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	int			rc;
	uint64		n;

	wa_odoo_as_owner_begin(relid, &oc);
	/* as in odoo.c: no event of ours may be queued inside this write */
	(void) set_config_option("whatsapp.odoo_events", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (att_token_plan != NULL && att_token_plan_rel != relid)
	{
		SPI_freeplan(att_token_plan);
		att_token_plan = NULL;
	}
	if (att_token_plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare("UPDATE public.ir_attachment SET access_token = $1"
									" WHERE id = $2 AND (access_token IS NULL OR access_token = '')",
									2, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "whatsapp: could not prepare the attachment access_token write: %s",
				 SPI_result_code_string(SPI_result));
		att_token_plan = p;
		att_token_plan_rel = relid;
	}
	values[0] = CStringGetTextDatum(token);
	values[1] = Int64GetDatum(att_id);
	rc = SPI_execute_plan(att_token_plan, values, NULL, false, 0);
	n = SPI_processed;
	wa_odoo_as_owner_end(&oc);
	return rc == SPI_OK_UPDATE && n == 1;
}

/* base_url (without its last "/") + /web/content/<id>?access_token=<token> */
char *
wa_odoo_attachment_link(const char *base_url, int64 att_id, const char *token)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfo(&b, "%s/web/content/%lld?access_token=", base_url, (long long) att_id);
	for (const unsigned char *p = (const unsigned char *) token; *p; p++)
	{
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~')
			appendStringInfoChar(&b, (char) *p);
		else
			appendStringInfo(&b, "%%%02X", *p);
	}
	return b.data;
}

/* The file name of the header: the attachment's, else the document's name + ".pdf". */
char *
wa_odoo_pdf_filename(const char *att_name, const char *doc_name, const char *table, int64 res_id)
{
	StringInfoData f;
	size_t		len = att_name ? strlen(att_name) : 0;

	initStringInfo(&f);
	if (len > 4 && pg_strcasecmp(att_name + len - 4, ".pdf") == 0)
	{
		for (const char *p = att_name; *p; p++)
			appendStringInfoChar(&f, (*p == '/' || *p == '\\') ? '_' : *p);
		return f.data;
	}
	if (doc_name == NULL || doc_name[0] == '\0' || strcmp(doc_name, "/") == 0)
		appendStringInfo(&f, "%s_%lld", table, (long long) res_id);
	else
		for (const char *p = doc_name; *p; p++)
			appendStringInfoChar(&f, (*p == '/' || *p == '\\' || *p == ' ') ? '_' : *p);
	appendStringInfoString(&f, ".pdf");
	return f.data;
}

/*
 * The bytes of an attachment stored as a file: whatsapp.odoo_data_dir +
 * /filestore/<this database>/<store_fname>, where store_fname is what
 * Odoo writes ("ab/ab01...", hex digits and one "/"), nothing else: a
 * name that could leave the filestore is refused, and so are symbolic
 * links (the directory of two hex digits, the file): the filestore
 * belongs to Odoo's system user, which must not make the server read a
 * file of its own (its key file, say) and send it to Meta.  NULL with
 * *why set when it cannot be read.  At most 100 MB, Meta's limit for
 * documents.
 */
#define WA_MAX_DOCUMENT (100 * 1024 * 1024)

static char *
filestore_read(const char *store_fname, size_t *len, char **why)
{
	char	   *path;
	char	   *dbname;
	int			fd;
	struct stat st;
	char	   *buf;
	size_t		got = 0;
	int			slashes = 0;

	*why = NULL;
	if (wa_odoo_data_dir == NULL || wa_odoo_data_dir[0] == '\0')
	{
		*why = pstrdup("the PDF is in Odoo's filestore, and whatsapp.odoo_data_dir is not set");
		return NULL;
	}
	for (const char *p = store_fname; *p; p++)
	{
		if (*p == '/')
			slashes++;
		else if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			slashes = 99;
	}
	if (slashes != 1 || strlen(store_fname) < 4 || store_fname[2] != '/')
	{
		*why = psprintf("store_fname \"%s\" is not a name Odoo gives a file", store_fname);
		return NULL;
	}

	/*
	 * The database's name is the other part of the path, and the role that
	 * owns the database chooses it (CREATE DATABASE, ALTER DATABASE RENAME
	 * with CREATEDB, which Odoo's role has): "odoo/../acme" would lead into
	 * another database's filestore.  It must be one directory name.
	 */
	dbname = get_database_name(MyDatabaseId);
	if (dbname == NULL || dbname[0] == '\0' || strchr(dbname, '/') != NULL ||
		strcmp(dbname, ".") == 0 || strcmp(dbname, "..") == 0)
	{
		*why = psprintf("the database name \"%s\" is not a directory name of the filestore (it holds a \"/\", or is \".\" or \"..\")",
						dbname ? dbname : "");
		return NULL;
	}
	path = psprintf("%s/filestore/%s/%.2s", wa_odoo_data_dir, dbname, store_fname);
	if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode))
	{
		*why = psprintf("\"%s\" is not a directory (a symbolic link is not followed)", path);
		return NULL;
	}
	path = psprintf("%s/filestore/%s/%s", wa_odoo_data_dir, dbname, store_fname);
	fd = OpenTransientFile(path, O_RDONLY | O_NOFOLLOW | PG_BINARY);
	if (fd < 0)
	{
		*why = psprintf("could not open \"%s\": %m", path);
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > WA_MAX_DOCUMENT)
	{
		*why = psprintf("\"%s\" is not a regular file of at most 100 MB", path);
		CloseTransientFile(fd);
		return NULL;
	}
	buf = palloc(st.st_size + 1);
	while (got < (size_t) st.st_size)
	{
		ssize_t		n = read(fd, buf + got, st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			*why = psprintf("could not read \"%s\": %s", path, n < 0 ? strerror(errno) : "short read");
			CloseTransientFile(fd);
			return NULL;
		}
		got += n;
	}
	CloseTransientFile(fd);
	*len = got;
	return buf;
}

/* {"type": "header", "parameters": [{"type": "document", "document": {"id": ...}}]} */
static void
header_media_json(StringInfo out, const char *media_id, const char *filename)
{
	appendStringInfoString(out, "{\"type\": \"header\", \"parameters\": [{\"type\": \"document\", \"document\": {\"id\": ");
	escape_json(out, media_id);
	appendStringInfoString(out, ", \"filename\": ");
	escape_json(out, filename);
	appendStringInfoString(out, "}}]}");
}

/* {"type": "header", "parameters": [{"type": "document", "document": {...}}]} */
void
wa_odoo_header_json(StringInfo out, const char *link, const char *filename)
{
	appendStringInfoString(out, "{\"type\": \"header\", \"parameters\": [{\"type\": \"document\", \"document\": {\"link\": ");
	escape_json(out, link);
	appendStringInfoString(out, ", \"filename\": ");
	escape_json(out, filename);
	appendStringInfoString(out, "}}]}");
}

/*
 * payload (a template message, jsonb) with template.name set to
 * template_name: the rule's "template_no_header", for a message that goes
 * without its document header.  Meta refuses a message that lacks the
 * header its template declares, so such a message names a template of
 * the same text without the header.
 */
Datum
wa_odoo_payload_template(Datum payload, const char *template_name)
{
	Datum		path[2];
	ArrayType  *arr;
	Datum		name;
	StringInfoData j;

	path[0] = CStringGetTextDatum("template");
	path[1] = CStringGetTextDatum("name");
	arr = construct_array(path, 2, TEXTOID, -1, false, TYPALIGN_INT);
	initStringInfo(&j);
	escape_json(&j, template_name);
	name = DirectFunctionCall1(jsonb_in, CStringGetDatum(j.data));
	return DirectFunctionCall4(jsonb_set, payload, PointerGetDatum(arr), name, BoolGetDatum(false));
}

/*
 * Record that message (account_id, dedupe_key), just inserted as queued,
 * waits for the official PDF of invoice res_id until the deadline, and a
 * row of whatsapp.odoo_pdf_wait holds what the header needs.  Its
 * next_attempt_at is a minute past the deadline: the worker makes it due
 * when it ends the wait (wa_odoo_pdf_release), so that no claim takes it
 * between the deadline and the worker's last look for the PDF; and should
 * the worker never get to it, it still leaves, without the header.
 * Inside SPI, in the recording transaction.
 */
void
wa_odoo_pdf_wait_record(int32 account_id, const char *dedupe_key, int64 res_id,
						TimestampTz until, const char *base_url, const char *doc_name,
						bool upload, const char *template_no_header)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[8] = {INT4OID, TEXTOID, TIMESTAMPTZOID, INT8OID, TEXTOID, TEXTOID, BOOLOID,
	TEXTOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;

	if (plan == NULL)
	{
		/* texteq: no partial index on state can be proven (see worker.c) */
		SPIPlanPtr	p = SPI_prepare("WITH m AS (UPDATE whatsapp.message"
									"  SET next_attempt_at = $3 OPERATOR(pg_catalog.+) interval '1 minute'"
									"  WHERE account_id OPERATOR(pg_catalog.=) $1"
									"    AND dedupe_key OPERATOR(pg_catalog.=) $2"
									"    AND pg_catalog.texteq(state, 'queued')"
									"  RETURNING id)"
									" INSERT INTO whatsapp.odoo_pdf_wait (message_id, res_id, until, base_url, document, upload,"
									"   template_no_header)"
									" SELECT m.id, $4, $3, $5, $6, $7, $8 FROM m",
									8, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "whatsapp: could not prepare the PDF wait: %s",
				 SPI_result_code_string(SPI_result));
		plan = p;
	}
	values[0] = Int32GetDatum(account_id);
	values[1] = CStringGetTextDatum(dedupe_key);
	values[2] = TimestampTzGetDatum(until);
	values[3] = Int64GetDatum(res_id);
	values[4] = CStringGetTextDatum(base_url);
	if (doc_name)
		values[5] = CStringGetTextDatum(doc_name);
	else
		nulls[5] = 'n';
	values[6] = BoolGetDatum(upload);
	if (template_no_header)
		values[7] = CStringGetTextDatum(template_no_header);
	else
		nulls[7] = 'n';
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "whatsapp: could not record the PDF wait: %s", SPI_result_code_string(rc));
}

/*
 * The worker's turn: for each message waiting for its invoice's PDF, look
 * for the PDF; found, add the header (by link, creating the attachment's
 * access_token as Odoo would; or uploaded to Meta, by media id) and make
 * the message due now; not found by the deadline, make it due without
 * the header.  The message row is locked first, so that a claim, a
 * wa_cancel or this cannot interleave: a message no longer queued (or
 * gone: purged, truncated) only loses its wait row.  Returns how many waits remain.  Runs in the
 * caller's transaction, inside SPI.
 */
int
wa_odoo_pdf_release(WaMediaUploader upload)
{
	static SPIPlanPtr plan_list = NULL;
	static SPIPlanPtr plan_state = NULL;
	static SPIPlanPtr plan_done = NULL;
	static SPIPlanPtr plan_header = NULL;
	static SPIPlanPtr plan_due = NULL;
	static SPIPlanPtr plan_name = NULL;
	int			rc;
	uint64		n;
	SPITupleTable *tt;
	int			remaining = 0;
	bool		need_version = true;
	int			version = 0;

	/* the library may run before ALTER EXTENSION UPDATE made the table */
	{
		Oid			nsp = get_namespace_oid("whatsapp", true);

		if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("odoo_pdf_wait", nsp)))
			return 0;
	}
	{
		Oid			t1[1] = {INT8OID};
		Oid			t2[2] = {INT8OID, JSONBOID};

		wa_plan(&plan_list,
				"SELECT w.message_id, w.res_id, w.until OPERATOR(pg_catalog.<=) pg_catalog.now(),"
				"  w.base_url, w.document, w.upload, w.template_no_header"
				" FROM whatsapp.odoo_pdf_wait w"
				" ORDER BY w.message_id FOR UPDATE", 0, NULL);
		wa_plan(&plan_state,
				"SELECT state, account_id FROM whatsapp.message"
				" WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE", 1, t1);
		wa_plan(&plan_done,
				"DELETE FROM whatsapp.odoo_pdf_wait WHERE message_id OPERATOR(pg_catalog.=) $1",
				1, t1);
		/* the header first, before the body and buttons */
		wa_plan(&plan_header,
				"UPDATE whatsapp.message"
				"   SET payload = pg_catalog.jsonb_set(payload, '{template,components}',"
				"         pg_catalog.jsonb_build_array($2) OPERATOR(pg_catalog.||)"
				"         COALESCE(payload OPERATOR(pg_catalog.#>) '{template,components}', '[]')),"
				"       next_attempt_at = pg_catalog.now()"
				" WHERE id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.=) 'queued'",
				2, t2);
		wa_plan(&plan_due,
				"UPDATE whatsapp.message SET next_attempt_at = pg_catalog.now()"
				" WHERE id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.=) 'queued'",
				1, t1);
		/* a message leaving without its header: the header-less template */
		wa_plan(&plan_name,
				"UPDATE whatsapp.message"
				"   SET payload = pg_catalog.jsonb_set(payload, '{template,name}', $2)"
				" WHERE id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.=) 'queued'",
				2, t2);
	}

	rc = SPI_execute_plan(plan_list, NULL, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "whatsapp: could not read the PDF waits: %s", SPI_result_code_string(rc));
	n = SPI_processed;
	tt = SPI_tuptable;
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = tt->vals[i];
		TupleDesc	desc = tt->tupdesc;
		bool		isnull;
		int64		message_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int64		res_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		bool		expired = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *base_url = SPI_getvalue(tup, desc, 4);
		char	   *doc = SPI_getvalue(tup, desc, 5);
		bool		by_upload = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		char	   *no_header = SPI_getvalue(tup, desc, 7);
		bool		header_added = false;
		char	   *state = NULL;
		int32		account_id = 0;
		Datum		arg = Int64GetDatum(message_id);
		WaOdooPdf	pdf;
		bool		done = true;

		rc = SPI_execute_plan(plan_state, &arg, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "whatsapp: could not lock the waiting message: %s",
				 SPI_result_code_string(rc));
		if (SPI_processed == 1)
		{
			state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			account_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 2, &isnull));
		}

		if (state != NULL && strcmp(state, "queued") == 0)
		{
			if (need_version)
			{
				version = wa_odoo_version();
				need_version = false;
			}
			if (by_upload && upload != NULL &&
				wa_odoo_invoice_pdf(res_id, version, doc, GetActiveSnapshot(), true, &pdf))
			{
				/* the file to Meta's media endpoint, its id in the header */
				char	   *why = NULL;
				char	   *data;
				size_t		len = 0;
				char	   *media_id = NULL;
				char	   *fname = wa_odoo_pdf_filename(pdf.name, doc, "account_move", res_id);

				if (pdf.db_datas != NULL)
				{
					data = VARDATA_ANY(pdf.db_datas);
					len = VARSIZE_ANY_EXHDR(pdf.db_datas);
				}
				else if (pdf.store_fname != NULL)
					data = filestore_read(pdf.store_fname, &len, &why);
				else
				{
					data = NULL;
					why = pstrdup("the attachment has neither db_datas nor store_fname");
				}
				if (data != NULL)
					media_id = upload(account_id, fname, "application/pdf", data, len, &why);
				if (media_id != NULL)
				{
					StringInfoData h;
					Datum		hv[2];

					initStringInfo(&h);
					header_media_json(&h, media_id, fname);
					hv[0] = arg;
					hv[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(h.data));
					rc = SPI_execute_plan(plan_header, hv, NULL, false, 0);
					if (rc != SPI_OK_UPDATE)
						elog(ERROR, "whatsapp: could not add the PDF header: %s",
							 SPI_result_code_string(rc));
					header_added = true;
				}
				else
				{
					/* tried again at the next turn, until the deadline */
					ereport(LOG,
							(errmsg("whatsapp: message %lld: could not upload the PDF of account.move %lld (ir_attachment %lld): %s",
									(long long) message_id, (long long) res_id,
									(long long) pdf.id, why ? why : "unknown")));
					done = expired;
				}
			}
			else if (!by_upload &&
					 wa_odoo_invoice_pdf(res_id, version, doc, GetActiveSnapshot(), false, &pdf))
			{
				char	   *token = pdf.token;
				StringInfoData h;
				Datum		hv[2];

				if (token == NULL)
				{
					char	   *why = wa_odoo_attachment_token_problem(pdf.relid);

					token = wa_uuid4();
					if (why != NULL || !wa_odoo_attachment_token_write(pdf.relid, pdf.id, token))
					{
						/* no link that works: at the deadline, without the header */
						ereport(LOG,
								(errmsg("whatsapp: message %lld: the PDF of account.move %lld has no access_token, and the whatsapp extension cannot create one: %s",
										(long long) message_id, (long long) res_id,
										why ? why : "the write changed no row")));
						done = expired;
						token = NULL;
					}
				}
				if (token != NULL)
				{
					initStringInfo(&h);
					wa_odoo_header_json(&h, wa_odoo_attachment_link(base_url, pdf.id, token),
										wa_odoo_pdf_filename(pdf.name, doc, "account_move", res_id));
					hv[0] = arg;
					hv[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(h.data));
					rc = SPI_execute_plan(plan_header, hv, NULL, false, 0);
					if (rc != SPI_OK_UPDATE)
						elog(ERROR, "whatsapp: could not add the PDF header: %s",
							 SPI_result_code_string(rc));
					header_added = true;
				}
			}
			else
				done = expired;
		}
		if (done && !header_added && no_header != NULL)
		{
			StringInfoData j;
			Datum		nv[2];

			initStringInfo(&j);
			escape_json(&j, no_header);
			nv[0] = arg;
			nv[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(j.data));
			rc = SPI_execute_plan(plan_name, nv, NULL, false, 0);
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "whatsapp: could not name the header-less template: %s",
					 SPI_result_code_string(rc));
		}
		if (done)
		{
			/* due now: with the header just added, or without it */
			rc = SPI_execute_plan(plan_due, &arg, NULL, false, 0);
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "whatsapp: could not make the message due: %s", SPI_result_code_string(rc));
			rc = SPI_execute_plan(plan_done, &arg, NULL, false, 0);
			if (rc != SPI_OK_DELETE)
				elog(ERROR, "whatsapp: could not end the PDF wait: %s", SPI_result_code_string(rc));
		}
		else
			remaining++;
	}
	return remaining;
}
