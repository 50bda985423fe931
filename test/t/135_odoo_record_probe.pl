# 135_odoo_record_probe.pl: the Odoo trigger records at most one message
# per document and event, in any account, with the probe of
# message_dedupe_key done in C (one index probe per account) instead of a
# NOT EXISTS inside the INSERT (issue 11, Odoo speed); and what the
# trigger remembers per backend follows the catalog and the configuration
# other sessions commit.
#
#   1. a confirmation records one message; auto_explain shows the
#      recording INSERT reading neither whatsapp.account nor the outbox
#      (the probe is not SQL any more);
#   2. the rule moved to another account: the order confirmed again
#      records nothing (the first message, in the other account, holds
#      the key); the same after that account was dropped;
#   3. a message with the same key, written earlier in the confirming
#      transaction in a third account, holds the key too (the probe sees
#      the transaction's own writes);
#   4. a long-lived session sees the configuration other sessions commit
#      at its next confirmation (the rule's account, the pause), and a
#      column of whatsapp.templates dropped and added again (its number
#      changes) is read at its new place.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $mock = WaTest::mock_start();
my $node = WaTest::node('probe', mock => $mock, database => 'odoo',
	'whatsapp.poll_interval' => '1s');

WaTest::psql_ok($node, q{
	CREATE ROLE odoo LOGIN NOSUPERUSER;
	CREATE DATABASE odoo OWNER odoo;
}, 'a database owned by odoo, not a superuser');
my $t1 = 'EAAprobe1' . int(rand(1e9));
my $t2 = 'EAAprobe2' . int(rand(1e9));
my $t3 = 'EAAprobe3' . int(rand(1e9));
WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	GRANT whatsapp_sender, whatsapp_reader TO odoo;
	SELECT whatsapp.wa_account_set('mx', '1099887761', '$t1', max_mps => 1000);
	SELECT whatsapp.wa_account_set('mx2', '1099887762', '$t2', max_mps => 1000);
	SELECT whatsapp.wa_account_set('us', '1099887763', '$t3', max_mps => 1000);
	INSERT INTO whatsapp.templates (name, language, category) VALUES
		('order_confirmed', 'es_MX', 'UTILITY'), ('order_confirmed', 'es', 'UTILITY');
}, 'extension, accounts mx, mx2 and us, the template in es_MX and es', dbname => 'odoo');
my $as_odoo = $node->connstr('odoo') . ' user=odoo';

WaTest::psql_ok($node, qq{
	SET client_min_messages = warning;
	\\i $repo/test/odoo/drop.sql
	\\set ECHO none
	\\i $repo/test/odoo/odoo17.sql
	\\o /dev/null
	\\i $repo/test/odoo/data.sql
	\\o
	-- customers in Mexico who read Spanish (Mexico), and their draft orders
	INSERT INTO public.res_partner (id, name, type, is_company, commercial_partner_id, country_id,
									lang, phone, phone_sanitized, active)
	SELECT 7000 + g, 'Cliente ' || g, 'contact', false, 7000 + g, 3, 'es_MX',
		   '55 ' || (21000000 + g), '+5255' || (21000000 + g), true
	  FROM generate_series(1, 20) g;
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
								   currency_id, name, state, date_order, access_token,
								   create_date, write_date)
	SELECT 7000 + g, 1, 7000 + g, 7000 + g, 7000 + g, 3, 'S7' || lpad(g::text, 4, '0'), 'draft',
		   now() AT TIME ZONE 'UTC', md5('probe' || g), now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
	  FROM generate_series(1, 20) g;
}, 'odoo creates the Odoo 17 tables, 20 customers and their draft orders', dbname => 'odoo',
	connstr => $as_odoo);

WaTest::psql_ok($node, q{
	SET client_min_messages = warning;
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
}, 'sale_order_confirmed on account mx', dbname => 'odoo');

# confirm(ORDER_ID [, SQL before]) as odoo, as the ORM does it
sub confirm_sql
{
	my ($id) = @_;
	return qq{UPDATE public.sale_order SET state = 'sale', write_date = now() AT TIME ZONE 'UTC' WHERE id = $id;
	UPDATE public.sale_order SET amount_total = 1160.16 WHERE id = $id;};
}

sub messages_of
{
	my ($id) = @_;
	return $node->safe_psql('odoo', qq{SELECT coalesce(string_agg(a.name, ',' ORDER BY m.id), '')
		FROM whatsapp.message m JOIN whatsapp.account a ON a.id = m.account_id
	   WHERE m.dedupe_key = 'sale.order:$id:sale_order_confirmed'});
}

sub redraft
{
	my ($id) = @_;
	$node->safe_psql('odoo', "UPDATE public.sale_order SET state = 'draft' WHERE id = $id");
}

