# invoice_sent means sent to the customer (issue 12, item 2).  For each of
# Odoo 16, 17, 18 and 19 (the fixtures of test/odoo), Odoo's role does what
# Print, Download and Send do to the database in that version, as read in
# Odoo's source (docs/odoo-sent-links.md): only Send records a message.
# Also: a note that names the customer, a chatter message without the
# invoice attached, a mail on a draft invoice, the invoice mailed to
# another partner, an 18 batch that is still pending, and a second Send.
# (The 0.2 -> 0.3 move of the triggers is in 001_install.pl.)
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $node = WaTest::node('sent', 'whatsapp.poll_interval' => '60s');

WaTest::psql_ok($node, q{
	CREATE ROLE odoo LOGIN;
}, "Odoo's role");

# Odoo's writes, per version.  $inv is the invoice; ids of messages and
# attachments are derived from it so that each statement is what the ORM
# runs, with the values it computes.
sub pdf_attachment
{
	my ($inv, $field) = @_;
	my $f = defined $field ? "'$field'" : 'NULL';
	return qq{
	INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
		store_fname, file_size, checksum, mimetype, create_date)
	VALUES ($inv * 10, 'INV_2025_0000$inv.pdf', 'account.move', $f, $inv, 1, 'binary',
		'5e/5e3f0a9c2b7d41e8a6c0f1d2e3b4a5968778695a', 48213,
		'5e3f0a9c2b7d41e8a6c0f1d2e3b4a5968778695a', 'application/pdf', now() AT TIME ZONE 'UTC');};
}

