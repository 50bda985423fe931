-- test/odoo/drop.sql: remove the Odoo fixture (any version) from schema public.
DROP TABLE IF EXISTS public.mail_notification, public.mail_mail_res_partner_rel, public.mail_mail, public.message_attachment_rel,
	public.mail_message_res_partner_rel, public.mail_message, public.mail_message_subtype,
	public.ir_model_data, public.ir_attachment CASCADE;
DROP TABLE IF EXISTS public.account_move, public.sale_order, public.res_company,
	public.res_partner, public.phone_blacklist, public.ir_config_parameter,
	public.res_lang, public.res_country, public.res_currency, public.ir_module_module CASCADE;
-- website.sql's, when it was loaded
DO $$
BEGIN
	IF to_regclass('public.website') IS NOT NULL THEN
		DROP TABLE public.website;
	END IF;
END
$$;
