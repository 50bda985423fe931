/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The worker's HTTP engine: libcurl's multi-socket interface driven from
 *	  a PostgreSQL wait-event set.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WHATSAPP_HTTP_H
#define WHATSAPP_HTTP_H

#include <curl/curl.h>

#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "portability/instr_time.h"

/*
 * Caps on what one answer may cost.  A body that would grow past
 * WA_HTTP_MAX_RESPONSE, or response headers past WA_HTTP_MAX_HEADERS, abort
 * the transfer: the rest is never read.  Meta's answers are a few hundred
 * bytes.
 */
#define WA_HTTP_MAX_RESPONSE (64 * 1024)
#define WA_HTTP_MAX_HEADERS (32 * 1024)

/*
 * A pooled connection idle this long is not reused, and libcurl closes it
 * when a request starts (seconds).
 */
#define WA_HTTP_MAX_IDLE_S 60

typedef struct WaTransfer
{
	dlist_node	node;			/* in the engine's running or done list */
	int64		message_id;
	int32		account_id;
	int32		attempt;		/* attempt number of this request */
	CURL	   *easy;
	int			shard;			/* index of the multi handle running it */
	StringInfoData request;		/* request body, kept alive while running */
	StringInfoData response;	/* response body, capped */
	bool		oversize;		/* over a cap: aborted, response cut */
	size_t		header_bytes;	/* response headers so far */
	long		retry_after;	/* seconds from Retry-After, or -1 */
	instr_time	started;
	void	   *headers_ref;	/* the owner's reference to the headers used */
	/* the worker's bookkeeping, set at claim; the engine does not read it */
	bool		pair_waiting;	/* the recipient had more queued at claim */
	uint64		claim_seq;		/* the account's claim count at claim */
	/* filled when done */
	CURLcode	result;
	long		http_status;
	double		latency_ms;
	char		errbuf[CURL_ERROR_SIZE];
} WaTransfer;

/* Called for every transfer given back to the pool (to drop headers_ref). */
extern void (*wa_http_on_release) (WaTransfer *t);

extern void wa_http_init(void);
extern void wa_http_shutdown(void);
extern pgsocket wa_http_event_socket(void);
extern void wa_http_apply_settings(void);

/* A transfer from the pool, with empty buffers. */
extern WaTransfer *wa_http_new_transfer(void);
extern void wa_http_release(WaTransfer *t);

/* Start a POST of t->request to url with the given headers. */
extern void wa_http_start(WaTransfer *t, const char *url,
						  struct curl_slist *headers);

/* Drive transfers: after the event socket is readable, or periodically. */
extern void wa_http_perform(void);

/* Milliseconds until libcurl wants to be called again, or -1. */
extern long wa_http_next_timeout(void);

/* Finished transfers, oldest first; NULL when none. */
extern WaTransfer *wa_http_next_done(void);

extern int	wa_http_running(void);

/* Connections libcurl holds open now (in use or pooled). */
extern int	wa_http_open_sockets(void);
extern int	wa_http_done_count(void);

/* Stop transfers without recording anything (account dropped, extension gone). */
extern int	wa_http_abandon(int32 account_id);
extern int	wa_http_abandon_all(void);

/* POST a file to Meta's media endpoint; the media id, or NULL with *why. */
extern char *wa_http_upload_media(const char *url, const char *auth, const char *filename,
								  const char *mime, const char *data, size_t len,
								  char **why);

#endif							/* WHATSAPP_HTTP_H */
