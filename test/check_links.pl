#!/usr/bin/perl
# test/check_links.pl: the documentation's links and paths resolve.
#
#   perl test/check_links.pl [ROOT]
#
# ROOT is the tree to check (default: the one this script is in).  Checks
# README.md, every .md file under docs/ and bench/README.md:
#
#   - every relative link, [text](path), [text](path#anchor), [text](#anchor)
#     and reference definitions [name]: path, names a file or directory that
#     exists in ROOT, and its anchor a heading of that Markdown file, by
#     GitHub's rule: the heading's text without markup, lower case, every
#     character but letters, digits, '_', '-' and spaces dropped, each space
#     a '-', and -1, -2, ... for the second, third, ... heading of one slug;
#   - every repository path the text names (in code spans, code blocks and
#     link texts: `src/worker.c`, bash bench/webhook.sh, test/t/*.pl) exists:
#     a path whose first part is a top-level directory of ROOT must exist
#     there (globs must match something), and a file name or path with a
#     source extension must exist somewhere in ROOT (a bare .py or .js name
#     is not checked), unless it is one of the few paths of other projects
#     listed below (Odoo's source and addons).
#
# A path listed in test/docs_pending.txt (one a line, relative to ROOT) is
# a file that another branch is adding: while it is missing, links and
# names that point at it are counted as pending, not as problems; once it
# exists it is checked like any other, and the checker says that its line
# can go.
#
# Links to other sites (http:, https:, mailto:) are not followed.  Prints
# one line per problem, "FILE:LINE: what", and exits 1 when there is any.
use strict;
use warnings;
use utf8;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Find;
use File::Spec;

binmode(STDOUT, ':encoding(UTF-8)');
binmode(STDERR, ':encoding(UTF-8)');

