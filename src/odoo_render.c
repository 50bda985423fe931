/*-------------------------------------------------------------------------
 *
 * odoo_render.c
 *	  The message of an Odoo event, from the rows odoo_data.c reads: the
 *	  template's parameters (the vocabulary of wa_odoo_enable: partner and
 *	  document names, amounts, dates, references, portal links), its
 *	  components (body and the portal_pdf document header), the recipient
 *	  (the first partner number that makes E.164) and the language.  A
 *	  portal link to a document without an access_token creates one, the
 *	  way Odoo's portal.mixin does; odoo.c writes it at commit.
 *
 * Nothing here raises because of data or configuration: every problem
 * becomes odoo_fail(), a message in state "failed" whose error_title says
 * why.  render() in odoo.c drives all of it.
 *
 *-------------------------------------------------------------------------
 */
#include "odoo.h"
#include "odoo_links.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

/* ----------
 * Failing a rendering: the first problem is the one the message records
 * ----------
 */
void
odoo_fail(OdooRender *r, const char *failure_type, const char *fmt,...)
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

/* Is the partner its own commercial partner (or has none)? */
static bool
own_commercial(OdooRow *row)
{
	bool		n1,
				n2;
	int64		pid = odoo_row_int(row, A_P, PC_ID, &n1);
	int64		cpid = odoo_row_int(row, A_P, PC_COMMERCIAL, &n2);

	return n1 || n2 || pid == cpid;
}

/* ----------
 * Parameters: the vocabulary of wa_odoo_enable and the portal links
 * ----------
 */
/*
 * An amount in the document's currency (its currency_id), as Odoo prints
 * it in the partner's language; NULL after odoo_fail().  The words
 * amount_total and amount_residual, and the "amount" parameter kind of a
 * rule on any model (odoo_rules.c), whose document is then its record.
 */
char *
odoo_money(OdooCtx *x, Numeric amount, const char *vocab, const char *what)
{
	OdooRow    *row = x->row;
	const char *model = x->r->model_label ? x->r->model_label : odoo_model_name[x->m];
	Numeric		rounding;
	char	   *s;

	if (odoo_row_null(row, A_CUR, YC_ID))
	{
		odoo_fail(x->r, "template", "parameter %s: %s %ld has no currency (%s)", vocab,
				  model, (long) x->r->res_id,
				  col_ok(x->cat, DC_CURRENCY) ? "currency_id is empty or names no res_currency row"
				  : x->r->model_label ? psprintf("table %s has no currency_id column", x->r->model_label)
				  : odoo_col_problem(x->cat, x->m, DC_CURRENCY));
		return NULL;
	}
	rounding = odoo_row_num(row, A_CUR, YC_ROUNDING);
	s = odoo_format_amount(amount,
						   odoo_currency_decimals(odoo_row_text(row, A_CUR, YC_DECIMALS), rounding),
						   rounding,
						   odoo_row_text(row, A_L, LC_DECIMAL_POINT),
						   odoo_row_text(row, A_L, LC_THOUSANDS_SEP),
						   odoo_row_text(row, A_L, LC_GROUPING),
						   odoo_row_text(row, A_CUR, YC_SYMBOL),
						   odoo_row_text(row, A_CUR, YC_POSITION));
	if (s == NULL)
		odoo_fail(x->r, "template", "parameter %s: %s is not a finite number", vocab, what);
	return s;
}

