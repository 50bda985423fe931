/*-------------------------------------------------------------------------
 *
 * odoo.h
 *	  What the files behind the Odoo triggers share; private to them.
 *
 * odoo_rules.c     the one mechanism: the rules on any model and the four events
 *                  as its presets; rendering, the triggers, wa_odoo_rule_preview
 * odoo.c           the events' configuration, accounts, templates, the pause,
 *                  recording the message, wa_odoo_preview
 * odoo_data.c      reading Odoo's data: the catalog, the rows of one rendering,
 *                  Odoo's version, ir_config_parameter values
 * odoo_format.c    amounts, dates, languages and clean text as Odoo prints them
 * odoo_render.c    the message: parameters, vocabulary, components, portal links,
 *                  the recipient and the language
 * odoo_read.c      the low-level readers beneath odoo_data.c (whatsapp.h)
 *
 *-------------------------------------------------------------------------
 */
#ifndef WHATSAPP_ODOO_H
#define WHATSAPP_ODOO_H

#include "whatsapp.h"

#include "access/htup.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

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

/*
 * The four events are presets of the rules on any model (odoo_rules.c):
 * this is what a preset fixes beyond a rule's fields.
 */
typedef struct OdooEvent
{
	const char *name;
	OdooModel	model;
	const char *move_type;		/* account_move.move_type it needs */
	bool		needs_sent;		/* mailed to the customer (odoo_sent.c) */
	const char *const *states;	/* the values of state that fire it */
} OdooEvent;

/*
 * One rule of the one mechanism: a rule of wa_odoo_rule (a row of
 * whatsapp.odoo_model_rule), or one of the four events (preset set), whose
 * template, language, account and params come from the company's row of
 * whatsapp.odoo_rule (wa_odoo_enable) at rendering.
 */
typedef struct OdooRuleDef
{
	char	   *name;			/* the rule or the event: the dedupe key's end */
	char	   *model;			/* its table in public */
	const OdooEvent *preset;	/* one of the four events; NULL: wa_odoo_rule's */
	int			catalog;		/* OdooModel whose columns it may use; -1: none */
	char	   *template;
	char	   *language;
	char	   *account;
	char	   *partner_field;	/* NULL: the catalog's partner_id */
	char	   *state_field;
	char	   *state_value;	/* NULL: the condition (or the preset's states) */
	char	   *condition;
	Jsonb	   *params;
	bool		company_null;
	int32		company_id;
	OdooEvent	own;			/* a rule's name and model, as OdooRender's ev */
} OdooRuleDef;

/* odoo_rules.c: the preset of an event name, or NULL */
extern const OdooEvent *odoo_preset(const char *name);

/* Per model: the table, the name Odoo gives it, the portal path. */
extern const char *const odoo_model_table[N_MODELS];
extern const char *const odoo_model_name[N_MODELS];
extern const char *const odoo_model_portal[N_MODELS];

/* ----------
 * What we read from Odoo's catalog (odoo_data.c)
 * ----------
 */
