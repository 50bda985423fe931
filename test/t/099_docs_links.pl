# 099_docs_links.pl: every relative link, anchor and repository path in
# README.md, docs/ and bench/README.md resolves (test/check_links.pl).
#
# The checker runs on the tree under test, then on a copy of its
# documentation with one of each kind of mistake planted, and must name
# each of them: a link to a missing file, an anchor that is no heading
# (in the same file and in another), a path in a code span that is not in
# the repository, a link split across two lines, and a heading whose slug
# needs GitHub's rules (punctuation dropped, spaces kept as '-', a second
# heading of the same text getting "-1"); and a link to a file that
# test/docs_pending.txt lists, which is pending while it is missing.
use strict;
use warnings;

use File::Copy qw(copy);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $checker = "$repo/test/check_links.pl";

sub check
{
	my ($root) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ $^X, $checker, $root ], '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

# --- 1. The tree under test ---------------------------------------------------
{
	my ($rc, $out, $err) = check($repo);
	is($rc, 0, 'every link, anchor and path in the documentation resolves')
	  or diag($out);
	is($err, '', 'the checker printed no warning');
	like($out, qr/^(\d+) files checked, 0 problems$/m, 'it says so');
	my ($n) = $out =~ /^(\d+) files checked/m;
	cmp_ok($n // 0, '>=', 9, 'README.md, bench/README.md and the files of docs/ were checked');
}

# --- 2. A copy with mistakes planted -------------------------------------------
my $root = tempdir('wa_links_XXXXXX', TMPDIR => 1, CLEANUP => 1);
make_path("$root/docs", "$root/bench", "$root/src", "$root/test/t");
for my $f ('README.md', 'bench/README.md', glob("$repo/docs/*.md"))
{
	my $rel = $f;
	$rel =~ s{^\Q$repo\E/}{};
	copy("$repo/$rel", "$root/$rel") or die "copy $rel: $!";
}
# Files the copied docs name, so that only the planted mistakes are reported.
for my $f (`cd '$repo' && find . -path ./.git -prune -o -path ./test/tmp -prune -o -path ./tmp_check -prune -o -type f -print`)
{
	chomp $f;
	$f =~ s{^\./}{};
	next if $f =~ /\.md$/ && ($f eq 'README.md' || $f =~ m{^(?:docs|bench)/[^/]+\.md$});
	my $dir = $f =~ m{^(.*)/} ? $1 : '';
	make_path("$root/$dir") if $dir ne '';
	copy("$repo/$f", "$root/$f") or die "copy $f: $!";
}
{
	my ($rc, $out) = check($root);
	is($rc, 0, 'the unchanged copy passes') or diag($out);
}

PostgreSQL::Test::Utils::append_to_file("$root/test/docs_pending.txt", "docs/future-topic.md\n");
PostgreSQL::Test::Utils::append_to_file("$root/docs/security.md", <<'EOF');

## Keys — and “rotation”: a test

## Keys — and “rotation”: a test

Links: [a missing file](missing.md), [no such heading](#no-such-heading),
[a heading of another file](webhooks.md#no-such-section),
[the second heading](#keys--and-rotation-a-test-1),
[a third that does not exist](#keys--and-rotation-a-test-2),
[split across
lines](reliability.md#not-there-either), and a path in a code span:
`src/no_such_file.c`, `test/t/*.nothing`, and `notes/elsewhere.md`.
A file another branch adds (test/docs_pending.txt): [a future topic](future-topic.md).
EOF
{
	my ($rc, $out) = check($root);
	isnt($rc, 0, 'the checker fails on the copy with planted mistakes');
	like($out, qr{^docs/security\.md:\d+: links to missing\.md, which does not exist$}m,
		'a link to a missing file');
	like($out, qr{^docs/security\.md:\d+: links to #no-such-heading, which is no heading there$}m,
		'an anchor that is no heading of the same file');
	like($out,
		qr{^docs/security\.md:\d+: links to #no-such-section in webhooks\.md, which is no heading there$}m,
		'an anchor that is no heading of another file');
	unlike($out, qr{#keys--and-rotation-a-test-1,}, 'a second heading of one text is "-1"');
	like($out, qr{#keys--and-rotation-a-test-2, which is no heading there}m,
		'and there is no "-2" for two headings');
	like($out,
		qr{^docs/security\.md:\d+: links to #not-there-either in reliability\.md, which is no heading there$}m,
		'a link split across two lines');
	like($out, qr{names src/no_such_file\.c, which is not in the repository}, 'a missing source file');
	like($out, qr{names test/t/\*\.nothing, which is not in the repository}, 'a glob that matches nothing');
	like($out, qr{names notes/elsewhere\.md, which is not in the repository},
		'a path outside the repository');
	like($out, qr/^pending: docs\/future-topic\.md, named 1 time\(s\), is not in the tree yet$/m,
		'a link to a file listed in test/docs_pending.txt is pending, not a problem');
	like($out, qr/^\d+ files checked, 8 problems$/m, 'exactly those 8 problems');
}

done_testing();