static char *
amount_param(OdooCtx *x, int col, const char *vocab)
{
	Numeric		amount;

	if (!col_ok(x->cat, col))
	{
		odoo_fail(x->r, "template", "parameter %s: %s", vocab, odoo_col_problem(x->cat, x->m, col));
		return NULL;
	}
	amount = odoo_row_num(x->row, A_D, col);
	if (amount == NULL)
	{
		odoo_fail(x->r, "template", "parameter %s: %s of %s %ld is empty", vocab,
				  odoo_qcol(x->m, col), odoo_model_name[x->m], (long) x->r->res_id);
		return NULL;
	}
	return odoo_money(x, amount, vocab, odoo_qcol(x->m, col));
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
		return psprintf("column %s is of type %s", odoo_qcol(x->m, DC_TOKEN), format_type_be(type));
	{
		Oid			t;
		Oid			coll;

		get_atttypetypmodcoll(relid, c->attnum[DC_TOKEN], &t, &typmod, &coll);
	}
	if (type == VARCHAROID && typmod >= 0 && typmod - VARHDRSZ < 36)
		return psprintf("column %s is too short for a token", odoo_qcol(x->m, DC_TOKEN));
	if (!col_ok(c, DC_ID))
		return odoo_col_problem(c, x->m, DC_ID);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return pstrdup("the table is gone");
	form = (Form_pg_class) GETSTRUCT(tup);
	owner = form->relowner;
	forced = form->relrowsecurity && form->relforcerowsecurity;
	ReleaseSysCache(tup);
	if (forced)
		return psprintf("public.%s forces row level security", odoo_model_table[x->m]);
	/* table privileges, else column ones (an owner has them unless revoked) */
	if ((pg_class_aclcheck(relid, owner, ACL_UPDATE) != ACLCHECK_OK &&
		 pg_attribute_aclcheck(relid, c->attnum[DC_TOKEN], owner, ACL_UPDATE) != ACLCHECK_OK) ||
		(pg_class_aclcheck(relid, owner, ACL_SELECT) != ACLCHECK_OK &&
		 (pg_attribute_aclcheck(relid, c->attnum[DC_TOKEN], owner, ACL_SELECT) != ACLCHECK_OK ||
		  pg_attribute_aclcheck(relid, c->attnum[DC_ID], owner, ACL_SELECT) != ACLCHECK_OK)))
		return psprintf("its owner %s may not update %s", GetUserNameFromId(owner, false),
						odoo_qcol(x->m, DC_TOKEN));
	return NULL;
}

/*
 * The base URL of the links (the rule's base_url, else the website's domain, else
 * web.base.url)
 * without its last "/", in x->base_url; false (failing) when there is none.
 */
static bool
link_base(OdooCtx *x, const char *what)
{
	if (x->base_url != NULL && x->r->base_url_source == NULL)
		x->r->base_url_source = pstrdup("rule");
	if (x->base_url == NULL)
	{
		/* the document's website, else its company's, as get_base_url */
		int64		website = 0;

		x->base_url = wa_odoo_website_base_url(odoo_model_table[x->m], x->r->res_id,
											   x->r->company_null, x->r->company_id,
											   x->row->snap, &website);
		if (x->base_url != NULL)
			x->r->base_url_source = psprintf("website %ld", (long) website);
	}
	if (x->base_url == NULL)
	{
		x->base_url = odoo_nonempty(odoo_config_value(x->row, "web.base.url"));
		x->r->base_url_source = pstrdup("web.base.url");
	}
	if (x->base_url != NULL)
	{
		size_t		len = strlen(x->base_url);

		while (len > 0 && x->base_url[len - 1] == '/')
			x->base_url[--len] = '\0';
		if (len == 0)
			x->base_url = NULL;
	}
	if (x->base_url == NULL)
	{
		odoo_fail(x->r, "template", "%s: %s", what,
				  OidIsValid(x->cat->relid[T_CONFIG]) ?
				  "ir_config_parameter has no web.base.url" :
				  "table public.ir_config_parameter is missing, so there is no web.base.url");
		return false;
	}
	x->r->base_url_used = x->base_url;
	return true;
}