/* The tables: the model's own (T_DOC) and the others every rendering reads. */
enum
{
	T_DOC, T_PARTNER, T_COMPANY, T_COUNTRY, T_CURRENCY, T_LANG, T_CONFIG,
	T_BLACKLIST, T_MODULE,
	T_COUNT
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
	DC_ID, DC_NAME, DC_STATE, DC_MOVE_TYPE, DC_PARTNER, DC_COMPANY,
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

extern const char *const odoo_table_names[T_COUNT];
extern const ColDef odoo_coldefs[NCOLS];

/* Is the column there, of a type we read? */
static inline bool
col_ok(const OdooCatalog *c, int col)
{
	return c->attnum[col] != 0;
}

extern OdooModelState *odoo_prepare_model(OdooModel m);
/* "table.column" of a column, for messages */
extern const char *odoo_qcol(OdooModel m, int col);
/* Why a column is unusable: missing, or of a type we cannot read. */
extern char *odoo_col_problem(const OdooCatalog *c, OdooModel m, int col);
/* What the catalog says about Odoo's version, for the preview. */
extern const char *odoo_schema_guess(OdooModel m);

/* ----------
 * Reading the rows of one rendering (odoo_data.c)
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

extern HeapTuple odoo_row_load(OdooRow *r, int alias);
extern void odoo_row_close(OdooRow *r);
extern char *odoo_row_text(OdooRow *r, int alias, int col);
extern bool odoo_row_null(OdooRow *r, int alias, int col);
extern int64 odoo_row_int(OdooRow *r, int alias, int col, bool *isnull);
extern Numeric odoo_row_num(OdooRow *r, int alias, int col);
extern bool odoo_row_ts(OdooRow *r, int alias, int col, Timestamp *ts);
extern int	odoo_version(OdooRow *r);
extern char *odoo_config_value(OdooRow *r, const char *key);

/* ----------
 * Formatting (odoo_format.c)
 * ----------
 */
extern char *odoo_nonempty(const char *s);
extern char *odoo_format_amount(Numeric amount, int decimals, Numeric rounding,
								const char *decimal_point, const char *thousands_sep,
								const char *grouping, const char *symbol,
								const char *position);
extern int	odoo_currency_decimals(const char *decimal_places, Numeric rounding);
extern char *odoo_format_date(Timestamp ts, const char *fmt);
extern bool odoo_language_ok(const char *s);
extern char *odoo_language_normalize(const char *s);
extern char *odoo_language_base(const char *s);

/* ----------
 * Rendering (odoo_render.c; render() itself is in odoo.c)
 * ----------
 */
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
	/* invoice_sent: the mail_message that fired it (0: the preview) */
	int64		sent_msg_id;
	/* where base_url_used comes from: "rule", "website N", "web.base.url" */
	char	   *base_url_source;
	/* an invoice's official PDF (odoo_pdf.c) */
	char	   *pdf_source;		/* where the header comes from, for the preview */
	int64		att_id;			/* its attachment, 0: none */
	char	   *att_token_new;	/* an access_token created for it */
	Oid			att_relid;
	bool		pdf_waits;		/* none yet (or to upload): the message waits */
	bool		pdf_upload;		/* the worker uploads it to Meta */
	TimestampTz pdf_until;
	char	   *pdf_base_url;
	/* a rule on any model (odoo_rules.c): its model's name; NULL: ev's */
	const char *model_label;
} OdooRender;

/* What the parameter functions share. */
typedef struct OdooCtx
{
	OdooModel	m;
	const OdooCatalog *cat;
	OdooRow	   *row;
	OdooRender *r;
	char	   *base_url;		/* the rule's base_url, else web.base.url, without its last "/" */
	bool		for_preview;
	int64		pdf_wait_us;	/* the rule's pdf_wait */
	bool		pdf_upload;		/* the rule's pdf_upload */
} OdooCtx;

extern void odoo_fail(OdooRender *r, const char *failure_type, const char *fmt,...)
			pg_attribute_printf(3, 4);
extern void odoo_append_components(OdooCtx *x, Jsonb *params, StringInfo out);
extern char *odoo_word_value(OdooCtx *x, const char *word);
extern char *odoo_money(OdooCtx *x, Numeric amount, const char *vocab, const char *what);
extern bool odoo_append_header(OdooCtx *x, const char *header, StringInfo out);
extern void odoo_rule_options(OdooCtx *x, Jsonb *params);
extern void odoo_choose_recipient(OdooCtx *x);
extern void odoo_choose_language(OdooCtx *x, const char *rule_lang, List *avail);

/*
 * odoo.c, shared with the rules on any model (odoo_rules.c): the pause,
 * the rule's account and its template's languages, recording the message.
 */
extern bool odoo_paused(void);
extern int32 odoo_find_account(const char *name, Snapshot snap, bool *live);
extern List *odoo_template_languages(const char *template, const char *account, Snapshot snap);
extern void odoo_record(OdooRender *r);
extern void odoo_check_recipient(OdooRender *r);
extern bool odoo_event_config(const OdooEvent *ev, bool company_null, int64 company_id,
							  Snapshot snap, OdooRuleDef *rule);

/* odoo_rules.c: the one rendering of the rules and the presets */
extern void odoo_preset_rule(const OdooEvent *ev, OdooRuleDef *rd);
extern bool odoo_render_rule(OdooRuleDef *rd, Relation rel, int64 res_id, bool for_preview,
							 OdooRender *r, int64 sent_msg_id);
/* ", \"key\": value" (JSON null for NULL), for the previews */
extern void odoo_json_kv_str(StringInfo b, const char *key, const char *val);

/* odoo.c: the extension's own tables were renamed or dropped */
extern void odoo_own_tables_changed(void);

#endif							/* WHATSAPP_ODOO_H */
