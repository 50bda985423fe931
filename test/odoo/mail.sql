-- test/odoo/mail.sql: the tables of Odoo's mail module (a dependency of
-- account, so present in every database with invoices) that record an
-- invoice going out by e-mail.  Included by odoo16.sql .. odoo19.sql,
-- after res_partner.  The columns are a subset; the ones the whatsapp
-- extension reads are the same in 16, 17, 18 and 19:
--
--   mail_message (id, model, res_id, message_type, subtype_id)
--   mail_message_subtype (id, internal)
--   mail_message_res_partner_rel (mail_message_id, res_partner_id)
--   message_attachment_rel (message_id, attachment_id)
--   mail_mail (id, mail_message_id, state), mail_mail_res_partner_rel
--     (mail_mail_id, res_partner_id): the recipients of a mass mail (16)
--
-- How Odoo writes them when it sends an invoice (docs/odoo-sent-links.md
-- has the per-version detail): message_post() on the account.move
-- INSERTs one mail_message (model 'account.move', message_type 'comment',
-- subtype mail.mt_comment), then its recipients (partner_ids) into
-- mail_message_res_partner_rel, its attachments into
-- message_attachment_rel, one mail_notification per e-mailed recipient
-- and the outgoing mail_mail.  message_type is a Selection: 'email',
-- 'comment', 'notification', 'auto_comment', 'user_notification', and
-- from 17 on also 'email_outgoing' (mass mailing copies).

-- ir_attachment, which messages attach, is defined in base.sql.

CREATE TABLE public.mail_message_subtype (
	id						serial PRIMARY KEY,
	name					jsonb NOT NULL,			-- translated
	description				jsonb,
	internal				boolean,				-- true: employees only (a note)
	parent_id				integer REFERENCES public.mail_message_subtype (id) ON DELETE SET NULL,
	relation_field			varchar,
	res_model				varchar,
	"default"				boolean,
	sequence				integer,
	hidden					boolean,
	create_uid				integer,
	create_date				timestamp without time zone,
	write_uid				integer,
	write_date				timestamp without time zone
);

CREATE TABLE public.mail_message (
	id						serial PRIMARY KEY,
	parent_id				integer REFERENCES public.mail_message (id) ON DELETE SET NULL,
	res_id					integer,				-- Many2oneReference on model
	subtype_id				integer REFERENCES public.mail_message_subtype (id) ON DELETE SET NULL,
	author_id				integer REFERENCES public.res_partner (id) ON DELETE SET NULL,
	mail_server_id			integer,
	create_uid				integer,
	write_uid				integer,
	subject					varchar,
	model					varchar,				-- 'account.move'
	record_name				varchar,
	message_type			varchar NOT NULL,		-- email | comment | email_outgoing (17+) | notification | auto_comment | user_notification
	email_from				varchar,
	message_id				varchar,
	reply_to				varchar,
	email_layout_xmlid		varchar,
	body					text,
	date					timestamp without time zone,
	is_internal				boolean,
	reply_to_force_new		boolean,
	email_add_signature		boolean,
	create_date				timestamp without time zone,
	write_date				timestamp without time zone
);
CREATE INDEX mail_message_model_res_id_idx ON public.mail_message (model, res_id);
CREATE INDEX mail_message__subtype_id_index ON public.mail_message (subtype_id);
CREATE INDEX mail_message__author_id_index ON public.mail_message (author_id);

-- partner_ids: the recipients named on the message (Many2many)
CREATE TABLE public.mail_message_res_partner_rel (
	mail_message_id			integer NOT NULL REFERENCES public.mail_message (id) ON DELETE CASCADE,
	res_partner_id			integer NOT NULL REFERENCES public.res_partner (id) ON DELETE CASCADE,
	PRIMARY KEY (mail_message_id, res_partner_id)
);
CREATE INDEX ON public.mail_message_res_partner_rel (res_partner_id, mail_message_id);

