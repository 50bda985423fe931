-- test/odoo/models.sql: Odoo models beyond sale.order and account.move,
-- for the rules on any model (test/t/077_odoo_rules.pl,
-- docs/odoo-rules.md).  Included after odoo16.sql .. odoo19.sql and
-- data.sql.  Columns as Odoo's ORM makes them (see base.sql): the
-- fields a rule reads, the required ones, and the foreign keys of the
-- many2ones, which the extension follows.
--
-- stock.picking and stock.picking.type (stock), calendar.event and
-- calendar.attendee (calendar), helpdesk.team, helpdesk.stage and
-- helpdesk.ticket (helpdesk, Enterprise).  account.payment differs by
-- version: payment16.sql and payment18.sql.
--
-- calendar: the columns below were checked against Odoo 16's
-- addons/calendar/models/calendar_event.py and a later
-- calendar_attendee.py (event_id and partner_id required, common_name
-- stored, access_token, state accepted/declined/tentative/needsAction,
-- availability); OpenUpgrade's calendar analyses for 17.0.1.1 and
-- 19.0.1.1 change none of them (there is none stored for 18).  Not
-- modelled: calendar_event.res_model_id (res_model is its stored related
-- field) and the many2manys.
-- helpdesk is Odoo Enterprise: its source is not in Odoo's public
-- repositories, and these tables were NOT checked against it; they are
-- a plausible guess (docs/odoo-rules.md says so).

CREATE TABLE public.stock_picking_type (
	id				serial PRIMARY KEY,
	name			jsonb NOT NULL,				-- translated: {"en_US": "Delivery Orders"}
	code			varchar NOT NULL,			-- 'incoming' | 'outgoing' | 'internal'
	sequence_code	varchar NOT NULL,
	company_id		integer NOT NULL REFERENCES public.res_company (id) ON DELETE RESTRICT,
	active			boolean,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone
);

CREATE TABLE public.stock_picking (
	id					serial PRIMARY KEY,
	name				varchar,					-- 'WH/OUT/00012'
	origin				varchar,					-- the sale order's name
	state				varchar,					-- draft waiting confirmed assigned done cancel
	move_type			varchar NOT NULL,			-- 'direct' | 'one'
	priority			varchar,
	partner_id			integer REFERENCES public.res_partner (id) ON DELETE SET NULL,
	picking_type_id		integer NOT NULL REFERENCES public.stock_picking_type (id) ON DELETE RESTRICT,
	company_id			integer REFERENCES public.res_company (id) ON DELETE SET NULL,
	scheduled_date		timestamp without time zone NOT NULL,
	date_done			timestamp without time zone,
	carrier_tracking_ref varchar,					-- delivery (stock_delivery in 18+)
	create_uid			integer,
	create_date			timestamp without time zone,
	write_uid			integer,
	write_date			timestamp without time zone
);
CREATE INDEX stock_picking_state_index ON public.stock_picking (state);

CREATE TABLE public.calendar_event (
	id				serial PRIMARY KEY,
	name			varchar NOT NULL,
	start			timestamp without time zone NOT NULL,	-- UTC
	stop			timestamp without time zone NOT NULL,
	allday			boolean,
	location		varchar,
	user_id			integer,
	active			boolean,
	privacy			varchar,
	show_as			varchar,
	res_model		varchar,
	res_id			integer,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone
);

CREATE TABLE public.calendar_attendee (
	id				serial PRIMARY KEY,
	event_id		integer NOT NULL REFERENCES public.calendar_event (id) ON DELETE CASCADE,
	partner_id		integer NOT NULL REFERENCES public.res_partner (id) ON DELETE CASCADE,
	state			varchar,					-- needsAction tentative declined accepted
	common_name		varchar,
	access_token	varchar,
	availability	varchar,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone
);

CREATE TABLE public.helpdesk_team (
	id				serial PRIMARY KEY,
	name			jsonb NOT NULL,
	company_id		integer NOT NULL REFERENCES public.res_company (id) ON DELETE RESTRICT,
	active			boolean
);

CREATE TABLE public.helpdesk_stage (
	id				serial PRIMARY KEY,
	name			jsonb NOT NULL,				-- translated: {"en_US": "Solved", "es_MX": "Resuelto"}
	sequence		integer,
	fold			boolean,
	active			boolean
);

CREATE TABLE public.helpdesk_ticket (
	id				serial PRIMARY KEY,
	name			varchar NOT NULL,
	ticket_ref		varchar,
	priority		varchar,
	partner_id		integer REFERENCES public.res_partner (id) ON DELETE SET NULL,
	team_id			integer REFERENCES public.helpdesk_team (id) ON DELETE SET NULL,
	stage_id		integer REFERENCES public.helpdesk_stage (id) ON DELETE RESTRICT,
	company_id		integer REFERENCES public.res_company (id) ON DELETE SET NULL,
	user_id			integer,
	active			boolean,
	create_uid		integer,
	create_date		timestamp without time zone,
	write_uid		integer,
	write_date		timestamp without time zone
);

INSERT INTO public.stock_picking_type (id, name, code, sequence_code, company_id, active) VALUES
	(1, '{"en_US": "Receipts", "es_MX": "Recepciones"}', 'incoming', 'IN', 1, true),
	(2, '{"en_US": "Delivery Orders", "es_MX": "Órdenes de entrega"}', 'outgoing', 'OUT', 1, true);
INSERT INTO public.helpdesk_team (id, name, company_id, active) VALUES
	(1, '{"en_US": "Customer Care"}', 1, true);
INSERT INTO public.helpdesk_stage (id, name, sequence, fold, active) VALUES
	(1, '{"en_US": "New", "es_MX": "Nuevo"}', 0, false, true),
	(2, '{"en_US": "In Progress", "es_MX": "En progreso"}', 1, false, true),
	(3, '{"en_US": "Solved", "es_MX": "Resuelto"}', 2, true, true),
	(4, '{"en_US": "Cancelled", "es_MX": "Cancelado"}', 3, true, true);
