-- test/odoo/drop.sql: remove the Odoo fixture (any version) from schema public.
DROP TABLE IF EXISTS public.account_move, public.sale_order, public.res_company,
	public.res_partner, public.phone_blacklist, public.ir_config_parameter,
	public.res_lang, public.res_country, public.res_currency, public.ir_module_module,
	public.ir_attachment CASCADE;
