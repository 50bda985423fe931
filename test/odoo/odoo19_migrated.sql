-- test/odoo/odoo19_migrated.sql: an Odoo 18 database migrated to 19 with
-- OpenUpgrade.  The tables are 19's, except that OpenUpgrade drops no
-- column: res_partner keeps 18's mobile, with the numbers it held at the
-- migration, which Odoo 19 neither shows nor updates.  ir_module_module
-- says 19.
\ir odoo19.sql

ALTER TABLE public.res_partner ADD COLUMN mobile varchar;