# 1. one message; the recording INSERT's plan, as auto_explain logs it
my $log_offset = -s $node->logfile;
WaTest::psql_ok($node, qq{
	LOAD 'auto_explain';
	SET auto_explain.log_min_duration = 0;
	SET auto_explain.log_nested_statements = on;
	SET auto_explain.log_level = log;
	BEGIN ISOLATION LEVEL REPEATABLE READ;
	@{[ confirm_sql(7001) ]}
	COMMIT;
}, '1. order 7001 confirmed, with auto_explain logging nested plans', dbname => 'odoo');
is(messages_of(7001), 'mx', '1. one message, in account mx');
my $log = slurp_file($node->logfile, $log_offset);
my @plans = split /(?=duration: [0-9.]+ ms\s+plan:)/, $log;
my ($insert) = grep { /Insert on message/ } @plans;
ok(defined $insert, '1. auto_explain logged the recording INSERT');
$insert //= '';
$insert =~ s/\n(?!\s).*//s;    # the plan only, up to the next log line
unlike($insert, qr/\bon account\b/, '1. the INSERT reads no whatsapp.account (no InitPlan over the accounts)');
unlike($insert, qr/(Scan|Scan using \S+) on message\b/,
	'1. the INSERT scans no whatsapp.message (the once-per-document probe is made in C)');
like($insert, qr/Conflict Resolution: NOTHING/, '1. ON CONFLICT DO NOTHING still guards the account\'s key');

# 2. the rule moved to mx2; then mx dropped
WaTest::psql_ok($node, q{
	SET client_min_messages = warning;
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx2');
}, '2. the rule moves to account mx2', dbname => 'odoo');
redraft(7001);
$node->safe_psql('odoo', "BEGIN; @{[ confirm_sql(7001) ]} COMMIT;");
is(messages_of(7001), 'mx', '2. confirmed again: nothing more, the message in mx holds the key');
$node->safe_psql('odoo', "BEGIN; @{[ confirm_sql(7002) ]} COMMIT;");
is(messages_of(7002), 'mx2', '2. another order goes to mx2');
WaTest::psql_ok($node, q{SELECT whatsapp.wa_account_drop('mx')}, '2. account mx dropped',
	dbname => 'odoo');
redraft(7001);
$node->safe_psql('odoo', "BEGIN; @{[ confirm_sql(7001) ]} COMMIT;");
is(messages_of(7001), 'mx', '2. confirmed once more: the dropped account\'s message still holds the key');

# 3. the key taken earlier in the same transaction, in a third account
$node->safe_psql('odoo', qq{BEGIN ISOLATION LEVEL REPEATABLE READ;
	SELECT whatsapp.wa_send('+525521000003', 'Su pedido S70003 fue confirmado.', 'us',
							'sale.order:7003:sale_order_confirmed');
	@{[ confirm_sql(7003) ]}
	COMMIT;});
is(messages_of(7003), 'us', '3. a key taken earlier in the transaction (account us) holds it');
$node->safe_psql('odoo', "BEGIN; @{[ confirm_sql(7004) ]} COMMIT;");
is(messages_of(7004), 'mx2', '3. the next order is recorded as usual');

# 4. a long-lived session, and the configuration other sessions commit
my $bg = $node->background_psql('odoo');
$bg->query_safe("BEGIN; @{[ confirm_sql(7005) ]} COMMIT;");
is(messages_of(7005), 'mx2', '4. the long-lived session records in mx2');
$node->safe_psql('odoo', q{SET client_min_messages = warning;
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'us')});
$bg->query_safe("BEGIN; @{[ confirm_sql(7006) ]} COMMIT;");
is(messages_of(7006), 'us', '4. the rule moved to us by another session: its next confirmation follows');
$node->safe_psql('odoo', 'SELECT whatsapp.wa_odoo_pause()');
$bg->query_safe("BEGIN; @{[ confirm_sql(7007) ]} COMMIT;");
is(messages_of(7007), '', '4. paused by another session: nothing recorded');
$node->safe_psql('odoo', 'SELECT whatsapp.wa_odoo_resume()');
$bg->query_safe("BEGIN; @{[ confirm_sql(7008) ]} COMMIT;");
is(messages_of(7008), 'us', '4. resumed: recorded again');
is($node->safe_psql('odoo', q{SELECT payload #>> '{template,language,code}' FROM whatsapp.message
	WHERE dedupe_key = 'sale.order:7008:sale_order_confirmed'}), 'es_MX',
	'4. in the partner\'s language, es_MX');

# whatsapp.templates' status column dropped and added again: a new
# column number; es_MX rejected there must be seen
$node->safe_psql('odoo', q{
	ALTER TABLE whatsapp.templates DROP COLUMN status;
	ALTER TABLE whatsapp.templates ADD COLUMN status text;
	UPDATE whatsapp.templates SET status = CASE language WHEN 'es_MX' THEN 'REJECTED' ELSE 'APPROVED' END;
});
$bg->query_safe("BEGIN; @{[ confirm_sql(7009) ]} COMMIT;");
is($node->safe_psql('odoo', q{SELECT payload #>> '{template,language,code}' FROM whatsapp.message
	WHERE dedupe_key = 'sale.order:7009:sale_order_confirmed'}), 'es',
	'4. the template\'s status read at its new column: es_MX rejected, es chosen');
$bg->quit;

done_testing();
