/*-------------------------------------------------------------------------
 *
 * whatsapp.c
 *	  Module entry point: settings, shared memory hooks, hooks and the
 *	  background worker registration.
 *
 * The library works with and without shared_preload_libraries.  Without
 * it, the SQL functions still seal, verify and enqueue; nothing delivers.
 * _PG_init never raises.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include <ctype.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

/* Settings; see the README's settings table. */
char	   *wa_database = NULL;
char	   *wa_api_url = NULL;
char	   *wa_api_version = NULL;
char	   *wa_key_file = NULL;
char	   *wa_proxy = NULL;
char	   *wa_ca_file = NULL;
char	   *wa_odoo_data_dir = NULL;
int			wa_max_inflight = 256;
int			wa_http_timeout = 30000;
int			wa_max_attempts = 10;
int			wa_in_doubt = WA_IN_DOUBT_RETRY;
int			wa_log_retention = 30 * 24 * 60;
int			wa_content_retention = 90 * 24 * 60;
int			wa_poll_interval = 10000;
int			wa_shutdown_timeout = 4000;
int			wa_batch_size = 500;
int			wa_test_fail_start = 0;
char	   *wa_default_country_code = NULL;
int			wa_window_check = WA_WINDOW_OFF;
bool		wa_odoo_events = true;
int			wa_odoo_max_age = 7 * 24 * 60;

bool		wa_preloaded = false;

static const struct config_enum_entry in_doubt_options[] = {
	{"retry", WA_IN_DOUBT_RETRY, false},
	{"fail", WA_IN_DOUBT_FAIL, false},
	{NULL, 0, false}
};

static const struct config_enum_entry window_check_options[] = {
	{"off", WA_WINDOW_OFF, false},
	{"warn", WA_WINDOW_WARN, false},
	{"block", WA_WINDOW_BLOCK, false},
	{NULL, 0, false}
};

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
wa_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	wa_shmem_request();
}

static void
wa_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	wa_shmem_startup();
}

/*
 * Is host (as written in a URL, brackets included for IPv6) a loopback
 * address?  Only loopback hosts may be reached over plain http.
 */
static bool
host_is_loopback(const char *host, size_t len)
{
	if (len == 9 && strncmp(host, "localhost", 9) == 0)
		return true;
	if (len == 5 && strncmp(host, "[::1]", 5) == 0)
		return true;
	if (len >= 4 && strncmp(host, "127.", 4) == 0)
	{
		/* 127.a.b.c with digits and dots only */
		for (size_t i = 4; i < len; i++)
			if (!isdigit((unsigned char) host[i]) && host[i] != '.')
				return false;
		return true;
	}
	return false;
}

/*
 * whatsapp.api_url: https://host[:port][/path], or http:// to a loopback
 * host for a mock.  No credentials, query or fragment.
 */
static bool
check_api_url(char **newval, void **extra, GucSource source)
{
	const char *url = *newval;
	const char *host;
	size_t		hostlen;
	bool		https;

	if (url == NULL)
		return true;
	if (strncmp(url, "https://", 8) == 0)
	{
		https = true;
		host = url + 8;
	}
	else if (strncmp(url, "http://", 7) == 0)
	{
		https = false;
		host = url + 7;
	}
	else
	{
		GUC_check_errdetail("The URL must start with https:// (or http:// for a loopback mock).");
		return false;
	}
	if (strpbrk(url, "@?# \t\r\n") != NULL)
	{
		GUC_check_errdetail("The URL must not contain credentials, a query, a fragment or spaces.");
		return false;
	}
	if (host[0] == '[')
	{
		const char *end = strchr(host, ']');

		if (end == NULL)
		{
			GUC_check_errdetail("The IPv6 address in the URL is not closed with \"]\".");
			return false;
		}
		hostlen = end - host + 1;
	}
	else
		hostlen = strcspn(host, ":/");
	if (hostlen == 0)
	{
		GUC_check_errdetail("The URL has no host.");
		return false;
	}
	if (!https && !host_is_loopback(host, hostlen))
	{
		GUC_check_errdetail("Plain http is allowed only to loopback addresses (127.0.0.0/8, localhost, [::1]).");
		return false;
	}
	return true;
}

/* whatsapp.api_version: "v" digits "." digits, as Graph names versions. */
static bool
check_api_version(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	if (p == NULL)
		return true;
	if (*p++ != 'v' || !isdigit((unsigned char) *p))
		goto bad;
	while (isdigit((unsigned char) *p))
		p++;
	if (*p++ != '.' || !isdigit((unsigned char) *p))
		goto bad;
	while (isdigit((unsigned char) *p))
		p++;
	if (*p == '\0')
		return true;
bad:
	GUC_check_errdetail("The Graph API version looks like \"v24.0\".");
	return false;
}

/* whatsapp.default_country_code: empty, or 1 to 3 digits, "+" allowed. */
static bool
check_country_code(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;
	int			n = 0;

	if (p == NULL || *p == '\0')
		return true;
	if (*p == '+')
		p++;
	for (; *p; p++, n++)
		if (!isdigit((unsigned char) *p))
			break;
	if (*p != '\0' || n < 1 || n > 3 || (*newval)[(*newval)[0] == '+'] == '0')
	{
		GUC_check_errdetail("A country calling code is 1 to 3 digits not starting with 0, such as \"52\" or \"+52\".");
		return false;
	}
	return true;
}

/*
 * whatsapp.database: "*" alone, or names separated by commas, each shorter
 * than NAMEDATALEN bytes once the blanks around it are dropped.
 */
