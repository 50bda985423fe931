/*-------------------------------------------------------------------------
 *
 * http.c
 *	  libcurl's multi-socket interface inside the worker's wait-event set.
 *
 * libcurl tells us which sockets to watch (socket callback) and when to
 * call it back (timer callback).  The sockets go into an epoll set of our
 * own, and that one epoll descriptor sits in the worker's PostgreSQL
 * WaitEventSet next to the latch: the worker sleeps in one place and is
 * woken by a commit, a NOTIFY, a signal, a barrier or network traffic
 * alike.  (PostgreSQL 15's WaitEventSet cannot remove a socket, and
 * libcurl adds and removes them all the time, hence the nested set.)
 *
 * Sockets are counted: the worker raises its soft RLIMIT_NOFILE to the
 * hard limit at start, keeps PostgreSQL's own allowance (max_safe_fds)
 * untouched, and opens no more sockets than what is left.
 *
 * Idle connections.  libcurl keeps finished transfers' connections in its
 * pool and stops asking for their sockets to be watched, so a server that
 * closes its side leaves them in CLOSE-WAIT until a later request looks at
 * them; an idle worker would hold them forever.  So the sockets we opened
 * stay in our epoll set while they idle, watched for the peer's hang-up
 * only, and once a server hung up on one and no transfer runs, the whole
 * pool is closed (a fresh multi handle).  The same happens after
 * whatsapp.api_url, proxy or ca_file change.  While transfers run, libcurl
 * itself drops dead connections and those idle over WA_HTTP_MAX_IDLE_S,
 * at most once a second, as requests start.
 *
 * Several multi handles.  libcurl 7.88 walks every connection in a multi
 * handle's pool to the host when a transfer starts (looking for one to
 * reuse) and again when a finished one is removed.  Over HTTP/1.x each
 * request in flight holds a connection of its own, so with one multi
 * handle every request cost two walks of up to max_inflight connections,
 * each a cache miss per connection: at 1,500 in flight that was a third of
 * the worker's CPU (bench/README.md).  So over HTTP/1.x the transfers are
 * spread over up to WA_MAX_SHARDS multi handles ("shards") of about
 * WA_SHARD_TRANSFERS each, every shard with a pool of its own; a new
 * transfer goes to the first shard with room, so a light load keeps using
 * the first pool.  Over HTTP/2, where a few connections carry everything,
 * there is one shard.  All shards' sockets share the one epoll set.
 *
 * A hostile or broken server costs bounded resources: an answer over
 * WA_HTTP_MAX_RESPONSE bytes of body or WA_HTTP_MAX_HEADERS of headers is
 * aborted, not drained, and whatsapp.http_timeout bounds its time.
 *
 * Every libcurl call is checked.  No verbose output, no redirects, no
 * proxy unless whatsapp.proxy names one, TLS verification always on.
 * Nothing in here may raise an error from inside a libcurl callback.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "http.h"

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#if LIBCURL_VERSION_NUM < 0x075500
#error "whatsapp needs libcurl 7.85 or newer"
#endif

#define WA_USER_AGENT "whatsapp-postgresql/" WHATSAPP_VERSION

#define WA_MAX_SHARDS		32
#define WA_SHARD_TRANSFERS	128

typedef struct WaShard
{
	CURLM	   *multi;
	bool		timer_set;
	TimestampTz timer_deadline; /* when libcurl wants to be called back */
	int			running;		/* transfers in it */
} WaShard;

static WaShard shards[WA_MAX_SHARDS];
static int	nshards = 0;		/* created: shards[0 .. nshards - 1] */
static int	epoll_fd = -1;
static int	open_sockets = 0;
static int	socket_budget = 0;

/*
 * What we know of each descriptor libcurl uses, indexed by descriptor.
 * Grown with realloc() inside libcurl's callbacks, which must not raise.
 */
#define WA_SOCK_OURS	0x01	/* opened by opensocket_cb, not closed yet */
#define WA_SOCK_CURL	0x02	/* in the epoll set for libcurl */
#define WA_SOCK_IDLE	0x04	/* pooled: in the epoll set for a hang-up */
#define WA_SOCK_DEAD	0x08	/* pooled, and the server hung up on it */

static uint8 *sock_flags = NULL;
static uint8 *sock_shard = NULL;	/* the shard whose libcurl watches it */
static int	sock_flags_len = 0;
static int	ndead = 0;			/* pooled sockets the server hung up on */

/* api_url, proxy and ca_file as last applied; a change closes the pool */
static char *endpoint_seen = NULL;
static bool endpoint_changed = false;

/* whatsapp.test_fail_start: value last armed, starts left until the fault */
static int	fault_armed_value = 0;
static int	fault_countdown = 0;

static MemoryContext http_context = NULL;
static dlist_head running = DLIST_STATIC_INIT(running);
static dlist_head done = DLIST_STATIC_INIT(done);
static dlist_head pool = DLIST_STATIC_INIT(pool);
static int	nrunning = 0;

void		(*wa_http_on_release) (WaTransfer *t) = NULL;
static int	ndone = 0;

