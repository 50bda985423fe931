-- test/odoo/odoo16.sql: the Odoo 16.0 tables the whatsapp extension reads,
-- with their real column names, types and constraints (a subset of the
-- columns; see README.md).  Odoo 16 locks a confirmed order by moving it
-- from state 'sale' to 'done'; sale_order has no column locked.
-- res_partner has phone, mobile and phone_sanitized (phone_validation,
-- installed with sms).
\ir base.sql

CREATE TABLE public.res_partner (
	id						serial PRIMARY KEY,
	company_id				integer,
	create_date				timestamp without time zone,
	name					varchar,
	complete_name			varchar,
	display_name			varchar,				-- stored up to 16
	title					integer,
	parent_id				integer REFERENCES public.res_partner (id) ON DELETE SET NULL,
	user_id					integer,
	state_id				integer,
	country_id				integer REFERENCES public.res_country (id) ON DELETE RESTRICT,
	commercial_partner_id	integer REFERENCES public.res_partner (id) ON DELETE SET NULL,
	create_uid				integer,
	write_uid				integer,
	ref						varchar,
	lang					varchar,				-- res_lang.code
	tz						varchar,
	vat						varchar,
	website					varchar,
	function				varchar,
	type					varchar,				-- contact | invoice | delivery | other
	street					varchar,
	zip						varchar,
	city					varchar,
	email					varchar,
	phone					varchar,
	mobile					varchar,
	commercial_company_name	varchar,
	company_name			varchar,
	comment					text,
	active					boolean,
	is_company				boolean,
	partner_share			boolean,
	write_date				timestamp without time zone,
	email_normalized		varchar,
	phone_sanitized			varchar,				-- E.164 with "+", from mobile then phone
	CONSTRAINT res_partner_check_name
		CHECK (((type)::text = 'contact' AND name IS NOT NULL) OR (type)::text <> 'contact')
);
CREATE INDEX res_partner__commercial_partner_id_index ON public.res_partner (commercial_partner_id);
CREATE INDEX res_partner__phone_sanitized_index ON public.res_partner (phone_sanitized);

CREATE TABLE public.res_company (
	id						serial PRIMARY KEY,
	name					varchar NOT NULL,
	partner_id				integer NOT NULL REFERENCES public.res_partner (id) ON DELETE RESTRICT,
	currency_id				integer NOT NULL REFERENCES public.res_currency (id) ON DELETE RESTRICT,
	sequence				integer,
	parent_id				integer REFERENCES public.res_company (id) ON DELETE RESTRICT,
	email					varchar,
	phone					varchar,
	active					boolean,
	create_uid				integer,
	create_date				timestamp without time zone,
	write_uid				integer,
	write_date				timestamp without time zone,
	CONSTRAINT res_company_name_uniq UNIQUE (name)
);
ALTER TABLE public.res_partner ADD CONSTRAINT res_partner_company_id_fkey
	FOREIGN KEY (company_id) REFERENCES public.res_company (id) ON DELETE SET NULL;

-- sale (+ portal.mixin's access_token)
CREATE TABLE public.sale_order (
	id						serial PRIMARY KEY,
	campaign_id				integer,
	source_id				integer,
	medium_id				integer,
	company_id				integer NOT NULL REFERENCES public.res_company (id) ON DELETE RESTRICT,
	partner_id				integer NOT NULL REFERENCES public.res_partner (id) ON DELETE RESTRICT,
	journal_id				integer,
	partner_invoice_id		integer NOT NULL REFERENCES public.res_partner (id) ON DELETE RESTRICT,
	partner_shipping_id		integer NOT NULL REFERENCES public.res_partner (id) ON DELETE RESTRICT,
	fiscal_position_id		integer,
	payment_term_id			integer,
	pricelist_id			integer,
	currency_id				integer REFERENCES public.res_currency (id) ON DELETE RESTRICT,
	user_id					integer,
	team_id					integer,
	create_uid				integer,
	write_uid				integer,
	access_token			varchar,
	name					varchar NOT NULL,		-- 'New' until the sequence gives 'S00042'
	state					varchar,				-- draft | sent | sale | done | cancel
	client_order_ref		varchar,
	origin					varchar,
	reference				varchar,
	signed_by				varchar,
	invoice_status			varchar,				-- upselling | invoiced | to invoice | no
	validity_date			date,
	note					text,
	currency_rate			numeric,
	amount_untaxed			numeric,
	amount_tax				numeric,
	amount_total			numeric,
	amount_to_invoice		numeric,
	require_signature		boolean,
	require_payment			boolean,
	commitment_date			timestamp without time zone,
	date_order				timestamp without time zone NOT NULL,	-- the confirmation date once confirmed
	signed_on				timestamp without time zone,
	create_date				timestamp without time zone,
	write_date				timestamp without time zone,
	prepayment_percent		double precision,
	CONSTRAINT sale_order_date_order_conditional_required
		CHECK ((((state)::text = ANY (ARRAY['sale'::text, 'done'::text])) AND date_order IS NOT NULL)
			OR ((state)::text <> ALL (ARRAY['sale'::text, 'done'::text])))
);
CREATE INDEX sale_order__partner_id_index ON public.sale_order (partner_id);
CREATE INDEX sale_order__state_index ON public.sale_order (state);

-- account (+ portal.mixin's access_token)
CREATE TABLE public.account_move (
	id						serial PRIMARY KEY,
	sequence_number			integer,
	journal_id				integer NOT NULL,		-- account_journal, left out of the fixture
	company_id				integer REFERENCES public.res_company (id) ON DELETE RESTRICT,
	partner_id				integer REFERENCES public.res_partner (id) ON DELETE RESTRICT,
	commercial_partner_id	integer REFERENCES public.res_partner (id) ON DELETE RESTRICT,
	currency_id				integer NOT NULL REFERENCES public.res_currency (id) ON DELETE RESTRICT,
	create_uid				integer,
	write_uid				integer,
	access_token			varchar,
	sequence_prefix			varchar,
	name					varchar,				-- '/' or NULL in draft, 'INV/2025/00001' posted
	ref						varchar,
	state					varchar NOT NULL,		-- draft | posted | cancel
	move_type				varchar NOT NULL,		-- entry | out_invoice | out_refund | in_invoice | in_refund | out_receipt | in_receipt
	payment_reference		varchar,
	payment_state			varchar,				-- not_paid | in_payment | paid | partial | reversed | invoicing_legacy
	invoice_origin			varchar,
	date					date NOT NULL,
	invoice_date			date,
	invoice_date_due		date,
	narration				text,
	amount_untaxed			numeric,
	amount_tax				numeric,
	amount_total			numeric,
	amount_residual			numeric,
	amount_untaxed_signed	numeric,
	amount_tax_signed		numeric,
	amount_total_signed		numeric,
	amount_residual_signed	numeric,
	is_move_sent			boolean,
	create_date				timestamp without time zone,
	write_date				timestamp without time zone
);
CREATE UNIQUE INDEX account_move_unique_name ON public.account_move (name, journal_id)
	WHERE ((state)::text = 'posted' AND (name)::text <> '/');
CREATE INDEX account_move__partner_id_index ON public.account_move (partner_id);
CREATE INDEX account_move__state_index ON public.account_move (state);

-- mail (a dependency of account): messages, recipients, attachments
\ir mail.sql

INSERT INTO public.ir_module_module (name, state, latest_version) VALUES
	('base', 'installed', '16.0.1.3');
