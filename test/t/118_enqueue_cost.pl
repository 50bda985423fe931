# The enqueue path's shortcuts (issue 11) stay correct across sessions.
#
# wa_send skips the keyed hashes of the number (the opt-outs of erased
# people, subject.c) when whatsapp.opt_out holds no hashed identifier,
# which it learns from one probe of opt_out_erased_idx with the statement's
# snapshot; it skips the query of paused templates when
# templates_blocked_idx has no row of that template's name.  These tests
# hold one session open while another erases a person or pauses a
# template, so that any state kept in a backend between calls (a cached
# "no erasure", a cached "no paused template") would show as a message
# that goes out when it must not.  message_payload_check, now a C
# function, keeps its rule.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $mock = WaTest::mock_start();
my $node = WaTest::node('enqueue_cost', mock => $mock,
	'whatsapp.poll_interval' => '60s');

WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('es', '1088776655', 'EAAenqueuecost-not-a-real-token',
								   waba_id => '2088776655', max_mps => 1000);
	INSERT INTO whatsapp.templates (name, language, category) VALUES
		('cita_recordatorio', 'es', 'UTILITY'), ('cita_recordatorio', 'en_US', 'UTILITY');
	CREATE ROLE app LOGIN IN ROLE whatsapp_sender, whatsapp_reader;
	CREATE ROLE privacy_officer LOGIN IN ROLE whatsapp_admin;
	GRANT whatsapp_sender TO privacy_officer;
}, 'extension, an account (its token sealed: the key file exists), templates, roles');
my $as_admin = $node->connstr('postgres') . ' user=privacy_officer';

WaTest::psql_is($node, q{SELECT pg_catalog.pg_get_indexdef('whatsapp.opt_out_erased_idx'::regclass) ~ 'erased:%'},
	't', 'opt_out_erased_idx holds the hashed identifiers only');
WaTest::psql_is($node, q{SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint
						  WHERE conname = 'message_payload_check'},
	'CHECK (whatsapp._message_payload_valid(state, payload))',
	'message_payload_check calls the C function');

# --- a session that stays open, as an application's pooled connection ------
my $s = { in => '', out => '', err => '' };
$s->{timer} = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
$s->{h} = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'VERBOSITY=terse', '-d', $node->connstr('postgres') . ' user=app', '-f', '-' ],
	'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err}, $s->{timer});
my $marker_seq = 0;

# Run SQL in the open session and return its output.
sub in_session
{
	my ($sql) = @_;
	my $marker = '__done_' . (++$marker_seq) . '__';
	$s->{in} .= "$sql\n\\echo $marker\n";
	$s->{timer}->start($PostgreSQL::Test::Utils::timeout_default);
	$s->{h}->pump until $s->{out} =~ /\Q$marker\E/ || $s->{timer}->is_expired;
	die "timed out waiting for the open session: $s->{err}" if $s->{timer}->is_expired;
	my $out = $s->{out};
	$out =~ s/\Q$marker\E\n?//;
	$out =~ s/\s+\z//;
	$s->{out} = '';
	return $out;
}

sub verdict
{
	my ($id) = @_;
	my (undef, $out) = WaTest::run_psql($node,
		"SELECT coalesce(failure_type, 'none') FROM whatsapp.message WHERE id = $id");
	return $out;
}

# --- 1. An erasure in another session, seen by the next send ---------------
my $id = in_session(q{SELECT whatsapp.wa_send('+55 11 98765-4321', 'Lembrete: consulta amanhã às 10h');});
like($id, qr/^\d+$/, 'the open session sends to Beatriz (no erasure yet)');
is(verdict($id), 'none', 'not blocked');

WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_opt_out('+55 11 98765-4321', 'all', 'pediu para parar');
	SELECT whatsapp.wa_subject_erase('+5511987654321');
}, 'another session records her opt-out, then erases her', connstr => $as_admin);
WaTest::psql_is($node, q{SELECT count(*) > 0, bool_and(identifier LIKE 'erased:%') FROM whatsapp.opt_out},
	't|t', 'her opt-out is kept under keyed hashes only');

$id = in_session(q{SELECT whatsapp.wa_send('+55 11 98765-4321', 'Lembrete: consulta amanhã às 10h');});
is(verdict($id), 'opted_out', 'the open session\'s next send to her is blocked (the hashed opt-out)');
$id = in_session(q{SELECT whatsapp.wa_send('+55 11 8765-4321', 'Lembrete: consulta amanhã às 10h');});
is(verdict($id), 'opted_out', 'also under the number\'s other form (without the ninth digit)');

