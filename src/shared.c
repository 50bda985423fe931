/*-------------------------------------------------------------------------
 *
 * shared.c
 *	  Shared memory between the backends that enqueue and the workers that
 *	  deliver: one slot per served database, the commit-time wake, and the
 *	  worker status function behind the whatsapp.status view.
 *
 * A backend that enqueued a message sets the worker's latch from a
 * transaction callback once its transaction has committed.  The callback
 * runs after the commit is recorded and so must not raise: it only uses
 * atomics and SetLatch.
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"

#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

WaShared   *wa_shared = NULL;

/* Per-transaction wishes, applied at commit by wa_xact_callback. */
static bool wake_at_commit = false;
static bool accounts_changed_at_commit = false;
static bool xact_callback_registered = false;

void
wa_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(WaShared)));
	RequestNamedLWLockTranche("whatsapp", 1);
}

void
wa_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wa_shared = ShmemInitStruct("whatsapp", sizeof(WaShared), &found);
	if (!found)
	{
		char		names[WA_MAX_DATABASES][NAMEDATALEN];
		int			n;

		memset(wa_shared, 0, sizeof(WaShared));
		wa_shared->lock = &(GetNamedLWLockTranche("whatsapp"))->lock;
		n = wa_parse_database_list(wa_database, names, WA_MAX_DATABASES);
		wa_shared->nslots = n;
		for (int i = 0; i < n; i++)
		{
			WaDbSlot   *slot = &wa_shared->slots[i];

			strlcpy(slot->datname, names[i], NAMEDATALEN);
			pg_atomic_init_u32(&slot->wake_pending, 0);
			pg_atomic_init_u32(&slot->accounts_generation, 0);
			pg_atomic_init_u64(&slot->sent_total, 0);
			pg_atomic_init_u32(&slot->inflight, 0);
			pg_atomic_init_u64(&slot->queue_depth, 0);
			pg_atomic_init_u64(&slot->sent_last_minute, 0);
			strlcpy(slot->state, "not started", sizeof(slot->state));
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Split whatsapp.database into names.  Blanks around names are dropped,
 * duplicates and empty entries are skipped.  Returns the count; names
 * beyond "max" are ignored (the caller warns).
 */
int
wa_parse_database_list(const char *list, char names[][NAMEDATALEN], int max)
{
	int			n = 0;
	const char *p = list;

	if (list == NULL)
		return 0;
	while (*p && n < max)
	{
		const char *start;
		const char *end;
		int			len;
		bool		dup = false;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		start = p;
		while (*p && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		len = end - start;
		if (len == 0)
			continue;
		if (len >= NAMEDATALEN)
			len = NAMEDATALEN - 1;
		memcpy(names[n], start, len);
		names[n][len] = '\0';
		for (int i = 0; i < n; i++)
			if (strcmp(names[i], names[n]) == 0)
				dup = true;
		if (!dup)
			n++;
	}
	return n;
}

/* The slot of a database, or NULL when no worker is configured for it. */
WaDbSlot *
wa_slot_for_database(Oid dboid)
{
	if (wa_shared == NULL)
		return NULL;
	for (int i = 0; i < wa_shared->nslots; i++)
		if (wa_shared->slots[i].dboid == dboid)
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
 * Transaction callback.  At commit, set the latch of the worker serving
 * this database.  No ereport here: the commit is already recorded.
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
					pg_atomic_write_u32(&slot->wake_pending, 1);
					latch = slot->latch;
					if (latch != NULL)
						SetLatch(latch);
				}
			}
			wake_at_commit = false;
			accounts_changed_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_at_commit = false;
			accounts_changed_at_commit = false;
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

void
wa_accounts_changed_at_commit(void)
{
	ensure_xact_callback();
	accounts_changed_at_commit = true;
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
 * SQL: whatsapp._worker_status() returns one row per database named in
 * whatsapp.database.  Without preloading it returns no rows.
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
