/*-------------------------------------------------------------------------
 *
 * wafuzz.c
 *	  Fuzz driver for the whatsapp extension's input parsers, run against a
 *	  real PostgreSQL server through libpq.
 *
 *	  wafuzz webhook    mutated Meta payloads, each signed correctly with
 *	                    the main account's app secret, into wa_receive()
 *	  wafuzz signature  mutated X-Hub-Signature-256 headers for fixed
 *	                    payloads, into wa_receive()
 *	  wafuzz phone      mutated phone numbers and country codes, into
 *	                    normalize_phone(), _identity_forms() and wa_send()
 *
 * Inputs are made here from the seed corpus (test/fuzz/corpus) by stacked
 * mutations, sent in batches as binary text[] parameters, and run one by
 * one by the plpgsql functions of test/fuzz/setup.sql, each input in its
 * own subtransaction, so that an error is one outcome and not the end of
 * the batch.  Those functions return one row per input: "ok" or the
 * SQLSTATE, or a "P_..." code when a property checked on the server side
 * does not hold.  Every outcome is counted.  What is expected:
 *
 *	  webhook	  "ok" (whatever was applied), 22P02 (not JSON); every
 *				  payload is signed right, so 28000 is a finding
 *	  signature   "ok" exactly when the header is "sha256=" and the 64 hex
 *				  digits, in either case, of the payload's HMAC under the
 *				  app secret of an active account; 28000 otherwise
 *	  phone		  "ok"; 22023 when the country code argument is refused
 *				  (and then for a valid number too: P_CC otherwise); the
 *				  properties of fuzz.phone() in setup.sql
 *
 * Anything else is a finding: its input is saved, and the exit status is 1.
 *
 * A lost connection is a crash (the backend died: a signal, an assertion
 * failure of a --enable-cassert build); the batch is written to the output
 * directory, the driver reconnects once the server has recovered, and
 * replays the batch one input at a time to find the one that kills the
 * backend.  A statement timeout is a hang and is handled the same way.
 * Outcomes that are not expected for the mode, and property failures, are
 * written to the output directory too.
 *
 * Exit status: 0 all expected; 1 an unexpected outcome or a property
 * failure; 2 a crash or a hang; 3 a usage or setup error.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define TEXTARRAYOID 1009

/* ----------------------------------------------------------------------
 * Small utilities
 * ---------------------------------------------------------------------- */

static void
die(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fprintf(stderr, "wafuzz: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(3);
}

static void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		die("out of memory (%zu bytes)", n);
	return p;
}

static void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		die("out of memory (%zu bytes)", n);
	return p;
}

