-- test/odoo/base.sql: Odoo tables that are the same in 16, 17, 18 and 19
-- for what the whatsapp extension reads.  Included by odoo16.sql ..
-- odoo19.sql; see README.md for the sources.
--
-- Odoo's ORM maps Char to varchar (jsonb when translated), Selection to
-- varchar without a CHECK, Many2one to int4 with a foreign key, Monetary
-- to numeric, Date to date, Datetime to timestamp (UTC), and gives every
-- table id serial, create_uid, create_date, write_uid and write_date.

CREATE TABLE public.res_currency (
	id				serial PRIMARY KEY,
	name			varchar(3) NOT NULL,		-- ISO 4217: 'EUR'
	symbol			varchar NOT NULL,			-- '€'
	rounding		numeric,
	decimal_places	integer,					-- stored compute from rounding
	position		varchar,					-- 'after' | 'before'
	active			boolean,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone,
	CONSTRAINT res_currency_unique_name UNIQUE (name),
	CONSTRAINT res_currency_rounding_gt_zero CHECK (rounding > 0)
);

CREATE TABLE public.res_country (
	id				serial PRIMARY KEY,
	name			jsonb NOT NULL,				-- translated: {"en_US": "Mexico"}
	code			varchar(2),					-- ISO 3166 alpha-2, upper case
	phone_code		integer,					-- calling code: 52
	currency_id		integer REFERENCES public.res_currency (id) ON DELETE SET NULL,
	address_format	text,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone,
	CONSTRAINT res_country_name_uniq UNIQUE (name),
	CONSTRAINT res_country_code_uniq UNIQUE (code)
);

CREATE TABLE public.res_lang (
	id				serial PRIMARY KEY,
	name			varchar NOT NULL,
	code			varchar NOT NULL,			-- 'es_MX', 'sr@latin', 'es_419'
	iso_code		varchar,
	url_code		varchar NOT NULL,
	active			boolean,
	direction		varchar NOT NULL,			-- 'ltr' | 'rtl'
	date_format		varchar NOT NULL,			-- strftime: '%d/%m/%Y'
	time_format		varchar NOT NULL,
	week_start		varchar NOT NULL,
	"grouping"		varchar NOT NULL,			-- '[3,0]'
	decimal_point	varchar NOT NULL,
	thousands_sep	varchar,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone,
	CONSTRAINT res_lang_name_uniq UNIQUE (name),
	CONSTRAINT res_lang_code_uniq UNIQUE (code),
	CONSTRAINT res_lang_url_code_uniq UNIQUE (url_code)
);

CREATE TABLE public.ir_config_parameter (
	id				serial PRIMARY KEY,
	key				varchar NOT NULL,			-- 'web.base.url', 'database.is_neutralized'
	value			text NOT NULL,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone,
	CONSTRAINT ir_config_parameter_key_uniq UNIQUE (key)
);

-- phone_validation's blacklist: numbers in E.164 with "+".
CREATE TABLE public.phone_blacklist (
	id				serial PRIMARY KEY,
	number			varchar NOT NULL,
	active			boolean,
	message_main_attachment_id integer,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone,
	CONSTRAINT phone_blacklist_unique_number UNIQUE (number)
);

-- Installed modules.  base's latest_version ('19.0.1.3') names the Odoo
-- version; Odoo and OpenUpgrade write it when the module is installed or
-- upgraded, so a database migrated to 19 says 19 while its res_partner
-- still has 18's mobile.
CREATE TABLE public.ir_module_module (
	id				serial PRIMARY KEY,
	name			varchar NOT NULL,
	state			varchar,					-- installed | uninstalled | to upgrade | ...
	latest_version	varchar,					-- '17.0.1.3'
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone,
	CONSTRAINT ir_module_module_name_uniq UNIQUE (name)
);

-- Attachments (odoo/addons/base/models/ir_attachment.py, the same columns
-- in 16 to 19).  A file lives either in the database (db_datas) or in the
-- filestore, <data_dir>/filestore/<database>/<store_fname>, where
-- store_fname is '<first 2 hex digits of the sha1>/<sha1>'.  A binary
-- field stored as an attachment (attachment=True) is a row whose
-- res_field names the field: from 17 on the invoice's official PDF is
-- res_field 'invoice_pdf_report_file' (account_move.invoice_pdf_report_id
-- is a computed many2one that finds that row, it has no column), and the
-- UBL/CII XML beside it 'ubl_cii_xml_file'.  In 16 the stored report is a
-- plain attachment (res_field NULL) named by the report's attachment
-- expression: (object.name or 'INV').replace('/','_') + '.pdf'.
-- access_token is what /web/content/<id>?access_token=... checks; Odoo
-- fills it on demand (generate_access_token: a uuid4).
CREATE TABLE public.ir_attachment (
	id				serial PRIMARY KEY,
	res_id			integer,
	company_id		integer,
	file_size		integer,
	original_id		integer REFERENCES public.ir_attachment (id) ON DELETE CASCADE,
	create_uid		integer,
	write_uid		integer,
	name			varchar NOT NULL,
	res_model		varchar,
	res_field		varchar,
	type			varchar NOT NULL,			-- binary | url
	url				varchar(1024),
	access_token	varchar,
	store_fname		varchar,
	checksum		varchar(40),
	mimetype		varchar,
	description		text,
	index_content	text,
	public			boolean,
	create_date		timestamp without time zone,
	write_date		timestamp without time zone,
	db_datas		bytea
);
CREATE INDEX ir_attachment_res_idx ON public.ir_attachment (res_model, res_id);
CREATE INDEX ir_attachment__store_fname_index ON public.ir_attachment (store_fname);