#define CURL_CHECK(call, what) \
	do { \
		CURLcode rc_ = (call); \
		if (rc_ != CURLE_OK) \
			ereport(ERROR, \
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION), \
					 errmsg("libcurl call failed: %s: %s", (what), \
							curl_easy_strerror(rc_)))); \
	} while (0)

#define CURLM_CHECK(call, what) \
	do { \
		CURLMcode rc_ = (call); \
		if (rc_ != CURLM_OK) \
			ereport(ERROR, \
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION), \
					 errmsg("libcurl multi call failed: %s: %s", (what), \
							curl_multi_strerror(rc_)))); \
	} while (0)

/* Make room for descriptor fd in sock_flags; false when out of memory. */
static bool
sock_track(int fd)
{
	uint8	   *grown;
	int			len;

	if (fd < 0)
		return false;
	if (fd < sock_flags_len)
		return true;
	len = Max(sock_flags_len, 256);
	while (len <= fd)
		len *= 2;
	grown = realloc(sock_shard, len);
	if (grown == NULL)
		return false;
	memset(grown + sock_flags_len, 0, len - sock_flags_len);
	sock_shard = grown;
	grown = realloc(sock_flags, len);
	if (grown == NULL)
		return false;
	memset(grown + sock_flags_len, 0, len - sock_flags_len);
	sock_flags = grown;
	sock_flags_len = len;
	return true;
}

/* Watch fd for events; registered says whether it is in the set already. */
static int
epoll_watch(int fd, uint32 events, bool registered)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.fd = fd;
	if (epoll_ctl(epoll_fd, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) == 0)
		return 0;
	if (registered && errno == ENOENT)
		return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
	if (!registered && errno == EEXIST)
		return epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev);
	return -1;
}

static void
epoll_forget(int fd)
{
	/* the socket may already be closed; ENOENT and EBADF are fine */
	if (epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL) != 0 &&
		errno != ENOENT && errno != EBADF)
		elog(WARNING, "whatsapp: epoll_ctl(DEL) failed: %m");
}

/*
 * libcurl's socket callback: mirror its wishes into our epoll set.  A
 * socket of ours that libcurl stops watching goes back to its pool (or is
 * about to be closed): we watch it for the server's hang-up.
 */
static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	uint8		f;

	if (!sock_track(s))
	{
		elog(WARNING, "whatsapp: out of memory tracking socket %d", (int) s);
		return -1;
	}
	f = sock_flags[s];

	if (what == CURL_POLL_REMOVE)
	{
		if ((f & WA_SOCK_OURS) && !(f & WA_SOCK_DEAD))
		{
			if (epoll_watch(s, EPOLLRDHUP, (f & (WA_SOCK_CURL | WA_SOCK_IDLE)) != 0) == 0)
			{
				sock_flags[s] = (f & ~WA_SOCK_CURL) | WA_SOCK_IDLE;
				return 0;
			}
			elog(WARNING, "whatsapp: epoll_ctl for an idle connection failed: %m");
		}
		if (f & (WA_SOCK_CURL | WA_SOCK_IDLE))
			epoll_forget(s);
		sock_flags[s] = f & (WA_SOCK_OURS | WA_SOCK_DEAD);
		return 0;
	}

	if (epoll_watch(s, ((what & CURL_POLL_IN) ? EPOLLIN : 0) |
					((what & CURL_POLL_OUT) ? EPOLLOUT : 0),
					(f & (WA_SOCK_CURL | WA_SOCK_IDLE)) != 0) != 0)
	{
		elog(WARNING, "whatsapp: epoll_ctl failed: %m");
		return -1;
	}
	if (f & WA_SOCK_DEAD)
		ndead--;
	sock_flags[s] = (f & WA_SOCK_OURS) | WA_SOCK_CURL;
	sock_shard[s] = (uint8) ((WaShard *) userp - shards);
	return 0;
}

/* libcurl's timer callback: remember when it wants to be called. */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	WaShard    *sh = (WaShard *) userp;

	if (timeout_ms < 0)
		sh->timer_set = false;
	else
	{
		sh->timer_set = true;
		sh->timer_deadline = GetCurrentTimestamp() + (TimestampTz) timeout_ms * 1000;
	}
	return 0;
}

/* Count sockets against what the process may still open. */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	curl_socket_t s;

	if (open_sockets >= socket_budget)
	{
		errno = EMFILE;
		return CURL_SOCKET_BAD;
	}
	s = socket(addr->family, addr->socktype, addr->protocol);
	if (s == CURL_SOCKET_BAD)
		return s;
	if (!sock_track(s))
	{
		close(s);
		errno = ENOMEM;
		return CURL_SOCKET_BAD;
	}
	sock_flags[s] = WA_SOCK_OURS;
	open_sockets++;
	return s;
}

static int
closesocket_cb(void *clientp, curl_socket_t s)
{
	if (s >= 0 && s < sock_flags_len)
	{
		if (sock_flags[s] & WA_SOCK_DEAD)
			ndead--;
		sock_flags[s] = 0;
	}
	open_sockets--;
	/* close() takes it out of the epoll set too */
	return close(s);
}

