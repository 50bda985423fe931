
=pod

=head1 NAME

WaMeta - Meta-shaped webhook payloads and their signatures, for TAP tests

=head1 SYNOPSIS

  use WaMeta;
  my $p = WaMeta::text_payload('14125550173', 'wamid.IN1', 'hello', 'Ana Lima');
  my $sig = WaMeta::sign($p, $app_secret);      # by openssl dgst, not the code under test
  WaMeta::receive($node, $p, $app_secret);      # SELECT whatsapp.wa_receive(...), dies on error

Payloads are those of one change of the C<messages> field, for the WABA
C<waba> and phone number id C<pnid> given to C<set_account> (defaults
2099887766 and 1099887766).

=cut

package WaMeta;

use strict;
use warnings;

use Carp;
use IPC::Run;
use WaTest;

our $WABA = '2099887766';
our $PNID = '1099887766';
our $DISPLAY = '15550001111';

sub set_account
{
	my (%o) = @_;
	$WABA = $o{waba} if defined $o{waba};
	$PNID = $o{pnid} if defined $o{pnid};
	return;
}

# A payload of one change of field "messages" whose value holds $value.
sub payload
{
	my ($value) = @_;
	return '{"object":"whatsapp_business_account","entry":[{"id":"' . $WABA
	  . '","changes":[{"field":"messages","value":{"messaging_product":"whatsapp",'
	  . '"metadata":{"display_phone_number":"' . $DISPLAY . '","phone_number_id":"'
	  . $PNID . '"},' . $value . '}}]}]}';
}

# A status of an outbound message, with Meta's pricing block.
sub status_payload
{
	my ($wamid, $status, $ts, $recipient_id, $callback) = @_;
	my $cb = defined $callback ? qq~,"biz_opaque_callback_data":"$callback"~ : '';
	return payload(qq~"statuses":[{"id":"$wamid","status":"$status","timestamp":"$ts",~
		  . qq~"recipient_id":"$recipient_id"$cb,~
		  . qq~"conversation":{"id":"c0ffee0123456789","origin":{"type":"utility"}},~
		  . qq~"pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}}]~);
}

# An inbound text message with the sender's profile name.
sub text_payload
{
	my ($wa_id, $wamid, $body, $name, $ts) = @_;
	$ts //= time();
	return payload(qq~"contacts":[{"profile":{"name":"$name"},"wa_id":"$wa_id"}],~
		  . qq~"messages":[{"from":"$wa_id","id":"$wamid","timestamp":"$ts",~
		  . qq~"type":"text","text":{"body":"$body"}}]~);
}

# X-Hub-Signature-256 of a payload, computed by openssl dgst.
sub sign
{
	my ($p, $key) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', 'dgst', '-sha256', '-hmac', $key ],
		'<', \$p, '>', \$out, '2>', \$err)
	  or croak "openssl dgst failed: $err";
	$out =~ /([0-9a-f]{64})\s*$/ or croak "no digest in: $out";
	return "sha256=$1";
}

# wa_receive of a payload signed with $key; returns its result, dies on error.
sub receive
{
	my ($node, $p, $key) = @_;
	my $sig = sign($p, $key);
	my ($rc, $out, $err) = WaTest::run_psql($node,
		"SELECT whatsapp.wa_receive(\$p\$$p\$p\$, '$sig')");
	croak "wa_receive failed: $err" if $rc;
	return $out;
}

1;
