-- test/odoo/payment16.sql: account.payment in Odoo 16 and 17, which
-- _inherits account.move: the payment's name, date and state are its
-- move's (move_id, required), and the move points back (payment_id).
-- After models.sql.
--
-- 17 has this layout too: OpenUpgrade's analysis of account 18.0.1.3
-- (openupgrade_scripts/scripts/account/18.0.1.3/upgrade_analysis.txt)
-- lists "_inherits: DEL {'account.move': 'move_id'}" for account.payment,
-- and name, date, state, journal_id, company_id "is now stored / not
-- related anymore", and account.move's payment_id DEL; the 17.0.1.2
-- analysis lists none of this (test/t/116_odoo_payment17.pl).
CREATE TABLE public.account_payment (
	id				serial PRIMARY KEY,
	move_id			integer NOT NULL REFERENCES public.account_move (id) ON DELETE CASCADE,
	is_reconciled	boolean,
	is_matched		boolean,
	payment_type	varchar NOT NULL,
	partner_type	varchar NOT NULL,
	payment_reference varchar,
	amount			numeric,
	currency_id		integer REFERENCES public.res_currency (id) ON DELETE RESTRICT,
	partner_id		integer REFERENCES public.res_partner (id) ON DELETE RESTRICT,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone
);
ALTER TABLE public.account_move ADD COLUMN IF NOT EXISTS payment_id integer
	REFERENCES public.account_payment (id) ON DELETE SET NULL;