static bool
check_database(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;
	bool		star = false;
	int			names = 0;

	if (p == NULL)
		return true;
	while (*p)
	{
		const char *start;
		const char *end;

		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',')
			p++;
		start = p;
		while (*p && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t' ||
							   end[-1] == '\n' || end[-1] == '\r'))
			end--;
		if (end == start)
			continue;
		if (end - start == 1 && *start == '*')
			star = true;
		else
			names++;
		if (end - start >= NAMEDATALEN)
		{
			GUC_check_errdetail("Database name \"%.*s\" is longer than %d bytes.",
								(int) (end - start), start, NAMEDATALEN - 1);
			return false;
		}
	}
	if (star && names > 0)
	{
		GUC_check_errdetail("\"*\" stands alone: it means every database in which the extension is installed.");
		return false;
	}
	return true;
}

static void
define_settings(void)
{
	DefineCustomStringVariable("whatsapp.database",
							   "Databases a delivery worker serves: a comma-separated list, or * for every database with the extension.",
							   "Takes effect on reload. Empty means no database is served.",
							   &wa_database, "",
							   PGC_SIGHUP, 0, check_database, NULL, NULL);
	DefineCustomStringVariable("whatsapp.api_url",
							   "Base URL of the WhatsApp Cloud API.",
							   "https only; http is accepted for loopback addresses (mocks).",
							   &wa_api_url, "https://graph.facebook.com",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   check_api_url, NULL, NULL);
	DefineCustomStringVariable("whatsapp.api_version",
							   "Graph API version used in request paths.",
							   NULL,
							   &wa_api_version, "v24.0",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   check_api_version, NULL, NULL);
	DefineCustomStringVariable("whatsapp.key_file",
							   "File holding the key that seals access tokens and app secrets.",
							   "A relative path is relative to the data directory.",
							   &wa_key_file, "whatsapp.key",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("whatsapp.proxy",
							   "HTTP proxy for requests to the Cloud API; empty means none.",
							   "Proxy variables in the server's environment are ignored.",
							   &wa_proxy, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("whatsapp.odoo_data_dir",
							   "Odoo's data_dir, whose filestore/<database>/ holds the attachments stored as files.",
							   "Read by the worker to upload an invoice's PDF to Meta (\"pdf_upload\"). Empty: only attachments stored in the database can be uploaded.",
							   &wa_odoo_data_dir, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("whatsapp.ca_file",
							   "File of CA certificates that verify the Cloud API's TLS certificate.",
							   "Empty means the system's CA store. Verification itself is always on.",
							   &wa_ca_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.max_inflight",
							"Most requests a worker keeps in flight at once.",
							NULL,
							&wa_max_inflight, 256, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.http_timeout",
							"Time limit for one request to the Cloud API.",
							NULL,
							&wa_http_timeout, 30000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.max_attempts",
							"Attempts before a retryable failure becomes final.",
							NULL,
							&wa_max_attempts, 10, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("whatsapp.in_doubt",
							 "What happens to a message that was in flight when its worker died.",
							 "retry sends it again (it may arrive twice); fail records it as failed.",
							 &wa_in_doubt, WA_IN_DOUBT_RETRY, in_doubt_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.log_retention",
							"Age after which rows of whatsapp.wa_log are purged; 0 keeps them.",
							NULL,
							&wa_log_retention, 30 * 24 * 60, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MIN, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.content_retention",
							"Age after which the content of messages, inbound messages and webhook payloads is set to NULL; 0 keeps it.",
							"Bodies, parameters, raw payloads, inbound text, names and phone numbers go; ids, states, times, codes and pricing stay.",
							&wa_content_retention, 90 * 24 * 60, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MIN, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.poll_interval",
							"Interval of the worker's safety poll of the outbox.",
							NULL,
							&wa_poll_interval, 10000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.shutdown_timeout",
							"How long a stopping worker waits for the answers in flight.",
							NULL,
							&wa_shutdown_timeout, 4000, 0, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.batch_size",
							"Most messages claimed, or results recorded, in one transaction.",
							NULL,
							&wa_batch_size, 500, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.test_fail_start",
							"For tests only: the worker's N-th request start after a reload fails.",
							"0 (the default) injects nothing.  The failure happens once per value set.",
							&wa_test_fail_start, 0, 0, 1000000,
							PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
	DefineCustomStringVariable("whatsapp.default_country_code",
							   "Country calling code added to national phone numbers.",
							   "Empty means national numbers are refused as phone_invalid.",
							   &wa_default_country_code, "",
							   PGC_USERSET, 0, check_country_code, NULL, NULL);
	DefineCustomEnumVariable("whatsapp.window_check",
							 "What a free-form send outside the 24-hour window does.",
							 NULL,
							 &wa_window_check, WA_WINDOW_OFF, window_check_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("whatsapp.odoo_events",
							 "Whether Odoo event triggers enqueue messages.",
							 NULL,
							 &wa_odoo_events, true,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("whatsapp.odoo_max_age",
							"Odoo documents older than this send nothing.",
							"0 means no limit.",
							&wa_odoo_max_age, 7 * 24 * 60, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MIN, NULL, NULL, NULL);

	MarkGUCPrefixReserved("whatsapp");
}

void
_PG_init(void)
{
	/* No worker, no hooks while pg_upgrade runs the server. */
	if (IsBinaryUpgrade)
		return;

	define_settings();
	wa_redact_install_hooks();

	if (!process_shared_preload_libraries_in_progress)
		return;

	wa_preloaded = true;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wa_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wa_shmem_startup_hook;

	wa_install_dbcommand_hook();
	wa_register_workers();
}
