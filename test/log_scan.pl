#!/usr/bin/perl
# test/log_scan.pl: after the whole suite, look for message bodies and
# phone numbers in the extension's own server log lines (issue 13, item 5;
# docs/privacy.md, "What the server log holds").
#
#   perl test/log_scan.pl [TREE]
#
# TREE (default: the tree this script is in) is the tree the suite ran in.
# Read there:
#   test/tmp/logs/*.log                 the regress (and isolation) and
#                                       pgTAP clusters' server logs, kept by
#                                       test/run_tests.sh
#   tmp_check/log/*.log                 every TAP cluster's server log
#   tmp_check/log/mock_received_*.jsonl what the mock Cloud API received in
#                                       the TAP tests (numbers and texts)
#   test/t, test/perl, sql, test/pgtap, test/isolation/specs
#                                       the E.164 numbers the tests write,
#                                       and the bodies of wa_send literals
# The rules are in test/perl/WaLogScan.pm.
#
# Exit status: 0 when nothing leaks; 1 when something does (each leak is
# printed with its file and line); 2 when there was nothing to scan, or no
# line of the extension's own was recognized (the logs were not written with
# log_error_verbosity = verbose, and so the scan would prove nothing).
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/perl';
use WaLogScan;

my $tree = $ARGV[0] // dirname(abs_path(__FILE__)) . '/..';
my $t0 = time;

my $scan = WaLogScan->new(repo => $tree);
my @received = glob("$tree/tmp_check/log/mock_received_*.jsonl");
$scan->add_received(@received);
$scan->add_sources(grep { -f }
	  map { glob("$tree/$_") } qw(test/t/*.pl test/perl/*.pm sql/*.sql test/pgtap/*.sql
	  test/isolation/specs/*.spec));

my @logs = (glob("$tree/test/tmp/logs/*.log"), glob("$tree/tmp_check/log/*.log"));
printf "log scan: %d numbers, %d texts (from %d mock record files and the test sources)\n",
  scalar(keys %{ $scan->{numbers} }), scalar(keys %{ $scan->{bodies} }), scalar(@received);
if (!@logs)
{
	print "log scan: no server log found under $tree/test/tmp/logs or $tree/tmp_check/log\n";
	exit 2;
}
$scan->scan_file($_) for @logs;

printf "log scan: %d server logs, %d messages at the default levels, %d of them the extension's own;"
  . " %d STATEMENT lines of wa_receive/wa_account_set errors; %d s\n",
  $scan->{files}, $scan->{entries}, $scan->{own}, $scan->{statements}, time - $t0;
for my $l (@{ $scan->{leaks} })
{
	my ($file, $line, $why, $text) = @$l;
	$file =~ s{^\Q$tree\E/}{};
	print "LEAK $file:$line: $why\n    $text\n";
}
if (@{ $scan->{leaks} })
{
	printf "log scan: %d leaks\n", scalar(@{ $scan->{leaks} });
	exit 1;
}
if (!$scan->{own})
{
	print "log scan: no line of the extension's own was recognized (is log_error_verbosity verbose?)\n";
	exit 2;
}
print "log scan: no body and no full phone number in the extension's lines\n";
exit 0;
