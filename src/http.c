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
 * Every libcurl call is checked.  No verbose output, no redirects, no
 * proxy unless whatsapp.proxy names one, TLS verification always on.
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
#include "utils/memutils.h"

#if LIBCURL_VERSION_NUM < 0x075500
#error "whatsapp needs libcurl 7.85 or newer"
#endif

#define WA_USER_AGENT "whatsapp-postgresql/" WHATSAPP_VERSION

static CURLM *multi = NULL;
static int	epoll_fd = -1;
static TimestampTz timer_deadline = 0;	/* 0: libcurl wants no timeout */
static bool timer_set = false;
static int	open_sockets = 0;
static int	socket_budget = 0;

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

/* libcurl's socket callback: mirror its wishes into our epoll set. */
static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	if (what == CURL_POLL_REMOVE)
	{
		if (socketp != NULL)
		{
			/* the socket may already be closed; ENOENT and EBADF are fine */
			if (epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s, NULL) != 0 &&
				errno != ENOENT && errno != EBADF)
				elog(WARNING, "whatsapp: epoll_ctl(DEL) failed: %m");
			curl_multi_assign(multi, s, NULL);
		}
		return 0;
	}
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) |
		((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	if (socketp == NULL)
	{
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev) != 0)
		{
			if (errno != EEXIST || epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev) != 0)
			{
				elog(WARNING, "whatsapp: epoll_ctl(ADD) failed: %m");
				return -1;
			}
		}
		if (curl_multi_assign(multi, s, (void *) 1) != CURLM_OK)
			return -1;
	}
	else if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev) != 0)
	{
		if (errno != ENOENT || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev) != 0)
		{
			elog(WARNING, "whatsapp: epoll_ctl(MOD) failed: %m");
			return -1;
		}
	}
	return 0;
}

/* libcurl's timer callback: remember when it wants to be called. */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_set = false;
	else
	{
		timer_set = true;
		timer_deadline = GetCurrentTimestamp() + (TimestampTz) timeout_ms * 1000;
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
	if (s != CURL_SOCKET_BAD)
		open_sockets++;
	return s;
}

static int
closesocket_cb(void *clientp, curl_socket_t s)
{
	open_sockets--;
	return close(s);
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	WaTransfer *t = (WaTransfer *) userp;
	size_t		n = size * nmemb;
	size_t		room = WA_HTTP_MAX_RESPONSE - t->response.len;

	if (n > room)
	{
		t->truncated = true;
		if (room > 0)
			appendBinaryStringInfo(&t->response, data, room);
	}
	else
		appendBinaryStringInfo(&t->response, data, n);
	return n;
}

/* Pick out Retry-After (seconds); other headers are not kept. */
static size_t
header_cb(char *data, size_t size, size_t nitems, void *userp)
{
	WaTransfer *t = (WaTransfer *) userp;
	size_t		n = size * nitems;

	if (n > 12 && pg_strncasecmp(data, "retry-after:", 12) == 0)
	{
		long		v = 0;
		size_t		i = 12;

		while (i < n && (data[i] == ' ' || data[i] == '\t'))
			i++;
		if (i < n && data[i] >= '0' && data[i] <= '9')
		{
			while (i < n && data[i] >= '0' && data[i] <= '9' && v < 86400 * 7)
				v = v * 10 + (data[i++] - '0');
			t->retry_after = v;
		}
	}
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

static long
host_connection_cap(void)
{
	long		conns = Min(wa_max_inflight, socket_budget);

	if (http1_only || pg_strncasecmp(wa_api_url, "https://", 8) != 0)
		return conns;
	return Min(conns, wa_max_inflight / WA_H2_STREAMS_PER_CONNECTION + 2);
}

void
wa_http_apply_settings(void)
{
	long		conns = Min(wa_max_inflight, socket_budget);

	CURLM_CHECK(curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, conns),
				"CURLMOPT_MAX_TOTAL_CONNECTIONS");
	CURLM_CHECK(curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, conns),
				"CURLMOPT_MAXCONNECTS");
	CURLM_CHECK(curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, host_connection_cap()),
				"CURLMOPT_MAX_HOST_CONNECTIONS");
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

	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create libcurl multi handle")));
	CURLM_CHECK(curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb),
				"CURLMOPT_SOCKETFUNCTION");
	CURLM_CHECK(curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb),
				"CURLMOPT_TIMERFUNCTION");
	CURLM_CHECK(curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX),
				"CURLMOPT_PIPELINING");
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

	if (multi == NULL)
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
	curl_multi_cleanup(multi);
	multi = NULL;
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
	t->truncated = false;
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

void
wa_http_start(WaTransfer *t, const char *url, struct curl_slist *headers)
{
	CURL	   *e;

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

	INSTR_TIME_SET_CURRENT(t->started);
	CURLM_CHECK(curl_multi_add_handle(multi, e), "curl_multi_add_handle");
	dlist_push_tail(&running, &t->node);
	nrunning++;
}

/* Move finished transfers from libcurl to our done list. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		WaTransfer *t = NULL;
		instr_time	now;

		if (msg->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t) != CURLE_OK || t == NULL)
			elog(ERROR, "whatsapp: finished libcurl transfer has no owner");
		t->result = msg->data.result;
		if (curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->http_status) != CURLE_OK)
			t->http_status = 0;
		if (!http1_only && t->result == CURLE_OK && t->http_status > 0)
		{
			long		version = 0;

			if (curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version) == CURLE_OK &&
				(version == CURL_HTTP_VERSION_1_0 || version == CURL_HTTP_VERSION_1_1))
			{
				http1_only = true;
				wa_http_apply_settings();
			}
		}
		INSTR_TIME_SET_CURRENT(now);
		INSTR_TIME_SUBTRACT(now, t->started);
		t->latency_ms = INSTR_TIME_GET_MILLISEC(now);
		CURLM_CHECK(curl_multi_remove_handle(multi, t->easy), "curl_multi_remove_handle");
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

	if (multi == NULL)
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
			int			flags = 0;

			if (events[i].events & (EPOLLIN | EPOLLHUP))
				flags |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (events[i].events & EPOLLERR)
				flags |= CURL_CSELECT_ERR;
			CURLM_CHECK(curl_multi_socket_action(multi, events[i].data.fd, flags,
												 &still_running),
						"curl_multi_socket_action");
		}
	} while (n == lengthof(events));

	if (timer_set && GetCurrentTimestamp() >= timer_deadline)
	{
		timer_set = false;
		CURLM_CHECK(curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0,
											 &still_running),
					"curl_multi_socket_action");
	}
	collect_finished();
}

long
wa_http_next_timeout(void)
{
	long		ms;

	if (!timer_set)
		return -1;
	ms = (long) ((timer_deadline - GetCurrentTimestamp()) / 1000);
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

	if (multi == NULL)
		return 0;
	dlist_foreach_modify(it, &running)
	{
		WaTransfer *t = dlist_container(WaTransfer, node, it.cur);

		if (account_id >= 0 && t->account_id != account_id)
			continue;
		CURLM_CHECK(curl_multi_remove_handle(multi, t->easy), "curl_multi_remove_handle");
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