/* portal link of the document, or NULL (failing) */
static char *
portal_link(OdooCtx *x, const char *what, bool pdf)
{
	char	   *token;
	StringInfoData b;

	if (!col_ok(x->cat, DC_TOKEN))
	{
		odoo_fail(x->r, "template", "%s: %s", what, odoo_col_problem(x->cat, x->m, DC_TOKEN));
		return NULL;
	}
	token = odoo_nonempty(odoo_row_text(x->row, A_D, DC_TOKEN));
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
			odoo_fail(x->r, "template",
					  "%s: %s %ld has no access_token yet, and the whatsapp extension cannot create one: %s",
					  what, odoo_model_name[x->m], (long) x->r->res_id, why);
			return NULL;
		}
		x->r->token_new = x->for_preview ? pstrdup("NEW-ACCESS-TOKEN-CREATED-AT-COMMIT") : new_uuid4();
		x->r->doc_relid = x->cat->relid[T_DOC];
	}
	if (token == NULL)
		token = x->r->token_new;
	if (!link_base(x, what))
		return NULL;
	initStringInfo(&b);
	appendStringInfo(&b, "%s%s%ld?access_token=", x->base_url, odoo_model_portal[x->m],
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

/*
 * The header of an invoice or credit note (odoo_pdf.c): its official PDF
 * by /web/content when it is stored; in Odoo 16, else the portal's report,
 * which renders and stores that same PDF; from 17 on (or an unknown
 * version), else none: the portal would give a pro-forma or a ZIP.  Then
 * the message goes without the header, at once or, with the rule's
 * pdf_wait, when the PDF appears or the wait ends (the worker).  Returns
 * the link, or NULL: no header (or failing); *filename gets its name.
 */
static char *
invoice_pdf_link(OdooCtx *x, char **filename)
{
	const char *what = "header portal_pdf";
	OdooRender *r = x->r;
	int			version = odoo_version(x->row);
	char	   *doc = odoo_nonempty(odoo_row_text(x->row, A_D, DC_NAME));
	WaOdooPdf	pdf;
	char	   *token;
	bool		found = wa_odoo_invoice_pdf(r->res_id, version, doc, x->row->snap, false, &pdf);

	if (x->pdf_upload && (found || version != 16))
	{
		/*
		 * The worker uploads the file to Meta and puts the media id in the
		 * header, at its next turn or when the PDF appears, until the wait
		 * ends (at once when the rule does not wait).
		 */
		if (!link_base(x, what))
			return NULL;
		r->pdf_waits = true;
		r->pdf_upload = true;
		r->pdf_until = GetCurrentTimestamp() + x->pdf_wait_us;
		r->pdf_base_url = x->base_url;
		r->pdf_source = found ?
			psprintf("ir_attachment %lld, uploaded to Meta by the worker", (long long) pdf.id) :
			psprintf("none yet: the message waits for the official PDF until %s, to upload it to Meta, then goes without the header",
					 timestamptz_to_str(r->pdf_until));
		return NULL;
	}
	if (!found)
	{
		if (version == 16)
		{
			r->pdf_source = pstrdup("portal report: Odoo 16 renders the official PDF and stores it");
			return portal_link(x, what, true);
		}
		if (x->pdf_wait_us > 0)
		{
			if (!link_base(x, what))
				return NULL;
			r->pdf_waits = true;
			r->pdf_until = GetCurrentTimestamp() + x->pdf_wait_us;
			r->pdf_base_url = x->base_url;
			r->pdf_source = psprintf("none yet: the message waits for the official PDF until %s, then goes without the header",
									 timestamptz_to_str(r->pdf_until));
		}
		else
			r->pdf_source = pstrdup("none yet: the message goes without the header (the rule has no pdf_wait)");
		return NULL;
	}
	r->att_id = pdf.id;
	r->att_relid = pdf.relid;
	token = pdf.token;
	if (token == NULL)
	{
		char	   *why = wa_odoo_attachment_token_problem(pdf.relid);

		if (why != NULL)
		{
			odoo_fail(r, "template",
					  "%s: the official PDF of %s %ld (ir_attachment %lld) has no access_token yet, and the whatsapp extension cannot create one: %s",
					  what, odoo_model_name[x->m], (long) r->res_id, (long long) pdf.id, why);
			return NULL;
		}
		r->att_token_new = x->for_preview ? pstrdup("NEW-ACCESS-TOKEN-CREATED-AT-COMMIT") : wa_uuid4();
		token = r->att_token_new;
	}
	if (!link_base(x, what))
		return NULL;
	r->pdf_source = psprintf("ir_attachment %lld%s", (long long) pdf.id,
							 version == 16 ? " (the stored invoice report)" :
							 " (invoice_pdf_report_file)");
	*filename = wa_odoo_pdf_filename(pdf.name, doc, odoo_model_table[x->m], r->res_id);
	r->link_pdf = wa_odoo_attachment_link(x->base_url, pdf.id, token);
	return r->link_pdf;
}

static char *
partner_name_of(OdooCtx *x, int alias, const char *vocab)
{
	OdooRow    *row = x->row;
	bool		isnull;
	int64		pid = odoo_row_int(row, alias, PC_ID, &isnull);
	char	   *name;

	if (!col_ok(x->cat, PC_NAME))
	{
		odoo_fail(x->r, "template", "parameter %s: %s", vocab, odoo_col_problem(x->cat, x->m, PC_NAME));
		return NULL;
	}
	if (isnull)
	{
		odoo_fail(x->r, "template", "parameter %s: %s %ld has no partner", vocab,
				  odoo_model_name[x->m], (long) x->r->res_id);
		return NULL;
	}
	name = odoo_nonempty(odoo_row_text(row, alias, PC_NAME));
	if (name == NULL)
		odoo_fail(x->r, "template", "parameter %s: partner res.partner %ld has no name", vocab,
				  (long) pid);
	return name;
}

/*
 * The value of one vocabulary word, or NULL after odoo_fail().  The words
 * of wa_odoo_enable, and a rule's {"word": ...} parameters (odoo_rules.c).
 */
char *
odoo_word_value(OdooCtx *x, const char *v)
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
			odoo_fail(r, "template", "parameter %s: %s", v, odoo_col_problem(x->cat, x->m, PC_COMMERCIAL));
			return NULL;
		}
		/* a partner without a commercial partner is its own */
		return partner_name_of(x, own_commercial(row) ? A_P : A_CP, v);
	}
	if (strcmp(v, "document_name") == 0)
	{
		if (!col_ok(x->cat, DC_NAME))
		{
			odoo_fail(r, "template", "parameter %s: %s", v, odoo_col_problem(x->cat, x->m, DC_NAME));
			return NULL;
		}
		s = odoo_nonempty(odoo_row_text(row, A_D, DC_NAME));
		if (s == NULL || strcmp(s, "/") == 0)
		{
			odoo_fail(r, "template", "parameter %s: %s %ld has no name yet", v,
					  odoo_model_name[x->m], (long) r->res_id);
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
			odoo_fail(r, "template", "parameter %s: %s", v, odoo_col_problem(x->cat, x->m, DC_DUE));
			return NULL;
		}
		s = odoo_row_ts(row, A_D, DC_DUE, &ts) ?
			odoo_format_date(ts, odoo_row_text(row, A_L, LC_DATE_FORMAT)) : NULL;
		if (s == NULL)
			odoo_fail(r, "template", "parameter %s: %s %ld has no due date", v,
					  odoo_model_name[x->m], (long) r->res_id);
		return s;
	}
	if (strcmp(v, "client_order_ref") == 0)
	{
		if (!col_ok(x->cat, DC_REF))
		{
			odoo_fail(r, "template", "parameter %s: %s", v, odoo_col_problem(x->cat, x->m, DC_REF));
			return NULL;
		}
		s = odoo_nonempty(odoo_row_text(row, A_D, DC_REF));
		if (s == NULL)
			odoo_fail(r, "template", "parameter %s: %s %ld has no customer reference (%s is empty)",
					  v, odoo_model_name[x->m], (long) r->res_id, odoo_qcol(x->m, DC_REF));
		return s;
	}
	if (strcmp(v, "company_name") == 0)
	{
		if (!col_ok(x->cat, CC_NAME))
		{
			odoo_fail(r, "template", "parameter %s: %s", v, odoo_col_problem(x->cat, x->m, CC_NAME));
			return NULL;
		}
		s = odoo_nonempty(odoo_row_text(row, A_CO, CC_NAME));
		if (s == NULL)
			odoo_fail(r, "template", "parameter %s: %s %ld has no company, or its company has no name",
					  v, odoo_model_name[x->m], (long) r->res_id);
		return s;
	}
	if (strcmp(v, "portal_url") == 0)
		return portal_link(x, "parameter portal_url", false);

	odoo_fail(r, "template", "parameter \"%s\" is not one of the words wa_odoo_enable accepts", v);
	return NULL;
}