/*
 * The body, up to WA_HTTP_MAX_RESPONSE.  Past that the transfer is
 * aborted: answering anything but "all of it" makes libcurl stop with
 * CURLE_WRITE_ERROR, and the rest is never read.
 */
static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	WaTransfer *t = (WaTransfer *) userp;
	size_t		n = size * nmemb;
	size_t		room = WA_HTTP_MAX_RESPONSE - t->response.len;

	if (n > room)
	{
		/* keep the beginning, for the log */
		if (room > 0)
			appendBinaryStringInfo(&t->response, data, room);
		t->oversize = true;
		return 0;
	}
	appendBinaryStringInfo(&t->response, data, n);
	return n;
}

/*
 * Retry-After: delta-seconds, or an HTTP date.  Large values saturate (the
 * caller caps what it honors); -1 when it cannot be read.
 */
static long
parse_retry_after(const char *v, size_t len)
{
	char		buf[64];
	size_t		i = 0;
	size_t		end = len;
	time_t		when;

	while (i < end && (v[i] == ' ' || v[i] == '\t'))
		i++;
	while (end > i && (v[end - 1] == '\r' || v[end - 1] == '\n' ||
					   v[end - 1] == ' ' || v[end - 1] == '\t'))
		end--;
	if (i == end)
		return -1;
	if (v[i] >= '0' && v[i] <= '9')
	{
		long		secs = 0;

		for (; i < end; i++)
		{
			if (v[i] < '0' || v[i] > '9')
				return -1;
			if (secs < 1000000000L)
				secs = secs * 10 + (v[i] - '0');
		}
		return secs;
	}
	if (end - i >= sizeof(buf))
		return -1;
	memcpy(buf, v + i, end - i);
	buf[end - i] = '\0';
	when = curl_getdate(buf, NULL);
	if (when == (time_t) -1)
		return -1;
	when -= time(NULL);
	return when <= 0 ? 0 : (long) Min(when, (time_t) 1000000000);
}

/*
 * Headers: only Retry-After is kept.  Past WA_HTTP_MAX_HEADERS bytes in
 * all, the transfer is aborted.
 */
static size_t
header_cb(char *data, size_t size, size_t nitems, void *userp)
{
	WaTransfer *t = (WaTransfer *) userp;
	size_t		n = size * nitems;

	t->header_bytes += n;
	if (t->header_bytes > WA_HTTP_MAX_HEADERS)
	{
		t->oversize = true;
		return 0;
	}
	if (n > 12 && pg_strncasecmp(data, "retry-after:", 12) == 0)
		t->retry_after = parse_retry_after(data + 12, n - 12);
	return n;
}

/*
 * Raise the soft descriptor limit to the hard one and work out how many
 * sockets the worker may hold beside PostgreSQL's own allowance.
 */
static void
compute_socket_budget(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
	{
		socket_budget = 64;
		return;
	}
	if (rl.rlim_cur != rl.rlim_max)
	{
		struct rlimit raised = rl;

		raised.rlim_cur = rl.rlim_max;
		if (raised.rlim_cur == RLIM_INFINITY || raised.rlim_cur > 1048576)
			raised.rlim_cur = 1048576;
		if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			rl = raised;
	}
	/* PostgreSQL's files, its reserve, and a margin for libcurl itself */
	socket_budget = (int) Min(rl.rlim_cur, (rlim_t) INT_MAX) - max_safe_fds - 10 - 32;
	if (socket_budget < 16)
		socket_budget = 16;
	if (socket_budget < wa_max_inflight)
		ereport(LOG,
				(errmsg("whatsapp worker can open only %d sockets, fewer than whatsapp.max_inflight (%d)",
						socket_budget, wa_max_inflight),
				 errhint("Raise the server's open files limit (ulimit -n) to allow more connections.")));
}

/*
 * HTTP/2: libcurl 7.88 fills the first connection's streams and then opens
 * a new connection for every further transfer, which over TLS costs about
 * 100 kB each.  So over https the connections to the host are capped at
 * what multiplexing needs (Meta's endpoint speaks HTTP/2), and the cap is
 * lifted as soon as an answer shows the server speaks only HTTP/1.x.
 */
#define WA_H2_STREAMS_PER_CONNECTION 100

static bool http1_only = false;

/*
 * How many shards new transfers may use: one over HTTP/2 (or before we
 * know the server), enough for WA_SHARD_TRANSFERS each over HTTP/1.x.
 */
static int
shards_wanted(void)
{
	if (!http1_only && pg_strncasecmp(wa_api_url, "https://", 8) == 0)
		return 1;
	return Min(WA_MAX_SHARDS,
			   Max(1, (wa_max_inflight + WA_SHARD_TRANSFERS - 1) / WA_SHARD_TRANSFERS));
}

/*
 * The connections one shard may hold: its share of max_inflight (or of
 * the socket budget), rounded up, so that all shards together hold about
 * what one multi handle did (at most one more per shard).  pick_shard()
 * gives a full shard no more transfers.
 */
