/*-------------------------------------------------------------------------
 *
 * shared.c
 *	  Shared memory between the backends that enqueue, the launcher and
 *	  the workers that deliver: one slot per served database, the
 *	  commit-time wakes, the holds of database-level commands, and the
 *	  worker status function behind the whatsapp.status view.
 *
 * A backend that enqueued a message sets the worker's latch from a
 * transaction callback once its transaction has committed.  The callback
 * runs after the commit is recorded and so must not raise: it only uses
 * atomics, a spinlock and SetLatch.  The same callback rings the
 * launcher's doorbell after CREATE EXTENSION or CREATE DATABASE, so that
 * with whatsapp.database = '*' a new database is served within a second.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include <signal.h>

#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

WaShared   *wa_shared = NULL;

/* Per-transaction wishes, applied at commit by wa_xact_callback. */
static bool wake_at_commit = false;
static bool pdf_wait_at_commit = false;
static bool accounts_changed_at_commit = false;
static bool launcher_wake_at_commit = false;
static Oid	launcher_announce_at_commit = InvalidOid;
static bool xact_callback_registered = false;

static Size
shared_size(void)
{
	return add_size(offsetof(WaShared, slots),
					mul_size(max_worker_processes, sizeof(WaDbSlot)));
}

void
wa_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(shared_size()));
	RequestNamedLWLockTranche("whatsapp", 1);
}

void
wa_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wa_shared = ShmemInitStruct("whatsapp", shared_size(), &found);
	if (!found)
	{
		memset(wa_shared, 0, shared_size());
		wa_shared->lock = &(GetNamedLWLockTranche("whatsapp"))->lock;
		SpinLockInit(&wa_shared->announce_mutex);
		wa_shared->nslots = max_worker_processes;
		for (int i = 0; i < wa_shared->nslots; i++)
		{
			WaDbSlot   *slot = &wa_shared->slots[i];

			pg_atomic_init_u32(&slot->wake_pending, 0);
			pg_atomic_init_u32(&slot->pdf_wait_pending, 0);
			pg_atomic_init_u32(&slot->accounts_generation, 0);
			pg_atomic_init_u64(&slot->sent_total, 0);
			pg_atomic_init_u32(&slot->inflight, 0);
			pg_atomic_init_u64(&slot->queue_depth, 0);
			pg_atomic_init_u64(&slot->sent_last_minute, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Is whatsapp.database "*" (blanks around it allowed)? */
bool
wa_serve_all(void)
{
	const char *p = wa_database;

	if (p == NULL)
		return false;
	while (is_blank(*p))
		p++;
	if (*p++ != '*')
		return false;
	while (is_blank(*p))
		p++;
	return *p == '\0';
}

/*
 * Split a whatsapp.database list into names (palloc'd, in the current
 * memory context).  Blanks around names are dropped, duplicates and empty
 * entries skipped, names cut to NAMEDATALEN - 1 bytes as PostgreSQL cuts
 * identifiers.  "*" yields no names: see wa_serve_all().
 */
List *
wa_database_names(const char *list)
{
	List	   *names = NIL;
	const char *p = list;

	if (list == NULL)
		return NIL;
	while (*p)
	{
		const char *start;
		const char *end;
		int			len;
		char	   *name;
		ListCell   *lc;
		bool		dup = false;

		while (is_blank(*p) || *p == ',')
			p++;
		start = p;
		while (*p && *p != ',')
			p++;
		end = p;
		while (end > start && is_blank(end[-1]))
			end--;
		len = end - start;
		if (len == 0 || (len == 1 && *start == '*'))
			continue;
		if (len >= NAMEDATALEN)
			len = NAMEDATALEN - 1;
		name = pnstrdup(start, len);
		foreach(lc, names)
			if (strcmp((char *) lfirst(lc), name) == 0)
				dup = true;
		if (dup)
			pfree(name);
		else
			names = lappend(names, name);
	}
	return names;
}

/* Does whatsapp.database name this database (or say "*")? */
bool
wa_database_listed(const char *name)
{
	List	   *names;
	ListCell   *lc;
	bool		found = false;

	if (wa_serve_all())
		return true;
	names = wa_database_names(wa_database);
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), name) == 0)
			found = true;
	list_free_deep(names);
	return found;
}

/*
 * The slot of a database, or NULL when no worker is meant for it.  Read
 * without the lock, from commit callbacks too: a slot given back and taken
 * again meanwhile can at worst wake a worker for nothing.
 */