static void
append_param(OdooCtx *x, StringInfo body, bool *first, const char *name, const char *vocab)
{
	char	   *value = odoo_word_value(x, vocab);

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
 * A rule's options in its params object (the events' and, on sale_order
 * and account_move, a rule's): base_url, pdf_wait and pdf_upload.
 */
void
odoo_rule_options(OdooCtx *x, Jsonb *params)
{
	JsonbValue *bu;
	JsonbValue *pw;
	JsonbValue *pu;

	x->base_url = NULL;			/* read when a portal link needs it */
	x->pdf_wait_us = 0;
	x->pdf_upload = false;
	if (params == NULL || !JB_ROOT_IS_OBJECT(params))
		return;
	bu = getKeyJsonValueFromContainer(&params->root, "base_url", 8, NULL);
	pw = getKeyJsonValueFromContainer(&params->root, "pdf_wait", 8, NULL);
	pu = getKeyJsonValueFromContainer(&params->root, "pdf_upload", 10, NULL);
	if (bu != NULL && bu->type == jbvString)
	{
		x->base_url = pnstrdup(bu->val.string.val, bu->val.string.len);
		x->r->base_url_from_rule = true;
	}
	x->pdf_upload = pu != NULL && pu->type == jbvBool && pu->val.boolean;
	if (pw != NULL && pw->type == jbvString)
	{
		/* checked by wa_odoo_enable and wa_odoo_rule: from 0 to 7 days */
		Interval   *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
															  CStringGetDatum(pnstrdup(pw->val.string.val, pw->val.string.len)),
															  ObjectIdGetDatum(InvalidOid),
															  Int32GetDatum(-1)));

		x->pdf_wait_us = iv->time + (int64) iv->day * USECS_PER_DAY +
			(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
	}
}