static long
shard_connections(void)
{
	long		conns = Min(wa_max_inflight, socket_budget);
	int			want = shards_wanted();

	return (conns + want - 1) / want;
}

static long
host_connection_cap(void)
{
	long		conns = shard_connections();

	if (http1_only || pg_strncasecmp(wa_api_url, "https://", 8) != 0)
		return conns;
	return Min(conns, wa_max_inflight / WA_H2_STREAMS_PER_CONNECTION + 2);
}

/* Connection limits of a multi handle, from the settings. */
static void
apply_limits(CURLM *m)
{
	long		conns = shard_connections();

	CURLM_CHECK(curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, conns),
				"CURLMOPT_MAX_TOTAL_CONNECTIONS");
	CURLM_CHECK(curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, conns),
				"CURLMOPT_MAXCONNECTS");
	CURLM_CHECK(curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, host_connection_cap()),
				"CURLMOPT_MAX_HOST_CONNECTIONS");
}

static void
apply_limits_all(void)
{
	for (int i = 0; i < nshards; i++)
		apply_limits(shards[i].multi);
}

/* A multi handle for shard sh, with our callbacks and limits; its pool is empty. */
static CURLM *
create_multi(WaShard *sh)
{
	CURLM	   *m = curl_multi_init();

	if (m == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create libcurl multi handle")));
	PG_TRY();
	{
		CURLM_CHECK(curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, socket_cb),
					"CURLMOPT_SOCKETFUNCTION");
		CURLM_CHECK(curl_multi_setopt(m, CURLMOPT_SOCKETDATA, (void *) sh),
					"CURLMOPT_SOCKETDATA");
		CURLM_CHECK(curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, timer_cb),
					"CURLMOPT_TIMERFUNCTION");
		CURLM_CHECK(curl_multi_setopt(m, CURLMOPT_TIMERDATA, (void *) sh),
					"CURLMOPT_TIMERDATA");
		CURLM_CHECK(curl_multi_setopt(m, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX),
					"CURLMOPT_PIPELINING");
		apply_limits(m);
	}
	PG_CATCH();
	{
		CURLMcode	rc = curl_multi_cleanup(m);

		if (rc != CURLM_OK)
			elog(WARNING, "whatsapp: curl_multi_cleanup failed: %s",
				 curl_multi_strerror(rc));
		PG_RE_THROW();
	}
	PG_END_TRY();
	return m;
}

/* Shard i, created if it does not exist yet (shards are made in order). */
static WaShard *
get_shard(int i)
{
	Assert(i <= nshards && i < WA_MAX_SHARDS);
	if (i == nshards)
	{
		WaShard    *sh = &shards[i];

		memset(sh, 0, sizeof(WaShard));
		sh->multi = create_multi(sh);
		nshards++;
	}
	return &shards[i];
}

/*
 * Close every pooled connection: fresh multi handles replace the old
 * ones.  Only while no transfer runs (the done ones were removed already).
 */
static void
reset_pool(const char *why)
{
	int			before = open_sockets;

	Assert(nrunning == 0);
	while (nshards > 0)
	{
		WaShard    *sh = &shards[nshards - 1];
		CURLM	   *old = sh->multi;

		/* closes the old pool's sockets through closesocket_cb */
		sh->multi = NULL;
		sh->timer_set = false;
		nshards--;
		CURLM_CHECK(curl_multi_cleanup(old), "curl_multi_cleanup");
	}
	(void) get_shard(0);
	ndead = 0;
	endpoint_changed = false;
	ereport(DEBUG1,
			(errmsg_internal("whatsapp worker closed %d pooled connections: %s",
							 before - open_sockets, why)));
}

/*
 * Settings, at start and after a reload.  A new API endpoint (api_url,
 * proxy or ca_file) closes the pool, at once or as soon as the transfers
 * to the old one are done, and forgets what the old server spoke.
 */
void
wa_http_apply_settings(void)
{
	char	   *endpoint = psprintf("%s\n%s\n%s", wa_api_url ? wa_api_url : "",
									wa_proxy ? wa_proxy : "",
									wa_ca_file ? wa_ca_file : "");

	if (endpoint_seen == NULL || strcmp(endpoint_seen, endpoint) != 0)
	{
		if (endpoint_seen != NULL)
		{
			pfree(endpoint_seen);
			endpoint_changed = true;
			http1_only = false;
			ereport(LOG,
					(errmsg("whatsapp worker: the API endpoint changed; its pooled connections are closed"),
					 nrunning > 0 ?
					 errdetail("The %d requests in flight to the old endpoint finish first.", nrunning) : 0));
		}
		endpoint_seen = MemoryContextStrdup(http_context, endpoint);
	}
	pfree(endpoint);

	if (wa_test_fail_start != fault_armed_value)
	{
		fault_armed_value = wa_test_fail_start;
		fault_countdown = wa_test_fail_start;
		if (fault_countdown > 0)
			ereport(LOG,
					(errmsg("whatsapp worker: whatsapp.test_fail_start = %d: the request start number %d from now will fail",
							fault_countdown, fault_countdown),
					 errhint("This setting exists for tests only; set it to 0.")));
	}

	apply_limits_all();
	if (endpoint_changed && nrunning == 0)
		reset_pool("the API endpoint changed");
}

