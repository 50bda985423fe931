-- test/odoo/payment18.sql: account.payment in Odoo 18 and 19, a record of
-- its own with its own state (draft, in_process, paid, canceled,
-- rejected) and name; move_id is optional.  After models.sql.
--
-- From OpenUpgrade's analysis of account 18.0.1.3: the _inherits of
-- account.move is dropped; state is stored with the selection keys
-- canceled, draft, in_process, paid, rejected; name, date, journal_id and
-- company_id are stored; memo, is_sent and invoice_ids are new; and
-- account.move loses payment_id for origin_payment_id.  The 19.0.1.4
-- analysis lists no change to account.payment's fields.
CREATE TABLE public.account_payment (
	id				serial PRIMARY KEY,
	move_id			integer REFERENCES public.account_move (id) ON DELETE CASCADE,
	name			varchar,					-- 'PBNK1/2025/00007'
	state			varchar NOT NULL,
	payment_type	varchar NOT NULL,			-- 'inbound' | 'outbound'
	partner_type	varchar NOT NULL,			-- 'customer' | 'supplier'
	amount			numeric,
	currency_id		integer REFERENCES public.res_currency (id) ON DELETE RESTRICT,
	partner_id		integer REFERENCES public.res_partner (id) ON DELETE RESTRICT,
	company_id		integer REFERENCES public.res_company (id) ON DELETE RESTRICT,
	journal_id		integer,
	date			date,
	memo			varchar,
	is_sent			boolean,					-- new in 18
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone
);