/*
 * The document header "portal_pdf": an invoice's official PDF, an order's
 * portal report.  Appends the header component and returns true, or
 * fails the rendering.  The events' header, and a rule's on sale_order or
 * account_move (odoo_rules.c).
 */
bool
odoo_append_header(OdooCtx *x, const char *header, StringInfo out)
{
	char	   *link = NULL;
	char	   *fname = NULL;

	if (strcmp(header, "portal_pdf") != 0)
		odoo_fail(x->r, "template", "header \"%s\" is not one wa_odoo_enable accepts", header);
	else if (x->m == M_ACCOUNT_MOVE)
		link = invoice_pdf_link(x, &fname);
	else
	{
		link = portal_link(x, "header portal_pdf", true);
		x->r->pdf_source = pstrdup("portal report: the order's quotation/order report, rendered by Odoo (orders have no stored report)");
	}
	if (link == NULL)
		return false;
	if (fname == NULL)
		fname = wa_odoo_pdf_filename(NULL, odoo_nonempty(odoo_row_text(x->row, A_D, DC_NAME)),
									 odoo_model_table[x->m], x->r->res_id);
	wa_odoo_header_json(out, link, fname);
	return true;
}

/*
 * The template object's components for the rule's params (NULL: the
 * partner's name, the document's name and the total, positional).
 */
void
odoo_append_components(OdooCtx *x, Jsonb *params, StringInfo out)
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
				odoo_fail(x->r, "template", "the rule's params are not understood");
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
			/* options of the rule, read elsewhere: no template parameters */
			if (strcmp(key, "base_url") == 0 || strcmp(key, "pdf_wait") == 0 ||
				strcmp(key, "pdf_upload") == 0)
				continue;
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
						odoo_fail(x->r, "template", "the rule's params are not understood");
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
				odoo_fail(x->r, "template", "the rule's params are not understood");
				return;
			}
			append_param(x, &body, &first, key,
						 pnstrdup(val.val.string.val, val.val.string.len));
			any = true;
		}
	}
	else
	{
		odoo_fail(x->r, "template", "the rule's params are not understood");
		return;
	}

	if (header == NULL && !any)
		return;
	appendStringInfoString(out, ", \"components\": [");
	if (header != NULL && odoo_append_header(x, header, out) && any)
		appendStringInfoString(out, ", ");
	if (any)
	{
		appendStringInfoString(out, "{\"type\": \"body\", \"parameters\": [");
		appendStringInfoString(out, body.data);
		appendStringInfoString(out, "]}");
	}
	appendStringInfoChar(out, ']');
}