my $root = abs_path($ARGV[0] // dirname(abs_path(__FILE__)) . '/..');

# Paths that the docs name and that are not this repository's, on purpose.
my @foreign = (
	qr{^odoo/},      # Odoo's own source (odoo/tools/misc.py)
	qr{^addons/},    # Odoo's addons (addons/account/...), and where the
	                 # example Odoo module is copied to (addons/whatsapp_pg)
	qr{X\.Y},                       # a placeholder version
);

# Extensions of the files a name refers to.  A bare name (no '/') is
# checked only with the extensions of this project's own sources: a bare
# .py or .js name is as likely Odoo's or Node's (account_move_send.py).
my $srcext = qr/\.(?:c|h|sql|out|spec|pl|pm|sh|py|js|md)$/;
my $ownext = qr/\.(?:c|h|sql|out|spec|pl|pm|sh|md)$/;

my @docs = ('README.md', 'bench/README.md');
find(
	{
		wanted => sub { push @docs, File::Spec->abs2rel($_, $root) if /\.md$/ && -f $_; },
		no_chdir => 1
	},
	"$root/docs") if -d "$root/docs";
@docs = grep { -f "$root/$_" } @docs;

# Every file of the tree by base name, and the top-level directories.
my (%basename, %top);
find(
	{
		wanted => sub {
			my $rel = File::Spec->abs2rel($File::Find::name, $root);
			if (-d $_ && $rel =~ m{^(?:\.git|tmp_check|results|log|test/tmp)$})
			{
				$File::Find::prune = 1;
				return;
			}
			$basename{$_} = 1 if -f $File::Find::name;
		},
	},
	$root);
opendir(my $dh, $root) or die "cannot read $root: $!";
for my $e (readdir $dh)
{
	next if $e =~ /^\.\.?$/ || $e eq '.git';
	$top{$e} = 1 if -d "$root/$e";
}
closedir $dh;

my (@problems, %pending, %pending_seen);
my %slugs_cache;

if (open(my $ph, '<', "$root/test/docs_pending.txt"))
{
	while (my $l = <$ph>)
	{
		$l =~ s/#.*//;
		$l =~ s/^\s+|\s+$//g;
		$pending{$l} = 1 if $l ne '';
	}
	close $ph;
}

# Is $abs (an absolute path in ROOT) a pending file that is still missing?
sub is_pending
{
	my ($abs) = @_;
	my $rel = File::Spec->abs2rel($abs, $root);
	return 0 unless $pending{$rel} && !-e $abs;
	$pending_seen{$rel}++;
	return 1;
}

sub slurp
{
	my ($path) = @_;
	open(my $fh, '<:encoding(UTF-8)', $path) or die "cannot read $path: $!";
	local $/;
	my $t = <$fh>;
	close $fh;
	return $t;
}

# The anchors GitHub makes for the headings of a Markdown file.
sub slugs
{
	my ($file) = @_;
	return $slugs_cache{$file} if $slugs_cache{$file};
	my (%seen, %slugs);
	my $fence = '';
	for my $line (split /\n/, slurp($file))
	{
		if ($line =~ /^\s{0,3}(```|~~~)/)
		{
			$fence = $fence ? '' : $1;
			next;
		}
		next if $fence;
		next unless $line =~ /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/;
		my $text = $1;
		$text =~ s/!?\[([^\]]*)\]\([^)]*\)/$1/g;    # links: their text
		$text =~ s/<[^>]+>//g;                       # HTML tags
		my $slug = lc $text;
		$slug =~ s/[^\p{Word}\- ]//g;
		$slug =~ s/ /-/g;
		my $n = $seen{$slug}++;
		$slugs{$n ? "$slug-$n" : $slug} = 1;
	}
	return $slugs_cache{$file} = \%slugs;
}

sub problem { push @problems, sprintf('%s:%d: %s', @_); }

sub check_path_token
{
	my ($doc, $ln, $tok, $in_block) = @_;
	$tok =~ s/[.,:;)]+$//;
	$tok =~ s{^\./}{};
	return if $tok eq '' || $tok =~ m{^\.\.\./};
	return if grep { $tok =~ $_ } @foreign;
	my ($first) = split m{/}, $tok;
	if ($tok =~ m{/} && $top{$first})
	{
		return if is_pending("$root/$tok");
		my @m = $tok =~ /[*?\[]/ ? glob("$root/$tok") : ("$root/$tok");
		problem($doc, $ln, "names $tok, which is not in the repository")
		  unless grep { -e $_ } @m;
	}
	elsif ($tok =~ $srcext && $tok !~ /[*?]/
		&& ($tok =~ m{/} || (!$in_block && $tok =~ $ownext)))
	{
		my $base = $tok;
		$base =~ s{.*/}{};
		problem($doc, $ln, "names $tok, which is not in the repository")
		  unless $tok !~ m{/} ? $basename{$base} : -e "$root/$tok";
	}
	return;
}

# Path-like words of a code span, or of a line of a code block ($in_block:
# there a bare file name may be one the code makes, and is not checked).
sub check_code
{
	my ($doc, $ln, $code, $in_block) = @_;
	while ($code =~ m{(?<![\w./~\$\{<>-])((?:\./)?[A-Za-z0-9_][A-Za-z0-9_.*-]*(?:/[A-Za-z0-9_.*-]+)*/?)}g)
	{
		my $tok = $1;
		# Only words that look like a path or a file name.
		next unless $tok =~ m{/} || $tok =~ $srcext;
		next if $tok =~ m{^\d} || $tok =~ m{^[A-Z]+/\d};    # HTTP/2, 3/4
		next if $tok =~ m{^(?:text|application)/};          # media types
		check_path_token($doc, $ln, $tok, $in_block);
	}
	return;
}

sub check_link
{
	my ($doc, $ln, $target) = @_;
	$target =~ s/^<(.*)>$/$1/;
	$target =~ s/\s+"[^"]*"$//;    # a title
	return if $target =~ m{^[a-z][a-z0-9+.-]*:}i;    # http:, https:, mailto:
	my ($path, $anchor) = $target =~ /^([^#]*)(?:#(.*))?$/;
	my $file;
	if ($path eq '')
	{
		$file = "$root/$doc";
	}
	else
	{
		if ($path =~ m{^/})
		{
			problem($doc, $ln, "links to $path: an absolute path, not relative to the file");
			return;
		}
		$file = File::Spec->canonpath(dirname("$root/$doc") . "/$path");
		1 while $file =~ s{/[^/]+/\.\./}{/};
		if (index("$file/", "$root/") != 0)
		{
			problem($doc, $ln, "links to $path, outside the repository");
			return;
		}
		return if is_pending($file);
		if (!-e $file)
		{
			problem($doc, $ln, "links to $path, which does not exist");
			return;
		}
	}
	if (defined $anchor && $anchor ne '')
	{
		if (!-f $file || $file !~ /\.md$/)
		{
			problem($doc, $ln, "links to #$anchor in $path, which is not a Markdown file");
		}
		elsif (!slugs($file)->{$anchor})
		{
			problem($doc, $ln,
				"links to #$anchor" . ($path eq '' ? '' : " in $path")
				  . ", which is no heading there");
		}
	}
	return;
}

for my $doc (@docs)
{
	my @lines = split /\n/, slurp("$root/$doc");
	my $fence = '';
	for my $i (0 .. $#lines)
	{
		my $ln = $i + 1;
		my $line = $lines[$i];
		if ($line =~ /^\s*(```|~~~)/)
		{
			$fence = $fence ? '' : $1;
			next;
		}
		if ($fence)
		{
			check_code($doc, $ln, $line, 1);
			next;
		}
		# Code spans: their paths, then out of the way of the links.
		my $rest = $line;
		while ($rest =~ /(`+)(.+?)\1/g)
		{
			check_code($doc, $ln, $2);
		}
		$rest =~ s/(`+)(.+?)\1/ /g;
		while ($rest =~ /!?\[([^\]]*)\]\(([^()\s]*(?:\([^()]*\)[^()\s]*)*(?:\s+"[^"]*")?)\)/g)
		{
			check_link($doc, $ln, $2);
		}
		if ($rest =~ /^\s{0,3}\[[^\]]+\]:\s+(\S+)/)
		{
			check_link($doc, $ln, $1);
		}
	}
	# A link split across lines: [text\nmore](target).
	# (Code blocks and spans are blanked, keeping their newlines.)
	my $all = slurp("$root/$doc");
	$all =~ s/(^\s*(```|~~~).*?^\s*\2[^\n]*$)/"\n" x (() = $1 =~ m{\n}g)/gmse;
	$all =~ s/(`+)(.+?)\1/"\n" x (() = $2 =~ m{\n}g)/gse;
	while ($all =~ /\[([^\]]*\n[^\]]*)\]\(([^()\s]+)\)/g)
	{
		my ($target, $at) = ($2, $-[0]);
		my $ln = 1 + (() = substr($all, 0, $at) =~ /\n/g);
		check_link($doc, $ln, $target);
	}
}

print "$_\n" for @problems;
for my $p (sort keys %pending)
{
	if (-e "$root/$p")
	{
		print "note: $p exists now; its line in test/docs_pending.txt can go\n";
	}
	elsif ($pending_seen{$p})
	{
		print "pending: $p, named $pending_seen{$p} time(s), is not in the tree yet\n";
	}
}
printf "%d files checked, %d problems\n", scalar @docs, scalar @problems;
exit(@problems ? 1 : 0);