WaDbSlot *
wa_slot_for_database(Oid dboid)
{
	if (wa_shared == NULL || !OidIsValid(dboid))
		return NULL;
	for (int i = 0; i < wa_shared->nslots; i++)
		if (wa_shared->slots[i].in_use && wa_shared->slots[i].dboid == dboid)
			return &wa_shared->slots[i];
	return NULL;
}

/* Is a worker running for the current database right now? */
bool
wa_worker_serves_current_database(void)
{
	WaDbSlot   *slot = wa_slot_for_database(MyDatabaseId);

	return slot != NULL && slot->pid != 0;
}

/*
 * Ring the launcher's doorbell, naming a database whose extension may have
 * appeared (or InvalidOid: look at pg_database again).  From the commit
 * callback: spinlock and SetLatch only.
 */
static void
ring_launcher(Oid dboid)
{
	Latch	   *latch;

	if (wa_shared == NULL)
		return;
	SpinLockAcquire(&wa_shared->announce_mutex);
	if (OidIsValid(dboid))
	{
		bool		known = false;

		for (int i = 0; i < wa_shared->nannounced; i++)
			if (wa_shared->announced[i] == dboid)
				known = true;
		if (!known && wa_shared->nannounced < WA_MAX_ANNOUNCED)
			wa_shared->announced[wa_shared->nannounced++] = dboid;
		else if (!known)
			wa_shared->announce_overflow = true;
	}
	latch = wa_shared->launcher_latch;
	SpinLockRelease(&wa_shared->announce_mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * The launcher takes what was announced: up to max database OIDs into out
 * (returns how many); *overflow says that more were announced than kept,
 * so that every database is worth a new look.
 */
int
wa_take_announced(Oid *out, int max, bool *overflow)
{
	int			n;

	SpinLockAcquire(&wa_shared->announce_mutex);
	n = Min(wa_shared->nannounced, max);
	memcpy(out, wa_shared->announced, n * sizeof(Oid));
	*overflow = wa_shared->announce_overflow || wa_shared->nannounced > max;
	wa_shared->nannounced = 0;
	wa_shared->announce_overflow = false;
	SpinLockRelease(&wa_shared->announce_mutex);
	return n;
}

/*
 * Transaction callback.  At commit, set the latch of the worker serving
 * this database, and the launcher's when asked.  No ereport here: the
 * commit is already recorded.
 */
static void
wa_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			{
				WaDbSlot   *slot = wa_slot_for_database(MyDatabaseId);

				if (slot != NULL && (wake_at_commit || accounts_changed_at_commit))
				{
					Latch	   *latch;

					if (accounts_changed_at_commit)
						pg_atomic_fetch_add_u32(&slot->accounts_generation, 1);
					/* one wake per transaction; the worker clears the flag */
					if (pdf_wait_at_commit)
						pg_atomic_write_u32(&slot->pdf_wait_pending, 1);
					pg_atomic_write_u32(&slot->wake_pending, 1);
#ifdef WA_TRACE_TIMING
					slot->trace_rung_at = GetCurrentTimestamp();
#endif
					latch = slot->latch;
					if (latch != NULL)
						SetLatch(latch);
				}
			}
			if (launcher_wake_at_commit)
				ring_launcher(launcher_announce_at_commit);
			wake_at_commit = false;
			pdf_wait_at_commit = false;
			accounts_changed_at_commit = false;
			launcher_wake_at_commit = false;
			launcher_announce_at_commit = InvalidOid;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_at_commit = false;
			pdf_wait_at_commit = false;
			accounts_changed_at_commit = false;
			launcher_wake_at_commit = false;
			launcher_announce_at_commit = InvalidOid;
			break;
		default:
			break;
	}
}

static void
ensure_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wa_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

void
wa_wake_worker_at_commit(void)
{
	ensure_xact_callback();
	wake_at_commit = true;
}

/*
 * The transaction added an Odoo invoice's wait for its official PDF
 * (odoo_pdf.c): the worker looks at the waits before its next claim.
 * Without one, a wake from a commit claims at once.
 */
void
wa_pdf_wait_at_commit(void)
{
	ensure_xact_callback();
	pdf_wait_at_commit = true;
	wake_at_commit = true;
}

void
wa_accounts_changed_at_commit(void)
{
	ensure_xact_callback();
	accounts_changed_at_commit = true;
}