/* ----------
 * The recipient and the language
 * ----------
 */

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

	code = odoo_nonempty(odoo_row_text(row, country_alias, NC_PHONE_CODE));
	if (code == NULL || strspn(code, "0123456789") != strlen(code) || strlen(code) > 3 ||
		code[0] == '0')
		code = odoo_nonempty(odoo_row_text(row, A_COC, NC_PHONE_CODE));
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
		v = odoo_row_text(row, alias, cols[i]);
		if (v == NULL)
			continue;
		for (part = strtok_r(v, "|", &save); part; part = strtok_r(NULL, "|", &save))
		{
			char	   *p = odoo_nonempty(part);

			if (p == NULL)
				continue;
			if (*first_raw == NULL)
				*first_raw = p;
			if (wa_normalize_phone(p, cc, e164))
				return true;
			appendStringInfo(tried, "%s%s '%s'", tried->len ? ", " : "",
							 odoo_coldefs[cols[i]].name[x->m], p);
		}
	}
	return false;
}

void
odoo_choose_recipient(OdooCtx *x)
{
	OdooRow    *row = x->row;
	OdooRender *r = x->r;
	char		e164[WA_E164_MAXLEN + 1];
	StringInfoData tried;
	char	   *raw = NULL;
	bool		isnull;
	int64		pid = odoo_row_int(row, A_P, PC_ID, &isnull);
	int64		cpid;
	bool		cp_null;

	if (!col_ok(x->cat, PC_PHONE) && !col_ok(x->cat, PC_MOBILE) && !col_ok(x->cat, PC_SANITIZED))
	{
		odoo_fail(r, "phone_invalid",
				  "res_partner has none of the columns phone_sanitized, mobile and phone");
		return;
	}
	if (isnull)
	{
		odoo_fail(r, "phone_invalid", "%s %ld has no partner", odoo_model_name[x->m], (long) r->res_id);
		return;
	}
	initStringInfo(&tried);
	if (partner_number(x, A_P, A_PC, e164, &tried, &raw))
	{
		r->recipient = pstrdup(e164);
		return;
	}
	cpid = odoo_row_int(row, A_P, PC_COMMERCIAL, &cp_null);
	if (!own_commercial(row) && !odoo_row_null(row, A_CP, PC_ID))
	{
		StringInfoData tried_cp;

		initStringInfo(&tried_cp);
		if (partner_number(x, A_CP, A_CPC, e164, &tried_cp, &raw))
		{
			r->recipient = pstrdup(e164);
			return;
		}
		r->recipient = raw;
		odoo_fail(r, "phone_invalid",
				  "neither partner res.partner %ld (%s) nor its commercial partner res.partner %ld (%s) has a phone number that can be made E.164",
				  (long) pid, tried.len ? tried.data : "no number",
				  (long) cpid, tried_cp.len ? tried_cp.data : "no number");
	}
	else if (tried.len == 0)
		odoo_fail(r, "phone_invalid", "partner res.partner %ld has no phone number", (long) pid);
	else
	{
		r->recipient = raw;
		odoo_fail(r, "phone_invalid",
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
void
odoo_choose_language(OdooCtx *x, const char *rule_lang, List *avail)
{
	OdooRender *r = x->r;
	char	   *cands[3];
	int			n = 0;
	char	   *partner = NULL;
	char	   *pl;

	pl = odoo_nonempty(odoo_row_text(x->row, A_P, PC_LANG));
	if (pl == NULL)
		pl = odoo_nonempty(odoo_row_text(x->row, A_CP, PC_LANG));
	if (pl != NULL)
	{
		char	   *norm = odoo_language_normalize(pl);
		char	   *base = odoo_language_base(norm);

		if (odoo_language_ok(norm))
			partner = cands[n++] = norm;
		if (base && odoo_language_ok(base))
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
		odoo_fail(r, "template",
				  "no language: the partner has no usable lang%s%s, and the rule names none",
				  pl ? " (" : "", pl ? psprintf("%s)", pl) : "");
	}
}
