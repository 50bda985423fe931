
=pod

=head1 NAME

WaLogScan - find message bodies and phone numbers in the extension's own
server log lines

=head1 SYNOPSIS

  use WaLogScan;
  my $scan = WaLogScan->new(repo => $repo);         # reads src/*.c
  $scan->add_numbers('+14125550173');
  $scan->add_bodies('Your parcel PX-88213 is ready');
  $scan->add_received('tmp_check/log/mock_received_x.jsonl');
  $scan->add_sources(glob('test/t/*.pl'));
  $scan->scan_file('tmp_check/log/030_delivery_delivery.log');
  my @leaks = @{ $scan->{leaks} };                 # [file, line, why, text]

=head1 DESCRIPTION

test/log_scan.pl runs this over every server log the suite left behind
(see docs/privacy.md, "What the server log holds").  The logs must have
been written with C<log_error_verbosity = verbose>: each message then has a
C<LOCATION:> line naming the C function and file that raised it, and a
message whose function is defined in the extension's F<src/*.c> is the
extension's own.  Everything else, PostgreSQL's echo of the statements the
tests typed above all, is not looked at, with one exception: the
C<STATEMENT:> line of an error in a statement that calls C<wa_receive> or
C<wa_account_set>, whose redaction the extension promises.

Only what a server at the default levels writes counts: LOG, WARNING,
ERROR, FATAL and PANIC messages, with their DETAIL, HINT, QUERY and
CONTEXT lines; STATEMENT lines only after an ERROR, FATAL or PANIC
(log_min_error_statement = error).

A leak is, in those lines:

=over

=item * a phone number: its digits whole, or its last 7 or more digits,
as one run of digits (spaces, dots, dashes, slashes and parentheses
between digits are read through);

=item * a message body: one of the texts given, 12 characters or more with
at least 6 letters, or the first 30 characters of a longer one; a text the
extension's own source holds ("permission denied to cancel", "will fail")
is not looked for.

=back

=cut

package WaLogScan;

use strict;
use warnings;

use JSON::PP;

my $LEVELS = qr/DEBUG[1-5]?|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC/;
my $PARTS = qr/DETAIL|HINT|QUERY|CONTEXT|LOCATION|STATEMENT/;
# A line that starts a message, or one of its parts: a log_line_prefix
# beginning with "%m [%p] " (the TAP clusters' and test/regress.conf's).
my $PREFIXED = qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] (?:.*? )?($LEVELS|$PARTS):  (.*)$/;
my %DEFAULT_LEVEL = map { $_ => 1 } qw(LOG WARNING ERROR FATAL PANIC);
my %ERROR_LEVEL = map { $_ => 1 } qw(ERROR FATAL PANIC);

sub new
{
	my ($class, %o) = @_;
	my $self = bless {
		funcs => {},        # file basename => { function => 1 }
		numbers => {},      # digits => 1
		bodies => {},       # text => 1
		leaks => [],
		files => 0,
		entries => 0,       # messages at default levels
		own => 0,           # of which the extension's
		statements => 0,    # STATEMENT lines of wa_receive/wa_account_set errors
	}, $class;
	$self->add_functions(glob("$o{repo}/src/*.c")) if $o{repo};
	return $self;
}