void
wa_http_init(void)
{
	CURLcode	rc;

	rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not initialize libcurl: %s", curl_easy_strerror(rc))));

	http_context = AllocSetContextCreate(TopMemoryContext, "whatsapp http",
										 ALLOCSET_DEFAULT_SIZES);
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create epoll set for whatsapp worker: %m")));
	ReserveExternalFD();

	compute_socket_budget();

	(void) get_shard(0);
	wa_http_apply_settings();
}

static void
free_transfer(WaTransfer *t)
{
	if (t->easy)
		curl_easy_cleanup(t->easy);
	pfree(t->request.data);
	pfree(t->response.data);
	pfree(t);
}

void
wa_http_shutdown(void)
{
	dlist_mutable_iter it;
	CURLMcode	rc;

	if (nshards == 0)
		return;
	wa_http_abandon_all();
	dlist_foreach_modify(it, &done)
	{
		dlist_delete(it.cur);
		free_transfer(dlist_container(WaTransfer, node, it.cur));
	}
	ndone = 0;
	dlist_foreach_modify(it, &pool)
	{
		dlist_delete(it.cur);
		free_transfer(dlist_container(WaTransfer, node, it.cur));
	}
	/* this runs at exit: report, but do not raise */
	while (nshards > 0)
	{
		WaShard    *sh = &shards[--nshards];

		rc = curl_multi_cleanup(sh->multi);
		sh->multi = NULL;
		if (rc != CURLM_OK)
			elog(WARNING, "whatsapp: curl_multi_cleanup failed: %s", curl_multi_strerror(rc));
	}
	free(sock_flags);
	sock_flags = NULL;
	free(sock_shard);
	sock_shard = NULL;
	sock_flags_len = 0;
	ndead = 0;
	if (epoll_fd >= 0)
	{
		close(epoll_fd);
		ReleaseExternalFD();
		epoll_fd = -1;
	}
	curl_global_cleanup();
}

pgsocket
wa_http_event_socket(void)
{
	return epoll_fd;
}

WaTransfer *
wa_http_new_transfer(void)
{
	WaTransfer *t;

	if (!dlist_is_empty(&pool))
	{
		t = dlist_container(WaTransfer, node, dlist_pop_head_node(&pool));
		resetStringInfo(&t->request);
		resetStringInfo(&t->response);
	}
	else
	{
		MemoryContext old = MemoryContextSwitchTo(http_context);

		t = palloc0(sizeof(WaTransfer));
		initStringInfo(&t->request);
		initStringInfo(&t->response);
		MemoryContextSwitchTo(old);
	}
	t->oversize = false;
	t->header_bytes = 0;
	t->retry_after = -1;
	t->result = CURLE_OK;
	t->http_status = 0;
	t->errbuf[0] = '\0';
	return t;
}

/*
 * Back to the pool.  Buffers that grew large are given back, so a burst
 * of big answers does not pin memory.
 */
void
wa_http_release(WaTransfer *t)
{
	if (t->headers_ref != NULL && wa_http_on_release != NULL)
		wa_http_on_release(t);
	t->headers_ref = NULL;
	if (t->response.maxlen > 8192)
	{
		MemoryContext old = MemoryContextSwitchTo(http_context);

		pfree(t->response.data);
		initStringInfo(&t->response);
		MemoryContextSwitchTo(old);
	}
	if (t->request.maxlen > 8192)
	{
		MemoryContext old = MemoryContextSwitchTo(http_context);

		pfree(t->request.data);
		initStringInfo(&t->request);
		MemoryContextSwitchTo(old);
	}
	dlist_push_head(&pool, &t->node);
}

/*
 * The shard for a new transfer: the first with room, else the least busy
 * (only more transfers than max_inflight, or a lowered setting, get there;
 * libcurl then queues it until one of that shard's connections is free).
 */
static WaShard *
pick_shard(void)
{
	int			want = shards_wanted();
	long		room = shard_connections();
	WaShard    *best = NULL;

	for (int i = 0; i < want; i++)
	{
		WaShard    *sh = get_shard(i);

		if (sh->running < room)
			return sh;
		if (best == NULL || sh->running < best->running)
			best = sh;
	}
	return best;
}