# message_post() on the invoice: the message, its recipients, its
# attachments, the outgoing mail and the e-mail notification.
sub message_post
{
	my (%a) = @_;
	my ($inv, $msg, $type, $subtype) = @a{qw(inv msg type subtype)};
	my $sql = qq{
	INSERT INTO public.mail_message (id, res_id, model, message_type, subtype_id, author_id,
		subject, body, email_from, message_id, reply_to, email_layout_xmlid, date, is_internal,
		reply_to_force_new, email_add_signature, create_date, write_date)
	VALUES ($msg, $inv, 'account.move', '$type', $subtype, 1,
		'Mi Empresa MX Invoice (Ref INV/2025/0000$inv)',
		'<p>Dear Ana Garcia, here is your invoice INV/2025/0000$inv.</p>',
		'"Mi Empresa MX" <facturas\@miempresa.example.mx>',
		'<$msg.1733200000.123456789-openerp-account.move-$inv\@erp>',
		'"Mi Empresa MX" <facturas\@miempresa.example.mx>',
		'mail.mail_notification_layout_with_responsible_signature',
		now() AT TIME ZONE 'UTC', false, false, false, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');};
	for my $p (@{ $a{partners} // [] })
	{
		$sql .= qq{
	INSERT INTO public.mail_message_res_partner_rel (mail_message_id, res_partner_id) VALUES ($msg, $p);};
	}
	if ($a{attach})
	{
		# the PDF is copied onto the message (attachments=(name, raw))
		$sql .= qq{
	INSERT INTO public.ir_attachment (id, name, res_model, res_id, company_id, type, store_fname,
		file_size, checksum, mimetype, create_date)
	VALUES ($msg, 'INV_2025_0000$inv.pdf', 'mail.message', $msg, 1, 'binary',
		'5e/5e3f0a9c2b7d41e8a6c0f1d2e3b4a5968778695a', 48213,
		'5e3f0a9c2b7d41e8a6c0f1d2e3b4a5968778695a', 'application/pdf', now() AT TIME ZONE 'UTC');
	INSERT INTO public.message_attachment_rel (message_id, attachment_id) VALUES ($msg, $msg);};
	}
	if ($a{mail})
	{
		$sql .= qq{
	INSERT INTO public.mail_mail (id, mail_message_id, state, email_to, auto_delete, is_notification,
		create_date)
	VALUES ($msg, $msg, 'outgoing', NULL, true, true, now() AT TIME ZONE 'UTC');
	INSERT INTO public.mail_notification (author_id, mail_message_id, mail_mail_id, res_partner_id,
		notification_type, notification_status, is_read)
	VALUES (1, $msg, $msg, 10, 'email', 'ready', true);};
	}
	return $sql;
}

my %print = (
	# account.move.action_invoice_print: is_move_sent, then the report, which
	# stores its PDF as an attachment (its "attachment" name expression)
	16 => sub {
		my ($inv) = @_;
		return "UPDATE public.account_move SET is_move_sent = true WHERE id = $inv;"
		  . pdf_attachment($inv, undef);
	},
	# the official PDF through account.move.send (_link_invoice_documents):
	# the attachment of invoice_pdf_report_file, and is_move_sent
	17 => sub {
		my ($inv) = @_;
		return pdf_attachment($inv, 'invoice_pdf_report_file')
		  . " UPDATE public.account_move SET is_move_sent = true WHERE id = $inv;";
	},
);
$print{18} = $print{19} = $print{17};

my %download = (
	# the portal's /my/invoices/<id>?report_type=pdf&download=true: the
	# token (_portal_ensure_token), and the report's stored PDF
	16 => sub {
		my ($inv) = @_;
		return "UPDATE public.account_move SET access_token = 'c0ffee00-1111-4222-8333-44445555666$inv' WHERE id = $inv;"
		  . pdf_attachment($inv, undef);
	},
	# 17+: _get_invoice_legal_documents renders a pro-forma when no
	# official PDF exists, and stores nothing; only the token is written
	17 => sub {
		my ($inv) = @_;
		return "UPDATE public.account_move SET access_token = 'c0ffee00-1111-4222-8333-44445555666$inv' WHERE id = $inv;";
	},
);
$download{18} = $download{19} = $download{17};

my %send = (
	# account.invoice.send (comment mode): the composer posts the message,
	# then mark_invoice_as_sent writes is_move_sent; Print is ticked too
	16 => sub {
		my ($inv) = @_;
		return pdf_attachment($inv, undef)
		  . message_post(inv => $inv, msg => 1000 + $inv, type => 'comment', subtype => 1,
			partners => [10], attach => 1, mail => 1)
		  . " UPDATE public.account_move SET is_move_sent = true WHERE id = $inv;";
	},
	# account.move.send: the official PDF and is_move_sent first, then
	# _send_mail's message_post
	17 => sub {
		my ($inv) = @_;
		return pdf_attachment($inv, 'invoice_pdf_report_file')
		  . " UPDATE public.account_move SET is_move_sent = true WHERE id = $inv;"
		  . message_post(inv => $inv, msg => 1000 + $inv, type => 'comment', subtype => 1,
			partners => [10], attach => 1, mail => 1);
	},
	# as 17, and sending_data is cleared at the end
	18 => sub {
		my ($inv) = @_;
		return pdf_attachment($inv, 'invoice_pdf_report_file')
		  . " UPDATE public.account_move SET is_move_sent = true WHERE id = $inv;"
		  . message_post(inv => $inv, msg => 1000 + $inv, type => 'comment', subtype => 1,
			partners => [10], attach => 1, mail => 1)
		  . " UPDATE public.account_move SET sending_data = NULL WHERE id = $inv;";
	},
);
$send{19} = $send{18};

for my $v (16, 17, 18, 19)
{
	my $db = "odoo$v";
	WaTest::psql_ok($node, "CREATE DATABASE $db OWNER odoo", "database for Odoo $v");
	WaTest::psql_ok($node, qq{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('mx', '1099887766', 'EAAsent$v', max_mps => 1000);
		SET ROLE odoo;
		\\set ECHO none
		\\o /dev/null
		\\i $repo/test/odoo/odoo$v.sql
		\\i $repo/test/odoo/data.sql
		\\o
		RESET ROLE;
		GRANT whatsapp_sender, whatsapp_reader TO odoo;
		SELECT whatsapp.wa_odoo_enable('invoice_sent', 'invoice_sent', 'es_MX', 'mx',
			'["partner_name", "document_name", "amount_residual"]');
	}, "Odoo $v fixture, owned by Odoo's role; invoice_sent enabled", dbname => $db);
	WaTest::psql_is($node, q{
		SELECT tgrelid::regclass || ':' || tgname FROM pg_trigger WHERE tgname LIKE 'whatsapp_%' ORDER BY 1;
		SELECT event || ':' || triggers_installed FROM whatsapp.odoo_rules;
	}, "mail_message:whatsapp_invoice_sent_insert\ninvoice_sent:true",
		"Odoo $v: invoice_sent's one trigger is on mail_message", dbname => $db);

	my $as_odoo = $node->connstr($db) . ' user=odoo';
	WaTest::psql_ok($node, q{
		INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
			currency_id, name, state, move_type, date, invoice_date, invoice_date_due,
			amount_total, amount_residual, access_token)
		SELECT g, 1, 1, 10, 10, 3, 'INV/2025/0000' || g, 'posted', 'out_invoice', current_date,
			   current_date, current_date + 30, 1160 + g, 1160 + g,
			   CASE WHEN g <> 2 THEN '9a1e6c2f-3b7d-4e58-a9c0-1d2e3f40506' || g END
		  FROM generate_series(1, 7) g;
		UPDATE public.account_move SET state = 'draft', name = '/' WHERE id = 6;
	}, "Odoo $v: seven invoices posted, one back in draft", connstr => $as_odoo);

	# 1. Print
	WaTest::psql_ok($node, "BEGIN; " . $print{$v}->(1) . " COMMIT;",
		"Odoo $v: Print of INV/2025/00001", connstr => $as_odoo);
	# 2. Download
	WaTest::psql_ok($node, "BEGIN; " . $download{$v}->(2) . " COMMIT;",
		"Odoo $v: Download of INV/2025/00002", connstr => $as_odoo);
	# 3. Send
	WaTest::psql_ok($node, "BEGIN; " . $send{$v}->(3) . " COMMIT;",
		"Odoo $v: Send of INV/2025/00003", connstr => $as_odoo);
	# 4. a log note (mail.mt_note, internal) naming the customer, with the PDF
	WaTest::psql_ok($node, "BEGIN; " . message_post(inv => 4, msg => 1004, type => 'comment',
			subtype => 2, partners => [10], attach => 1) . " COMMIT;",
		"Odoo $v: a note on INV/2025/00004 that names the customer", connstr => $as_odoo);
	# 5. a chatter message to the customer, without the invoice attached
	WaTest::psql_ok($node, "BEGIN; " . message_post(inv => 5, msg => 1005, type => 'comment',
			subtype => 1, partners => [10], mail => 1) . " COMMIT;",
		"Odoo $v: a message to the customer on INV/2025/00005 without attachment",
		connstr => $as_odoo);
	# 6. Send of an invoice back in draft
	WaTest::psql_ok($node, "BEGIN; " . message_post(inv => 6, msg => 1006, type => 'comment',
			subtype => 1, partners => [10], attach => 1, mail => 1) . " COMMIT;",
		"Odoo $v: a mail on the draft invoice 6", connstr => $as_odoo);
	# 7. a mail with the PDF to someone else (the accountant's own partner)
	WaTest::psql_ok($node, "BEGIN; " . message_post(inv => 7, msg => 1007, type => 'comment',
			subtype => 1, partners => [1], attach => 1, mail => 1) . " COMMIT;",
		"Odoo $v: the invoice mailed to another partner than its customer", connstr => $as_odoo);

	WaTest::psql_is($node, q{
		SELECT string_agg(dedupe_key || ' ' || state || ' ' || recipient, ', ' ORDER BY id)
		  FROM whatsapp.messages;
	}, 'account.move:3:invoice_sent queued +525512345678',
		"Odoo $v: only Send records a message", dbname => $db);
	WaTest::psql_is($node, q{
		SELECT payload #>> '{template,components,0,parameters,1,text}' || ' | ' ||
			   replace(payload #>> '{template,components,0,parameters,2,text}', chr(160), '<nbsp>')
		  FROM whatsapp.messages WHERE dedupe_key = 'account.move:3:invoice_sent';
	}, 'INV/2025/00003 | $<nbsp>1,163.00', "Odoo $v: with the invoice's values", dbname => $db);
}

# Odoo 16: Send of several invoices at once.  account.invoice.send puts
# the composer in mass_mail mode (more than one invoice), and
# mail.compose.message then creates one mail.mail per invoice instead of
# posting: the mail_message is an 'email' without subtype, with the PDF
# attached, and the recipients (the template's partner_to) go to
# mail_mail_res_partner_rel.  The mails are sent in the same transaction,
# and those with auto_delete (the invoice template sets it) are deleted
# with their recipients before the commit.  Then mark_invoice_as_sent.
# (addons/account/wizard/account_invoice_send.py,
# addons/mail/wizard/mail_compose_message.py, addons/mail/models/mail_mail.py
# of 16; docs/odoo-sent-links.md.)
sub mass_mail
{
	my (%a) = @_;
	my ($inv, $msg) = @a{qw(inv msg)};
	my $created = $a{cancel} ? 'cancel' : 'outgoing';
	my $failure = $a{cancel} ? q{'mail_email_missing'} : 'NULL';
	my $auto_delete = $a{keep} ? 'false' : 'true';
	my $sql = qq{
	INSERT INTO public.ir_attachment (id, name, res_model, res_id, company_id, type, store_fname,
		file_size, checksum, mimetype, create_date)
	VALUES ($msg, 'INV_2025_000$inv.pdf', 'mail.message', 0, 1, 'binary',
		'5e/5e3f0a9c2b7d41e8a6c0f1d2e3b4a5968778695a', 48213,
		'5e3f0a9c2b7d41e8a6c0f1d2e3b4a5968778695a', 'application/pdf', now() AT TIME ZONE 'UTC');
	INSERT INTO public.mail_message (id, res_id, model, message_type, subtype_id, author_id,
		subject, body, email_from, message_id, reply_to, date, is_internal, reply_to_force_new,
		create_date, write_date)
	VALUES ($msg, $inv, 'account.move', 'email', NULL, 1,
		'Mi Empresa MX Invoice (Ref INV/2025/000$inv)',
		'<p>Dear Ana Garcia, here is your invoice INV/2025/000$inv.</p>',
		'"Mi Empresa MX" <facturas\@miempresa.example.mx>',
		'<$msg.1733200000.987654321-openerp-account.move-$inv\@erp>',
		'"Mi Empresa MX" <facturas\@miempresa.example.mx>',
		now() AT TIME ZONE 'UTC', false, false, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');
	INSERT INTO public.message_attachment_rel (message_id, attachment_id) VALUES ($msg, $msg);
	INSERT INTO public.mail_mail (id, mail_message_id, body_html, headers, "references", state,
		failure_type, auto_delete, is_notification, create_date)
	VALUES ($msg, $msg, '<p>Dear Ana Garcia, here is your invoice INV/2025/000$inv.</p>',
		'{''X-Odoo-Objects'': ''account.move-$inv''}',
		'<$msg.1733200000.987654321-openerp-account.move-$inv\@erp>', '$created', $failure,
		$auto_delete, true, now() AT TIME ZONE 'UTC');};
	for my $p (@{ $a{partners} })
	{
		$sql .= qq{
	INSERT INTO public.mail_mail_res_partner_rel (mail_mail_id, res_partner_id) VALUES ($msg, $p);};
	}
	return $sql;
}

# batch_mails_sudo.send(): each outgoing mail goes out (or fails), then
# _postprocess_sent_message deletes the auto_delete ones; a cancelled one
# is deleted without sending (auto_delete and not an exception).
sub mail_send
{
	my (%a) = @_;
	my $msg = $a{msg};
	my $sql = '';
	$sql .= qq{
	UPDATE public.mail_mail SET state = 'exception', failure_type = 'mail_smtp',
		failure_reason = 'Connection unexpectedly closed' WHERE id = $msg;} if $a{smtp_fails};
	$sql .= qq{
	UPDATE public.mail_mail SET state = 'sent', failure_reason = NULL WHERE id = $msg;} if $a{sent};
	$sql .= qq{
	DELETE FROM public.mail_mail WHERE id = $msg AND auto_delete AND state <> 'exception';};
	return $sql;
}

{
	my $as16 = $node->connstr('odoo16') . ' user=odoo';
	WaTest::psql_ok($node, q{
		INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
			currency_id, name, state, move_type, date, invoice_date, invoice_date_due,
			amount_total, amount_residual, access_token)
		SELECT g, 1, 1, 10, 10, 3, 'INV/2025/000' || g, 'posted', 'out_invoice', current_date,
			   current_date, current_date + 30, 1160 + g, 1160 + g,
			   '9a1e6c2f-3b7d-4e58-a9c0-1d2e3f4050' || g
		  FROM generate_series(11, 18) g;
	}, 'Odoo 16: eight more posted invoices', connstr => $as16);

	# 11 and 12 sent together: their mails go out and are deleted before the commit
	WaTest::psql_ok($node, 'BEGIN;'
		  . pdf_attachment(11, undef) . pdf_attachment(12, undef)
		  . mass_mail(inv => 11, msg => 2011, partners => [10])
		  . mass_mail(inv => 12, msg => 2012, partners => [10])
		  . mail_send(msg => 2011, sent => 1) . mail_send(msg => 2012, sent => 1)
		  . ' UPDATE public.account_move SET is_move_sent = true WHERE id IN (11, 12); COMMIT;',
		'Odoo 16: mass Send of INV/2025/00011 and 00012 (mails deleted after sending)', connstr => $as16);
	# 13 and 14 together, with a template that keeps its mails (auto_delete off)
	WaTest::psql_ok($node, 'BEGIN;'
		  . mass_mail(inv => 13, msg => 2013, partners => [10], keep => 1)
		  . mass_mail(inv => 14, msg => 2014, partners => [1], keep => 1)
		  . mail_send(msg => 2013, sent => 1) . mail_send(msg => 2014, sent => 1)
		  . ' UPDATE public.account_move SET is_move_sent = true WHERE id IN (13, 14); COMMIT;',
		'Odoo 16: mass Send of 00013 (kept) and 00014 mailed to another partner', connstr => $as16);
	# 15: its customer has no e-mail: the composer creates the mail cancelled, send deletes it
	# 16: the outgoing mail server fails: the mail stays, in exception
	WaTest::psql_ok($node, 'BEGIN;'
		  . mass_mail(inv => 15, msg => 2015, partners => [10], cancel => 1)
		  . mass_mail(inv => 16, msg => 2016, partners => [10])
		  . mail_send(msg => 2015) . mail_send(msg => 2016, smtp_fails => 1)
		  . ' UPDATE public.account_move SET is_move_sent = true WHERE id IN (15, 16); COMMIT;',
		'Odoo 16: mass Send of 00015 (cancelled: no e-mail) and 00016 (SMTP failure)', connstr => $as16);
	# 17: the customer answers by e-mail with a file (the mail gateway posts it, mt_comment)
	WaTest::psql_ok($node, "BEGIN; " . message_post(inv => 17, msg => 2017, type => 'email',
			subtype => 1, partners => [1], attach => 1) . " COMMIT;",
		'Odoo 16: an incoming e-mail on 00017 with an attachment', connstr => $as16);
	# 18: an e-mail without subtype and without a mail of its own (an import, say)
	WaTest::psql_ok($node, "BEGIN; " . message_post(inv => 18, msg => 2018, type => 'email',
			subtype => 'NULL', partners => [10], attach => 1) . " COMMIT;",
		'Odoo 16: an e-mail without subtype and without mail_mail on 00018', connstr => $as16);

	WaTest::psql_is($node, q{
		SELECT string_agg(dedupe_key || ' ' || state, ', ' ORDER BY id)
		  FROM whatsapp.messages WHERE dedupe_key ~ ':1[1-8]:';
	}, 'account.move:11:invoice_sent queued, account.move:12:invoice_sent queued, account.move:13:invoice_sent queued',
		'Odoo 16: a mass Send fires for each invoice mailed to its customer, nothing else does', dbname => 'odoo16');
	WaTest::psql_is($node, q{SELECT count(*) FROM public.mail_mail WHERE id IN (2011, 2012, 2015)},
		'0', 'Odoo 16: (the deleted mails are gone before the commit)', dbname => 'odoo16');
}

# 18 and 19: a batch Send is first only sending_data (the cron sends later).
my $as_odoo = $node->connstr('odoo18') . ' user=odoo';
WaTest::psql_ok($node, q{
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, invoice_date, amount_total, amount_residual,
		access_token)
	VALUES (8, 1, 1, 10, 10, 3, 'INV/2025/00008', 'posted', 'out_invoice', current_date, current_date,
			500, 500, 'd1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6');
	UPDATE public.account_move
	   SET sending_data = '{"author_user_id": 2, "author_partner_id": 3, "sending_methods": ["email"]}'
	 WHERE id = 8;
}, 'Odoo 18: a batch Send leaves sending_data for the cron', connstr => $as_odoo);
WaTest::psql_is($node, q{SELECT count(*) FROM whatsapp.messages WHERE dedupe_key = 'account.move:8:invoice_sent'},
	'0', 'Odoo 18: nothing while the batch is pending', dbname => 'odoo18');
WaTest::psql_ok($node, "BEGIN; " . $send{18}->(8) . " COMMIT;",
	'Odoo 18: the cron sends it', connstr => $as_odoo);
WaTest::psql_is($node, q{SELECT state FROM whatsapp.messages WHERE dedupe_key = 'account.move:8:invoice_sent'},
	'queued', 'Odoo 18: recorded when the cron mails it', dbname => 'odoo18');

# Sending again adds nothing (once per invoice).
WaTest::psql_ok($node, "BEGIN; " . message_post(inv => 3, msg => 1103, type => 'comment',
		subtype => 1, partners => [10], attach => 1, mail => 1) . " COMMIT;",
	'Odoo 18: INV/2025/00003 sent a second time', connstr => $as_odoo);
WaTest::psql_is($node, q{SELECT count(*) FROM whatsapp.messages WHERE dedupe_key = 'account.move:3:invoice_sent'},
	'1', 'Odoo 18: still one message', dbname => 'odoo18');

# The preview names the signal.
WaTest::psql_like($node, q{SELECT whatsapp.wa_odoo_preview('invoice_sent', 3) ->> 'fires_on'},
	qr/mail_message/, 'the preview says what fires invoice_sent', dbname => 'odoo18');

done_testing();