void
wa_wake_launcher_at_commit(Oid dboid)
{
	ensure_xact_callback();
	launcher_wake_at_commit = true;
	if (OidIsValid(dboid))
		launcher_announce_at_commit = dboid;
}

/* ----------
 * Holds: a database that a command needs without other sessions.
 * ----------
 */

/*
 * Hold dboid for this backend: no worker starts for it until
 * wa_release_database().  False when every entry is taken (the command
 * then goes on without one).
 */
bool
wa_hold_database(Oid dboid)
{
	WaHold	   *free_entry = NULL;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < WA_MAX_HOLDS; i++)
	{
		WaHold	   *h = &wa_shared->holds[i];

		/* an entry whose time is up, or whose backend is gone, is free */
		if (OidIsValid(h->dboid) &&
			(h->pid != 0 ? kill(h->pid, 0) != 0 : h->until <= now))
			h->dboid = InvalidOid;
		if (h->dboid == dboid && (h->pid == 0 || h->pid == MyProcPid))
			free_entry = h;
		else if (!OidIsValid(h->dboid) && free_entry == NULL)
			free_entry = h;
	}
	if (free_entry != NULL)
	{
		free_entry->dboid = dboid;
		free_entry->pid = MyProcPid;
		free_entry->until = 0;
	}
	LWLockRelease(wa_shared->lock);
	return free_entry != NULL;
}

/* The command is over: workers may start again after delay_ms. */
void
wa_release_database(Oid dboid, int delay_ms)
{
	LWLockAcquire(wa_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < WA_MAX_HOLDS; i++)
	{
		WaHold	   *h = &wa_shared->holds[i];

		if (h->dboid == dboid && h->pid == MyProcPid)
		{
			h->pid = 0;
			h->until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay_ms);
		}
	}
	LWLockRelease(wa_shared->lock);
}

/* Does a command hold dboid now? */
bool
wa_database_held(Oid dboid, TimestampTz now)
{
	bool		held = false;

	LWLockAcquire(wa_shared->lock, LW_SHARED);
	for (int i = 0; i < WA_MAX_HOLDS; i++)
	{
		WaHold	   *h = &wa_shared->holds[i];

		if (h->dboid == dboid &&
			(h->pid != 0 ? kill(h->pid, 0) == 0 : h->until > now))
			held = true;
	}
	LWLockRelease(wa_shared->lock);
	return held;
}

/* SQL: whatsapp._wake_at_commit(accounts_changed boolean) */
PG_FUNCTION_INFO_V1(wa_wake_at_commit_sql);
Datum
wa_wake_at_commit_sql(PG_FUNCTION_ARGS)
{
	if (PG_GETARG_BOOL(0))
		wa_accounts_changed_at_commit();
	wa_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/*
 * SQL: whatsapp._worker_status() returns one row per served database: each
 * one named in whatsapp.database, or with "*", each one whose worker found
 * the extension installed.  Without preloading it returns no rows.
 */
PG_FUNCTION_INFO_V1(wa_worker_status);
Datum
wa_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (wa_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(wa_shared->lock, LW_SHARED);
	for (int i = 0; i < wa_shared->nslots; i++)
	{
		WaDbSlot   *slot = &wa_shared->slots[i];
		Datum		values[9];
		bool		nulls[9] = {0};

		if (!slot->in_use || !(slot->listed || slot->confirmed))
			continue;

		values[0] = CStringGetDatum(slot->datname);
		values[0] = DirectFunctionCall1(namein, values[0]);
		if (slot->pid != 0)
			values[1] = Int32GetDatum(slot->pid);
		else
			nulls[1] = true;
		values[2] = CStringGetTextDatum(slot->state);
		values[3] = Int32GetDatum((int32) pg_atomic_read_u32(&slot->inflight));
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->sent_last_minute));
		values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->queue_depth));
		if (slot->oldest_queued != 0)
			values[6] = TimestampTzGetDatum(slot->oldest_queued);
		else
			nulls[6] = true;
		if (slot->started_at != 0 && slot->pid != 0)
			values[7] = TimestampTzGetDatum(slot->started_at);
		else
			nulls[7] = true;
		if (slot->last_error[0] != '\0')
			values[8] = CStringGetTextDatum(slot->last_error);
		else
			nulls[8] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(wa_shared->lock);
	return (Datum) 0;
}