static char *
xstrdup(const char *s)
{
	size_t		n = strlen(s);
	char	   *p = xmalloc(n + 1);

	memcpy(p, s, n + 1);
	return p;
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* splitmix64: small, fast, and reproducible from the seed */
static uint64_t rng_state;

static uint64_t
rng_next(void)
{
	uint64_t	z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* uniform in [0, n), n > 0 */
static size_t
rnd(size_t n)
{
	return n ? (size_t) (rng_next() % n) : 0;
}

/* true with probability num/den */
static bool
chance(int num, int den)
{
	return (int) rnd(den) < num;
}

/* A length that is mostly small and sometimes huge. */
static size_t
rnd_len(void)
{
	switch (rnd(10))
	{
		case 0:
			return 1000 + rnd(100000);
		case 1:
			return 100 + rnd(1000);
		default:
			return 1 + rnd(40);
	}
}

#define lengthof(a) (sizeof(a) / sizeof((a)[0]))
#define PICK(a) ((a)[rnd(lengthof(a))])

/* ----------------------------------------------------------------------
 * Byte buffers
 * ---------------------------------------------------------------------- */

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static void
buf_reserve(Buf *b, size_t need)
{
	if (need + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 256;

		while (cap < need + 1)
			cap *= 2;
		b->data = xrealloc(b->data, cap);
		b->cap = cap;
	}
}

static void
buf_set(Buf *b, const char *s, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data, s, n);
	b->len = n;
	b->data[n] = '\0';
}

static void
buf_append(Buf *b, const char *s, size_t n)
{
	buf_reserve(b, b->len + n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
buf_appends(Buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

static void
buf_printf(Buf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_reserve(b, b->len + n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, n + 1, fmt, ap);
	va_end(ap);
	b->len += n;
}

/* Replace bytes [at, at+del) by s[0..n). */
static void
buf_splice(Buf *b, size_t at, size_t del, const char *s, size_t n)
{
	if (at > b->len)
		at = b->len;
	if (del > b->len - at)
		del = b->len - at;
	buf_reserve(b, b->len - del + n);
	memmove(b->data + at + n, b->data + at + del, b->len - at - del);
	if (n)
		memcpy(b->data + at, s, n);
	b->len = b->len - del + n;
	b->data[b->len] = '\0';
}

static void
buf_insert(Buf *b, size_t at, const char *s, size_t n)
{
	buf_splice(b, at, 0, s, n);
}

/* s repeated until n bytes */
static void
buf_repeat(Buf *b, const char *s, size_t n)
{
	size_t		sl = strlen(s);

	b->len = 0;
	if (sl == 0)
		n = 0;
	buf_reserve(b, n);
	for (size_t i = 0; i < n; i++)
		b->data[i] = s[i % sl];
	b->len = n;
	b->data[n] = '\0';
}

static void
put32(Buf *b, uint32_t v)
{
	char		c[4] = {(char) (v >> 24), (char) (v >> 16), (char) (v >> 8), (char) v};

	buf_append(b, c, 4);
}

/* ----------------------------------------------------------------------
 * Encodings: the server accepts text only as valid in the client encoding,
 * without NUL, so every input is made valid before it is sent (invalid
 * bytes are replaced; the parsers would never see them).  In UTF-8 that is
 * PostgreSQL's UTF-8 rules; in a single-byte encoding (-E LATIN1, for a
 * LATIN1 database) every byte but NUL is a character, so the parsers get
 * arbitrary bytes.
 * ---------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (PostgreSQL's rules), or 0. */
static int
utf8_valid_len(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0];
	int			n;
	unsigned char lo = 0x80,
				hi = 0xBF;

	if (c == 0)
		return 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
	{
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	}
	else
		return 0;
	if ((size_t) n > avail)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (int i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return n;
}

static bool client_utf8 = true;	/* false: -E names a single-byte encoding */

static void
utf8_sanitize(Buf *b)
{
	size_t		i = 0;

	if (!client_utf8)
	{
		/* every byte but NUL is a character of a single-byte encoding */
		for (i = 0; i < b->len; i++)
			if (b->data[i] == '\0')
				b->data[i] = "?x 9\"{}"[rnd(7)];
		return;
	}
	while (i < b->len)
	{
		int			n = utf8_valid_len((unsigned char *) b->data + i, b->len - i);

		if (n == 0)
		{
			b->data[i] = "?x 9\"{}"[rnd(7)];
			n = 1;
		}
		i += n;
	}
}

/* ----------------------------------------------------------------------
 * Seeds and dictionaries
 * ---------------------------------------------------------------------- */

typedef struct StrList
{
	char	  **items;
	size_t	   *lens;
	int			n;
	int			cap;
} StrList;

static void
list_add(StrList *l, const char *s, size_t n)
{
	if (l->n == l->cap)
	{
		l->cap = l->cap ? l->cap * 2 : 64;
		l->items = xrealloc(l->items, sizeof(char *) * l->cap);
		l->lens = xrealloc(l->lens, sizeof(size_t) * l->cap);
	}
	l->items[l->n] = xmalloc(n + 1);
	memcpy(l->items[l->n], s, n);
	l->items[l->n][n] = '\0';
	l->lens[l->n] = n;
	l->n++;
}

/* One seed a line; blank lines and lines starting with '#' skipped. */
static void
load_lines(const char *path, StrList *l, bool keep_comments)
{
	FILE	   *f = fopen(path, "r");
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		n;

	if (f == NULL)
		die("cannot open %s: %s", path, strerror(errno));
	while ((n = getline(&line, &cap, f)) >= 0)
	{
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (!keep_comments && (n == 0 || line[0] == '#'))
			continue;
		list_add(l, line, n);
	}
	free(line);
	fclose(f);
	if (l->n == 0)
		die("no seeds in %s", path);
}

/* JSON values that put a wrong or odd type where a value was. */
static const char *const json_values[] = {
	"null", "true", "false", "0", "-0", "1", "-1", "1.5", "1e400", "-1e400",
	"1E2", "0.0000001", "123456789012345678901234567890",
	"2147483647", "2147483648", "-2147483648", "-2147483649",
	"9223372036854775807", "9223372036854775808", "4102444800", "4102444801",
	"1749416383", "131050", "131047", "132000", "132999", "133000", "130429",
	"\"\"", "\"x\"", "\" \"", "[]", "{}", "[null]", "[[]]", "[{}]", "{\"\":null}",
	"\"131050\"", "\"1749416383\"", "\"-1\"", "\"0\"", "\"00012\"", "\"1.5\"",
	"\"1e9\"", "\"0x10\"", "\" 1749416383\"", "\"1749416383 \"",
	"\"99999999999999999999\"", "\"9223372036854775807\"",
	"\"9223372036854775808\"", "\"4102444801\"",
	"\"sent\"", "\"delivered\"", "\"read\"", "\"played\"", "\"failed\"",
	"\"deleted\"", "\"warning\"", "\"messages\"", "\"user_preferences\"",
	"\"message_template_status_update\"", "\"template_category_update\"",
	"\"smb_message_echoes\"", "\"history\"", "\"account_update\"",
	"\"whatsapp_business_account\"", "\"page\"",
	"\"text\"", "\"button\"", "\"interactive\"", "\"reaction\"", "\"image\"",
	"\"location\"", "\"contacts\"", "\"order\"", "\"system\"", "\"unsupported\"",
	"\"STOP\"", "\"stop\"", "\"BAJA\"", "\"Baja.\"", "\"PARAR\"", "\"SAIR\"",
	"\"START\"", "\"ALTA\"", "\"Cancelar suscripción\"", "\"¡¡¡BAJA!!!\"",
	"\"S T O P\"", "\"stop 🛑\"", "\"ＳＴＯＰ\"", "\"marketing_messages\"",
	"\"resume\"", "\"MARKETING\"", "\"utility\"", "\"AUTHENTICATION\"",
	"\"APPROVED\"", "\"REJECTED\"",
	"\"106540352242922\"", "\"102290129340398\"", "\"109876543210987\"",
	"\"104938271650432\"", "\"113355779900112\"", "\"115599337711004\"",
	"106540352242922", "102290129340398",
	"\"5215512345678\"", "\"525512345678\"", "\"5511912345678\"",
	"\"551181234567\"", "\"5491123456789\"", "\"541123456789\"",
	"\"14155552671\"", "\"16505551234\"", "\"+5215512345678\"",
	"\"00000000000000000000000000\"", "\"5215512345678 \"", "\"52-155-1234\"",
	"\"MX.1234567890123456\"", "\"US.9876543210\"", "\"a b\"",
	"\"wamid.HBgNNTIxNTUxMjM0NTY3OBUCABEYEkZVWlowMDAxQUE=\"",
	"\"wamid.HBgNNTIxNTUxMjM0NTY3OBUCABEYEkZVWlowMDMxQUE=\"",
	"\"wamid.HBgNNTUxMTkxMjM0NTY3OBUCABEYEkZVWlowMDM2QUE=\"",
	"\"wamid.HBgLMTQxNTU1NTI2NzEVAgARGBJTRUNPTkQwMDQxQUEA\"",
	"\"1\"", "\"2\"", "\"5\"", "\"11\"", "\"31\"", "\"36\"", "\"41\"", "\"42\"",
	"\"999999\"", "\"1 \"", "\"+1\"", "\"01\"",
	"\"\\u0000\"", "\"a\\u0000b\"", "\"\\ud800\"", "\"\\udfff\"",
	"\"\\ud83d\\ude00\"", "\"\\u00e9\"", "\"\\u202e\"", "\"\\uFEFF\"",
	"\"\\\\\"", "\"\\\"\"", "\"\\/\"", "\"\\b\\f\\n\\r\\t\"", "\"\\x\"",
	"\"\\u12\"", "\"%s%n%x%d\"", "\"'; DROP TABLE whatsapp.message; --\"",
	"\"$1\"", "\"\\u0053TOP\"",
};

static const char *const json_keys[] = {
	"object", "entry", "id", "changes", "field", "value", "messaging_product",
	"metadata", "display_phone_number", "phone_number_id", "statuses", "status",
	"timestamp", "recipient_id", "recipient_user_id", "biz_opaque_callback_data",
	"conversation", "origin", "type", "expiration_timestamp", "pricing",
	"billable", "pricing_model", "category", "errors", "code", "title",
	"message", "error_data", "details", "href", "contacts", "profile", "name",
	"wa_id", "user_id", "parent_user_id", "username", "messages", "from",
	"from_user_id", "text", "body", "context", "forwarded", "button",
	"payload", "interactive", "button_reply", "list_reply", "nfm_reply",
	"reaction", "message_id", "emoji", "image", "caption", "filename",
	"mime_type", "sha256", "document", "audio", "video", "sticker",
	"location", "latitude", "longitude", "address", "order", "system",
	"new_wa_id", "unsupported", "user_preferences", "detail",
	"message_template_name", "message_template_language", "event",
	"new_category", "previous_category", "reason", "ban_info",
	"message_echoes", "formatted_name", "", "Statuses", "statuses ",
	"\\u0073tatuses", "\\u0000", "id\\u0000", "ÿ",
};

/* Strings that replace the content of a JSON string. */
static const char *const string_contents[] = {
	"", " ", "STOP", "stop", "Stop!", "BAJA", "baja", "PARAR", "SAIR",
	"ALTA", "START", "Cancelar suscripción", "cancelar suscripcion",
	"DÉSABONNER", "Æ", "Þ", "ß", "Ĳ", "Œ", "İ", "ı", "ǅ",
	"\\u0000", "\\ud800", "\\udc00", "\\ud800\\udc00", "\\ud83d\\ude00",
	"\\u00e9", "\\u202e", "\\ufeff", "\\u0301", "e\\u0301",
	"\\\\", "\\\"", "\\/", "\\b\\f\\n\\r\\t", "\\u",
	"🛑", "👍🏽", "e\xcc\x81", "\xef\xbb\xbf", "\xe2\x80\x8b", "\xe3\x80\x80",
	"\xd8\xa7\xd9\x84\xd8\xba\xd8\xa7\xd8\xa1", "中文",
	"%s%s%s%n", "%.99999d", "'", "''", "\\'", "$$", "\\x00", "NULL",
	"wamid.", "wamid.HBgNNTIxNTUxMjM0NTY3OBUCABEYEkZVWlowMDAxQUE=",
	"1", "31", "36", "41", "0", "-1", "9223372036854775807",
	"18446744073709551616", "1749416383", "4102444801", "0001749416383",
	"5215512345678", "+52 1 55 1234 5678", "5511912345678", "5491123456789",
	"14155552671", "123", "0000000000", "99999999999999999999999",
	"MX.1234567890123456", "106540352242922", "109876543210987",
};

/* Bytes and tokens inserted by the byte-level mutations. */
static const char *const tokens[] = {
	"{", "}", "[", "]", "\"", ":", ",", "\\", "\\u", "\\u0000", "null",
	"true", "-", "0", "1e999", " ", "\n", "\t", "\"\":", "{}", "[]",
	"\"statuses\":[", "\"messages\":[", "\"id\":", "\"status\":",
	"\"timestamp\":", "\"errors\":[{\"code\":", "\xf0\x9f\x9b\x91", "\xc3\xa9",
	"\xef\xbb\xbf", "\xe2\x80\xae", "\x7f", "\x01", "\x1b[0m",
};

/* ----------------------------------------------------------------------
 * A tolerant JSON scanner: the spans of the values of a document, for the
 * mutations that respect the structure.  Returns false when the text is
 * not JSON (then only byte-level mutations apply).
 * ---------------------------------------------------------------------- */

typedef struct Span
{
	size_t		start;			/* the value: [start, end) */
	size_t		end;
	size_t		mstart;			/* the member ("key": value) or element */
	long		kstart;			/* the key with its quotes, -1 when none */
	size_t		kend;
	char		type;			/* o a s n l */
	int			depth;
} Span;

typedef struct Spans
{
	Span	   *v;
	int			n;
	int			cap;
} Spans;

#define SCAN_MAX_DEPTH	200
#define SCAN_MAX_SPANS	20000

typedef struct Scanner
{
	const char *s;
	size_t		len;
	size_t		p;
	Spans	   *out;
} Scanner;

static void
scan_ws(Scanner *sc)
{
	while (sc->p < sc->len && (sc->s[sc->p] == ' ' || sc->s[sc->p] == '\t' ||
							   sc->s[sc->p] == '\n' || sc->s[sc->p] == '\r'))
		sc->p++;
}

static bool
scan_string(Scanner *sc)
{
	if (sc->p >= sc->len || sc->s[sc->p] != '"')
		return false;
	sc->p++;
	while (sc->p < sc->len)
	{
		char		c = sc->s[sc->p];

		if (c == '\\')
			sc->p += 2;
		else if (c == '"')
		{
			sc->p++;
			return true;
		}
		else
			sc->p++;
	}
	return false;
}

static int
add_span(Scanner *sc, size_t start, size_t mstart, long kstart, size_t kend,
		 int depth)
{
	Spans	   *o = sc->out;

	if (o->n >= SCAN_MAX_SPANS)
		return -1;
	if (o->n == o->cap)
	{
		o->cap = o->cap ? o->cap * 2 : 256;
		o->v = xrealloc(o->v, sizeof(Span) * o->cap);
	}
	o->v[o->n].start = start;
	o->v[o->n].mstart = mstart;
	o->v[o->n].kstart = kstart;
	o->v[o->n].kend = kend;
	o->v[o->n].depth = depth;
	return o->n++;
}

static bool
scan_value(Scanner *sc, int depth, size_t mstart, long kstart, size_t kend)
{
	size_t		start;
	int			idx;
	char		c;

	if (depth > SCAN_MAX_DEPTH)
		return false;
	scan_ws(sc);
	if (sc->p >= sc->len)
		return false;
	start = sc->p;
	idx = add_span(sc, start, kstart >= 0 ? mstart : start, kstart, kend, depth);
	c = sc->s[sc->p];
	if (c == '{' || c == '[')
	{
		bool		obj = (c == '{');
		bool		first = true;

		sc->p++;
		for (;;)
		{
			size_t		m;
			long		ks = -1;
			size_t		ke = 0;

			scan_ws(sc);
			if (sc->p >= sc->len)
				return false;
			if (sc->s[sc->p] == (obj ? '}' : ']'))
			{
				sc->p++;
				break;
			}
			if (!first)
			{
				if (sc->s[sc->p] != ',')
					return false;
				sc->p++;
				scan_ws(sc);
			}
			first = false;
			m = sc->p;
			if (obj)
			{
				ks = (long) sc->p;
				if (!scan_string(sc))
					return false;
				ke = sc->p;
				scan_ws(sc);
				if (sc->p >= sc->len || sc->s[sc->p] != ':')
					return false;
				sc->p++;
			}
			if (!scan_value(sc, depth + 1, m, ks, ke))
				return false;
		}
		c = obj ? 'o' : 'a';
	}
	else if (c == '"')
	{
		if (!scan_string(sc))
			return false;
		c = 's';
	}
	else if (c == '-' || (c >= '0' && c <= '9'))
	{
		while (sc->p < sc->len && strchr("+-.eE0123456789", sc->s[sc->p]) != NULL &&
			   sc->s[sc->p] != '\0')
			sc->p++;
		c = 'n';
	}
	else if (sc->len - sc->p >= 4 && (memcmp(sc->s + sc->p, "null", 4) == 0 ||
									  memcmp(sc->s + sc->p, "true", 4) == 0))
	{
		sc->p += 4;
		c = 'l';
	}
	else if (sc->len - sc->p >= 5 && memcmp(sc->s + sc->p, "false", 5) == 0)
	{
		sc->p += 5;
		c = 'l';
	}
	else
		return false;
	if (idx >= 0)
	{
		sc->out->v[idx].end = sc->p;
		sc->out->v[idx].type = c;
	}
	return true;
}

static bool
json_scan(const Buf *b, Spans *out)
{
	Scanner		sc = {b->data, b->len, 0, out};

	out->n = 0;
	if (!scan_value(&sc, 0, 0, -1, 0))
		return false;
	scan_ws(&sc);
	/* spans cut short by SCAN_MAX_SPANS have no end: drop them */
	while (out->n > 0 && out->v[out->n - 1].end <= out->v[out->n - 1].start)
		out->n--;
	return sc.p == b->len && out->n > 0;
}

/* A random span, of one of the given types (NULL: any), or -1. */
static int
pick_span(const Spans *sp, const char *types)
{
	int			tries;

	if (sp->n == 0)
		return -1;
	for (tries = 0; tries < 20; tries++)
	{
		int			i = (int) rnd(sp->n);

		if (sp->v[i].end <= sp->v[i].start)
			continue;
		if (types == NULL || strchr(types, sp->v[i].type) != NULL)
			return i;
	}
	return -1;
}

/* ----------------------------------------------------------------------
 * Mutations
 * ---------------------------------------------------------------------- */

static StrList seeds;			/* the mode's seeds */
static Spans spans;

/* A random JSON value, from the dictionary or from a seed. */
static void
random_json_value(Buf *out)
{
	Spans		other = {0};
	Buf			tmp = {0};

	out->len = 0;
	if (chance(1, 4) && seeds.n > 0)
	{
		int			s = (int) rnd(seeds.n);

		buf_set(&tmp, seeds.items[s], seeds.lens[s]);
		if (json_scan(&tmp, &other))
		{
			int			i = pick_span(&other, NULL);

			if (i >= 0)
			{
				buf_set(out, tmp.data + other.v[i].start, other.v[i].end - other.v[i].start);
				free(other.v);
				free(tmp.data);
				return;
			}
		}
		free(other.v);
		free(tmp.data);
	}
	buf_set(out, "", 0);
	buf_appends(out, PICK(json_values));
	if (out->len == 0)
		buf_appends(out, "null");
}

/* Structure-aware mutation; false when it could not be applied. */
static bool
mutate_json(Buf *b)
{
	int			i,
				j;
	Span		s,
				t;
	Buf			v = {0};
	bool		done = true;

	if (!json_scan(b, &spans))
		return false;

	switch (rnd(14))
	{
		case 0:				/* a value of another type */
		case 1:
			if ((i = pick_span(&spans, NULL)) < 0 || spans.v[i].depth == 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			random_json_value(&v);
			buf_splice(b, s.start, s.end - s.start, v.data, v.len);
			break;
		case 2:				/* number <-> string */
			if ((i = pick_span(&spans, "sn")) < 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			if (spans.v[i].type == 'n')
			{
				buf_insert(b, s.end, "\"", 1);
				buf_insert(b, s.start, "\"", 1);
			}
			else if (s.end - s.start >= 2)
			{
				buf_splice(b, s.end - 1, 1, "", 0);
				buf_splice(b, s.start, 1, "", 0);
			}
			break;
		case 3:				/* new content of a string */
		case 4:
			if ((i = pick_span(&spans, "s")) < 0 || spans.v[i].end - spans.v[i].start < 2)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			switch (rnd(4))
			{
				case 0:
					buf_repeat(&v, PICK(string_contents), rnd_len());
					if (v.len > 0 && v.data[v.len - 1] == '\\')
						v.len--;	/* never escape the closing quote */
					break;
				case 1:
					{
						/* keep the string and append or prepend to it */
						const char *add = PICK(string_contents);

						buf_set(&v, b->data + s.start + 1, s.end - s.start - 2);
						if (chance(1, 2))
							buf_appends(&v, add);
						else
							buf_insert(&v, 0, add, strlen(add));
						break;
					}
				default:
					buf_set(&v, "", 0);
					buf_appends(&v, PICK(string_contents));
					break;
			}
			buf_splice(b, s.start + 1, s.end - s.start - 2, v.data, v.len);
			break;
		case 5:				/* deep nesting around a value */
			{
				static const size_t depths[] = {2, 10, 64, 100, 1000, 3000, 10000, 50000, 200000};
				size_t		d = PICK(depths);
				bool		arr = chance(1, 2);
				Buf			pre = {0},
							post = {0};

				if ((i = pick_span(&spans, NULL)) < 0)
				{
					done = false;
					break;
				}
				s = spans.v[i];
				for (size_t k = 0; k < d; k++)
				{
					buf_appends(&pre, arr ? "[" : "{\"a\":");
					buf_appends(&post, arr ? "]" : "}");
				}
				buf_insert(b, s.end, post.data, post.len);
				buf_insert(b, s.start, pre.data, pre.len);
				free(pre.data);
				free(post.data);
				break;
			}
		case 6:				/* duplicate a member or element */
			if ((i = pick_span(&spans, NULL)) < 0 || spans.v[i].depth == 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			{
				size_t		n = (chance(1, 8) ? 1 + rnd(chance(1, 8) ? 1500 : 100) : 1);

				buf_set(&v, "", 0);
				for (size_t k = 0; k < n; k++)
				{
					buf_appends(&v, ",");
					buf_append(&v, b->data + s.mstart, s.end - s.mstart);
				}
				buf_insert(b, s.end, v.data, v.len);
			}
			break;
		case 7:				/* remove a member or element */
			if ((i = pick_span(&spans, NULL)) < 0 || spans.v[i].depth == 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			{
				size_t		a = s.mstart,
							e = s.end,
							k = a;

				while (k > 0 && strchr(" \t\r\n", b->data[k - 1]))
					k--;
				if (k > 0 && b->data[k - 1] == ',')
					a = k - 1;
				else
				{
					size_t		q = e;

					while (q < b->len && strchr(" \t\r\n", b->data[q]))
						q++;
					if (q < b->len && b->data[q] == ',')
						e = q + 1;
				}
				buf_splice(b, a, e - a, "", 0);
			}
			break;
		case 8:				/* swap two values */
			if ((i = pick_span(&spans, NULL)) < 0 || (j = pick_span(&spans, NULL)) < 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			t = spans.v[j];
			if (s.start > t.start)
			{
				Span		x = s;

				s = t;
				t = x;
			}
			if (s.end > t.start)
			{
				done = false;	/* nested or the same */
				break;
			}
			{
				Buf			sv = {0},
							tv = {0};

				buf_set(&sv, b->data + s.start, s.end - s.start);
				buf_set(&tv, b->data + t.start, t.end - t.start);
				buf_splice(b, t.start, t.end - t.start, sv.data, sv.len);
				buf_splice(b, s.start, s.end - s.start, tv.data, tv.len);
				free(sv.data);
				free(tv.data);
			}
			break;
		case 9:				/* a value copied over another */
			if ((i = pick_span(&spans, NULL)) < 0 || (j = pick_span(&spans, NULL)) < 0 ||
				spans.v[j].depth == 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			t = spans.v[j];
			buf_set(&v, b->data + s.start, s.end - s.start);
			buf_splice(b, t.start, t.end - t.start, v.data, v.len);
			break;
		case 10:				/* a new member in an object */
		case 11:
			if ((i = pick_span(&spans, "oa")) < 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			{
				Buf			val = {0};
				size_t		q = s.start + 1;
				bool		empty;

				while (q < b->len && strchr(" \t\r\n", b->data[q]))
					q++;
				empty = (q < b->len && (b->data[q] == '}' || b->data[q] == ']'));
				random_json_value(&val);
				buf_set(&v, "", 0);
				if (s.type == 'o')
					buf_printf(&v, "\"%s\":", PICK(json_keys));
				buf_append(&v, val.data, val.len);
				if (!empty)
					buf_appends(&v, ",");
				buf_insert(b, s.start + 1, v.data, v.len);
				free(val.data);
			}
			break;
		case 12:				/* another key */
			if ((i = pick_span(&spans, NULL)) < 0 || spans.v[i].kstart < 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			buf_set(&v, "", 0);
			switch (rnd(3))
			{
				case 0:
					buf_printf(&v, "\"%s\"", PICK(json_keys));
					break;
				case 1:
					/* the same key in capitals */
					buf_set(&v, b->data + s.kstart, s.kend - s.kstart);
					for (size_t k = 0; k < v.len; k++)
						if (v.data[k] >= 'a' && v.data[k] <= 'z')
							v.data[k] -= 32;
					break;
				default:
					/* the same key, one letter as a \u escape */
					buf_set(&v, b->data + s.kstart, s.kend - s.kstart);
					if (v.len > 2 && v.data[1] >= 'a' && v.data[1] <= 'z')
					{
						char		esc[8];

						snprintf(esc, sizeof(esc), "\\u%04x", (unsigned) v.data[1]);
						buf_splice(&v, 1, 1, esc, 6);
					}
					break;
			}
			buf_splice(b, s.kstart, s.kend - s.kstart, v.data, v.len);
			break;
		default:				/* a boundary number */
			if ((i = pick_span(&spans, "n")) < 0)
			{
				done = false;
				break;
			}
			s = spans.v[i];
			{
				static const char *const nums[] = {
					"0", "-0", "-1", "2147483647", "2147483648", "-2147483648",
					"-2147483649", "9223372036854775807", "9223372036854775808",
					"-9223372036854775809", "1e308", "1e309", "-1e309", "1e-400",
					"4102444800", "4102444801", "0.5", "1.0", "131050.0", "1E5",
					"100000000000000000000000000000000000000000000000000",
				};

				buf_set(&v, "", 0);
				buf_appends(&v, PICK(nums));
				buf_splice(b, s.start, s.end - s.start, v.data, v.len);
			}
			break;
	}
	free(v.data);
	return done;
}

/* Byte-level mutation; always applies. */
static void
mutate_bytes(Buf *b, const char *alphabet)
{
	size_t		at = rnd(b->len + 1);

	switch (rnd(11))
	{
		case 0:				/* flip a bit */
			if (b->len)
				b->data[rnd(b->len)] ^= (char) (1 << rnd(8));
			break;
		case 1:				/* a random byte */
			if (b->len)
				b->data[rnd(b->len)] = (char) rnd(256);
			break;
		case 2:				/* a byte of the alphabet */
			if (b->len)
				b->data[rnd(b->len)] = alphabet[rnd(strlen(alphabet))];
			break;
		case 3:				/* insert bytes of the alphabet */
			{
				size_t		n = 1 + rnd(chance(1, 10) ? 300 : 4);

				for (size_t k = 0; k < n; k++)
				{
					char		c = alphabet[rnd(strlen(alphabet))];

					buf_insert(b, at, &c, 1);
				}
				break;
			}
		case 4:				/* delete a range */
			if (b->len)
				buf_splice(b, at, 1 + rnd(chance(1, 4) ? b->len : 8), "", 0);
			break;
		case 5:				/* duplicate a range */
			if (b->len)
			{
				size_t		from = rnd(b->len);
				size_t		n = 1 + rnd(b->len - from);
				Buf			c = {0};

				if (n > 4096)
					n = 4096;
				buf_set(&c, b->data + from, n);
				buf_insert(b, at, c.data, c.len);
				free(c.data);
			}
			break;
		case 6:				/* truncate */
			b->len = at;
			b->data[at] = '\0';
			break;
		case 7:				/* a token */
		case 8:
			{
				const char *t = PICK(tokens);

				buf_insert(b, at, t, strlen(t));
				break;
			}
		case 9:				/* splice with another seed */
			{
				int			s = (int) rnd(seeds.n);
				size_t		from = rnd(seeds.lens[s] + 1);

				b->len = at;
				buf_append(b, seeds.items[s] + from, seeds.lens[s] - from);
				break;
			}
		default:				/* a run of one byte */
			{
				char		c = alphabet[rnd(strlen(alphabet))];
				size_t		n = rnd_len();
				Buf			r = {0};

				buf_reserve(&r, n);
				memset(r.data, c, n);
				r.len = n;
				buf_insert(b, at, r.data, r.len);
				free(r.data);
				break;
			}
	}
}

#define WAFUZZ_MAX_INPUT	(4 * 1024 * 1024)

static bool
span_key_is(const Buf *b, const Span *s, const char *key)
{
	size_t		n = strlen(key);

	return s->kstart >= 0 && s->kend - s->kstart == n + 2 &&
		memcmp(b->data + s->kstart + 1, key, n) == 0;
}

/*
 * Give the inbound messages of a payload fresh wamids: whatsapp.inbound
 * keeps one row per wamid, and a message already stored (by an earlier
 * input of the batch, or a committed batch) is a duplicate that stops
 * before the keyword and identity code.  Statuses keep theirs, which name
 * the seeded messages.
 */
static void
refresh_inbound_ids(Buf *b)
{
	int			targets[64];
	int			nt = 0;

	if (!json_scan(b, &spans))
		return;
	for (int a = 0; a < spans.n; a++)
	{
		Span	   *arr = &spans.v[a];

		if (arr->type != 'a' || !span_key_is(b, arr, "messages"))
			continue;
		for (int j = a + 1; j < spans.n && spans.v[j].start < arr->end && nt < 64; j++)
			if (spans.v[j].depth == arr->depth + 2 && spans.v[j].type == 's' &&
				span_key_is(b, &spans.v[j], "id"))
				targets[nt++] = j;
	}
	/* from the end, so that the earlier spans stay where they are */
	for (int t = nt - 1; t >= 0; t--)
	{
		Span		sp = spans.v[targets[t]];
		char		id[80];
		static const char b64[] =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		int			len;

		len = snprintf(id, sizeof(id), "\"wamid.HBgNNTIxNTUxMjM0NTY3OBUCABIYFDNB");
		for (int k = 0; k < 16; k++)
			id[len++] = b64[rnd(64)];
		len += snprintf(id + len, sizeof(id) - len, "AA==\"");
		buf_splice(b, sp.start, sp.end - sp.start, id, len);
	}
}

static const char json_alphabet[] =
"{}[]\":,\\ 0123456789-+.eEabcdefnrtuluxyz_ABCDEFSTOP\t\n";

static void
make_webhook_input(Buf *b)
{
	int			s = (int) rnd(seeds.n);
	int			rounds;
	int			strategy;

	buf_set(b, seeds.items[s], seeds.lens[s]);
	if (chance(1, 2))
		refresh_inbound_ids(b);
	if (chance(1, 50))
		return;					/* the seed itself */
	/*
	 * Mostly mutations that keep the text JSON, so that most inputs get past
	 * the JSON parser and the signature to the code that applies them; some
	 * mixed with byte-level ones, some byte-level only.
	 */
	rounds = 1 + (int) rnd(chance(1, 4) ? 8 : 3);
	strategy = (int) rnd(20);
	for (int r = 0; r < rounds; r++)
	{
		if (strategy < 13 ? mutate_json(b) :
			strategy < 17 ? (chance(3, 4) && mutate_json(b)) : false)
			continue;
		if (strategy < 13 && r > 0)
			continue;			/* structure-only: a mutation that did not apply */
		mutate_bytes(b, json_alphabet);
	}
	if (b->len > WAFUZZ_MAX_INPUT)
	{
		b->len = WAFUZZ_MAX_INPUT;
		b->data[b->len] = '\0';
	}
	utf8_sanitize(b);
}

/* Phone numbers: spelling alphabet, separators and junk. */
static const char *const phone_pieces[] = {
	"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "1", "5", "9",
	" ", " ", "+", "(", ")", "-", ".", "/", "\t", "\n", "\v", "\f", "\r",
	"00", "011", "(0)", "+52 1", "15", "9", "044", "045", "01", "06", "8",
	"x", "ext. ", "#", "*", ",", ";", "e", "a", "O", "l", "~", "tel:",
	"\xc2\xa0", "\xe2\x80\x93", "\xe2\x80\x8e", "\xef\xbb\xbf", "\xe3\x80\x80",
	"\xe2\x88\x92", "\xe2\x80\xaf", "\xe2\x81\xa0", "\xe2\x80\x8b", "\xe2\x80\xae",
	"\xe2\x81\xa6", "\xe2\x80\x90", "\xe2\x80\x95", "\xe2\x80\x96", "\xe2\x80\x8c",
	"\xd9\xa1", "\xef\xbc\x91", "\xef\xbc\x8b", "\xc3\xa9", "\xf0\x9f\x93\x9e",
	"\xe2\x80", "\xc2", "\xe2\x81",
};

static void
mutate_phone(Buf *b)
{
	size_t		at = rnd(b->len + 1);

	switch (rnd(9))
	{
		case 0:
		case 1:				/* insert a piece */
			{
				const char *p = PICK(phone_pieces);

				buf_insert(b, at, p, strlen(p));
				break;
			}
		case 2:				/* replace a byte by a piece */
			if (b->len)
			{
				const char *p = PICK(phone_pieces);

				buf_splice(b, rnd(b->len), 1, p, strlen(p));
			}
			break;
		case 3:				/* delete a range */
			if (b->len)
				buf_splice(b, at, 1 + rnd(4), "", 0);
			break;
		case 4:				/* duplicate a range (more digits) */
			if (b->len)
			{
				size_t		from = rnd(b->len);
				size_t		n = 1 + rnd(b->len - from);
				Buf			c = {0};

				buf_set(&c, b->data + from, n);
				buf_insert(b, at, c.data, c.len);
				free(c.data);
			}
			break;
		case 5:				/* a prefix */
			{
				static const char *const pre[] = {
					"+", "00", "011", "0", "1", "(+", "+0", "++", " +", "(", "+52",
					"+55", "+54 9", "+1", "0052", "8", "06", "044", "tel:+",
				};
				const char *p = PICK(pre);

				buf_insert(b, 0, p, strlen(p));
				break;
			}
		case 6:				/* splice with another seed */
			{
				int			s = (int) rnd(seeds.n);
				size_t		from = rnd(seeds.lens[s] + 1);

				b->len = at;
				buf_append(b, seeds.items[s] + from, seeds.lens[s] - from);
				break;
			}
		case 7:				/* a long run */
			{
				const char *p = PICK(phone_pieces);
				size_t		n = chance(1, 2) ? 250 + rnd(12) : rnd_len();
				Buf			r = {0};

				buf_repeat(&r, p, n);
				buf_insert(b, at, r.data, r.len);
				free(r.data);
				break;
			}
		default:				/* change a digit */
			for (size_t k = 0; k < b->len; k++)
			{
				size_t		q = rnd(b->len);

				if (b->data[q] >= '0' && b->data[q] <= '9')
				{
					b->data[q] = (char) ('0' + rnd(10));
					break;
				}
			}
			break;
	}
}

static StrList country_codes;	/* the cc argument; "NULL" means NULL */

static void
make_phone_input(Buf *b, Buf *cc, bool *cc_null)
{
	int			s = (int) rnd(seeds.n);
	int			rounds;
	/* half the time NULL: whatsapp.default_country_code applies */
	const char *c = chance(1, 2) ? "NULL" : country_codes.items[rnd(country_codes.n)];

	buf_set(b, seeds.items[s], seeds.lens[s]);
	if (!chance(1, 10))
	{
		rounds = chance(1, 2) ? 1 : 1 + (int) rnd(chance(1, 4) ? 6 : 3);
		for (int r = 0; r < rounds; r++)
			mutate_phone(b);
	}
	utf8_sanitize(b);

	*cc_null = (strcmp(c, "NULL") == 0);
	buf_set(cc, "", 0);
	if (!*cc_null)
	{
		if (strcmp(c, "EMPTY") != 0)
			buf_appends(cc, c);
		if (chance(1, 20))
			mutate_phone(cc);
		utf8_sanitize(cc);
	}
}

/* ----------------------------------------------------------------------
 * Signatures
 * ---------------------------------------------------------------------- */

static void
hmac_hex(const char *key, const char *data, size_t len, char *hex /* 65 */ )
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (HMAC(EVP_sha256(), key, (int) strlen(key), (const unsigned char *) data, len,
			 mac, &maclen) == NULL || maclen != 32)
		die("HMAC-SHA256 failed");
	for (int i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", mac[i]);
	hex[64] = '\0';
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static const char *secret_main;
static const char *secret_valid[4];	/* other active accounts' secrets */
static int	nsecret_valid;
static const char *secret_other[4];	/* secrets that must not verify */
static int	nsecret_other;

/* Is sig "sha256=" and the 64 hex digits, in either case, of good_hex? */
static bool
signature_is(const Buf *sig, const char *good_hex)
{
	if (sig->len != 71 || memcmp(sig->data, "sha256=", 7) != 0)
		return false;
	for (int i = 0; i < 64; i++)
	{
		int			v = hexval(sig->data[7 + i]);

		if (v < 0 || v != hexval(good_hex[i]))
			return false;
	}
	return true;
}

/*
 * The oracle of the signature mode: does sig verify payload?  Every app
 * secret of an active account is tried, so the MAC under any of them
 * verifies (what the payload may then change is another matter).
 */
static bool
signature_should_verify(const Buf *sig, bool is_null, const Buf *payload,
						const char *good_hex)
{
	char		hex[65];

	if (is_null)
		return false;
	if (signature_is(sig, good_hex))
		return true;
	for (int k = 0; k < nsecret_valid; k++)
	{
		hmac_hex(secret_valid[k], payload->data, payload->len, hex);
		if (signature_is(sig, hex))
			return true;
	}
	return false;
}

static void
make_signature_input(const Buf *payload, Buf *sig, bool *is_null)
{
	char		hex[65];
	static const char *const prefixes[] = {
		"sha256=", "SHA256=", "sha1=", "sha256:", "sha256 =", " sha256=",
		"sha256=sha256=", "", "sha512=", "sha256==", "Sha256=",
	};

	*is_null = false;
	buf_set(sig, "", 0);
	switch (rnd(12))
	{
		case 0:
			*is_null = chance(1, 4);
			/* the empty string otherwise */
			return;
		case 1:				/* another account's secret, or a wrong one */
			if (nsecret_valid > 0 && chance(1, 2))
				hmac_hex(secret_valid[rnd(nsecret_valid)], payload->data, payload->len, hex);
			else
				hmac_hex(secret_other[rnd(nsecret_other)], payload->data, payload->len, hex);
			buf_printf(sig, "sha256=%s", hex);
			break;
		case 2:				/* the MAC of other bytes */
			{
				Buf			other = {0};

				buf_set(&other, payload->data, payload->len);
				mutate_bytes(&other, json_alphabet);
				hmac_hex(secret_main, other.data, other.len, hex);
				buf_printf(sig, "sha256=%s", hex);
				free(other.data);
				break;
			}
		case 3:				/* correct, hex in capitals */
			hmac_hex(secret_main, payload->data, payload->len, hex);
			for (int i = 0; i < 64; i++)
				if (hex[i] >= 'a')
					hex[i] -= 32;
			buf_printf(sig, "sha256=%s", hex);
			break;
		default:				/* correct, then mutated */
			hmac_hex(secret_main, payload->data, payload->len, hex);
			buf_printf(sig, "%s%s", chance(1, 2) ? "sha256=" : PICK(prefixes), hex);
			break;
	}
	if (chance(9, 10))
	{
		int			rounds = 1 + (int) rnd(3);

		for (int r = 0; r < rounds; r++)
		{
			if (chance(1, 2))
				mutate_bytes(sig, "0123456789abcdefABCDEFsha=256 \t\n-:,xyzG");
			else
			{
				/* one hex digit changed: the closest misses */
				if (sig->len > 7)
				{
					size_t		q = 7 + rnd(sig->len - 7);

					sig->data[q] = "0123456789abcdef"[rnd(16)];
				}
			}
		}
	}
	if (sig->len > WAFUZZ_MAX_INPUT)
		sig->len = WAFUZZ_MAX_INPUT;
	utf8_sanitize(sig);
}

/* ----------------------------------------------------------------------
 * Outcomes
 * ---------------------------------------------------------------------- */

typedef struct Outcome
{
	char	   *name;
	long		count;
	bool		bad;
} Outcome;

static Outcome outcomes[256];
static int	noutcomes;

static void
count_outcome(const char *name, bool bad)
{
	for (int i = 0; i < noutcomes; i++)
		if (strcmp(outcomes[i].name, name) == 0)
		{
			outcomes[i].count++;
			return;
		}
	if (noutcomes == (int) lengthof(outcomes))
		outcomes[noutcomes - 1].count++;	/* the last slot takes the rest */
	else
	{
		outcomes[noutcomes].name = xstrdup(name);
		outcomes[noutcomes].bad = bad;
		outcomes[noutcomes].count = 1;
		noutcomes++;
	}
}

static const char *outdir = "fuzz-out";
static const char *mode;
static int	nsaved;

#define MAX_SAVED	200

/* Write an input (and its companion: signature or country code). */
static void
save_input(const char *kind, long n, const Buf *input, const Buf *extra,
		   bool extra_null, const char *detail)
{
	char		path[4096];
	FILE	   *f;

	if (nsaved >= MAX_SAVED)
		return;
	nsaved++;
	mkdir(outdir, 0755);
	snprintf(path, sizeof(path), "%s/%s-%s-%ld.input", outdir, mode, kind, n);
	f = fopen(path, "wb");
	if (f == NULL)
	{
		fprintf(stderr, "wafuzz: cannot write %s: %s\n", path, strerror(errno));
		return;
	}
	fwrite(input->data, 1, input->len, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s-%s-%ld.info", outdir, mode, kind, n);
	f = fopen(path, "wb");
	if (f == NULL)
		return;
	fprintf(f, "mode: %s\noutcome: %s\n", mode, kind);
	if (detail)
		fprintf(f, "detail: %s\n", detail);
	if (extra != NULL)
	{
		fprintf(f, "%s: ", strcmp(mode, "phone") == 0 ? "country_code" : "signature");
		if (extra_null)
			fprintf(f, "NULL\n");
		else
		{
			fwrite(extra->data, 1, extra->len, f);
			fprintf(f, "\n");
		}
	}
	fclose(f);
}

/* ----------------------------------------------------------------------
 * The server
 * ---------------------------------------------------------------------- */

static const char *conninfo = "";
static const char *client_encoding = "UTF8";
static int	stmt_timeout_s = 120;
static PGconn *conn;

static void
quiet_notices(void *arg, const char *message)
{
	(void) arg;
	(void) message;
}

static bool
connect_server(int wait_s)
{
	double		until = now_seconds() + wait_s;
	char		sql[256];

	for (;;)
	{
		const char *keys[] = {"dbname", "application_name", NULL};
		const char *vals[] = {conninfo, "wafuzz", NULL};

		if (conn)
			PQfinish(conn);
		conn = PQconnectdbParams(keys, vals, 1);
		if (PQstatus(conn) == CONNECTION_OK)
			break;
		if (now_seconds() > until)
		{
			fprintf(stderr, "wafuzz: cannot connect: %s", PQerrorMessage(conn));
			return false;
		}
		usleep(500 * 1000);
	}
	PQsetNoticeProcessor(conn, quiet_notices, NULL);
	snprintf(sql, sizeof(sql),
			 "SET client_min_messages = error; SET statement_timeout = '%ds'",
			 stmt_timeout_s);
	PQclear(PQexec(conn, sql));
	if (PQsetClientEncoding(conn, client_encoding) != 0)
		die("cannot set client_encoding to %s", client_encoding);
	return true;
}

static bool
exec_ok(const char *sql)
{
	PGresult   *r = PQexec(conn, sql);
	bool		ok = r && (PQresultStatus(r) == PGRES_COMMAND_OK ||
						   PQresultStatus(r) == PGRES_TUPLES_OK);

	if (!ok && PQstatus(conn) == CONNECTION_OK)
		fprintf(stderr, "wafuzz: %s: %s", sql, PQerrorMessage(conn));
	PQclear(r);
	return ok;
}

/* A binary text[] of n elements (nulls[i]: NULL). */
static void
text_array(Buf *out, Buf *elems, const bool *nulls, int n)
{
	bool		hasnull = false;

	for (int i = 0; nulls && i < n; i++)
		hasnull |= nulls[i];
	out->len = 0;
	put32(out, 1);
	put32(out, hasnull ? 1 : 0);
	put32(out, 25);				/* text */
	put32(out, (uint32_t) n);
	put32(out, 1);
	for (int i = 0; i < n; i++)
	{
		if (nulls && nulls[i])
			put32(out, 0xFFFFFFFFu);
		else
		{
			put32(out, (uint32_t) elems[i].len);
			buf_append(out, elems[i].data, elems[i].len);
		}
	}
}

typedef enum BatchResult
{
	BATCH_OK,
	BATCH_CRASH,				/* the connection is gone */
	BATCH_TIMEOUT,				/* statement_timeout: a hang */
	BATCH_ERROR					/* any other error of the whole batch */
} BatchResult;

/*
 * Run inputs [0, n) through the mode's batch function; *res gets the
 * result (outcome, detail per input) when BATCH_OK.
 */
static BatchResult
run_batch(Buf *in, Buf *extra, bool *extra_null, int n, const char *default_cc,
		  bool commit, PGresult **res)
{
	Buf			a1 = {0},
				a2 = {0};
	const char *values[3];
	int			lengths[3];
	int			formats[3] = {1, 1, 0};
	unsigned int types[3] = {TEXTARRAYOID, TEXTARRAYOID, 23};
	const char *sql;
	PGresult   *r;
	BatchResult br = BATCH_OK;
	char		every[16];

	*res = NULL;
	/* every third batch at REPEATABLE READ, Odoo's level */
	if (!exec_ok(rnd(3) == 0 ? "BEGIN ISOLATION LEVEL REPEATABLE READ" : "BEGIN"))
		return PQstatus(conn) == CONNECTION_OK ? BATCH_ERROR : BATCH_CRASH;
	if (default_cc)
	{
		char	   *lit = PQescapeLiteral(conn, default_cc, strlen(default_cc));
		Buf			q = {0};

		buf_printf(&q, "SET LOCAL whatsapp.default_country_code = %s", lit);
		PQfreemem(lit);
		if (!exec_ok(q.data))
		{
			free(q.data);
			exec_ok("ROLLBACK");
			return PQstatus(conn) == CONNECTION_OK ? BATCH_ERROR : BATCH_CRASH;
		}
		free(q.data);
	}
	text_array(&a1, in, NULL, n);
	text_array(&a2, extra, extra_null, n);
	values[0] = a1.data;
	lengths[0] = (int) a1.len;
	values[1] = a2.data;
	lengths[1] = (int) a2.len;
	if (strcmp(mode, "phone") == 0)
	{
		/* every 7th input also goes through wa_send */
		snprintf(every, sizeof(every), "%d", 7);
		values[2] = every;
		lengths[2] = 0;
		sql = "SELECT outcome, detail FROM fuzz.phone($1, $2, $3)";
	}
	else
		sql = "SELECT outcome, detail FROM fuzz.receive($1, $2)";
	r = PQexecParams(conn, sql, strcmp(mode, "phone") == 0 ? 3 : 2, types,
					 values, lengths, formats, 0);
	free(a1.data);
	free(a2.data);
	if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK)
	{
		const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

		if (PQstatus(conn) != CONNECTION_OK)
			br = BATCH_CRASH;
		else if (state && strcmp(state, "57014") == 0)
			br = BATCH_TIMEOUT;
		else
		{
			fprintf(stderr, "wafuzz: the batch failed: %s", PQerrorMessage(conn));
			br = BATCH_ERROR;
		}
		PQclear(r);
		if (br != BATCH_CRASH && !exec_ok("ROLLBACK") && PQstatus(conn) != CONNECTION_OK)
			br = BATCH_CRASH;
		return br;
	}
	if (PQntuples(r) != n)
	{
		fprintf(stderr, "wafuzz: %d results for %d inputs\n", PQntuples(r), n);
		PQclear(r);
		exec_ok("ROLLBACK");
		return BATCH_ERROR;
	}
	if (!exec_ok(commit ? "COMMIT" : "ROLLBACK"))
	{
		PQclear(r);
		return PQstatus(conn) == CONNECTION_OK ? BATCH_ERROR : BATCH_CRASH;
	}
	*res = r;
	return BATCH_OK;
}

/* ----------------------------------------------------------------------
 * Main
 * ---------------------------------------------------------------------- */

static void
usage(void)
{
	fprintf(stderr,
			"usage: wafuzz webhook|signature|phone [options]\n"
			"  -d CONNINFO   database or connection string (default: libpq's environment)\n"
			"  -n N          inputs (default 10000)\n"
			"  -b N          inputs per batch (default 100; phone 500)\n"
			"  -s SEED       random seed (default: from the clock; printed)\n"
			"  -c DIR        corpus directory (default test/fuzz/corpus)\n"
			"  -o DIR        where findings are written (default fuzz-out)\n"
			"  -C K          commit every K-th batch, roll back the others\n"
			"                (default 4; 0: roll back all; phone always rolls back)\n"
			"  -t SECONDS    statement timeout of a batch (default 120)\n"
			"  -m N          stop after N crashes or hangs (default 3)\n"
			"  -E ENCODING   client_encoding (default UTF8); with a single-byte one\n"
			"                such as LATIN1, inputs keep every byte but NUL\n"
			"  -q            no progress lines\n"
			"The app secrets come from the environment: WAFUZZ_SECRET (the main\n"
			"account's, which signs every payload), WAFUZZ_VALID_SECRETS (comma-\n"
			"separated: other active accounts', which verify too) and\n"
			"WAFUZZ_OTHER_SECRETS (secrets that must not verify, such as a dropped\n"
			"account's).\n");
	exit(3);
}

int
main(int argc, char **argv)
{
	long		ninputs = 10000;
	int			batch = 0;
	uint64_t	seed = 0;
	bool		seed_given = false;
	const char *corpus = "test/fuzz/corpus";
	int			commit_every = 4;
	int			max_crashes = 3;
	bool		quiet = false;
	int			opt;
	bool		is_webhook,
				is_sig,
				is_phone;
	Buf		   *in,
			   *extra;
	bool	   *extra_null;
	char	  **good_hex;
	StrList		sig_payloads = {0};
	char		path[4096];
	long		done = 0,
				batches = 0,
				crashes = 0,
				hangs = 0,
				failures = 0,
				stored = 0,
				applied_inputs = 0;
	double		bytes = 0;
	size_t		max_len = 0;
	double		t0,
				last_report;
	const char *env;

	if (argc < 2)
		usage();
	mode = argv[1];
	is_webhook = strcmp(mode, "webhook") == 0;
	is_sig = strcmp(mode, "signature") == 0;
	is_phone = strcmp(mode, "phone") == 0;
	if (!is_webhook && !is_sig && !is_phone)
		usage();
	optind = 2;
	while ((opt = getopt(argc, argv, "d:n:b:s:c:o:C:t:m:E:q")) != -1)
	{
		switch (opt)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 'n':
				ninputs = atol(optarg);
				break;
			case 'b':
				batch = atoi(optarg);
				break;
			case 's':
				seed = strtoull(optarg, NULL, 10);
				seed_given = true;
				break;
			case 'c':
				corpus = optarg;
				break;
			case 'o':
				outdir = optarg;
				break;
			case 'C':
				commit_every = atoi(optarg);
				break;
			case 't':
				stmt_timeout_s = atoi(optarg);
				break;
			case 'm':
				max_crashes = atoi(optarg);
				break;
			case 'E':
				client_encoding = optarg;
				client_utf8 = strcasecmp(optarg, "UTF8") == 0 ||
					strcasecmp(optarg, "UTF-8") == 0;
				break;
			case 'q':
				quiet = true;
				break;
			default:
				usage();
		}
	}
	if (batch <= 0)
		batch = is_phone ? 500 : 100;
	if (!seed_given)
		seed = (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 32);
	rng_state = seed;

	secret_main = getenv("WAFUZZ_SECRET");
	if (!is_phone && (secret_main == NULL || *secret_main == '\0'))
		die("WAFUZZ_SECRET (the main account's app secret) is not set");
	env = getenv("WAFUZZ_VALID_SECRETS");
	if (env && *env)
	{
		char	   *copy = xstrdup(env);

		for (char *tok = strtok(copy, ","); tok && nsecret_valid < 4; tok = strtok(NULL, ","))
			secret_valid[nsecret_valid++] = tok;
	}
	env = getenv("WAFUZZ_OTHER_SECRETS");
	if (env && *env)
	{
		char	   *copy = xstrdup(env);

		for (char *tok = strtok(copy, ","); tok && nsecret_other < 3; tok = strtok(NULL, ","))
			secret_other[nsecret_other++] = tok;
	}
	secret_other[nsecret_other++] = "not-the-app-secret";

	/* seeds */
	if (is_phone)
	{
		snprintf(path, sizeof(path), "%s/phones.txt", corpus);
		load_lines(path, &seeds, false);
		snprintf(path, sizeof(path), "%s/country_codes.txt", corpus);
		load_lines(path, &country_codes, false);
	}
	else
	{
		snprintf(path, sizeof(path), "%s/webhook.jsonl", corpus);
		load_lines(path, &seeds, false);
		if (is_sig)
		{
			/* the payloads whose signature is fuzzed: a status, a text, an account event */
			list_add(&sig_payloads, seeds.items[1], seeds.lens[1]);
			list_add(&sig_payloads, seeds.items[10], seeds.lens[10]);
			list_add(&sig_payloads, seeds.items[seeds.n > 35 ? 35 : 0],
					 seeds.lens[seeds.n > 35 ? 35 : 0]);
		}
	}

	in = calloc(batch, sizeof(Buf));
	extra = calloc(batch, sizeof(Buf));
	extra_null = calloc(batch, sizeof(bool));
	good_hex = calloc(batch, sizeof(char *));
	for (int i = 0; i < batch; i++)
		good_hex[i] = xmalloc(65);

	if (!connect_server(10))
		exit(3);

	printf("wafuzz %s: %ld inputs, seed %llu, batches of %d, client_encoding %s\n", mode,
		   ninputs, (unsigned long long) seed, batch, client_encoding);
	fflush(stdout);
	t0 = last_report = now_seconds();

	while (done < ninputs)
	{
		int			n = (int) ((ninputs - done) < batch ? (ninputs - done) : batch);
		size_t		batch_bytes = 0;
		const char *default_cc = NULL;
		bool		commit;
		PGresult   *res;
		BatchResult br;

		/* make the batch */
		for (int i = 0; i < n; i++)
		{
			if (is_webhook)
			{
				make_webhook_input(&in[i]);
				hmac_hex(secret_main, in[i].data, in[i].len, good_hex[i]);
				buf_set(&extra[i], "sha256=", 7);
				buf_append(&extra[i], good_hex[i], 64);
				extra_null[i] = false;
			}
			else if (is_sig)
			{
				int			p = (int) rnd(sig_payloads.n);

				buf_set(&in[i], sig_payloads.items[p], sig_payloads.lens[p]);
				hmac_hex(secret_main, in[i].data, in[i].len, good_hex[i]);
				make_signature_input(&in[i], &extra[i], &extra_null[i]);
			}
			else
				make_phone_input(&in[i], &extra[i], &extra_null[i]);
			batch_bytes += in[i].len + extra[i].len;
			if (in[i].len > max_len)
				max_len = in[i].len;
			bytes += in[i].len;
			/* keep a batch's parameters well under the 1 GB limit */
			if (batch_bytes > 64 * 1024 * 1024)
			{
				n = i + 1;
				break;
			}
		}
		if (is_phone)
		{
			static const char *const defaults[] = {
				"", "52", "55", "54", "1", "+57", "39", "49", "7", "44", "91",
				"34", "225", "+1", "56", "36",
			};

			default_cc = PICK(defaults);
		}
		commit = !is_phone && commit_every > 0 && batches % commit_every == 0;

		br = run_batch(in, extra, extra_null, n, default_cc, commit, &res);
		batches++;

		if (br == BATCH_OK)
		{
			for (int i = 0; i < n; i++)
			{
				const char *oc = PQgetvalue(res, i, 0);
				const char *detail = PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1);
				bool		bad = false;
				char		name[64];

				snprintf(name, sizeof(name), "%s", oc);
				if (is_webhook)
				{
					if (strcmp(oc, "ok") == 0)
					{
						bool		applied = detail && strcmp(detail, "0") != 0;

						snprintf(name, sizeof(name), "ok, %s", applied ? "events applied" : "nothing applied");
						applied_inputs += applied;
						stored += commit;
					}
					else if (strcmp(oc, "22P02") == 0)
						snprintf(name, sizeof(name), "22P02 (not JSON)");
					else
						bad = true; /* 28000 too: every payload is signed right */
				}
				else if (is_sig)
				{
					bool		should = signature_should_verify(&extra[i], extra_null[i], &in[i],
																 good_hex[i]);

					if (strcmp(oc, "ok") == 0)
					{
						stored += commit;
						if (should)
							snprintf(name, sizeof(name), "ok (verified)");
						else
						{
							snprintf(name, sizeof(name), "P_FALSE_ACCEPT");
							bad = true;
						}
					}
					else if (strcmp(oc, "28000") == 0)
					{
						if (!should)
							snprintf(name, sizeof(name), "28000 (rejected)");
						else
						{
							snprintf(name, sizeof(name), "P_FALSE_REJECT");
							bad = true;
						}
					}
					else
						bad = true;
				}
				else
				{
					if (strcmp(oc, "ok") == 0)
						snprintf(name, sizeof(name), "ok, %s", detail ? detail : "?");
					else if (strcmp(oc, "22023") == 0)
						snprintf(name, sizeof(name), "22023 (country code refused)");
					else
						bad = true;
				}
				count_outcome(name, bad);
				if (bad)
				{
					failures++;
					save_input(name, done + i, &in[i], &extra[i], extra_null[i], detail);
					if (failures <= 20)
						fprintf(stderr, "wafuzz: input %ld: %s%s%.300s\n", done + i, oc,
								detail ? ": " : "", detail ? detail : "");
				}
			}
			PQclear(res);
		}
		else if (br == BATCH_ERROR)
		{
			/* an error outside the per-input subtransactions */
			failures++;
			count_outcome("batch error", true);
			for (int i = 0; i < n; i++)
				save_input("batch-error", done + i, &in[i], &extra[i], extra_null[i], NULL);
			if (PQstatus(conn) != CONNECTION_OK && !connect_server(120))
				exit(2);
		}
		else
		{
			/* crash or hang: keep the batch, then find the input */
			const char *kind = br == BATCH_CRASH ? "crash" : "hang";

			if (br == BATCH_CRASH)
				crashes++;
			else
				hangs++;
			fprintf(stderr, "wafuzz: %s in batch %ld (inputs %ld to %ld)\n", kind,
					batches, done, done + n - 1);
			count_outcome(br == BATCH_CRASH ? "CRASH (connection lost)" : "HANG (statement timeout)", true);
			for (int i = 0; i < n; i++)
				save_input(br == BATCH_CRASH ? "crash-batch" : "hang-batch", done + i,
						   &in[i], &extra[i], extra_null[i], NULL);
			if (!connect_server(120))
			{
				fprintf(stderr, "wafuzz: the server did not come back\n");
				break;
			}
			for (int i = 0; i < n; i++)
			{
				PGresult   *r1;
				BatchResult b1 = run_batch(&in[i], &extra[i], &extra_null[i], 1,
										   default_cc, false, &r1);

				if (b1 == BATCH_OK)
					PQclear(r1);
				else if (b1 == BATCH_CRASH || b1 == BATCH_TIMEOUT)
				{
					fprintf(stderr, "wafuzz: input %ld alone: %s\n", done + i,
							b1 == BATCH_CRASH ? "crash" : "hang");
					save_input(b1 == BATCH_CRASH ? "crash" : "hang", done + i,
							   &in[i], &extra[i], extra_null[i], NULL);
					if (!connect_server(120))
						break;
				}
			}
			if (crashes + hangs >= max_crashes)
			{
				done += n;
				fprintf(stderr, "wafuzz: stopping after %ld crashes and hangs\n", crashes + hangs);
				break;
			}
		}
		done += n;

		if (!quiet && now_seconds() - last_report >= 10)
		{
			double		el = now_seconds() - t0;

			fprintf(stderr, "wafuzz %s: %ld/%ld inputs, %.0f s, %.0f inputs/s, %ld failures, %ld crashes\n",
					mode, done, ninputs, el, done / el, failures, crashes);
			last_report = now_seconds();
		}
	}

	{
		double		el = now_seconds() - t0;

		printf("mode: %s\n", mode);
		printf("seed: %llu\n", (unsigned long long) seed);
		printf("inputs: %ld\n", done);
		printf("batches: %ld\n", batches);
		printf("mean input bytes: %.0f\n", done ? bytes / done : 0);
		printf("max input bytes: %zu\n", max_len);
		printf("seconds: %.1f\n", el);
		printf("inputs per second: %.0f\n", el > 0 ? done / el : 0);
		if (!is_phone)
			printf("payloads stored by committed batches: %ld\n", stored);
		if (is_webhook)
			printf("inputs that applied events: %ld\n", applied_inputs);
		printf("crashes: %ld\n", crashes);
		printf("hangs: %ld\n", hangs);
		printf("failures: %ld\n", failures);
		printf("outcomes:\n");
		for (int i = 0; i < noutcomes; i++)
			printf("  %10ld  %s%s\n", outcomes[i].count, outcomes[i].name,
				   outcomes[i].bad ? "   <-- FAILURE" : "");
		if (nsaved)
			printf("findings written to %s/\n", outdir);
	}
	PQfinish(conn);
	if (crashes || hangs)
		return 2;
	if (failures)
		return 1;
	return 0;
}