-- attachment_ids of the message (Many2many)
CREATE TABLE public.message_attachment_rel (
	message_id				integer NOT NULL REFERENCES public.mail_message (id) ON DELETE CASCADE,
	attachment_id			integer NOT NULL REFERENCES public.ir_attachment (id) ON DELETE CASCADE,
	PRIMARY KEY (message_id, attachment_id)
);
CREATE INDEX ON public.message_attachment_rel (attachment_id, message_id);

CREATE TABLE public.mail_mail (
	id						serial PRIMARY KEY,
	mail_message_id			integer NOT NULL REFERENCES public.mail_message (id) ON DELETE CASCADE,
	fetchmail_server_id		integer,
	create_uid				integer,
	write_uid				integer,
	"references"			text,
	body_html				text,
	headers					text,
	email_to				text,
	email_cc				varchar,
	state					varchar,				-- outgoing | sent | received | exception | cancel
	failure_type			varchar,
	failure_reason			text,
	scheduled_date			timestamp without time zone,
	auto_delete				boolean,
	is_notification			boolean,
	create_date				timestamp without time zone,
	write_date				timestamp without time zone
);

-- mail_message_id is index=True in Odoo's mail.mail
CREATE INDEX mail_mail__mail_message_id_index ON public.mail_mail (mail_message_id);

-- recipient_ids of mail.mail (Many2many, default table and columns): where
-- the mail composer's mass_mail mode (Odoo 16: the Send of several
-- invoices at once) puts the recipients, instead of the message's partner_ids
CREATE TABLE public.mail_mail_res_partner_rel (
	mail_mail_id			integer NOT NULL REFERENCES public.mail_mail (id) ON DELETE CASCADE,
	res_partner_id			integer NOT NULL REFERENCES public.res_partner (id) ON DELETE CASCADE,
	PRIMARY KEY (mail_mail_id, res_partner_id)
);
CREATE INDEX ON public.mail_mail_res_partner_rel (res_partner_id, mail_mail_id);

CREATE TABLE public.mail_notification (
	id						serial PRIMARY KEY,
	author_id				integer REFERENCES public.res_partner (id) ON DELETE SET NULL,
	mail_message_id			integer NOT NULL REFERENCES public.mail_message (id) ON DELETE CASCADE,
	mail_mail_id			integer REFERENCES public.mail_mail (id) ON DELETE SET NULL,
	res_partner_id			integer REFERENCES public.res_partner (id) ON DELETE CASCADE,
	notification_type		varchar NOT NULL,		-- inbox | email (| sms, whatsapp ...)
	notification_status		varchar,				-- ready | process | pending | sent | bounce | exception | canceled
	failure_type			varchar,
	failure_reason			text,
	is_read					boolean,
	read_date				timestamp without time zone
);

-- External ids: mail.mt_comment and mail.mt_note, as mail's data files make them.
CREATE TABLE IF NOT EXISTS public.ir_model_data (
	id						serial PRIMARY KEY,
	res_id					integer,
	create_uid				integer,
	write_uid				integer,
	noupdate				boolean,
	name					varchar NOT NULL,
	module					varchar NOT NULL,
	model					varchar NOT NULL,
	create_date				timestamp without time zone,
	write_date				timestamp without time zone
);
CREATE UNIQUE INDEX IF NOT EXISTS ir_model_data_module_name_uniq_index ON public.ir_model_data (module, name);

INSERT INTO public.mail_message_subtype (id, name, description, internal, "default", sequence, hidden) VALUES
	(1, '{"en_US": "Discussions"}', NULL, false, true, 0, false),
	(2, '{"en_US": "Note"}', NULL, true, false, 100, false),
	(3, '{"en_US": "Activities"}', NULL, true, false, 90, false);
ALTER SEQUENCE public.mail_message_subtype_id_seq RESTART WITH 101;
INSERT INTO public.ir_model_data (res_id, noupdate, name, module, model) VALUES
	(1, true, 'mt_comment', 'mail', 'mail.message.subtype'),
	(2, true, 'mt_note', 'mail', 'mail.message.subtype'),
	(3, true, 'mt_activities', 'mail', 'mail.message.subtype');