void
wa_http_start(WaTransfer *t, const char *url, struct curl_slist *headers)
{
	CURL	   *e;
	WaShard    *sh;

	if (t->easy == NULL)
	{
		t->easy = curl_easy_init();
		if (t->easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create libcurl handle")));
	}
	else
		curl_easy_reset(t->easy);
	e = t->easy;

	CURL_CHECK(curl_easy_setopt(e, CURLOPT_URL, url), "CURLOPT_URL");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http"), "CURLOPT_PROTOCOLS_STR");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L), "CURLOPT_FOLLOWLOCATION");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_PROXY, wa_proxy ? wa_proxy : ""), "CURLOPT_PROXY");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L), "CURLOPT_SSL_VERIFYPEER");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L), "CURLOPT_SSL_VERIFYHOST");
	if (wa_ca_file != NULL && wa_ca_file[0] != '\0')
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_CAINFO, wa_ca_file), "CURLOPT_CAINFO");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_VERBOSE, 0L), "CURLOPT_VERBOSE");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L), "CURLOPT_NOSIGNAL");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_NOPROGRESS, 1L), "CURLOPT_NOPROGRESS");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS), "CURLOPT_HTTP_VERSION");
	/*
	 * Over TLS, wait for a connection that may multiplex (HTTP/2) rather
	 * than open one per request.  Plain http (loopback mocks) stays
	 * HTTP/1.1, where waiting would hold every request until the first
	 * answer came back.
	 */
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_PIPEWAIT,
								pg_strncasecmp(url, "https://", 8) == 0 ? 1L : 0L),
			   "CURLOPT_PIPEWAIT");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L), "CURLOPT_TCP_KEEPALIVE");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, (long) WA_HTTP_MAX_IDLE_S),
			   "CURLOPT_MAXAGE_CONN");
	/* an announced Content-Length over the cap fails before the body */
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) WA_HTTP_MAX_RESPONSE),
			   "CURLOPT_MAXFILESIZE_LARGE");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) wa_http_timeout), "CURLOPT_TIMEOUT_MS");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(wa_http_timeout, 10000)),
			   "CURLOPT_CONNECTTIMEOUT_MS");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_USERAGENT, WA_USER_AGENT), "CURLOPT_USERAGENT");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers), "CURLOPT_HTTPHEADER");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long) t->request.len), "CURLOPT_POSTFIELDSIZE");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->request.data), "CURLOPT_POSTFIELDS");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb), "CURLOPT_WRITEFUNCTION");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_WRITEDATA, t), "CURLOPT_WRITEDATA");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb), "CURLOPT_HEADERFUNCTION");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_HEADERDATA, t), "CURLOPT_HEADERDATA");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb), "CURLOPT_OPENSOCKETFUNCTION");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb), "CURLOPT_CLOSESOCKETFUNCTION");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf), "CURLOPT_ERRORBUFFER");
	CURL_CHECK(curl_easy_setopt(e, CURLOPT_PRIVATE, t), "CURLOPT_PRIVATE");

	/* whatsapp.test_fail_start: a failure where libcurl's own would be */
	if (fault_countdown > 0 && --fault_countdown == 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not start the request of whatsapp message " INT64_FORMAT,
						t->message_id),
				 errdetail("The failure was injected by whatsapp.test_fail_start = %d.",
						   fault_armed_value),
				 errhint("Set whatsapp.test_fail_start to 0; it exists for tests only.")));

	sh = pick_shard();
	INSTR_TIME_SET_CURRENT(t->started);
	CURLM_CHECK(curl_multi_add_handle(sh->multi, e), "curl_multi_add_handle");
	t->shard = (int) (sh - shards);
	sh->running++;
	dlist_push_tail(&running, &t->node);
	nrunning++;
}

/* Move finished transfers of one shard from libcurl to our done list. */
static void
collect_finished(WaShard *sh)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(sh->multi, &left)) != NULL)
	{
		WaTransfer *t = NULL;
		instr_time	now;

		if (msg->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t) != CURLE_OK || t == NULL)
			elog(ERROR, "whatsapp: finished libcurl transfer has no owner");
		t->result = msg->data.result;
		if (t->result == CURLE_FILESIZE_EXCEEDED)
			t->oversize = true;
		if (curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->http_status) != CURLE_OK)
			t->http_status = 0;
		if (!http1_only && t->result == CURLE_OK && t->http_status > 0)
		{
			long		version = 0;

			if (curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version) == CURLE_OK &&
				(version == CURL_HTTP_VERSION_1_0 || version == CURL_HTTP_VERSION_1_1))
			{
				http1_only = true;
				apply_limits_all();
				ereport(DEBUG1,
						(errmsg_internal("whatsapp worker: the API server answers over HTTP/1.x; up to %ld connections to it in each of up to %d pools",
										 host_connection_cap(), shards_wanted())));
			}
		}
		INSTR_TIME_SET_CURRENT(now);
		INSTR_TIME_SUBTRACT(now, t->started);
		t->latency_ms = INSTR_TIME_GET_MILLISEC(now);
		CURLM_CHECK(curl_multi_remove_handle(sh->multi, t->easy), "curl_multi_remove_handle");
		sh->running--;
		dlist_delete(&t->node);
		nrunning--;
		dlist_push_tail(&done, &t->node);
		ndone++;
	}
}