# Inside one READ COMMITTED transaction of the open session: the erasure
# commits between two of its statements.
my $first = in_session(q{BEGIN; SELECT whatsapp.wa_send('+34 612 34 56 78', 'Su cita es el martes a las 9:00');});
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_opt_out('+34 612 34 56 78', 'all', 'por teléfono');
	SELECT whatsapp.wa_subject_erase('+34612345678');
}, 'while the open session\'s transaction runs, another erases Lucía (who opted out)',
	connstr => $as_admin);
my $second = in_session(q{SELECT whatsapp.wa_send('+34 612 34 56 78', 'Su cita es el martes a las 9:00'); COMMIT;});
is(verdict($second), 'opted_out', 'the next statement of that transaction sees the erasure: blocked');

# wa_opt_in lifts the hashed opt-outs: sends go out again.
WaTest::psql_is($node, q{SELECT whatsapp.wa_opt_in('+55 11 98765-4321')}, 't',
	'Beatriz opts in again', connstr => $as_admin);
$id = in_session(q{SELECT whatsapp.wa_send('+55 11 98765-4321', 'Bem-vinda de volta');});
is(verdict($id), 'none', 'the open session\'s send to her is not blocked any more');

# Hashes made under an older key are still probed after a key rotation.
WaTest::psql_ok($node, q{SELECT whatsapp.wa_rotate_key()}, 'the key is rotated');
$id = in_session(q{SELECT whatsapp.wa_send('+34 612 34 56 78', 'Su cita es el martes a las 9:00');});
is(verdict($id), 'opted_out', 'Lucía stays blocked after the rotation (hash under the old key)');

# --- 2. The account, read by index: a drop in another session is seen -----
WaTest::psql_ok($node, q{SELECT whatsapp.wa_account_set('pt', '1077665544', 'EAAenqueuecost-second-token')},
	'a second account, pt');
$id = in_session(q{SELECT whatsapp.wa_send('+351 912 345 678', 'A sua encomenda foi enviada', account => 'pt');});
WaTest::psql_is($node, "SELECT a.name FROM whatsapp.message m JOIN whatsapp.account a ON a.id = m.account_id WHERE m.id = $id",
	'pt', 'the open session sends through pt by name');
$id = in_session(q{SELECT whatsapp.wa_send('+351 912 345 678', 'A sua encomenda foi enviada');});
WaTest::psql_is($node, "SELECT a.name FROM whatsapp.message m JOIN whatsapp.account a ON a.id = m.account_id WHERE m.id = $id",
	'es', 'and through the default, es, without one');
WaTest::psql_ok($node, q{SELECT whatsapp.wa_account_drop('pt')}, 'another session drops pt');
is(in_session(q{SELECT whatsapp.wa_send('+351 912 345 678', 'A sua encomenda foi enviada', account => 'pt');}),
	'', 'the open session\'s next send through pt returns nothing');
like($s->{err}, qr/42704|account "pt" does not exist/, 'but fails: the account does not exist');
$s->{err} = '';

# --- 3. A template paused in another session -------------------------------
my $tpl = q{SELECT whatsapp.wa_send_template('+49 151 23456789', 'cita_recordatorio', 'es', '["Jonas", "Dienstag"]');};
$id = in_session($tpl);
is(verdict($id), 'none', 'the open session sends the template (not paused)');
WaTest::psql_ok($node, q{UPDATE whatsapp.templates SET status = 'PAUSED' WHERE name = 'cita_recordatorio' AND language = 'es'},
	'another session records that Meta paused it (es)');
$id = in_session($tpl);
is(verdict($id), 'template', 'the open session\'s next send of it fails: paused');
$id = in_session(q{SELECT whatsapp.wa_send_template('+49 151 23456789', 'cita_recordatorio', 'en_US', '["Jonas", "Tuesday"]');});
is(verdict($id), 'none', 'its en_US translation, not paused, is sent');
WaTest::psql_ok($node, q{UPDATE whatsapp.templates SET status = 'APPROVED' WHERE name = 'cita_recordatorio'},
	'Meta approves it again');
$id = in_session($tpl);
is(verdict($id), 'none', 'the open session sends it again');

$s->{in} .= "\\q\n";
$s->{h}->finish;

# --- 4. message_payload_check keeps its rule --------------------------------
WaTest::psql_fails($node, q{
	INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state)
	SELECT id, '+4915123456789', 'text', NULL, 'queued' FROM whatsapp.account},
	'23514', 'a queued message without content is refused');
WaTest::psql_fails($node, q{
	INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state)
	SELECT id, '+4915123456789', 'text', NULL, 'sending' FROM whatsapp.account},
	'23514', 'so is one sending');
WaTest::psql_ok($node, q{
	INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state)
	SELECT id, '+4915123456789', 'text', NULL, 'delivered' FROM whatsapp.account},
	'a delivered one whose content was purged is accepted');

done_testing();