# The functions each C file defines: in PostgreSQL's style the name starts
# its line, followed by "(".
sub add_functions
{
	my ($self, @files) = @_;
	for my $f (@files)
	{
		open my $fh, '<', $f or die "$f: $!";
		(my $base = $f) =~ s{.*/}{};
		while (my $l = <$fh>)
		{
			$self->{funcs}{$base}{$1} = 1 if $l =~ /^([A-Za-z_]\w*)\(/;
			$self->{source} .= $l;
		}
		close $fh;
	}
	return $self;
}

sub add_numbers
{
	my ($self, @n) = @_;
	for my $n (@n)
	{
		next unless defined $n;
		(my $d = $n) =~ s/\D//g;
		$self->{numbers}{$d} = 1 if length($d) >= 10 && length($d) <= 15;
		delete $self->{ends};
	}
	return $self;
}

sub add_bodies
{
	my ($self, @b) = @_;
	for my $b (@b)
	{
		next unless defined $b && !ref $b;
		$b =~ s/^\s+|\s+$//g;
		next if length($b) < 12 || ($b =~ tr/A-Za-z//) < 6;
		$b = substr($b, 0, 30) if length($b) > 30;
		# words of the extension's own ("to cancel", "will fail") are no leak
		next if defined $self->{source} && index($self->{source}, $b) >= 0;
		$self->{bodies}{$b} = 1;
	}
	return $self;
}

# The texts of a message as the Cloud API receives it: text bodies, template
# parameters, captions, interactive texts, titles and descriptions.
sub _texts
{
	my ($v, $key, $out) = @_;
	if (ref $v eq 'HASH')
	{
		_texts($v->{$_}, $_, $out) for keys %$v;
	}
	elsif (ref $v eq 'ARRAY')
	{
		_texts($_, $key, $out) for @$v;
	}
	elsif (defined $v && defined $key
		&& $key =~ /^(?:body|text|caption|title|description|footer|address)$/)
	{
		push @$out, $v;
	}
	return;
}

# A file the mock wrote with --received: one {"to":..,"json":..} a line.
sub add_received
{
	my ($self, @files) = @_;
	my $json = JSON::PP->new->utf8;
	for my $f (@files)
	{
		open my $fh, '<', $f or die "$f: $!";
		while (my $l = <$fh>)
		{
			my $r = eval { $json->decode($l) } or next;
			$self->add_numbers($r->{to});
			$self->add_numbers($r->{json}{recipient}) if ref $r->{json} eq 'HASH';
			my @t;
			# the template's name is not content; its parameters are
			_texts($r->{json}{$_}, $_, \@t)
			  for grep { $_ ne 'template' } keys %{ $r->{json} || {} };
			_texts($r->{json}{template}{components}, 'components', \@t)
			  if ref $r->{json}{template} eq 'HASH';
			$self->add_bodies(@t);
		}
		close $fh;
	}
	return $self;
}

# Test sources: every E.164 number written with its "+", and the bodies of
# wa_send calls written as literals.
sub add_sources
{
	my ($self, @files) = @_;
	for my $f (@files)
	{
		open my $fh, '<', $f or die "$f: $!";
		local $/;
		my $s = <$fh>;
		close $fh;
		$self->add_numbers($1) while $s =~ /(?<![\w+])(\+[1-9][\d ().\-]{8,22}\d)(?!\d)/g;
		while ($s =~ /wa_send\s*\(\s*'[^']*'\s*,\s*'((?:[^']|'')+)'/g)
		{
			(my $b = $1) =~ s/''/'/g;
			$self->add_bodies($b);
		}
	}
	return $self;
}

# What in $text is a leak, or undef.
sub leak_in
{
	my ($self, $text) = @_;
	for my $b (keys %{ $self->{bodies} })
	{
		return "a message body (\"$b\")" if index($text, $b) >= 0;
	}
	# every ending of 7 digits or more of every number
	if (!$self->{ends})
	{
		for my $d (keys %{ $self->{numbers} })
		{
			$self->{ends}{ substr($d, -$_) } = $d for 7 .. length($d);
		}
	}
	while ($text =~ /(\d(?:[\d .()\/-]*\d)?)/g)
	{
		(my $r = $1) =~ s/\D//g;
		next if length($r) < 7;
		# a number's last digits, or a whole number inside the run
		return "a phone number (+$self->{ends}{$r})" if $self->{ends}{$r};
		for my $i (10 .. length($r))
		{
			for my $len (10 .. ($i < 15 ? $i : 15))
			{
				my $d = substr($r, $i - $len, $len);
				return "a phone number (+$d)" if $self->{numbers}{$d};
			}
		}
	}
	return undef;
}

sub _finish
{
	my ($self, $e) = @_;
	return unless $e && $e->{level} && $DEFAULT_LEVEL{ $e->{level} };
	$self->{entries}++;
	my $own = 0;
	for my $p (@{ $e->{parts} })
	{
		next unless $p->[0] eq 'LOCATION';
		if ($p->[1] =~ /^(\w+), (?:[^\n]*\/)?([^\/\n]+):\d+/)
		{
			$own = 1 if $self->{funcs}{$2} && $self->{funcs}{$2}{$1};
		}
	}
	$self->{own}++ if $own;
	for my $p (@{ $e->{parts} })
	{
		my ($tag, $text) = @$p;
		my $look;
		if ($tag eq 'STATEMENT')
		{
			$look = $ERROR_LEVEL{ $e->{level} } && $text =~ /\bwa_(?:receive|account_set)\b/i;
			$self->{statements}++ if $look;
		}
		elsif ($tag ne 'LOCATION')
		{
			$look = $own;
		}
		next unless $look;
		$text =~ s/^[0-9A-Z]{5}: // if $tag eq $e->{level};   # the SQLSTATE
		my $why = $self->leak_in($text) or next;
		push @{ $self->{leaks} }, [ $e->{file}, $e->{line}, $why,
			"$tag:  " . (length($text) > 300 ? substr($text, 0, 300) . '...' : $text) ];
	}
	return;
}

# Reads one server log; adds what it finds to $self->{leaks}.
sub scan_file
{
	my ($self, $file) = @_;
	open my $fh, '<', $file or die "$file: $!";
	$self->{files}++;
	my $e;
	my $n = 0;
	while (my $l = <$fh>)
	{
		$n++;
		chomp $l;
		if ($l =~ /^\d{4}-/ && $l =~ $PREFIXED)
		{
			my ($pid, $tag, $text) = ($1, $2, $3);
			if ($tag =~ /^(?:$LEVELS)$/ || !$e || $e->{pid} ne $pid)
			{
				$self->_finish($e);
				$e = { pid => $pid, file => $file, line => $n,
					level => ($tag =~ /^(?:$LEVELS)$/ ? $tag : undef), parts => [] };
			}
			push @{ $e->{parts} }, [ $tag, $text ];
		}
		elsif ($e && @{ $e->{parts} })
		{
			# a message or statement of more than one line
			$e->{parts}[-1][1] .= "\n$l" if length($e->{parts}[-1][1]) < 1_000_000;
		}
	}
	$self->_finish($e);
	close $fh;
	return $self;
}

1;