void
wa_http_perform(void)
{
	struct epoll_event events[256];
	int			n;
	int			still_running;
	TimestampTz now;

	if (nshards == 0)
		return;
	do
	{
		n = epoll_wait(epoll_fd, events, lengthof(events), 0);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(ERROR,
					(errcode_for_socket_access(),
					 errmsg("epoll_wait failed in whatsapp worker: %m")));
		}
		for (int i = 0; i < n; i++)
		{
			int			fd = events[i].data.fd;
			uint32		ev = events[i].events;
			uint8		f = (fd >= 0 && fd < sock_flags_len) ? sock_flags[fd] : 0;
			int			flags = 0;

			if (f & WA_SOCK_IDLE)
			{
				/* a pooled connection that the server closed or reset */
				if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
				{
					epoll_forget(fd);
					sock_flags[fd] = (f & ~WA_SOCK_IDLE) | WA_SOCK_DEAD;
					ndead++;
				}
				continue;
			}
			if (!(f & WA_SOCK_CURL))
			{
				/* stale: closed and forgotten since */
				epoll_forget(fd);
				continue;
			}
			if (ev & (EPOLLIN | EPOLLHUP))
				flags |= CURL_CSELECT_IN;
			if (ev & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (ev & EPOLLERR)
				flags |= CURL_CSELECT_ERR;
			CURLM_CHECK(curl_multi_socket_action(shards[sock_shard[fd]].multi, fd, flags,
												 &still_running),
						"curl_multi_socket_action");
		}
	} while (n == lengthof(events));

	now = GetCurrentTimestamp();
	for (int i = 0; i < nshards; i++)
	{
		WaShard    *sh = &shards[i];

		if (sh->timer_set && now >= sh->timer_deadline)
		{
			sh->timer_set = false;
			CURLM_CHECK(curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0,
												 &still_running),
						"curl_multi_socket_action");
		}
	}
	for (int i = 0; i < nshards; i++)
		collect_finished(&shards[i]);

	/*
	 * Nothing in flight: close the pool if a server hung up on a pooled
	 * connection, or the endpoint changed.  (With transfers running,
	 * libcurl drops dead connections itself as requests start.)
	 */
	if (nrunning == 0 && ndead > 0)
		reset_pool("the server closed some of them");
	else if (nrunning == 0 && endpoint_changed)
		reset_pool("the API endpoint changed");
}

long
wa_http_next_timeout(void)
{
	TimestampTz first = 0;
	long		ms;

	for (int i = 0; i < nshards; i++)
		if (shards[i].timer_set &&
			(first == 0 || shards[i].timer_deadline < first))
			first = shards[i].timer_deadline;
	if (first == 0)
		return -1;
	/*
	 * Rounded up: a deadline less than a millisecond away is waited for,
	 * not polled for with zero timeouts until it passes.
	 */
	ms = (long) ((first - GetCurrentTimestamp() + 999) / 1000);
	return ms < 0 ? 0 : ms;
}

WaTransfer *
wa_http_next_done(void)
{
	if (dlist_is_empty(&done))
		return NULL;
	ndone--;
	return dlist_container(WaTransfer, node, dlist_pop_head_node(&done));
}

int
wa_http_running(void)
{
	return nrunning;
}

int
wa_http_open_sockets(void)
{
	return open_sockets;
}

int
wa_http_done_count(void)
{
	return ndone;
}

/* Stop the running transfers of one account (account_id < 0: all). */
int
wa_http_abandon(int32 account_id)
{
	dlist_mutable_iter it;
	int			n = 0;

	if (nshards == 0)
		return 0;
	dlist_foreach_modify(it, &running)
	{
		WaTransfer *t = dlist_container(WaTransfer, node, it.cur);

		if (account_id >= 0 && t->account_id != account_id)
			continue;
		CURLM_CHECK(curl_multi_remove_handle(shards[t->shard].multi, t->easy),
					"curl_multi_remove_handle");
		shards[t->shard].running--;
		dlist_delete(&t->node);
		nrunning--;
		wa_http_release(t);
		n++;
	}
	dlist_foreach_modify(it, &done)
	{
		WaTransfer *t = dlist_container(WaTransfer, node, it.cur);

		if (account_id >= 0 && t->account_id != account_id)
			continue;
		dlist_delete(&t->node);
		ndone--;
		wa_http_release(t);
	}
	return n;
}

int
wa_http_abandon_all(void)
{
	return wa_http_abandon(-1);
}

/* ----------
 * Media upload (POST /<phone_number_id>/media, multipart), synchronous.
 *
 * For the rare file the worker sends by id rather than by link (an Odoo
 * invoice's PDF, odoo_pdf.c): one request on an easy handle of its own,
 * with the same protocol, proxy, TLS and size limits as the messages, and
 * a bound of its own on the time it may hold the worker up.
 * ----------
 */
typedef struct UploadAnswer
{
	StringInfoData body;
	bool		too_big;
} UploadAnswer;

static size_t
upload_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	UploadAnswer *a = (UploadAnswer *) arg;
	size_t		n = size * nmemb;

	if (a->body.len + n > WA_HTTP_MAX_RESPONSE)
	{
		a->too_big = true;
		return 0;
	}
	appendBinaryStringInfo(&a->body, data, n);
	return n;
}

/*
 * Upload data (len bytes of type mime, named filename) to url with the
 * Authorization header auth.  Returns the media id Meta answers, or NULL
 * with *why set.  The answer's body is checked by the caller's JSON
 * reader; here only its "id" string is taken.
 */
char *
wa_http_upload_media(const char *url, const char *auth, const char *filename,
					 const char *mime, const char *data, size_t len, char **why)
{
	CURL	   *e = curl_easy_init();
	curl_mime  *form = NULL;
	curl_mimepart *part;
	struct curl_slist *headers = NULL;
	UploadAnswer answer;
	CURLcode	rc;
	long		status = 0;
	char	   *id = NULL;
	char		errbuf[CURL_ERROR_SIZE];

	*why = NULL;
	if (e == NULL)
	{
		*why = pstrdup("libcurl could not make a handle");
		return NULL;
	}
	initStringInfo(&answer.body);
	answer.too_big = false;
	errbuf[0] = '\0';
	PG_TRY();
	{
		if ((headers = curl_slist_append(NULL, auth)) == NULL ||
			curl_slist_append(headers, "Expect:") == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
							errmsg("could not build the upload's headers")));
		form = curl_mime_init(e);
		if (form == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
							errmsg("could not build the upload's form")));
		part = curl_mime_addpart(form);
		CURL_CHECK(part ? curl_mime_name(part, "messaging_product") : CURLE_OUT_OF_MEMORY, "curl_mime_name");
		CURL_CHECK(curl_mime_data(part, "whatsapp", CURL_ZERO_TERMINATED), "curl_mime_data");
		part = curl_mime_addpart(form);
		CURL_CHECK(part ? curl_mime_name(part, "type") : CURLE_OUT_OF_MEMORY, "curl_mime_name");
		CURL_CHECK(curl_mime_data(part, mime, CURL_ZERO_TERMINATED), "curl_mime_data");
		part = curl_mime_addpart(form);
		CURL_CHECK(part ? curl_mime_name(part, "file") : CURLE_OUT_OF_MEMORY, "curl_mime_name");
		CURL_CHECK(curl_mime_data(part, data, len), "curl_mime_data");
		CURL_CHECK(curl_mime_type(part, mime), "curl_mime_type");
		CURL_CHECK(curl_mime_filename(part, filename), "curl_mime_filename");

		CURL_CHECK(curl_easy_setopt(e, CURLOPT_URL, url), "CURLOPT_URL");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http"), "CURLOPT_PROTOCOLS_STR");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L), "CURLOPT_FOLLOWLOCATION");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_PROXY, wa_proxy ? wa_proxy : ""), "CURLOPT_PROXY");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L), "CURLOPT_SSL_VERIFYPEER");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L), "CURLOPT_SSL_VERIFYHOST");
		if (wa_ca_file != NULL && wa_ca_file[0] != '\0')
			CURL_CHECK(curl_easy_setopt(e, CURLOPT_CAINFO, wa_ca_file), "CURLOPT_CAINFO");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L), "CURLOPT_NOSIGNAL");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) WA_HTTP_MAX_RESPONSE),
				   "CURLOPT_MAXFILESIZE_LARGE");
		/* a file takes longer than a message: four times the message timeout */
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) wa_http_timeout * 4), "CURLOPT_TIMEOUT_MS");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(wa_http_timeout, 10000)),
				   "CURLOPT_CONNECTTIMEOUT_MS");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_USERAGENT, WA_USER_AGENT), "CURLOPT_USERAGENT");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers), "CURLOPT_HTTPHEADER");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_MIMEPOST, form), "CURLOPT_MIMEPOST");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, upload_write_cb), "CURLOPT_WRITEFUNCTION");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_WRITEDATA, &answer), "CURLOPT_WRITEDATA");
		CURL_CHECK(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf), "CURLOPT_ERRORBUFFER");

		rc = curl_easy_perform(e);
		if (rc != CURLE_OK)
			*why = psprintf("the upload failed: %s",
							answer.too_big ? "the answer is larger than 64 kB" :
							errbuf[0] ? errbuf : curl_easy_strerror(rc));
		else
		{
			CURL_CHECK(curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status), "CURLINFO_RESPONSE_CODE");
			if (status != 200)
				*why = psprintf("the upload was answered with HTTP %ld", status);
			else
			{
				Jsonb	   *j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
																   CStringGetDatum(answer.body.data)));
				JsonbValue *v = JB_ROOT_IS_OBJECT(j) ?
					getKeyJsonValueFromContainer(&j->root, "id", 2, NULL) : NULL;

				if (v != NULL && v->type == jbvString && v->val.string.len > 0 &&
					v->val.string.len < 128)
					id = pnstrdup(v->val.string.val, v->val.string.len);
				else
					*why = pstrdup("the upload's answer has no media id");
			}
		}
	}
	PG_FINALLY();
	{
		if (headers != NULL)
		{
			for (struct curl_slist *s = headers; s != NULL; s = s->next)
				explicit_bzero(s->data, strlen(s->data));
			curl_slist_free_all(headers);
		}
		curl_easy_cleanup(e);
		if (form != NULL)
			curl_mime_free(form);
	}
	PG_END_TRY();
	return id;
}
